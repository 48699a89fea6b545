#!/bin/sh
# Transparent capture for the fault-injector sidecar. The pod's init container
# `fault-injector-capture` runs it once, as root with NET_ADMIN and NET_RAW only, in the
# pod's network namespace, before Envoy and the app start. It adds nat PREROUTING rules
# that redirect inbound TCP for the app's ports to Envoy's inbound listener
# (envoy/sidecar-capture.yaml), which forwards each connection to the port it was sent to.
# PREROUTING only sees packets that arrive from outside the pod: the app calling itself,
# Envoy's connections to the app and anything else that starts in the pod are untouched.
# Outbound (only with FI_OUTBOUND_PORTS), nat OUTPUT rules redirect the app's own TCP
# connections to those ports (its calls to its dependencies) to Envoy's outbound listener,
# which forwards each one to the address the app called. Envoy's own connections are told
# apart by its UID (FI_PROXY_UID, 1337, as Istio's) and never redirected, so they cannot
# loop back to Envoy; loopback destinations are never redirected either. Only plain HTTP
# can be faulted: list the ports the app speaks plain HTTP to (80, 8080), never 443, since
# a sidecar cannot read, and so cannot fault, what is encrypted.
# IPv4 only (iptables): IPv6 connections reach the app, and leave it, directly.
#
#   sh capture.sh          adds the rules (again: it replaces its own, so a rerun is safe)
#   sh capture.sh clean    removes them; the pod then works as it does without the sidecar
#
# Environment (the init container sets FI_INBOUND_PORTS from the pod annotation
# `fault-injector/ports`, FI_OUTBOUND_PORTS from `fault-injector/outbound-ports`):
#   FI_INBOUND_PORTS     the app's TCP ports to capture, as "8080" or "8080,9090"; "*" or
#                        empty (no annotation) captures every port but Envoy's own
#   FI_INBOUND_LISTENER  Envoy's inbound listener port, 15006
#   FI_ENVOY_PORTS       Envoy's own ports, never captured: inbound 15006, control 8282,
#                        health 8090, admin 9901
#   FI_OUTBOUND_PORTS    the destination ports of the app's calls to capture, as "80,8080";
#                        empty (no annotation): no outbound capture
#   FI_OUTBOUND_LISTENER Envoy's outbound listener port, 15001
#   FI_PROXY_UID         the UID Envoy runs as, whose connections are never captured, 1337
#
# A port list that is not understood, or that names one of Envoy's ports, is refused
# with a message on stderr and exit status 2, and no rule is changed.
#
# POSIX sh only: the image (registry.k8s.io/build-image/distroless-iptables) has dash,
# iptables, iptables-restore and iptables-save, and no other tools this script needs.
set -eu
set -f # "*" is a word here, never a file name pattern

INBOUND_CHAIN=FI_INBOUND
REDIRECT_CHAIN=FI_IN_REDIRECT
OUTBOUND_CHAIN=FI_OUTBOUND
OUT_REDIRECT_CHAIN=FI_OUT_REDIRECT

fail() {
    echo "fault-injector capture: $*" >&2
    exit 2
}

# check_ports NAME LIST: LIST's ports, one per line; refuses anything but 1-65535.
check_ports() {
    name=$1
    list=$2
    old_ifs=$IFS
    # Commas, with or without spaces around them, separate the ports.
    IFS=', '
    # shellcheck disable=SC2086 # split on purpose
    set -- $list
    IFS=$old_ifs
    [ $# -gt 0 ] || fail "$name is empty; expected ports such as \"8080,9090\""
    for port in "$@"; do
        case $port in
        '' | *[!0-9]* | 0*)
            fail "$name: \"$port\" in \"$list\" is not a port; expected numbers 1-65535 separated by commas, as \"8080,9090\"" ;;
        esac
        [ "$port" -le 65535 ] || fail "$name: $port in \"$list\" is above 65535"
        echo "$port"
    done
}

# one_line LIST: LIST's ports on one line, for messages.
one_line() {
    # shellcheck disable=SC2086 # split on purpose
    set -- $1
    echo "$*"
}

# inbound_rules PORTS ENVOY_PORTS LISTENER: the iptables-restore input of the nat table.
inbound_rules() {
    echo "*nat"
    # Declaring a chain empties it, so a rerun replaces the rules instead of adding twice.
    echo ":$INBOUND_CHAIN - [0:0]"
    echo ":$REDIRECT_CHAIN - [0:0]"
    echo "-A $REDIRECT_CHAIN -p tcp -j REDIRECT --to-ports $3"
    if [ "$1" = "*" ]; then
        for port in $2; do
            echo "-A $INBOUND_CHAIN -p tcp --dport $port -j RETURN"
        done
        echo "-A $INBOUND_CHAIN -p tcp -j $REDIRECT_CHAIN"
    else
        for port in $1; do
            echo "-A $INBOUND_CHAIN -p tcp --dport $port -j $REDIRECT_CHAIN"
        done
    fi
    if ! iptables -t nat -C PREROUTING -p tcp -j "$INBOUND_CHAIN" 2>/dev/null; then
        echo "-A PREROUTING -p tcp -j $INBOUND_CHAIN"
    fi
    echo "COMMIT"
}

# outbound_rules PORTS LISTENER UID: the iptables-restore input of the nat table.
outbound_rules() {
    echo "*nat"
    echo ":$OUTBOUND_CHAIN - [0:0]"
    echo ":$OUT_REDIRECT_CHAIN - [0:0]"
    echo "-A $OUT_REDIRECT_CHAIN -p tcp -j REDIRECT --to-ports $2"
    # Envoy's own connections, to the app and to the dependencies, go where they were
    # sent: redirected, they would come back to Envoy, forever.
    echo "-A $OUTBOUND_CHAIN -m owner --uid-owner $3 -j RETURN"
    echo "-A $OUTBOUND_CHAIN -d 127.0.0.0/8 -j RETURN"
    for port in $1; do
        echo "-A $OUTBOUND_CHAIN -p tcp --dport $port -j $OUT_REDIRECT_CHAIN"
    done
    if ! iptables -t nat -C OUTPUT -p tcp -j "$OUTBOUND_CHAIN" 2>/dev/null; then
        echo "-A OUTPUT -p tcp -j $OUTBOUND_CHAIN"
    fi
    echo "COMMIT"
}

# remove HOOK CHAIN REDIRECT: removes one direction's jump and chains.
remove() {
    while iptables -t nat -D "$1" -p tcp -j "$2" 2>/dev/null; do :; done
    for chain in "$2" "$3"; do
        iptables -t nat -F "$chain" 2>/dev/null || true
        iptables -t nat -X "$chain" 2>/dev/null || true
    done
}

clean() {
    remove PREROUTING "$INBOUND_CHAIN" "$REDIRECT_CHAIN"
    remove OUTPUT "$OUTBOUND_CHAIN" "$OUT_REDIRECT_CHAIN"
    echo "fault-injector capture: rules removed"
}

capture() {
    listener=$(check_ports FI_INBOUND_LISTENER "${FI_INBOUND_LISTENER:-15006}")
    envoy_ports=$(check_ports FI_ENVOY_PORTS "${FI_ENVOY_PORTS:-15006,8282,8090,9901}")
    requested=${FI_INBOUND_PORTS:-*}
    if [ "$requested" = "*" ]; then
        ports="*"
    else
        ports=$(check_ports "FI_INBOUND_PORTS (annotation fault-injector/ports)" "$requested")
        for port in $ports; do
            for own in $envoy_ports; do
                [ "$port" != "$own" ] || fail "FI_INBOUND_PORTS (annotation fault-injector/ports): $port is one of Envoy's own ports ($(one_line "$envoy_ports")) and cannot be captured"
            done
        done
    fi
    # Every input is checked before any rule changes.
    out_listener=$(check_ports FI_OUTBOUND_LISTENER "${FI_OUTBOUND_LISTENER:-15001}")
    uid=${FI_PROXY_UID:-1337}
    case $uid in
    '' | *[!0-9]*) fail "FI_PROXY_UID: \"$uid\" is not a UID; expected a number such as 1337" ;;
    esac
    out_ports=
    if [ -n "${FI_OUTBOUND_PORTS:-}" ]; then
        out_ports=$(check_ports "FI_OUTBOUND_PORTS (annotation fault-injector/outbound-ports)" "$FI_OUTBOUND_PORTS")
    fi
    rules=$(inbound_rules "$ports" "$envoy_ports" "$listener")
    echo "$rules" | iptables-restore --noflush
    if [ "$ports" = "*" ]; then
        echo "fault-injector capture: inbound TCP to every port but $(one_line "$envoy_ports") -> Envoy :$listener"
    else
        echo "fault-injector capture: inbound TCP to port(s) $(one_line "$ports") -> Envoy :$listener"
    fi
    echo "$rules"
    if [ -z "$out_ports" ]; then
        # A rerun without outbound ports leaves none captured.
        remove OUTPUT "$OUTBOUND_CHAIN" "$OUT_REDIRECT_CHAIN"
        return
    fi
    rules=$(outbound_rules "$out_ports" "$out_listener" "$uid")
    echo "$rules" | iptables-restore --noflush
    echo "fault-injector capture: outbound TCP to port(s) $(one_line "$out_ports"), but UID $uid's and loopback's -> Envoy :$out_listener"
    echo "$rules"
}

case "${1:-}" in
'') capture ;;
clean) clean ;;
*) fail "unknown argument \"$1\"; expected none (add the rules) or \"clean\"" ;;
esac

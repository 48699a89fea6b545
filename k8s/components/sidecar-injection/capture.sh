#!/bin/sh
# Transparent inbound capture for the fault-injector sidecar. The pod's init container
# `fault-injector-capture` runs it once, as root with NET_ADMIN and NET_RAW only, in the
# pod's network namespace, before Envoy and the app start. It adds nat PREROUTING rules
# that redirect inbound TCP for the app's ports to Envoy's inbound listener
# (envoy/sidecar-capture.yaml), which forwards each connection to the port it was sent to.
# PREROUTING only sees packets that arrive from outside the pod: the app calling itself,
# Envoy's connections to the app and anything else that starts in the pod are untouched.
# IPv4 only (iptables): IPv6 connections reach the app directly.
#
#   sh capture.sh          adds the rules (again: it replaces its own, so a rerun is safe)
#   sh capture.sh clean    removes them; the pod then works as it does without the sidecar
#
# Environment (the init container sets FI_INBOUND_PORTS from the pod annotation
# `fault-injector/ports`):
#   FI_INBOUND_PORTS     the app's TCP ports to capture, as "8080" or "8080,9090"; "*" or
#                        empty (no annotation) captures every port but Envoy's own
#   FI_INBOUND_LISTENER  Envoy's inbound listener port, 15006
#   FI_ENVOY_PORTS       Envoy's own ports, never captured: inbound 15006, control 8282,
#                        health 8090, admin 9901
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

clean() {
    while iptables -t nat -D PREROUTING -p tcp -j "$INBOUND_CHAIN" 2>/dev/null; do :; done
    for chain in "$INBOUND_CHAIN" "$REDIRECT_CHAIN"; do
        iptables -t nat -F "$chain" 2>/dev/null || true
        iptables -t nat -X "$chain" 2>/dev/null || true
    done
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
    rules=$(inbound_rules "$ports" "$envoy_ports" "$listener")
    echo "$rules" | iptables-restore --noflush
    if [ "$ports" = "*" ]; then
        echo "fault-injector capture: inbound TCP to every port but $(one_line "$envoy_ports") -> Envoy :$listener"
    else
        echo "fault-injector capture: inbound TCP to port(s) $(one_line "$ports") -> Envoy :$listener"
    fi
    echo "$rules"
}

case "${1:-}" in
'') capture ;;
clean) clean ;;
*) fail "unknown argument \"$1\"; expected none (add the rules) or \"clean\"" ;;
esac

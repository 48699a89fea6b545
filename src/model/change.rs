//! A change to the query policy: the seed's parameters (`status=500`, `percentage=5`,
//! `ip=10.1.2.3`...), as a control call's query or a document's `policy` and `clients`
//! objects give them, read into typed values, and applied to a policy state all at once or
//! not at all. The query's own grammar (`&`, `%XX`, `resume`, `document`) is
//! [`crate::control::query`]'s.

use crate::model::duration::{self, Millis};
use crate::model::net::{self, Cidr};
use crate::model::outbound::{self, Destination};
use crate::model::percentage::{self, Percentage};
use crate::model::policy::{policy_name, Canned, KindParameters, Settings, Seed, State, Unbuilt, KIND_NAMES, MAX_CLIENTS};
use crate::model::values::{HttpStatus, STATUS_ACCEPTED};
use std::fmt;

/// The parameters the control route accepts.
pub const PARAMETERS: &str = "policy, timeout, status, boundedRetries, percentage, ip, host, dest, reset, ttl, after, afterBytes, bytesPerSecond, p50, p99, corrupt, path, method, setHeaders, removeHeaders, query; alone: resume, document";

/// Why a control call (or a policy in plugin configuration) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// A parameter this API does not know.
    UnknownParameter(String),
    /// The same parameter twice in one call.
    Repeated(&'static str),
    /// A parameter whose value does not parse or is out of range.
    BadValue {
        /// The parameter.
        parameter: &'static str,
        /// What was given.
        value: String,
        /// What is accepted.
        accepted: &'static str,
    },
    /// A parameter, or its value, that is not UTF-8 once percent-decoded.
    NotUtf8,
    /// Two parameters that ask for different faults.
    Conflict(&'static str, &'static str),
    /// A new binding past the cap.
    TooManyClients,
    /// A new destination binding past the cap on rules.
    TooManyRules,
    /// Two parameters that name different bindings (`ip`, `host`, `dest`).
    Binding(&'static str, &'static str),
    /// `longTailDelay` percentiles that do not rise (`p99` must be longer than `p50`).
    Shape(String),
    /// `requestRewrite` without anything to change.
    Rewrite,
    /// A parameter that stands alone (`resume`, `document`) given with another.
    Alone(&'static str, String),
    /// A parameter that changes nothing by itself (`ttl`, `ip`, `host`, `dest`) given
    /// without a change; with what it needs.
    Needs(&'static str, &'static str),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::UnknownParameter(name) => {
                write!(f, "unknown parameter '{}'; accepted: {PARAMETERS}", shown(name))
            }
            ControlError::Repeated(name) => write!(f, "parameter '{name}' is given more than once"),
            ControlError::BadValue { parameter, value, accepted } => {
                write!(f, "{parameter}: '{}' is not accepted; expected {accepted}", shown(value))
            }
            ControlError::NotUtf8 => write!(f, "the query is not UTF-8 once percent-decoded"),
            ControlError::Conflict(a, b) => write!(
                f,
                "'{a}' and '{b}' ask for different faults; give one, or name the fault with 'policy'"
            ),
            ControlError::TooManyClients => {
                write!(f, "ip: at most {MAX_CLIENTS} client bindings; remove one with ip=A&reset")
            }
            ControlError::Binding(a, b) => write!(f, "'{a}' and '{b}' name different bindings; give one"),
            ControlError::TooManyRules => {
                write!(f, "at most {} rules, destination bindings included; remove one with host=H&reset", crate::model::rules::MAX_RULES)
            }
            ControlError::Shape(reason) => write!(f, "longTailDelay: {reason}"),
            ControlError::Rewrite => write!(f, "requestRewrite: give at least one of path, method, setHeaders, removeHeaders, query"),
            ControlError::Alone(name, other) => {
                write!(f, "'{name}' stands alone: give it without other parameters (here '{}')", shown(other))
            }
            ControlError::Needs(name, needs) => write!(f, "'{name}' alone changes nothing; {needs}"),
        }
    }
}

/// A value as echoed in an error: long ones are cut, so a huge query gets a short answer.
fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    match value.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_string(),
    }
}

/// One control call: which policy it edits and the values it sets. Unset values keep theirs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Call {
    /// The client range whose own policy is edited; the default policy when absent.
    pub ip: Option<Cidr>,
    /// `host=` or `dest=`: the destination whose binding (an outbound rule) is edited.
    pub destination: Option<Destination>,
    /// Start over first: the configured start for the default, no binding for a client.
    pub reset: bool,
    /// `policy=`.
    pub kind: Option<&'static str>,
    /// `timeout=`.
    pub delay: Option<Millis>,
    /// `status=`.
    pub status: Option<u16>,
    /// `boundedRetries=`.
    pub retries: Option<u32>,
    /// `percentage=`.
    pub percentage: Option<Percentage>,
    /// `ttl=`: the change reverts by itself after this long.
    pub ttl: Option<Millis>,
    /// `after=`, `afterBytes=`, `bytesPerSecond=`, `p50=`, `p99=`, `corrupt=` (in parts
    /// per million), and `path=`, `method=`, `setHeaders=`, `removeHeaders=`, `query=`
    /// (`requestRewrite`: the parts given).
    pub by_kind: KindParameters,
}

const TTL_ACCEPTED: &str = "a duration above 0 and at most 1h, as for timeout (`30s`, `5m`, `1h`)";
const RETRIES_ACCEPTED: &str = "a whole number of failed attempts from 0 to 10000";
const PERCENTILE_ACCEPTED: &str = "a duration above 0 and at most 1h, as for timeout (`100ms`, `2s`)";
const CORRUPT_ACCEPTED: &str = "a share of bytes in percent above 0 and at most 100 (`5`, `0.5`)";

/// A whole number written in its one form: digits only, no sign and no leading zero
/// (`500`; not `+500` or `0500`, which `str::parse` takes).
fn whole_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    let canonical = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

impl Call {
    /// Builds a call from decoded `(parameter, value)` pairs: the query's, or a policy
    /// object's in a policy document or the plugin configuration. A `dyn` iterator, so that
    /// the two callers share one copy of it (4 KB of module each).
    pub fn from_pairs<'a>(pairs: &mut dyn Iterator<Item = (&'a str, &'a str)>) -> Result<Call, ControlError> {
        let mut call = Call::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in pairs {
            // The parameter's one spelling, from the list the errors show.
            let known = PARAMETERS.split("; ").next().unwrap_or_default().split(", ").find(|p| *p == key);
            let Some(name) = known else { return Err(ControlError::UnknownParameter(key.to_string())) };
            if seen.contains(&name) {
                return Err(ControlError::Repeated(name));
            }
            seen.push(name);
            let bad = |accepted| ControlError::BadValue { parameter: name, value: value.to_string(), accepted };
            match name {
                "policy" => call.kind = Some(policy_name(value).ok_or_else(|| bad(KIND_NAMES))?),
                "timeout" => call.delay = Some(duration::parse(value).ok_or_else(|| bad(duration::ACCEPTED))?),
                "status" => {
                    let status = whole_number::<u64>(value).and_then(HttpStatus::new);
                    call.status = Some(status.ok_or_else(|| bad(STATUS_ACCEPTED))?.0);
                }
                "boundedRetries" => {
                    let n = whole_number::<u32>(value).filter(|n| *n <= 10_000);
                    call.retries = Some(n.ok_or_else(|| bad(RETRIES_ACCEPTED))?);
                }
                "percentage" => {
                    call.percentage = Some(Percentage::parse(value).ok_or_else(|| bad(percentage::ACCEPTED))?)
                }
                "ip" => call.ip = Some(Cidr::parse(value).ok_or_else(|| bad(net::ACCEPTED))?),
                "host" | "dest" if call.destination.is_some() => return Err(ControlError::Binding("host", "dest")),
                "host" => call.destination = Some(Destination::host(value).ok_or_else(|| bad(outbound::HOST_ACCEPTED))?),
                "dest" => call.destination = Some(Destination::Addresses(Cidr::parse(value).ok_or_else(|| bad(net::ACCEPTED))?)),
                "ttl" => {
                    let ttl = duration::parse(value).filter(|t| t.0 > 0);
                    call.ttl = Some(ttl.ok_or_else(|| bad(TTL_ACCEPTED))?);
                }
                "after" => call.by_kind.after = Some(duration::parse(value).ok_or_else(|| bad(duration::ACCEPTED))?),
                "afterBytes" => {
                    let n = whole_number::<u64>(value).filter(|n| *n <= crate::faults::truncate::MAX_AFTER_BYTES);
                    call.by_kind.after_bytes = Some(n.ok_or_else(|| bad(crate::faults::truncate::AFTER_BYTES_ACCEPTED))?);
                }
                "bytesPerSecond" => {
                    let n = whole_number::<u64>(value).filter(|n| crate::faults::throttle::Throttle::at(*n).is_ok());
                    call.by_kind.bytes_per_second = Some(n.ok_or_else(|| bad(crate::faults::throttle::ACCEPTED))?);
                }
                "p50" | "p99" => {
                    let ms = duration::parse(value).filter(|t| t.0 > 0).ok_or_else(|| bad(PERCENTILE_ACCEPTED))?;
                    *(if name == "p50" { &mut call.by_kind.p50 } else { &mut call.by_kind.p99 }) = Some(ms);
                }
                "corrupt" => {
                    let share = Percentage::parse(value).filter(|p| p.0 > 0);
                    call.by_kind.corrupt = Some(share.ok_or_else(|| bad(CORRUPT_ACCEPTED))?.0);
                }
                _ if name != "reset" => call.by_kind.rewrite.get_or_insert_default().set(name, value).map_err(bad)?,
                _ => {
                    if !value.is_empty() {
                        return Err(bad("no value: 'reset', or 'ip=A&reset'"));
                    }
                    call.reset = true;
                }
            }
        }
        if call.kind.is_none() {
            call.kind = call.implied_kind()?;
        }
        match (&call.ip, &call.destination) {
            (Some(_), Some(Destination::Host(_))) => return Err(ControlError::Binding("ip", "host")),
            (Some(_), Some(Destination::Addresses(_))) => return Err(ControlError::Binding("ip", "dest")),
            _ => {}
        }
        Ok(call)
    }

    /// The fault named by the values given when `policy` is not: `timeout` delays,
    /// `boundedRetries` fails attempts (with `status` as their status), `status` alone aborts.
    fn implied_kind(&self) -> Result<Option<&'static str>, ControlError> {
        Ok(match (self.delay, self.retries, self.status) {
            (Some(_), Some(_), _) => return Err(ControlError::Conflict("timeout", "boundedRetries")),
            (Some(_), None, Some(_)) => return Err(ControlError::Conflict("timeout", "status")),
            (Some(_), None, None) => policy_name("delayResponse"),
            (None, Some(_), _) => policy_name("boundedRetries"),
            (None, None, Some(_)) => policy_name("statusResponse"),
            (None, None, None) => None,
        })
    }

    /// True when the call edits something; a call without parameters only reads.
    pub fn changes_anything(&self) -> bool {
        self.reset || self.has_values()
    }

    /// True when the call starts the whole policy over (`reset` without `ip`, `host` or
    /// `dest`): bounded retries then count afresh, as after `DELETE` or a new document.
    pub fn starts_over(&self) -> bool {
        self.reset && self.ip.is_none() && self.destination.is_none()
    }

    /// True when the call sets a policy value: anything but which policy it edits
    /// (`ip`, `host`, `dest`), `reset` and `ttl`.
    pub fn has_values(&self) -> bool {
        let edits_only = Call { ip: self.ip, destination: self.destination.clone(), reset: self.reset, ttl: self.ttl, ..Call::default() };
        *self != edits_only
    }

    /// Applies the call to `state` at `now_ms`, returning the new state; `start` is what
    /// `reset` returns to. The edited policy's end is the call's `ttl`, or none: a write
    /// replaces the fault and its TTL, and inherits no TTL it did not give. Policies that
    /// answer with the canned response get the default one here (see [`State::resolve`]).
    pub fn apply(&self, state: &State, start: &State, now_ms: u64) -> Result<State, ControlError> {
        let mut next = state.clone();
        next.settle(now_ms);
        let until_ms = self.ttl.map(|t| now_ms.saturating_add(t.0));
        let canned = Canned::default();
        match &self.ip {
            None => {
                if self.reset {
                    next = start.clone();
                }
                self.edit(&mut next.default, &canned, until_ms)?;
            }
            Some(clients) => {
                if self.reset {
                    next.unbind(clients);
                }
                if self.has_values() {
                    if let Some(seed) = next.binding_mut(clients) {
                        self.edit(seed, &canned, until_ms)?;
                    } else if next.bindings.len() >= MAX_CLIENTS {
                        return Err(ControlError::TooManyClients);
                    } else {
                        let mut seed = next.default.clone();
                        self.edit(&mut seed, &canned, until_ms)?;
                        next.bind(clients, seed);
                    }
                }
            }
        }
        Ok(next)
    }

    /// Edits `seed` with the call's values: the fault named (`policy=`, or implied by the
    /// values given, or the one in force) is built again from the values as they now are,
    /// and ends at `until_ms`.
    pub fn edit(&self, seed: &mut Seed, canned: &Canned, until_ms: Option<u64>) -> Result<(), ControlError> {
        self.set_values(&mut seed.given);
        let name = self.kind.unwrap_or(seed.name());
        seed.fault = Seed::build(name, &seed.given, canned).map_err(|e| match e {
            Unbuilt::Shape(e) => ControlError::Shape(e.to_string()),
            Unbuilt::Rewrite => ControlError::Rewrite,
            Unbuilt::Throttle(e) => ControlError::BadValue { parameter: "bytesPerSecond", value: e.0.to_string(), accepted: crate::faults::throttle::ACCEPTED },
        })?;
        seed.until_ms = until_ms;
        Ok(())
    }

    /// Sets the values the call gives on `policy`.
    fn set_values(&self, policy: &mut Settings) {
        if let Some(delay) = self.delay {
            policy.delay = delay;
        }
        if let Some(status) = self.status {
            policy.status = status;
        }
        if let Some(retries) = self.retries {
            policy.retries = retries;
        }
        if let Some(percentage) = self.percentage {
            policy.percentage = percentage;
        }
        policy.by_kind.overlay(&self.by_kind);
    }
}

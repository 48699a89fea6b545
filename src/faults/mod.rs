//! The faults, one module each: what a fault's wire form is, what it checks, what it does
//! to a request or to the upstream's answer, its name on the wire and in
//! `x-fault-injected`, and what it counts. [`Fault`], below, is the one place that lists
//! them: a new fault is a module and a line there.

pub mod abort;
pub mod body_change;
pub mod bounded_retries;
pub mod delay;
pub mod delay_shape;
pub mod grpc;
pub mod header_faults;
pub mod request_rewrite;
pub mod reset;
pub mod response;
pub mod response_delay;
pub mod response_rewrite;
pub mod retries;
pub mod slow_failure;
pub mod throttle;
pub mod truncate;

use crate::stats::Stat;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What each fault kind says of itself.
pub trait Kind {
    /// Its key in a rule's `fault` (`bounded_retries`).
    const NAME: &'static str;
    /// Its name in `x-fault-injected`, the access log and the labelled counters
    /// (`boundedRetries`).
    const LABEL: &'static str;
    /// The counter a request it was applied to counts in.
    const STAT: Stat;
}

macro_rules! faults {
    ($($variant:ident($ty:ty),)*) => {
        /// What a request gets: one fault, named for what it does. The document writes it
        /// as `{"delay": {...}}`; the query policies (`statusResponse`...) become one of these
        /// too.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Fault {
            $(
                #[doc = concat!("See [`", stringify!($ty), "`].")]
                $variant($ty),
            )*
            /// A delay and an abort in one fault (see [`slow_failure`]), written as
            /// `{"delay": {...}, "abort": {...}}`.
            SlowFailure(slow_failure::SlowFailure),
        }

        /// Every kind's key in a rule's `fault`, in the order errors list them.
        pub const NAMES: &[&str] = &[$(<$ty as Kind>::NAME),*];

        /// Every kind's counter and label, for [`label_of`].
        const COUNTED: &[(Stat, &str)] = &[$((<$ty as Kind>::STAT, <$ty as Kind>::LABEL),)* (slow_failure::STAT, slow_failure::LABEL)];

        impl Fault {
            /// The name in `x-fault-injected`, the access log and the labelled counters.
            pub fn label(&self) -> &'static str {
                match self {
                    $(Fault::$variant(_) => <$ty as Kind>::LABEL,)*
                    Fault::SlowFailure(_) => slow_failure::LABEL,
                }
            }

            /// The counter a request this fault was applied to counts in.
            pub fn stat(&self) -> Stat {
                match self {
                    $(Fault::$variant(_) => <$ty as Kind>::STAT,)*
                    Fault::SlowFailure(_) => slow_failure::STAT,
                }
            }
        }

        impl Serialize for Fault {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                match self {
                    $(Fault::$variant(fault) => map.serialize_entry(<$ty as Kind>::NAME, fault)?,)*
                    Fault::SlowFailure(slow) => {
                        map.serialize_entry(delay::Delay::NAME, &slow.delay)?;
                        map.serialize_entry(abort::Abort::NAME, &slow.abort)?;
                    }
                }
                map.end()
            }
        }

        /// Reads the value of the fault kind `kind` from `map`; `None` for a key that names
        /// no kind.
        fn one<'de, A: MapAccess<'de>>(kind: &str, map: &mut A) -> Result<Option<Fault>, A::Error> {
            $(
                if kind == <$ty as Kind>::NAME {
                    return map.next_value::<$ty>().map(|f| Some(Fault::$variant(f)));
                }
            )*
            Ok(None)
        }
    };
}

faults! {
    Delay(delay::Delay),
    Abort(abort::Abort),
    Response(response::Response),
    BoundedRetries(bounded_retries::BoundedRetries),
    ResponseDelay(response_delay::ResponseDelay),
    ResponseRewrite(response_rewrite::ResponseRewrite),
    RequestRewrite(request_rewrite::RequestRewrite),
    Reset(reset::Reset),
    Truncate(truncate::Truncate),
    Throttle(throttle::Throttle),
    DelayShape(delay_shape::DelayShape),
    BodyChange(body_change::BodyChange),
}

/// The label of the fault kinds counted as `stat`, as `x-fault-injected` names them; `None`
/// for a counter no fault counts in.
pub fn label_of(stat: Stat) -> Option<&'static str> {
    COUNTED.iter().find(|(s, _)| *s == stat).map(|(_, label)| *label)
}

/// The refusal of a `fault` that is not one kind, nor a delay and an abort.
struct NotOneFault;

impl fmt::Display for NotOneFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "give one of {}; or delay and abort together (a slow failure)", NAMES.join(", "))
    }
}

impl<'de> Deserialize<'de> for Fault {
    /// `{"kind": {...}}` with exactly one kind, or a delay and an abort.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneFault;
        impl<'de> Visitor<'de> for OneFault {
            type Value = Fault;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with one fault kind, or delay and abort")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fault, A::Error> {
                // At most two kinds: a delay and an abort make one slow failure.
                let mut faults = Vec::with_capacity(2);
                while let Some(kind) = map.next_key::<String>()? {
                    if faults.len() == 2 {
                        return Err(de::Error::custom(NotOneFault));
                    }
                    faults.push(one(&kind, &mut map)?.ok_or_else(|| de::Error::custom(NotOneFault))?);
                }
                let mut faults = faults.into_iter();
                match (faults.next(), faults.next()) {
                    (Some(fault), None) => Ok(fault),
                    (Some(Fault::Delay(delay)), Some(Fault::Abort(abort))) | (Some(Fault::Abort(abort)), Some(Fault::Delay(delay))) => {
                        Ok(Fault::SlowFailure(slow_failure::SlowFailure { delay, abort }))
                    }
                    _ => Err(de::Error::custom(NotOneFault)),
                }
            }
        }
        deserializer.deserialize_map(OneFault)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_listed_once_and_says_what_it_counts() {
        for (i, name) in NAMES.iter().enumerate() {
            assert!(!NAMES[..i].contains(name), "{name}");
        }
        // The message docs/policy-document.md shows, from the one list.
        let message = serde_json::from_str::<Fault>(r#"{"nap": {}}"#).unwrap_err().to_string();
        let listed = "give one of delay, abort, response, bounded_retries, response_delay, response_rewrite, request_rewrite, reset, truncate, throttle, delay_shape, body_change; or delay and abort together (a slow failure)";
        assert!(message.starts_with(listed), "{message}");
        let slow: Fault = serde_json::from_str(r#"{"abort": {"status": 503}, "delay": {"fixed": "1s"}}"#).unwrap();
        assert_eq!((slow.label(), slow.stat()), ("slowFailure", Stat::SlowFailuresInjected));
        let written = serde_json::to_string(&slow).unwrap();
        assert_eq!(serde_json::from_str::<Fault>(&written).unwrap(), slow, "{written}");
        let retries: Fault = serde_json::from_str(r#"{"bounded_retries": {"retries": 2}}"#).unwrap();
        assert_eq!((retries.label(), retries.stat()), ("boundedRetries", Stat::RetriesInjected));
        assert_eq!(label_of(Stat::DelaysInjected), Some("delay"));
        assert_eq!(label_of(Stat::RequestsRewritten), Some("requestRewrite"));
        assert_eq!(label_of(Stat::RequestsSeen), None);
    }
}

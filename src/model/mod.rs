//! The model: the policy document and its rules, the state the shared data holds, how a
//! request is matched against them, and the validated values they are made of.

pub mod change;
pub mod document;
pub mod duration;
pub mod matching;
pub mod net;
pub mod outbound;
pub mod percentage;
pub mod policy;
pub mod rules;
pub mod sampling;
pub mod share;
pub mod stored;
pub mod values;

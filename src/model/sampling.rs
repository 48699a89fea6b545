//! The one place where the percentage roll happens, so every fault kind is sampled alike
//! and tests can force 0% or 100%.

use crate::faults::delay_shape::EvenSpread;
use crate::model::percentage::{Percentage, FULL};
use fnv::FnvHasher;
use std::hash::Hasher;

/// A small, fast pseudo-random generator (SplitMix64); fault sampling needs no cryptography.
/// Kept here rather than taken from `rand`: it is the five lines below, a request steps it
/// once or twice, and its seed comes from the host (getrandom) once per root context.
#[derive(Clone, Debug)]
pub struct Sampler {
    state: u64,
    /// Evenly spread uniforms for delay shapes, whose percentiles must hold over a run.
    even: EvenSpread,
}

impl Sampler {
    /// A generator seeded with `seed` (the glue draws it from the host's random source).
    pub fn new(seed: u64) -> Sampler {
        Sampler { state: seed, even: EvenSpread::new(mix(seed ^ 0x5DEE_CE66_D1CE_5EED)) }
    }

    /// The next uniform of an evenly spread sequence (see [`EvenSpread`]), for drawing a
    /// delay from a shape: any run of these covers the range evenly.
    pub fn next_even(&mut self) -> u64 {
        self.even.next_u64()
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// True for `percentage` of the calls, at random.
    pub fn roll(&mut self, percentage: Percentage) -> bool {
        in_share(self.next_u64(), percentage)
    }
}

/// True when `value` falls in the sampled share; with a hash as `value`, the same key is
/// always in or always out.
pub fn in_share(value: u64, percentage: Percentage) -> bool {
    percentage.0 >= FULL || (value % u64::from(FULL)) < u64::from(percentage.0)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash (FNV-1a, then mixed) of a request identity: its parts, each ended
/// by a zero byte so that `["ab", "c"]` and `["a", "bc"]` differ. Stable across builds, as
/// the bounded-retry table and the stored configuration id need.
pub fn identity_hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = FnvHasher::default();
    for part in parts {
        hasher.write(part);
        hasher.write_u8(0);
    }
    mix(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_hundred_are_exact() {
        let mut s = Sampler::new(1);
        assert!((0..10_000).all(|_| !s.roll(Percentage(0))));
        assert!((0..10_000).all(|_| s.roll(Percentage(FULL))));
    }

    #[test]
    fn twenty_percent_is_about_twenty_percent() {
        let mut s = Sampler::new(42);
        let hits = (0..100_000).filter(|_| s.roll(Percentage::DEFAULT)).count();
        assert!((19_000..21_000).contains(&hits), "{hits}");
    }

    #[test]
    fn identities_hash_as_every_earlier_build_did() {
        // The values earlier builds (with their own FNV-1a loop) gave: stored configuration
        // ids and bounded-retry identities stay the same across an upgrade.
        assert_eq!(identity_hash(&[]), mix(0xcbf2_9ce4_8422_2325));
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in b"127.0.0.1\0GET\0/a\0" {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(identity_hash(&[b"127.0.0.1", b"GET", b"/a"]), mix(h));
    }

    #[test]
    fn identities_hash_apart_and_stably() {
        let a = identity_hash(&[b"127.0.0.1", b"GET", b"/a"]);
        assert_eq!(a, identity_hash(&[b"127.0.0.1", b"GET", b"/a"]));
        assert_ne!(a, identity_hash(&[b"127.0.0.1", b"GET", b"/b"]));
        assert_ne!(identity_hash(&[b"ab", b"c"]), identity_hash(&[b"a", b"bc"]));
    }
}

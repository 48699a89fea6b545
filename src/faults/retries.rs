//! Bounded-retry counting: how many attempts each request identity has failed, in a table
//! that is split into shards (one shared-data key each) and bounded in time and size.

/// How many shards the table is split into; a request reads and writes one.
pub const SHARDS: u64 = 16;

/// The decision for one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This attempt fails; it is the n-th failure of the identity.
    Fail(u32),
    /// This attempt passes, and counting starts again.
    Pass,
}

/// What one attempt did to its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The decision for the attempt.
    pub attempt: Attempt,
    /// True when the shard was full and its oldest identity was dropped to make room.
    pub evicted: bool,
}

/// What counting an attempt did: its outcome, and what the write changed in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// Fail or pass.
    pub attempt: Attempt,
    /// How many identities the write added to the table (negative: removed).
    pub grown: i64,
    /// Whether an identity was dropped to make room.
    pub evicted: bool,
}

/// Limits of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// An entry not seen for this long is forgotten, in milliseconds.
    pub window_ms: u64,
    /// The most entries kept in one shard; the oldest is dropped past it.
    pub per_shard: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    id: u64,
    failures: u32,
    last_ms: u64,
}

const ENTRY_BYTES: usize = 20;

/// One shard of the table, as stored in shared data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shard {
    entries: Vec<Entry>,
}

/// The shard an identity belongs to.
pub fn shard_of(id: u64) -> u64 {
    (id >> 40) % SHARDS
}

impl Shard {
    /// Reads a stored shard; unreadable bytes count as an empty shard. The stored form is
    /// fixed 20-byte records (id, failures, last attempt), written by hand rather than with a
    /// serde binary format: every counted attempt reads and writes its shard, and a format
    /// crate would add a dependency for these few lines.
    pub fn decode(bytes: &[u8]) -> Shard {
        let entries = bytes
            .chunks_exact(ENTRY_BYTES)
            .map(|c| {
                let mut id = [0u8; 8];
                let mut failures = [0u8; 4];
                let mut last = [0u8; 8];
                id.copy_from_slice(&c[0..8]);
                failures.copy_from_slice(&c[8..12]);
                last.copy_from_slice(&c[12..20]);
                Entry { id: u64::from_le_bytes(id), failures: u32::from_le_bytes(failures), last_ms: u64::from_le_bytes(last) }
            })
            .collect();
        Shard { entries }
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.id.to_le_bytes());
            out.extend_from_slice(&e.failures.to_le_bytes());
            out.extend_from_slice(&e.last_ms.to_le_bytes());
        }
        out
    }

    /// How many identities the shard holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the shard holds no identity.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts one attempt of `id`: the first `fail_first` attempts fail, the next passes and
    /// forgets the identity, so counting starts again. Entries older than the window are
    /// dropped first; a new identity in a full shard pushes out the one seen longest ago.
    pub fn attempt(&mut self, id: u64, now_ms: u64, fail_first: u32, limits: Limits) -> Outcome {
        self.entries.retain(|e| now_ms.saturating_sub(e.last_ms) < limits.window_ms);
        if let Some(pos) = self.entries.iter().position(|e| e.id == id) {
            let entry = &mut self.entries[pos];
            if entry.failures < fail_first {
                entry.failures += 1;
                entry.last_ms = now_ms;
                return Outcome { attempt: Attempt::Fail(entry.failures), evicted: false };
            }
            self.entries.remove(pos);
            return Outcome { attempt: Attempt::Pass, evicted: false };
        }
        if fail_first == 0 {
            return Outcome { attempt: Attempt::Pass, evicted: false };
        }
        let mut evicted = false;
        if self.entries.len() >= limits.per_shard.max(1) {
            if let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_ms).map(|(i, _)| i) {
                self.entries.remove(oldest);
                evicted = true;
            }
        }
        self.entries.push(Entry { id, failures: 1, last_ms: now_ms });
        Outcome { attempt: Attempt::Fail(1), evicted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { window_ms: 60_000, per_shard: 4 };

    #[test]
    fn first_n_fail_then_one_passes_then_counting_restarts() {
        let mut shard = Shard::default();
        let seq: Vec<Attempt> = (0..8).map(|t| shard.attempt(7, t, 3, LIMITS).attempt).collect();
        use Attempt::*;
        assert_eq!(seq, [Fail(1), Fail(2), Fail(3), Pass, Fail(1), Fail(2), Fail(3), Pass]);
        assert!(shard.is_empty());
    }

    #[test]
    fn identities_count_apart() {
        let mut shard = Shard::default();
        assert_eq!(shard.attempt(1, 0, 1, LIMITS).attempt, Attempt::Fail(1));
        assert_eq!(shard.attempt(2, 0, 1, LIMITS).attempt, Attempt::Fail(1));
        assert_eq!(shard.attempt(1, 0, 1, LIMITS).attempt, Attempt::Pass);
        assert_eq!(shard.attempt(2, 0, 1, LIMITS).attempt, Attempt::Pass);
    }

    #[test]
    fn zero_retries_never_fails_and_stores_nothing() {
        let mut shard = Shard::default();
        assert_eq!(shard.attempt(1, 0, 0, LIMITS).attempt, Attempt::Pass);
        assert!(shard.is_empty());
    }

    #[test]
    fn entries_expire_after_the_window() {
        let mut shard = Shard::default();
        assert_eq!(shard.attempt(1, 0, 2, LIMITS).attempt, Attempt::Fail(1));
        assert_eq!(shard.attempt(1, 60_000, 2, LIMITS).attempt, Attempt::Fail(1));
    }

    #[test]
    fn cap_drops_the_oldest() {
        let mut shard = Shard::default();
        for id in 0..10 {
            shard.attempt(id, id, 5, LIMITS);
        }
        assert_eq!(shard.len(), 4);
        assert_eq!(shard.attempt(9, 20, 5, LIMITS).attempt, Attempt::Fail(2));
        assert_eq!(shard.attempt(0, 20, 5, LIMITS).attempt, Attempt::Fail(1));
    }

    #[test]
    fn a_full_shard_reports_each_eviction_and_stays_at_its_cap() {
        let mut shard = Shard::default();
        let mut evicted = 0;
        for id in 0..1000 {
            evicted += usize::from(shard.attempt(id, id, 2, LIMITS).evicted);
            assert!(shard.len() <= LIMITS.per_shard);
        }
        assert_eq!((shard.len(), evicted), (4, 996));
    }

    #[test]
    fn expiry_passes_and_repeats_are_not_evictions() {
        let mut shard = Shard::default();
        for id in 0..4 {
            assert!(!shard.attempt(id, 0, 2, LIMITS).evicted);
        }
        // A known identity in a full shard is counted in place.
        assert_eq!(shard.attempt(0, 1, 2, LIMITS), Outcome { attempt: Attempt::Fail(2), evicted: false });
        // A pass frees its entry, so the next newcomer fits without pushing anyone out.
        assert_eq!(shard.attempt(0, 2, 2, LIMITS), Outcome { attempt: Attempt::Pass, evicted: false });
        assert!(!shard.attempt(10, 3, 2, LIMITS).evicted);
        // Past the window every entry is simply forgotten.
        assert!(!shard.attempt(11, 100_000, 2, LIMITS).evicted);
        assert_eq!(shard.len(), 1);
    }

    /// The shared table's gauge adds the change in length of each shard write; over any
    /// flood of identities that sum is the number of entries held, and never above the cap.
    #[test]
    fn summed_length_changes_track_the_whole_table() {
        let mut table = vec![Shard::default(); SHARDS as usize];
        let (mut gauge, mut evictions) = (0i64, 0u64);
        for n in 0..6000u64 {
            let id = crate::model::sampling::identity_hash(&[&n.to_le_bytes()]);
            // Until the last thousand, identities retry up to twice, so passes (which free an
            // entry) and renewals mix with newcomers; the last thousand fill every shard.
            let tries = if n < 5000 { 1 + n % 3 } else { 1 };
            for _ in 0..tries {
                let shard = &mut table[shard_of(id) as usize];
                let before = shard.len() as i64;
                evictions += u64::from(shard.attempt(id, n, 2, LIMITS).evicted);
                gauge += shard.len() as i64 - before;
                assert!(gauge <= (LIMITS.per_shard * SHARDS as usize) as i64);
            }
        }
        assert_eq!(gauge, table.iter().map(Shard::len).sum::<usize>() as i64);
        assert_eq!(gauge, 64);
        assert!(evictions > 4000, "{evictions}");
    }

    #[test]
    fn encode_decode_round_trip_and_garbage() {
        let mut shard = Shard::default();
        shard.attempt(u64::MAX, 123, 2, LIMITS);
        shard.attempt(5, 124, 2, LIMITS);
        assert_eq!(Shard::decode(&shard.encode()), shard);
        assert_eq!(Shard::decode(b"short"), Shard::default());
    }
}

//! The policy state and the bounded-retry table in proxy-wasm shared data, which every
//! worker of the Envoy sees. Keys are prefixed: Istio leaves `vm_id` empty, so all such
//! plugins share one namespace.

use crate::guard::Window;
use crate::model::policy::State;
use crate::model::stored::{Origin, Stored};
use crate::faults::retries::{self, Attempt, Counted, Limits, Shard};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

const STATE_KEY: &str = "fault_injector.state";
/// The guard's window, all workers' counts summed (`guard::Window`'s stored form).
pub const GUARD_KEY: &str = "fault_injector.guard";
const CAS_TRIES: usize = 16;

fn read_stored() -> Stored {
    Stored::decode(&read(STATE_KEY)).unwrap_or_default()
}

/// A state written, with its origin.
pub type Written = Option<(State, Origin)>;

/// The current state.
pub fn state() -> State {
    read_stored().state
}

/// The current state and the configuration it started from.
pub fn state_and_origin() -> (State, Origin) {
    let stored = read_stored();
    (stored.state, stored.origin)
}

/// Changes the state with `change`, atomically against other workers: what was written, or
/// `Ok(None)` when `change` declines (it returns `None`) or the write did not land, `Err`
/// when it refuses. The caller moves the version stamp (the `state_version` gauge) for a
/// write, and tells the other workers. A `dyn` closure, as [`compare_and_set`] takes.
pub fn update(change: &dyn Fn(&State, &Origin) -> Result<Written, String>) -> Result<Written, String> {
    // Workers configuring at once each install the start policy if the key is missing; a
    // write that creates a key ignores its CAS, so the key is created (empty) first.
    create(STATE_KEY);
    // What the last run of `change` made of the state: what was written, if a write landed.
    let mut made = Ok(None);
    let landed = compare_and_set(STATE_KEY, &mut |bytes| {
        let stored = Stored::decode(bytes).unwrap_or_default();
        made = change(&stored.state, &stored.origin).map(|next| next.map(|(state, origin)| Stored { origin, state }));
        made.as_ref().ok()?.as_ref().map(Stored::encode)
    });
    match made? {
        Some(stored) if landed => Ok(Some((stored.state, stored.origin))),
        _ => Ok(None),
    }
}

/// Writes `key` with what `change` makes of its value (empty if missing), atomically against
/// other workers: when another write lands in between, `change` runs again on the new value.
/// `change` returns the bytes to write, or `None` to decline; true when a write landed.
/// Callers keep what else `change` made in their own variables: a `dyn` closure, not a
/// generic one, so that one copy of the loop serves all of them (README, module size).
fn compare_and_set(key: &str, change: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>) -> bool {
    for _ in 0..CAS_TRIES {
        let (bytes, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
        let Some(next) = change(bytes.as_deref().unwrap_or_default()) else {
            return false;
        };
        match hostcalls::set_shared_data(key, Some(&next), Some(cas.unwrap_or(0))) {
            Ok(()) => return true,
            Err(Status::CasMismatch) => continue,
            Err(_) => return false,
        }
    }
    false
}

fn shard_key(shard: u64) -> String {
    format!("fault_injector.retries.{shard}")
}

/// Creates the retry-table shards that do not exist yet, so that every shard write is a
/// checked (CAS) one: a write to a missing key ignores its CAS.
pub fn create_retry_shards() {
    for shard in 0..retries::SHARDS {
        create(&shard_key(shard));
    }
}

/// Creates `key`, empty, unless it exists. Envoy creates a missing key whatever the CAS, and
/// numbers the values it stores from 1 up, so the write's CAS matches none for some four
/// billion writes: it never overwrites what another worker created, or wrote, meanwhile.
/// (An empty value reads as missing too; writing it again changes nothing.)
fn create(key: &str) {
    if let Ok((None, _)) = hostcalls::get_shared_data(key) {
        let _ = hostcalls::set_shared_data(key, Some(&[]), Some(u32::MAX));
    }
}

/// Rewrites `key` (created empty if missing) with `change`, atomically against other
/// workers; returns what was written, or `None` if other writers kept winning.
pub fn rewrite(key: &str, mut change: impl FnMut(&[u8]) -> Vec<u8>) -> Option<Vec<u8>> {
    create(key);
    let mut written = Vec::new();
    let landed = compare_and_set(key, &mut |bytes| {
        written = change(bytes);
        Some(written.clone())
    });
    landed.then_some(written)
}

/// Empties the guard's window: a resume, a new policy or a new configuration counts afresh,
/// so failures from before it cannot halt it at once, even those a worker adds later.
pub fn forget_guard_window(now_ms: u64) {
    // Whatever another worker wrote meanwhile is forgotten too, so no CAS.
    let _ = hostcalls::set_shared_data(GUARD_KEY, Some(&Window::emptied(now_ms).encode()), None);
}

/// What `key` holds now (empty if missing).
pub fn read(key: &str) -> Vec<u8> {
    hostcalls::get_shared_data(key).ok().and_then(|(bytes, _)| bytes).unwrap_or_default()
}

/// Empties every bounded-retry shard, so that a reset or a new document counts attempts
/// afresh: the first attempt after it fails again. Returns how many identities it forgot,
/// for the table's gauge.
pub fn clear_retries() -> i64 {
    let mut forgotten = 0;
    for shard in 0..retries::SHARDS {
        let mut held = 0;
        let landed = compare_and_set(&shard_key(shard), &mut |bytes| {
            held = Shard::decode(bytes).len() as i64;
            Some(Vec::new())
        });
        if landed {
            forgotten += held;
        }
    }
    forgotten
}

/// Counts one attempt of a request identity in the shared table; the counting of what it
/// changed is left to the caller. An attempt that cannot be written passes.
pub fn attempt(id: u64, now_ms: u64, fail_first: u32, limits: Limits) -> Counted {
    let key = shard_key(retries::shard_of(id));
    let mut made = None;
    let landed = compare_and_set(&key, &mut |bytes| {
        let mut shard = Shard::decode(bytes);
        let before = shard.len();
        let outcome = shard.attempt(id, now_ms, fail_first, limits);
        made = Some((outcome, shard.len() as i64 - before as i64));
        Some(shard.encode())
    });
    match (landed, made) {
        (true, Some((outcome, grown))) => Counted { attempt: outcome.attempt, grown, evicted: outcome.evicted },
        _ => Counted { attempt: Attempt::Pass, grown: 0, evicted: false },
    }
}

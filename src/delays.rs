//! The requests a worker is holding, ordered by when each is due to be released.

use std::collections::BTreeSet;

/// Held requests by `(due time in ms, context id)`; one per worker, driven by its tick timer.
#[derive(Debug, Default)]
pub struct DelayQueue {
    held: BTreeSet<(u64, u32)>,
}

impl DelayQueue {
    /// Holds context `id` until `due_ms`.
    pub fn hold(&mut self, id: u32, due_ms: u64) {
        self.held.insert((due_ms, id));
    }

    /// Forgets a held context (its client hung up); true if it was held.
    pub fn cancel(&mut self, id: u32, due_ms: u64) -> bool {
        self.held.remove(&(due_ms, id))
    }

    /// Takes every context due at `now_ms`, earliest first.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<u32> {
        let later = self.held.split_off(&(now_ms.saturating_add(1), 0));
        let due = std::mem::replace(&mut self.held, later);
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// When the next held context is due.
    pub fn next_due(&self) -> Option<u64> {
        self.held.first().map(|(due, _)| *due)
    }

    /// How many contexts are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_due_order_and_only_when_due() {
        let mut q = DelayQueue::default();
        q.hold(1, 300);
        q.hold(2, 100);
        q.hold(3, 200);
        assert_eq!(q.next_due(), Some(100));
        assert_eq!(q.take_due(99), Vec::<u32>::new());
        assert_eq!(q.take_due(200), vec![2, 3]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_due(1000), vec![1]);
        assert!(q.is_empty());
    }

    #[test]
    fn cancelled_contexts_are_not_released() {
        let mut q = DelayQueue::default();
        q.hold(1, 100);
        q.hold(2, 100);
        assert!(q.cancel(1, 100));
        assert!(!q.cancel(1, 100));
        assert_eq!(q.take_due(100), vec![2]);
    }
}

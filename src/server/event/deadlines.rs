//! A min-heap of connection deadlines for an I/O thread. Entries are not
//! removed when a deadline moves: an entry that fires early is checked
//! against the connection's current deadline and pushed again if needed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Deadlines {
    /// Remembers to look at connection (`token`, `id`) at `when`.
    pub fn push(&mut self, when: Instant, token: usize, id: u64) {
        self.heap.push(Reverse((when, token, id)));
    }

    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((when, _, _))| *when)
    }

    /// The next entry due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64)> {
        match self.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= now => {
                let Reverse((_, token, id)) = self.heap.pop()?;
                Some((token, id))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let now = Instant::now();
        let mut d = Deadlines::default();
        d.push(now + Duration::from_secs(2), 2, 20);
        d.push(now + Duration::from_secs(1), 1, 10);
        assert_eq!(d.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(d.pop_due(now), None);
        assert_eq!(d.pop_due(now + Duration::from_secs(5)), Some((1, 10)));
        assert_eq!(d.pop_due(now + Duration::from_secs(5)), Some((2, 20)));
        assert_eq!(d.pop_due(now + Duration::from_secs(5)), None);
    }
}

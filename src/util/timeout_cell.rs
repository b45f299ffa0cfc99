//! A timeout that any thread may change while others read it: milliseconds
//! in an atomic, 0 meaning none (like Python's settimeout(None)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct TimeoutCell(AtomicU64);

impl TimeoutCell {
    /// `None` waits for ever; anything shorter than 1 ms counts as 1 ms.
    pub fn set(&self, timeout: Option<Duration>) {
        let ms = timeout.map_or(0, |t| t.as_millis().clamp(1, u64::MAX as u128) as u64);
        self.0.store(ms, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

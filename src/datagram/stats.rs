//! The counters of a datagram socket: what was sent, received and dropped,
//! and why.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::proto::sealed::Rejection;

/// Counters of one socket; each only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DgramStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams delivered (to a receive or a server's handler).
    pub received: u64,
    /// Received datagrams over the maximum size, discarded.
    pub too_large: u64,
    /// The rest are drops of sealed datagrams, one counter per reason.
    pub too_short: u64,
    /// Dropped: an unknown version byte.
    pub bad_version: u64,
    /// Dropped: the tag matches no key.
    pub bad_tag: u64,
    /// Dropped: older than the window allows.
    pub too_old: u64,
    /// Dropped: from further in the future than the window allows.
    pub too_new: u64,
    /// Dropped: a replay of one already accepted.
    pub replayed: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) too_large: AtomicU64,
    pub(super) too_short: AtomicU64,
    pub(super) bad_version: AtomicU64,
    pub(super) bad_tag: AtomicU64,
    pub(super) too_old: AtomicU64,
    pub(super) too_new: AtomicU64,
    pub(super) replayed: AtomicU64,
}

impl Counters {
    pub(super) fn rejected(&self, why: &Rejection) {
        let counter = match why {
            Rejection::TooShort { .. } => &self.too_short,
            Rejection::BadVersion(_) => &self.bad_version,
            Rejection::BadTag => &self.bad_tag,
            Rejection::TooOld { .. } => &self.too_old,
            Rejection::TooNew { .. } | Rejection::AheadFull { .. } => &self.too_new,
            Rejection::Replayed => &self.replayed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

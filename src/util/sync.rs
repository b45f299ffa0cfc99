//! The one lock helper every module uses.

use std::sync::{Mutex, MutexGuard};

/// Locks, ignoring poisoning: every update under sockserv's locks is a
/// single insert, remove or assignment, so a panic (in a user callback, say)
/// cannot leave one half-done.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

//! The application's side of event mode: the [`EventHandler`] callbacks, and
//! how the I/O thread runs them (a panic closes the connection, never the
//! thread).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use crate::server::event::conn::EventConn;

/// The callbacks of an event-driven server. They run on the I/O thread
/// that owns the connection: while one runs, that thread's other
/// connections wait, so they must not block (hand long work to a thread of
/// your own and reply with [`EventConn::send`], which any thread may call).
pub trait EventHandler: Send + Sync {
    /// The connection passed the handshake (or needs none).
    fn on_open(&self, conn: &Arc<EventConn>);
    /// One whole frame, borrowed for the call.
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]);
    /// The connection ended: exactly once for every opened connection.
    /// `None` is a close asked for with [`EventConn::close`].
    fn on_close(&self, conn: &Arc<EventConn>, reason: Option<&Error>);
}

/// Why a connection is being closed; `None` reason: asked by the owner.
pub(super) type Outcome = std::result::Result<(), Option<Error>>;

/// Runs a user callback; a panic closes the connection instead of killing
/// the I/O thread.
pub(super) fn callback(f: impl FnOnce()) -> Outcome {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        Some(Error::new(
            ErrorKind::Panic,
            "a callback panicked; its connection was closed",
        ))
    })
}

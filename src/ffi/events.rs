//! Event mode: the callbacks of an event-driven `sockserv_server` and the
//! call that installs them.

use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::conn::ConnKind;
use super::{
    arg, guard, result_of, set_last_error, sockserv_conn, sockserv_result, sockserv_server,
    UserData,
};
use crate::error::Error;
use crate::server::event::{EventConn, EventHandler};

/// Event mode: a connection passed the handshake (or needs none). `conn`
/// is lent: the server's reference keeps it valid until `on_close` for it
/// returns. To use it from another thread beyond that (a worker replying
/// with `sockserv_conn_send`), take a reference with `sockserv_conn_retain`
/// here or in `on_frame` and drop it with `sockserv_conn_release`; once the
/// connection closed, calls through it return `SOCKSERV_ERR_CLOSED`. Runs on the connection's I/O thread; with several I/O
/// threads, callbacks for different connections run at the same time, so
/// `userdata` must be safe to share between threads. Like every callback:
/// must not throw a C++ exception or longjmp out.
pub type sockserv_open_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, conn: *mut sockserv_conn)>;

/// Event mode: one whole frame; `data` (`len` bytes) is valid during the
/// call only. Runs on the connection's I/O thread, which serves nothing
/// else meanwhile: do not block (hand long work to a thread of yours and
/// reply with `sockserv_conn_send` from there).
pub type sockserv_frame_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        conn: *mut sockserv_conn,
        data: *const u8,
        len: usize,
    ),
>;

/// Event mode: the connection ended; called exactly once for every
/// connection `on_open` saw, after which the server drops its reference
/// (the handle is freed unless retained with `sockserv_conn_retain`; sends
/// through a retained one return `SOCKSERV_ERR_CLOSED`, already during
/// this call). `reason` is
/// `SOCKSERV_OK` after `sockserv_conn_close`, `SOCKSERV_ERR_CLOSED` when the
/// peer closed, `SOCKSERV_ERR_SHUTDOWN` when the server is freed,
/// `SOCKSERV_ERR_TIMED_OUT` for the idle timeout, or the error that ended
/// it; `sockserv_last_error` gives the detail during the call.
pub type sockserv_close_fn = Option<
    unsafe extern "C" fn(userdata: *mut c_void, conn: *mut sockserv_conn, reason: sockserv_result),
>;

/// The C callbacks of an event-mode server. Each connection's C handle is
/// created before `on_open`, kept in the connection's slot (holding the
/// server's reference), and that reference is dropped after `on_close`.
struct CEvents {
    on_open: sockserv_open_fn,
    on_frame: sockserv_frame_fn,
    on_close: sockserv_close_fn,
    userdata: UserData,
}

impl CEvents {
    fn handle(conn: &EventConn) -> *mut sockserv_conn {
        conn.slot.load(Ordering::Acquire) as *mut sockserv_conn
    }
}

impl EventHandler for CEvents {
    fn on_open(&self, conn: &Arc<EventConn>) {
        let handle = sockserv_conn::lent(ConnKind::Event(conn.clone()));
        conn.slot.store(handle as usize, Ordering::Release);
        if let Some(f) = self.on_open {
            // SAFETY: the caller's function with the documented signature;
            // the server's reference keeps `handle` alive until after on_close.
            unsafe { f(self.userdata.0, handle) };
        }
    }

    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        if let Some(f) = self.on_frame {
            // SAFETY: as in on_open; `frame` outlives the call.
            unsafe {
                f(
                    self.userdata.0,
                    Self::handle(conn),
                    frame.as_ptr(),
                    frame.len(),
                )
            };
        }
    }

    fn on_close(&self, conn: &Arc<EventConn>, reason: Option<&Error>) {
        let handle = conn.slot.swap(0, Ordering::AcqRel) as *mut sockserv_conn;
        if handle.is_null() {
            return;
        }
        let code = match reason {
            None => sockserv_result::SOCKSERV_OK,
            Some(e) => {
                set_last_error(e.detail());
                result_of(e.kind())
            }
        };
        if let Some(f) = self.on_close {
            // SAFETY: as in on_open.
            unsafe { f(self.userdata.0, handle, code) };
        }
        // SAFETY: `handle` came from sockserv_conn::lent in on_open and the
        // slot held the server's reference alone; the swap takes it once.
        unsafe { sockserv_conn::server_done(handle) };
    }
}

/// Makes the server event-driven: instead of a thread per connection, a
/// few I/O threads (`sockserv_config_set_io_threads`) hold every connection
/// and call `on_open`, `on_frame` for each whole frame, and `on_close`
/// (any may be NULL). Only before the server starts, else
/// `SOCKSERV_ERR_INVALID_STATE`; replaces a handler set with
/// `sockserv_server_set_handler`. `userdata` must stay valid until
/// `sockserv_server_free` returns.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server has started or stopped.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_set_event_handlers(
    server: *const sockserv_server,
    on_open: sockserv_open_fn,
    on_frame: sockserv_frame_fn,
    on_close: sockserv_close_fn,
    userdata: *mut c_void,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let server = unsafe { arg(server, "server") }?;
        server.inner.set_event_handler(Arc::new(CEvents {
            on_open,
            on_frame,
            on_close,
            userdata: UserData(userdata),
        }))
    })
}

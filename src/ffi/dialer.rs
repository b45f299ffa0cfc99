//! `sockserv_dialer`: outgoing connections on an event-mode server's
//! engine, with the same callbacks as accepted ones.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{
    arg, c_str, guard, guard_value, out, result_of, sockserv_config, sockserv_result,
    sockserv_server, UserData,
};
use crate::error::{Error, ErrorKind};
use crate::server::event::Dialer;

/// An outgoing connection that an event-mode server keeps dialing
/// (opaque), made by `sockserv_server_dial`. Its functions may be called
/// from any thread (an event callback too), except `sockserv_dialer_free`,
/// which must be the last call.
pub struct sockserv_dialer {
    inner: Arc<Dialer>,
}

/// A dial failed: the connect (`SOCKSERV_ERR_CONNECTION_REFUSED`,
/// `SOCKSERV_ERR_TIMED_OUT` past the config's connect timeout,
/// `SOCKSERV_ERR_IO`...) or the preamble after it (`SOCKSERV_ERR_AUTH_FAILED`
/// when the keys do not match, `SOCKSERV_ERR_AUTH_PROTOCOL`,
/// `SOCKSERV_ERR_CLOSED`...). `detail` (valid during the call) says what
/// happened, naming the address. Runs on the dialer's I/O thread, like the
/// event callbacks (do not block); once per failed attempt; never after
/// `sockserv_dialer_close` returned (nor after `sockserv_dialer_free`).
pub type sockserv_dial_error_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        dialer: *mut sockserv_dialer,
        code: c_int,
        detail: *const c_char,
    ),
>;

/// Sets the function told of each failed dial of this server's dialers
/// (NULL: none). Any time, from any thread; applies to every dialer of the
/// server from its next report. `userdata` must stay valid until
/// `sockserv_server_free` returns.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_set_dial_error_handler(
    server: *const sockserv_server,
    handler: sockserv_dial_error_fn,
    userdata: *mut c_void,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let server = unsafe { arg(server, "server") }?;
        let Some(handler) = handler else {
            server.inner.set_dial_error_handler(None);
            return Ok(());
        };
        let userdata = UserData(userdata);
        server.inner.set_dial_error_handler(Some(Arc::new(
            move |dialer: &Arc<Dialer>, e: &Error| {
                let userdata = userdata;
                let handle = dialer.slot.load(Ordering::Acquire) as *mut sockserv_dialer;
                if handle.is_null() {
                    return;
                }
                let detail = CString::new(e.detail().replace('\0', " ")).unwrap_or_default();
                // SAFETY: the caller's function with the documented
                // signature; `handle` stays valid while reports can run
                // (sockserv_dialer_free waits for one under way first), and
                // `detail` outlives the call.
                unsafe {
                    handler(
                        userdata.0,
                        handle,
                        result_of(e.kind()) as c_int,
                        detail.as_ptr(),
                    )
                };
            },
        )));
        Ok(())
    })
}

/// Dials `addr` ("tcp://HOST:PORT", "tcp://[::1]:PORT", "tls://HOST:PORT",
/// "unix://PATH") from the server's event engine and returns at once: the connect, its
/// timeout (`sockserv_config_set_connect_timeout`) and the handshake (with
/// the config's keys, as the client) run on an I/O thread without
/// blocking it. Once the handshake passes, the connection gets the
/// server's `on_open`, `on_frame` and `on_close` like an accepted one.
/// When the connect or handshake fails (reported to the dial error
/// handler) or the connection ends, the dialer dials again after a
/// backoff (100 ms doubling to 30 s; see `sockserv_dialer_set_reconnect`).
///
/// The name is resolved here, on the calling thread (it may block on DNS;
/// "tcp://127.0.0.1:PORT" does not), once: the I/O threads never resolve.
/// `config` is copied; NULL means the server's. The server must be
/// event-driven and started (`sockserv_server_start`, or an unbound one
/// from `sockserv_server_new_unbound`). Stop the dialer with
/// `sockserv_dialer_close`, free it with `sockserv_dialer_free`.
///
/// @retval SOCKSERV_OK `*dialer_out` holds the dialer, connecting.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server`, `addr` or `dialer_out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `addr` is not UTF-8.
/// @retval SOCKSERV_ERR_INVALID_ADDRESS `addr` cannot be parsed or resolved.
/// @retval SOCKSERV_ERR_INVALID_STATE the server is not running in event mode.
/// @retval SOCKSERV_ERR_SHUTDOWN the (unbound) server was shut down.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_dial(
    server: *const sockserv_server,
    addr: *const c_char,
    config: *const sockserv_config,
    dialer_out: *mut *mut sockserv_dialer,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (server, addr, dialer_out) = unsafe {
            (
                arg(server, "server")?,
                c_str(addr, "addr")?,
                out(dialer_out, "dialer_out")?,
            )
        };
        // SAFETY: caller contract: NULL or a live config.
        let config = unsafe { config.as_ref() }.map(|c| &c.inner);
        let inner = server.inner.new_dialer(addr, config)?;
        let handle = Box::into_raw(Box::new(sockserv_dialer {
            inner: inner.clone(),
        }));
        // Before it starts: its first failure already finds the handle.
        inner.slot.store(handle as usize, Ordering::Release);
        inner.start();
        dialer_out.put(handle);
        Ok(())
    })
}

/// Sets the backoff between attempts: the first wait `min_ms`, doubling
/// up to `max_ms` (a connection that opened starts again from `min_ms`);
/// `0, 0` dials once (no reconnect). Call it right after
/// `sockserv_server_dial`: it takes effect at once (a wait under way is cut
/// to `min_ms`; with `0, 0` no further attempt starts), so it is as if the
/// dialer had started with it.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `dialer` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT negative, `min_ms` 0 alone, or `max_ms` < `min_ms`.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dialer_set_reconnect(
    dialer: *mut sockserv_dialer,
    min_ms: c_int,
    max_ms: c_int,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let dialer = unsafe { arg(dialer.cast_const(), "dialer") }?;
        let ms = |v: c_int| {
            u64::try_from(v).map(Duration::from_millis).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("a reconnect time of {v} ms is negative"),
                )
            })
        };
        dialer.inner.set_reconnect(ms(min_ms)?, ms(max_ms)?)
    })
}

/// Stops the dialer: no more attempts, and its connection, if one is open,
/// closes as with `sockserv_conn_close` (what it queued is written first;
/// `on_close` runs once, with `SOCKSERV_OK`). A connect or handshake under
/// way is dropped without a callback. No dial error is reported after it
/// returns (except one already running on the I/O thread; see
/// `sockserv_dialer_free`). Closing twice does nothing.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `dialer` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dialer_close(dialer: *const sockserv_dialer) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(dialer, "dialer") }?.inner.close();
        Ok(())
    })
}

/// Closes the dialer (as `sockserv_dialer_close`) and frees it; a dial
/// error report running on another thread finishes first, and none runs
/// after this returns. Allowed from a callback, the dial error handler of
/// this dialer too, and after `sockserv_server_free`. NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dialer_free(dialer: *mut sockserv_dialer) {
    guard_value((), || {
        if dialer.is_null() {
            return;
        }
        // SAFETY: a non-NULL dialer came from sockserv_server_dial
        // (Box::into_raw) and is freed once, as the caller contract says.
        let handle = unsafe { Box::from_raw(dialer) };
        handle.inner.slot.store(0, Ordering::Release);
        handle.inner.detach();
    })
}

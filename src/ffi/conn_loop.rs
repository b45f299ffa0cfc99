//! `sockserv_conn` from an event loop: `sockserv_connect_start` and
//! `sockserv_conn_continue` (a connect and handshake that never block),
//! and `sockserv_conn_pending` (frames buffered inside sockserv, which the
//! socket's readiness does not show).

use std::ffi::{c_char, c_int};

use super::conn::{new_handle_of, ConnKind};
use super::{
    arg, c_str, config_or_default, guard, loop_wait_ms, out, sockserv_config, sockserv_conn,
    sockserv_result,
};
use crate::error::{Error, ErrorKind};
use crate::stream::connect_nb::{Connecting, PendingConnection};

/// Starts connecting to `addr` like `sockserv_connect` and returns at
/// once: the connect and the handshake go on as you call
/// `sockserv_conn_continue`, which never blocks. Only the name lookup
/// happens here (a numeric address such as "tcp://127.0.0.1:PORT" or a
/// "unix://" path never waits). `config` is copied; NULL means the
/// defaults. Free the connection with `sockserv_conn_free` (also while
/// connecting: that gives up).
///
/// The loop's part: watch `sockserv_conn_fd` (readable, or writable when
/// `sockserv_conn_continue` set `*want_write`) and call
/// `sockserv_conn_continue` on each wake-up, and when the wait that
/// `sockserv_conn_continue_timeout_ms` gives is over (the connect and
/// handshake timeouts are checked there), until it returns `SOCKSERV_OK`. The established connection is in
/// non-blocking mode (`SOCKSERV_OPT_NONBLOCKING`): receives return
/// `SOCKSERV_ERR_WOULD_BLOCK` instead of waiting. Frames may then be
/// buffered inside sockserv where the fd does not show them: after each
/// wake-up, receive until `sockserv_conn_pending` says 0 (a
/// level-triggered loop) or until `SOCKSERV_ERR_WOULD_BLOCK` (either
/// kind).
///
/// @retval SOCKSERV_OK `*conn_out` holds the connection, connecting.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `addr` or `conn_out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `addr` is not UTF-8.
/// @retval SOCKSERV_ERR_INVALID_ADDRESS `addr` cannot be parsed or resolved.
/// @retval SOCKSERV_ERR_CONNECTION_REFUSED refused at once (a "unix://" path with
/// nobody listening).
/// @retval SOCKSERV_ERR_IO another OS error (no socket could be made).
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_connect_start(
    addr: *const c_char,
    config: *const sockserv_config,
    conn_out: *mut *mut sockserv_conn,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (addr, conn_out) = unsafe { (c_str(addr, "addr")?, out(conn_out, "conn_out")?) };
        let connecting = Connecting::start(addr, &config_or_default(config))?;
        let pending = PendingConnection::new(connecting);
        conn_out.put(new_handle_of(ConnKind::Connecting(Box::new(pending))));
        Ok(())
    })
}

/// Moves a connection from `sockserv_connect_start` on, without blocking.
/// `SOCKSERV_OK`: it is established (authenticated if keyed) and works like
/// one from `sockserv_connect`; later calls return `SOCKSERV_OK` again.
/// `SOCKSERV_ERR_WOULD_BLOCK`: not yet; wait until `sockserv_conn_fd` is
/// writable if `*want_write` is true, else readable, then call again (the
/// fd changes only when an address failed and the next resolved one is
/// tried: read it again after each call). Any other code is the failure
/// `sockserv_connect` would have returned, and stays (the socket is
/// closed). For a connection that was never connecting: `SOCKSERV_OK`.
///
/// @retval SOCKSERV_OK established; `*want_write` is false.
/// @retval SOCKSERV_ERR_WOULD_BLOCK in progress; `*want_write` says what to wait for.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `want_write` is NULL.
/// @retval SOCKSERV_ERR_CONNECTION_REFUSED nobody accepts connections there.
/// @retval SOCKSERV_ERR_TIMED_OUT no address accepted within the connect timeout,
/// or the handshake took longer than its timeout.
/// @retval SOCKSERV_ERR_AUTH_FAILED the keys do not match.
/// @retval SOCKSERV_ERR_AUTH_PROTOCOL the peer broke or downgraded the handshake.
/// @retval SOCKSERV_ERR_CLOSED the peer closed the connection during the handshake.
/// @retval SOCKSERV_ERR_TRUNCATED_FRAME the peer closed in the middle of a
/// handshake message.
/// @retval SOCKSERV_ERR_FRAME_TOO_LARGE, SOCKSERV_ERR_PROTOCOL a handshake message
/// broke the framing.
/// @retval SOCKSERV_ERR_TLS the TLS handshake failed (a `tls://` address).
/// @retval SOCKSERV_ERR_CERTIFICATE the server's certificate was refused, or
/// it refused ours.
/// @retval SOCKSERV_ERR_BROKEN it was closed (`sockserv_conn_close`) while connecting.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_continue(
    conn: *const sockserv_conn,
    want_write: *mut bool,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (conn, want_write) = unsafe { (arg(conn, "conn")?, out(want_write, "want_write")?) };
        let ConnKind::Connecting(pending) = &conn.kind else {
            want_write.put(false);
            return Ok(());
        };
        match pending.advance()? {
            None => {
                want_write.put(false);
                Ok(())
            }
            Some(write) => {
                want_write.put(write);
                Err(Error::new(
                    ErrorKind::WouldBlock,
                    format!("connecting to {}: in progress", pending.peer_addr()),
                ))
            }
        }
    })
}

/// Writes to `*ms` the longest a loop may wait on `sockserv_conn_fd`
/// before calling `sockserv_conn_continue` anyway: the milliseconds until
/// the connect or handshake deadline (rounded up; 0 once it passed), which
/// only `sockserv_conn_continue` notices. -1 once the connection is
/// established or failed (or was never connecting): no deadline to wait
/// for.
///
/// @retval SOCKSERV_OK `*ms` was written.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `ms` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_continue_timeout_ms(
    conn: *const sockserv_conn,
    ms: *mut c_int,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (conn, ms) = unsafe { (arg(conn, "conn")?, out(ms, "ms")?) };
        let wait = match &conn.kind {
            ConnKind::Connecting(pending) => pending.timeout(),
            _ => None,
        };
        ms.put(loop_wait_ms(wait));
        Ok(())
    })
}

/// Writes into `*frames` how many whole frames are buffered inside
/// sockserv for this connection: received from the socket already, so the
/// fd will not turn readable for them. Each receive returns one of them
/// without reading the socket. The rule for an event loop: after a
/// wake-up, receive while this is above 0 (or until
/// `SOCKSERV_ERR_WOULD_BLOCK`); a level-triggered loop that receives once
/// per wake-up otherwise strands the frames that arrived together with
/// the first. Blocking connections only (event-mode ones deliver every
/// frame to `on_frame`).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `frames` is NULL.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_INVALID_STATE an event-mode connection, or one still connecting.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_pending(
    conn: *const sockserv_conn,
    frames: *mut usize,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (conn, frames) = unsafe { (arg(conn, "conn")?, out(frames, "frames")?) };
        frames.put(conn.blocking("sockserv_conn_pending")?.pending_frames());
        Ok(())
    })
}

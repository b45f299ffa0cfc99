//! `sockserv_server`: servers, threaded or event-driven, and their callbacks.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::Arc;

use super::conn::ConnKind;
use super::{
    arg, c_str, config_or_default, copy_str, free_box, guard, loop_wait_ms, out, sockserv_config,
    sockserv_conn, sockserv_result, UserData,
};
use crate::error::{Error, ErrorKind};
use crate::server::accept::Server;
use crate::stream::connection::Connection;

/// A listening server (opaque). Its functions may be called from any
/// thread, except `sockserv_server_free`, which must be the last call.
pub struct sockserv_server {
    pub(super) inner: Server,
}

/// Handles one connection, on a thread of its own, after the handshake
/// succeeded. `conn` is lent: the server's reference keeps it valid until
/// the handler returns, when the server closes it (do not free it). A
/// thread of yours that needs it longer takes a reference with
/// `sockserv_conn_retain` (and drops it with `sockserv_conn_release`);
/// once the handler returned, calls through it return
/// `SOCKSERV_ERR_CLOSED`. Runs concurrently with other handlers,
/// so `userdata` must be safe to share between threads. Must not throw a
/// C++ exception or longjmp out.
pub type sockserv_handler_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, conn: *mut sockserv_conn)>;

/// Decides whether to serve a peer, before the handshake: `peer_addr` is
/// its address as "tcp://IP:PORT" or "unix://PATH", valid during the call.
/// Return true to serve, false to close the connection. Runs on the accept
/// thread: keep it quick, as no connection is accepted meanwhile.
pub type sockserv_verify_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, peer_addr: *const c_char) -> bool>;

/// `sockserv_server_stat`: connections accepted from the listener.
pub const SOCKSERV_STAT_ACCEPTED: c_int = 0;
/// Connections being served now (handshake or handler running).
pub const SOCKSERV_STAT_ACTIVE: c_int = 1;
/// Connections the verify callback refused.
pub const SOCKSERV_STAT_REFUSED_BY_VERIFY: c_int = 2;
/// Connections closed at once because the server was full
/// (`SOCKSERV_WHEN_FULL_REFUSE`).
pub const SOCKSERV_STAT_REFUSED_WHEN_FULL: c_int = 3;
/// Connections whose handshake failed (wrong key, timeout, bad messages).
pub const SOCKSERV_STAT_HANDSHAKE_FAILURES: c_int = 4;
/// Connections whose handler ran and returned (event mode: that opened and
/// closed).
pub const SOCKSERV_STAT_HANDLED: c_int = 5;
/// Connections closed for a missing or malformed PROXY protocol header
/// (`SOCKSERV_PROXY_REQUIRED`).
pub const SOCKSERV_STAT_PROXY_FAILURES: c_int = 6;

/// Creates a server bound to `addr` ("tcp://127.0.0.1:9000", "tcp://[::1]:0",
/// "unix:///run/app.sock") and listening. Port 0 picks a free port (read it
/// with `sockserv_server_local_addr`). `config` is copied; NULL means the
/// defaults. A stale Unix socket file is replaced; the file is removed when
/// the server is freed. Free the server with `sockserv_server_free`.
///
/// @retval SOCKSERV_OK `*server_out` holds the new server, listening.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `addr` or `server_out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ADDRESS `addr` cannot be parsed or resolved, or names
/// no systemd socket.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `addr` is not UTF-8, an `fd://` descriptor is
/// not a listening stream socket, or `LISTEN_FDS` is malformed.
/// @retval SOCKSERV_ERR_ADDRESS_IN_USE another socket is bound to the address (or a
/// live server owns the Unix socket file).
/// @retval SOCKSERV_ERR_IO another OS error (permissions, no memory...).
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_new(
    addr: *const c_char,
    config: *const sockserv_config,
    server_out: *mut *mut sockserv_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (addr, server_out) = unsafe { (c_str(addr, "addr")?, out(server_out, "server_out")?) };
        let server = Server::bind(addr, &config_or_default(config))?;
        server_out.put(Box::into_raw(Box::new(sockserv_server { inner: server })));
        Ok(())
    })
}

/// Creates an event engine with no listener, for outgoing connections
/// only (`sockserv_server_dial`): set the event handlers
/// (`sockserv_server_set_event_handlers`), start it
/// (`sockserv_server_start` starts its I/O threads, and no accept thread),
/// then dial. `sockserv_server_local_addr` gives "". `config` is copied;
/// NULL means the defaults. Free it with `sockserv_server_free`.
///
/// @retval SOCKSERV_OK `*server_out` holds the new server.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server_out` is NULL.
/// @retval SOCKSERV_ERR_IO the OS refused a resource (a socket pair).
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_new_unbound(
    config: *const sockserv_config,
    server_out: *mut *mut sockserv_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let server_out = unsafe { out(server_out, "server_out") }?;
        let server = Server::unbound(&config_or_default(config))?;
        server_out.put(Box::into_raw(Box::new(sockserv_server { inner: server })));
        Ok(())
    })
}

/// Sets the function run for each authenticated connection (NULL: none;
/// the connection is closed after the handshake). Only before the server
/// starts, else `SOCKSERV_ERR_INVALID_STATE`. `userdata` must stay valid
/// until `sockserv_server_free` returns.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server has started or stopped.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_set_handler(
    server: *const sockserv_server,
    handler: sockserv_handler_fn,
    userdata: *mut c_void,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let server = unsafe { arg(server, "server") }?;
        let userdata = UserData(userdata);
        let Some(handler) = handler else {
            return server.inner.set_handler(Arc::new(|_: &Arc<Connection>| {}));
        };
        server
            .inner
            .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                let userdata = userdata;
                let handle = sockserv_conn::lent(ConnKind::Blocking(conn.clone()));
                // SAFETY: the handler is the caller's function with the
                // documented signature; the server's reference keeps
                // `handle` alive during the call.
                unsafe { handler(userdata.0, handle) };
                // SAFETY: from lent above; the server's reference, once.
                unsafe { sockserv_conn::server_done(handle) };
            }))
    })
}

/// Sets the function that accepts or refuses each peer by address (NULL:
/// accept all). Only before the server starts, else
/// `SOCKSERV_ERR_INVALID_STATE`. `userdata` must stay valid until
/// `sockserv_server_free` returns.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server has started or stopped.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_set_verify(
    server: *const sockserv_server,
    verify: sockserv_verify_fn,
    userdata: *mut c_void,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let server = unsafe { arg(server, "server") }?;
        let userdata = UserData(userdata);
        let Some(verify) = verify else {
            return server.inner.set_verify(Arc::new(|_: &str| true));
        };
        server.inner.set_verify(Arc::new(move |peer: &str| {
            let userdata = userdata;
            let Ok(peer) = CString::new(peer) else {
                return false;
            };
            // SAFETY: the caller's function with the documented signature;
            // `peer` outlives the call.
            unsafe { verify(userdata.0, peer.as_ptr()) }
        }))
    })
}

/// Writes the bound address ("tcp://127.0.0.1:40123") into `buf` of `len`
/// bytes, NUL-terminated; `*needed` receives the size it takes, NUL
/// included, also with `SOCKSERV_ERR_INSUFFICIENT_SIZE` (so `buf` NULL
/// with `len` 0 asks for the size). `SOCKSERV_ADDRSTRLEN` bytes are always
/// enough.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` or `needed`, or `buf` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE `len` is too small; `*needed` was written.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_local_addr(
    server: *const sockserv_server,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let server = unsafe { arg(server, "server") }?;
        // SAFETY: caller contract: `buf` has `len` writable bytes.
        unsafe { copy_str(server.inner.local_addr(), buf, len, needed) }
    })
}

/// Serves on the calling thread until `sockserv_server_shutdown`, then
/// returns `SOCKSERV_OK` (handlers still running go on). Like
/// `serve_forever`. A server serves once: `SOCKSERV_ERR_INVALID_STATE` if
/// it is already serving, `SOCKSERV_ERR_SHUTDOWN` after a shutdown (create
/// a new one).
///
/// @retval SOCKSERV_OK the server was shut down and serving stopped.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server is already serving.
/// @retval SOCKSERV_ERR_SHUTDOWN the server was shut down.
/// @retval SOCKSERV_ERR_IO starting the I/O threads failed.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_serve(server: *const sockserv_server) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(server, "server") }?.inner.serve()
    })
}

/// Serves on a background thread and returns at once. The same codes as
/// `sockserv_server_serve`, and `SOCKSERV_ERR_IO` if no thread can be
/// started.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server is already serving.
/// @retval SOCKSERV_ERR_SHUTDOWN the server was shut down.
/// @retval SOCKSERV_ERR_IO no thread could be started.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_start(server: *const sockserv_server) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(server, "server") }?.inner.start()
    })
}

/// Embedded mode: serves from the caller's own event loop (libuv,
/// libevent, asyncio, a poll() loop), with no thread of sockserv's at all.
/// Needs event handlers (`sockserv_server_set_event_handlers`); instead of
/// `sockserv_server_serve` or `_start`. Every callback (`on_open`,
/// `on_frame`, `on_close`, verify) then runs on the thread that calls
/// `sockserv_server_process`, inside that call.
///
/// The rule for the caller, for level- and edge-triggered loops alike:
/// watch the descriptor from `sockserv_server_loop_fd` for readability;
/// after each wake-up or timeout call `sockserv_server_process`, then ask
/// `sockserv_server_loop_timeout_ms` and wait at most that long (-1: no
/// deadline). 0 means "more work is ready: call process again before
/// sleeping" (work a turn left for fairness, or events the descriptor will
/// not signal again): a loop that waits anyway may stall. Drive one server
/// from one thread at a time; `sockserv_conn_send`, `sockserv_conn_close`
/// and `sockserv_server_shutdown` may still come from any thread (they
/// wake the descriptor).
///
/// @retval SOCKSERV_OK done: the listener is in the loop's descriptor.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE no event handlers are set, or the server is
/// already serving.
/// @retval SOCKSERV_ERR_SHUTDOWN the server was shut down.
/// @retval SOCKSERV_ERR_IO the poller could not be created.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_start_embedded(
    server: *const sockserv_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(server, "server") }?.inner.start_embedded()
    })
}

/// Embedded mode: writes to `*fd` the descriptor to watch for readability
/// (an epoll instance; register it level- or edge-triggered, e.g. with
/// `uv_poll_init`, `event_new(..., EV_READ | EV_PERSIST, ...)` or
/// `loop.add_reader`). It stays the same until the server is freed, which
/// closes it: never read, write or close it yourself.
///
/// @retval SOCKSERV_OK `*fd` was written.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` or `fd` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server was not started with
/// `sockserv_server_start_embedded`.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_loop_fd(
    server: *const sockserv_server,
    fd: *mut c_int,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (server, fd) = unsafe { (arg(server, "server")?, out(fd, "fd")?) };
        fd.put(server.inner.loop_fd()?);
        Ok(())
    })
}

/// Embedded mode: writes to `*ms` how long the loop may wait before the
/// next `sockserv_server_process` if the descriptor stays quiet: -1 when
/// no deadline is set, 0 when work is ready now (call process again before
/// sleeping), else the milliseconds until the next timer (the handshake
/// and idle timeouts, a close's linger), rounded up. Asked from inside a
/// callback, 0.
///
/// @retval SOCKSERV_OK `*ms` was written.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` or `ms` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server was not started with
/// `sockserv_server_start_embedded`.
/// @retval SOCKSERV_ERR_SHUTDOWN the server was shut down and process has closed
/// every connection: leave the loop.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_loop_timeout_ms(
    server: *const sockserv_server,
    ms: *mut c_int,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (server, ms) = unsafe { (arg(server, "server")?, out(ms, "ms")?) };
        ms.put(loop_wait_ms(server.inner.loop_timeout()?));
        Ok(())
    })
}

/// Embedded mode: does all the work that is ready, without ever waiting:
/// accepts (a bounded number per call), reads and delivers frames (each
/// connection its fair share), writes, runs sends and closes posted from
/// other threads, and fires the timers due. Every callback runs inside
/// this call, on this thread; a callback may send, close any connection
/// and call `sockserv_server_shutdown`, but not call process itself
/// (`SOCKSERV_ERR_INVALID_STATE`) nor free the server. After a shutdown,
/// the next call closes every connection (`on_close` for each, reason
/// `SOCKSERV_ERR_SHUTDOWN`) and returns `SOCKSERV_ERR_SHUTDOWN`, as every
/// later call does: then leave the loop and free the server.
///
/// @retval SOCKSERV_OK the ready work was done; ask `sockserv_server_loop_timeout_ms`.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server was not started with
/// `sockserv_server_start_embedded`, or process was called from inside one of its
/// callbacks (or from two threads at once).
/// @retval SOCKSERV_ERR_SHUTDOWN the server was shut down; every connection is closed.
/// @retval SOCKSERV_ERR_IO polling failed.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_process(
    server: *const sockserv_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(server, "server") }?.inner.process()
    })
}

/// Stops accepting, from any thread (a handler too), and returns at once:
/// `sockserv_server_serve` returns promptly, and the listener refuses new
/// clients. Live connections go on until their handlers return or the
/// server is freed; embedded, `sockserv_server_process` closes them (this
/// may be called from one of its event callbacks). Not async-signal-safe:
/// from a signal, wake a thread of yours (sigwait, a self-pipe) and call it
/// there.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_shutdown(
    server: *const sockserv_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(server, "server") }?.inner.shutdown();
        Ok(())
    })
}

/// Reads one counter (`SOCKSERV_STAT_*`) into `*value`; an unknown one
/// gives `SOCKSERV_ERR_INVALID_ARGUMENT`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` or `value` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `stat` is no `SOCKSERV_STAT_*`.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_stat(
    server: *const sockserv_server,
    stat: c_int,
    value: *mut u64,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (server, value) = unsafe { (arg(server, "server")?, out(value, "value")?) };
        let s = server.inner.stats();
        value.put(match stat {
            SOCKSERV_STAT_ACCEPTED => s.accepted,
            SOCKSERV_STAT_ACTIVE => s.active,
            SOCKSERV_STAT_REFUSED_BY_VERIFY => s.refused_by_verify,
            SOCKSERV_STAT_REFUSED_WHEN_FULL => s.refused_when_full,
            SOCKSERV_STAT_HANDSHAKE_FAILURES => s.handshake_failures,
            SOCKSERV_STAT_HANDLED => s.handled,
            SOCKSERV_STAT_PROXY_FAILURES => s.proxy_failures,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("unknown stat {other}"),
                ))
            }
        });
        Ok(())
    })
}

/// Stops the server and frees it: stops accepting, closes every live
/// connection (a handler blocked in send or receive gets
/// `SOCKSERV_ERR_SHUTDOWN`), waits for every handler to return, joins every
/// thread, closes the listener and removes its Unix socket file. Call it
/// after `sockserv_server_serve` has returned, never from a handler, verify
/// or event callback (it would wait for itself). NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn sockserv_server_free(server: *mut sockserv_server) {
    // SAFETY: a non-NULL server came from sockserv_server_new
    // (Box::into_raw) and is freed once, as the caller contract says.
    unsafe { free_box(server) }
}

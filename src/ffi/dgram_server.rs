//! `sockserv_dgram_server`: a datagram server, like Python's UDPServer and
//! UnixDatagramServer.
//!
//! Why a family of its own rather than `sockserv_server`: a datagram server
//! has no connections, so nothing of `sockserv_conn` (handshake, frames,
//! per-connection threads, verify, the connection cap) applies; its handler
//! runs per datagram and answers by address. The functions follow the same
//! conventions and names: `_new`, `_set_handler`, `_serve`, `_start`,
//! `_shutdown`, `_free`, `_local_addr`.

use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::{
    arg, c_str, config_or_default, copy_str, free_box, guard, out, sockserv_config, sockserv_dgram,
    sockserv_result, UserData,
};
use crate::datagram::server::DgramServer;
use crate::datagram::DgramSocket;

/// A datagram server (opaque): one thread receives on a bound socket and
/// runs the handler for each datagram. Its functions may be called from any
/// thread, except `sockserv_dgram_server_free`, which must be the last call.
pub struct sockserv_dgram_server {
    // Dropped first: stops and joins the thread that lends `socket` out.
    inner: DgramServer,
    socket: Box<sockserv_dgram>,
}

/// Handles one datagram, on the server's thread, one datagram at a time:
/// `data` (`len` bytes) is the payload and `from` the sender's address
/// ("udp://127.0.0.1:40000", "udp://[::1]:40000", "unixgram:///path",
/// "unixgram://@name"; "unixgram://" for an unbound sender, which cannot be
/// answered), both valid during the call only. Reply with
/// `sockserv_dgram_send_to(sock, from, ...)`: `sock` is the server's socket,
/// valid until the server is freed. Such sends never wait: a Unix peer
/// whose queue is full gets nothing (`SOCKSERV_ERR_WOULD_BLOCK`), as a UDP
/// peer would. The server receives nothing else meanwhile: hand long work
/// to a thread of yours. Must not throw a C++ exception or longjmp out.
pub type sockserv_dgram_handler_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        sock: *mut sockserv_dgram,
        data: *const u8,
        len: usize,
        from: *const c_char,
    ),
>;

thread_local! {
    /// The sender's address with its NUL, rebuilt for each datagram in one
    /// reused allocation.
    static FROM: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Creates a datagram server bound to `addr` ("udp://127.0.0.1:5353",
/// "udp://[::1]:0", "unixgram:///run/app.sock", "unixgram://@name"), like
/// Python's UDPServer and UnixDatagramServer. Port 0 picks a free port
/// (read it with `sockserv_dgram_server_local_addr`). `config` is copied;
/// NULL means the defaults. A stale Unix socket file is replaced; the file
/// is removed when the server is freed. Free with
/// `sockserv_dgram_server_free`.
///
/// @retval SOCKSERV_OK `*server_out` holds the new server, bound.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `addr` or `server_out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `addr` is not UTF-8.
/// @retval SOCKSERV_ERR_INVALID_ADDRESS `addr` cannot be parsed or resolved.
/// @retval SOCKSERV_ERR_ADDRESS_IN_USE another socket is bound to the address (or a
/// live socket owns the Unix socket file).
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_server_new(
    addr: *const c_char,
    config: *const sockserv_config,
    server_out: *mut *mut sockserv_dgram_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (addr, server_out) = unsafe { (c_str(addr, "addr")?, out(server_out, "server_out")?) };
        let inner = DgramServer::bind(addr, &config_or_default(config))?;
        let socket = Box::new(sockserv_dgram {
            inner: inner.socket().clone(),
            server_owned: true,
        });
        server_out.put(Box::into_raw(Box::new(sockserv_dgram_server {
            inner,
            socket,
        })));
        Ok(())
    })
}

/// Sets the function run for each datagram (NULL: none; datagrams are
/// received, counted and dropped). Only before the server starts, else
/// `SOCKSERV_ERR_INVALID_STATE`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server has started or stopped.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_server_set_handler(
    server: *const sockserv_dgram_server,
    handler: sockserv_dgram_handler_fn,
    userdata: *mut c_void,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let server = unsafe { arg(server, "server") }?;
        let userdata = UserData(userdata);
        // The handle lives in the server's box, beyond the serving thread.
        let sock = &*server.socket as *const sockserv_dgram as usize;
        let Some(handler) = handler else {
            return server
                .inner
                .set_handler(Arc::new(|_: &DgramSocket, _: &[u8], _: &str| {}));
        };
        server.inner.set_handler(Arc::new(
            move |_: &DgramSocket, payload: &[u8], from: &str| {
                let userdata = userdata;
                FROM.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    buf.clear();
                    buf.extend_from_slice(from.as_bytes());
                    buf.push(0);
                    // SAFETY: the caller's function with the documented
                    // signature; the payload, the NUL-terminated address and
                    // the socket handle outlive the call.
                    unsafe {
                        handler(
                            userdata.0,
                            sock as *mut sockserv_dgram,
                            payload.as_ptr(),
                            payload.len(),
                            buf.as_ptr().cast(),
                        )
                    };
                });
            },
        ))
    })
}

/// The server's socket, lent (do not free it; it lives until
/// `sockserv_dgram_server_free`): for its counters (`sockserv_dgram_stat`),
/// and to send from other threads than the handler's.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` or `sock_out` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_server_socket(
    server: *const sockserv_dgram_server,
    sock_out: *mut *mut sockserv_dgram,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (server, sock_out) = unsafe { (arg(server, "server")?, out(sock_out, "sock_out")?) };
        sock_out.put(&*server.socket as *const sockserv_dgram as *mut sockserv_dgram);
        Ok(())
    })
}

/// Writes the bound address ("udp://127.0.0.1:40123") like
/// `sockserv_server_local_addr`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` or `needed`, or `buf` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE `len` is too small; `*needed` was written.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_server_local_addr(
    server: *const sockserv_dgram_server,
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

/// Serves on the calling thread until `sockserv_dgram_server_shutdown`, then
/// returns `SOCKSERV_OK`. A server serves once.
///
/// @retval SOCKSERV_OK the server was shut down and serving stopped.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server is already serving.
/// @retval SOCKSERV_ERR_SHUTDOWN the server was shut down.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_server_serve(
    server: *const sockserv_dgram_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(server, "server") }?.inner.serve()
    })
}

/// Serves on a background thread and returns at once.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the server is already serving.
/// @retval SOCKSERV_ERR_SHUTDOWN the server was shut down.
/// @retval SOCKSERV_ERR_IO no thread could be started.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_server_start(
    server: *const sockserv_dgram_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(server, "server") }?.inner.start()
    })
}

/// Stops serving, from any thread (the handler too), and returns at once;
/// the handler call under way finishes. Datagrams still queued are dropped
/// when the server is freed.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `server` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_server_shutdown(
    server: *const sockserv_dgram_server,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(server, "server") }?.inner.shutdown();
        Ok(())
    })
}

/// Stops the server, joins its thread, closes its socket (removing its Unix
/// socket file) and frees it, with its socket handle. Call it after
/// `sockserv_dgram_server_serve` has returned, never from the handler. NULL
/// does nothing.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_server_free(server: *mut sockserv_dgram_server) {
    // SAFETY: a non-NULL server came from sockserv_dgram_server_new
    // (Box::into_raw) and is freed once, as the caller contract says.
    unsafe { free_box(server) }
}

//! `sockserv_dgram` and `sockserv_dgram_server`: datagram sockets (UDP over
//! IPv4 and IPv6, Unix datagram) and servers, and the datagram settings of
//! `sockserv_config`.
//!
//! Why a family of its own rather than `sockserv_server`: a datagram server
//! has no connections, so nothing of `sockserv_conn` (handshake, frames,
//! per-connection threads, verify, the connection cap) applies; its handler
//! runs per datagram and answers by address. The functions follow the same
//! conventions and names: `_new`, `_set_handler`, `_serve`, `_start`,
//! `_shutdown`, `_free`, `_local_addr`.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use super::{
    arg, arg_mut, bytes, bytes_mut, c_str, copy_str, guard, guard_value, out, sockserv_config,
    sockserv_result,
};
use crate::config::Config;
use crate::datagram::{DgramSocket, Take};
use crate::datagram_server::DgramServer;
use crate::error::{Error, ErrorKind, Result};

/// The largest maximum datagram size: the largest UDP payload over IPv4.
pub const SOCKSERV_MAX_DATAGRAM_SIZE: usize = 65507;
/// The default maximum datagram size (Python socketserver's
/// `max_packet_size`).
pub const SOCKSERV_DEFAULT_DATAGRAM_SIZE: usize = 8192;
/// Bytes a sealed datagram (sent with a key) carries beyond its payload:
/// a 25-byte header and a 32-byte tag (see docs/DATAGRAM.md).
pub const SOCKSERV_DATAGRAM_OVERHEAD: usize = 57;

/// `sockserv_dgram_stat`: datagrams sent.
pub const SOCKSERV_DGRAM_STAT_SENT: c_int = 0;
/// Datagrams delivered to a receive or to a server's handler.
pub const SOCKSERV_DGRAM_STAT_RECEIVED: c_int = 1;
/// Received datagrams over the maximum size, discarded.
pub const SOCKSERV_DGRAM_STAT_TOO_LARGE: c_int = 2;
/// With a key: datagrams dropped as shorter than header and tag.
pub const SOCKSERV_DGRAM_STAT_TOO_SHORT: c_int = 3;
/// With a key: datagrams dropped for an unknown version byte.
pub const SOCKSERV_DGRAM_STAT_BAD_VERSION: c_int = 4;
/// With a key: datagrams dropped because the tag matches no key.
pub const SOCKSERV_DGRAM_STAT_BAD_TAG: c_int = 5;
/// With a key: datagrams dropped as older than the window allows.
pub const SOCKSERV_DGRAM_STAT_TOO_OLD: c_int = 6;
/// With a key: datagrams dropped as sent from further in the future than
/// the window allows, or dated ahead (more than 1/16 of the window) while
/// the replay memory's share for datagrams that far ahead is full.
pub const SOCKSERV_DGRAM_STAT_TOO_NEW: c_int = 7;
/// With a key: datagrams dropped as replays of one already accepted.
pub const SOCKSERV_DGRAM_STAT_REPLAYED: c_int = 8;

/// A datagram socket (opaque): made by `sockserv_dgram_open` or
/// `sockserv_dgram_connect` (yours to free), or lent by a datagram server.
/// Sends may come from several threads at once; receive from one thread at
/// a time.
pub struct sockserv_dgram {
    inner: Arc<DgramSocket>,
    /// Lent by a server: the server frees it, `sockserv_dgram_free`
    /// ignores it.
    server_owned: bool,
}

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

/// A C `userdata` pointer, carried to the server's thread.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: sockserv never dereferences userdata; the C API documents that the
// handler receiving it runs on the server's thread, so the caller shares it
// knowingly.
unsafe impl Send for UserData {}
// SAFETY: as above: only handed back to the caller's handler.
unsafe impl Sync for UserData {}

thread_local! {
    /// The sender's address with its NUL, rebuilt for each datagram in one
    /// reused allocation.
    static FROM: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

// ---------------------------------------------------------------------------
// Settings

fn with_config(
    config: *mut sockserv_config,
    set: impl FnOnce(&mut Config) -> Result<()>,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let config = unsafe { arg_mut(config, "config") }?;
        set(&mut config.inner)
    })
}

/// The largest datagram payload sent or received, in bytes (default
/// `SOCKSERV_DEFAULT_DATAGRAM_SIZE`, 8192, at most
/// `SOCKSERV_MAX_DATAGRAM_SIZE`, 65507). A larger send fails with
/// `SOCKSERV_ERR_DATAGRAM_TOO_LARGE` and sends nothing; a larger datagram
/// received is discarded with that code (a server counts it). With a key
/// the datagram on the wire is `SOCKSERV_DATAGRAM_OVERHEAD` bytes longer.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_max_datagram_size(
    config: *mut sockserv_config,
    max_bytes: usize,
) -> sockserv_result {
    with_config(config, |c| c.datagram.set_max_size(max_bytes))
}

/// With a key: how far a datagram's timestamp may be from the receiver's
/// clock, either way, in milliseconds (default 30000; 0 is refused). Older
/// or newer datagrams are dropped and counted.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_datagram_window_ms(
    config: *mut sockserv_config,
    window_ms: u32,
) -> sockserv_result {
    with_config(config, |c| {
        c.datagram
            .set_window(Duration::from_millis(window_ms.into()))
    })
}

/// With a key: how many accepted datagrams a socket remembers to refuse
/// their replays (default 65536, at least 1; about 40 bytes each). They
/// are forgotten once outside the window; when the memory is full the
/// oldest is forgotten and nothing that old is accepted any more, so a
/// replay is never let in.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_datagram_replay_capacity(
    config: *mut sockserv_config,
    capacity: usize,
) -> sockserv_result {
    with_config(config, |c| c.datagram.set_replay_capacity(capacity))
}

// ---------------------------------------------------------------------------
// Sockets

fn config_or_default(config: *const sockserv_config) -> Config {
    // SAFETY: caller contract: NULL or a live config.
    unsafe { config.as_ref() }.map_or_else(Config::default, |c| c.inner.clone())
}

fn new_handle(socket: DgramSocket) -> *mut sockserv_dgram {
    Box::into_raw(Box::new(sockserv_dgram {
        inner: Arc::new(socket),
        server_owned: false,
    }))
}

/// Runs `body` on the socket behind `sock`.
fn with_dgram(
    sock: *const sockserv_dgram,
    body: impl FnOnce(&DgramSocket) -> Result<()>,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        body(&unsafe { arg(sock, "sock") }?.inner)
    })
}

/// Opens a datagram socket (connect-less, like `socket(SOCK_DGRAM)`).
/// `local_addr` binds it: "udp://0.0.0.0:0", "udp://[::1]:5000",
/// "unixgram:///tmp/me.sock" (a stale file is replaced, and the file is
/// removed when the socket is freed), "unixgram://@name" (Linux abstract
/// namespace, no file). NULL leaves it unbound: the first
/// `sockserv_dgram_send_to` creates it in the destination's family, on an
/// ephemeral UDP port, or for Unix datagrams on an autobound abstract name
/// (a Unix socket must be bound for replies to reach it). `config` (copied;
/// NULL: defaults) gives the key, the maximum size and the initial timeout
/// (`sockserv_config_set_io_timeout_ms`). Free it with `sockserv_dgram_free`.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_open(
    local_addr: *const c_char,
    config: *const sockserv_config,
    sock_out: *mut *mut sockserv_dgram,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let sock_out = unsafe { out(sock_out, "sock_out") }?;
        let config = config_or_default(config);
        let socket = if local_addr.is_null() {
            DgramSocket::unbound(&config)
        } else {
            // SAFETY: caller contract: a NUL-terminated string.
            DgramSocket::bind(unsafe { c_str(local_addr, "local_addr") }?, &config)?
        };
        sock_out.put(new_handle(socket));
        Ok(())
    })
}

/// Opens a datagram socket connected to `addr` ("udp://HOST:PORT",
/// "unixgram://PATH", "unixgram://@NAME"): `sockserv_dgram_send` sends
/// there, and only datagrams from there are received. A Unix socket is
/// autobound to an abstract name first, so the peer can answer. UDP
/// "connects" without a packet: a closed port shows as
/// `SOCKSERV_ERR_CONNECTION_REFUSED` on a later receive. A Unix path with
/// nobody bound to it gives `SOCKSERV_ERR_CONNECTION_REFUSED` here.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_connect(
    addr: *const c_char,
    config: *const sockserv_config,
    sock_out: *mut *mut sockserv_dgram,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (addr, sock_out) = unsafe { (c_str(addr, "addr")?, out(sock_out, "sock_out")?) };
        let socket = DgramSocket::connect(addr, &config_or_default(config))?;
        sock_out.put(new_handle(socket));
        Ok(())
    })
}

/// Sends `data` (`len` bytes; NULL allowed when 0) as one datagram to `to`
/// (an address string, e.g. the `from` a handler or
/// `sockserv_dgram_recv_from` gave), sealed when the socket has a key.
/// Over the maximum size: `SOCKSERV_ERR_DATAGRAM_TOO_LARGE`, nothing sent.
/// A Unix peer whose queue is full makes it wait up to the timeout
/// (`SOCKSERV_ERR_TIMED_OUT`); a Unix path nobody is bound to gives
/// `SOCKSERV_ERR_CONNECTION_REFUSED`. UDP gives no news of delivery.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_send_to(
    sock: *const sockserv_dgram,
    to: *const c_char,
    data: *const u8,
    len: usize,
) -> sockserv_result {
    with_dgram(sock, |s| {
        // SAFETY: caller contract: a string, and `len` readable bytes.
        let (to, data) = unsafe { (c_str(to, "to")?, bytes(data, len, "data")?) };
        s.send_to(to, data)
    })
}

/// Sends `data` as one datagram to the connected peer (see
/// `sockserv_dgram_connect`); `SOCKSERV_ERR_INVALID_STATE` if not connected.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_send(
    sock: *const sockserv_dgram,
    data: *const u8,
    len: usize,
) -> sockserv_result {
    with_dgram(sock, |s| {
        // SAFETY: caller contract: `data` has `len` readable bytes.
        s.send(unsafe { bytes(data, len, "data") }?)
    })
}

/// Receives the next datagram, like `recvfrom`: its payload is copied into
/// `buf` (`cap` bytes) and its size written to `*len`; the sender's address
/// is copied into `from` (`from_cap` bytes, NUL-terminated;
/// `SOCKSERV_ADDRSTRLEN` is enough) and its size, NUL included, to
/// `*from_needed`. Waits up to the socket's timeout
/// (`SOCKSERV_ERR_TIMED_OUT`). With a key, datagrams that fail the checks
/// are dropped, counted (`sockserv_dgram_stat`) and the wait goes on.
///
/// If the payload or the address does not fit:
/// `SOCKSERV_ERR_INSUFFICIENT_SIZE`, `*len` and `*from_needed` get the
/// sizes needed, and the datagram stays queued for the next receive. A
/// datagram over the maximum size: `SOCKSERV_ERR_DATAGRAM_TOO_LARGE`, both
/// sizes and the sender in `sockserv_last_error`, and it is discarded
/// (never cut short silently). Not on a server's socket
/// (`SOCKSERV_ERR_INVALID_STATE`: datagrams go to its handler), nor on a
/// socket that has no address yet.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_recv_from(
    sock: *const sockserv_dgram,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    from: *mut c_char,
    from_cap: usize,
    from_needed: *mut usize,
) -> sockserv_result {
    with_dgram(sock, |s| {
        // SAFETY: caller contract: `buf` has `cap` and `from` `from_cap`
        // writable bytes; checked before anything is received.
        let (buf, len, from, from_needed) = unsafe {
            (
                bytes_mut(buf, cap, "buf")?,
                out(len, "len")?,
                bytes_mut(from.cast(), from_cap, "from")?,
                out(from_needed, "from_needed")?,
            )
        };
        let got = s.recv_with(|payload, sender| {
            let sizes = (payload.len(), sender.len() + 1);
            if sizes.0 > buf.len() || sizes.1 > from.len() {
                return Take::Keep(Err(sizes));
            }
            buf[..payload.len()].copy_from_slice(payload);
            from[..sender.len()].copy_from_slice(sender.as_bytes());
            from[sender.len()] = 0;
            Take::Done(Ok(sizes))
        })?;
        let ((n, f), fits) = match got {
            Ok(sizes) => (sizes, true),
            Err(sizes) => (sizes, false),
        };
        len.put(n);
        from_needed.put(f);
        if fits {
            Ok(())
        } else {
            Err(too_small(n, cap, Some((f, from_cap))))
        }
    })
}

/// Receives the next datagram's payload into `buf` like
/// `sockserv_dgram_recv_from`, without the sender (for connected sockets).
/// Too small: `SOCKSERV_ERR_INSUFFICIENT_SIZE`, `*len` is the size needed
/// and the datagram stays queued.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_recv(
    sock: *const sockserv_dgram,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> sockserv_result {
    with_dgram(sock, |s| {
        // SAFETY: caller contract: `buf` has `cap` writable bytes.
        let (buf, len) = unsafe { (bytes_mut(buf, cap, "buf")?, out(len, "len")?) };
        let got = s.recv_with(|payload, _| {
            if payload.len() > buf.len() {
                return Take::Keep(Err(payload.len()));
            }
            buf[..payload.len()].copy_from_slice(payload);
            Take::Done(Ok(payload.len()))
        })?;
        match got {
            Ok(n) => {
                len.put(n);
                Ok(())
            }
            Err(needed) => {
                len.put(needed);
                Err(too_small(needed, cap, None))
            }
        }
    })
}

fn too_small(payload: usize, cap: usize, from: Option<(usize, usize)>) -> Error {
    let mut detail = String::new();
    if payload > cap {
        detail = format!("the datagram is {payload} bytes, the buffer holds {cap}");
    }
    if let Some((needed, from_cap)) = from.filter(|(n, c)| n > c) {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str(&format!(
            "the sender's address takes {needed} bytes, the buffer holds {from_cap}"
        ));
    }
    Error::new(
        ErrorKind::InsufficientSize,
        format!("{detail}; the datagram stays queued"),
    )
}

/// Writes the socket's bound address ("udp://0.0.0.0:40000",
/// "unixgram://@00a1f") like `sockserv_server_local_addr`.
/// `SOCKSERV_ERR_INVALID_STATE` for a socket opened with NULL that has not
/// sent yet.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_local_addr(
    sock: *const sockserv_dgram,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> sockserv_result {
    // SAFETY: caller contract: `buf` has `len` writable bytes.
    with_dgram(sock, |s| unsafe {
        copy_str(s.local_addr()?, buf, len, needed)
    })
}

/// The socket's file descriptor, for poll/select or options sockserv does
/// not wrap; it stays owned by the socket. Do not read from it directly
/// when a key is set (the datagrams would not be checked).
/// `SOCKSERV_ERR_INVALID_STATE` for a socket that has no address yet.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_fd(
    sock: *const sockserv_dgram,
    fd: *mut c_int,
) -> sockserv_result {
    with_dgram(sock, |s| {
        // SAFETY: caller contract (see the module docs of ffi).
        let fd_out = unsafe { out(fd, "fd") }?;
        let fd: RawFd = s.fd()?;
        fd_out.put(fd);
        Ok(())
    })
}

/// Sets the timeout of each later send and receive (0: wait for ever).
/// Sends from a server's socket never wait, whatever it is set to.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_set_timeout_ms(
    sock: *const sockserv_dgram,
    timeout_ms: u32,
) -> sockserv_result {
    with_dgram(sock, |s| {
        s.set_timeout((timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.into())));
        Ok(())
    })
}

/// Reads the timeout set by `sockserv_dgram_set_timeout_ms` (0: none).
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_get_timeout_ms(
    sock: *const sockserv_dgram,
    timeout_ms: *mut u32,
) -> sockserv_result {
    with_dgram(sock, |s| {
        // SAFETY: caller contract (see the module docs of ffi).
        let timeout_ms = unsafe { out(timeout_ms, "timeout_ms") }?;
        let ms = s.timeout().map_or(0, |t| t.as_millis());
        timeout_ms.put(u32::try_from(ms).unwrap_or(u32::MAX));
        Ok(())
    })
}

/// Reads one counter (`SOCKSERV_DGRAM_STAT_*`) of the socket into `*value`;
/// for a server, of its socket (`sockserv_dgram_server_socket`).
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_stat(
    sock: *const sockserv_dgram,
    stat: c_int,
    value: *mut u64,
) -> sockserv_result {
    with_dgram(sock, |s| {
        // SAFETY: caller contract (see the module docs of ffi).
        let value = unsafe { out(value, "value") }?;
        let st = s.stats();
        value.put(match stat {
            SOCKSERV_DGRAM_STAT_SENT => st.sent,
            SOCKSERV_DGRAM_STAT_RECEIVED => st.received,
            SOCKSERV_DGRAM_STAT_TOO_LARGE => st.too_large,
            SOCKSERV_DGRAM_STAT_TOO_SHORT => st.too_short,
            SOCKSERV_DGRAM_STAT_BAD_VERSION => st.bad_version,
            SOCKSERV_DGRAM_STAT_BAD_TAG => st.bad_tag,
            SOCKSERV_DGRAM_STAT_TOO_OLD => st.too_old,
            SOCKSERV_DGRAM_STAT_TOO_NEW => st.too_new,
            SOCKSERV_DGRAM_STAT_REPLAYED => st.replayed,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("unknown datagram stat {other}"),
                ))
            }
        });
        Ok(())
    })
}

/// Closes and frees a socket from `sockserv_dgram_open` or
/// `sockserv_dgram_connect` (a Unix socket file it bound is removed). NULL,
/// and a server's socket (freed with its server), are ignored.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_free(sock: *mut sockserv_dgram) {
    guard_value((), || {
        // SAFETY: caller contract (see the module docs of ffi).
        let Ok(handle) = (unsafe { arg(sock, "sock") }) else {
            return;
        };
        if !handle.server_owned {
            // SAFETY: a socket not lent by a server came from new_handle
            // (Box::into_raw) and is freed once, as the caller contract says.
            drop(unsafe { Box::from_raw(sock) });
        }
    })
}

// ---------------------------------------------------------------------------
// Servers

/// Creates a datagram server bound to `addr` ("udp://127.0.0.1:5353",
/// "udp://[::1]:0", "unixgram:///run/app.sock", "unixgram://@name"), like
/// Python's UDPServer and UnixDatagramServer. Port 0 picks a free port
/// (read it with `sockserv_dgram_server_local_addr`). `config` is copied;
/// NULL means the defaults. A stale Unix socket file is replaced; the file
/// is removed when the server is freed. Free with
/// `sockserv_dgram_server_free`.
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
    guard_value((), || {
        if !server.is_null() {
            // SAFETY: a non-NULL server came from sockserv_dgram_server_new
            // and is freed once, as the caller contract says.
            drop(unsafe { Box::from_raw(server) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header's literals are the core's values.
    #[test]
    fn constants_match_the_core() {
        use crate::datagram::{DEFAULT_MAX_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE};
        assert_eq!(SOCKSERV_MAX_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE);
        assert_eq!(SOCKSERV_DEFAULT_DATAGRAM_SIZE, DEFAULT_MAX_DATAGRAM_SIZE);
        assert_eq!(SOCKSERV_DATAGRAM_OVERHEAD, crate::datagram_auth::OVERHEAD);
    }
}

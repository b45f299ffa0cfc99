//! `sockserv_dgram`: datagram sockets (UDP over IPv4 and IPv6, Unix
//! datagram), opened by the caller or lent by a datagram server.

use std::ffi::{c_char, c_int};
use std::os::fd::RawFd;
use std::sync::Arc;

use super::{
    arg, bytes, bytes_mut, c_str, config_or_default, copy_str, from_ms, guard, guard_value, out,
    sockserv_config, sockserv_result, to_ms,
};
use crate::datagram::{DgramSocket, RecvInto};
use crate::error::{Error, ErrorKind, Result};

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
    pub(super) inner: Arc<DgramSocket>,
    /// Lent by a server: the server frees it, `sockserv_dgram_free`
    /// ignores it.
    pub(super) server_owned: bool,
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
///
/// @retval SOCKSERV_OK `*sock_out` holds the new socket.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock_out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `local_addr` is not UTF-8.
/// @retval SOCKSERV_ERR_INVALID_ADDRESS `local_addr` cannot be parsed or resolved.
/// @retval SOCKSERV_ERR_ADDRESS_IN_USE another socket is bound to the address.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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
///
/// @retval SOCKSERV_OK `*sock_out` holds the new socket.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `addr` or `sock_out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `addr` is not UTF-8.
/// @retval SOCKSERV_ERR_INVALID_ADDRESS `addr` cannot be parsed or resolved.
/// @retval SOCKSERV_ERR_CONNECTION_REFUSED a Unix path nobody is bound to.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock` or `to`, or `data` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `to` is not UTF-8.
/// @retval SOCKSERV_ERR_INVALID_ADDRESS `to` cannot be parsed or resolved, or is of
/// another address family than the socket.
/// @retval SOCKSERV_ERR_DATAGRAM_TOO_LARGE `len` is over the maximum size; nothing
/// was sent.
/// @retval SOCKSERV_ERR_CONNECTION_REFUSED a Unix path nobody is bound to.
/// @retval SOCKSERV_ERR_TIMED_OUT a Unix peer's queue stayed full for the timeout.
/// @retval SOCKSERV_ERR_WOULD_BLOCK a server's socket: a Unix peer's queue is full.
/// @retval SOCKSERV_ERR_IO another OS error (the OS random source, with a key).
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock`, or `data` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the socket is not connected.
/// @retval SOCKSERV_ERR_DATAGRAM_TOO_LARGE `len` is over the maximum size; nothing
/// was sent.
/// @retval SOCKSERV_ERR_CONNECTION_REFUSED the peer is gone (Unix), or an earlier
/// datagram was refused (UDP).
/// @retval SOCKSERV_ERR_TIMED_OUT a Unix peer's queue stayed full for the timeout.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock`, `len` or `from_needed`, or `buf` or
/// `from` with a non-zero size is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE the payload or the address does not fit; the
/// sizes were written and the datagram stays queued.
/// @retval SOCKSERV_ERR_DATAGRAM_TOO_LARGE the datagram is over the maximum size and
/// was discarded.
/// @retval SOCKSERV_ERR_TIMED_OUT nothing arrived within the timeout.
/// @retval SOCKSERV_ERR_CONNECTION_REFUSED a connected UDP socket's peer port is
/// closed.
/// @retval SOCKSERV_ERR_INVALID_STATE a server's socket, or one with no address yet.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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
        match s.recv_into(buf, Some(from))? {
            RecvInto::Copied { len: n, from_len } => {
                len.put(n);
                from_needed.put(from_len);
                Ok(())
            }
            RecvInto::TooSmall { len: n, from_len } => {
                len.put(n);
                from_needed.put(from_len);
                Err(too_small(n, cap, Some((from_len, from_cap))))
            }
        }
    })
}

/// Receives the next datagram's payload into `buf` like
/// `sockserv_dgram_recv_from`, without the sender (for connected sockets).
/// Too small: `SOCKSERV_ERR_INSUFFICIENT_SIZE`, `*len` is the size needed
/// and the datagram stays queued.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock` or `len`, or `buf` with a non-zero `cap` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE the payload does not fit; `*len` is its size
/// and the datagram stays queued.
/// @retval SOCKSERV_ERR_DATAGRAM_TOO_LARGE, SOCKSERV_ERR_TIMED_OUT,
/// SOCKSERV_ERR_CONNECTION_REFUSED, SOCKSERV_ERR_INVALID_STATE,
/// SOCKSERV_ERR_IO as for `sockserv_dgram_recv_from`.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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
        match s.recv_into(buf, None)? {
            RecvInto::Copied { len: n, .. } => {
                len.put(n);
                Ok(())
            }
            RecvInto::TooSmall { len: needed, .. } => {
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
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock` or `needed`, or `buf` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE `len` is too small; `*needed` was written.
/// @retval SOCKSERV_ERR_INVALID_STATE the socket has no address yet.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock` or `fd` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the socket has no address yet.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_set_timeout_ms(
    sock: *const sockserv_dgram,
    timeout_ms: u32,
) -> sockserv_result {
    with_dgram(sock, |s| {
        s.set_timeout(from_ms(timeout_ms));
        Ok(())
    })
}

/// Reads the timeout set by `sockserv_dgram_set_timeout_ms` (0: none).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock` or `timeout_ms` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_dgram_get_timeout_ms(
    sock: *const sockserv_dgram,
    timeout_ms: *mut u32,
) -> sockserv_result {
    with_dgram(sock, |s| {
        // SAFETY: caller contract (see the module docs of ffi).
        let timeout_ms = unsafe { out(timeout_ms, "timeout_ms") }?;
        timeout_ms.put(to_ms(s.timeout()));
        Ok(())
    })
}

/// Reads one counter (`SOCKSERV_DGRAM_STAT_*`) of the socket into `*value`;
/// for a server, of its socket (`sockserv_dgram_server_socket`).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `sock` or `value` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `stat` is no `SOCKSERV_DGRAM_STAT_*`.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
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

//! `sockserv_conn`: a framed connection, made by `sockserv_connect` or
//! `sockserv_conn_from_fd` (yours to free) or lent to a server's handler.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

use super::{
    arg, bytes, bytes_mut, c_str, config_or_default, copy_str, from_ms, guard, guard_value, out,
    sockserv_config, sockserv_result, to_ms,
};
use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::Role;
use crate::proto::tls::{PeerCert, TlsInfo};
use crate::server::event::conn::EventConn;
use crate::stream::connect_nb::PendingConnection;
use crate::stream::connection::{Connection, RecvInto};
use crate::sys::sockopt::{self, SockOpt};

/// A framed connection (opaque). Sending is safe from several threads at
/// once (frames never interleave), and one thread may receive while others
/// send; receive from one thread at a time. Event-mode connections (lent by
/// an event-driven server) deliver frames to `on_frame` instead, and their
/// sends queue without blocking.
///
/// Ownership: the handle is reference counted. Whoever made it holds one
/// reference (you, for `sockserv_connect` and `sockserv_conn_from_fd`,
/// dropped by `sockserv_conn_free`; the server, for a handle it lends to a
/// handler or to the event callbacks, dropped after the handler or
/// `on_close` returned). `sockserv_conn_retain` adds one, so another thread
/// may keep the handle past that point; `sockserv_conn_release` drops it.
/// The memory lives until the last reference goes. Once the connection has
/// ended (`on_close` ran, the threaded handler returned, or
/// `sockserv_conn_free` was called), every call that touches the
/// connection returns `SOCKSERV_ERR_CLOSED`; the addresses and the
/// userdata stay readable.
pub struct sockserv_conn {
    pub(super) kind: ConnKind,
    pub(super) userdata: AtomicPtr<c_void>,
    /// Lent by a server: the server closes it, `sockserv_conn_free` ignores it.
    pub(super) server_owned: bool,
    /// The connection ended for this handle's holders: a threaded handler
    /// returned, or `sockserv_conn_free` ran. (Event mode: the
    /// `EventConn` knows it is closed.)
    ended: AtomicBool,
}

pub(super) enum ConnKind {
    Blocking(Arc<Connection>),
    Event(Arc<EventConn>),
    /// From `sockserv_connect_start`: a connection once established.
    Connecting(Box<PendingConnection>),
}

impl ConnKind {
    /// The blocking connection, if there is one (yet).
    fn as_blocking(&self) -> Option<&Connection> {
        match self {
            ConnKind::Blocking(conn) => Some(conn),
            ConnKind::Connecting(pending) => pending.ready(),
            ConnKind::Event(_) => None,
        }
    }
}

impl sockserv_conn {
    /// A handle a server lends, holding the server's reference (given back
    /// with [`sockserv_conn::server_done`]).
    pub(super) fn lent(kind: ConnKind) -> *mut sockserv_conn {
        Arc::into_raw(Arc::new(sockserv_conn {
            kind,
            userdata: AtomicPtr::new(std::ptr::null_mut()),
            server_owned: true,
            ended: AtomicBool::new(false),
        }))
        .cast_mut()
    }

    /// The server is done with a handle it lent: the connection ends for
    /// every other holder (a retained threaded handle must not keep the
    /// socket open: the peer sees the end now), and the server's reference
    /// goes.
    ///
    /// # Safety
    /// `handle` came from [`sockserv_conn::lent`] and the server's
    /// reference is given back once.
    pub(super) unsafe fn server_done(handle: *mut sockserv_conn) {
        // SAFETY: the caller's contract: this is the server's reference.
        let handle = unsafe { Arc::from_raw(handle.cast_const()) };
        handle.ended.store(true, Ordering::Release);
        if Arc::strong_count(&handle) > 1 {
            if let Some(conn) = handle.kind.as_blocking() {
                // Replies a coalescing handler held leave before the close.
                conn.flush_within(Duration::from_secs(5));
                conn.close();
            }
        }
    }

    /// `SOCKSERV_ERR_CLOSED` once the connection has ended.
    fn live(&self) -> Result<&ConnKind> {
        let ended = self.ended.load(Ordering::Acquire)
            || matches!(&self.kind, ConnKind::Event(conn) if conn.is_closed());
        if ended {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("the connection with {} is closed", self.peer_addr()),
            ));
        }
        Ok(&self.kind)
    }

    /// The blocking connection, or why `doing` is not for event mode.
    pub(super) fn blocking(&self, doing: &str) -> Result<&Connection> {
        match self.live()? {
            ConnKind::Blocking(conn) => Ok(conn),
            ConnKind::Connecting(pending) => pending.connection(),
            ConnKind::Event(_) => Err(Error::new(
                ErrorKind::InvalidState,
                format!("{doing} is not available on an event-mode connection (frames arrive in on_frame)"),
            )),
        }
    }

    fn socket(&self) -> Result<&Socket> {
        Ok(match self.live()? {
            ConnKind::Blocking(conn) => conn.socket(),
            ConnKind::Event(conn) => conn.socket(),
            ConnKind::Connecting(pending) => pending.connection()?.socket(),
        })
    }

    fn peer_addr(&self) -> &str {
        match &self.kind {
            ConnKind::Blocking(conn) => conn.peer_addr(),
            ConnKind::Event(conn) => conn.peer_addr(),
            ConnKind::Connecting(pending) => pending.peer_addr(),
        }
    }

    fn local_addr(&self) -> &str {
        match &self.kind {
            ConnKind::Blocking(conn) => conn.local_addr(),
            ConnKind::Event(conn) => conn.local_addr(),
            ConnKind::Connecting(pending) => pending.local_addr(),
        }
    }

    /// What the TLS handshake negotiated; `INVALID_STATE` without TLS.
    fn tls_info(&self) -> Result<&TlsInfo> {
        let info = match &self.kind {
            ConnKind::Blocking(conn) => conn.tls_info(),
            ConnKind::Event(conn) => conn.tls_info(),
            ConnKind::Connecting(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    format!(
                        "the connection with {} is still connecting",
                        self.peer_addr()
                    ),
                ))
            }
        };
        info.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidState,
                format!("the connection with {} does not use TLS", self.peer_addr()),
            )
        })
    }

    /// The peer's certificate; `INVALID_STATE` without TLS or without one.
    fn peer_cert(&self) -> Result<&PeerCert> {
        self.tls_info()?.peer_cert.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidState,
                format!("{} presented no certificate", self.peer_addr()),
            )
        })
    }
}

impl Drop for sockserv_conn {
    fn drop(&mut self) {
        // The last reference to a connection of yours that was never freed
        // (retained, then released): it goes as sockserv_conn_free would.
        if !self.server_owned && !*self.ended.get_mut() {
            if let Some(conn) = self.kind.as_blocking() {
                conn.flush_within(Duration::from_secs(5));
            }
        }
    }
}

/// `sockserv_conn_from_fd`: the socket was accepted (it challenges first).
pub const SOCKSERV_ROLE_SERVER: c_int = 0;
/// `sockserv_conn_from_fd`: the socket was connected (it answers first).
pub const SOCKSERV_ROLE_CLIENT: c_int = 1;

/// A handle of yours (one reference, dropped by `sockserv_conn_free`).
fn new_handle(conn: Connection) -> *mut sockserv_conn {
    new_handle_of(ConnKind::Blocking(Arc::new(conn)))
}

/// The same for any kind of connection.
pub(super) fn new_handle_of(kind: ConnKind) -> *mut sockserv_conn {
    Arc::into_raw(Arc::new(sockserv_conn {
        kind,
        userdata: AtomicPtr::new(std::ptr::null_mut()),
        server_owned: false,
        ended: AtomicBool::new(false),
    }))
    .cast_mut()
}

/// Runs `body` on the connection behind `conn`.
fn with_conn(
    conn: *const sockserv_conn,
    body: impl FnOnce(&sockserv_conn) -> Result<()>,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        body(unsafe { arg(conn, "conn") }?)
    })
}

/// Connects to `addr` ("tcp://HOST:PORT", "tcp://[::1]:PORT",
/// "tls://HOST:PORT", "unix://PATH"), trying each resolved address within
/// the connect timeout, then TLS for "tls://" and the handshake when
/// `config` has a key. `config` is
/// copied; NULL means the defaults. A full server that refuses
/// (`SOCKSERV_WHEN_FULL_REFUSE`) shows as `SOCKSERV_ERR_CLOSED`. Free the
/// connection with `sockserv_conn_free`.
///
/// @retval SOCKSERV_OK `*conn_out` holds the connection, authenticated if keyed.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `addr` or `conn_out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `addr` is not UTF-8.
/// @retval SOCKSERV_ERR_INVALID_ADDRESS `addr` cannot be parsed or resolved.
/// @retval SOCKSERV_ERR_CONNECTION_REFUSED nobody accepts connections there.
/// @retval SOCKSERV_ERR_AUTH_FAILED the keys do not match.
/// @retval SOCKSERV_ERR_AUTH_PROTOCOL the peer broke or downgraded the handshake.
/// @retval SOCKSERV_ERR_TIMED_OUT no address accepted within the connect timeout,
/// or the handshake took longer than its timeout.
/// @retval SOCKSERV_ERR_CLOSED the peer closed the connection during the handshake.
/// @retval SOCKSERV_ERR_TRUNCATED_FRAME the peer closed in the middle of a
/// handshake message.
/// @retval SOCKSERV_ERR_FRAME_TOO_LARGE, SOCKSERV_ERR_PROTOCOL a handshake message
/// broke the framing.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_connect(
    addr: *const c_char,
    config: *const sockserv_config,
    conn_out: *mut *mut sockserv_conn,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (addr, conn_out) = unsafe { (c_str(addr, "addr")?, out(conn_out, "conn_out")?) };
        let conn = crate::stream::client::connect(addr, &config_or_default(config))?;
        conn_out.put(new_handle(conn));
        Ok(())
    })
}

/// Adopts a connected stream socket (TCP or Unix) you already have, runs
/// the handshake in `role` (`SOCKSERV_ROLE_SERVER` if it was accepted,
/// `SOCKSERV_ROLE_CLIENT` if it was connected) when `config` has a key,
/// then frames over it. On success the connection owns `fd` and closes it
/// when freed; on failure `fd` is left open and still yours. A
/// non-blocking `fd` works too (sockserv waits with poll(2)); for
/// non-blocking framing use `SOCKSERV_OPT_NONBLOCKING`.
///
/// @retval SOCKSERV_OK `*conn_out` holds the connection, which now owns `fd`.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn_out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `role` is unknown, or `fd` is negative, not
/// open, not a socket or not a stream socket.
/// @retval SOCKSERV_ERR_AUTH_FAILED the keys do not match.
/// @retval SOCKSERV_ERR_AUTH_PROTOCOL the peer broke or downgraded the handshake.
/// @retval SOCKSERV_ERR_TIMED_OUT the handshake took longer than its timeout.
/// @retval SOCKSERV_ERR_CLOSED the peer closed the connection during the handshake.
/// @retval SOCKSERV_ERR_TRUNCATED_FRAME the peer closed in the middle of a
/// handshake message.
/// @retval SOCKSERV_ERR_FRAME_TOO_LARGE, SOCKSERV_ERR_PROTOCOL a handshake message
/// broke the framing.
/// @retval SOCKSERV_ERR_IO the socket is not connected, or another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_from_fd(
    fd: c_int,
    config: *const sockserv_config,
    role: c_int,
    conn_out: *mut *mut sockserv_conn,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let conn_out = unsafe { out(conn_out, "conn_out") }?;
        let role = match role {
            SOCKSERV_ROLE_SERVER => Role::Server,
            SOCKSERV_ROLE_CLIENT => Role::Client,
            other => {
                return Err(invalid(format!(
                    "role {other} is neither SOCKSERV_ROLE_SERVER nor SOCKSERV_ROLE_CLIENT"
                )))
            }
        };
        let conn = crate::stream::adopt::adopt(fd, &config_or_default(config), role)?;
        conn_out.put(new_handle(conn));
        Ok(())
    })
}

fn invalid(detail: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, detail)
}

/// Sends `data` (`len` bytes; NULL allowed when 0) as one frame.
///
/// Blocking connections: returns when the kernel took all of it, or the
/// timeout (see `sockserv_conn_set_timeout_ms`) passed: a send that timed
/// out part-way closes the connection (`SOCKSERV_ERR_BROKEN` after), as the
/// stream would be out of sync.
///
/// Event-mode connections: never blocks, from any thread (inside
/// `on_frame` too): the frame is copied into the connection's queue and its
/// I/O thread writes it. When the queue holds more than the limit
/// (`sockserv_config_set_max_queued_bytes`): `SOCKSERV_ERR_WOULD_BLOCK`, or
/// with `sockserv_config_set_close_when_backed_up` the connection is closed
/// and `SOCKSERV_ERR_CLOSED` returned. After close: `SOCKSERV_ERR_CLOSED`,
/// also from a thread that retained the handle (`sockserv_conn_retain`)
/// and sends after `on_close` ran.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn`, or `data` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_TIMED_OUT the timeout passed (blocking connections).
/// @retval SOCKSERV_ERR_CLOSED the peer went away, the connection has ended (a
/// retained handle), or (event mode) the connection is closed or was closed for
/// being backed up.
/// @retval SOCKSERV_ERR_WOULD_BLOCK non-blocking mode: the kernel took nothing; event
/// mode: the queue is over its limit.
/// @retval SOCKSERV_ERR_BROKEN an earlier failure left the connection unusable.
/// @retval SOCKSERV_ERR_SHUTDOWN the server is shutting down.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_send(
    conn: *const sockserv_conn,
    data: *const u8,
    len: usize,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract: `data` has `len` readable bytes.
        let data = unsafe { bytes(data, len, "data") }?;
        match &c.kind {
            ConnKind::Blocking(conn) => {
                c.live()?;
                conn.send(data)
            }
            ConnKind::Connecting(_) => c.blocking("sockserv_conn_send")?.send(data),
            // EventConn::send checks for the close itself, under its one lock.
            ConnKind::Event(conn) => conn.send(data),
        }
    })
}

/// Receives the next frame, whole, without copying: `*data` and `*len`
/// point into the connection's buffer, valid until the next receive or
/// poll on this connection or its free. `*data` is not NULL, even for an
/// empty frame. After `SOCKSERV_ERR_TRUNCATED_FRAME`,
/// `SOCKSERV_ERR_FRAME_TOO_LARGE` or `SOCKSERV_ERR_PROTOCOL` the connection
/// is closed. Not for event-mode connections (frames arrive in `on_frame`).
///
/// @retval SOCKSERV_OK `*data` and `*len` describe the frame.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn`, `data` or `len` is NULL.
/// @retval SOCKSERV_ERR_CLOSED the peer closed between frames.
/// @retval SOCKSERV_ERR_TRUNCATED_FRAME the peer closed in the middle of a
/// frame.
/// @retval SOCKSERV_ERR_FRAME_TOO_LARGE the frame is over the maximum frame size.
/// @retval SOCKSERV_ERR_PROTOCOL the peer broke the framing (or a required PROXY
/// header).
/// @retval SOCKSERV_ERR_TIMED_OUT the timeout passed; what arrived is kept.
/// @retval SOCKSERV_ERR_WOULD_BLOCK non-blocking mode: no whole frame is ready.
/// @retval SOCKSERV_ERR_BROKEN an earlier failure left the connection unusable.
/// @retval SOCKSERV_ERR_SHUTDOWN the server is shutting down.
/// @retval SOCKSERV_ERR_INVALID_STATE an event-mode connection.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_recv(
    conn: *const sockserv_conn,
    data: *mut *const u8,
    len: *mut usize,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (data, len) = unsafe { (out(data, "data")?, out(len, "len")?) };
        let conn = c.blocking("sockserv_conn_recv")?;
        let (ptr, n) = conn.recv_with(|frame| (frame.as_ptr(), frame.len()))?;
        data.put(ptr);
        len.put(n);
        Ok(())
    })
}

/// Receives the next frame into `buf` (`cap` bytes) and writes its size to
/// `*len`. If it does not fit: `SOCKSERV_ERR_INSUFFICIENT_SIZE`, `*len` is
/// the size needed, and the frame stays queued for the next receive. Other
/// codes as `sockserv_conn_recv`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `len`, or `buf` with a non-zero `cap` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE the frame does not fit; `*len` is its size.
/// @retval SOCKSERV_ERR_CLOSED, SOCKSERV_ERR_TRUNCATED_FRAME,
/// SOCKSERV_ERR_FRAME_TOO_LARGE, SOCKSERV_ERR_PROTOCOL,
/// SOCKSERV_ERR_TIMED_OUT, SOCKSERV_ERR_WOULD_BLOCK, SOCKSERV_ERR_BROKEN,
/// SOCKSERV_ERR_SHUTDOWN, SOCKSERV_ERR_INVALID_STATE, SOCKSERV_ERR_IO as for
/// `sockserv_conn_recv`.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_recv_into(
    conn: *const sockserv_conn,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract: `buf` has `cap` writable bytes.
        let (buf, len) = unsafe { (bytes_mut(buf, cap, "buf")?, out(len, "len")?) };
        match c.blocking("sockserv_conn_recv_into")?.recv_into(buf)? {
            RecvInto::Copied(n) => {
                len.put(n);
                Ok(())
            }
            RecvInto::TooSmall(needed) => {
                len.put(needed);
                Err(Error::new(
                    ErrorKind::InsufficientSize,
                    format!("the frame is {needed} bytes, the buffer holds {cap}"),
                ))
            }
        }
    })
}

/// Waits up to `timeout_ms` (negative: for ever, 0: just check) for
/// something to receive: `*readable` is true when a frame is buffered or
/// data, end of stream or an error is waiting on the socket (so a receive
/// will not wait for the first byte). Blocking connections only
/// (`SOCKSERV_ERR_INVALID_STATE` in event mode).
///
/// @retval SOCKSERV_OK `*readable` was written (true or false).
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `readable` is NULL.
/// @retval SOCKSERV_ERR_TIMED_OUT, SOCKSERV_ERR_WOULD_BLOCK, SOCKSERV_ERR_CLOSED
/// writing replies held by coalescing failed; `SOCKSERV_ERR_CLOSED` also when the
/// connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_BROKEN an earlier failure left the connection unusable.
/// @retval SOCKSERV_ERR_INVALID_STATE an event-mode connection.
/// @retval SOCKSERV_ERR_IO poll(2) failed.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_poll(
    conn: *const sockserv_conn,
    timeout_ms: c_int,
    readable: *mut bool,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract (see the module docs of ffi).
        let readable = unsafe { out(readable, "readable") }?;
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        readable.put(c.blocking("sockserv_conn_poll")?.poll(timeout)?);
        Ok(())
    })
}

/// Writes the peer's address ("tcp://127.0.0.1:5000", "tcp://[::1]:5000",
/// "unix://PATH", or "unix://" for an unnamed socket) like
/// `sockserv_server_local_addr`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `needed`, or `buf` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE `len` is too small; `*needed` was written.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_peer_addr(
    conn: *const sockserv_conn,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> sockserv_result {
    // SAFETY: caller contract: `buf` has `len` writable bytes.
    with_conn(conn, |c| unsafe {
        copy_str(c.peer_addr(), buf, len, needed)
    })
}

/// Writes this end's address, like `sockserv_conn_peer_addr`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `needed`, or `buf` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE `len` is too small; `*needed` was written.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_local_addr(
    conn: *const sockserv_conn,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> sockserv_result {
    // SAFETY: caller contract: `buf` has `len` writable bytes.
    with_conn(conn, |c| unsafe {
        copy_str(c.local_addr(), buf, len, needed)
    })
}

/// Writes the SHA-256 fingerprint of the peer's TLS certificate (its DER
/// encoding) to `out`: 32 bytes. Known from `on_open` and in the handler
/// (the TLS handshake is done by then).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `out` is NULL.
/// @retval SOCKSERV_ERR_INVALID_STATE the connection does not use TLS, or the
/// peer presented no certificate (a client, without client auth).
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_peer_cert_sha256(
    conn: *const sockserv_conn,
    out: *mut u8,
) -> sockserv_result {
    with_conn(conn, |c| {
        if out.is_null() {
            return Err(Error::new(ErrorKind::NullParameter, "out is NULL"));
        }
        let sha = c.peer_cert()?.sha256;
        // SAFETY: caller contract: `out` has 32 writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(sha.as_ptr(), out, sha.len()) };
        Ok(())
    })
}

/// Writes the subject of the peer's TLS certificate, RFC 4514 style
/// ("CN=client,O=Example": the last relative name first), NUL-terminated,
/// like `sockserv_conn_peer_addr`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `needed`, or `buf` with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE `len` is too small; `*needed` was written.
/// @retval SOCKSERV_ERR_INVALID_STATE the connection does not use TLS, or the
/// peer presented no certificate.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_peer_cert_subject(
    conn: *const sockserv_conn,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> sockserv_result {
    with_conn(conn, |c| {
        let subject = &c.peer_cert()?.subject;
        // SAFETY: caller contract: `buf` has `len` writable bytes.
        unsafe { copy_str(subject, buf, len, needed) }
    })
}

/// What the TLS handshake negotiated: `*version` (0x0304 for TLS 1.3,
/// 0x0303 for 1.2: `SOCKSERV_TLS_VERSION_*`) and the ALPN protocol agreed
/// on, NUL-terminated in `alpn_buf` (empty when none), like
/// `sockserv_conn_peer_addr`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn`, `version` or `needed`, or `alpn_buf`
/// with a non-zero `len` is NULL.
/// @retval SOCKSERV_ERR_INSUFFICIENT_SIZE `len` is too small for the ALPN
/// protocol; `*needed` was written (`*version` is not).
/// @retval SOCKSERV_ERR_INVALID_STATE the connection does not use TLS.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_tls_info(
    conn: *const sockserv_conn,
    version: *mut c_int,
    alpn_buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract (see the module docs of ffi).
        let version = unsafe { out(version, "version") }?;
        let info = c.tls_info()?;
        let alpn = String::from_utf8_lossy(info.alpn.as_deref().unwrap_or_default());
        // SAFETY: caller contract: `alpn_buf` has `len` writable bytes.
        unsafe { copy_str(&alpn, alpn_buf, len, needed) }?;
        version.put(c_int::from(info.version));
        Ok(())
    })
}

/// The socket's file descriptor, for poll/select or options sockserv does
/// not wrap. It stays owned by the connection: do not close it, and do not
/// read or write it directly (that would break the framing).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `fd` is NULL.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle): its
/// descriptor is not for use any more.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_fd(
    conn: *const sockserv_conn,
    fd: *mut c_int,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract (see the module docs of ffi).
        let fd_out = unsafe { out(fd, "fd") }?;
        fd_out.put(match c.live()? {
            ConnKind::Blocking(conn) => conn.fd(),
            ConnKind::Event(conn) => conn.fd(),
            ConnKind::Connecting(pending) => pending.fd(),
        });
        Ok(())
    })
}

/// Sets the timeout of each later send and receive (0: wait for ever), like
/// Python's settimeout. A receive that times out keeps what arrived of a
/// frame, and the connection stays usable. Blocking connections only
/// (`SOCKSERV_ERR_INVALID_STATE` in event mode, whose idle timeout is
/// `sockserv_config_set_idle_timeout_ms`).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` is NULL.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_INVALID_STATE an event-mode connection.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_set_timeout_ms(
    conn: *const sockserv_conn,
    timeout_ms: u32,
) -> sockserv_result {
    with_conn(conn, |c| {
        c.blocking("sockserv_conn_set_timeout_ms")?
            .set_timeout(from_ms(timeout_ms));
        Ok(())
    })
}

/// Reads the timeout set by `sockserv_conn_set_timeout_ms` (0: none).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `timeout_ms` is NULL.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_INVALID_STATE an event-mode connection.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_get_timeout_ms(
    conn: *const sockserv_conn,
    timeout_ms: *mut u32,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract (see the module docs of ffi).
        let timeout_ms = unsafe { out(timeout_ms, "timeout_ms") }?;
        timeout_ms.put(to_ms(c.blocking("sockserv_conn_get_timeout_ms")?.timeout()));
        Ok(())
    })
}

/// `sockserv_conn_set_option` / `_get_option`: TCP_NODELAY, 0 or 1.
pub const SOCKSERV_OPT_NODELAY: c_int = 0;
/// SO_KEEPALIVE, 0 or 1.
pub const SOCKSERV_OPT_KEEPALIVE: c_int = 1;
/// TCP_KEEPIDLE: seconds of silence before the first keepalive probe.
pub const SOCKSERV_OPT_KEEPALIVE_IDLE: c_int = 2;
/// TCP_KEEPINTVL: seconds between keepalive probes.
pub const SOCKSERV_OPT_KEEPALIVE_INTERVAL: c_int = 3;
/// TCP_KEEPCNT: unanswered probes before the connection is dropped.
pub const SOCKSERV_OPT_KEEPALIVE_COUNT: c_int = 4;
/// SO_RCVBUF in bytes (Linux reports twice the value set).
pub const SOCKSERV_OPT_RCVBUF: c_int = 5;
/// SO_SNDBUF in bytes (Linux reports twice the value set).
pub const SOCKSERV_OPT_SNDBUF: c_int = 6;
/// SO_LINGER in seconds; -1 turns it off.
pub const SOCKSERV_OPT_LINGER: c_int = 7;
/// Non-blocking mode, 0 or 1 (blocking connections only): see
/// `sockserv_conn_set_option`.
pub const SOCKSERV_OPT_NONBLOCKING: c_int = 8;

fn socket_option(option: c_int) -> Result<SockOpt> {
    Ok(match option {
        SOCKSERV_OPT_NODELAY => SockOpt::NoDelay,
        SOCKSERV_OPT_KEEPALIVE => SockOpt::KeepAlive,
        SOCKSERV_OPT_KEEPALIVE_IDLE => SockOpt::KeepAliveIdle,
        SOCKSERV_OPT_KEEPALIVE_INTERVAL => SockOpt::KeepAliveInterval,
        SOCKSERV_OPT_KEEPALIVE_COUNT => SockOpt::KeepAliveCount,
        SOCKSERV_OPT_RCVBUF => SockOpt::RecvBuffer,
        SOCKSERV_OPT_SNDBUF => SockOpt::SendBuffer,
        SOCKSERV_OPT_LINGER => SockOpt::Linger,
        other => return Err(invalid(format!("unknown option {other}"))),
    })
}

/// Sets a connection option (`SOCKSERV_OPT_*`, works in both modes unless
/// said otherwise); TCP options on a Unix socket give `SOCKSERV_ERR_IO`.
///
/// `SOCKSERV_OPT_NONBLOCKING` 1: a receive with no whole frame ready
/// returns `SOCKSERV_ERR_WOULD_BLOCK` at once (what arrived of a frame is
/// kept), and so does a send the kernel cannot take at all. A send the
/// kernel took part of succeeds: the rest of that frame is kept and written
/// before anything else by the next send or `sockserv_conn_flush`, so frames
/// are never torn. Wait with poll(2) on `sockserv_conn_fd` (POLLIN, or
/// POLLOUT while `sockserv_conn_flush` says `SOCKSERV_ERR_WOULD_BLOCK`).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `option` is unknown or `value` out of range.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_INVALID_STATE an event-mode connection (`SOCKSERV_OPT_NONBLOCKING`).
/// @retval SOCKSERV_ERR_IO the system refused the option (a TCP option on a Unix
/// socket).
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_set_option(
    conn: *const sockserv_conn,
    option: c_int,
    value: i64,
) -> sockserv_result {
    with_conn(conn, |c| {
        if option == SOCKSERV_OPT_NONBLOCKING {
            let on = match value {
                0 | 1 => value == 1,
                _ => {
                    return Err(invalid(format!(
                        "non-blocking value {value} is neither 0 nor 1"
                    )))
                }
            };
            c.blocking("SOCKSERV_OPT_NONBLOCKING")?.set_nonblocking(on);
            return Ok(());
        }
        sockopt::set(c.socket()?, socket_option(option)?, value)
    })
}

/// Reads a connection option (`SOCKSERV_OPT_*`) into `*value`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `value` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT `option` is unknown.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_INVALID_STATE an event-mode connection (`SOCKSERV_OPT_NONBLOCKING`).
/// @retval SOCKSERV_ERR_IO the system refused the option (a TCP option on a Unix
/// socket).
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_get_option(
    conn: *const sockserv_conn,
    option: c_int,
    value: *mut i64,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract (see the module docs of ffi).
        let value = unsafe { out(value, "value") }?;
        value.put(if option == SOCKSERV_OPT_NONBLOCKING {
            c.blocking("SOCKSERV_OPT_NONBLOCKING")?
                .is_nonblocking()
                .into()
        } else {
            sockopt::get(c.socket()?, socket_option(option)?)?
        });
        Ok(())
    })
}

/// Non-blocking mode: writes the rest of a frame an earlier send could not
/// finish. `SOCKSERV_OK` when nothing is left, `SOCKSERV_ERR_WOULD_BLOCK`
/// while some is (wait for POLLOUT on the fd). Blocking mode: waits, within
/// the timeout.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` is NULL.
/// @retval SOCKSERV_ERR_WOULD_BLOCK non-blocking mode: some of the frame is left.
/// @retval SOCKSERV_ERR_TIMED_OUT blocking mode: the timeout passed.
/// @retval SOCKSERV_ERR_CLOSED the peer went away.
/// @retval SOCKSERV_ERR_BROKEN an earlier failure left the connection unusable.
/// @retval SOCKSERV_ERR_SHUTDOWN the server is shutting down.
/// @retval SOCKSERV_ERR_INVALID_STATE an event-mode connection.
/// @retval SOCKSERV_ERR_IO another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_flush(conn: *const sockserv_conn) -> sockserv_result {
    with_conn(conn, |c| c.blocking("sockserv_conn_flush")?.flush())
}

/// Turns TCP_NODELAY on or off (TCP only; `SOCKSERV_ERR_IO` on Unix
/// sockets). The same as `SOCKSERV_OPT_NODELAY`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` is NULL.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_IO not a TCP socket, or another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_set_nodelay(
    conn: *const sockserv_conn,
    on: bool,
) -> sockserv_result {
    with_conn(conn, |c| {
        sockopt::set(c.socket()?, SockOpt::NoDelay, on.into())
    })
}

/// Reads TCP_NODELAY into `*on`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` or `on` is NULL.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_IO not a TCP socket, or another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_get_nodelay(
    conn: *const sockserv_conn,
    on: *mut bool,
) -> sockserv_result {
    with_conn(conn, |c| {
        // SAFETY: caller contract (see the module docs of ffi).
        let on = unsafe { out(on, "on") }?;
        on.put(sockopt::get(c.socket()?, SockOpt::NoDelay)? == 1);
        Ok(())
    })
}

/// Turns TCP keepalive on or off. With `on` and non-zero timings, the first
/// probe goes after `idle_s` seconds of silence, then every `interval_s`,
/// and the connection is dropped after `count` unanswered probes; zeros
/// keep the kernel's timings.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT a timing is out of the kernel's range.
/// @retval SOCKSERV_ERR_CLOSED the connection has ended (a retained handle).
/// @retval SOCKSERV_ERR_IO not a TCP socket, or another OS error.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_set_keepalive(
    conn: *const sockserv_conn,
    on: bool,
    idle_s: u32,
    interval_s: u32,
    count: u32,
) -> sockserv_result {
    with_conn(conn, |c| {
        let socket = c.socket()?;
        sockopt::set(socket, SockOpt::KeepAlive, on.into())?;
        if on && idle_s > 0 && interval_s > 0 && count > 0 {
            sockopt::set(socket, SockOpt::KeepAliveIdle, idle_s.into())?;
            sockopt::set(socket, SockOpt::KeepAliveInterval, interval_s.into())?;
            sockopt::set(socket, SockOpt::KeepAliveCount, count.into())?;
        }
        Ok(())
    })
}

/// Closes the connection from any thread. Event mode: what was queued is
/// written first (for up to 5 s), then the socket is closed and `on_close`
/// runs with `SOCKSERV_OK`. Blocking mode: the socket is shut down at once,
/// waking any thread blocked on it; later calls return `SOCKSERV_ERR_BROKEN`
/// (a client connection must still be freed with `sockserv_conn_free`).
/// Closing does not free the handle: references held stay valid.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` is NULL.
/// @retval SOCKSERV_ERR_CLOSED the connection had already ended (`on_close` ran,
/// the handler returned, or it was freed): nothing to do.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_close(conn: *const sockserv_conn) -> sockserv_result {
    with_conn(conn, |c| {
        match c.live()? {
            ConnKind::Blocking(conn) => conn.close(),
            ConnKind::Event(conn) => conn.close(),
            ConnKind::Connecting(pending) => pending.close(),
        }
        Ok(())
    })
}

/// Attaches a pointer of yours to the connection (not used by sockserv).
/// Works on an ended connection too (the handle's own memory).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_set_userdata(
    conn: *const sockserv_conn,
    userdata: *mut c_void,
) -> sockserv_result {
    with_conn(conn, |c| {
        c.userdata.store(userdata, Ordering::Release);
        Ok(())
    })
}

/// The pointer set by `sockserv_conn_set_userdata`; NULL if none (or if
/// `conn` is NULL).
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_get_userdata(conn: *const sockserv_conn) -> *mut c_void {
    guard_value(std::ptr::null_mut(), || {
        // SAFETY: caller contract (see the module docs of ffi).
        match unsafe { arg(conn, "conn") } {
            Ok(c) => c.userdata.load(Ordering::Acquire),
            Err(_) => std::ptr::null_mut(),
        }
    })
}

/// Adds a reference to `conn`, so it stays valid memory after its owner
/// let go: a handle lent by a server past `on_close` (event mode) or past
/// the handler's return (threaded mode), or one of yours past
/// `sockserv_conn_free`. Any thread, at any time while you hold a
/// reference (inside a callback, the server's counts). Each retain needs
/// one `sockserv_conn_release`. Calls on a connection that has ended
/// return `SOCKSERV_ERR_CLOSED` and never touch freed memory; a retained
/// handle keeps the (shut down) socket's descriptor until released.
///
/// @retval SOCKSERV_OK the reference was added.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `conn` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_retain(conn: *const sockserv_conn) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        unsafe { arg(conn, "conn") }?;
        // SAFETY: every handle comes from Arc::into_raw (new_handle,
        // sockserv_conn::lent) and the caller holds a reference, so the
        // count is at least one.
        unsafe { Arc::increment_strong_count(conn) };
        Ok(())
    })
}

/// Drops a reference added by `sockserv_conn_retain`; the last one frees
/// the handle (a connection of yours that was never freed closes as with
/// `sockserv_conn_free`). Any thread. NULL is ignored. Releasing more
/// than you retained is a use-after-free, as a double free would be.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_release(conn: *mut sockserv_conn) {
    guard_value((), || {
        if conn.is_null() {
            return;
        }
        // SAFETY: from Arc::into_raw, and the caller gives back a reference
        // it holds (its contract).
        unsafe { Arc::decrement_strong_count(conn.cast_const()) };
    })
}

/// Closes a connection from `sockserv_connect` or `sockserv_conn_from_fd`
/// and drops your reference, first writing (for up to 5 s) any replies held
/// by `sockserv_config_set_coalesce_sends`. The handle is freed now, or
/// with the last `sockserv_conn_release` if it was retained (calls through
/// those references return `SOCKSERV_ERR_CLOSED`). NULL, and a connection
/// lent to a handler (the server closes those), are ignored.
#[no_mangle]
pub unsafe extern "C" fn sockserv_conn_free(conn: *mut sockserv_conn) {
    guard_value((), || {
        if conn.is_null() {
            return;
        }
        // SAFETY: a non-NULL handle came from Arc::into_raw and the caller
        // holds a reference; ManuallyDrop leaves the count alone.
        let handle = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(conn.cast_const()) });
        if handle.server_owned {
            return;
        }
        if let Some(inner) = handle.kind.as_blocking() {
            // Replies held by coalescing are not lost to a free.
            inner.flush_within(Duration::from_secs(5));
            handle.ended.store(true, Ordering::Release);
            // Retained elsewhere: those holders must not keep the peer
            // waiting (the count can only shrink meanwhile).
            if Arc::strong_count(&handle) > 1 {
                inner.close();
            }
        }
        // SAFETY: a connection not lent by a server came from new_handle;
        // this is the caller's reference, given back once.
        drop(std::mem::ManuallyDrop::into_inner(handle));
    })
}

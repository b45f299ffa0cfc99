//! The handle of an event-driven connection, shared by its I/O thread, the
//! callbacks and any thread that sends on it. Sending never blocks: frames
//! are queued and the I/O thread writes them, many per system call.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use socket2::Socket;

use crate::error::{Error, ErrorKind, Result};
use crate::proto::frame::encode_header;
use crate::proto::tls::TlsInfo;
use crate::server::event::inbox::Inbox;
use crate::util::sync::lock;

/// Frames at least this large are written by `send` itself when nothing is
/// queued, instead of being copied into the queue.
const DIRECT_SEND_MIN: usize = 64 * 1024;

/// What to do with a send while the connection's queue is over its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenBackedUp {
    /// Refuse the send with `WouldBlock`; the connection stays.
    Refuse,
    /// Close the connection: the peer is not reading.
    Close,
}

/// An event-mode connection: its frames arrive in
/// [`crate::EventHandler::on_frame`], its sends queue without blocking.
pub struct EventConn {
    id: u64,
    token: usize,
    inbox: Arc<Inbox>,
    socket_peer: String,
    /// The client behind a load balancer, from a PROXY protocol header.
    proxied_peer: std::sync::OnceLock<String>,
    local: String,
    socket: Socket,
    /// Encoded frames queued by `send`, not yet taken by the I/O thread.
    out: Mutex<Vec<u8>>,
    /// `out.len()`, stored beside it (never read-modify-written) so the
    /// I/O thread can read it without the lock.
    out_len: AtomicUsize,
    /// Bytes the I/O thread took from `out` and has not written yet; only
    /// the I/O thread stores it.
    in_flight: AtomicUsize,
    max_queued: usize,
    when_backed_up: WhenBackedUp,
    closed: AtomicBool,
    close_requested: AtomicBool,
    /// A word for the embedding layer (the C API keeps its handle here).
    pub(crate) slot: AtomicUsize,
    /// The connection speaks TLS: sends are sealed by the I/O thread, so
    /// none goes to the socket directly.
    tls: bool,
    /// What its TLS handshake negotiated, set before `on_open`; boxed, so
    /// a plaintext connection's handle stays small.
    tls_info: std::sync::OnceLock<Box<TlsInfo>>,
}

pub(crate) struct EventConnParts {
    pub id: u64,
    pub token: usize,
    pub inbox: Arc<Inbox>,
    pub peer: String,
    pub local: String,
    pub socket: Socket,
    pub max_queued: usize,
    pub when_backed_up: WhenBackedUp,
    pub tls: bool,
}

impl EventConn {
    pub(crate) fn new(p: EventConnParts) -> EventConn {
        EventConn {
            id: p.id,
            token: p.token,
            inbox: p.inbox,
            socket_peer: p.peer,
            proxied_peer: std::sync::OnceLock::new(),
            local: p.local,
            socket: p.socket,
            out: Mutex::new(Vec::new()),
            out_len: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_queued: p.max_queued,
            when_backed_up: p.when_backed_up,
            closed: AtomicBool::new(false),
            close_requested: AtomicBool::new(false),
            slot: AtomicUsize::new(0),
            tls: p.tls,
            tls_info: std::sync::OnceLock::new(),
        }
    }

    /// What the TLS handshake negotiated (the peer's certificate among
    /// it); `None` without TLS.
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls_info.get().map(|info| &**info)
    }

    pub(crate) fn set_tls_info(&self, info: TlsInfo) {
        let _ = self.tls_info.set(Box::new(info));
    }

    /// Queues one frame; the I/O thread writes it. Never blocks. Past the
    /// queue limit: `WouldBlock`, or the connection is closed (settable).
    /// A frame larger than the limit is taken when nothing else is queued.
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        if self.close_requested.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let header = encode_header(payload.len() as u64);
        let frame_len = header.as_bytes().len() + payload.len();
        // One lock and no other atomic read-modify-write: this runs once per
        // frame, in on_frame and from any other thread.
        let mut out = lock(&self.out);
        // Read under the lock `mark_closed` takes: a send that returns Ok
        // queued before the close, and none after it leaves bytes behind
        // (a handle may outlive the connection by a long time).
        if self.closed.load(Ordering::Relaxed) {
            return Err(self.closed_error());
        }
        let queued = out.len() + self.in_flight.load(Ordering::Acquire);
        if queued > 0 && queued + frame_len > self.max_queued {
            drop(out);
            return Err(self.backed_up(queued));
        }
        // The first frame since the I/O thread last took the queue asks it
        // to write; later ones ride along.
        let first = out.is_empty();
        let mut sent = 0;
        if queued == 0 && payload.len() >= DIRECT_SEND_MIN && !self.tls {
            // Nothing queued and nothing being written (the lock keeps it so):
            // a large frame goes straight from the caller's buffer, saving
            // the copy; a small one waits to share a system call.
            sent = self.send_directly(header.as_bytes(), payload);
            if sent == frame_len {
                return Ok(());
            }
        }
        let header_rest = &header.as_bytes()[sent.min(header.as_bytes().len())..];
        out.extend_from_slice(header_rest);
        out.extend_from_slice(&payload[sent.saturating_sub(header.as_bytes().len())..]);
        self.out_len.store(out.len(), Ordering::Release);
        drop(out);
        if first {
            self.inbox.flush(self.token, self.id);
        }
        Ok(())
    }

    fn closed_error(&self) -> Error {
        Error::new(
            ErrorKind::Closed,
            format!("the connection with {} is closed", self.peer_addr()),
        )
    }

    /// One non-blocking sendmsg of the frame; how much the kernel took. An
    /// error takes nothing: the I/O thread meets it again and closes.
    fn send_directly(&self, header: &[u8], payload: &[u8]) -> usize {
        let bufs = [
            std::io::IoSlice::new(header),
            std::io::IoSlice::new(payload),
        ];
        self.socket
            .send_vectored_with_flags(&bufs, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            .unwrap_or(0)
    }

    fn backed_up(&self, queued: usize) -> Error {
        let detail = format!(
            "{queued} bytes are already queued for {} (limit {}): the peer is not reading",
            self.peer_addr(),
            self.max_queued
        );
        if self.when_backed_up == WhenBackedUp::Close {
            self.close();
            return Error::new(
                ErrorKind::Closed,
                format!("{detail}; the connection was closed"),
            );
        }
        Error::new(ErrorKind::WouldBlock, detail)
    }

    /// Asks the I/O thread to close the connection once what is queued has
    /// been written; `on_close` follows with no error. Any thread.
    pub fn close(&self) {
        if !self.close_requested.swap(true, Ordering::AcqRel) {
            self.inbox.close(self.token, self.id);
        }
    }

    /// The peer's address; behind a proxy speaking the PROXY protocol,
    /// the client's, once the header has been read.
    pub fn peer_addr(&self) -> &str {
        self.proxied_peer.get().unwrap_or(&self.socket_peer)
    }

    /// This end's address.
    pub fn local_addr(&self) -> &str {
        &self.local
    }

    /// The socket's descriptor: open as long as this handle lives, so
    /// options can be read and set (`socket()`), but never read or write it.
    pub fn fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    /// The socket, for options (do not read or write it).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Bytes queued for sending and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out_len.load(Ordering::Acquire) + self.in_flight.load(Ordering::Acquire)
    }

    /// Whether the connection has been closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    // The I/O thread's side.

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn max_queued(&self) -> usize {
        self.max_queued
    }

    pub(crate) fn close_requested(&self) -> bool {
        self.close_requested.load(Ordering::Acquire)
    }

    pub(crate) fn set_proxied_peer(&self, peer: String) {
        let _ = self.proxied_peer.set(peer);
    }

    /// The I/O thread let go of the connection: the stream is shut down in
    /// both directions (the descriptor closes with the last handle).
    pub(crate) fn mark_closed(&self) {
        {
            let mut out = lock(&self.out);
            self.closed.store(true, Ordering::Release);
            // Nobody writes it any more; a retained handle keeps no queue.
            *out = Vec::new();
            self.out_len.store(0, Ordering::Release);
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Moves the queued frames into `into` (empty) for writing.
    pub(crate) fn take_queued(&self, into: &mut Vec<u8>) {
        let mut out = lock(&self.out);
        std::mem::swap(&mut *out, into);
        self.out_len.store(0, Ordering::Release);
        self.in_flight.store(into.len(), Ordering::Release);
    }

    /// Queues bytes already framed (the session's handshake frames),
    /// whatever the limit.
    pub(crate) fn queue_encoded(&self, bytes: &[u8]) {
        let mut out = lock(&self.out);
        out.extend_from_slice(bytes);
        self.out_len.store(out.len(), Ordering::Release);
    }

    /// The I/O thread has `left` bytes of what it took still to write.
    pub(crate) fn written(&self, left: usize) {
        self.in_flight.store(left, Ordering::Release);
    }
}

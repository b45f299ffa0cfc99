//! A framed connection over a blocking stream socket (TCP or Unix): the
//! blocking driver of the frame codec and of the handshake.
//!
//! Thread safety: sends are serialised by one lock and receives by another,
//! so two threads sending never interleave frames, and one thread may
//! receive while another sends. Timeouts are deadlines: a send or receive
//! with a timeout finishes within it or fails, however the peer dribbles.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::server::lock;
use std::time::{Duration, Instant};

use rand::TryRng;
use socket2::Socket;

use crate::address::format_sockaddr;
use crate::auth::{Handshake, Keys, Role, MAX_HANDSHAKE_FRAME, NONCE_LEN};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::frame::{self, encode_header};
use crate::proxy_protocol::{self, Parsed, ProxyMode};
use crate::recv_buffer::{Decoded, RecvBuffer};
use crate::sockopt::{self, SockOpt};
use crate::sys::{self, Interest};
use crate::timeout_cell::TimeoutCell;

/// Coalesced replies are held up to this many bytes.
const COALESCE_LIMIT: usize = 64 * 1024;
/// The receive buffer each connection starts with; one read takes up to this.
const RECV_BUFFER_SIZE: usize = 64 * 1024;
/// Below this much free room the receive buffer grows before a read.
const MIN_READ: usize = 4096;

/// What [`Connection::recv_into`] did with the next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvInto {
    /// The frame was copied; this many bytes.
    Copied(usize),
    /// The buffer is too small for the frame, which stays queued: this is
    /// its size.
    TooSmall(usize),
}

pub struct Connection {
    socket: Socket,
    /// The socket's peer, and the client behind it when a PROXY protocol
    /// header named one.
    socket_peer: String,
    proxied_peer: OnceLock<String>,
    /// A PROXY protocol header is still expected before the first frame.
    expect_proxy: Mutex<Option<ProxyMode>>,
    local: String,
    max_frame_size: u64,
    recv: Mutex<RecvBuffer>,
    /// Serialises senders; holds the tail of a frame that a non-blocking
    /// send could not finish, written before anything else.
    send_lock: Mutex<Vec<u8>>,
    nonblocking: AtomicBool,
    /// Hold replies while the peer's next frame is already here (see
    /// `Config::coalesce_sends`).
    coalesce: bool,
    /// For each send and receive; none waits for ever.
    timeout: TimeoutCell,
    /// Why the stream can no longer be used (out of sync, or closed by us).
    broken: OnceLock<String>,
    /// Set by a server that is shutting down before it closes the socket, so
    /// the calls it interrupts say so.
    closing: AtomicBool,
    /// Run once, before the peer can learn that the preamble (PROXY header,
    /// handshake) failed: before `#FAILURE#` is sent or the stream is shut
    /// down. A server counts the refusal here, so a client that saw it
    /// never reads a counter that has not caught up.
    refusal_hook: Mutex<Option<RefusalHook>>,
}

type RefusalHook = Box<dyn FnOnce() + Send>;

impl Connection {
    /// Wraps a connected stream socket and applies the config's options.
    /// No handshake: see [`Connection::establish`].
    pub fn new(socket: Socket, config: &Config) -> Result<Connection> {
        Connection::wrap(socket, config).map_err(|(e, _)| e)
    }

    /// Wraps the socket and, when the config has keys, runs the handshake
    /// in `role` within the config's handshake timeout. On failure the
    /// socket is handed back, still open.
    pub fn establish(
        socket: Socket,
        config: &Config,
        role: Role,
    ) -> std::result::Result<Connection, (Error, Socket)> {
        let conn = Connection::wrap(socket, config)?;
        if role == Role::Client {
            // Only the accepting side hears from a load balancer.
            *lock(&conn.expect_proxy) = None;
        }
        if config.keys.is_empty() {
            return Ok(conn);
        }
        match conn.handshake(role, config.keys.clone(), config.handshake_timeout) {
            Ok(()) => Ok(conn),
            Err(e) => Err((e, conn.socket)),
        }
    }

    fn wrap(socket: Socket, config: &Config) -> std::result::Result<Connection, (Error, Socket)> {
        let addresses = socket
            .peer_addr()
            .map_err(|e| Error::io("the socket is not connected", &e))
            .and_then(|peer| {
                let local = socket
                    .local_addr()
                    .map_err(|e| Error::io("cannot read the socket's local address", &e))?;
                Ok((peer, local))
            });
        let (peer, local) = match addresses {
            Ok(pair) => pair,
            Err(e) => return Err((e, socket)),
        };
        let conn = Connection {
            socket_peer: format_sockaddr(&peer),
            proxied_peer: OnceLock::new(),
            expect_proxy: Mutex::new(match config.proxy_protocol {
                ProxyMode::Off => None,
                mode => Some(mode),
            }),
            local: format_sockaddr(&local),
            socket,
            max_frame_size: config.max_frame_size,
            recv: Mutex::new(RecvBuffer::with_capacity(RECV_BUFFER_SIZE)),
            send_lock: Mutex::new(Vec::new()),
            nonblocking: AtomicBool::new(false),
            coalesce: config.coalesce_sends,
            timeout: TimeoutCell::default(),
            broken: OnceLock::new(),
            closing: AtomicBool::new(false),
            refusal_hook: Mutex::new(None),
        };
        conn.set_timeout(config.io_timeout);
        if peer.is_ipv4() || peer.is_ipv6() {
            let options = sockopt::set(&conn.socket, SockOpt::NoDelay, config.nodelay.into())
                .and_then(|()| {
                    sockopt::set(&conn.socket, SockOpt::KeepAlive, config.keepalive.into())
                });
            if let Err(e) = options {
                return Err((e, conn.socket));
            }
        }
        Ok(conn)
    }

    /// Runs the challenge-response handshake; fails with the reason, after
    /// telling the peer `#FAILURE#` where the protocol says so.
    pub fn handshake(&self, role: Role, keys: Keys, timeout: Duration) -> Result<()> {
        let context = |e: Error| e.context(format!("handshake with {}", self.peer_addr()));
        let deadline = Wait::Until(Instant::now() + timeout);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::SysRng
            .try_fill_bytes(&mut nonce)
            .map_err(|e| Error::new(ErrorKind::Io, format!("the OS random source failed: {e}")))?;
        let mut hs = Handshake::new(role, keys, nonce);
        loop {
            while let Some(msg) = hs.poll_transmit() {
                self.send_frame(&msg, deadline).map_err(context)?;
            }
            if hs.is_done() {
                return Ok(());
            }
            let step = self
                .recv_frame(MAX_HANDSHAKE_FRAME, deadline, |buf, frame| {
                    hs.receive(buf.bytes(frame))
                })
                .map_err(context)?;
            if let Err(e) = step {
                // Counted before the peer can hear of it.
                self.run_refusal_hook();
                // Best effort: the peer learns it failed, then we close.
                while let Some(msg) = hs.poll_transmit() {
                    let _ = self.send_frame(&msg, deadline);
                }
                return Err(context(e));
            }
        }
    }

    /// Sends one frame: header and payload leave in one system call where
    /// the kernel takes them.
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        self.send_frame(payload, self.wait())
    }

    /// Receives the next frame and hands it to `f`, borrowed from the
    /// connection's buffer.
    pub fn recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.recv_frame(self.max_frame_size, self.wait(), |buf, frame| {
            f(buf.bytes(frame))
        })
    }

    /// Receives the next frame into `out`. A frame larger than `out` is left
    /// queued and its size reported.
    pub fn recv_into(&self, out: &mut [u8]) -> Result<RecvInto> {
        self.recv_frame(self.max_frame_size, self.wait(), |buf, frame| {
            let payload = buf.bytes(frame.clone());
            if payload.len() > out.len() {
                let needed = payload.len();
                let header_len = encode_header(needed as u64).as_bytes().len();
                buf.unconsume(&frame, header_len);
                return RecvInto::TooSmall(needed);
            }
            out[..payload.len()].copy_from_slice(payload);
            RecvInto::Copied(payload.len())
        })
    }

    /// Whether a receive would find data (a whole buffered frame, or bytes or
    /// end of stream on the socket) within `timeout` (`None`: wait for ever).
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.usable()?;
        self.flush_held()?;
        if self.frame_waiting() {
            return Ok(true);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        sys::wait(self.fd(), Interest::Read, deadline).map_err(|e| self.fail("poll", &e))
    }

    /// Whether the receive buffer holds a whole frame (or a bad header that
    /// a receive would report) now. A receive running elsewhere counts as no.
    fn frame_waiting(&self) -> bool {
        let Ok(buf) = self.recv.try_lock() else {
            return false;
        };
        match frame::decode_header(buf.pending(), self.max_frame_size) {
            Ok(Some(h)) => buf.pending().len() as u64 >= h.frame_len(),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Writes replies held back by coalescing, as this connection's wait
    /// allows.
    fn flush_held(&self) -> Result<()> {
        let wait = self.wait();
        if !self.coalesce || wait == Wait::Never {
            return Ok(());
        }
        let mut held = lock(&self.send_lock);
        self.write_pending(&mut held, wait)
    }

    /// Writes held replies within `limit` (a server's handler returned, or
    /// a client connection is being freed); what cannot go is dropped with
    /// the connection.
    pub fn flush_within(&self, limit: Duration) {
        if self.usable().is_ok() {
            let mut held = lock(&self.send_lock);
            let _ = self.write_pending(&mut held, Wait::Until(Instant::now() + limit));
        }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The peer's address; behind a proxy speaking the PROXY protocol,
    /// the client's, once the header has been read.
    pub fn peer_addr(&self) -> &str {
        self.proxied_peer.get().unwrap_or(&self.socket_peer)
    }

    /// Reads the PROXY protocol header now, if one is expected, within
    /// `timeout` (a server in required mode does this before anything else,
    /// so its verify callback sees the client's address).
    pub fn read_proxy_header(&self, timeout: Duration) -> Result<()> {
        let deadline = Wait::Until(Instant::now() + timeout);
        let mut buf = self.lock_recv();
        self.take_proxy_header(&mut buf, deadline)
    }

    pub fn local_addr(&self) -> &str {
        &self.local
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) {
        self.timeout.set(timeout);
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.get()
    }

    /// The socket, for options (see [`crate::sockopt`]); reading or writing
    /// it directly would break the framing.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Non-blocking mode: a receive with no whole frame ready, and a send
    /// the kernel cannot take at all, fail with `WouldBlock` at once. A
    /// frame a send started is always finished: what the kernel did not
    /// take is kept and written first by the next send or [`Connection::flush`].
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
    }

    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Writes the tail of a frame a non-blocking send left behind:
    /// `WouldBlock` while some remains (poll the fd for writability).
    pub fn flush(&self) -> Result<()> {
        self.usable()?;
        let mut pending = lock(&self.send_lock);
        self.write_pending(&mut pending, self.wait())
    }

    /// Closes the stream in both directions from any thread, waking a thread
    /// blocked on it; later calls fail with `Broken`.
    pub fn close(&self) {
        self.break_stream(format!(
            "the connection with {} was closed locally",
            self.peer_addr()
        ));
    }

    /// Like [`Connection::close`], for a server shutting down: later calls
    /// fail with `Shutdown`.
    pub fn close_for_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Bytes of receive buffer held, for memory accounting.
    pub fn buffered_capacity(&self) -> usize {
        self.lock_recv().capacity()
    }

    pub fn into_socket(self) -> Socket {
        self.socket
    }

    /// How long this call may wait: not at all in non-blocking mode, else
    /// the timeout, else for ever.
    fn wait(&self) -> Wait {
        if self.is_nonblocking() {
            return Wait::Never;
        }
        match self.timeout() {
            Some(t) => Wait::Until(Instant::now() + t),
            None => Wait::Forever,
        }
    }

    /// Waits for the socket to be ready, as `wait` allows.
    fn ready(&self, interest: Interest, wait: Wait, doing: &str) -> Result<()> {
        let deadline = match wait {
            Wait::Never => {
                return Err(Error::new(
                    ErrorKind::WouldBlock,
                    format!("{doing} {} would block", self.peer_addr()),
                ))
            }
            Wait::Forever => None,
            Wait::Until(deadline) => Some(deadline),
        };
        let ready = sys::wait(self.fd(), interest, deadline)
            .map_err(|e| self.fail(&format!("waiting for {doing}"), &e))?;
        if !ready {
            return Err(Error::new(
                ErrorKind::TimedOut,
                format!("timed out {doing} {}", self.peer_addr()),
            ));
        }
        Ok(())
    }

    fn usable(&self) -> Result<()> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(shutdown_error());
        }
        match self.broken.get() {
            Some(why) => Err(Error::new(ErrorKind::Broken, why.clone())),
            None => Ok(()),
        }
    }

    /// Sets the hook run (once) when the preamble fails; see `refusal_hook`.
    pub(crate) fn set_refusal_hook(&self, hook: RefusalHook) {
        *lock(&self.refusal_hook) = Some(hook);
    }

    /// Runs the refusal hook if it has not run yet, and forgets it.
    pub(crate) fn run_refusal_hook(&self) {
        let hook = lock(&self.refusal_hook).take();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// The preamble succeeded: the hook is not needed any more.
    pub(crate) fn clear_refusal_hook(&self) {
        lock(&self.refusal_hook).take();
    }

    /// Marks the stream unusable and closes it, so the peer sees the end too.
    fn break_stream(&self, why: String) {
        self.run_refusal_hook();
        let _ = self.broken.set(why);
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Maps an OS error, saying so when the server closed the socket.
    fn fail(&self, doing: &str, err: &std::io::Error) -> Error {
        if self.closing.load(Ordering::SeqCst) {
            return shutdown_error();
        }
        Error::io(format_args!("{doing} {}", self.peer_addr()), err)
    }

    fn lock_recv(&self) -> MutexGuard<'_, RecvBuffer> {
        lock(&self.recv)
    }

    fn send_frame(&self, payload: &[u8], wait: Wait) -> Result<()> {
        self.usable()?;
        let mut pending = lock(&self.send_lock);
        let header = encode_header(payload.len() as u64);
        let header = header.as_bytes();
        let total = header.len() + payload.len();
        if self.coalesce && wait != Wait::Never && pending.len() + total <= COALESCE_LIMIT {
            pending.extend_from_slice(header);
            pending.extend_from_slice(payload);
            // The peer's next frame is already here, so the handler will be
            // back in a moment: its reply can leave with this one.
            if self.frame_waiting() {
                return Ok(());
            }
            return self.write_pending(&mut pending, wait);
        }
        self.write_pending(&mut pending, wait)?;
        let mut sent = 0;
        while sent < total {
            let bufs = if sent < header.len() {
                [IoSlice::new(&header[sent..]), IoSlice::new(payload)]
            } else {
                [
                    IoSlice::new(&payload[sent - header.len()..]),
                    IoSlice::new(&[]),
                ]
            };
            match self
                .socket
                .send_vectored_with_flags(&bufs, libc::MSG_NOSIGNAL | wait.flags())
            {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if wait == Wait::Never && sent > 0 {
                        // Keep the rest of the frame: the stream stays whole.
                        let rest = sent.saturating_sub(header.len());
                        pending.extend_from_slice(&header[sent.min(header.len())..]);
                        pending.extend_from_slice(&payload[rest..]);
                        return Ok(());
                    }
                    if let Err(e) = self.ready(Interest::Write, wait, "sending to") {
                        return Err(self.torn_send(sent, total, e));
                    }
                }
                Err(e) => return Err(self.torn_send(sent, total, self.fail("sending to", &e))),
            }
        }
        Ok(())
    }

    /// Writes `pending` (the tail of an earlier frame) as `wait` allows.
    fn write_pending(&self, pending: &mut Vec<u8>, wait: Wait) -> Result<()> {
        while !pending.is_empty() {
            match self
                .socket
                .send_with_flags(pending, libc::MSG_NOSIGNAL | wait.flags())
            {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.ready(Interest::Write, wait, "sending to") {
                        if wait != Wait::Never {
                            // A frame already begun cannot be taken back.
                            return Err(self.torn_send(1, 1 + pending.len(), e));
                        }
                        return Err(e);
                    }
                }
                Err(e) => {
                    return Err(self.torn_send(1, 1 + pending.len(), self.fail("sending to", &e)))
                }
            }
        }
        Ok(())
    }

    /// A send that stopped after part of a frame left the stream out of sync:
    /// nothing more can be sent on it, so it is closed.
    fn torn_send(&self, sent: usize, total: usize, err: Error) -> Error {
        if sent == 0 {
            return err;
        }
        self.break_stream(format!(
            "a send to {} stopped after {sent} of {total} bytes of a frame, so the stream was closed",
            self.peer_addr()
        ));
        err.context(format!("{sent} of {total} bytes sent, connection closed"))
    }

    fn recv_frame<R>(
        &self,
        max_payload: u64,
        deadline: Wait,
        f: impl FnOnce(&mut RecvBuffer, std::ops::Range<usize>) -> R,
    ) -> Result<R> {
        self.usable()?;
        let mut buf = self.lock_recv();
        self.take_proxy_header(&mut buf, deadline)?;
        loop {
            let missing = match buf.next_frame(max_payload) {
                Ok(Decoded::Frame(frame)) => return Ok(f(&mut buf, frame)),
                Ok(Decoded::NeedMore(n)) => n,
                Err(e) => {
                    // The rest of the stream cannot be found again: close it.
                    self.break_stream(format!(
                        "an earlier frame from {} was refused: {e}",
                        self.peer_addr()
                    ));
                    return Err(e.context(format!("receiving from {}", self.peer_addr())));
                }
            };
            // About to wait for the peer: whatever we held goes first.
            self.flush_held()?;
            let want = read_room(buf.capacity(), buf.pending().len(), missing);
            let spare = buf.spare(want);
            let n = self.read_some(spare, deadline)?;
            if n == 0 {
                return Err(self.end_of_stream(buf.pending().len(), missing));
            }
            buf.commit(n);
        }
    }

    /// Consumes the PROXY protocol header at the start of the stream, if one
    /// is expected, reading as needed.
    fn take_proxy_header(&self, buf: &mut RecvBuffer, deadline: Wait) -> Result<()> {
        let mut expect = lock(&self.expect_proxy);
        let Some(mode) = *expect else {
            return Ok(());
        };
        loop {
            match proxy_protocol::parse(buf.pending()) {
                Ok(Parsed::Header { len, source }) => {
                    buf.consume(len);
                    if let Some(source) = source {
                        let _ = self.proxied_peer.set(format!("tcp://{source}"));
                    }
                    break;
                }
                Ok(Parsed::Absent) if mode == ProxyMode::Optional => break,
                Ok(Parsed::Absent) => {
                    let e = Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "{} sent no PROXY protocol header, which this server requires",
                            self.peer_addr()
                        ),
                    );
                    self.break_stream(e.detail().to_string());
                    return Err(e);
                }
                Ok(Parsed::NeedMore) => {}
                Err(e) => {
                    self.break_stream(e.detail().to_string());
                    return Err(e.context(format!("connection from {}", self.peer_addr())));
                }
            }
            let spare = buf.spare(512);
            let n = self.read_some(spare, deadline)?;
            if n == 0 {
                return Err(self.end_of_stream(buf.pending().len(), 1));
            }
            buf.commit(n);
        }
        *expect = None;
        Ok(())
    }

    fn end_of_stream(&self, have: usize, missing: usize) -> Error {
        if self.closing.load(Ordering::SeqCst) {
            return shutdown_error();
        }
        if have == 0 {
            return Error::new(
                ErrorKind::Closed,
                format!("{} closed the connection", self.peer_addr()),
            );
        }
        Error::new(
            ErrorKind::TruncatedFrame,
            format!(
                "{} closed the connection in the middle of a frame: {have} bytes received, {missing} more expected",
                self.peer_addr()
            ),
        )
    }

    /// One recv(2) into `spare`, waiting as `wait` allows.
    fn read_some(&self, spare: &mut [u8], wait: Wait) -> Result<usize> {
        loop {
            match sys::recv(self.fd(), spare, wait.flags()) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.ready(Interest::Read, wait, "receiving from")?;
                }
                Err(e) => return Err(self.fail("receiving from", &e)),
            }
        }
    }
}

/// How much room to ask of a receive buffer of `capacity` bytes holding
/// `held` unread ones, `missing` more being needed. The memory a partial
/// frame holds follows the bytes that arrived, never the length its header
/// declares: the room the buffer has is read into as it is, and when less
/// than `MIN_READ` is left the buffer at most doubles (`RecvBuffer::spare`
/// grows to twice its size), so it stays within about twice what arrived
/// plus the initial buffer. A peer declaring 60 MiB and sending 1 KiB costs
/// the 64 KiB every connection has (it was 2 MiB with a fixed 1 MiB read
/// ahead: issue 10).
fn read_room(capacity: usize, held: usize, missing: usize) -> usize {
    let free = capacity.saturating_sub(held);
    if free >= MIN_READ {
        missing.min(free)
    } else {
        missing.min(held.max(MIN_READ))
    }
}

/// How long a send or receive may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Forever,
    Until(Instant),
    /// Non-blocking mode.
    Never,
}

impl Wait {
    /// Blocking calls only when waiting for ever; otherwise the socket is
    /// polled, so every wait is bounded.
    fn flags(self) -> libc::c_int {
        match self {
            Wait::Forever => 0,
            Wait::Until(_) | Wait::Never => libc::MSG_DONTWAIT,
        }
    }
}

fn shutdown_error() -> Error {
    Error::new(
        ErrorKind::Shutdown,
        "the server is shutting down and closed this connection",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer dribbling a huge frame: the buffer never holds more than the
    /// initial size plus about twice what arrived, and the reads still
    /// grow (no 4 KiB crawl once much has arrived).
    #[test]
    fn receive_room_follows_what_arrived() {
        let mut buf = RecvBuffer::with_capacity(RECV_BUFFER_SIZE);
        let declared = 60 << 20;
        let mut arrived = 0;
        let mut reads = 0;
        while arrived < 8 << 20 {
            let want = read_room(buf.capacity(), buf.pending().len(), declared - arrived);
            let n = buf.spare(want).len();
            assert!(n >= MIN_READ.min(declared - arrived));
            buf.commit(n);
            arrived += n;
            reads += 1;
            assert!(
                buf.capacity() <= RECV_BUFFER_SIZE + 2 * arrived,
                "{} bytes of buffer for {arrived} received",
                buf.capacity()
            );
        }
        assert!(reads < 200, "{reads} reads for 8 MiB");
        // A frame that is almost whole asks only for what it lacks.
        assert_eq!(read_room(1 << 20, (1 << 20) - 10, 3), 3);
    }
}

//! A framed connection over a blocking stream socket (TCP or Unix): the
//! blocking driver of [`Session`] (PROXY header, verify, handshake, frames,
//! end of stream), for threaded servers, clients and adopted descriptors.
//!
//! Thread safety: sends are serialised by one lock and receives by another,
//! so two threads sending never interleave frames, and one thread may
//! receive while another sends. Timeouts are deadlines: a send or receive
//! with a timeout finishes within it or fails, however the peer dribbles.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::addr::stream::format_sockaddr;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::frame::{self, encode_header};
use crate::proto::handshake::{Role, NONCE_LEN};
use crate::proto::recv_buffer::RecvBuffer;
use crate::proto::session::{Session, SessionParams, Stage, Step};
use crate::proto::tls::{Sealer, TlsInfo};
use crate::sys::random;
use crate::sys::sockopt;
use crate::sys::{self, Interest};
use crate::util::sync::lock;
use crate::util::timeout_cell::TimeoutCell;

/// Coalesced replies are held up to this many bytes.
const COALESCE_LIMIT: usize = 64 * 1024;
/// With TLS, a large frame is sealed and written this much at a time.
const SEAL_PIECE: usize = 64 * 1024;
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

/// Why [`Connection::run_preamble`] ended the connection: the reason (none
/// when verify refused the peer). A server counts the stage it failed in
/// through `run_preamble`'s `refused`, before the peer learns of it.
pub(crate) struct PreambleFailure {
    pub error: Option<Error>,
}

/// The receiving side: the buffer bytes are read into and the session
/// that makes sense of them.
struct Receiver {
    buf: RecvBuffer,
    session: Session,
}

/// A framed connection over a blocking stream socket (threaded servers,
/// clients, adopted sockets).
pub struct Connection {
    socket: Socket,
    /// The socket's peer, and the client behind it when a PROXY protocol
    /// header named one.
    socket_peer: String,
    proxied_peer: OnceLock<String>,
    local: String,
    max_frame_size: u64,
    recv: Mutex<Receiver>,
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
    /// With TLS: encrypts what is sent (shared with the session, which
    /// decrypts what is received).
    sealer: Option<Sealer>,
    /// What the TLS handshake negotiated, once done.
    tls_info: OnceLock<TlsInfo>,
}

impl Connection {
    /// Wraps a connected stream socket and applies the config's options.
    /// No handshake and no TLS: see [`Connection::establish`]. A PROXY
    /// header is read before the first frame if the config expects one.
    pub fn new(socket: Socket, config: &Config) -> Result<Connection> {
        Connection::wrap(socket, config, Role::Server, false).map_err(|(e, _)| e)
    }

    /// Wraps the socket and runs the preamble in `role` (for a server: the
    /// PROXY header the config expects; with keys, the handshake) within
    /// the config's handshake timeout. On failure the socket is handed
    /// back, still open.
    pub fn establish(
        socket: Socket,
        config: &Config,
        role: Role,
    ) -> std::result::Result<Connection, (Error, Socket)> {
        let conn = Connection::wrap(socket, config, role, true)?;
        match conn.run_preamble(|_| true, |_, _, _| {}) {
            Ok(()) => Ok(conn),
            Err(failure) => {
                let e = failure
                    .error
                    .unwrap_or_else(|| Error::new(ErrorKind::Protocol, "the peer was refused"));
                Err((e, conn.socket))
            }
        }
    }

    /// An accepted connection of a threaded server, its preamble (see
    /// [`Connection::run_preamble`]) still to run; its one deadline starts
    /// now.
    pub(crate) fn accepted(socket: Socket, config: &Config) -> Result<Connection> {
        Connection::wrap(socket, config, Role::Server, true).map_err(|(e, _)| e)
    }

    fn wrap(
        socket: Socket,
        config: &Config,
        role: Role,
        handshake: bool,
    ) -> std::result::Result<Connection, (Error, Socket)> {
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
        let keys = if handshake {
            config.keys.clone()
        } else {
            Arc::from(Vec::new())
        };
        let nonce = if keys.is_empty() {
            Ok([0; NONCE_LEN])
        } else {
            random::nonce()
        };
        let nonce = match nonce {
            Ok(nonce) => nonce,
            Err(e) => return Err((e, socket)),
        };
        let socket_peer = format_sockaddr(&peer);
        // A client's default TLS server name, when the config was not
        // prepared for an address: the peer's IP (an adopted descriptor).
        let peer_ip = peer.as_socket().map(|a| a.ip().to_string());
        let tls = if handshake {
            config.session_tls(role, peer_ip.as_deref())
        } else {
            Ok(None)
        };
        let tls = match tls {
            Ok(tls) => tls,
            Err(e) => return Err((e, socket)),
        };
        let session = Session::new(
            SessionParams {
                role,
                keys,
                proxy: config.proxy_protocol,
                max_frame_size: config.max_frame_size,
                preamble_timeout: config.handshake_timeout,
                tls,
            },
            socket_peer.clone(),
            Instant::now(),
            nonce,
        );
        let receiver = Receiver {
            buf: RecvBuffer::with_capacity(RECV_BUFFER_SIZE),
            session,
        };
        let conn = Connection::from_parts(socket, config, receiver, socket_peer, &local);
        if let Err(e) = sockopt::apply_stream(&conn.socket, config.nodelay, config.keepalive) {
            return Err((e, conn.socket));
        }
        Ok(conn)
    }

    /// A threaded server's connection whose preamble ran on the
    /// event-driven preamble stage: the socket (made blocking again), its
    /// open session, the bytes already received past the preamble (the
    /// next frames start there) and the handshake bytes still to write
    /// (they leave before anything else). The socket options are set.
    pub(crate) fn resume(
        socket: Socket,
        config: &Config,
        session: Session,
        received: &[u8],
        peer: String,
        unsent: Vec<u8>,
    ) -> Result<Connection> {
        socket
            .set_nonblocking(false)
            .map_err(|e| Error::io("configuring the socket", &e))?;
        let socket_peer = socket
            .peer_addr()
            .map_err(|e| Error::io("the socket is not connected", &e))?;
        let local = socket
            .local_addr()
            .map_err(|e| Error::io("cannot read the socket's local address", &e))?;
        let mut buf = RecvBuffer::with_capacity(RECV_BUFFER_SIZE.max(received.len()));
        buf.extend(received);
        let tls_info = session.tls_info().cloned();
        let receiver = Receiver { buf, session };
        let socket_peer = format_sockaddr(&socket_peer);
        let proxied = (peer != socket_peer).then_some(peer);
        let conn = Connection::from_parts(socket, config, receiver, socket_peer, &local);
        if let Some(peer) = proxied {
            let _ = conn.proxied_peer.set(peer);
        }
        if let Some(info) = tls_info {
            let _ = conn.tls_info.set(info);
        }
        *lock(&conn.send_lock) = unsent;
        Ok(conn)
    }

    fn from_parts(
        socket: Socket,
        config: &Config,
        receiver: Receiver,
        socket_peer: String,
        local: &socket2::SockAddr,
    ) -> Connection {
        let sealer = receiver.session.sealer().cloned();
        let conn = Connection {
            socket_peer,
            proxied_peer: OnceLock::new(),
            local: format_sockaddr(local),
            socket,
            max_frame_size: config.max_frame_size,
            recv: Mutex::new(receiver),
            send_lock: Mutex::new(Vec::new()),
            nonblocking: AtomicBool::new(false),
            coalesce: config.coalesce_sends,
            timeout: TimeoutCell::default(),
            broken: OnceLock::new(),
            closing: AtomicBool::new(false),
            sealer,
            tls_info: OnceLock::new(),
        };
        conn.set_timeout(config.io_timeout);
        conn
    }

    /// Runs the session up to its first frame: the PROXY header (then
    /// `verify` on the client it names), the handshake, all within the
    /// session's one deadline. On failure the stream is closed.
    ///
    /// `refused` runs once when the preamble fails with a reason (not when
    /// `verify` refuses: verify counts its own), with the stage it failed
    /// in, the peer and the reason, before the peer can learn of it: before
    /// `#FAILURE#` is sent or the stream is shut down. A server counts the
    /// refusal there, so a client that saw it never reads a counter that
    /// has not caught up.
    pub(crate) fn run_preamble(
        &self,
        verify: impl FnOnce(&str) -> bool,
        refused: impl FnOnce(Stage, &str, &Error),
    ) -> std::result::Result<(), PreambleFailure> {
        let mut rx = self.lock_recv();
        let rx = &mut *rx;
        let deadline = rx.session.deadline();
        let wait = deadline.map_or(Wait::Forever, Wait::Until);
        let mut verify = Some(verify);
        let mut refused = Some(refused);
        let mut failed = |rx: &mut Receiver, e: Error| {
            // A wait that ran out is the session's deadline passing.
            let e = match (e.kind(), deadline) {
                (ErrorKind::TimedOut, Some(d)) => rx.session.timed_out(d).unwrap_or(e),
                _ => e,
            };
            let stage = rx.session.failure_stage();
            if let Some(refused) = refused.take() {
                refused(stage, self.peer_addr(), &e);
            }
            PreambleFailure { error: Some(e) }
        };
        loop {
            if let Err(e) = self.send_transmit(&mut rx.session, wait) {
                return Err(failed(rx, e));
            }
            match rx.session.poll(&mut rx.buf) {
                Ok(Step::Open) | Ok(Step::Frame(_)) => {
                    if let Some(info) = rx.session.tls_info() {
                        let _ = self.tls_info.set(info.clone());
                    }
                    // A client's last word (#WELCOME#) goes before its first frame.
                    return self
                        .send_transmit(&mut rx.session, wait)
                        .map_err(|e| failed(rx, e));
                }
                Ok(Step::Proxy { peer, verify: ask }) => {
                    if let Some(peer) = peer {
                        let _ = self.proxied_peer.set(peer);
                    }
                    if ask {
                        let ok = verify.take().is_none_or(|verify| verify(self.peer_addr()));
                        rx.session.verified(ok);
                        if !ok {
                            self.break_stream(format!("{} was refused", self.peer_addr()));
                            return Err(PreambleFailure { error: None });
                        }
                    }
                }
                Ok(Step::NeedMore(missing)) => {
                    // What the session answered leaves before we wait.
                    if let Err(e) = self.send_transmit(&mut rx.session, wait) {
                        return Err(failed(rx, e));
                    }
                    let spare = rx.buf.spare(missing.clamp(512, RECV_BUFFER_SIZE));
                    match self.read_some(spare, wait) {
                        Ok(0) => {
                            let e = self.end_of_stream(&rx.session, &rx.buf);
                            return Err(failed(rx, e));
                        }
                        Ok(n) => rx.buf.commit(n),
                        Err(e) => return Err(failed(rx, e)),
                    }
                }
                Err(e) => {
                    // Counted before the peer can hear of it.
                    let failure = failed(rx, e);
                    // Best effort: the peer learns it failed, then we close.
                    let _ = self.send_transmit(&mut rx.session, wait);
                    if let Some(e) = &failure.error {
                        self.break_stream(e.detail().to_string());
                    }
                    return Err(failure);
                }
            }
        }
    }

    /// Writes what the session has to send (handshake frames).
    fn send_transmit(&self, session: &mut Session, wait: Wait) -> Result<()> {
        if !session.wants_transmit() {
            return Ok(());
        }
        self.usable()?;
        let mut pending = lock(&self.send_lock);
        session.take_transmit(&mut pending);
        self.write_pending(&mut pending, wait)
    }

    /// Sends one frame: header and payload leave in one system call where
    /// the kernel takes them.
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        self.send_frame(payload, self.wait())
    }

    /// Receives the next frame and hands it to `f`, borrowed from the
    /// connection's buffer.
    pub fn recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.recv_frame(self.wait(), |buf, frame| f(buf.bytes(frame)))
    }

    /// Receives the next frame into `out`. A frame larger than `out` is left
    /// queued and its size reported.
    pub fn recv_into(&self, out: &mut [u8]) -> Result<RecvInto> {
        self.recv_frame(self.wait(), |buf, frame| {
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
        let Ok(rx) = self.recv.try_lock() else {
            return false;
        };
        let buf = rx.session.frame_buffer(&rx.buf);
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
    pub(crate) fn flush_within(&self, limit: Duration) {
        if self.usable().is_ok() {
            let mut held = lock(&self.send_lock);
            let _ = self.write_pending(&mut held, Wait::Until(Instant::now() + limit));
        }
    }

    /// The socket's descriptor, still owned by the connection.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
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

    /// What the TLS handshake negotiated (the peer's certificate among
    /// it); `None` without TLS or before the handshake is done.
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls_info.get()
    }

    /// Sets the timeout of each later send and receive (`None`: for ever).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        self.timeout.set(timeout);
    }

    /// The timeout of sends and receives (`None`: for ever).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.get()
    }

    /// The socket, for options (see [`crate::sys::sockopt`]); reading or writing
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

    /// Whether non-blocking mode is on.
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
        if let Some(sealer) = &self.sealer {
            // A clean TLS end (close_notify), if it goes at once.
            let mut pending = lock(&self.send_lock);
            if pending.is_empty() && self.usable().is_ok() {
                sealer.close_notify(&mut pending);
                let _ = self.write_pending(&mut pending, Wait::Never);
            }
        }
        self.break_stream(format!(
            "the connection with {} was closed locally",
            self.peer_addr()
        ));
    }

    /// Like [`Connection::close`], for a server shutting down: later calls
    /// fail with `Shutdown`.
    pub(crate) fn close_for_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Bytes of receive buffer held, for memory accounting.
    pub fn buffered_capacity(&self) -> usize {
        self.lock_recv().buf.capacity()
    }

    /// The socket, without the connection around it.
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

    /// Marks the stream unusable and closes it, so the peer sees the end too.
    fn break_stream(&self, why: String) {
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

    fn lock_recv(&self) -> MutexGuard<'_, Receiver> {
        lock(&self.recv)
    }

    fn send_frame(&self, payload: &[u8], wait: Wait) -> Result<()> {
        self.usable()?;
        let mut pending = lock(&self.send_lock);
        let header = encode_header(payload.len() as u64);
        let header = header.as_bytes();
        let total = header.len() + payload.len();
        if let Some(sealer) = &self.sealer {
            return self.send_sealed(sealer, &mut pending, header, payload, wait);
        }
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

    /// Sends one frame over TLS: sealed into records behind what is
    /// pending, then written. A record is all or nothing, so what the
    /// kernel does not take stays pending (written first next time).
    fn send_sealed(
        &self,
        sealer: &Sealer,
        pending: &mut Vec<u8>,
        header: &[u8],
        payload: &[u8],
        wait: Wait,
    ) -> Result<()> {
        let total = header.len() + payload.len();
        let coalescing =
            self.coalesce && wait != Wait::Never && pending.len() + total <= COALESCE_LIMIT;
        if !coalescing {
            // The tail of an earlier send first: if even that does not go,
            // this frame is not taken (WouldBlock).
            self.write_pending(pending, wait)?;
        }
        // A large frame is sealed a piece at a time, each written while
        // it is still in the cache (a non-blocking send seals it whole: a
        // frame once begun is always finished).
        let mut done = payload.len().min(SEAL_PIECE);
        sealer.seal(
            &[IoSlice::new(header), IoSlice::new(&payload[..done])],
            pending,
        )?;
        while done < payload.len() {
            if wait != Wait::Never {
                self.write_pending(pending, wait)?;
            }
            let end = payload.len().min(done + SEAL_PIECE);
            sealer.seal(&[IoSlice::new(&payload[done..end])], pending)?;
            done = end;
        }
        if coalescing && self.frame_waiting() {
            return Ok(());
        }
        match self.write_pending(pending, wait) {
            // Sealed and kept: the frame is taken.
            Err(e) if wait == Wait::Never && e.kind() == ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Writes `pending` (the tail of an earlier frame) as `wait` allows.
    fn write_pending(&self, pending: &mut Vec<u8>, wait: Wait) -> Result<()> {
        // What went is dropped once at the end: a large tail (a big frame
        // sealed into TLS records) is not moved down after every send().
        let mut sent = 0;
        let result = self.write_from(pending, &mut sent, wait);
        pending.drain(..sent);
        result
    }

    fn write_from(&self, pending: &[u8], sent: &mut usize, wait: Wait) -> Result<()> {
        while *sent < pending.len() {
            let rest = &pending[*sent..];
            match self
                .socket
                .send_with_flags(rest, libc::MSG_NOSIGNAL | wait.flags())
            {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.ready(Interest::Write, wait, "sending to") {
                        if wait != Wait::Never {
                            // A frame already begun cannot be taken back.
                            return Err(self.torn_send(1, 1 + rest.len(), e));
                        }
                        return Err(e);
                    }
                }
                Err(e) => {
                    return Err(self.torn_send(1, 1 + rest.len(), self.fail("sending to", &e)))
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
        deadline: Wait,
        f: impl FnOnce(&mut RecvBuffer, std::ops::Range<usize>) -> R,
    ) -> Result<R> {
        self.usable()?;
        let mut rx = self.lock_recv();
        let rx = &mut *rx;
        loop {
            let missing = match rx.session.poll(&mut rx.buf) {
                Ok(Step::Frame(frame)) => {
                    return Ok(f(rx.session.frame_buffer_mut(&mut rx.buf), frame))
                }
                Ok(Step::NeedMore(n)) => n,
                Ok(Step::Open) => {
                    if let Some(info) = rx.session.tls_info() {
                        let _ = self.tls_info.set(info.clone());
                    }
                    continue;
                }
                // A connection made with `new`: no verify.
                Ok(Step::Proxy { peer, verify }) => {
                    if let Some(peer) = peer {
                        let _ = self.proxied_peer.set(peer);
                    }
                    if verify {
                        rx.session.verified(true);
                    }
                    continue;
                }
                Err(e) => {
                    // A TLS alert for the peer, if the session has one.
                    let _ = self.send_transmit(&mut rx.session, Wait::Never);
                    // The rest of the stream cannot be found again: close it.
                    self.break_stream(if rx.session.failure_stage() == Stage::Open {
                        format!(
                            "an earlier frame from {} was refused: {e}",
                            self.peer_addr()
                        )
                    } else {
                        e.detail().to_string()
                    });
                    return Err(e);
                }
            };
            // About to wait for the peer: whatever we held goes first.
            self.flush_held()?;
            // Memory follows the bytes that arrived, not the declared length.
            let want = read_room(rx.buf.capacity(), rx.buf.pending().len(), missing);
            let spare = rx.buf.spare(want);
            let n = self.read_some(spare, deadline)?;
            if n == 0 {
                return Err(self.end_of_stream(&rx.session, &rx.buf));
            }
            rx.buf.commit(n);
        }
    }

    fn end_of_stream(&self, session: &Session, buf: &RecvBuffer) -> Error {
        if self.closing.load(Ordering::SeqCst) {
            return shutdown_error();
        }
        session.end_of_stream(buf)
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

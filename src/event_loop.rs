//! One I/O thread of the event-driven engine: an epoll instance (through
//! mio) holding its share of the connections, an inbox other threads post
//! to, and a heap of deadlines. It reads as much as the kernel has, decodes
//! every whole frame of it and calls back; it writes what was queued, many
//! frames per system call.
//!
//! Memory per idle connection stays small: reads land in one scratch buffer
//! per thread, and only a partial frame left at the end of a read is copied
//! into the connection's own buffer.

use std::io;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use rand::TryRng;
use slab::Slab;
use socket2::Socket;

use crate::address::format_sockaddr;
use crate::auth::{Handshake, Role, MAX_HANDSHAKE_FRAME, NONCE_LEN};
use crate::deadlines::Deadlines;
use crate::error::{log_refusal, Error, ErrorKind, Result};
use crate::event_conn::{EventConn, EventConnParts, EventHandler, WhenBackedUp};
use crate::proxy_protocol::{self, Parsed, ProxyMode};
use crate::recv_buffer::{Decoded, RecvBuffer};
use crate::server::{lock, Context};
use crate::sys;

const WAKER: Token = Token(usize::MAX);
/// The scratch buffer each read lands in first.
const SCRATCH_SIZE: usize = 64 * 1024;
/// Reads per readiness event before other connections get a turn.
const READS_PER_TURN: usize = 16;
/// A connection's own buffers are freed when idle and larger than this.
const KEEP_IDLE_BUFFER: usize = 64 * 1024;
/// How long a connection closed with `close()` may take to write what it
/// had queued.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// What other threads ask of an I/O thread.
pub(crate) enum Command {
    Adopt(Socket, String),
    Flush(usize, u64),
    Close(usize, u64),
    Stop,
}

/// The mailbox of an I/O thread.
pub(crate) struct Inbox {
    commands: Mutex<Vec<Command>>,
    waker: Waker,
}

thread_local! {
    /// The inbox of the I/O thread running on this thread, if any: posting
    /// to your own inbox needs no wake-up, as the loop drains it anyway.
    static OWN_INBOX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Inbox {
    pub fn post(&self, command: Command) {
        let first = {
            let mut commands = lock(&self.commands);
            commands.push(command);
            commands.len() == 1
        };
        let own = OWN_INBOX.with(|c| c.get()) == self as *const Inbox as usize;
        if first && !own {
            let _ = self.waker.wake();
        }
    }

    pub fn flush(&self, token: usize, id: u64) {
        self.post(Command::Flush(token, id));
    }

    pub fn close(&self, token: usize, id: u64) {
        self.post(Command::Close(token, id));
    }

    fn is_empty(&self) -> bool {
        lock(&self.commands).is_empty()
    }

    fn take(&self) -> Vec<Command> {
        std::mem::take(&mut *lock(&self.commands))
    }
}

/// Settings and state every I/O thread of one engine shares.
pub(crate) struct EngineShared {
    pub context: Arc<Context>,
    pub handler: Arc<dyn EventHandler>,
    /// Connections adopted and not yet closed, across threads.
    pub active: AtomicUsize,
    pub next_id: AtomicU64,
}

struct Conn {
    /// Shared with callbacks and senders; owns the socket.
    handle: Arc<EventConn>,
    /// A partial frame left over from the last read.
    recv: RecvBuffer,
    /// A PROXY protocol header still expected before the first frame.
    proxy: Option<ProxyMode>,
    handshake: Option<Handshake>,
    /// The deadline of the handshake (and of a required PROXY header).
    handshake_deadline: Instant,
    /// Frames taken from the handle's queue, being written.
    writing: Vec<u8>,
    written: usize,
    last_activity: Instant,
    read_paused: bool,
    opened: bool,
    closing_since: Option<Instant>,
}

/// Why a connection is being closed; `None` reason: asked by the owner.
type Outcome = std::result::Result<(), Option<Error>>;

pub(crate) struct IoThread {
    poll: Poll,
    inbox: Arc<Inbox>,
    shared: Arc<EngineShared>,
    conns: Slab<Conn>,
    deadlines: Deadlines,
    scratch: RecvBuffer,
    /// Connections whose reads stopped at READS_PER_TURN with data left.
    read_again: Vec<usize>,
}

impl IoThread {
    pub fn new(shared: Arc<EngineShared>) -> io::Result<IoThread> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok(IoThread {
            poll,
            inbox: Arc::new(Inbox {
                commands: Mutex::new(Vec::new()),
                waker,
            }),
            shared,
            conns: Slab::new(),
            deadlines: Deadlines::default(),
            scratch: RecvBuffer::with_capacity(SCRATCH_SIZE),
            read_again: Vec::new(),
        })
    }

    pub fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// Runs until a `Stop` command, then closes every connection.
    pub fn run(mut self) {
        OWN_INBOX.with(|c| c.set(Arc::as_ptr(&self.inbox) as usize));
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.read_again.is_empty() && self.inbox.is_empty() {
                self.deadlines
                    .next()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(std::time::Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                continue;
            }
            for event in events.iter() {
                let token = event.token().0;
                if event.token() == WAKER {
                    continue;
                }
                if event.is_read_closed() || event.is_error() {
                    self.on_readable(token, true);
                } else if event.is_readable() {
                    self.on_readable(token, false);
                }
                if event.is_writable() {
                    self.flush(token);
                }
            }
            for token in std::mem::take(&mut self.read_again) {
                self.on_readable(token, true);
            }
            if self.run_commands() {
                break;
            }
            self.expire(Instant::now());
        }
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            let shutdown = Error::new(ErrorKind::Shutdown, "the server is shutting down");
            self.close(token, Some(shutdown));
        }
    }

    /// Runs posted commands until none are left; true on `Stop`.
    fn run_commands(&mut self) -> bool {
        loop {
            let commands = self.inbox.take();
            if commands.is_empty() {
                return false;
            }
            for command in commands {
                match command {
                    Command::Adopt(socket, peer) => self.adopt(socket, peer),
                    Command::Flush(token, id) if self.is_live(token, id) => self.flush(token),
                    Command::Close(token, id) if self.is_live(token, id) => self.begin_close(token),
                    Command::Stop => return true,
                    _ => {}
                }
            }
        }
    }

    fn is_live(&self, token: usize, id: u64) -> bool {
        self.conns.get(token).is_some_and(|c| c.handle.id() == id)
    }

    fn adopt(&mut self, socket: Socket, peer: String) {
        // A socket that cannot even be registered is dropped (closed); it
        // was never opened, so no callback runs.
        if self.try_adopt(socket, peer).is_err() {
            self.release_slot();
        }
    }

    fn try_adopt(&mut self, socket: Socket, peer: String) -> Result<()> {
        let config = &self.shared.context.config;
        let fail = |doing: &str, e: io::Error| Error::io(format_args!("{doing} {peer}"), &e);
        socket
            .set_nonblocking(true)
            .map_err(|e| fail("configuring", e))?;
        let local = socket
            .local_addr()
            .map_err(|e| fail("reading the local address of", e))?;
        if local.is_ipv4() || local.is_ipv6() {
            socket
                .set_tcp_nodelay(config.nodelay)
                .map_err(|e| fail("setting TCP_NODELAY for", e))?;
            socket
                .set_keepalive(config.keepalive)
                .map_err(|e| fail("setting SO_KEEPALIVE for", e))?;
        }
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        let fd = socket.as_raw_fd();
        self.poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| fail("registering", e))?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(EventConn::new(EventConnParts {
            id,
            token,
            inbox: self.inbox.clone(),
            peer,
            local: format_sockaddr(&local),
            socket,
            max_queued: config.max_queued_bytes,
            when_backed_up: if config.close_when_backed_up {
                WhenBackedUp::Close
            } else {
                WhenBackedUp::Refuse
            },
        }));
        let now = Instant::now();
        let proxy = match config.proxy_protocol {
            ProxyMode::Off => None,
            mode => Some(mode),
        };
        entry.insert(Conn {
            handle,
            recv: RecvBuffer::default(),
            proxy,
            handshake: None,
            handshake_deadline: now + config.handshake_timeout,
            writing: Vec::new(),
            written: 0,
            last_activity: now,
            read_paused: false,
            opened: false,
            closing_since: None,
        });
        let conn = &mut self.conns[token];
        if !config.keys.is_empty() || proxy.is_some() {
            self.deadlines.push(conn.handshake_deadline, token, id);
        }
        // With a required PROXY header, everything waits for it (and for
        // verify on the client's address).
        if proxy != Some(ProxyMode::Required) {
            let outcome = start(&self.shared, conn);
            if conn.opened {
                self.arm_idle(token);
            }
            if let Err(reason) = outcome {
                self.close(token, reason);
                return Ok(());
            }
            self.flush(token);
        }
        Ok(())
    }

    /// Starts watching an opened connection for idleness, if configured.
    fn arm_idle(&mut self, token: usize) {
        if let Some(idle) = self.shared.context.config.idle_timeout {
            let conn = &self.conns[token];
            self.deadlines
                .push(conn.last_activity + idle, token, conn.handle.id());
        }
    }

    /// Reads and delivers. `drain`: read until the kernel says there is no
    /// more; otherwise a short read is taken to mean the socket is empty
    /// (saving a system call), which is true unless an end of stream is
    /// already pending behind the data, with no new edge to come.
    fn on_readable(&mut self, token: usize, drain: bool) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.read_paused || conn.closing_since.is_some() {
            return;
        }
        // A connection with no partial frame reads into the shared scratch
        // buffer; one with a partial frame continues in its own.
        let use_scratch = conn.recv.pending().is_empty();
        let mut own = std::mem::take(&mut conn.recv);
        let buf = if use_scratch {
            &mut self.scratch
        } else {
            &mut own
        };
        let was_open = conn.opened;
        let shared = &self.shared;
        let mut outcome = Ok(());
        let mut more = false;
        for turn in 0..READS_PER_TURN {
            let spare = buf.spare(16 * 1024);
            let spare_len = spare.len();
            match sys::recv(conn.handle.fd(), spare, 0) {
                Ok(0) => {
                    outcome = Err(Some(end_of_stream(conn, buf)));
                    break;
                }
                Ok(n) => {
                    buf.commit(n);
                    conn.last_activity = Instant::now();
                    outcome = dispatch(shared, conn, buf);
                    // A short read drained the socket: the next data brings a
                    // new edge. A full one may have left more behind.
                    if outcome.is_err() || conn.read_paused || (n < spare_len && !drain) {
                        break;
                    }
                    more = turn + 1 == READS_PER_TURN;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    outcome = Err(Some(Error::io(
                        format_args!("receiving from {}", conn.handle.peer_addr()),
                        &e,
                    )));
                    break;
                }
            }
        }
        if use_scratch {
            // Keep what is left of a partial frame; the scratch is the
            // thread's again.
            own.extend(self.scratch.pending());
            self.scratch.clear();
        }
        own.release_if_idle(KEEP_IDLE_BUFFER);
        conn.recv = own;
        if !was_open && conn.opened {
            self.arm_idle(token);
        }
        if more {
            self.read_again.push(token);
        }
        match outcome {
            Ok(()) => self.flush(token),
            Err(reason) => {
                // Counted before the peer can hear of it.
                if let Some(conn) = self.conns.get_mut(token) {
                    count_refusal(&self.shared.context, conn, reason.as_ref());
                }
                // Best effort: a handshake #FAILURE# reaches the peer.
                self.flush(token);
                self.close(token, reason);
            }
        }
    }

    /// Writes what is queued until done or the socket is full.
    fn flush(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        match write_queued(conn) {
            Err(e) => return self.close(token, Some(e)),
            // The socket is full: the next writable edge resumes.
            Ok(false) => return,
            Ok(true) => {}
        }
        if conn.writing.capacity() > KEEP_IDLE_BUFFER {
            conn.writing = Vec::new();
        }
        if conn.closing_since.is_some() {
            return self.close(token, None);
        }
        if conn.read_paused && conn.handle.queued_bytes() < conn.handle.max_queued() / 4 {
            conn.read_paused = false;
            self.resume_reading(token);
        }
    }

    /// Delivers frames buffered while reads were paused, then reads on.
    fn resume_reading(&mut self, token: usize) {
        let conn = &mut self.conns[token];
        let mut buf = std::mem::take(&mut conn.recv);
        let outcome = dispatch(&self.shared, conn, &mut buf);
        conn.recv = buf;
        let paused = conn.read_paused;
        match outcome {
            Ok(()) if !paused => self.on_readable(token, true),
            Ok(()) => self.flush(token),
            Err(reason) => self.close(token, reason),
        }
    }

    /// `close()` was called: stop reading, write what is queued, then close
    /// (within CLOSE_LINGER).
    fn begin_close(&mut self, token: usize) {
        let conn = &mut self.conns[token];
        if conn.closing_since.is_none() {
            let now = Instant::now();
            conn.closing_since = Some(now);
            self.deadlines
                .push(now + CLOSE_LINGER, token, conn.handle.id());
        }
        self.flush(token);
    }

    /// Removes the connection, closes its socket and reports it.
    fn close(&mut self, token: usize, reason: Option<Error>) {
        let Some(mut conn) = self.conns.try_remove(token) else {
            return;
        };
        let fd = conn.handle.fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        let context = &self.shared.context;
        // Before the peer sees the end.
        count_refusal(context, &mut conn, reason.as_ref());
        // Handles may outlive the connection (and keep the descriptor
        // open): the peer must see the end now.
        conn.handle.mark_closed();
        if conn.opened {
            let handler = &self.shared.handler;
            let _ = callback(|| handler.on_close(&conn.handle, reason.as_ref()));
            context.handled.fetch_add(1, Ordering::Relaxed);
        }
        drop(conn);
        self.release_slot();
    }

    fn release_slot(&self) {
        let before = self.shared.active.fetch_sub(1, Ordering::AcqRel);
        // The accept loop waits for a free slot only when full.
        if before >= self.shared.context.config.max_connections {
            self.shared.context.wake();
        }
    }

    /// Handles every deadline that has passed.
    fn expire(&mut self, now: Instant) {
        while let Some((token, id)) = self.deadlines.pop_due(now) {
            if !self.is_live(token, id) {
                continue;
            }
            let conn = &self.conns[token];
            let config = &self.shared.context.config;
            let (due, why) = if let Some(since) = conn.closing_since {
                (since + CLOSE_LINGER, None)
            } else if conn.handshake.is_some() || conn.proxy == Some(ProxyMode::Required) {
                let ms = config.handshake_timeout.as_millis();
                (
                    conn.handshake_deadline,
                    Some(Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "handshake with {}: timed out after {ms} ms",
                            conn.handle.peer_addr()
                        ),
                    )),
                )
            } else if let Some(idle) = config.idle_timeout {
                (
                    conn.last_activity + idle,
                    Some(Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "{} was idle for {} ms",
                            conn.handle.peer_addr(),
                            idle.as_millis()
                        ),
                    )),
                )
            } else {
                continue;
            };
            if due > now {
                self.deadlines.push(due, token, id);
            } else {
                self.close(token, why);
            }
        }
    }
}

/// Counts a connection that ends before it opened: a failed PROXY header
/// (required mode) or handshake. Called before the peer can see the outcome
/// (the #FAILURE# written, or the close), so a client that saw it never
/// reads a counter that has not caught up; once only, as it forgets what
/// it counted. `reason` goes to the refusal log.
fn count_refusal(context: &Context, conn: &mut Conn, reason: Option<&Error>) {
    if conn.opened {
        return;
    }
    let counter = if conn.proxy == Some(ProxyMode::Required) {
        &context.proxy_failures
    } else if conn.handshake.is_some() {
        &context.handshake_failures
    } else {
        return;
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if let Some(e) = reason {
        log_refusal(conn.handle.peer_addr(), e.kind(), e.detail());
    }
    // The connection is ending: nothing reads these any more but this.
    conn.proxy = None;
    conn.handshake = None;
}

/// Decodes and delivers every whole frame in `buf`: handshake messages to
/// the handshake, then frames to `on_frame`. Stops early when the
/// connection's send queue is backed up (reads pause) or it is closing.
fn dispatch(shared: &EngineShared, conn: &mut Conn, buf: &mut RecvBuffer) -> Outcome {
    let config = &shared.context.config;
    if conn.proxy.is_some() && !take_proxy_header(shared, conn, buf)? {
        return Ok(());
    }
    loop {
        if conn.read_paused || conn.handle.close_requested() {
            return Ok(());
        }
        let max = if conn.handshake.is_some() {
            MAX_HANDSHAKE_FRAME
        } else {
            config.max_frame_size
        };
        let frame = match buf.next_frame(max) {
            Ok(Decoded::Frame(frame)) => frame,
            Ok(Decoded::NeedMore(_)) => return Ok(()),
            Err(e) => {
                return Err(Some(
                    e.context(format!("receiving from {}", conn.handle.peer_addr())),
                ))
            }
        };
        if let Some(hs) = &mut conn.handshake {
            let step = hs.receive(buf.bytes(frame));
            while let Some(msg) = hs.poll_transmit() {
                conn.handle.queue_internal(&msg);
            }
            step.map_err(|e| {
                Some(e.context(format!("handshake with {}", conn.handle.peer_addr())))
            })?;
            if hs.is_done() {
                conn.handshake = None;
                open(shared, conn)?;
            }
        } else {
            let handler = &shared.handler;
            let handle = &conn.handle;
            let payload = buf.bytes(frame);
            callback(|| handler.on_frame(handle, payload))?;
        }
        if conn.handle.queued_bytes() >= conn.handle.max_queued() / 2 {
            conn.read_paused = true;
        }
    }
}

/// Consumes the PROXY protocol header at the start of `buf`: `false` while
/// more bytes are needed. In required mode, verify runs on the address it
/// names, then the handshake starts.
fn take_proxy_header(
    shared: &EngineShared,
    conn: &mut Conn,
    buf: &mut RecvBuffer,
) -> std::result::Result<bool, Option<Error>> {
    let Some(mode) = conn.proxy else {
        return Ok(true);
    };
    let peer = conn.handle.peer_addr().to_string();
    match proxy_protocol::parse(buf.pending()) {
        Ok(Parsed::NeedMore) => return Ok(false),
        Ok(Parsed::Header { len, source }) => {
            buf.consume(len);
            if let Some(source) = source {
                conn.handle.set_proxied_peer(format!("tcp://{source}"));
            }
        }
        Ok(Parsed::Absent) if mode == ProxyMode::Optional => {}
        Ok(Parsed::Absent) => {
            return Err(Some(Error::new(
                ErrorKind::Protocol,
                format!("{peer} sent no PROXY protocol header, which this server requires"),
            )))
        }
        Err(e) => return Err(Some(e.context(format!("connection from {peer}")))),
    }
    conn.proxy = None;
    if mode == ProxyMode::Required {
        if !shared.context.verify(conn.handle.peer_addr()) {
            return Err(None);
        }
        start(shared, conn)?;
    }
    Ok(true)
}

/// Starts a connection: the handshake when there are keys (its challenge
/// queued), else it is open at once.
fn start(shared: &EngineShared, conn: &mut Conn) -> Outcome {
    let keys = &shared.context.config.keys;
    if keys.is_empty() {
        return open(shared, conn);
    }
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::SysRng.try_fill_bytes(&mut nonce).map_err(|e| {
        Some(Error::new(
            ErrorKind::Io,
            format!("the OS random source failed: {e}"),
        ))
    })?;
    let mut hs = Handshake::new(Role::Server, keys.clone(), nonce);
    while let Some(msg) = hs.poll_transmit() {
        conn.handle.queue_internal(&msg);
    }
    conn.handshake = Some(hs);
    Ok(())
}

/// Writes the connection's queued frames until all are written (`true`)
/// or the socket is full (`false`).
fn write_queued(conn: &mut Conn) -> Result<bool> {
    loop {
        if conn.written == conn.writing.len() {
            conn.writing.clear();
            conn.written = 0;
            conn.handle.take_queued(&mut conn.writing);
            if conn.writing.is_empty() {
                return Ok(true);
            }
        }
        let rest = &conn.writing[conn.written..];
        match conn
            .handle
            .socket()
            .send_with_flags(rest, libc::MSG_NOSIGNAL)
        {
            Ok(n) => {
                conn.written += n;
                conn.handle.written(conn.writing.len() - conn.written);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::io(
                    format_args!("sending to {}", conn.handle.peer_addr()),
                    &e,
                ))
            }
        }
    }
}

/// The handshake is done (or there is none): the connection is open.
fn open(shared: &EngineShared, conn: &mut Conn) -> Outcome {
    conn.opened = true;
    let handler = &shared.handler;
    let handle = &conn.handle;
    callback(|| handler.on_open(handle))
}

/// Runs a user callback; a panic closes the connection instead of killing
/// the I/O thread.
fn callback(f: impl FnOnce()) -> Outcome {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        Some(Error::new(
            ErrorKind::Panic,
            "a callback panicked; its connection was closed",
        ))
    })
}

fn end_of_stream(conn: &Conn, buf: &RecvBuffer) -> Error {
    let peer = conn.handle.peer_addr();
    if buf.pending().is_empty() {
        Error::new(ErrorKind::Closed, format!("{peer} closed the connection"))
    } else {
        Error::new(
            ErrorKind::TruncatedFrame,
            format!(
                "{peer} closed the connection in the middle of a frame: {} bytes received",
                buf.pending().len()
            ),
        )
    }
}

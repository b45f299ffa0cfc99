//! One I/O thread of the event-driven engine: an epoll instance (through
//! mio) holding its share of the connections, its [`Inbox`], and a heap of
//! deadlines (its state is in `state`). This file holds the loop, adopting,
//! reading and closing; the protocol phases are in `dispatch`, writing and
//! backpressure in `writer`, the timers in `timers`.
//!
//! Memory per idle connection stays small: reads land in one scratch buffer
//! per thread, and only a partial frame left at the end of a read is copied
//! into the connection's own buffer.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::Socket;

use crate::addr::stream::format_sockaddr;
use crate::config::Config;
use crate::error::{log_refusal, Error, ErrorKind, Result};
use crate::proto::handshake::{Role, NONCE_LEN};
use crate::proto::recv_buffer::RecvBuffer;
use crate::proto::session::{Session, SessionParams, Stage};
use crate::server::driver::{Context, Preambled};
use crate::server::event::conn::{EventConn, EventConnParts, WhenBackedUp};
use crate::server::event::deadlines::Deadlines;
use crate::server::event::dialer::DIAL_BASE;
use crate::server::event::dispatch::{dispatch, Budget};
use crate::server::event::handler::callback;
use crate::server::event::inbox::{Command, Inbox, OWN_INBOX};
use crate::server::event::state::{
    Conn, EngineShared, IoThread, NoOutside, Outside, EVENTS_PER_TURN, KEEP_IDLE_BUFFER,
    OUTSIDE_TOKENS, PREAMBLE_READ, READS_PER_TURN, SCRATCH_SIZE, SMALL_PARTIAL, WAKER,
};
use crate::sys::{self, random, sockopt};

impl IoThread {
    pub fn new(shared: Arc<EngineShared>) -> io::Result<IoThread> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok(IoThread {
            poll,
            inbox: Arc::new(Inbox::new(waker)),
            shared,
            conns: Slab::new(),
            deadlines: Deadlines::default(),
            scratch: RecvBuffer::with_capacity(SCRATCH_SIZE),
            read_again: Vec::new(),
            dials: Default::default(),
        })
    }

    pub fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// Runs until a `Stop` command, then closes every connection.
    pub fn run(mut self) {
        OWN_INBOX.with(|c| c.set(Arc::as_ptr(&self.inbox) as usize));
        let mut events = Events::with_capacity(EVENTS_PER_TURN);
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Some(stop) = self.turn(&mut events, timeout, &mut NoOutside) {
                if stop {
                    break;
                }
            } else {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        self.close_all();
    }

    /// How long the next poll may wait: zero while work is left over from
    /// the last turn (a connection's spent share, posted commands), else
    /// until the next deadline (`None`: none).
    pub(super) fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.read_again.is_empty() && self.inbox.is_empty() {
            self.deadlines
                .next()
                .map(|d| d.saturating_duration_since(now))
        } else {
            Some(Duration::ZERO)
        }
    }

    /// One turn of the loop, shared by the I/O threads and the embedded
    /// engine: poll (at most `timeout`), the ready connections, the
    /// `outside` sources' events and work, the connections whose share ran
    /// out last turn, posted commands, then the deadlines. `Some(true)` on
    /// `Stop`; `None` when the poll failed (other than EINTR).
    pub(super) fn turn(
        &mut self,
        events: &mut Events,
        timeout: Option<Duration>,
        outside: &mut dyn Outside,
    ) -> Option<bool> {
        if let Err(e) = self.poll.poll(events, timeout) {
            return (e.kind() == io::ErrorKind::Interrupted).then_some(false);
        }
        for event in events.iter() {
            let token = event.token();
            if token == WAKER {
                continue;
            }
            if token.0 >= OUTSIDE_TOKENS {
                outside.ready(token);
                continue;
            }
            if token.0 >= DIAL_BASE {
                self.on_dial_event(token.0);
                continue;
            }
            if event.is_read_closed() || event.is_error() {
                self.on_readable(token.0, true);
            } else if event.is_readable() {
                self.on_readable(token.0, false);
            }
            if event.is_writable() {
                self.flush(token.0);
            }
        }
        outside.work();
        for token in std::mem::take(&mut self.read_again) {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.read_again = false;
            }
            self.on_readable(token, true);
        }
        if self.run_commands() {
            return Some(true);
        }
        self.expire(Instant::now());
        Some(false)
    }

    /// Closes every connection: the server is shutting down.
    pub(super) fn close_all(&mut self) {
        let tokens: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for token in tokens {
            let shutdown = Error::new(ErrorKind::Shutdown, "the server is shutting down");
            self.close(token, Some(shutdown));
        }
    }

    /// Runs posted commands until none are left; true on `Stop`.
    pub(super) fn run_commands(&mut self) -> bool {
        loop {
            let commands = self.inbox.take();
            if commands.is_empty() {
                return false;
            }
            for command in commands {
                match command {
                    Command::Adopt(socket, peer) => self.adopt(socket, peer),
                    Command::Flush(token, id) if self.is_live(token, id) => self.flush(token),
                    Command::Close(token, id) if self.is_live(token, id) => {
                        self.begin_close(token, None)
                    }
                    Command::Dial(op, dialer) => self.dial_op(op, dialer),
                    Command::Stop => return true,
                    _ => {}
                }
            }
        }
    }

    pub(super) fn is_live(&self, token: usize, id: u64) -> bool {
        self.conns.get(token).is_some_and(|c| c.handle.id() == id)
    }

    pub(super) fn adopt(&mut self, socket: Socket, peer: String) {
        // A socket that cannot even be registered is dropped (closed); it
        // was never opened, so no callback runs.
        if self.try_adopt(socket, peer).is_err() {
            self.release_slot();
        }
    }

    pub(super) fn try_adopt(&mut self, socket: Socket, peer: String) -> Result<()> {
        let shared = self.shared.clone();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.open_stream(socket, peer, Role::Server, &shared.context.config, id)
    }

    /// Makes `socket` (connected) a connection of this thread, as `role`,
    /// with `config`'s settings, known as `id`: accepted ones and dialed
    /// ones (`dialing`) alike.
    pub(super) fn open_stream(
        &mut self,
        socket: Socket,
        peer: String,
        role: Role,
        config: &Config,
        id: u64,
    ) -> Result<()> {
        let fail = |doing: &str, e: io::Error| Error::io(format_args!("{doing} {peer}"), &e);
        socket
            .set_nonblocking(true)
            .map_err(|e| fail("configuring", e))?;
        let local = socket
            .local_addr()
            .map_err(|e| fail("reading the local address of", e))?;
        sockopt::apply_stream(&socket, config.nodelay, config.keepalive)?;
        let nonce = if config.keys.is_empty() {
            [0; NONCE_LEN]
        } else {
            random::nonce()?
        };
        let now = Instant::now();
        let session = Session::new(
            SessionParams {
                role,
                keys: config.keys.clone(),
                proxy: config.proxy_protocol,
                max_frame_size: config.max_frame_size,
                preamble_timeout: config.handshake_timeout,
                tls: config.session_tls(role, None)?,
            },
            peer.clone(),
            now,
            nonce,
        );
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
        let handle = Arc::new(EventConn::new(EventConnParts {
            id,
            token,
            inbox: self.inbox.clone(),
            peer,
            local: format_sockaddr(&local),
            socket,
            max_queued: config.max_queued_bytes,
            tls: session.is_tls(),
            when_backed_up: if config.close_when_backed_up {
                WhenBackedUp::Close
            } else {
                WhenBackedUp::Refuse
            },
        }));
        entry.insert(Conn {
            handle,
            recv: RecvBuffer::default(),
            session,
            writing: Vec::new(),
            sealing: None,
            written: 0,
            last_activity: now,
            read_paused: false,
            closing_since: None,
            close_reason: None,
            read_again: false,
            // A dialed connection that fails is the dialer's to report,
            // not a refusal of a client.
            refusal_counted: role == Role::Client,
        });
        let conn = &mut self.conns[token];
        if let Some(deadline) = conn.session.deadline() {
            self.deadlines.push(deadline, token, id);
        }
        // The session starts: a challenge to send, or open at once (and
        // with a required PROXY header, nothing until it comes).
        let mut buf = std::mem::take(&mut conn.recv);
        let outcome = dispatch(&self.shared, conn, &mut buf, &mut Budget::per_turn());
        conn.recv = buf;
        if outcome.is_ok() && self.is_handed_over(token) {
            self.hand_over(token);
            return Ok(());
        }
        let conn = &mut self.conns[token];
        if conn.session.was_opened() {
            self.arm_idle(token);
        }
        if let Err(reason) = outcome {
            self.close(token, reason);
            return Ok(());
        }
        self.flush(token);
        Ok(())
    }

    /// Reads and delivers. `drain`: read until the kernel says there is no
    /// more; otherwise a short read is taken to mean the socket is empty
    /// (saving a system call), which is true unless an end of stream is
    /// already pending behind the data, with no new edge to come.
    pub(super) fn on_readable(&mut self, token: usize, drain: bool) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.read_paused || conn.closing_since.is_some() {
            return;
        }
        // A connection with no partial frame, or a small one, reads into the
        // shared scratch buffer; one with a larger one continues in its own.
        let use_scratch = conn.recv.pending().len() <= SMALL_PARTIAL;
        let mut own = std::mem::take(&mut conn.recv);
        if use_scratch {
            // A small partial frame moves to the scratch, so the
            // connection's own buffer never holds more than what is left.
            self.scratch.extend(own.pending());
            own.clear();
        }
        let buf = if use_scratch {
            &mut self.scratch
        } else {
            &mut own
        };
        let was_open = conn.session.was_opened();
        let shared = &self.shared;
        let mut budget = Budget::per_turn();
        // Frames left over from the last turn go first.
        // (With TLS they wait decrypted in the session, the socket's
        // bytes all taken.)
        let mut outcome = if buf.pending().is_empty() && !conn.session.holds_plaintext() {
            Ok(())
        } else {
            dispatch(shared, conn, buf, &mut budget)
        };
        let mut end = None;
        let mut more = false;
        // Before the handshake a frame is at most a few hundred bytes: a
        // partial one must not cost a full read's worth of buffer.
        // (A TLS handshake's messages are larger: a certificate chain.)
        let read_size = if was_open || conn.session.is_tls() {
            16 * 1024
        } else {
            PREAMBLE_READ
        };
        // No reading once its share is spent on what was buffered.
        let reads = if outcome.is_ok() && budget.left() && !conn.read_paused {
            READS_PER_TURN
        } else {
            0
        };
        for turn in 0..reads {
            let spare = buf.spare(read_size);
            let spare_len = spare.len();
            match sys::recv(conn.handle.fd(), spare, 0) {
                Ok(0) => {
                    end = Some(conn.session.end_of_stream(buf));
                    break;
                }
                Ok(n) => {
                    buf.commit(n);
                    conn.last_activity = Instant::now();
                    outcome = dispatch(shared, conn, buf, &mut budget);
                    // A short read drained the socket: the next data brings a
                    // new edge. A full one may have left more behind.
                    if outcome.is_err() || conn.read_paused || (n < spare_len && !drain) {
                        break;
                    }
                    if !budget.left() {
                        // Its share is spent: the rest waits for its next turn.
                        more = true;
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
        // Decrypted bytes pass through the session's own buffer: an idle
        // connection keeps none of it beyond a small one.
        conn.session.release_if_idle(SMALL_PARTIAL * 4);
        let handed_over = self.shared.hand_over.is_some()
            && outcome.is_ok()
            && conn.session.was_opened()
            && conn.closing_since.is_none();
        if handed_over {
            return self.hand_over(token);
        }
        // Spent before reading (frames left over from the last turn).
        let spent_early = !budget.left() && outcome.is_ok() && !conn.read_paused;
        if !was_open && conn.session.was_opened() {
            self.arm_idle(token);
        }
        let conn = &mut self.conns[token];
        if (more || spent_early) && end.is_none() && !conn.read_again {
            // Once per turn, however often it was called in this one.
            conn.read_again = true;
            self.read_again.push(token);
        }
        match (outcome, end) {
            // The peer's end of stream (a half-close, often): every frame
            // received was delivered; what the replies queued is written
            // before the close, as after close().
            (Ok(()), Some(reason)) if self.conns[token].session.was_opened() => {
                self.begin_close(token, Some(reason))
            }
            (Ok(()), Some(reason)) => {
                // Counted before the peer can see the outcome.
                count_refusal(&self.shared.context, &mut self.conns[token], Some(&reason));
                self.flush(token);
                self.close(token, Some(reason));
            }
            (Ok(()), None) => self.flush(token),
            (Err(reason), _) => {
                // Counted before the peer can hear of it.
                count_refusal(
                    &self.shared.context,
                    &mut self.conns[token],
                    reason.as_ref(),
                );
                // Best effort: a handshake #FAILURE# reaches the peer.
                self.flush(token);
                self.close(token, reason);
            }
        }
    }

    /// On a threaded server's preamble stage: the connection's preamble is
    /// done and it leaves for a handler thread.
    fn is_handed_over(&self, token: usize) -> bool {
        self.shared.hand_over.is_some()
            && self
                .conns
                .get(token)
                .is_some_and(|c| c.session.was_opened() && c.closing_since.is_none())
    }

    /// Hands a connection whose preamble succeeded to the threaded driver:
    /// the socket, the open session, the bytes received past the preamble
    /// and what is still to be written of the handshake. Nothing is
    /// counted here: the connection goes on, on its handler thread.
    pub(super) fn hand_over(&mut self, token: usize) {
        let Some(mut conn) = self.conns.try_remove(token) else {
            return;
        };
        let fd = conn.handle.fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        let mut unsent = conn.writing.split_off(conn.written);
        if let (Some(s), Some(sealer)) = (conn.sealing.take(), conn.session.sealer()) {
            // Plaintext taken from the queue and not sealed yet.
            if s.sealed < s.plain.len() {
                let _ = sealer.seal(&[io::IoSlice::new(&s.plain[s.sealed..])], &mut unsent);
            }
        }
        let mut queued = Vec::new();
        conn.handle.take_queued(&mut queued);
        match conn.session.sealer() {
            // With TLS the queue holds plaintext.
            Some(sealer) if !queued.is_empty() => {
                let _ = sealer.seal(&[io::IoSlice::new(&queued)], &mut unsent);
            }
            _ => unsent.extend_from_slice(&queued),
        }
        // A descriptor of its own: the handle (and its socket) goes with the
        // I/O thread's record, without a shutdown.
        let socket = conn.handle.socket().try_clone();
        let peer = conn.handle.peer_addr().to_string();
        drop(conn.handle);
        if let (Ok(socket), Some(hand_over)) = (socket, &self.shared.hand_over) {
            hand_over(Preambled {
                socket,
                session: conn.session,
                received: conn.recv,
                peer,
                unsent,
            });
        }
        // After: the connection is counted on its thread (or parked) by now.
        self.release_slot();
    }

    /// Removes the connection, closes its socket and reports it.
    pub(super) fn close(&mut self, token: usize, reason: Option<Error>) {
        let Some(mut conn) = self.conns.try_remove(token) else {
            return;
        };
        let fd = conn.handle.fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        let context = &self.shared.context;
        // Before the peer sees the end.
        count_refusal(context, &mut conn, reason.as_ref());
        let all_written = conn.written == conn.writing.len()
            && conn
                .sealing
                .as_ref()
                .is_none_or(|s| s.sealed == s.plain.len());
        if let Some(sealer) = conn.session.sealer().filter(|_| all_written) {
            // A clean end the peer can tell from a cut one, if the socket
            // takes it at once (one small record). Also when the preamble
            // failed: a plaintext client that waits for a challenge on this
            // TLS port (until our deadline) then reads a TLS record, and
            // can say the port speaks TLS rather than "closed".
            let mut notify = Vec::new();
            sealer.close_notify(&mut notify);
            let _ = conn
                .handle
                .socket()
                .send_with_flags(&notify, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
        }
        // Handles may outlive the connection (and keep the descriptor
        // open): the peer must see the end now.
        conn.handle.mark_closed();
        let opened = conn.session.was_opened();
        if opened {
            let handler = &self.shared.handler;
            let _ = callback(|| handler.on_close(&conn.handle, reason.as_ref()));
            context.handled.fetch_add(1, Ordering::Relaxed);
        }
        let id = conn.handle.id();
        drop(conn);
        self.release_slot();
        self.dialed_closed(id, opened, reason.as_ref());
    }

    pub(super) fn release_slot(&self) {
        let before = self.shared.active.fetch_sub(1, Ordering::AcqRel);
        // The accept loop waits for a free slot only when full.
        if before >= self.shared.context.config.max_connections {
            self.shared.context.wake();
        }
    }
}

/// Counts a connection that ends before it opened: a failed PROXY header
/// (required mode) or handshake, by the stage the session failed in (a
/// verify refusal counts itself). Called before the peer can see the
/// outcome (the #FAILURE# written, or the close), so a client that saw it
/// never reads a counter that has not caught up; once only. `reason` goes
/// to the refusal log.
fn count_refusal(context: &Context, conn: &mut Conn, reason: Option<&Error>) {
    if conn.refusal_counted || conn.session.was_opened() {
        return;
    }
    let counter = match conn.session.failure_stage() {
        Stage::Proxy => &context.proxy_failures,
        Stage::Tls | Stage::Handshake => &context.handshake_failures,
        _ => return,
    };
    conn.refusal_counted = true;
    counter.fetch_add(1, Ordering::Relaxed);
    if let Some(e) = reason {
        log_refusal(conn.handle.peer_addr(), e.kind(), e.detail());
    }
}

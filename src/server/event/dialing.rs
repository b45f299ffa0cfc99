//! What an I/O thread does for its dialers (see `dialer`): the
//! non-blocking connect, its WRITABLE event and `SO_ERROR`, the connect
//! deadline, the connection through `open_stream` as the client, and the
//! backoff before the next attempt.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use socket2::{Domain, Socket, Type};

use crate::addr::stream::format_sockaddr;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::Role;
use crate::server::event::dialer::{DialOp, DialState, Dialer, DIAL_BASE};
use crate::server::event::state::IoThread;

impl IoThread {
    /// A dialer's request, from its inbox.
    pub(super) fn dial_op(&mut self, op: DialOp, dialer: Arc<Dialer>) {
        match op {
            DialOp::Start => self.dial(dialer),
            DialOp::Reconnect => self.dial_reconnect(dialer),
            DialOp::Close => self.dial_close(dialer),
        }
    }

    /// `Command::Dial`: starts dialing.
    fn dial(&mut self, dialer: Arc<Dialer>) {
        if dialer.is_closed() {
            return;
        }
        let backoff = dialer.backoff().0;
        let index = self
            .dials
            .entries
            .insert(crate::server::event::dialer::DialEntry {
                dialer,
                state: DialState::Waiting,
                backoff,
                timer: 0,
            });
        self.dial_attempt(index, 0);
    }

    /// Connects to the targets from `from` on; when none is left, waits.
    fn dial_attempt(&mut self, index: usize, from: usize) {
        let Some(entry) = self.dials.entries.get(index) else {
            return;
        };
        let dialer = entry.dialer.clone();
        if dialer.is_closed() {
            self.dials.entries.remove(index);
            return;
        }
        for target in from..dialer.targets.len() {
            match self.start_connect(index, &dialer, target) {
                Ok(Some(socket)) => return self.dial_connected(index, socket, target),
                Ok(None) => return,
                Err(e) => dialer.report(&e),
            }
        }
        self.dial_retry(index);
    }

    /// A non-blocking connect: the socket if it connected at once, `None`
    /// if it is in progress (watched for WRITABLE, with a deadline).
    fn start_connect(
        &mut self,
        index: usize,
        dialer: &Arc<Dialer>,
        target: usize,
    ) -> Result<Option<Socket>> {
        let addr = &dialer.targets[target];
        let failed = |e: io::Error| connect_error(dialer, &e);
        let domain = if addr.is_unix() {
            Domain::UNIX
        } else {
            addr.domain()
        };
        let socket = Socket::new(domain, Type::STREAM.cloexec(), None).map_err(failed)?;
        socket.set_nonblocking(true).map_err(failed)?;
        match socket.connect(addr) {
            Ok(()) => return Ok(Some(socket)),
            Err(e) if in_progress(&e) => {}
            Err(e) => return Err(failed(e)),
        }
        let fd = socket.as_raw_fd();
        self.poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                Token(DIAL_BASE + index),
                Interest::WRITABLE,
            )
            .map_err(failed)?;
        let timer = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.deadlines.push(
            Instant::now() + dialer.config.connect_timeout,
            DIAL_BASE + index,
            timer,
        );
        let entry = &mut self.dials.entries[index];
        entry.timer = timer;
        entry.state = DialState::Connecting { socket, target };
        Ok(None)
    }

    /// A readiness event on a connecting socket: connected, or failed.
    pub(super) fn on_dial_event(&mut self, token: usize) {
        let index = token - DIAL_BASE;
        let Some(entry) = self.dials.entries.get_mut(index) else {
            return;
        };
        let DialState::Connecting { socket, target } = &entry.state else {
            return;
        };
        let target = *target;
        let outcome = match socket.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match socket.peer_addr() {
                Ok(_) => Ok(()),
                // Not yet (a spurious wake-up): wait for the next event.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Err(e),
            },
        };
        let DialState::Connecting { socket, .. } =
            std::mem::replace(&mut entry.state, DialState::Waiting)
        else {
            return;
        };
        let fd = socket.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        match outcome {
            Ok(()) => self.dial_connected(index, socket, target),
            Err(e) => {
                let dialer = entry.dialer.clone();
                drop(socket);
                dialer.report(&connect_error(&dialer, &e));
                self.dial_attempt(index, target + 1);
            }
        }
    }

    /// The TCP (or Unix) connect is done: the session runs as the client.
    fn dial_connected(&mut self, index: usize, socket: Socket, target: usize) {
        let dialer = self.dials.entries[index].dialer.clone();
        self.dials.entries[index].state = DialState::Connected;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        // Before the session starts: a connection that fails (or closes)
        // at once still finds its dialer.
        self.dials.by_conn.insert(id, index);
        self.shared.active.fetch_add(1, Ordering::AcqRel);
        let peer = format_sockaddr(&dialer.targets[target]);
        if let Err(e) = self.open_stream(socket, peer, Role::Client, &dialer.config, id) {
            self.release_slot();
            self.dials.by_conn.remove(&id);
            dialer.report(&e);
            self.dial_retry(index);
        }
    }

    /// Called by `close` for every connection: a dialed one that failed
    /// before opening is reported; either way its dialer dials again.
    pub(super) fn dialed_closed(&mut self, id: u64, opened: bool, reason: Option<&Error>) {
        if self.dials.by_conn.is_empty() {
            return;
        }
        let Some(index) = self.dials.by_conn.remove(&id) else {
            return;
        };
        let Some(entry) = self.dials.entries.get_mut(index) else {
            return;
        };
        let dialer = entry.dialer.clone();
        if opened {
            // It worked: the next failure waits the shortest again.
            entry.backoff = dialer.backoff().0;
        } else {
            let e = reason.cloned().unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Closed,
                    format!(
                        "the connection to {} closed during its handshake",
                        dialer.addr
                    ),
                )
            });
            dialer.report(&e);
        }
        self.dial_retry(index);
    }

    /// Waits the backoff before the next attempt, or ends the dialer when
    /// it is closed or dials once.
    fn dial_retry(&mut self, index: usize) {
        let Some(entry) = self.dials.entries.get_mut(index) else {
            return;
        };
        let (min, max) = entry.dialer.backoff();
        if entry.dialer.is_closed() || min.is_zero() {
            self.dials.entries.remove(index);
            return;
        }
        let wait = entry.backoff.clamp(min, max);
        entry.backoff = (wait * 2).min(max);
        entry.state = DialState::Waiting;
        let timer = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        entry.timer = timer;
        self.deadlines
            .push(Instant::now() + wait, DIAL_BASE + index, timer);
    }

    /// A dialer's deadline passed: a connect timed out, or a backoff ended.
    pub(super) fn dial_timer(&mut self, token: usize, timer: u64) {
        let index = token - DIAL_BASE;
        let Some(entry) = self.dials.entries.get_mut(index) else {
            return;
        };
        if entry.timer != timer {
            return;
        }
        match std::mem::replace(&mut entry.state, DialState::Waiting) {
            DialState::Connecting { socket, target } => {
                let fd = socket.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                drop(socket);
                let dialer = entry.dialer.clone();
                let ms = dialer.config.connect_timeout.as_millis();
                dialer.report(&Error::new(
                    ErrorKind::TimedOut,
                    format!("connecting to {}: timed out after {ms} ms", dialer.addr),
                ));
                self.dial_attempt(index, target + 1);
            }
            DialState::Waiting => {
                // Reconnect may have been turned off meanwhile.
                if entry.dialer.backoff().0.is_zero() {
                    self.dials.entries.remove(index);
                } else {
                    self.dial_attempt(index, 0);
                }
            }
            DialState::Connected => entry.state = DialState::Connected,
        }
    }

    /// `Command::DialReconnect`: new backoff settings; a wait under way
    /// restarts with the new `min`.
    fn dial_reconnect(&mut self, dialer: Arc<Dialer>) {
        let Some(index) = self.dial_index(&dialer) else {
            return;
        };
        let (min, max) = dialer.backoff();
        let entry = &mut self.dials.entries[index];
        let waiting = matches!(entry.state, DialState::Waiting);
        if min.is_zero() {
            // Once: no next attempt (one under way still finishes).
            if waiting {
                self.dials.entries.remove(index);
            }
            return;
        }
        if !waiting {
            entry.backoff = min;
            return;
        }
        entry.backoff = (min * 2).min(max);
        let timer = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        entry.timer = timer;
        self.deadlines
            .push(Instant::now() + min, DIAL_BASE + index, timer);
    }

    fn dial_index(&self, dialer: &Arc<Dialer>) -> Option<usize> {
        self.dials
            .entries
            .iter()
            .find(|(_, e)| Arc::ptr_eq(&e.dialer, dialer))
            .map(|(i, _)| i)
    }

    /// `Command::DialClose`: stops the dialer; its connection closes (with
    /// `on_close`, once) after writing what it had queued.
    fn dial_close(&mut self, dialer: Arc<Dialer>) {
        let Some(index) = self.dial_index(&dialer) else {
            return;
        };
        let conn = self
            .dials
            .by_conn
            .iter()
            .find(|(_, i)| **i == index)
            .map(|(id, _)| *id);
        let entry = self.dials.entries.remove(index);
        if let DialState::Connecting { socket, .. } = &entry.state {
            let fd = socket.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        let Some(id) = conn else {
            return;
        };
        self.dials.by_conn.remove(&id);
        let token = self
            .conns
            .iter()
            .find(|(_, c)| c.handle.id() == id)
            .map(|(t, _)| t);
        if let Some(token) = token {
            self.begin_close(token, None);
        }
    }
}

/// A connect that failed, named by its address; a Unix path with nobody
/// there is refused.
fn connect_error(dialer: &Dialer, e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        return Error::new(
            ErrorKind::ConnectionRefused,
            format!("connecting to {}: no socket at that path", dialer.addr),
        );
    }
    Error::io(format_args!("connecting to {}", dialer.addr), e)
}

/// A non-blocking connect that goes on in the background.
fn in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock
}

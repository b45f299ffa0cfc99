//! Embedded mode's engine: the event engine with no thread of its own. One
//! [`IoThread`] (its poller, connections, timers) is driven from the
//! caller's loop: the caller watches its poller's descriptor ([`fd`]),
//! waits at most [`timeout`], and calls [`process`], which runs one turn
//! without waiting; every callback runs there, on the caller's thread.
//!
//! mio registers every descriptor edge-triggered: an edge taken from the
//! poller and not acted on would never show again. So a turn that leaves
//! work behind (a poll that filled its event buffer, a connection whose
//! fair share ran out, posted commands) makes [`timeout`] zero, for
//! level- and edge-triggered callers alike.
//!
//! [`fd`]: EmbeddedEngine::fd
//! [`timeout`]: EmbeddedEngine::timeout
//! [`process`]: EmbeddedEngine::process

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use socket2::Socket;

use crate::error::{Error, ErrorKind, Result};
use crate::server::driver::{Context, Driver};
use crate::server::event::handler::EventHandler;
use crate::server::event::inbox::{Command, Inbox, OWN_INBOX};
use crate::server::event::state::{EngineShared, IoThread, Outside};

/// Readiness events one `process` takes: fewer than an I/O thread's, so a
/// turn returns to the caller's loop sooner (its other work waits less);
/// what is left shows as a timeout of zero.
const EVENTS_PER_PROCESS: usize = 256;

/// The event engine on the caller's thread.
pub(crate) struct EmbeddedEngine {
    shared: Arc<EngineShared>,
    inbox: Arc<Inbox>,
    fd: RawFd,
    core: Mutex<Core>,
    /// Every connection was closed for good (the server shut down).
    stopped: AtomicBool,
}

struct Core {
    io: IoThread,
    events: Events,
    /// The last poll filled `events`: more may be ready, with no new edge.
    filled: bool,
}

impl EmbeddedEngine {
    pub fn new(context: Arc<Context>, handler: Arc<dyn EventHandler>) -> Result<EmbeddedEngine> {
        let shared = Arc::new(EngineShared::new(context, handler, None));
        let io = IoThread::new(shared.clone())
            .map_err(|e| Error::io("creating the embedded server's poller", &e))?;
        Ok(EmbeddedEngine {
            shared,
            inbox: io.inbox(),
            fd: io.poll.as_raw_fd(),
            core: Mutex::new(Core {
                io,
                events: Events::with_capacity(EVENTS_PER_PROCESS),
                filled: false,
            }),
            stopped: AtomicBool::new(false),
        })
    }

    /// Adds a source that is not a connection (readable, edge-triggered):
    /// its events go to the [`Outside`] given to [`EmbeddedEngine::process`].
    pub fn register(&self, fd: RawFd, token: Token) -> Result<()> {
        let core = self.lock()?;
        core.io
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
            .map_err(|e| Error::io("registering with the embedded server's poller", &e))
    }

    /// Its mailbox: where dials and other threads' requests go.
    pub fn inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// The poller's descriptor (an epoll instance): readable when a turn
    /// has something to do.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Whether the engine closed everything for good.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Runs one turn without waiting: ready connections, `outside`'s
    /// sources and work, what the last turn left, posted commands, the
    /// deadlines due. Every callback runs here.
    pub fn process(&self, outside: &mut dyn Outside) -> Result<()> {
        if self.is_stopped() {
            return Err(shut_down());
        }
        let mut guard = self.lock()?;
        let core = &mut *guard;
        // Posting to our own inbox (a callback's send or close) needs no
        // wake-up: this turn drains it.
        let own = Arc::as_ptr(&self.inbox) as usize;
        let before = OWN_INBOX.with(|c| c.replace(own));
        let stop = core
            .io
            .turn(&mut core.events, Some(Duration::ZERO), outside);
        core.filled = core.events.iter().count() >= EVENTS_PER_PROCESS;
        OWN_INBOX.with(|c| c.set(before));
        match stop {
            Some(true) => {
                drop(guard);
                self.stop()?;
                Err(shut_down())
            }
            Some(false) => Ok(()),
            None => Err(Error::io(
                "polling the embedded server's poller",
                &std::io::Error::last_os_error(),
            )),
        }
    }

    /// How long the caller may wait before the next [`EmbeddedEngine::process`]
    /// if its descriptor stays quiet: zero when work is ready now, `None`
    /// when no deadline is set. Asked during a turn (from a callback, or
    /// another thread), zero: the turn may leave work.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        match self.core.try_lock() {
            Ok(core) if core.filled => Some(Duration::ZERO),
            Ok(core) => core.io.next_timeout(now),
            Err(TryLockError::Poisoned(_)) | Err(TryLockError::WouldBlock) => Some(Duration::ZERO),
        }
    }

    /// Closes every connection (`on_close` with a shutdown), on this
    /// thread, and stops for good. Not from inside a turn (a callback):
    /// `InvalidState`, and the turn's caller closes them after the turn.
    pub fn stop(&self) -> Result<()> {
        let mut core = self.lock()?;
        let own = Arc::as_ptr(&self.inbox) as usize;
        let before = OWN_INBOX.with(|c| c.replace(own));
        // A callback of a closing connection may post again: bounded, as
        // nothing opens any more.
        for _ in 0..16 {
            core.io.close_all();
            let commands = self.inbox.take();
            if commands.is_empty() && core.io.conns.is_empty() {
                break;
            }
            for command in commands {
                if let Command::Adopt(socket, _) = command {
                    // Never opened: no callback.
                    drop::<Socket>(socket);
                    core.io.release_slot();
                }
            }
        }
        OWN_INBOX.with(|c| c.set(before));
        self.stopped.store(true, Ordering::Release);
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Core>> {
        match self.core.try_lock() {
            Ok(core) => Ok(core),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Error::new(
                ErrorKind::InvalidState,
                "the embedded server is already processing: process was called from \
                 inside one of its callbacks, or from two threads at once",
            )),
        }
    }
}

fn shut_down() -> Error {
    Error::new(
        ErrorKind::Shutdown,
        "the embedded server was shut down; create a new one to serve again",
    )
}

impl Driver for Arc<EmbeddedEngine> {
    fn adopt(&self, socket: Socket, peer: String) {
        self.shared.active.fetch_add(1, Ordering::AcqRel);
        self.inbox.post(Command::Adopt(socket, peer));
    }

    fn running(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    fn close_all(&self) {
        // From inside a callback (freeing the server there is not
        // allowed) nothing can be closed here; the turn goes on.
        let _ = self.stop();
    }
}

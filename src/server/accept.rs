//! A server: one accept loop, shared by both ways of serving connections.
//!
//! - Threaded (like `socketserver.ThreadingTCPServer`, with a cap): a
//!   [`Handler`] runs on a thread per connection ([`crate::server::threaded`]).
//! - Event-driven: an [`EventHandler`] gets callbacks from a few I/O
//!   threads that hold every connection ([`crate::server::event::engine`]).
//!
//! The accept loop verifies each peer, applies the connection cap and hands
//! the socket to the driver (threaded: to its event-driven preamble stage
//! first, with its own bound on pending preambles). `serve` runs it on the
//! caller's thread, `start` on a thread of its own; `shutdown` (any thread)
//! stops it at once by writing to a wake-up socket the loop polls beside
//! the listener. Past
//! `max_connections`, new connections wait in the kernel's accept queue
//! (`WhenFull::Wait`) or are accepted and closed (`WhenFull::Refuse`).
//! Dropping the server stops the loop, closes every live connection, joins
//! every thread and closes the listener.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::addr::stream::{format_sockaddr, Address};
use crate::config::{Config, WhenFull};
use crate::error::{log_refusal, Error, ErrorKind, Result};
use crate::proto::handshake::Role;
use crate::server::driver::{Context, Driver};
pub use crate::server::driver::{Handler, Stats, Verify};
use crate::server::event::engine::EventEngine;
use crate::server::event::EventHandler;
use crate::server::threaded::Threaded;
use crate::stream::listener::Listener;
use crate::sys;
use crate::util::sync::lock;

/// How long the accept loop rests after an accept error such as EMFILE
/// (out of file descriptors), instead of spinning on a readable listener.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How connections will be served, chosen before the server starts.
enum Mode {
    Threaded(Option<Handler>),
    Event(Arc<dyn EventHandler>),
}

/// A listening stream server, threaded (a handler per connection on its
/// own thread) or event-driven (an [`crate::EventHandler`] on I/O threads).
pub struct Server {
    shared: Arc<Shared>,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Serving,
    Stopped,
}

struct Shared {
    context: Arc<Context>,
    listener: Listener,
    mode: Mutex<Mode>,
    driver: OnceLock<Box<dyn Driver>>,
    state: Mutex<State>,
    stopping: AtomicBool,
    wake_rx: UnixStream,
    accepted: AtomicU64,
}

impl Server {
    /// Parses `addr`, binds and listens; port 0 picks a free port, which
    /// [`Server::local_addr`] tells.
    pub fn bind(addr: &str, config: &Config) -> Result<Server> {
        let addr = Address::parse(addr)?;
        // TLS settings are checked (a certificate is needed) and built
        // once, for every connection of this server.
        let mut config = config.clone();
        if addr.is_tls() {
            config.set_tls(true);
        }
        config.prepare_tls(Role::Server, None)?;
        let listener = Listener::bind(&addr, &config)?;
        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| Error::io("creating the wake-up socket pair", &e))?;
        for end in [&wake_tx, &wake_rx] {
            end.set_nonblocking(true)
                .map_err(|e| Error::io("configuring the wake-up socket pair", &e))?;
        }
        Ok(Server {
            shared: Arc::new(Shared {
                context: Arc::new(Context::new(config, wake_tx)),
                listener,
                mode: Mutex::new(Mode::Threaded(None)),
                driver: OnceLock::new(),
                state: Mutex::new(State::Idle),
                stopping: AtomicBool::new(false),
                wake_rx,
                accepted: AtomicU64::new(0),
            }),
            accept_thread: Mutex::new(None),
        })
    }

    /// The bound address, e.g. "tcp://127.0.0.1:40123".
    pub fn local_addr(&self) -> &str {
        self.shared.listener.local_addr()
    }

    /// Serves each connection on a thread of its own with `handler`. Only
    /// before the server starts.
    pub fn set_handler(&self, handler: Handler) -> Result<()> {
        self.shared.expect_idle("set the handler")?;
        *lock(&self.shared.mode) = Mode::Threaded(Some(handler));
        Ok(())
    }

    /// Serves every connection from the event-driven I/O threads with
    /// `handler`'s callbacks. Only before the server starts.
    pub fn set_event_handler(&self, handler: Arc<dyn EventHandler>) -> Result<()> {
        self.shared.expect_idle("set the event handler")?;
        *lock(&self.shared.mode) = Mode::Event(handler);
        Ok(())
    }

    /// Sets the verify callback; only before the server starts.
    pub fn set_verify(&self, verify: Verify) -> Result<()> {
        self.shared.expect_idle("set the verify callback")?;
        self.shared.context.set_verify(verify);
        Ok(())
    }

    /// Runs the accept loop on this thread until [`Server::shutdown`].
    pub fn serve(&self) -> Result<()> {
        self.shared.begin()?;
        self.shared.accept_loop();
        Ok(())
    }

    /// Runs the accept loop on a background thread and returns.
    pub fn start(&self) -> Result<()> {
        self.shared.begin()?;
        let shared = self.shared.clone();
        let thread = thread::Builder::new()
            .name("sockserv-accept".into())
            .spawn(move || shared.accept_loop())
            .map_err(|e| {
                *lock(&self.shared.state) = State::Stopped;
                Error::io("starting the accept thread", &e)
            })?;
        *lock(&self.accept_thread) = Some(thread);
        Ok(())
    }

    /// Stops accepting, from any thread, and returns at once: the listener
    /// stops listening (new clients are refused, queued ones reset). Live
    /// connections go on until they end or the server is dropped.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // On Linux, shutting down a listening socket's read side makes the
        // kernel refuse new connections, for TCP and Unix alike.
        let _ = self
            .shared
            .listener
            .socket()
            .shutdown(std::net::Shutdown::Read);
        {
            let mut state = lock(&self.shared.state);
            if *state == State::Idle {
                *state = State::Stopped;
            }
        }
        self.shared.context.wake();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            accepted: s.accepted.load(Ordering::Relaxed),
            active: s.driver.get().map_or(0, |d| d.active()) as u64,
            refused_by_verify: s.context.refused_by_verify.load(Ordering::Relaxed),
            refused_when_full: s.context.refused_when_full.load(Ordering::Relaxed),
            handshake_failures: s.context.handshake_failures.load(Ordering::Relaxed),
            proxy_failures: s.context.proxy_failures.load(Ordering::Relaxed),
            handled: s.context.handled.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(thread) = lock(&self.accept_thread).take() {
            let _ = thread.join();
        }
        if let Some(driver) = self.shared.driver.get() {
            driver.close_all();
        }
    }
}

impl Shared {
    fn expect_idle(&self, doing: &str) -> Result<()> {
        if *lock(&self.state) != State::Idle {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!("cannot {doing}: the server has already started or stopped"),
            ));
        }
        Ok(())
    }

    /// Moves from idle to serving and creates the driver for the mode.
    fn begin(&self) -> Result<()> {
        let mut state = lock(&self.state);
        match *state {
            State::Idle => {}
            State::Serving => {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    "the server is already serving",
                ))
            }
            State::Stopped => {
                return Err(Error::new(
                    ErrorKind::Shutdown,
                    "the server was shut down; create a new one to serve again",
                ))
            }
        }
        let driver: Box<dyn Driver> = match &*lock(&self.mode) {
            Mode::Threaded(handler) => {
                Box::new(Threaded::new(self.context.clone(), handler.clone())?)
            }
            Mode::Event(handler) => {
                Box::new(EventEngine::start(self.context.clone(), handler.clone())?)
            }
        };
        let _ = self.driver.set(driver);
        *state = State::Serving;
        Ok(())
    }

    fn driver(&self) -> &dyn Driver {
        self.driver
            .get()
            .expect("begin() created the driver")
            .as_ref()
    }

    fn drain_wakeups(&self) {
        let mut sink = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
    }

    fn is_full(&self) -> bool {
        self.driver().running() >= self.context.config.max_connections
    }

    fn accept_loop(&self) {
        let listen_fd = self.listener.socket().as_raw_fd();
        let wake_fd = self.wake_rx.as_raw_fd();
        while !self.stopping.load(Ordering::SeqCst) {
            // When full and waiting, leave new connections in the kernel's
            // queue: poll only the wake-up socket until a slot frees.
            let listening = !(self.is_full() && self.context.config.when_full == WhenFull::Wait);
            let fds: &[i32] = if listening {
                &[wake_fd, listen_fd]
            } else {
                &[wake_fd]
            };
            let ready = match sys::wait_readable(fds, None) {
                Ok(ready) => ready,
                Err(_) => {
                    thread::sleep(ACCEPT_ERROR_PAUSE);
                    continue;
                }
            };
            if ready[0] {
                self.drain_wakeups();
            }
            if listening && ready[1] {
                self.accept_ready();
            }
        }
        *lock(&self.state) = State::Stopped;
    }

    /// Accepts until the queue is empty, the server is full or stopping.
    fn accept_ready(&self) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let full = self.is_full();
            if full && self.context.config.when_full == WhenFull::Wait {
                return;
            }
            match self.listener.socket().accept() {
                Ok((socket, peer)) => {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    self.admit(socket, format_sockaddr(&peer), full);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // EMFILE, ENFILE, ENOBUFS...: pause (waking for shutdown)
                    // rather than spin on a listener that stays readable.
                    let _ = sys::wait_readable(
                        &[self.wake_rx.as_raw_fd()],
                        Some(Instant::now() + ACCEPT_ERROR_PAUSE),
                    );
                    return;
                }
            }
        }
    }

    /// Verify, the cap, then the driver. A refused socket is dropped, which
    /// closes it.
    fn admit(&self, socket: Socket, peer: String, full: bool) {
        if !self.context.verify_after_proxy_header() && !self.context.verify(&peer) {
            return;
        }
        // Past the cap, or (threaded) past the bound on pending preambles:
        // the newest is refused.
        let pending_full = !full && self.driver().pending_full();
        if full || pending_full {
            self.context
                .refused_when_full
                .fetch_add(1, Ordering::Relaxed);
            let config = &self.context.config;
            let why = if full {
                format!(
                    "refused: the server already serves its maximum of {} connections",
                    config.max_connections
                )
            } else {
                format!(
                    "refused: {} handshakes are already pending",
                    config.max_pending_handshakes
                )
            };
            log_refusal(&peer, ErrorKind::ConnectionRefused, &why);
            return;
        }
        self.driver().adopt(socket, peer);
    }
}

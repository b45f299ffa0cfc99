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
//!
//! Embedded (`start_embedded`): no thread at all. The listener and the
//! wake-up socket join the poller of an [`EmbeddedEngine`], which the
//! caller's loop watches (`loop_fd`, `loop_timeout`) and drives
//! (`process`): accepting happens there, a bounded number per turn, with
//! the same verify, cap and refusals as the accept loop.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
use crate::server::event::embedded::EmbeddedEngine;
use crate::server::event::engine::EventEngine;
use crate::server::event::inbox::Inbox;
use crate::server::event::{DialErrorHandler, Dialer, EventHandler, Outside, OUTSIDE_TOKENS};
use crate::server::threaded::Threaded;
use crate::stream::listener::Listener;
use crate::sys;
use crate::util::sync::lock;

/// How long the accept loop rests after an accept error such as EMFILE
/// (out of file descriptors), instead of spinning on a readable listener.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Embedded mode: connections accepted per `process` at most, so a burst
/// of clients cannot hold the caller's loop (the rest wait for the next
/// turn, which `loop_timeout` makes immediate).
const ACCEPTS_PER_TURN: usize = 64;
/// The embedded poller's tokens for the listener and the wake-up socket.
const LISTENER: mio::Token = mio::Token(OUTSIDE_TOKENS);
const WAKE_UP: mio::Token = mio::Token(OUTSIDE_TOKENS + 1);

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
    /// None: an unbound server (outgoing connections only).
    listener: Option<Listener>,
    mode: Mutex<Mode>,
    driver: OnceLock<Box<dyn Driver>>,
    state: Mutex<State>,
    stopping: AtomicBool,
    wake_rx: UnixStream,
    accepted: AtomicU64,
    embedded: OnceLock<Embedded>,
    /// The event engine's inboxes once it runs: where dials go.
    dial_inboxes: OnceLock<Vec<Arc<Inbox>>>,
    next_dial: AtomicUsize,
    dial_error: Arc<Mutex<Option<DialErrorHandler>>>,
}

/// An embedded server's engine and its listener's state between turns.
struct Embedded {
    engine: Arc<EmbeddedEngine>,
    /// The listener had an edge and has not said WouldBlock since.
    listener_ready: AtomicBool,
    /// After an accept error (EMFILE...): no accepting until then.
    paused_until: Mutex<Option<Instant>>,
}

/// How a run of accepts ended.
enum AcceptEnd {
    /// The kernel's queue is empty.
    Drained,
    /// The bound was reached, the server is full (and waits) or stopping:
    /// connections may be left in the queue.
    Stopped,
    /// An accept error such as EMFILE: pause before the next try.
    Error,
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
        Server::with_listener(Some(listener), &config)
    }

    /// An event engine with no listener, for outgoing connections only
    /// ([`Server::dial`]): set an event handler, start it, dial.
    /// [`Server::local_addr`] is empty.
    pub fn unbound(config: &Config) -> Result<Server> {
        Server::with_listener(None, config)
    }

    fn with_listener(listener: Option<Listener>, config: &Config) -> Result<Server> {
        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| Error::io("creating the wake-up socket pair", &e))?;
        for end in [&wake_tx, &wake_rx] {
            end.set_nonblocking(true)
                .map_err(|e| Error::io("configuring the wake-up socket pair", &e))?;
        }
        Ok(Server {
            shared: Arc::new(Shared {
                context: Arc::new(Context::new(config.clone(), wake_tx)),
                listener,
                mode: Mutex::new(Mode::Threaded(None)),
                driver: OnceLock::new(),
                state: Mutex::new(State::Idle),
                stopping: AtomicBool::new(false),
                wake_rx,
                accepted: AtomicU64::new(0),
                embedded: OnceLock::new(),
                dial_inboxes: OnceLock::new(),
                next_dial: AtomicUsize::new(0),
                dial_error: Arc::new(Mutex::new(None)),
            }),
            accept_thread: Mutex::new(None),
        })
    }

    /// The bound address, e.g. "tcp://127.0.0.1:40123".
    pub fn local_addr(&self) -> &str {
        self.shared.listener.as_ref().map_or("", |l| l.local_addr())
    }

    /// Dials `addr` (`tcp://HOST:PORT`, `tls://HOST:PORT`, `unix://PATH`) from the event
    /// engine's I/O threads, with `config` (`None`: the server's): the
    /// connection gets the event handler's callbacks like an accepted one,
    /// and is dialed again when it fails or ends (see [`Dialer`]). The name
    /// is resolved here, on the calling thread, once. Only on a started
    /// event-mode server.
    pub fn dial(&self, addr: &str, config: Option<&Config>) -> Result<Arc<Dialer>> {
        let dialer = self.new_dialer(addr, config)?;
        dialer.start();
        Ok(dialer)
    }

    /// A dialer for [`Server::dial`], not started yet (`Dialer::start`):
    /// the C API ties its handle to it first.
    pub(crate) fn new_dialer(&self, addr: &str, config: Option<&Config>) -> Result<Arc<Dialer>> {
        let Some(inboxes) = self.shared.dial_inboxes.get() else {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "cannot dial: the server is not running in event mode (set event handlers and start it first)",
            ));
        };
        if self.shared.stopping.load(Ordering::SeqCst) && self.shared.listener.is_none() {
            return Err(Error::new(
                ErrorKind::Shutdown,
                "cannot dial: the server was shut down",
            ));
        }
        let parsed = Address::parse(addr)?;
        let targets = parsed.resolve()?;
        // The server's own config serves a dialer only for what it shares
        // (keys, limits): TLS follows the address dialed.
        let config = match config {
            Some(config) => config.for_dialing(&parsed)?,
            None => {
                let mut own = self.shared.context.config.clone();
                own.set_tls(false);
                own.for_dialing(&parsed)?
            }
        };
        let i = self.shared.next_dial.fetch_add(1, Ordering::Relaxed) % inboxes.len();
        let dialer = Arc::new(Dialer::new(
            parsed.to_string(),
            targets,
            config,
            inboxes[i].clone(),
            self.shared.dial_error.clone(),
        ));
        Ok(dialer)
    }

    /// Sets the function told of each failed dial (connect or preamble), on
    /// the dialer's I/O thread; any time, for every dialer of the server.
    pub fn set_dial_error_handler(&self, handler: Option<DialErrorHandler>) {
        *lock(&self.shared.dial_error) = handler;
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
        self.shared.begin(false)?;
        self.shared.accept_loop();
        Ok(())
    }

    /// Runs the accept loop on a background thread and returns.
    pub fn start(&self) -> Result<()> {
        self.shared.begin(false)?;
        if self.shared.listener.is_none() {
            // Nothing to accept: the engine's threads are all it needs.
            return Ok(());
        }
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

    /// Serves from the caller's own event loop, with no thread of
    /// sockserv's: needs an event handler ([`Server::set_event_handler`]),
    /// instead of [`Server::serve`] or [`Server::start`]. Then watch
    /// [`Server::loop_fd`] for readability, and after each wake-up or
    /// timeout call [`Server::process`], then wait at most
    /// [`Server::loop_timeout`]: zero means more work is ready (call
    /// `process` again before sleeping). This rule holds for level- and
    /// edge-triggered loops alike.
    pub fn start_embedded(&self) -> Result<()> {
        self.shared.begin(true)
    }

    /// The descriptor an embedded server's caller watches for readability
    /// (an epoll instance; level- or edge-triggered). Never read it.
    pub fn loop_fd(&self) -> Result<std::os::fd::RawFd> {
        Ok(self.shared.embedded()?.engine.fd())
    }

    /// How long an embedded server's caller may wait for [`Server::loop_fd`]
    /// before calling [`Server::process`] anyway: `Some(ZERO)` when work is
    /// ready now (work left from the last turn, connections left in the
    /// accept queue, a shutdown to carry out), `None` when no deadline is
    /// set. `Shutdown` once `process` has closed everything.
    pub fn loop_timeout(&self) -> Result<Option<Duration>> {
        let embedded = self.shared.embedded()?;
        if embedded.engine.is_stopped() {
            return Err(shut_down());
        }
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Ok(Some(Duration::ZERO));
        }
        let now = Instant::now();
        let engine = embedded.engine.timeout(now);
        if !embedded.listener_ready.load(Ordering::Acquire) || self.shared.waits_for_slot() {
            return Ok(engine);
        }
        let accept = match *lock(&embedded.paused_until) {
            Some(until) if until > now => until - now,
            _ => Duration::ZERO,
        };
        Ok(Some(engine.map_or(accept, |t| t.min(accept))))
    }

    /// Does all the work an embedded server has ready, without waiting:
    /// accepts (a bounded number), reads and delivers (each connection its
    /// fair share), writes, runs posted sends and closes, and the deadlines
    /// due. Every callback runs here, on this thread. After
    /// [`Server::shutdown`] (a callback may call it), it closes every
    /// connection (`on_close` for each) and returns `Shutdown`, as every
    /// later call does. `InvalidState` before `start_embedded`, or when
    /// called from inside one of its own callbacks.
    pub fn process(&self) -> Result<()> {
        let embedded = self.shared.embedded()?;
        if self.shared.stopping.load(Ordering::SeqCst) && !embedded.engine.is_stopped() {
            // InvalidState from inside a callback: that turn closes them.
            embedded.engine.stop()?;
            *lock(&self.shared.state) = State::Stopped;
            return Err(shut_down());
        }
        embedded.engine.process(&mut EmbeddedAccept {
            shared: &self.shared,
            embedded,
        })?;
        if self.shared.stopping.load(Ordering::SeqCst) {
            embedded.engine.stop()?;
            *lock(&self.shared.state) = State::Stopped;
            return Err(shut_down());
        }
        Ok(())
    }

    /// Stops accepting, from any thread, and returns at once: the listener
    /// stops listening (new clients are refused, queued ones reset). Live
    /// connections go on until they end or the server is dropped.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // On Linux, shutting down a listening socket's read side makes the
        // kernel refuse new connections, for TCP and Unix alike.
        if let Some(listener) = &self.shared.listener {
            let _ = listener.socket().shutdown(std::net::Shutdown::Read);
        }
        {
            let mut state = lock(&self.shared.state);
            if *state == State::Idle || self.shared.listener.is_none() {
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

    /// Moves from idle to serving and creates the driver for the mode
    /// (`embedded`: on the caller's loop).
    fn begin(&self, embedded: bool) -> Result<()> {
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
            Mode::Threaded(_) if embedded => {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    "an embedded server needs event handlers: set them first \
                     (sockserv_server_set_event_handlers)",
                ))
            }
            Mode::Threaded(_) if self.listener.is_none() => {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    "an unbound server needs event handlers (it serves dialed connections only)",
                ))
            }
            Mode::Event(handler) if embedded => {
                let engine = Arc::new(EmbeddedEngine::new(self.context.clone(), handler.clone())?);
                if let Some(listener) = &self.listener {
                    engine.register(listener.socket().as_raw_fd(), LISTENER)?;
                }
                engine.register(self.wake_rx.as_raw_fd(), WAKE_UP)?;
                let _ = self.dial_inboxes.set(vec![engine.inbox()]);
                let _ = self.embedded.set(Embedded {
                    engine: engine.clone(),
                    // Clients may have queued before the registration.
                    listener_ready: AtomicBool::new(self.listener.is_some()),
                    paused_until: Mutex::new(None),
                });
                Box::new(engine)
            }
            Mode::Threaded(handler) => {
                Box::new(Threaded::new(self.context.clone(), handler.clone())?)
            }
            Mode::Event(handler) => {
                let engine = EventEngine::start(self.context.clone(), handler.clone())?;
                let _ = self.dial_inboxes.set(engine.inboxes());
                Box::new(engine)
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

    /// Full, and new connections wait in the kernel's queue for a slot.
    fn waits_for_slot(&self) -> bool {
        self.is_full() && self.context.config.when_full == WhenFull::Wait
    }

    fn embedded(&self) -> Result<&Embedded> {
        self.embedded.get().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidState,
                "the server is not embedded: call start_embedded first",
            )
        })
    }

    fn accept_loop(&self) {
        let Some(listener) = &self.listener else {
            // Unbound (serve): wait for shutdown.
            while !self.stopping.load(Ordering::SeqCst) {
                if sys::wait_readable(&[self.wake_rx.as_raw_fd()], None).is_err() {
                    thread::sleep(ACCEPT_ERROR_PAUSE);
                }
                self.drain_wakeups();
            }
            *lock(&self.state) = State::Stopped;
            return;
        };
        let listen_fd = listener.socket().as_raw_fd();
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
                if let AcceptEnd::Error = self.accept_ready(listener, usize::MAX) {
                    // EMFILE, ENFILE, ENOBUFS...: pause (waking for
                    // shutdown) rather than spin on a listener that stays
                    // readable.
                    let _ = sys::wait_readable(
                        &[self.wake_rx.as_raw_fd()],
                        Some(Instant::now() + ACCEPT_ERROR_PAUSE),
                    );
                }
            }
        }
        *lock(&self.state) = State::Stopped;
    }

    /// Accepts until the queue is empty, the server is full or stopping,
    /// or `max` were accepted.
    fn accept_ready(&self, listener: &Listener, max: usize) -> AcceptEnd {
        for _ in 0..max {
            if self.stopping.load(Ordering::SeqCst) {
                return AcceptEnd::Stopped;
            }
            let full = self.is_full();
            if full && self.context.config.when_full == WhenFull::Wait {
                return AcceptEnd::Stopped;
            }
            match listener.socket().accept() {
                Ok((socket, peer)) => {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    self.admit(socket, format_sockaddr(&peer), full);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return AcceptEnd::Drained,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => return AcceptEnd::Error,
            }
        }
        AcceptEnd::Stopped
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

fn shut_down() -> Error {
    Error::new(
        ErrorKind::Shutdown,
        "the server was shut down; create a new one to serve again",
    )
}

/// An embedded server's listener and wake-up socket, seen from the
/// engine's turn: edges are remembered, accepts run in `work`.
struct EmbeddedAccept<'a> {
    shared: &'a Shared,
    embedded: &'a Embedded,
}

impl Outside for EmbeddedAccept<'_> {
    fn ready(&mut self, token: mio::Token) {
        if token == LISTENER {
            self.embedded.listener_ready.store(true, Ordering::Release);
        } else if token == WAKE_UP {
            // A slot freed or a shutdown: both are looked at each turn.
            self.shared.drain_wakeups();
        }
    }

    fn work(&mut self) {
        let embedded = self.embedded;
        if !embedded.listener_ready.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        {
            let mut paused = lock(&embedded.paused_until);
            match *paused {
                Some(until) if until > now => return,
                Some(_) => *paused = None,
                None => {}
            }
        }
        let Some(listener) = &self.shared.listener else {
            return;
        };
        match self.shared.accept_ready(listener, ACCEPTS_PER_TURN) {
            AcceptEnd::Drained => embedded.listener_ready.store(false, Ordering::Release),
            AcceptEnd::Stopped => {}
            AcceptEnd::Error => *lock(&embedded.paused_until) = Some(now + ACCEPT_ERROR_PAUSE),
        }
    }
}

//! The threaded server, like `socketserver.ThreadingTCPServer` with a cap:
//! one accept loop, and one thread per connection that runs the handshake
//! and then the handler. The connection closes when the handler returns.
//!
//! - `serve` runs the accept loop on the caller's thread, `start` on a
//!   thread of its own; `shutdown` (any thread) stops the loop at once by
//!   writing to a wake-up socket the loop polls beside the listener.
//! - Past `max_connections`, new connections wait in the kernel's accept
//!   queue (`WhenFull::Wait`) or are accepted and closed (`WhenFull::Refuse`).
//! - Dropping the server stops the loop, closes every live connection (a
//!   handler blocked on it gets `Shutdown`), joins every thread and closes
//!   the listener.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::address::{format_sockaddr, Address};
use crate::auth::Role;
use crate::config::{Config, WhenFull};
use crate::conn::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::listener::Listener;
use crate::sys;

/// Runs once per authenticated connection, on that connection's thread.
pub type Handler = Arc<dyn Fn(&Arc<Connection>) + Send + Sync>;
/// Sees the peer address before anything else happens; `false` refuses.
pub type Verify = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How long the accept loop rests after an accept error such as EMFILE
/// (out of file descriptors), instead of spinning on a readable listener.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Counters a server keeps; each only grows, except `active`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    pub active: u64,
    pub refused_by_verify: u64,
    pub refused_when_full: u64,
    pub handshake_failures: u64,
    pub handled: u64,
}

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
    config: Config,
    listener: Listener,
    handler: Mutex<Option<Handler>>,
    verify: Mutex<Option<Verify>>,
    state: Mutex<State>,
    stopping: AtomicBool,
    closing_all: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    live: Mutex<Live>,
    counters: Counters,
}

#[derive(Default)]
struct Live {
    next_id: u64,
    conns: HashMap<u64, Arc<Connection>>,
    threads: HashMap<u64, JoinHandle<()>>,
    finished: Vec<u64>,
}

impl Live {
    /// Connection threads that have not ended yet.
    fn running(&self) -> usize {
        self.threads.len() - self.finished.len()
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused_by_verify: AtomicU64,
    refused_when_full: AtomicU64,
    handshake_failures: AtomicU64,
    handled: AtomicU64,
}

impl Server {
    /// Parses `addr`, binds and listens; port 0 picks a free port, which
    /// [`Server::local_addr`] tells.
    pub fn bind(addr: &str, config: &Config) -> Result<Server> {
        let addr = Address::parse(addr)?;
        let listener = Listener::bind(&addr, config)?;
        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| Error::io("creating the wake-up socket pair", &e))?;
        for end in [&wake_tx, &wake_rx] {
            end.set_nonblocking(true)
                .map_err(|e| Error::io("configuring the wake-up socket pair", &e))?;
        }
        Ok(Server {
            shared: Arc::new(Shared {
                config: config.clone(),
                listener,
                handler: Mutex::new(None),
                verify: Mutex::new(None),
                state: Mutex::new(State::Idle),
                stopping: AtomicBool::new(false),
                closing_all: AtomicBool::new(false),
                wake_tx,
                wake_rx,
                live: Mutex::new(Live::default()),
                counters: Counters::default(),
            }),
            accept_thread: Mutex::new(None),
        })
    }

    pub fn local_addr(&self) -> &str {
        self.shared.listener.local_addr()
    }

    pub fn listener_fd(&self) -> i32 {
        self.shared.listener.socket().as_raw_fd()
    }

    /// Sets the handler; only before the server starts.
    pub fn set_handler(&self, handler: Handler) -> Result<()> {
        self.shared.expect_idle("set the handler")?;
        *lock(&self.shared.handler) = Some(handler);
        Ok(())
    }

    /// Sets the verify callback; only before the server starts.
    pub fn set_verify(&self, verify: Verify) -> Result<()> {
        self.shared.expect_idle("set the verify callback")?;
        *lock(&self.shared.verify) = Some(verify);
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

    /// Stops accepting, from any thread, and returns at once. Live
    /// connections go on until their handlers return or the server is
    /// dropped.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let mut state = lock(&self.shared.state);
            if *state == State::Idle {
                *state = State::Stopped;
            }
        }
        self.shared.wake();
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            accepted: c.accepted.load(Ordering::Relaxed),
            active: lock(&self.shared.live).running() as u64,
            refused_by_verify: c.refused_by_verify.load(Ordering::Relaxed),
            refused_when_full: c.refused_when_full.load(Ordering::Relaxed),
            handshake_failures: c.handshake_failures.load(Ordering::Relaxed),
            handled: c.handled.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(thread) = lock(&self.accept_thread).take() {
            let _ = thread.join();
        }
        let shared = &self.shared;
        shared.closing_all.store(true, Ordering::SeqCst);
        let threads: Vec<JoinHandle<()>> = {
            let mut live = lock(&shared.live);
            for conn in live.conns.values() {
                conn.close_for_shutdown();
            }
            live.threads.drain().map(|(_, t)| t).collect()
        };
        let me = thread::current().id();
        for t in threads {
            // A handler that drops its own server cannot join itself.
            if t.thread().id() != me {
                let _ = t.join();
            }
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

    fn begin(&self) -> Result<()> {
        let mut state = lock(&self.state);
        match *state {
            State::Idle => {
                *state = State::Serving;
                Ok(())
            }
            State::Serving => Err(Error::new(
                ErrorKind::InvalidState,
                "the server is already serving",
            )),
            State::Stopped => Err(Error::new(
                ErrorKind::Shutdown,
                "the server was shut down; create a new one to serve again",
            )),
        }
    }

    fn wake(&self) {
        // A full socket buffer already holds a wake-up: WouldBlock is fine.
        let _ = (&self.wake_tx).write(&[1]);
    }

    fn drain_wakeups(&self) {
        let mut sink = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
    }

    fn accept_loop(self: &Arc<Self>) {
        let listen_fd = self.listener.socket().as_raw_fd();
        let wake_fd = self.wake_rx.as_raw_fd();
        while !self.stopping.load(Ordering::SeqCst) {
            self.reap_finished();
            let full = lock(&self.live).running() >= self.config.max_connections;
            // When full and waiting, leave new connections in the kernel's
            // queue: poll only the wake-up socket until a slot frees.
            let listening = !(full && self.config.when_full == WhenFull::Wait);
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
    fn accept_ready(self: &Arc<Self>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let full = lock(&self.live).running() >= self.config.max_connections;
            if full && self.config.when_full == WhenFull::Wait {
                return;
            }
            match self.listener.socket().accept() {
                Ok((socket, peer)) => {
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    self.admit(socket, &format_sockaddr(&peer), full);
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

    /// Verify, cap, then a thread for the connection.
    fn admit(self: &Arc<Self>, socket: Socket, peer: &str, full: bool) {
        let verify = lock(&self.verify).clone();
        if let Some(verify) = verify {
            if !verify(peer) {
                self.counters
                    .refused_by_verify
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if full {
            self.counters
                .refused_when_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut live = lock(&self.live);
        let id = live.next_id;
        live.next_id += 1;
        let shared = self.clone();
        let spawned = thread::Builder::new()
            .name("sockserv-conn".into())
            .spawn(move || shared.run_connection(id, socket));
        // Out of threads: the socket went down with the closure and the
        // client sees the connection close.
        if let Ok(thread) = spawned {
            live.threads.insert(id, thread);
        }
    }

    fn run_connection(self: Arc<Self>, id: u64, socket: Socket) {
        let _finish = Finish { shared: &self, id };
        let conn = match Connection::new(socket, &self.config) {
            Ok(conn) => Arc::new(conn),
            Err(_) => return,
        };
        {
            let mut live = lock(&self.live);
            live.conns.insert(id, conn.clone());
            // The server may have closed the others just before we got here.
            if self.closing_all.load(Ordering::SeqCst) {
                conn.close_for_shutdown();
            }
        }
        if !self.config.keys.is_empty() {
            let keys = self.config.keys.clone();
            if conn
                .handshake(Role::Server, keys, self.config.handshake_timeout)
                .is_err()
            {
                self.counters
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let handler = lock(&self.handler).clone();
        if let Some(handler) = handler {
            handler(&conn);
        }
        self.counters.handled.fetch_add(1, Ordering::Relaxed);
    }

    /// Joins the threads of connections that have ended.
    fn reap_finished(&self) {
        let done: Vec<JoinHandle<()>> = {
            let mut live = lock(&self.live);
            let ids = std::mem::take(&mut live.finished);
            ids.iter()
                .filter_map(|id| live.threads.remove(id))
                .collect()
        };
        for thread in done {
            let _ = thread.join();
        }
    }
}

/// Runs when a connection thread ends, however it ends (a panicking
/// handler included): unregisters the connection and wakes the accept loop
/// so it can reap the thread and take a new connection.
struct Finish<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut live = lock(&self.shared.live);
        live.conns.remove(&self.id);
        live.finished.push(self.id);
        drop(live);
        self.shared.wake();
    }
}

/// Locks, ignoring poisoning: every update under these locks is a single
/// insert, remove or assignment, so a panic cannot leave them half-done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

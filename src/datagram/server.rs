//! A datagram server, like Python's `socketserver.UDPServer` and
//! `UnixDatagramServer`: one thread receives on a bound [`DgramSocket`] and
//! runs the handler for each datagram, with its payload and its sender's
//! address; the handler answers with `send_to` on the socket it is given.
//!
//! `serve` runs the loop on the caller's thread, `start` on a thread of its
//! own; `shutdown` (any thread) stops it at once by writing to a wake-up
//! socket the loop polls beside the datagram socket. Dropping the server
//! stops the loop, joins its thread and closes the socket.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::datagram::socket::DgramSocket;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Runs for each datagram accepted, on the server's thread: the server's
/// socket (to reply on), the payload and the sender's address, both
/// borrowed for the call.
pub type DgramHandler = Arc<dyn Fn(&DgramSocket, &[u8], &str) + Send + Sync>;

/// Datagrams handled between two looks at the stop flag.
const BATCH: usize = 64;
/// How long the loop rests after an unexpected receive error, instead of
/// spinning on a socket that stays readable.
const ERROR_PAUSE: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Serving,
    Stopped,
}

/// A datagram server: one thread receives on a bound socket and runs the
/// handler for each datagram.
pub struct DgramServer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    socket: Arc<DgramSocket>,
    handler: Mutex<Option<DgramHandler>>,
    state: Mutex<State>,
    stopping: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    handler_panics: AtomicU64,
}

impl DgramServer {
    /// Binds `addr` (`udp://HOST:PORT`, `unixgram://PATH`,
    /// `unixgram://@NAME`); port 0 picks a free port, which
    /// [`DgramServer::local_addr`] tells.
    pub fn bind(addr: &str, config: &Config) -> Result<DgramServer> {
        let socket = DgramSocket::bind(addr, config)?;
        socket.set_served();
        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| Error::io("creating the wake-up socket pair", &e))?;
        for end in [&wake_tx, &wake_rx] {
            end.set_nonblocking(true)
                .map_err(|e| Error::io("configuring the wake-up socket pair", &e))?;
        }
        Ok(DgramServer {
            shared: Arc::new(Shared {
                socket: Arc::new(socket),
                handler: Mutex::new(None),
                state: Mutex::new(State::Idle),
                stopping: AtomicBool::new(false),
                wake_tx,
                wake_rx,
                handler_panics: AtomicU64::new(0),
            }),
            thread: Mutex::new(None),
        })
    }

    /// The server's socket: its address, counters, and sends from other
    /// threads (replies later than the handler, for instance).
    pub fn socket(&self) -> &Arc<DgramSocket> {
        &self.shared.socket
    }

    /// The bound address, e.g. "udp://127.0.0.1:40123".
    pub fn local_addr(&self) -> &str {
        self.shared
            .socket
            .local_addr()
            .expect("a server's socket is bound")
    }

    /// Sets the handler; only before the server starts. Without one,
    /// datagrams are received (and counted) and dropped.
    pub fn set_handler(&self, handler: DgramHandler) -> Result<()> {
        if *lock(&self.shared.state) != State::Idle {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "cannot set the handler: the server has already started or stopped",
            ));
        }
        *lock(&self.shared.handler) = Some(handler);
        Ok(())
    }

    /// Runs the loop on this thread until [`DgramServer::shutdown`].
    pub fn serve(&self) -> Result<()> {
        self.shared.begin()?;
        self.shared.serve_loop();
        Ok(())
    }

    /// Runs the loop on a background thread and returns.
    pub fn start(&self) -> Result<()> {
        self.shared.begin()?;
        let shared = self.shared.clone();
        let thread = thread::Builder::new()
            .name("sockserv-dgram".into())
            .spawn(move || shared.serve_loop())
            .map_err(|e| {
                *lock(&self.shared.state) = State::Stopped;
                Error::io("starting the datagram server thread", &e)
            })?;
        *lock(&self.thread) = Some(thread);
        Ok(())
    }

    /// Stops the loop from any thread (the handler too) and returns at once;
    /// the handler running now finishes its datagram.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let mut state = lock(&self.shared.state);
            if *state == State::Idle {
                *state = State::Stopped;
            }
        }
        // A full socket buffer already holds a wake-up: WouldBlock is fine.
        let _ = (&self.shared.wake_tx).write(&[1]);
    }

    /// Handler calls that panicked (each ended only its own datagram).
    pub fn handler_panics(&self) -> u64 {
        self.shared.handler_panics.load(Ordering::Relaxed)
    }
}

impl Drop for DgramServer {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(thread) = lock(&self.thread).take() {
            // A handler that drops its own server cannot join itself.
            if !crate::sys::is_current_thread(&thread) {
                let _ = thread.join();
            }
        }
    }
}

impl Shared {
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

    fn serve_loop(&self) {
        let handler = lock(&self.handler).clone();
        let wake_fd = self.wake_rx.as_raw_fd();
        let sock_fd = self.socket.fd().expect("a server's socket is bound");
        while !self.stopping.load(Ordering::SeqCst) {
            let ready = match sys::wait_readable(&[wake_fd, sock_fd], None) {
                Ok(ready) => ready,
                Err(_) => {
                    thread::sleep(ERROR_PAUSE);
                    continue;
                }
            };
            if ready[0] {
                let mut sink = [0u8; 64];
                while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
            }
            if ready[1] {
                self.handle_ready(handler.as_ref());
            }
        }
        *lock(&self.state) = State::Stopped;
    }

    /// Handles the datagrams queued now, up to a batch.
    fn handle_ready(&self, handler: Option<&DgramHandler>) {
        for _ in 0..BATCH {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let socket = &self.socket;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                socket.try_recv_with(|payload, from| {
                    if let Some(handler) = handler {
                        handler(socket, payload, from);
                    }
                })
            }));
            match outcome {
                Ok(Ok(Some(()))) => {}
                Ok(Ok(None)) => return,
                // Oversized datagrams are counted by the socket; the next
                // one is another sender's.
                Ok(Err(e)) if e.kind() == ErrorKind::DatagramTooLarge => {}
                Ok(Err(_)) => {
                    // Unexpected (ENOMEM...): rest, waking for shutdown.
                    let _ = sys::wait_readable(
                        &[self.wake_rx.as_raw_fd()],
                        Some(Instant::now() + ERROR_PAUSE),
                    );
                    return;
                }
                Err(_) => {
                    self.handler_panics.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

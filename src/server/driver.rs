//! What the accept loop and its drivers share: the [`Driver`] trait each
//! way of serving connections implements, and the [`Context`] (settings,
//! counters, the verify callback, the accept loop's wake-up) they are given.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use socket2::Socket;

use crate::config::Config;
use crate::error::{log_refusal, ErrorKind};
use crate::proto::proxy::ProxyMode;
use crate::proto::recv_buffer::RecvBuffer;
use crate::proto::session::Session;
use crate::stream::connection::Connection;
use crate::util::sync::lock;

/// Runs once per authenticated connection, on that connection's thread.
pub type Handler = Arc<dyn Fn(&Arc<Connection>) + Send + Sync>;
/// Sees the peer address before anything else happens; `false` refuses.
pub type Verify = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Counters a server keeps; each only grows, except `active`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted from the listener.
    pub accepted: u64,
    /// Connections being served now (threaded mode: with those still in
    /// their preamble, which hold no thread).
    pub active: u64,
    /// Connections the verify callback refused.
    pub refused_by_verify: u64,
    /// Connections closed at once because the server was full.
    pub refused_when_full: u64,
    /// Connections whose handshake failed.
    pub handshake_failures: u64,
    /// Connections closed for a missing or malformed PROXY header.
    pub proxy_failures: u64,
    /// Connections whose handler ran and returned (event mode: that opened
    /// and closed).
    pub handled: u64,
}

/// What the accept loop hands connections to.
pub(crate) trait Driver: Send + Sync {
    /// Takes an accepted connection that passed verify and the cap.
    fn adopt(&self, socket: Socket, peer: String);
    /// Connections adopted that have not ended yet (threaded: handler
    /// threads of connections past their preamble).
    fn running(&self) -> usize;
    /// Connections adopted that have not ended yet, in any stage (the
    /// `active` counter).
    fn active(&self) -> usize {
        self.running()
    }
    /// Whether a new connection would exceed the bound on connections
    /// still in their preamble (threaded mode's preamble stage).
    fn pending_full(&self) -> bool {
        false
    }
    /// Closes every live connection and joins every thread the driver has.
    fn close_all(&self);
}

/// A connection whose preamble (PROXY header, verify, handshake) passed
/// on a threaded server's event-driven preamble stage, on its way to a
/// handler thread.
pub(crate) struct Preambled {
    /// Still non-blocking.
    pub socket: Socket,
    /// Open: its frames come next.
    pub session: Session,
    /// What arrived past the preamble (the first frames, perhaps).
    pub received: RecvBuffer,
    /// The peer (the client a PROXY header named, if one did).
    pub peer: String,
    /// Handshake bytes the stage could not write yet.
    pub unsent: Vec<u8>,
}

/// How a preamble stage hands a [`Preambled`] connection on.
pub(crate) type HandOver = Box<dyn Fn(Preambled) + Send + Sync>;

/// What drivers share with the server: settings, counters, and the way to
/// tell the accept loop that a slot freed.
pub(crate) struct Context {
    pub config: Config,
    verify: Mutex<Option<Verify>>,
    pub handshake_failures: AtomicU64,
    pub proxy_failures: AtomicU64,
    pub refused_by_verify: AtomicU64,
    pub refused_when_full: AtomicU64,
    pub handled: AtomicU64,
    wake_tx: UnixStream,
}

impl Context {
    /// Runs the verify callback, if any, counting a refusal.
    pub fn verify(&self, peer: &str) -> bool {
        let verify = lock(&self.verify).clone();
        let ok = verify.is_none_or(|verify| verify(peer));
        if !ok {
            self.refused_by_verify.fetch_add(1, Ordering::Relaxed);
            log_refusal(
                peer,
                ErrorKind::ConnectionRefused,
                "refused by the server's verify callback",
            );
        }
        ok
    }

    /// Whether verify waits for the PROXY header (the client's address)
    /// instead of running at accept time.
    pub fn verify_after_proxy_header(&self) -> bool {
        self.config.proxy_protocol == ProxyMode::Required
    }

    /// Whether connections have a preamble to run (a PROXY header or a
    /// handshake) before they open.
    pub fn has_preamble(&self) -> bool {
        !self.config.keys.is_empty()
            || self.config.proxy_protocol != ProxyMode::Off
            || self.config.tls.on
    }

    /// Wakes the accept loop (a connection ended, or shutdown).
    pub fn wake(&self) {
        // A full socket buffer already holds a wake-up: WouldBlock is fine.
        let _ = (&self.wake_tx).write(&[1]);
    }
}

impl Context {
    pub fn new(config: Config, wake_tx: UnixStream) -> Context {
        Context {
            config,
            verify: Mutex::new(None),
            handshake_failures: AtomicU64::new(0),
            proxy_failures: AtomicU64::new(0),
            refused_by_verify: AtomicU64::new(0),
            refused_when_full: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            wake_tx,
        }
    }

    /// Sets the verify callback (the server checks it is still idle).
    pub fn set_verify(&self, verify: Verify) {
        *lock(&self.verify) = Some(verify);
    }
}

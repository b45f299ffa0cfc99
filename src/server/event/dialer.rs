//! Outgoing connections of the event engine: the [`Dialer`] handle and
//! what an I/O thread keeps of each (its behaviour is in `dialing`). A dialer connects on an
//! I/O thread without blocking it: a non-blocking `connect` (EINPROGRESS),
//! then the socket's WRITABLE event and its `SO_ERROR`, within the config's
//! connect timeout (a deadline in the thread's heap, like the handshake
//! one). The connected socket then becomes a connection like an accepted
//! one, through the same place (`IoThread::open_stream`), with a client
//! session (the handshake with keys): the same `on_open` / `on_frame` /
//! `on_close`.
//!
//! When a connect or a handshake fails, or an opened connection ends, the
//! dialer waits and dials again (nng's dialer semantics): capped
//! exponential backoff from `min` doubling to `max` (100 ms .. 30 s by
//! default; a connection that opened starts again from `min`); `0, 0`
//! dials once. Each failure goes to the server's dial error handler with
//! its reason (refused, timed out, handshake failed...), never as a panic.
//!
//! Names are resolved by `Server::dial` on the caller's thread, once: an
//! I/O thread never blocks on DNS.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use slab::Slab;
use socket2::{SockAddr, Socket};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::util::sync::lock;

/// Tokens (and deadline entries) from here up are dialers', not
/// connections': `DIAL_BASE + index` in the thread's [`Dials`].
pub(super) const DIAL_BASE: usize = usize::MAX / 2;

/// The default backoff: the first wait after a failure...
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// ...doubling up to this.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);

/// What a dialer asks of its I/O thread.
pub(crate) enum DialOp {
    /// Start dialing.
    Start,
    /// The backoff settings changed.
    Reconnect,
    /// Stop, closing its connection.
    Close,
}

/// Where a dialer posts its [`DialOp`]s: its I/O thread's inbox.
pub(crate) trait DialPost: Send + Sync {
    fn post_dial(&self, op: DialOp, dialer: Arc<Dialer>);
}

/// Called on the dialer's I/O thread for each failed connect or preamble.
pub type DialErrorHandler = Arc<dyn Fn(&Arc<Dialer>, &Error) + Send + Sync>;

/// An outgoing connection that a server's engine keeps dialing (see
/// [`crate::Server::dial`]). Any thread may call its methods.
pub struct Dialer {
    pub(super) addr: String,
    pub(super) targets: Vec<SockAddr>,
    pub(super) config: Config,
    /// (min, max); (0, 0): no reconnect.
    reconnect: Mutex<(Duration, Duration)>,
    closed: AtomicBool,
    inbox: Arc<dyn DialPost>,
    on_error: Arc<Mutex<Option<DialErrorHandler>>>,
    gate: Mutex<Gate>,
    gate_cv: Condvar,
    /// The C handle of this dialer (the C API's), 0 when none.
    pub(crate) slot: AtomicUsize,
}

thread_local! {
    /// The dialer whose error report runs on this thread, if any (its
    /// address): `detach` from inside it must not wait for itself. (A
    /// thread-local cell, not `thread::current()`, which allocates a handle
    /// for a C thread that is never freed.)
    static REPORTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Who is in the error callback, so that detaching waits for it.
#[derive(Default)]
struct Gate {
    detached: bool,
    /// A report is running (on some thread).
    running: bool,
}

impl Dialer {
    pub(crate) fn new(
        addr: String,
        targets: Vec<SockAddr>,
        config: Config,
        inbox: Arc<dyn DialPost>,
        on_error: Arc<Mutex<Option<DialErrorHandler>>>,
    ) -> Dialer {
        Dialer {
            addr,
            targets,
            config,
            reconnect: Mutex::new((DEFAULT_RECONNECT_MIN, DEFAULT_RECONNECT_MAX)),
            closed: AtomicBool::new(false),
            inbox,
            on_error,
            gate: Mutex::new(Gate::default()),
            gate_cv: Condvar::new(),
            slot: AtomicUsize::new(0),
        }
    }

    /// Hands the dialer to its I/O thread, which starts connecting.
    pub(crate) fn start(self: &Arc<Self>) {
        self.inbox.post_dial(DialOp::Start, self.clone());
    }

    /// The address dialed, as given (parsed and formatted).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The backoff between attempts: the first wait `min`, doubling up to
    /// `max`; `(0, 0)` dials once (no reconnect). Takes effect at once: a
    /// wait under way is cut to `min` (or, for `(0, 0)`, the dialer stops),
    /// so setting it right after dialing is as if the dialer had started
    /// with it, even when the first connect already failed.
    pub fn set_reconnect(self: &Arc<Self>, min: Duration, max: Duration) -> Result<()> {
        let off = min.is_zero() && max.is_zero();
        if !off && (min.is_zero() || max < min) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "reconnect backoff {} ms .. {} ms: want 0 < min <= max, or 0, 0 for none",
                    min.as_millis(),
                    max.as_millis()
                ),
            ));
        }
        *lock(&self.reconnect) = (min, max);
        self.inbox.post_dial(DialOp::Reconnect, self.clone());
        Ok(())
    }

    /// Stops redialing and closes its connection, if any (`on_close` runs
    /// for it once, with no reason, as after `EventConn::close`). No error
    /// is reported after this returns... once a report running on another
    /// thread has finished (see `detach`).
    pub fn close(self: &Arc<Self>) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.inbox.post_dial(DialOp::Close, self.clone());
        }
    }

    /// Whether [`Dialer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the dialer and waits for an error report running on another
    /// thread: none runs after this returns (the C handle is freed next).
    pub(crate) fn detach(self: &Arc<Self>) {
        self.close();
        // From inside this dialer's own report: it is ours, do not wait.
        let own = REPORTING.with(|r| r.get()) == Arc::as_ptr(self) as usize;
        let mut gate = lock(&self.gate);
        gate.detached = true;
        while gate.running && !own {
            gate = self.gate_cv.wait(gate).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(super) fn backoff(&self) -> (Duration, Duration) {
        *lock(&self.reconnect)
    }

    /// Runs the error handler, unless closed; a panic in it is caught.
    pub(super) fn report(self: &Arc<Self>, error: &Error) {
        let Some(handler) = lock(&self.on_error).clone() else {
            return;
        };
        {
            let mut gate = lock(&self.gate);
            if gate.detached || self.is_closed() {
                return;
            }
            gate.running = true;
        }
        let before = REPORTING.with(|r| r.replace(Arc::as_ptr(self) as usize));
        let _ = catch_unwind(AssertUnwindSafe(|| handler(self, error)));
        REPORTING.with(|r| r.set(before));
        lock(&self.gate).running = false;
        self.gate_cv.notify_all();
    }
}

/// Where one dialer is, on its I/O thread.
pub(super) enum DialState {
    /// Waiting for the connect to `targets[target]`.
    Connecting { socket: Socket, target: usize },
    /// Its connection (opening or open) is this one.
    Connected,
    /// Waiting for the backoff to pass.
    Waiting,
}

pub(super) struct DialEntry {
    pub(super) dialer: Arc<Dialer>,
    pub(super) state: DialState,
    /// The next wait after a failure.
    pub(super) backoff: Duration,
    /// The live timer: a deadline entry with another is stale.
    pub(super) timer: u64,
}

/// The dialers of one I/O thread.
#[derive(Default)]
pub(super) struct Dials {
    pub(super) entries: Slab<DialEntry>,
    /// Dialed connections (by id) and their dialer's index.
    pub(super) by_conn: HashMap<u64, usize>,
}

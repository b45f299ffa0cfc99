//! What an I/O thread keeps: the state every I/O thread of one engine
//! shares, the thread's own ([`IoThread`]: poller, connections, timers,
//! scratch buffer), and its record of each connection ([`Conn`]). The
//! behaviour is in `io_thread`, `dispatch`, `writer` and `timers`.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use mio::{Poll, Token};
use slab::Slab;

use crate::error::Error;
use crate::proto::recv_buffer::RecvBuffer;
use crate::proto::session::Session;
use crate::server::driver::{Context, HandOver};
use crate::server::event::conn::EventConn;
use crate::server::event::deadlines::Deadlines;
use crate::server::event::dialer::Dials;
use crate::server::event::handler::EventHandler;
use crate::server::event::inbox::Inbox;

pub(super) const WAKER: Token = Token(usize::MAX);
/// Tokens from here up (below [`WAKER`]) are sources of the poll that are
/// not connections (an embedded server's listener): [`Outside`]'s.
pub(crate) const OUTSIDE_TOKENS: usize = usize::MAX - 16;
/// Readiness events taken per poll.
pub(super) const EVENTS_PER_TURN: usize = 1024;
/// The scratch buffer each read lands in first.
pub(super) const SCRATCH_SIZE: usize = 64 * 1024;
/// Reads per readiness event before other connections get a turn.
pub(super) const READS_PER_TURN: usize = 16;
/// The most a read takes before the preamble is over: a handshake frame is
/// at most 268 bytes, a PROXY v1 header 107.
pub(super) const PREAMBLE_READ: usize = 512;
/// A partial frame up to this size continues in the thread's scratch
/// buffer (copied there and back); a larger one in the connection's own.
pub(super) const SMALL_PARTIAL: usize = 1024;
/// A connection's share of one turn: at most this many frames delivered
/// (a neighbour waits for at most one such share: 256 frames kept its p99
/// under 0.1 ms beside a flood, 1,024 let it reach 2-4 ms)...
pub(super) const FRAMES_PER_TURN: usize = 256;
/// ...and about this many bytes (a flood of tiny frames must not hold the
/// thread for a full read batch of them; big frames still go 256 KiB a turn).
pub(super) const BYTES_PER_TURN: usize = 256 * 1024;
/// A connection's own buffers are freed when idle and larger than this.
pub(super) const KEEP_IDLE_BUFFER: usize = 64 * 1024;
/// How long a connection closed with `close()` may take to write what it
/// had queued.
pub(super) const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// A TLS connection's plaintext frames taken from its queue, sealed a run
/// at a time (up to `sealed`).
#[derive(Default)]
pub(super) struct Sealing {
    pub(super) plain: Vec<u8>,
    pub(super) sealed: usize,
}

pub(super) struct Conn {
    /// Shared with callbacks and senders; owns the socket.
    pub(super) handle: Arc<EventConn>,
    /// A partial frame left over from the last read.
    pub(super) recv: RecvBuffer,
    /// The protocol: PROXY header, handshake, frames, end of stream.
    pub(super) session: Session,
    /// Frames taken from the handle's queue, being written (with TLS:
    /// the records they were sealed into).
    pub(super) writing: Vec<u8>,
    /// With TLS: the plaintext frames taken from the queue, being sealed.
    /// Made on the first write of a TLS connection: a plaintext one (most
    /// waiting ones) carries a pointer.
    pub(super) sealing: Option<Box<Sealing>>,
    pub(super) written: usize,
    pub(super) last_activity: Instant,
    pub(super) read_paused: bool,
    pub(super) closing_since: Option<Instant>,
    /// Why it closes once what is queued is written (the peer's end of
    /// stream); `None`: the owner's `close()`.
    /// Boxed: set on few connections, and a waiting one stays small.
    pub(super) close_reason: Option<Box<Error>>,
    /// Listed in the thread's `read_again` (its share of a turn ran out
    /// with data left).
    pub(super) read_again: bool,
    /// Its failed preamble was counted (and logged): once only.
    pub(super) refusal_counted: bool,
}

pub(crate) struct IoThread {
    pub(super) poll: Poll,
    pub(super) inbox: Arc<Inbox>,
    pub(super) shared: Arc<EngineShared>,
    pub(super) conns: Slab<Conn>,
    pub(super) deadlines: Deadlines,
    pub(super) scratch: RecvBuffer,
    /// Connections whose reads stopped at READS_PER_TURN with data left.
    pub(super) read_again: Vec<usize>,
    /// Outgoing connections being dialed (see `dialer`, `dialing`).
    pub(super) dials: Dials,
}

/// Settings and state every I/O thread of one engine shares.
pub(crate) struct EngineShared {
    pub context: Arc<Context>,
    pub handler: Arc<dyn EventHandler>,
    /// Connections adopted and not yet closed, across threads.
    pub active: AtomicUsize,
    pub next_id: AtomicU64,
    /// Set for a threaded server's preamble stage: a connection whose
    /// preamble succeeded leaves the I/O thread through it (to a handler
    /// thread) instead of opening here.
    pub hand_over: Option<HandOver>,
}

impl EngineShared {
    pub(crate) fn new(
        context: Arc<Context>,
        handler: Arc<dyn EventHandler>,
        hand_over: Option<HandOver>,
    ) -> EngineShared {
        EngineShared {
            context,
            handler,
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            hand_over,
        }
    }
}

/// Sources in an I/O thread's poll that are not connections, and work done
/// once per turn beside them (an embedded server's listener and accepts).
pub(crate) trait Outside {
    /// A source registered with a token from [`OUTSIDE_TOKENS`] up is ready.
    fn ready(&mut self, token: Token);
    /// Runs once per turn, after the ready connections and before the
    /// posted commands (so connections adopted here start this turn).
    fn work(&mut self);
}

/// An I/O thread's own loop has no outside sources.
pub(super) struct NoOutside;

impl Outside for NoOutside {
    fn ready(&mut self, _: Token) {}
    fn work(&mut self) {}
}

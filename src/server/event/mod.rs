//! The event-driven driver: a few I/O threads (mio/epoll), each holding its
//! share of the connections and calling an [`EventHandler`] back.
//!
//! - [`engine`]: starts the I/O threads and deals connections to them.
//! - [`embedded`]: the same engine with no thread: one I/O thread's turn
//!   run from the caller's loop (embedded mode).
//! - `inbox`: the mailbox other threads post commands to.
//! - `state`: what the I/O threads keep (shared, per thread, per connection).
//! - `io_thread`: one I/O thread's loop: adopting, reading, closing.
//! - `dispatch`: the protocol phases run on what was read (PROXY header,
//!   handshake, frames to `on_frame`).
//! - `writer`: writing queued frames, backpressure, close after flush.
//! - `dialer`: outgoing connections ([`Dialer`]) and what an I/O thread
//!   keeps of them; `dialing`: the non-blocking connect, the client
//!   session, reconnect with backoff.
//! - `timers` over `deadlines` (the heap): handshake, idle, linger.
//! - `handler`: the [`EventHandler`] callbacks and how they are run.
//! - [`conn`]: the connection handle callbacks and other threads send on.
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`, `config`, `stream`,
//! `server::driver`.

pub mod conn;
mod deadlines;
pub(crate) mod dialer;
mod dialing;
mod dispatch;
pub(crate) mod embedded;
pub(crate) mod engine;
mod handler;
pub(crate) mod inbox;
mod io_thread;
mod state;
mod timers;
mod writer;

pub(crate) use state::{Outside, OUTSIDE_TOKENS};

pub use conn::EventConn;
pub use dialer::{DialErrorHandler, Dialer};
pub use handler::EventHandler;

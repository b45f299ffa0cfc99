//! The event-driven driver: a few I/O threads (mio/epoll), each holding its
//! share of the connections and calling an [`EventHandler`] back.
//!
//! - [`engine`]: starts the I/O threads and deals connections to them.
//! - `io_thread`: one I/O thread's loop: reads, frames, writes, timers.
//! - `deadlines`: the timer heap of an I/O thread.
//! - [`conn`]: the connection handle callbacks and other threads send on.
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`, `config`, `stream`,
//! `server::driver`.

pub mod conn;
mod deadlines;
pub(crate) mod engine;
mod io_thread;

pub use conn::{EventConn, EventHandler};

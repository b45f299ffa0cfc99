//! Stream servers: the accept loop ([`accept`]) hands each verified
//! connection to a driver ([`driver::Driver`]): [`threaded`] (a thread per
//! connection) or [`event`] (a few I/O threads with callbacks).
//!
//! Inside, the order is `driver` -> `event` -> `threaded` -> `accept`: a
//! driver never reaches back into the accept loop, and `threaded` runs its
//! connections' preambles on `event`'s engine (its preamble stage).
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`, `config`, `stream`.

pub mod accept;
mod driver;
pub mod event;
mod threaded;

pub use accept::Server;
pub use driver::{Handler, Stats, Verify};

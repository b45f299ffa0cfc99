//! Datagram sockets and the datagram server (UDP and Unix datagram): one
//! datagram is one message, sealed with the keys when there are any.
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`, `config`.

mod open;
mod recv;
mod send;
pub mod server;
pub mod socket;
mod stats;

pub(crate) use recv::RecvInto;
pub use recv::{RecvFrom, Take};
pub use socket::DgramSocket;
pub use stats::DgramStats;

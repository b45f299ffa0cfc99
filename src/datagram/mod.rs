//! Datagram sockets and the datagram server (UDP and Unix datagram): one
//! datagram is one message, sealed with the keys when there are any.
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`, `config`.

pub mod server;
pub mod socket;

pub use socket::{DgramSocket, DgramStats, RecvFrom, Take};

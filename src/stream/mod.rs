//! Stream connections over blocking sockets (TCP and Unix): binding
//! listeners, the framed [`connection::Connection`] (threaded servers,
//! clients and adopted descriptors all use it), connecting, and adopting a
//! caller's socket.
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`, `config`.

pub mod adopt;
pub mod client;
pub mod connection;
pub mod listener;

//! Stream connections over blocking sockets (TCP and Unix): binding
//! listeners, the framed [`connection::Connection`] (threaded servers,
//! clients and adopted descriptors all use it), connecting (blocking, or
//! step by step from an event loop), and adopting a caller's socket.
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`, `config`.

pub mod adopt;
pub mod client;
pub mod connect_nb;
pub mod connection;
pub mod listener;

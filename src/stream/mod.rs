//! Stream connections over blocking sockets (TCP and Unix): binding
//! listeners, the framed [`connection::Connection`] (threaded servers,
//! clients and adopted descriptors all use it), and connecting.
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`, `config`.

pub mod client;
pub mod connection;
pub mod listener;

//! sockserv: what Python's `socketserver` and `multiprocessing.connection`
//! give Python, for C and every language with a C FFI. Framed messages over
//! stream sockets, HMAC-SHA256 challenge-response authentication, threaded
//! servers with callback handlers, and clients, behind the C ABI in [`ffi`].
//!
//! The core is sans-IO where it can be: [`frame`] and [`auth`] never touch a
//! socket; [`conn`], [`server`] and [`client`] drive them over blocking
//! sockets.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod address;
pub mod auth;
pub mod client;
pub mod config;
pub mod conn;
pub mod datagram;
pub mod datagram_address;
pub mod datagram_auth;
pub mod datagram_server;
mod deadlines;
pub mod error;
pub mod event_conn;
mod event_engine;
mod event_loop;
pub mod ffi;
pub mod frame;
pub mod listener;
pub mod mac;
pub mod proxy_protocol;
pub mod recv_buffer;
pub mod server;
mod socket_file;
pub mod sockopt;
mod sys;
pub mod systemd;
mod threaded;
mod timeout_cell;

pub use client::connect;
pub use config::Config;
pub use conn::Connection;
pub use datagram::DgramSocket;
pub use datagram_server::DgramServer;
pub use error::{set_refusal_log, Error, ErrorKind, Refusal, RefusalLog, Result};
pub use event_conn::{EventConn, EventHandler};
pub use server::Server;

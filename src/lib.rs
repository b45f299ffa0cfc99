//! sockserv: what Python's `socketserver` and `multiprocessing.connection`
//! give Python, for C and every language with a C FFI. Framed messages over
//! stream sockets, HMAC-SHA256 challenge-response authentication, threaded
//! and event-driven servers with callback handlers, clients and datagram
//! sockets, behind the C ABI in [`ffi`].
//!
//! # Layers
//!
//! Each folder of `src/` is one layer, and a layer uses only the layers
//! before it in this order (`tests/layers.rs` reads every `use crate::` and
//! fails on an import that goes the other way or on any cycle):
//!
//! 1. [`error`]: the one error type and its kinds.
//! 2. [`addr`]: address strings, parsed and formatted.
//! 3. [`sys`]: raw system calls, socket options, socket files, systemd.
//! 4. `util`: the lock helper, the timeout cell.
//! 5. [`proto`]: the protocols, sans-IO: frames, handshake, PROXY header,
//!    sealed datagrams. No sockets, clocks or OS randomness: drivers inject
//!    them.
//! 6. [`config`]: the settings.
//! 7. [`stream`]: listeners, the blocking framed connection, connect.
//! 8. `server::driver`: what the accept loop and its drivers share.
//! 9. `server::threaded`, then [`server::event`]: the two drivers.
//! 10. [`server`] (`server::accept`): the accept loop, [`Server`].
//! 11. [`datagram`]: datagram sockets and the datagram server.
//! 12. [`ffi`]: the C ABI.
//!
//! `unsafe` is denied everywhere except `sys` and `ffi`.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod addr;
pub mod config;
pub mod datagram;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod proto;
pub mod server;
pub mod stream;
#[allow(unsafe_code)]
pub mod sys;
mod util;

pub use config::Config;
pub use datagram::server::DgramServer;
pub use datagram::DgramSocket;
pub use error::{Error, ErrorKind, Result};
pub use server::event::{EventConn, EventHandler};
pub use server::Server;
pub use stream::client::connect;
pub use stream::connection::Connection;

// The module paths of the flat layout, kept so the tests, fuzz targets and
// benchmark compile unchanged; the Rust API design replaces them.
#[doc(hidden)]
pub use addr::datagram as datagram_address;
#[doc(hidden)]
pub use addr::stream as address;
#[doc(hidden)]
pub use datagram::server as datagram_server;
#[doc(hidden)]
pub use proto::handshake as auth;
#[doc(hidden)]
pub use proto::proxy as proxy_protocol;
#[doc(hidden)]
pub use proto::sealed as datagram_auth;
#[doc(hidden)]
pub use proto::{frame, mac, recv_buffer};
#[doc(hidden)]
pub use server::event::conn as event_conn;
#[doc(hidden)]
pub use stream::{client, connection as conn, listener};
#[doc(hidden)]
pub use sys::{sockopt, systemd};

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
//! 1. `error`: the one error type and its kinds.
//! 2. `addr`: address strings, parsed and formatted.
//! 3. `sys`: raw system calls, socket options, socket files, systemd.
//! 4. `util`: the lock helper, the timeout cell.
//! 5. [`proto`]: the protocols, sans-IO: frames, handshake, PROXY header,
//!    sealed datagrams. No sockets, clocks or OS randomness: drivers inject
//!    them.
//! 6. `config`: the settings.
//! 7. `stream`: listeners, the blocking framed connection, connect.
//! 8. `server::driver`: what the accept loop and its drivers share.
//! 9. `server::threaded`, then `server::event`: the two drivers.
//! 10. `server` (`server::accept`): the accept loop, [`Server`].
//! 11. `datagram`: datagram sockets and the datagram server.
//! 12. [`ffi`]: the C ABI.
//!
//! `unsafe` is denied everywhere except `sys` and `ffi`.
//!
//! # The Rust API
//!
//! The layers are private; what a Rust program uses is re-exported here:
//! [`Config`] (private fields behind validated setters), [`Server`] with a
//! [`Handler`] or an [`EventHandler`], [`connect`] and [`Connection`]
//! (or [`Connection::establish`] over a socket of yours), [`DgramSocket`]
//! and [`DgramServer`], and [`Error`]. Two modules are public as they are:
//! [`proto`], the sans-IO protocols (for other drivers, interop tests and
//! fuzzing), and [`ffi`], the C ABI.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Private by default: the Rust API is the re-exports below, the sans-IO
// protocol layer (`proto`, for other drivers, interop tests and fuzzing)
// and the C ABI (`ffi`, also callable from Rust).
mod addr;
mod config;
mod datagram;
mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod proto;
mod server;
mod stream;
#[allow(unsafe_code)]
mod sys;
mod util;

pub use config::{Config, DatagramConfig, TlsClientAuth, TlsVersion, WhenFull};
pub use datagram::server::{DgramHandler, DgramServer};
pub use datagram::{DgramSocket, DgramStats, RecvFrom, Take};
pub use error::{set_refusal_log, Error, ErrorKind, Refusal, RefusalLog, Result};
pub use proto::handshake::{Keys, Role};
pub use proto::proxy::ProxyMode;
pub use proto::tls::{PeerCert, TlsInfo};
pub use server::event::{EventConn, EventHandler};
pub use server::{Handler, Server, Stats, Verify};
pub use stream::client::connect;
pub use stream::connection::{Connection, RecvInto};

/// Internals that tests and fuzz targets outside the crate reach for, not
/// part of the API (hidden, no stability promise): the socket option
/// helpers (a test checks their defaults on a live connection) and the
/// stream address parser (a fuzz target).
#[doc(hidden)]
pub mod testing {
    pub use crate::addr::stream::{format_sockaddr, Address};
    pub use crate::sys::sockopt;
}

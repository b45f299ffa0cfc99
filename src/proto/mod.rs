//! The protocols, sans-IO: codecs and state machines that take bytes (and
//! the time and randomness they need, injected) and give bytes back. No
//! sockets, no clock, no OS randomness in here; every piece is fuzzed.
//!
//! - [`mac`]: HMAC-SHA256/384 and constant-time verification.
//! - [`frame`]: the frame header codec; [`recv_buffer`]: decoding frames
//!   out of a buffer that bytes are read into.
//! - [`proxy`]: the PROXY protocol header (v1, v2) a load balancer sends.
//! - [`handshake`]: the challenge-response handshake, either role.
//! - [`sealed`]: sealed datagrams (tag, freshness window, replay memory).
//! - [`tls`]: the TLS layer (rustls's sans-IO connection) a session runs
//!   between the PROXY header and the handshake.
//! - [`session`]: the whole life of a stream connection over the pieces
//!   above: PROXY header, verify, handshake, frames, end of stream.
//!
//! May use: `error`, `addr`, `util`.

pub mod frame;
pub mod handshake;
pub mod mac;
pub mod proxy;
pub mod recv_buffer;
pub mod sealed;
pub mod session;
pub mod tls;

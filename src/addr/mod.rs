//! Address strings: parsing and formatting `tcp://`, `unix://`, `fd://`
//! and `systemd://` (stream) and `udp://`, `unixgram://` (datagram)
//! addresses. Pure values, no sockets opened here.
//!
//! May use: `error`.

pub mod datagram;
pub mod stream;

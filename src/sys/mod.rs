//! The operating system: the few raw system calls std and socket2 lack
//! (poll with a deadline, recv with flags, adopting a descriptor), the OS
//! random source, socket
//! options, the socket files of Unix listeners, systemd socket activation.
//! With `ffi`, the only place `unsafe` is allowed.
//!
//! May use: `error`, `addr`.

pub(crate) mod random;
mod raw;
pub(crate) mod socket_file;
pub mod sockopt;
pub mod systemd;

pub(crate) use raw::*;

//! Adopting a connected stream socket the caller already has (the C API's
//! `sockserv_conn_from_fd`): checks it, then establishes a [`Connection`]
//! over it. On failure the descriptor is left open and still the caller's.

use std::os::fd::{IntoRawFd, RawFd};

use socket2::Type;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::Role;
use crate::stream::connection::Connection;
use crate::sys;

/// Takes `fd`, a connected TCP or Unix stream socket, and runs the
/// handshake in `role` when the config has keys. On success the connection
/// owns `fd`; on any failure `fd` is released again, not closed.
pub(crate) fn adopt(fd: RawFd, config: &Config, role: Role) -> Result<Connection> {
    let invalid = |detail: String| Error::new(ErrorKind::InvalidArgument, detail);
    if fd < 0 {
        return Err(invalid(format!("fd {fd} is negative")));
    }
    let socket = sys::adopt_fd(fd).map_err(|e| {
        Error::io(format_args!("fd {fd} is not a socket"), &e).with_kind(ErrorKind::InvalidArgument)
    })?;
    match socket.r#type() {
        Ok(ty) if ty == Type::STREAM => {}
        Ok(_) => {
            let _ = socket.into_raw_fd();
            return Err(invalid(format!("fd {fd} is not a stream socket")));
        }
        Err(e) => {
            let _ = socket.into_raw_fd();
            return Err(Error::io(format_args!("fd {fd} is not a socket"), &e)
                .with_kind(ErrorKind::InvalidArgument));
        }
    }
    Connection::establish(socket, config, role).map_err(|(e, socket)| {
        let _ = socket.into_raw_fd();
        e
    })
}

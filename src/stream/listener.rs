//! Binding a listening socket: TCP (IPv4, IPv6) or a Unix path. A stale Unix
//! socket file (its server gone) is replaced; a live one or a file that is
//! not a socket is left alone. The path is removed when the listener closes.

use std::io;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use crate::addr::stream::{format_sockaddr, Address};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::socket_file::{self, SocketFile};
use crate::sys::{self, systemd};

pub struct Listener {
    socket: Socket,
    local: String,
    /// The socket file we created: held only to be removed on drop.
    _socket_file: Option<SocketFile>,
}

impl Listener {
    /// Binds and listens on `addr` with the config's socket options. The
    /// socket is non-blocking: the accept loop waits with poll(2).
    pub fn bind(addr: &Address, config: &Config) -> Result<Listener> {
        let bound = match addr {
            Address::Tcp { .. } => bind_tcp(addr, config)?,
            Address::Tls { .. } => {
                // The same socket; the address says TLS is spoken on it.
                let mut bound = bind_tcp(addr, config)?;
                bound.local = bound.local.replacen("tcp://", "tls://", 1);
                bound
            }
            Address::Unix(path) => bind_unix(path, addr, config)?,
            Address::Fd(fd) => inherit(*fd, addr)?,
            Address::Systemd(which) => inherit(systemd::find(which)?, addr)?,
        };
        bound
            .socket
            .set_nonblocking(true)
            .map_err(|e| Error::io(format_args!("listening on {addr}"), &e))?;
        Ok(bound)
    }

    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The bound address, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> &str {
        &self.local
    }
}

/// Serves on an inherited listening socket: ours to close from now on, not
/// ours to unlink. On failure the descriptor is left open, still its
/// owner's.
fn inherit(fd: i32, addr: &Address) -> Result<Listener> {
    let socket = sys::adopt_fd(fd).map_err(|e| Error::io(format_args!("adopting {addr}"), &e))?;
    match check_inherited(&socket, addr) {
        Ok(local) => Ok(Listener {
            local,
            socket,
            _socket_file: None,
        }),
        Err(e) => {
            let _ = socket.into_raw_fd();
            Err(e)
        }
    }
}

/// A listening stream socket, made close-on-exec; returns its address.
fn check_inherited(socket: &Socket, addr: &Address) -> Result<String> {
    let fail = |doing: &str, e: io::Error| Error::io(format_args!("{doing} {addr}"), &e);
    let refuse = |why: &str| Error::new(ErrorKind::InvalidArgument, format!("{addr}: {why}"));
    let ty = socket.r#type().map_err(|e| fail("inspecting", e))?;
    if ty != Type::STREAM {
        return Err(refuse("not a stream socket"));
    }
    if !socket.is_listener().map_err(|e| fail("inspecting", e))? {
        return Err(refuse("not a listening socket (listen(2) was not called)"));
    }
    socket
        .set_cloexec(true)
        .map_err(|e| fail("configuring", e))?;
    let local = socket
        .local_addr()
        .map_err(|e| fail("reading the bound address of", e))?;
    Ok(format_sockaddr(&local))
}

fn bind_tcp(addr: &Address, config: &Config) -> Result<Listener> {
    let target = addr.resolve()?.remove(0);
    let fail = |doing: &str, e: io::Error| Error::io(format_args!("{doing} {addr}"), &e);
    let domain = Domain::for_address(target.as_socket().expect("TCP resolves to IP"));
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| fail("creating a socket for", e))?;
    socket
        .set_reuse_address(config.reuse_address)
        .map_err(|e| fail("setting SO_REUSEADDR for", e))?;
    socket
        .set_reuse_port(config.reuse_port)
        .map_err(|e| fail("setting SO_REUSEPORT for", e))?;
    if let (Some(only), Domain::IPV6) = (config.v6_only, domain) {
        socket
            .set_only_v6(only)
            .map_err(|e| fail("setting IPV6_V6ONLY for", e))?;
    }
    socket.bind(&target).map_err(|e| fail("binding", e))?;
    socket
        .listen(config.backlog)
        .map_err(|e| fail("listening on", e))?;
    let local = socket
        .local_addr()
        .map_err(|e| fail("reading the bound address of", e))?;
    Ok(Listener {
        local: format_sockaddr(&local),
        socket,
        _socket_file: None,
    })
}

fn bind_unix(path: &Path, addr: &Address, config: &Config) -> Result<Listener> {
    socket_file::clear_stale(
        path,
        addr,
        "another server is listening on this socket",
        |p| UnixStream::connect(p).map(drop),
    )?;
    let target = addr.resolve()?.remove(0);
    let fail = |doing: &str, e: io::Error| Error::io(format_args!("{doing} {addr}"), &e);
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
        .map_err(|e| fail("creating a socket for", e))?;
    socket.bind(&target).map_err(|e| fail("binding", e))?;
    let file = SocketFile::record(path).map_err(|e| fail("inspecting the bound path of", e))?;
    let listener = Listener {
        local: addr.to_string(),
        socket,
        _socket_file: Some(file),
    };
    listener
        .socket
        .listen(config.backlog)
        .map_err(|e| fail("listening on", e))?;
    Ok(listener)
}

//! Creating a datagram socket: binding to an address, connecting, or
//! creating it lazily on the first send in the family of the destination
//! (an ephemeral port, or an autobound abstract Unix name).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::datagram::{format_dgram_sockaddr, DgramAddress};
use crate::config::Config;
use crate::datagram::socket::{Bound, DgramSocket, RecvState};
use crate::datagram::stats::Counters;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::sealed::Opener;
use crate::sys::socket_file::{self, SocketFile};
use crate::util::sync::lock;
use crate::util::timeout_cell::TimeoutCell;

impl DgramSocket {
    pub(super) fn new(config: &Config, connected: bool) -> DgramSocket {
        let d = &config.datagram;
        let opener = (!config.keys.is_empty()).then(|| {
            let window_ms = d.window.as_millis().min(u64::MAX as u128) as u64;
            Opener::new(config.keys.clone(), window_ms, d.replay_capacity)
        });
        let socket = DgramSocket {
            bound: OnceLock::new(),
            creating: Mutex::new(()),
            connected,
            keys: config.keys.clone(),
            max_size: d.max_size,
            timeout: TimeoutCell::default(),
            recv: Mutex::new(RecvState {
                buf: Vec::new(),
                opener,
                pending: None,
                from: String::new(),
            }),
            served: AtomicBool::new(false),
            counters: Counters::default(),
        };
        socket.set_timeout(config.io_timeout);
        socket
    }

    /// A socket bound to `addr` (`udp://HOST:PORT`, `unixgram://PATH`,
    /// `unixgram://@NAME`), ready to receive and send. Port 0 picks a free
    /// port. A stale Unix socket file is replaced; the file is removed when
    /// the socket is dropped.
    pub fn bind(addr: &str, config: &Config) -> Result<DgramSocket> {
        let parsed = DgramAddress::parse(addr)?;
        let target = parsed.resolve()?.remove(0);
        let socket = DgramSocket::new(config, false);
        let bound = bind_socket(&parsed, &target, config)?;
        let _ = socket.bound.set(bound);
        Ok(socket)
    }

    /// A socket with no address yet: its first send creates it in the
    /// destination's family, on an ephemeral UDP port or, for Unix
    /// datagrams, an autobound abstract name (so replies can reach it).
    pub fn unbound(config: &Config) -> DgramSocket {
        DgramSocket::new(config, false)
    }

    /// A socket connected to `addr`: [`DgramSocket::send`] goes there, and
    /// the kernel delivers datagrams from there only. Unix sockets are
    /// autobound first, so the peer can answer.
    pub fn connect(addr: &str, config: &Config) -> Result<DgramSocket> {
        let parsed = DgramAddress::parse(addr)?;
        let target = parsed.resolve()?.remove(0);
        let socket = DgramSocket::new(config, true);
        let mut bound = create_socket(target.domain(), addr)?;
        bound
            .socket
            .connect(&target)
            .map_err(|e| send_error(&format!("connecting to {parsed}"), &e))?;
        // Connecting picked the source address: report it, not 0.0.0.0.
        if let Ok(local) = bound.socket.local_addr() {
            bound.local = format_dgram_sockaddr(&local);
        }
        let _ = socket.bound.set(bound);
        Ok(socket)
    }

    /// The socket, created now for `target`'s family if it does not exist
    /// yet.
    pub(super) fn bound_for(&self, to: &str, target: &SockAddr) -> Result<&Bound> {
        if let Some(bound) = self.bound.get() {
            return Ok(bound);
        }
        let _creating = lock(&self.creating);
        if let Some(bound) = self.bound.get() {
            return Ok(bound);
        }
        let bound = create_socket(target.domain(), to)?;
        let _ = self.bound.set(bound);
        Ok(self.bound.get().expect("just set"))
    }
}

/// Where a send may go: a literal's one address, or a name's resolved ones.
pub(super) enum Targets {
    One(SockAddr),
    Resolved(Vec<SockAddr>),
}

impl Targets {
    pub(super) fn first(&self) -> &SockAddr {
        match self {
            Targets::One(a) => a,
            Targets::Resolved(all) => &all[0],
        }
    }

    /// The first address a socket of `domain` can send to.
    pub(super) fn find(&self, domain: Domain) -> Option<&SockAddr> {
        match self {
            Targets::One(a) => (a.domain() == domain).then_some(a),
            Targets::Resolved(all) => all.iter().find(|a| a.domain() == domain),
        }
    }
}

/// Binds a new socket to `target` (the resolved `addr`).
fn bind_socket(addr: &DgramAddress, target: &SockAddr, config: &Config) -> Result<Bound> {
    let fail = |doing: &str, e: io::Error| Error::io(format_args!("{doing} {addr}"), &e);
    if let DgramAddress::UnixPath(path) = addr {
        socket_file::clear_stale(path, addr, "another socket is bound to this path", |p| {
            UnixDatagram::unbound()?.connect(p)
        })?;
    }
    let socket = Socket::new(target.domain(), Type::DGRAM, None)
        .map_err(|e| fail("creating a socket for", e))?;
    if let DgramAddress::Udp { .. } = addr {
        // SO_REUSEADDR stays off: two UDP sockets on one port would split
        // the datagrams between them (Python's UDPServer leaves it off too).
        socket
            .set_reuse_port(config.reuse_port)
            .map_err(|e| fail("setting SO_REUSEPORT for", e))?;
        // As for stream listeners: udp://[::]:PORT takes IPv4 too unless
        // told otherwise.
        if let (Some(only), Domain::IPV6) = (config.v6_only, target.domain()) {
            socket
                .set_only_v6(only)
                .map_err(|e| fail("setting IPV6_V6ONLY for", e))?;
        }
    }
    socket.bind(target).map_err(|e| fail("binding", e))?;
    let socket_file = match addr {
        DgramAddress::UnixPath(path) => {
            Some(SocketFile::record(path).map_err(|e| fail("inspecting the bound path of", e))?)
        }
        _ => None,
    };
    let local = socket
        .local_addr()
        .map_err(|e| fail("reading the bound address of", e))?;
    Ok(Bound {
        local: format_dgram_sockaddr(&local),
        domain: target.domain(),
        socket,
        _socket_file: socket_file,
    })
}

/// A socket of `domain` for talking to `to`, bound where replies can reach
/// it: an ephemeral port on the unspecified address, or an autobound
/// abstract Unix name (an unbound Unix socket cannot be answered).
fn create_socket(domain: Domain, to: &str) -> Result<Bound> {
    let fail = |doing: &str, e: io::Error| {
        Error::io(format_args!("{doing} a datagram socket for {to}"), &e)
    };
    let socket = Socket::new(domain, Type::DGRAM, None).map_err(|e| fail("creating", e))?;
    let local: SockAddr = if domain == Domain::UNIX {
        // An empty path asks the kernel to autobind a unique abstract name.
        SockAddr::unix("").map_err(|e| fail("autobinding", e))?
    } else if domain == Domain::IPV6 {
        SockAddr::from(std::net::SocketAddr::from((
            std::net::Ipv6Addr::UNSPECIFIED,
            0,
        )))
    } else {
        SockAddr::from(std::net::SocketAddr::from((
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
        )))
    };
    socket.bind(&local).map_err(|e| fail("binding", e))?;
    let bound = socket
        .local_addr()
        .map_err(|e| fail("reading the address of", e))?;
    Ok(Bound {
        local: format_dgram_sockaddr(&bound),
        domain,
        socket,
        _socket_file: None,
    })
}

/// A send or connect error; a Unix path with nobody bound to it (missing
/// or stale) is a refused connection, as for stream sockets.
pub(super) fn send_error(doing: &str, e: &io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => {
            Error::new(ErrorKind::ConnectionRefused, format!("{doing}: {e}"))
        }
        _ => Error::io(doing, e),
    }
}

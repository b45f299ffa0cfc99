//! Datagram sockets (UDP over IPv4 and IPv6, Unix datagram): the blocking
//! driver of [`crate::proto::sealed`]. One datagram is one message; the
//! kernel keeps the boundaries, so there is no framing.
//!
//! - With keys, every datagram sent is sealed (header + tag, see
//!   docs/DATAGRAM.md) and every datagram received is opened; a datagram
//!   that fails (bad tag, stale, replayed, malformed) is dropped, counted in
//!   [`DgramStats`], and the receive goes on waiting.
//! - A datagram over the maximum size is never silently cut: sending one
//!   fails before anything leaves; receiving one (seen through MSG_TRUNC)
//!   discards it and fails with both sizes.
//! - Receives copy through a buffer of the socket's own, so a caller's
//!   buffer that is too small leaves the datagram queued for the next
//!   receive (like `Connection::recv_into`).
//!
//! Thread safety: sends may come from any thread at once (each is one
//! system call); receives are serialised by a lock.
//!
//! This file holds the socket and its creation; sending is in `send`,
//! receiving in `recv`, the counters in `stats`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::datagram::{format_dgram_sockaddr, DgramAddress};
use crate::config::Config;
use crate::datagram::recv::RecvState;
use crate::datagram::send::send_error;
use crate::datagram::stats::{Counters, DgramStats};
use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::Keys;
use crate::proto::sealed::Opener;
use crate::sys::socket_file::{self, SocketFile};
use crate::util::sync::lock;
use crate::util::timeout_cell::TimeoutCell;

/// The socket, once it exists: sockets opened without an address are
/// created by their first send, in the family of the destination.
pub(super) struct Bound {
    pub(super) socket: Socket,
    pub(super) local: String,
    pub(super) domain: Domain,
    /// The socket file we created: held only to be removed on drop.
    pub(super) _socket_file: Option<SocketFile>,
}

pub struct DgramSocket {
    pub(super) bound: OnceLock<Bound>,
    /// Serialises the lazy creation of the socket.
    pub(super) creating: Mutex<()>,
    pub(super) connected: bool,
    pub(super) keys: Keys,
    pub(super) max_size: usize,
    /// Milliseconds for each send and receive; 0 waits for ever.
    pub(super) timeout: TimeoutCell,
    pub(super) recv: Mutex<RecvState>,
    /// A server receives on this socket: receives from elsewhere are refused
    /// and sends never wait.
    pub(super) served: AtomicBool,
    pub(super) counters: Counters,
}

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

    /// The bound address (`udp://127.0.0.1:40123`, `unixgram:///path`,
    /// `unixgram://@name`); a socket that has not sent yet has none.
    pub fn local_addr(&self) -> Result<&str> {
        Ok(&self.bound()?.local)
    }

    pub fn fd(&self) -> Result<RawFd> {
        Ok(self.bound()?.socket.as_raw_fd())
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) {
        self.timeout.set(timeout);
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.get()
    }

    pub fn stats(&self) -> DgramStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DgramStats {
            sent: get(&c.sent),
            received: get(&c.received),
            too_large: get(&c.too_large),
            too_short: get(&c.too_short),
            bad_version: get(&c.bad_version),
            bad_tag: get(&c.bad_tag),
            too_old: get(&c.too_old),
            too_new: get(&c.too_new),
            replayed: get(&c.replayed),
        }
    }

    /// The largest payload this socket sends or receives.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Marks the socket as a server's: its loop is the only receiver, and
    /// sends (replies) never wait for a peer's full queue.
    pub(crate) fn set_served(&self) {
        self.served.store(true, Ordering::SeqCst);
    }

    pub(super) fn check_not_served(&self) -> Result<()> {
        if self.served.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "a datagram server receives on this socket: datagrams arrive in its handler",
            ));
        }
        Ok(())
    }

    pub(super) fn check_size(&self, len: usize) -> Result<()> {
        if len > self.max_size {
            return Err(Error::new(
                ErrorKind::DatagramTooLarge,
                format!(
                    "datagram of {len} bytes exceeds the maximum datagram size of {} bytes; nothing was sent",
                    self.max_size
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn bound(&self) -> Result<&Bound> {
        self.bound.get().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidState,
                "the datagram socket has no address yet: send first, or open it with a local address",
            )
        })
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

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|t| Instant::now() + t)
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

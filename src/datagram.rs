//! Datagram sockets (UDP over IPv4 and IPv6, Unix datagram): the blocking
//! driver of [`crate::datagram_auth`]. One datagram is one message; the
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

use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::TryRng;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::auth::Keys;
use crate::config::Config;
use crate::datagram_address::{
    format_dgram_sockaddr, literal_sockaddr, write_dgram_sockaddr, DgramAddress,
};
use crate::datagram_auth::{self, Opener, Rejection, NONCE_LEN, OVERHEAD};
use crate::error::{log_refusal, Error, ErrorKind, Result};
use crate::socket_file::{self, SocketFile};
use crate::sys::{self, Interest};
use crate::timeout_cell::TimeoutCell;

/// socketserver's `max_packet_size`, and our default maximum payload.
pub(crate) const DEFAULT_MAX_DATAGRAM_SIZE: usize = 8192;
/// The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP header bytes).
pub(crate) const MAX_DATAGRAM_SIZE: usize = 65507;
/// How far a sealed datagram's timestamp may be from the receiver's clock.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// Accepted datagrams remembered for the replay check, at most.
pub(crate) const DEFAULT_REPLAY_CAPACITY: usize = 65536;

/// How long a send with a timeout rests between retries on a full peer.
const SEND_RETRY_PAUSE: Duration = Duration::from_millis(1);

/// Datagram settings, part of [`Config`].
#[derive(Clone, Debug)]
pub struct DatagramConfig {
    /// The largest payload sent or received, in bytes (with keys, the
    /// datagram on the wire is [`OVERHEAD`] bytes longer).
    pub max_size: usize,
    /// With keys: the freshness window, both ways.
    pub window: Duration,
    /// With keys: the most datagrams remembered against replays.
    pub replay_capacity: usize,
}

impl Default for DatagramConfig {
    fn default() -> DatagramConfig {
        DatagramConfig {
            max_size: DEFAULT_MAX_DATAGRAM_SIZE,
            window: DEFAULT_WINDOW,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
        }
    }
}

impl DatagramConfig {
    pub fn set_max_size(&mut self, size: usize) -> Result<()> {
        if size == 0 || size > MAX_DATAGRAM_SIZE {
            return Err(invalid(format!(
                "max datagram size {size} is outside 1..={MAX_DATAGRAM_SIZE}"
            )));
        }
        self.max_size = size;
        Ok(())
    }

    pub fn set_window(&mut self, window: Duration) -> Result<()> {
        if window.is_zero() {
            return Err(invalid(
                "the datagram window must be at least 1 ms: with 0 only a clock in exact step would be accepted".into(),
            ));
        }
        self.window = window;
        Ok(())
    }

    pub fn set_replay_capacity(&mut self, capacity: usize) -> Result<()> {
        if capacity == 0 {
            return Err(invalid("the replay capacity must be at least 1".into()));
        }
        self.replay_capacity = capacity;
        Ok(())
    }
}

/// Counters of one socket; each only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DgramStats {
    pub sent: u64,
    /// Datagrams delivered (to a receive or a server's handler).
    pub received: u64,
    /// Received datagrams over the maximum size, discarded.
    pub too_large: u64,
    /// The rest are drops of sealed datagrams, one counter per reason.
    pub too_short: u64,
    pub bad_version: u64,
    pub bad_tag: u64,
    pub too_old: u64,
    pub too_new: u64,
    pub replayed: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    too_large: AtomicU64,
    too_short: AtomicU64,
    bad_version: AtomicU64,
    bad_tag: AtomicU64,
    too_old: AtomicU64,
    too_new: AtomicU64,
    replayed: AtomicU64,
}

impl Counters {
    fn rejected(&self, why: &Rejection) {
        let counter = match why {
            Rejection::TooShort { .. } => &self.too_short,
            Rejection::BadVersion(_) => &self.bad_version,
            Rejection::BadTag => &self.bad_tag,
            Rejection::TooOld { .. } => &self.too_old,
            Rejection::TooNew { .. } | Rejection::AheadFull { .. } => &self.too_new,
            Rejection::Replayed => &self.replayed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a receive callback does with the datagram it was shown.
pub enum Take<R> {
    /// Consumed: the next receive gets the next datagram.
    Done(R),
    /// Left queued (the caller's buffer was too small): the next receive
    /// gets the same datagram again.
    Keep(R),
}

/// The result of [`DgramSocket::recv_from`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecvFrom {
    /// The payload was copied: its length, and the sender.
    Copied { len: usize, from: String },
    /// The buffer is too small for the payload, which stays queued: its size.
    TooSmall(usize),
}

/// The socket, once it exists: sockets opened without an address are
/// created by their first send, in the family of the destination.
struct Bound {
    socket: Socket,
    local: String,
    domain: Domain,
    /// The socket file we created: held only to be removed on drop.
    _socket_file: Option<SocketFile>,
}

struct RecvState {
    /// Holds one datagram as it came off the wire; allocated on first use.
    buf: Vec<u8>,
    opener: Option<Opener>,
    /// The payload of a datagram received but not yet taken, within `buf`.
    pending: Option<Range<usize>>,
    /// Its sender, in address form.
    from: String,
}

pub struct DgramSocket {
    bound: OnceLock<Bound>,
    /// Serialises the lazy creation of the socket.
    creating: Mutex<()>,
    connected: bool,
    keys: Keys,
    max_size: usize,
    /// Milliseconds for each send and receive; 0 waits for ever.
    timeout: TimeoutCell,
    recv: Mutex<RecvState>,
    /// A server receives on this socket: receives from elsewhere are refused
    /// and sends never wait.
    served: AtomicBool,
    counters: Counters,
}

impl DgramSocket {
    fn new(config: &Config, connected: bool) -> DgramSocket {
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

    /// Sends `payload` as one datagram to `to`.
    pub fn send_to(&self, to: &str, payload: &[u8]) -> Result<()> {
        self.check_size(payload.len())?;
        // IP literals and Unix names (every reply to a `from`) take the
        // path without allocating; host names are resolved.
        let targets = match literal_sockaddr(to) {
            Some(target) => Targets::One(target),
            None => {
                let parsed = DgramAddress::parse(to)?;
                Targets::Resolved(parsed.resolve()?)
            }
        };
        let bound = self.bound_for(to, targets.first())?;
        let target = targets.find(bound.domain).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidAddress,
                format!(
                    "cannot send to {to} from {}: another address family",
                    bound.local
                ),
            )
        })?;
        self.transmit(bound, Some(target), payload, to)
    }

    /// Sends `payload` to the address the socket is connected to.
    pub fn send(&self, payload: &[u8]) -> Result<()> {
        self.check_size(payload.len())?;
        let bound = self.bound()?;
        if !self.connected {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "the datagram socket is not connected: use send_to with an address",
            ));
        }
        self.transmit(bound, None, payload, "the connected peer")
    }

    /// Receives the next datagram and hands its payload and sender to `f`,
    /// borrowed from the socket's buffer; `f` decides whether it is taken.
    /// Waits up to the timeout; dropped datagrams do not end the wait.
    pub fn recv_with<R>(&self, f: impl FnOnce(&[u8], &str) -> Take<R>) -> Result<R> {
        self.check_not_served()?;
        let deadline = self.deadline();
        self.receive(Some(deadline), f)
            .map(|r| r.expect("a waiting receive returns a datagram or an error"))
    }

    /// Receives the next datagram into `out`, like `recvfrom`. A payload
    /// larger than `out` stays queued and its size is reported.
    pub fn recv_from(&self, out: &mut [u8]) -> Result<RecvFrom> {
        self.recv_with(|payload, from| {
            if payload.len() > out.len() {
                return Take::Keep(RecvFrom::TooSmall(payload.len()));
            }
            out[..payload.len()].copy_from_slice(payload);
            Take::Done(RecvFrom::Copied {
                len: payload.len(),
                from: from.to_string(),
            })
        })
    }

    /// Receives the next datagram as an owned payload and sender.
    pub fn recv(&self) -> Result<(Vec<u8>, String)> {
        self.recv_with(|payload, from| Take::Done((payload.to_vec(), from.to_string())))
    }

    /// For a server's loop: like [`DgramSocket::recv_with`] (the datagram is
    /// always taken) without waiting: `None` when nothing is queued.
    pub(crate) fn try_recv_with<R>(&self, f: impl FnOnce(&[u8], &str) -> R) -> Result<Option<R>> {
        self.receive(None, |payload, from| Take::Done(f(payload, from)))
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

    fn check_not_served(&self) -> Result<()> {
        if self.served.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "a datagram server receives on this socket: datagrams arrive in its handler",
            ));
        }
        Ok(())
    }

    fn check_size(&self, len: usize) -> Result<()> {
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

    fn bound(&self) -> Result<&Bound> {
        self.bound.get().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidState,
                "the datagram socket has no address yet: send first, or open it with a local address",
            )
        })
    }

    /// The socket, created now for `target`'s family if it does not exist
    /// yet.
    fn bound_for(&self, to: &str, target: &SockAddr) -> Result<&Bound> {
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

    fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|t| Instant::now() + t)
    }

    fn transmit(
        &self,
        bound: &Bound,
        to: Option<&SockAddr>,
        payload: &[u8],
        to_text: &str,
    ) -> Result<()> {
        let sealed = match self.keys.first() {
            Some(key) => {
                let header = datagram_auth::seal_header(now_ms(), random_nonce()?);
                let tag = datagram_auth::seal_tag(key, &header, payload);
                Some((header, tag))
            }
            None => None,
        };
        let parts;
        let bufs: &[IoSlice<'_>] = match &sealed {
            Some((header, tag)) => {
                parts = [
                    IoSlice::new(header),
                    IoSlice::new(payload),
                    IoSlice::new(tag),
                ];
                &parts
            }
            None => &[IoSlice::new(payload)][..],
        };
        let served = self.served.load(Ordering::SeqCst);
        let deadline = if served { None } else { self.deadline() };
        let flags = libc::MSG_NOSIGNAL
            | if served || deadline.is_some() {
                libc::MSG_DONTWAIT
            } else {
                0
            };
        let mut retried = false;
        loop {
            let sent = match to {
                Some(addr) => bound.socket.send_to_vectored_with_flags(bufs, addr, flags),
                None => bound.socket.send_vectored_with_flags(bufs, flags),
            };
            match sent {
                Ok(_) => {
                    // A datagram leaves whole or not at all.
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && served => {
                    return Err(Error::new(
                        ErrorKind::WouldBlock,
                        format!("sending to {to_text}: the receiver's queue is full; the datagram was not sent"),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let timed_out = || {
                        Error::new(
                            ErrorKind::TimedOut,
                            format!("sending to {to_text}: the receiver's queue stayed full until the timeout"),
                        )
                    };
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(timed_out());
                    }
                    let ready = sys::wait(bound.socket.as_raw_fd(), Interest::Write, deadline)
                        .map_err(|e| Error::io(format_args!("sending to {to_text}"), &e))?;
                    if !ready {
                        return Err(timed_out());
                    }
                    // An unconnected Unix socket polls writable while the
                    // receiver's queue is full (poll sees only our own
                    // buffer): pause between retries instead of spinning.
                    if retried {
                        std::thread::sleep(SEND_RETRY_PAUSE);
                    }
                    retried = true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    let wire = payload.len() + sealed.map_or(0, |_| OVERHEAD);
                    return Err(Error::new(
                        ErrorKind::DatagramTooLarge,
                        format!("sending to {to_text}: the kernel refused a datagram of {wire} bytes: {e}"),
                    ));
                }
                Err(e) => return Err(send_error(&format!("sending to {to_text}"), &e)),
            }
        }
    }

    /// The receive loop. `deadline` is `None` for a single non-blocking
    /// attempt, `Some(None)` to wait for ever, `Some(Some(t))` to wait until
    /// `t`. Returns `None` only for the non-blocking attempt.
    fn receive<R>(
        &self,
        deadline: Option<Option<Instant>>,
        f: impl FnOnce(&[u8], &str) -> Take<R>,
    ) -> Result<Option<R>> {
        let bound = self.bound()?;
        let mut st = lock(&self.recv);
        loop {
            // Taken before `f` runs, so a panicking handler drops the
            // datagram instead of seeing it again.
            if let Some(range) = st.pending.take() {
                return Ok(Some(match f(&st.buf[range.clone()], &st.from) {
                    Take::Done(r) => {
                        self.counters.received.fetch_add(1, Ordering::Relaxed);
                        r
                    }
                    Take::Keep(r) => {
                        st.pending = Some(range);
                        r
                    }
                }));
            }
            match self.take_one(bound, &mut st)? {
                Took::Payload | Took::Dropped => {}
                Took::Empty => {
                    let Some(deadline) = deadline else {
                        return Ok(None);
                    };
                    let ready = sys::wait(bound.socket.as_raw_fd(), Interest::Read, deadline)
                        .map_err(|e| Error::io(format_args!("receiving on {}", bound.local), &e))?;
                    if !ready {
                        return Err(Error::new(
                            ErrorKind::TimedOut,
                            format!("no datagram arrived on {} within the timeout", bound.local),
                        ));
                    }
                }
            }
        }
    }

    /// Takes one datagram off the socket, without waiting, into the buffer.
    fn take_one(&self, bound: &Bound, st: &mut RecvState) -> Result<Took> {
        let limit = self.max_size + if st.opener.is_some() { OVERHEAD } else { 0 };
        if st.buf.len() != limit {
            st.buf = vec![0; limit];
        }
        let fd = bound.socket.as_raw_fd();
        let (n, sender) = loop {
            match sys::recv_from(fd, &mut st.buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC) {
                Ok(got) => break got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Took::Empty),
                Err(e) => return Err(Error::io(format_args!("receiving on {}", bound.local), &e)),
            }
        };
        write_dgram_sockaddr(&sender, &mut st.from);
        if n > limit {
            self.counters.too_large.fetch_add(1, Ordering::Relaxed);
            let of = if st.opener.is_some() {
                format!(
                    "the maximum of {limit} bytes ({} of payload and {OVERHEAD} of header and tag)",
                    self.max_size
                )
            } else {
                format!("the maximum datagram size of {limit} bytes")
            };
            return Err(Error::new(
                ErrorKind::DatagramTooLarge,
                format!(
                    "datagram of {n} bytes from {} exceeds {of}; it was discarded",
                    st.from
                ),
            ));
        }
        let RecvState {
            buf,
            opener,
            pending,
            ..
        } = st;
        match opener {
            None => *pending = Some(0..n),
            Some(opener) => match opener.open(&buf[..n], now_ms()) {
                Ok(payload) => {
                    let start = datagram_auth::HEADER_LEN;
                    *pending = Some(start..start + payload.len());
                }
                Err(why) => {
                    self.counters.rejected(&why);
                    let kind = match why {
                        Rejection::TooShort { .. } | Rejection::BadVersion(_) => {
                            ErrorKind::Protocol
                        }
                        Rejection::BadTag => ErrorKind::AuthFailed,
                        _ => ErrorKind::AuthProtocol,
                    };
                    log_refusal(
                        &st.from,
                        kind,
                        &format!("sealed datagram from {} dropped: {why}", st.from),
                    );
                    return Ok(Took::Dropped);
                }
            },
        }
        Ok(Took::Payload)
    }
}

/// Where a send may go: a literal's one address, or a name's resolved ones.
enum Targets {
    One(SockAddr),
    Resolved(Vec<SockAddr>),
}

impl Targets {
    fn first(&self) -> &SockAddr {
        match self {
            Targets::One(a) => a,
            Targets::Resolved(all) => &all[0],
        }
    }

    /// The first address a socket of `domain` can send to.
    fn find(&self, domain: Domain) -> Option<&SockAddr> {
        match self {
            Targets::One(a) => (a.domain() == domain).then_some(a),
            Targets::Resolved(all) => all.iter().find(|a| a.domain() == domain),
        }
    }
}

enum Took {
    Payload,
    Dropped,
    Empty,
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
fn send_error(doing: &str, e: &io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => {
            Error::new(ErrorKind::ConnectionRefused, format!("{doing}: {e}"))
        }
        _ => Error::io(doing, e),
    }
}

fn random_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::SysRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| Error::new(ErrorKind::Io, format!("the OS random source failed: {e}")))?;
    Ok(nonce)
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

fn invalid(detail: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, detail)
}

/// Locks, ignoring poisoning: a panicking handler cannot leave the receive
/// state half-updated (each update is one assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

//! Settings shared by servers, clients and datagram sockets: [`Config`]
//! (here) and its datagram part ([`DatagramConfig`]). A server or
//! connection copies the config when it is created, so one config can serve
//! many and be freed after.
//!
//! May use: `error`, `addr`, `sys`, `util`, `proto`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::Keys;
use crate::proto::proxy::ProxyMode;

pub mod datagram;
pub mod tls;

pub use datagram::DatagramConfig;
pub use tls::{TlsClientAuth, TlsVersion};

/// The default and the largest accepted maximum frame size.
pub const DEFAULT_MAX_FRAME_SIZE: u64 = 64 << 20;

/// Event mode's default limit on bytes queued for sending per connection.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 << 20;

/// Threaded servers' default bound on connections still in their preamble
/// (see `Config::set_max_pending_handshakes`).
const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 16 * 1024;

/// What a server does with a connection that arrives when it already serves
/// `max_connections`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Leave it in the kernel's accept queue (at most `backlog` deep) until a
    /// slot frees; its handshake starts then.
    Wait,
    /// Accept it and close it at once, so the client fails fast.
    Refuse,
}

/// Settings for servers, clients and datagram sockets. The fields are
/// private: every setter checks its value and refuses one out of range
/// (`ErrorKind::InvalidArgument`), leaving the config unchanged, so a Rust
/// caller cannot build a config the C API would refuse (an empty key, a
/// zero timeout...). [`Config::default`] gives the documented defaults.
///
/// ```
/// let mut config = sockserv::Config::default();
/// assert!(config.set_key(b"").is_err());
/// assert_eq!(config.key_count(), 0);
/// config.set_key(b"secret").unwrap();
/// assert_eq!(config.key_count(), 1);
/// ```
///
/// The keys cannot be set around the check (this does not compile):
///
/// ```compile_fail,E0616
/// let mut config = sockserv::Config::default();
/// config.keys = std::sync::Arc::from(vec![Vec::new()]);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Empty: no handshake, plain framing.
    pub(crate) keys: Keys,
    pub(crate) max_frame_size: u64,
    pub(crate) handshake_timeout: Duration,
    /// Applies to each send and receive; `None` waits for ever.
    pub(crate) io_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_connections: usize,
    /// Threaded servers: connections still in their preamble (PROXY
    /// header, verify, handshake), held by the event-driven preamble stage
    /// without a thread; past it the newest is refused.
    pub(crate) max_pending_handshakes: usize,
    pub(crate) when_full: WhenFull,
    pub(crate) backlog: i32,
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    /// IPV6_V6ONLY for `tcp://[::]:PORT` listeners: `None` keeps the
    /// system's default (on Linux, IPv4 clients are accepted too).
    pub(crate) v6_only: Option<bool>,
    pub(crate) nodelay: bool,
    pub(crate) keepalive: bool,
    /// Blocking connections: a send made while the peer's next frame is
    /// already received is held (up to 64 KiB) and leaves with the next
    /// send that finds no frame waiting, or before the next receive, poll
    /// or flush waits: a pipelining peer's replies go out in one system
    /// call. Off by default: a handler that works long between a send and
    /// its next receive would delay that reply.
    pub(crate) coalesce_sends: bool,
    /// Event mode: I/O threads; 0 means one per core.
    pub(crate) io_threads: usize,
    /// Event mode: bytes a connection may have queued for sending; past
    /// it a send is refused (`WouldBlock`) or, with `close_when_backed_up`,
    /// the connection is closed. Reads from the peer pause at half of it.
    pub(crate) max_queued_bytes: usize,
    pub(crate) close_when_backed_up: bool,
    /// Event mode: close connections that receive nothing for this long.
    pub(crate) idle_timeout: Option<Duration>,
    /// Servers: expect a PROXY protocol header (v1 or v2) from a load
    /// balancer before the client's bytes.
    pub(crate) proxy_protocol: ProxyMode,
    /// Datagram sockets and servers (udp://, unixgram://).
    pub(crate) datagram: DatagramConfig,
    /// TLS: certificates, trust anchors, versions (see `config::tls`).
    pub(crate) tls: tls::TlsSettings,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            keys: Arc::from(Vec::new()),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            handshake_timeout: Duration::from_secs(10),
            io_timeout: None,
            connect_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            when_full: WhenFull::Wait,
            backlog: 1024,
            reuse_address: true,
            reuse_port: false,
            v6_only: None,
            nodelay: true,
            keepalive: false,
            coalesce_sends: false,
            io_threads: 0,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            close_when_backed_up: false,
            idle_timeout: None,
            proxy_protocol: ProxyMode::Off,
            datagram: DatagramConfig::default(),
            tls: tls::TlsSettings::default(),
        }
    }
}

impl Config {
    /// Replaces the keys with this one (copied). An empty key is refused:
    /// anyone using an empty key too would be let in.
    pub fn set_key(&mut self, key: &[u8]) -> Result<()> {
        check_key(key)?;
        self.keys = Arc::from(vec![key.to_vec()]);
        Ok(())
    }

    /// Adds a key a server also accepts (rotation). A client uses the first.
    /// An empty key is refused.
    pub fn add_key(&mut self, key: &[u8]) -> Result<()> {
        check_key(key)?;
        let mut keys = self.keys.to_vec();
        keys.push(key.to_vec());
        self.keys = Arc::from(keys);
        Ok(())
    }

    /// No keys: connections skip the handshake.
    pub fn clear_keys(&mut self) {
        self.keys = Arc::from(Vec::new());
    }

    /// The largest frame payload accepted (1 to `isize::MAX`; default 64 MiB).
    pub fn set_max_frame_size(&mut self, size: u64) -> Result<()> {
        // Above isize::MAX a frame could not be held in memory at all.
        if size == 0 || size > isize::MAX as u64 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("max frame size {size} is outside 1..={}", isize::MAX),
            ));
        }
        self.max_frame_size = size;
        Ok(())
    }

    /// How long the whole handshake may take (not zero; default 10 s).
    pub fn set_handshake_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.handshake_timeout = nonzero(timeout, "handshake timeout")?;
        Ok(())
    }

    /// How long a connect waits for each address (not zero; default 10 s).
    pub fn set_connect_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.connect_timeout = nonzero(timeout, "connect timeout")?;
        Ok(())
    }

    /// The most connections a server serves at once (at least 1). Threaded
    /// servers count handler threads, i.e. connections past their preamble
    /// (see [`Config::set_max_pending_handshakes`]); event mode counts
    /// every connection.
    pub fn set_max_connections(&mut self, max: usize) -> Result<()> {
        if max == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "max connections must be at least 1",
            ));
        }
        self.max_connections = max;
        Ok(())
    }

    /// Threaded servers: the most connections still in their preamble
    /// (PROXY header, verify, handshake) at once, at least 1; default
    /// 16,384. They wait on the event-driven preamble stage, costing no
    /// thread, and do not count against `max_connections`, which bounds
    /// the handler threads of authenticated connections. Past this bound
    /// the newest connection is accepted and closed at once (counted in
    /// `refused_when_full`). Event mode ignores it: there every connection
    /// counts against `max_connections`.
    pub fn set_max_pending_handshakes(&mut self, max: usize) -> Result<()> {
        if max == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "max pending handshakes must be at least 1",
            ));
        }
        self.max_pending_handshakes = max;
        Ok(())
    }

    /// The listen(2) backlog (at least 1).
    pub fn set_backlog(&mut self, backlog: i32) -> Result<()> {
        if backlog < 1 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("backlog {backlog} must be at least 1"),
            ));
        }
        self.backlog = backlog;
        Ok(())
    }

    /// The initial timeout of each send and receive (`None`: wait for ever;
    /// a zero duration means `None` too).
    pub fn set_io_timeout(&mut self, timeout: Option<Duration>) {
        self.io_timeout = timeout.filter(|t| !t.is_zero());
    }

    /// What a server does with a connection past `max_connections`.
    pub fn set_when_full(&mut self, when_full: WhenFull) {
        self.when_full = when_full;
    }

    /// SO_REUSEADDR on TCP listeners (default on).
    pub fn set_reuse_address(&mut self, on: bool) {
        self.reuse_address = on;
    }

    /// SO_REUSEPORT on TCP listeners (default off).
    pub fn set_reuse_port(&mut self, on: bool) {
        self.reuse_port = on;
    }

    /// IPV6_V6ONLY on `tcp://[::]:PORT` listeners; `None` keeps the
    /// system's default.
    pub fn set_v6_only(&mut self, on: Option<bool>) {
        self.v6_only = on;
    }

    /// TCP_NODELAY on new TCP connections (default on).
    pub fn set_nodelay(&mut self, on: bool) {
        self.nodelay = on;
    }

    /// SO_KEEPALIVE on new TCP connections (default off).
    pub fn set_keepalive(&mut self, on: bool) {
        self.keepalive = on;
    }

    /// Blocking connections: coalesce replies to a pipelining peer
    /// (default off).
    pub fn set_coalesce_sends(&mut self, on: bool) {
        self.coalesce_sends = on;
    }

    /// Event mode: the number of I/O threads (0: one per core).
    pub fn set_io_threads(&mut self, threads: usize) {
        self.io_threads = threads;
    }

    /// Event mode: the most bytes a connection may have queued for sending
    /// (at least 1).
    pub fn set_max_queued_bytes(&mut self, max: usize) -> Result<()> {
        if max == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "max queued bytes must be at least 1",
            ));
        }
        self.max_queued_bytes = max;
        Ok(())
    }

    /// Event mode: close a backed-up connection instead of refusing the
    /// send (default off).
    pub fn set_close_when_backed_up(&mut self, on: bool) {
        self.close_when_backed_up = on;
    }

    /// Event mode: close connections that receive nothing for this long
    /// (`None` or zero: never).
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.idle_timeout = timeout.filter(|t| !t.is_zero());
    }

    /// Servers: whether connections start with a PROXY protocol header.
    pub fn set_proxy_protocol(&mut self, mode: ProxyMode) {
        self.proxy_protocol = mode;
    }

    /// The datagram settings, to change them (their setters validate too).
    pub fn datagram_mut(&mut self) -> &mut DatagramConfig {
        &mut self.datagram
    }

    /// How many keys are set (0: no handshake, plain framing).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The largest frame payload accepted.
    pub fn max_frame_size(&self) -> u64 {
        self.max_frame_size
    }

    /// How long the whole handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The initial timeout of each send and receive (`None`: for ever).
    pub fn io_timeout(&self) -> Option<Duration> {
        self.io_timeout
    }

    /// How long a connect waits for each address.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The most connections a server serves at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Threaded servers: the most connections in their preamble at once.
    pub fn max_pending_handshakes(&self) -> usize {
        self.max_pending_handshakes
    }

    /// What a server does with a connection past the maximum.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// The listen(2) backlog.
    pub fn backlog(&self) -> i32 {
        self.backlog
    }

    /// Event mode: the limit on bytes queued per connection.
    pub fn max_queued_bytes(&self) -> usize {
        self.max_queued_bytes
    }

    /// Event mode: the idle timeout (`None`: never).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// Servers: the PROXY protocol mode.
    pub fn proxy_protocol(&self) -> ProxyMode {
        self.proxy_protocol
    }

    /// The datagram settings.
    pub fn datagram(&self) -> &DatagramConfig {
        &self.datagram
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "an empty key is refused: anyone who also uses an empty key would be let in",
        ));
    }
    Ok(())
}

fn nonzero(timeout: Duration, what: &str) -> Result<Duration> {
    if timeout.is_zero() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the {what} must be at least 1 ms: a zero timeout would wait for ever or never"
            ),
        ));
    }
    Ok(timeout)
}

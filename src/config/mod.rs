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

pub use datagram::DatagramConfig;

/// The default and the largest accepted maximum frame size.
pub const DEFAULT_MAX_FRAME_SIZE: u64 = 64 << 20;

/// Event mode's default limit on bytes queued for sending per connection.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 << 20;

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

#[derive(Clone, Debug)]
pub struct Config {
    /// Empty: no handshake, plain framing.
    pub keys: Keys,
    pub max_frame_size: u64,
    pub handshake_timeout: Duration,
    /// Applies to each send and receive; `None` waits for ever.
    pub io_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub when_full: WhenFull,
    pub backlog: i32,
    pub reuse_address: bool,
    pub reuse_port: bool,
    /// IPV6_V6ONLY for `tcp://[::]:PORT` listeners: `None` keeps the
    /// system's default (on Linux, IPv4 clients are accepted too).
    pub v6_only: Option<bool>,
    pub nodelay: bool,
    pub keepalive: bool,
    /// Blocking connections: a send made while the peer's next frame is
    /// already received is held (up to 64 KiB) and leaves with the next
    /// send that finds no frame waiting, or before the next receive, poll
    /// or flush waits: a pipelining peer's replies go out in one system
    /// call. Off by default: a handler that works long between a send and
    /// its next receive would delay that reply.
    pub coalesce_sends: bool,
    /// Event mode: I/O threads; 0 means one per core.
    pub io_threads: usize,
    /// Event mode: bytes a connection may have queued for sending; past
    /// it a send is refused (`WouldBlock`) or, with `close_when_backed_up`,
    /// the connection is closed. Reads from the peer pause at half of it.
    pub max_queued_bytes: usize,
    pub close_when_backed_up: bool,
    /// Event mode: close connections that receive nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// Servers: expect a PROXY protocol header (v1 or v2) from a load
    /// balancer before the client's bytes.
    pub proxy_protocol: ProxyMode,
    /// Datagram sockets and servers (udp://, unixgram://).
    pub datagram: DatagramConfig,
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
        }
    }
}

impl Config {
    /// Replaces the keys with this one.
    pub fn set_key(&mut self, key: &[u8]) -> Result<()> {
        check_key(key)?;
        self.keys = Arc::from(vec![key.to_vec()]);
        Ok(())
    }

    /// Adds a key a server also accepts (rotation). A client uses the first.
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

    pub fn set_handshake_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.handshake_timeout = nonzero(timeout, "handshake timeout")?;
        Ok(())
    }

    pub fn set_connect_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.connect_timeout = nonzero(timeout, "connect timeout")?;
        Ok(())
    }

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

//! The datagram part of the settings: sizes, the freshness window and the
//! replay memory of sealed datagrams.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// socketserver's `max_packet_size`, and our default maximum payload.
pub(crate) const DEFAULT_MAX_DATAGRAM_SIZE: usize = 8192;
/// The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP header bytes).
pub(crate) const MAX_DATAGRAM_SIZE: usize = 65507;
/// How far a sealed datagram's timestamp may be from the receiver's clock.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// Accepted datagrams remembered for the replay check, at most.
pub(crate) const DEFAULT_REPLAY_CAPACITY: usize = 65536;

/// Datagram settings, part of [`crate::config::Config`]
/// ([`Config::datagram_mut`](crate::config::Config::datagram_mut) changes
/// them). Private fields behind validated setters, like `Config`.
#[derive(Clone, Debug)]
pub struct DatagramConfig {
    /// The largest payload sent or received, in bytes (with keys, the
    /// datagram on the wire is [`crate::proto::sealed::OVERHEAD`] bytes longer).
    pub(crate) max_size: usize,
    /// With keys: the freshness window, both ways.
    pub(crate) window: Duration,
    /// With keys: the most datagrams remembered against replays.
    pub(crate) replay_capacity: usize,
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
    /// The largest payload sent or received (1 to 65507; default 8192).
    pub fn set_max_size(&mut self, size: usize) -> Result<()> {
        if size == 0 || size > MAX_DATAGRAM_SIZE {
            return Err(invalid(format!(
                "max datagram size {size} is outside 1..={MAX_DATAGRAM_SIZE}"
            )));
        }
        self.max_size = size;
        Ok(())
    }

    /// With keys: the freshness window, both ways (not zero; default 30 s).
    pub fn set_window(&mut self, window: Duration) -> Result<()> {
        if window.is_zero() {
            return Err(invalid(
                "the datagram window must be at least 1 ms: with 0 only a clock in exact step would be accepted".into(),
            ));
        }
        self.window = window;
        Ok(())
    }

    /// With keys: the most datagrams remembered against replays (at least
    /// 1; default 65536).
    pub fn set_replay_capacity(&mut self, capacity: usize) -> Result<()> {
        if capacity == 0 {
            return Err(invalid("the replay capacity must be at least 1".into()));
        }
        self.replay_capacity = capacity;
        Ok(())
    }
}

impl DatagramConfig {
    /// The largest payload sent or received.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// With keys: the freshness window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// With keys: the most datagrams remembered against replays.
    pub fn replay_capacity(&self) -> usize {
        self.replay_capacity
    }
}

fn invalid(detail: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, detail)
}

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
//! This file holds the socket's state and accessors; creating and binding
//! it is in `open`, sending in `send`, receiving in `recv`, the counters in
//! `stats`.

use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Socket};

use crate::datagram::stats::{Counters, DgramStats};
use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::Keys;
use crate::proto::sealed::Opener;
use crate::sys::socket_file::SocketFile;
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

/// A datagram socket (UDP or Unix datagram), sealing and opening datagrams
/// when the config has keys. Sends may come from several threads at once.
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

pub(super) struct RecvState {
    /// Holds one datagram as it came off the wire; allocated on first use.
    pub(super) buf: Vec<u8>,
    pub(super) opener: Option<Opener>,
    /// The payload of a datagram received but not yet taken, within `buf`.
    pub(super) pending: Option<Range<usize>>,
    /// Its sender, in address form.
    pub(super) from: String,
}

impl DgramSocket {
    /// The bound address (`udp://127.0.0.1:40123`, `unixgram:///path`,
    /// `unixgram://@name`); a socket that has not sent yet has none.
    pub fn local_addr(&self) -> Result<&str> {
        Ok(&self.bound()?.local)
    }

    /// The socket's descriptor (`InvalidState` while it has no address yet).
    pub fn fd(&self) -> Result<RawFd> {
        Ok(self.bound()?.socket.as_raw_fd())
    }

    /// Sets the timeout of each later send and receive (`None`: for ever).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        self.timeout.set(timeout);
    }

    /// The timeout of sends and receives (`None`: for ever).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.get()
    }

    /// A snapshot of the counters.
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

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|t| Instant::now() + t)
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

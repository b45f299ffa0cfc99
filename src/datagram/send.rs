//! Sending datagrams: sealing with the first key, the size check before
//! anything leaves, and retrying a full peer within the timeout.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::SockAddr;

use crate::addr::datagram::{literal_sockaddr, DgramAddress};
use crate::datagram::open::{send_error, Targets};
use crate::datagram::socket::{now_ms, Bound, DgramSocket};
use crate::error::{Error, ErrorKind, Result};
use crate::proto::sealed::{self, OVERHEAD};
use crate::sys::{self, random, Interest};

/// How long a send with a timeout rests between retries on a full peer.
const SEND_RETRY_PAUSE: Duration = Duration::from_millis(1);

impl DgramSocket {
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

    pub(super) fn transmit(
        &self,
        bound: &Bound,
        to: Option<&SockAddr>,
        payload: &[u8],
        to_text: &str,
    ) -> Result<()> {
        let sealed = match self.keys.first() {
            Some(key) => {
                let header = sealed::seal_header(now_ms(), random::nonce()?);
                let tag = sealed::seal_tag(key, &header, payload);
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
}

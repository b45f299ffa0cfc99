//! Receiving datagrams: through the socket's own buffer (a caller's buffer
//! that is too small leaves the datagram queued), opening sealed ones and
//! dropping what fails, never cutting one short.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::addr::datagram::write_dgram_sockaddr;
use crate::datagram::socket::{now_ms, Bound, DgramSocket, RecvState};
use crate::error::{log_refusal, Error, ErrorKind, Result};
use crate::proto::sealed::{self, Rejection, OVERHEAD};
use crate::sys::{self, Interest};
use crate::util::sync::lock;

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
    Copied {
        /// The payload's size.
        len: usize,
        /// The sender's address.
        from: String,
    },
    /// The buffer is too small for the payload, which stays queued: its size.
    TooSmall(usize),
}

/// The result of [`DgramSocket::recv_into`]: the payload's size and the
/// size of the sender's address with a terminating NUL (0 when no address
/// buffer was given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecvInto {
    /// Both were copied (the address NUL-terminated).
    Copied {
        /// The payload's size.
        len: usize,
        /// The address's size, NUL included.
        from_len: usize,
    },
    /// A buffer is too small: nothing was copied and the datagram stays
    /// queued for the next receive.
    TooSmall {
        /// The payload's size.
        len: usize,
        /// The address's size, NUL included.
        from_len: usize,
    },
}

pub(super) enum Took {
    Payload,
    Dropped,
    Empty,
}

impl DgramSocket {
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

    /// Receives the next datagram into `buf`, and its sender's address,
    /// NUL-terminated, into `from` if given (the C API's `recvfrom`). If
    /// either does not fit, nothing is copied and the datagram stays queued.
    pub(crate) fn recv_into(&self, buf: &mut [u8], from: Option<&mut [u8]>) -> Result<RecvInto> {
        self.recv_with(|payload, sender| {
            let len = payload.len();
            let from_len = from.as_ref().map_or(0, |_| sender.len() + 1);
            let fits = len <= buf.len() && from.as_ref().is_none_or(|f| from_len <= f.len());
            if !fits {
                return Take::Keep(RecvInto::TooSmall { len, from_len });
            }
            buf[..len].copy_from_slice(payload);
            if let Some(from) = from {
                from[..sender.len()].copy_from_slice(sender.as_bytes());
                from[sender.len()] = 0;
            }
            Take::Done(RecvInto::Copied { len, from_len })
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

    /// The receive loop. `deadline` is `None` for a single non-blocking
    /// attempt, `Some(None)` to wait for ever, `Some(Some(t))` to wait until
    /// `t`. Returns `None` only for the non-blocking attempt.
    pub(super) fn receive<R>(
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
    pub(super) fn take_one(&self, bound: &Bound, st: &mut RecvState) -> Result<Took> {
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
                    let start = sealed::HEADER_LEN;
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

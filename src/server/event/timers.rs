//! The timers of an I/O thread: the handshake deadline (which covers a
//! PROXY header too), the idle timeout and the close linger, kept in its
//! [`Deadlines`](crate::server::event::deadlines::Deadlines) heap.

use std::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::server::event::dialer::DIAL_BASE;
use crate::server::event::state::{IoThread, CLOSE_LINGER};

impl IoThread {
    /// Starts watching an opened connection for idleness, if configured.
    pub(super) fn arm_idle(&mut self, token: usize) {
        if let Some(idle) = self.shared.context.config.idle_timeout {
            let conn = &self.conns[token];
            self.deadlines
                .push(conn.last_activity + idle, token, conn.handle.id());
        }
    }

    /// Handles every deadline that has passed.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((token, id)) = self.deadlines.pop_due(now) {
            if token >= DIAL_BASE {
                self.dial_timer(token, id);
                continue;
            }
            if !self.is_live(token, id) {
                continue;
            }
            let conn = &self.conns[token];
            let config = &self.shared.context.config;
            let (due, why) = if let Some(since) = conn.closing_since {
                (since + CLOSE_LINGER, conn.close_reason.as_deref().cloned())
            } else if let Some(deadline) = conn.session.deadline() {
                // The one deadline of the whole preamble.
                (deadline, conn.session.timed_out(deadline))
            } else if let Some(idle) = config.idle_timeout {
                (
                    conn.last_activity + idle,
                    Some(Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "{} was idle for {} ms",
                            conn.handle.peer_addr(),
                            idle.as_millis()
                        ),
                    )),
                )
            } else {
                continue;
            };
            if due > now {
                self.deadlines.push(due, token, id);
            } else {
                self.close(token, why);
            }
        }
    }
}

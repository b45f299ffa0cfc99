//! Writing an event-mode connection's queued frames, many per system call,
//! and the backpressure around it: reads resume once the queue drains, and
//! a connection closed with `close()` writes what it had queued first.

use std::io;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::server::event::state::{Conn, IoThread, CLOSE_LINGER, KEEP_IDLE_BUFFER};

impl IoThread {
    /// Writes what is queued until done or the socket is full.
    pub(super) fn flush(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        match write_queued(conn) {
            Err(e) => return self.close(token, Some(e)),
            // The socket is full: the next writable edge resumes.
            Ok(false) => return,
            Ok(true) => {}
        }
        if conn.writing.capacity() > KEEP_IDLE_BUFFER {
            conn.writing = Vec::new();
        }
        if conn.sealing.capacity() > KEEP_IDLE_BUFFER {
            conn.sealing = Vec::new();
        }
        if conn.closing_since.is_some() {
            let reason = conn.close_reason.take();
            return self.close(token, reason);
        }
        if conn.read_paused && conn.handle.queued_bytes() < conn.handle.max_queued() / 4 {
            conn.read_paused = false;
            self.resume_reading(token);
        }
    }

    /// Delivers frames buffered while reads were paused, then reads on.
    pub(super) fn resume_reading(&mut self, token: usize) {
        // Buffered frames go first, within the connection's share.
        self.on_readable(token, true);
    }

    /// `close()` was called (`reason` `None`), or the peer ended its
    /// stream (`reason`): stop reading, write what is queued, then close
    /// (within CLOSE_LINGER) with `reason`.
    pub(super) fn begin_close(&mut self, token: usize, reason: Option<Error>) {
        let conn = &mut self.conns[token];
        if conn.closing_since.is_none() {
            let now = Instant::now();
            conn.closing_since = Some(now);
            conn.close_reason = reason;
            self.deadlines
                .push(now + CLOSE_LINGER, token, conn.handle.id());
        }
        self.flush(token);
    }
}

/// Writes the connection's queued frames until all are written (`true`)
/// or the socket is full (`false`).
fn write_queued(conn: &mut Conn) -> Result<bool> {
    loop {
        if conn.written == conn.writing.len() {
            conn.writing.clear();
            conn.written = 0;
            match conn.session.sealer() {
                None => conn.handle.take_queued(&mut conn.writing),
                Some(sealer) => {
                    // One batch per flush: every frame queued since the
                    // last one, many per TLS record and per send().
                    conn.handle.take_queued(&mut conn.sealing);
                    if !conn.sealing.is_empty() {
                        let parts = [io::IoSlice::new(&conn.sealing)];
                        sealer.seal(&parts, &mut conn.writing)?;
                        conn.sealing.clear();
                        conn.handle.written(conn.writing.len());
                    }
                }
            }
            if conn.writing.is_empty() {
                return Ok(true);
            }
        }
        let rest = &conn.writing[conn.written..];
        match conn
            .handle
            .socket()
            .send_with_flags(rest, libc::MSG_NOSIGNAL)
        {
            Ok(n) => {
                conn.written += n;
                conn.handle.written(conn.writing.len() - conn.written);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::io(
                    format_args!("sending to {}", conn.handle.peer_addr()),
                    &e,
                ))
            }
        }
    }
}

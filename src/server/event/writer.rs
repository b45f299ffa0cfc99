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
        if let Some(s) = &mut conn.sealing {
            if s.plain.capacity() > KEEP_IDLE_BUFFER {
                s.plain = Vec::new();
            }
        }
        if conn.closing_since.is_some() {
            let reason = conn.close_reason.take().map(|e| *e);
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
            conn.close_reason = reason.map(Box::new);
            self.deadlines
                .push(now + CLOSE_LINGER, token, conn.handle.id());
        }
        self.flush(token);
    }
}

/// Plaintext sealed per run: its records (a few bytes more) stay under
/// KEEP_IDLE_BUFFER, so `writing` is kept between runs.
const SEAL_RUN: usize = 48 * 1024;

/// What the I/O thread took from the queue and has not written: records
/// and, with TLS, plaintext not sealed yet.
fn unwritten(conn: &Conn) -> usize {
    let unsealed = conn
        .sealing
        .as_ref()
        .map_or(0, |s| s.plain.len() - s.sealed);
    conn.writing.len() - conn.written + unsealed
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
                    // Every frame queued since the last batch, many per TLS
                    // record and per send(), sealed a run at a time: each
                    // run's records are sent while in cache, and the
                    // buffer they go into stays small enough to be kept
                    // (a large frame's would be fresh pages every time).
                    let s = conn.sealing.get_or_insert_with(Box::default);
                    if s.sealed == s.plain.len() {
                        s.plain.clear();
                        s.sealed = 0;
                        conn.handle.take_queued(&mut s.plain);
                    }
                    if s.sealed < s.plain.len() {
                        let end = s.plain.len().min(s.sealed + SEAL_RUN);
                        let run = [io::IoSlice::new(&s.plain[s.sealed..end])];
                        sealer.seal(&run, &mut conn.writing)?;
                        s.sealed = end;
                        conn.handle.written(unwritten(conn));
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
                conn.handle.written(unwritten(conn));
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

//! The event-mode driver of [`Session`]: runs it on what was read and acts
//! on what it says: verify after a PROXY header, `on_open`, each frame to
//! `on_frame`, the handshake's frames to the send queue; reads pause when
//! the send queue backs up.

use crate::proto::frame::MIN_HEADER_LEN;
use crate::proto::recv_buffer::RecvBuffer;
use crate::proto::session::Step;
use crate::server::event::handler::{callback, Outcome};
use crate::server::event::state::{Conn, EngineShared, BYTES_PER_TURN, FRAMES_PER_TURN};

/// A connection's fair share of one turn of its I/O thread: so many
/// frames and bytes delivered, then its neighbours' turn (what is left
/// stays buffered for its next turn).
pub(super) struct Budget {
    frames: usize,
    bytes: usize,
}

impl Budget {
    pub(super) fn per_turn() -> Budget {
        Budget {
            frames: FRAMES_PER_TURN,
            bytes: BYTES_PER_TURN,
        }
    }

    pub(super) fn left(&self) -> bool {
        self.frames > 0 && self.bytes > 0
    }
}

/// Runs the session over the whole frames in `buf` and delivers them.
/// Stops early when the connection's send queue is backed up (reads
/// pause), it is closing, or `budget` is spent.
pub(super) fn dispatch(
    shared: &EngineShared,
    conn: &mut Conn,
    buf: &mut RecvBuffer,
    budget: &mut Budget,
) -> Outcome {
    loop {
        if conn.read_paused || conn.handle.close_requested() || !budget.left() {
            return Ok(());
        }
        let step = conn.session.poll(buf);
        queue_transmit(conn);
        match step {
            Ok(Step::NeedMore(_)) => return Ok(()),
            Ok(Step::Proxy { peer, verify }) => {
                if let Some(peer) = peer {
                    conn.handle.set_proxied_peer(peer);
                }
                if verify {
                    let ok = shared.context.verify(conn.handle.peer_addr());
                    conn.session.verified(ok);
                    if !ok {
                        return Err(None);
                    }
                }
                continue;
            }
            Ok(Step::Open) if shared.hand_over.is_some() => {
                // (The threaded connection takes the TLS details from the
                // session it is handed.)
                // A preamble stage: nothing more is read or delivered
                // here; the I/O thread hands the connection over.
                conn.read_paused = true;
                return Ok(());
            }
            Ok(Step::Open) => {
                if let Some(info) = conn.session.tls_info() {
                    // Known in on_open: a service can decide by identity.
                    conn.handle.set_tls_info(info.clone());
                }
                let handler = &shared.handler;
                let handle = &conn.handle;
                callback(|| handler.on_open(handle))?;
            }
            Ok(Step::Frame(frame)) => {
                budget.frames -= 1;
                budget.bytes = budget.bytes.saturating_sub(frame.len() + MIN_HEADER_LEN);
                let handler = &shared.handler;
                let handle = &conn.handle;
                let payload = conn.session.frame(buf, frame);
                callback(|| handler.on_frame(handle, payload))?;
            }
            Err(e) => return Err(Some(e)),
        }
        if conn.handle.queued_bytes() >= conn.handle.max_queued() / 2 {
            conn.read_paused = true;
        }
    }
}

/// Moves what the session has to send (handshake frames, already encoded)
/// to the connection's send queue; with TLS (records, already encrypted)
/// straight behind what is being written, as the queue holds plaintext.
fn queue_transmit(conn: &mut Conn) {
    if conn.session.is_tls() {
        conn.session.take_transmit(&mut conn.writing);
    } else if conn.session.wants_transmit() {
        let mut bytes = Vec::new();
        conn.session.take_transmit(&mut bytes);
        conn.handle.queue_encoded(&bytes);
    }
}

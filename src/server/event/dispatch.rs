//! The protocol phases of an event-mode connection, run on what was read:
//! the PROXY header (and verify after it), the handshake, then frames to
//! `on_frame`; reads pause when the send queue backs up.

use rand::TryRng;

use crate::error::{Error, ErrorKind};
use crate::proto::handshake::{Handshake, Role, MAX_HANDSHAKE_FRAME, NONCE_LEN};
use crate::proto::proxy::{self, Parsed, ProxyMode};
use crate::proto::recv_buffer::{Decoded, RecvBuffer};
use crate::server::event::handler::{callback, Outcome};
use crate::server::event::state::{Conn, EngineShared};

/// Decodes and delivers every whole frame in `buf`: handshake messages to
/// the handshake, then frames to `on_frame`. Stops early when the
/// connection's send queue is backed up (reads pause) or it is closing.
pub(super) fn dispatch(shared: &EngineShared, conn: &mut Conn, buf: &mut RecvBuffer) -> Outcome {
    let config = &shared.context.config;
    if conn.proxy.is_some() && !take_proxy_header(shared, conn, buf)? {
        return Ok(());
    }
    loop {
        if conn.read_paused || conn.handle.close_requested() {
            return Ok(());
        }
        let max = if conn.handshake.is_some() {
            MAX_HANDSHAKE_FRAME
        } else {
            config.max_frame_size
        };
        let frame = match buf.next_frame(max) {
            Ok(Decoded::Frame(frame)) => frame,
            Ok(Decoded::NeedMore(_)) => return Ok(()),
            Err(e) => {
                return Err(Some(
                    e.context(format!("receiving from {}", conn.handle.peer_addr())),
                ))
            }
        };
        if let Some(hs) = &mut conn.handshake {
            let step = hs.receive(buf.bytes(frame));
            while let Some(msg) = hs.poll_transmit() {
                conn.handle.queue_internal(&msg);
            }
            step.map_err(|e| {
                Some(e.context(format!("handshake with {}", conn.handle.peer_addr())))
            })?;
            if hs.is_done() {
                conn.handshake = None;
                open(shared, conn)?;
            }
        } else {
            let handler = &shared.handler;
            let handle = &conn.handle;
            let payload = buf.bytes(frame);
            callback(|| handler.on_frame(handle, payload))?;
        }
        if conn.handle.queued_bytes() >= conn.handle.max_queued() / 2 {
            conn.read_paused = true;
        }
    }
}

/// Consumes the PROXY protocol header at the start of `buf`: `false` while
/// more bytes are needed. In required mode, verify runs on the address it
/// names, then the handshake starts.
pub(super) fn take_proxy_header(
    shared: &EngineShared,
    conn: &mut Conn,
    buf: &mut RecvBuffer,
) -> std::result::Result<bool, Option<Error>> {
    let Some(mode) = conn.proxy else {
        return Ok(true);
    };
    let peer = conn.handle.peer_addr().to_string();
    match proxy::parse(buf.pending()) {
        Ok(Parsed::NeedMore) => return Ok(false),
        Ok(Parsed::Header { len, source }) => {
            buf.consume(len);
            if let Some(source) = source {
                conn.handle.set_proxied_peer(format!("tcp://{source}"));
            }
        }
        Ok(Parsed::Absent) if mode == ProxyMode::Optional => {}
        Ok(Parsed::Absent) => {
            return Err(Some(Error::new(
                ErrorKind::Protocol,
                format!("{peer} sent no PROXY protocol header, which this server requires"),
            )))
        }
        Err(e) => return Err(Some(e.context(format!("connection from {peer}")))),
    }
    conn.proxy = None;
    if mode == ProxyMode::Required {
        if !shared.context.verify(conn.handle.peer_addr()) {
            return Err(None);
        }
        start(shared, conn)?;
    }
    Ok(true)
}

/// Starts a connection: the handshake when there are keys (its challenge
/// queued), else it is open at once.
pub(super) fn start(shared: &EngineShared, conn: &mut Conn) -> Outcome {
    let keys = &shared.context.config.keys;
    if keys.is_empty() {
        return open(shared, conn);
    }
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::SysRng.try_fill_bytes(&mut nonce).map_err(|e| {
        Some(Error::new(
            ErrorKind::Io,
            format!("the OS random source failed: {e}"),
        ))
    })?;
    let mut hs = Handshake::new(Role::Server, keys.clone(), nonce);
    while let Some(msg) = hs.poll_transmit() {
        conn.handle.queue_internal(&msg);
    }
    conn.handshake = Some(hs);
    Ok(())
}

/// The handshake is done (or there is none): the connection is open.
pub(super) fn open(shared: &EngineShared, conn: &mut Conn) -> Outcome {
    conn.opened = true;
    let handler = &shared.handler;
    let handle = &conn.handle;
    callback(|| handler.on_open(handle))
}

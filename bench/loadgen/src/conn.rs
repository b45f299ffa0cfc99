//! One client connection: connect, the optional HMAC-SHA256 handshake (the
//! client's side of PROTOCOL.md), a ping echo that proves the server serves
//! it, then a closed loop of `depth` frames in flight with every echo
//! checked and timed.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use mio::net::TcpStream;
use sha2::Sha256;

use crate::hist::Hist;
use crate::pattern::Pattern;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const TAG: &[u8] = b"{sha256}";
/// Handshake frames are at most 256 bytes (PROTOCOL.md).
const MAX_SETUP_FRAME: usize = 256;
/// Enough for any handshake frame; idle connections never need more.
const SETUP_BUF: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    Connecting,
    AwaitChallenge,
    AwaitWelcome,
    AwaitResponse,
    AwaitPing,
    Ready,
}

/// What the measured window saw, per thread.
#[derive(Default)]
pub struct Stats {
    pub frames: u64,
    pub bytes: u64,
    pub hist: Hist,
}

/// What every connection of a thread shares.
pub struct Ctx<'a> {
    pub pattern: &'a Pattern,
    pub key: Option<&'a [u8]>,
    pub depth: u64,
    /// Receive buffer of an active connection: room for all it has in flight.
    pub rbuf_size: usize,
    pub sending: bool,
    pub measuring: bool,
    pub stats: Stats,
}

pub struct Conn {
    pub id: u32,
    pub active: bool,
    pub stream: TcpStream,
    pub phase: Phase,
    /// Our challenge (M2), kept until the server answers it.
    challenge: Vec<u8>,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    woff: usize,
    send_seq: u64,
    recv_seq: u64,
    /// When each frame in flight left, oldest first (echoes come back in order).
    sent_at: VecDeque<Instant>,
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn push_frame(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&(n as u32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(format!("getrandom: {}", io::Error::last_os_error()));
    }
    Ok(())
}

impl Conn {
    pub fn connect(id: u32, active: bool, addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .map_err(|e| format!("connection {id}: connect to {addr}: {e}"))?;
        Ok(Conn {
            id,
            active,
            stream,
            phase: Phase::Connecting,
            challenge: Vec::new(),
            rbuf: vec![0; SETUP_BUF],
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            woff: 0,
            send_seq: 0,
            recv_seq: 0,
            sent_at: VecDeque::new(),
        })
    }

    pub fn in_flight(&self) -> u64 {
        self.send_seq - self.recv_seq
    }

    /// Handles a readiness event: finish connecting, read and check all that
    /// arrived, refill the window, write.
    pub fn on_event(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        if self.phase == Phase::Connecting && !self.connected(ctx)? {
            return Ok(());
        }
        self.read_all(ctx, now)?;
        self.top_up(ctx, now);
        self.flush()
    }

    /// Starts the traffic of an active connection (no event would).
    pub fn kick(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        self.top_up(ctx, now);
        self.flush()
    }

    fn connected(&mut self, ctx: &Ctx) -> Result<bool, String> {
        if let Some(e) = self
            .stream
            .take_error()
            .map_err(|e| self.err("connect", e))?
        {
            return Err(self.err("connect", e));
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(self.err("connect", e)),
        }
        self.stream
            .set_nodelay(true)
            .map_err(|e| self.err("TCP_NODELAY", e))?;
        if ctx.key.is_some() {
            self.phase = Phase::AwaitChallenge;
        } else {
            self.send_ping();
        }
        Ok(true)
    }

    fn err(&self, what: &str, e: io::Error) -> String {
        format!("connection {} ({:?}): {what}: {e}", self.id, self.phase)
    }

    fn send_ping(&mut self) {
        push_frame(&mut self.wbuf, &[b"ping", &self.id.to_le_bytes()]);
        self.phase = Phase::AwaitPing;
    }

    fn read_all(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        loop {
            let space = self.rbuf.len() - self.rend;
            if space == 0 {
                return Err(format!("connection {}: receive buffer full", self.id));
            }
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => {
                    return Err(format!(
                        "connection {} ({:?}, {} frames in flight): the server closed it",
                        self.id,
                        self.phase,
                        self.in_flight()
                    ))
                }
                Ok(n) => {
                    self.rend += n;
                    self.parse(ctx, now)?;
                    // A short read emptied the socket; on Linux any later
                    // arrival raises a new edge, so no extra read to see EAGAIN.
                    if n < space {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err("receive", e)),
            }
        }
    }

    /// Consumes every whole frame in the receive buffer.
    fn parse(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        let mut need = 4;
        while self.rend - self.rstart >= 4 {
            let h = &self.rbuf[self.rstart..self.rstart + 4];
            let n = i32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            if n < 0 {
                return Err(format!(
                    "connection {}: frame header {n} (negative)",
                    self.id
                ));
            }
            let n = n as usize;
            let ready = self.phase == Phase::Ready;
            if ready && n != ctx.pattern.size() {
                return Err(format!(
                    "connection {}: frame {} came back with a {n}-byte header, sent {}",
                    self.id,
                    self.recv_seq,
                    ctx.pattern.size()
                ));
            }
            if !ready && n > MAX_SETUP_FRAME {
                return Err(format!(
                    "connection {} ({:?}): a {n}-byte frame",
                    self.id, self.phase
                ));
            }
            if self.rend - self.rstart < 4 + n {
                need = 4 + n;
                break;
            }
            let start = self.rstart + 4;
            self.rstart += 4 + n;
            if ready {
                let sent = self.sent_at.pop_front().ok_or_else(|| {
                    format!(
                        "connection {}: a frame arrived that was never sent",
                        self.id
                    )
                })?;
                ctx.pattern
                    .check(&self.rbuf[start..start + n], self.id, self.recv_seq)?;
                self.recv_seq += 1;
                if ctx.measuring {
                    ctx.stats.frames += 1;
                    ctx.stats.bytes += n as u64;
                    ctx.stats
                        .hist
                        .record_n(now.duration_since(sent).as_nanos() as u64, 1);
                }
            } else {
                let frame = self.rbuf[start..start + n].to_vec();
                self.setup_frame(&frame, ctx)?;
            }
        }
        // Move a partial frame to the front when it is small (cheap) or
        // when the rest of it would not fit after it.
        let left = self.rend - self.rstart;
        if left == 0 {
            self.rstart = 0;
            self.rend = 0;
        } else if left <= 256 || self.rbuf.len() - self.rstart < need {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rstart = 0;
            self.rend = left;
        }
        Ok(())
    }

    fn setup_frame(&mut self, f: &[u8], ctx: &Ctx) -> Result<(), String> {
        let id = self.id;
        let key = ctx.key.unwrap_or_default();
        match self.phase {
            Phase::AwaitChallenge => {
                let body = f.strip_prefix(CHALLENGE).ok_or_else(|| {
                    format!("connection {id}: expected #CHALLENGE#, got {:?}", show(f))
                })?;
                if !body.starts_with(TAG) || body.len() < 20 {
                    return Err(format!(
                        "connection {id}: unsupported challenge {:?}",
                        show(body)
                    ));
                }
                push_frame(&mut self.wbuf, &[TAG, &hmac_sha256(key, body)]);
                self.phase = Phase::AwaitWelcome;
            }
            Phase::AwaitWelcome => {
                if f == FAILURE {
                    return Err(format!(
                        "connection {id}: the server refused our key (#FAILURE#)"
                    ));
                }
                if f != WELCOME {
                    return Err(format!(
                        "connection {id}: expected #WELCOME#, got {:?}",
                        show(f)
                    ));
                }
                let mut nonce = [0u8; 40];
                random_bytes(&mut nonce)?;
                self.challenge = [TAG, &nonce].concat();
                push_frame(&mut self.wbuf, &[CHALLENGE, &self.challenge]);
                self.phase = Phase::AwaitResponse;
            }
            Phase::AwaitResponse => {
                // A benchmark client: a plain comparison is enough here.
                let want = [TAG, &hmac_sha256(key, &self.challenge)].concat();
                if f != want {
                    push_frame(&mut self.wbuf, &[FAILURE]);
                    let _ = self.flush();
                    return Err(format!(
                        "connection {id}: the server answered our challenge wrongly"
                    ));
                }
                self.challenge = Vec::new();
                push_frame(&mut self.wbuf, &[WELCOME]);
                self.send_ping();
            }
            Phase::AwaitPing => {
                if f.len() != 8 || &f[..4] != b"ping" || f[4..] != id.to_le_bytes() {
                    return Err(format!(
                        "connection {id}: the ping came back as {:?}",
                        show(f)
                    ));
                }
                self.phase = Phase::Ready;
                if self.active {
                    self.rbuf.resize(ctx.rbuf_size, 0);
                }
            }
            Phase::Connecting | Phase::Ready => unreachable!("setup_frame in {:?}", self.phase),
        }
        Ok(())
    }

    /// Keeps `depth` frames in flight, all queued with one timestamp.
    fn top_up(&mut self, ctx: &Ctx, now: Instant) {
        if !ctx.sending
            || !self.active
            || self.phase != Phase::Ready
            || self.in_flight() >= ctx.depth
        {
            return;
        }
        if self.woff > 0 && self.woff * 2 >= self.wbuf.len() {
            self.wbuf.drain(..self.woff);
            self.woff = 0;
        }
        while self.in_flight() < ctx.depth {
            ctx.pattern
                .append_frame(&mut self.wbuf, self.id, self.send_seq);
            self.sent_at.push_back(now);
            self.send_seq += 1;
        }
    }

    pub fn write_pending(&self) -> bool {
        self.woff < self.wbuf.len()
    }

    fn flush(&mut self) -> Result<(), String> {
        while self.woff < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.woff..]) {
                Ok(0) => return Err(format!("connection {}: send wrote nothing", self.id)),
                Ok(n) => self.woff += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err("send", e)),
            }
        }
        self.wbuf.clear();
        self.woff = 0;
        Ok(())
    }
}

/// A frame for an error message: text if it is text, else its first bytes.
fn show(f: &[u8]) -> String {
    let head = &f[..f.len().min(48)];
    match std::str::from_utf8(head) {
        Ok(s) => s.to_string(),
        Err(_) => format!("{head:02x?}"),
    }
}

//! One client connection: connect, the optional TLS handshake (rustls),
//! the optional HMAC-SHA256 handshake (the client's side of PROTOCOL.md,
//! inside TLS when both are on), a ping echo that proves the server serves
//! it, then a closed loop of `depth` frames in flight, every echoed byte
//! checked in place as it arrives, every frame timed.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use sha2::Sha256;

use crate::hist::Hist;
use crate::pattern::{Mismatch, Pattern};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const TAG: &[u8] = b"{sha256}";
/// Handshake frames are at most 256 bytes (PROTOCOL.md).
const MAX_SETUP_FRAME: usize = 256;
/// Frames up to this size are laid out in one buffer for one write; bigger
/// ones go out by writev straight from the pattern table, never copied.
const SMALL_FRAME: usize = 4096;
/// At most this many bytes of small frames, or big frames, per write.
const WRITE_BATCH: usize = 256 * 1024;
const BIG_FRAMES_PER_WRITE: u64 = 16;

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
    /// Every frame echoed, warm-up and drain included (for costs per frame).
    pub all_frames: u64,
    pub frames: u64,
    pub bytes: u64,
    pub hist: Hist,
}

/// What every connection of a thread shares.
pub struct Ctx<'a> {
    pub pattern: &'a Pattern,
    pub key: Option<&'a [u8]>,
    pub depth: u64,
    /// --churn: no frames; a connection is closed and opened anew once ready.
    pub churn: bool,
    pub sending: bool,
    pub measuring: bool,
    pub stats: Stats,
    /// One receive buffer for all the thread's connections: each chunk is
    /// checked as soon as it is read, so nothing is kept per connection.
    pub rbuf: Vec<u8>,
    /// Where small frames are laid out for one write.
    pub scratch: Vec<u8>,
}

pub struct Conn {
    pub id: u32,
    pub active: bool,
    pub stream: TcpStream,
    /// The TLS session over `stream`, if TLS.
    tls: Option<Box<ClientConnection>>,
    pub phase: Phase,
    /// When connect() was called (churn measures connect-to-echo).
    pub started: Instant,
    /// Our challenge (M2), kept until the server answers it.
    challenge: Vec<u8>,
    /// Handshake bytes received and not yet a whole frame.
    setup_in: Vec<u8>,
    /// Handshake bytes to send.
    setup_out: Vec<u8>,
    /// Frames released so far (in flight: send_seq - recv_seq).
    send_seq: u64,
    /// The next byte to write: byte tx_pos of frame tx_seq.
    tx_seq: u64,
    tx_pos: usize,
    /// The next byte expected: byte rx_pos of frame recv_seq.
    recv_seq: u64,
    rx_pos: usize,
    /// When each frame in flight was released, oldest first.
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
    pub fn connect(
        id: u32,
        active: bool,
        addr: SocketAddr,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Conn, String> {
        let started = Instant::now();
        let stream = TcpStream::connect(addr)
            .map_err(|e| format!("connection {id}: connect to {addr}: {e}"))?;
        let tls = match tls {
            Some(cfg) => {
                let mut c = ClientConnection::new(
                    cfg.clone(),
                    ServerName::try_from("localhost").expect("a name"),
                )
                .map_err(|e| format!("connection {id}: TLS: {e}"))?;
                // As much sealed data per write as a plaintext batch
                // (rustls's default is 64 KiB).
                c.set_buffer_limit(Some(WRITE_BATCH));
                Some(Box::new(c))
            }
            None => None,
        };
        Ok(Conn {
            id,
            active,
            stream,
            tls,
            started,
            phase: Phase::Connecting,
            challenge: Vec::new(),
            setup_in: Vec::new(),
            setup_out: Vec::new(),
            send_seq: 0,
            tx_seq: 0,
            tx_pos: 0,
            recv_seq: 0,
            rx_pos: 0,
            sent_at: VecDeque::new(),
        })
    }

    pub fn in_flight(&self) -> u64 {
        self.send_seq - self.recv_seq
    }

    pub fn write_pending(&self) -> bool {
        !self.setup_out.is_empty()
            || self.tx_seq < self.send_seq
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Ends TLS politely (close_notify) before the socket is closed.
    pub fn close_tls(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = Self::flush_tls(&mut self.stream, tls);
        }
    }

    /// Reads plaintext: from the socket, or out of TLS (reading and
    /// decrypting records until some plaintext or WouldBlock).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
            // Handshake messages to answer.
            Self::flush_tls(&mut self.stream, tls)?;
        }
    }

    /// Writes what TLS has encrypted; Ok once it is all out or the socket
    /// is full (a writable edge brings us back).
    fn flush_tls(stream: &mut TcpStream, tls: &mut ClientConnection) -> io::Result<()> {
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes plaintext: to the socket, or into TLS (which takes up to its
    /// buffer limit) and on out. WouldBlock when neither takes a byte.
    fn send(&mut self, bufs: &[IoSlice]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return if bufs.len() == 1 {
                self.stream.write(&bufs[0])
            } else {
                self.stream.write_vectored(bufs)
            };
        };
        Self::flush_tls(&mut self.stream, tls)?;
        let mut n = 0;
        for b in bufs {
            let took = tls.writer().write(b)?;
            n += took;
            if took < b.len() {
                break;
            }
        }
        Self::flush_tls(&mut self.stream, tls)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Handles a readiness event: finish connecting, read and check all that
    /// arrived, refill the window, write.
    pub fn on_event(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        if self.phase == Phase::Connecting && !self.connected(ctx)? {
            return Ok(());
        }
        self.read_all(ctx, now)?;
        self.kick(ctx, now)
    }

    /// Refills the window and writes (also what starts the traffic).
    pub fn kick(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        if let Some(tls) = self.tls.as_mut() {
            Self::flush_tls(&mut self.stream, tls)
                .map_err(|e| format!("connection {}: send: {e}", self.id))?;
        }
        if ctx.sending && self.active && !ctx.churn && self.phase == Phase::Ready {
            while self.in_flight() < ctx.depth {
                self.sent_at.push_back(now);
                self.send_seq += 1;
            }
        }
        self.flush_setup()?;
        self.flush_frames(ctx)
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
        if let Some(tls) = self.tls.as_mut() {
            // The ClientHello, before anything else is said.
            Self::flush_tls(&mut self.stream, tls)
                .map_err(|e| format!("connection {}: TLS: {e}", self.id))?;
        }
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
        push_frame(&mut self.setup_out, &[b"ping", &self.id.to_le_bytes()]);
        self.phase = Phase::AwaitPing;
    }

    fn read_all(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), String> {
        loop {
            match self.recv(&mut ctx.rbuf) {
                Ok(0) => {
                    return Err(format!(
                        "connection {} ({:?}, {} frames in flight): the server closed it",
                        self.id,
                        self.phase,
                        self.in_flight()
                    ))
                }
                Ok(n) => {
                    if self.phase == Phase::Ready {
                        self.take_echo(
                            &ctx.rbuf[..n],
                            ctx.pattern,
                            &mut ctx.stats,
                            ctx.measuring,
                            now,
                        )?;
                    } else {
                        self.take_setup(&ctx.rbuf[..n], ctx.key)?;
                    }
                    // A short read emptied the socket; on Linux any later
                    // arrival raises a new edge, so no extra read to see EAGAIN.
                    // (Not so for TLS: a short read may have left records
                    // in the socket or plaintext in rustls.)
                    if n < ctx.rbuf.len() && self.tls.is_none() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err("receive", e)),
            }
        }
    }

    /// Checks echoed bytes against the stream we sent, in place.
    fn take_echo(
        &mut self,
        mut data: &[u8],
        pattern: &Pattern,
        stats: &mut Stats,
        measuring: bool,
        now: Instant,
    ) -> Result<(), String> {
        while !data.is_empty() {
            if self.recv_seq == self.send_seq {
                return Err(format!(
                    "connection {}: {} bytes arrived after the echo of every frame sent",
                    self.id,
                    data.len()
                ));
            }
            let used = pattern
                .compare(self.id, self.recv_seq, self.rx_pos, data)
                .map_err(|m| self.describe(&m))?;
            data = &data[used..];
            self.rx_pos += used;
            if self.rx_pos == pattern.frame_len() {
                self.rx_pos = 0;
                self.recv_seq += 1;
                let sent = self
                    .sent_at
                    .pop_front()
                    .expect("a time per frame in flight");
                stats.all_frames += 1;
                if measuring {
                    stats.frames += 1;
                    stats.bytes += pattern.size() as u64;
                    stats
                        .hist
                        .record_n(now.duration_since(sent).as_nanos() as u64, 1);
                }
            }
        }
        Ok(())
    }

    fn describe(&self, m: &Mismatch) -> String {
        let what = match m.at {
            0..=3 => "its header (a different size)".to_string(),
            4..=11 => "its sequence number: a frame lost, duplicated or reordered".to_string(),
            12..=15 => "its connection number: another connection's frame".to_string(),
            at => format!("payload byte {}: corrupted", at - 4),
        };
        format!(
            "connection {}: the echo of frame {} differs at {what} (got 0x{:02x}, want 0x{:02x})",
            self.id, self.recv_seq, m.got, m.want
        )
    }

    fn take_setup(&mut self, data: &[u8], key: Option<&[u8]>) -> Result<(), String> {
        self.setup_in.extend_from_slice(data);
        let mut at = 0;
        while self.phase != Phase::Ready && self.setup_in.len() - at >= 4 {
            let h = &self.setup_in[at..at + 4];
            let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if n > MAX_SETUP_FRAME {
                return Err(format!(
                    "connection {} ({:?}): a frame of {n} bytes",
                    self.id, self.phase
                ));
            }
            if self.setup_in.len() - at < 4 + n {
                break;
            }
            let frame = self.setup_in[at + 4..at + 4 + n].to_vec();
            at += 4 + n;
            self.setup_frame(&frame, key.unwrap_or_default())?;
        }
        self.setup_in.drain(..at);
        if self.phase == Phase::Ready {
            if !self.setup_in.is_empty() {
                return Err(format!(
                    "connection {}: bytes arrived after the ping's echo",
                    self.id
                ));
            }
            self.setup_in = Vec::new();
        }
        Ok(())
    }

    fn setup_frame(&mut self, f: &[u8], key: &[u8]) -> Result<(), String> {
        let id = self.id;
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
                push_frame(&mut self.setup_out, &[TAG, &hmac_sha256(key, body)]);
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
                push_frame(&mut self.setup_out, &[CHALLENGE, &self.challenge]);
                self.phase = Phase::AwaitResponse;
            }
            Phase::AwaitResponse => {
                // A benchmark client: a plain comparison is enough here.
                let want = [TAG, &hmac_sha256(key, &self.challenge)].concat();
                if f != want {
                    push_frame(&mut self.setup_out, &[FAILURE]);
                    let _ = self.flush_setup();
                    return Err(format!(
                        "connection {id}: the server answered our challenge wrongly"
                    ));
                }
                self.challenge = Vec::new();
                push_frame(&mut self.setup_out, &[WELCOME]);
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
            }
            Phase::Connecting | Phase::Ready => unreachable!("setup_frame in {:?}", self.phase),
        }
        Ok(())
    }

    fn flush_setup(&mut self) -> Result<(), String> {
        while !self.setup_out.is_empty() {
            let out = std::mem::take(&mut self.setup_out);
            let res = self.send(&[IoSlice::new(&out)]);
            self.setup_out = out;
            match res {
                Ok(n) => drop(self.setup_out.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err("send", e)),
            }
        }
        Ok(())
    }

    /// Writes the released frames: small ones laid out in one buffer, big
    /// ones by writev from the pattern table. A short write just moves the
    /// (tx_seq, tx_pos) cursor; the rest is generated again next time.
    fn flush_frames(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let (pattern, flen) = (ctx.pattern, ctx.pattern.frame_len());
        while self.tx_seq < self.send_seq {
            let res = if flen <= SMALL_FRAME {
                let buf = &mut ctx.scratch;
                buf.clear();
                let (mut seq, mut from) = (self.tx_seq, self.tx_pos);
                while seq < self.send_seq && buf.len() < WRITE_BATCH {
                    pattern.append_frame(buf, self.id, seq, from);
                    (seq, from) = (seq + 1, 0);
                }
                let buf = std::mem::take(&mut ctx.scratch);
                let res = self.send(&[IoSlice::new(&buf)]);
                ctx.scratch = buf;
                res
            } else {
                let last = self.send_seq.min(self.tx_seq + BIG_FRAMES_PER_WRITE);
                let pieces: Vec<_> = (self.tx_seq..last)
                    .map(|seq| pattern.pieces(self.id, seq))
                    .collect();
                let mut iov = Vec::with_capacity(2 * pieces.len());
                for (i, (head, head_len, tail)) in pieces.iter().enumerate() {
                    let skip = if i == 0 { self.tx_pos } else { 0 };
                    if skip < *head_len {
                        iov.push(IoSlice::new(&head[skip..*head_len]));
                        iov.push(IoSlice::new(tail));
                    } else {
                        iov.push(IoSlice::new(&tail[skip - head_len..]));
                    }
                }
                let res = self.send(&iov);
                drop(iov);
                res
            };
            match res {
                Ok(0) => return Err(format!("connection {}: send wrote nothing", self.id)),
                Ok(n) => {
                    let total = self.tx_pos + n;
                    self.tx_seq += (total / flen) as u64;
                    self.tx_pos = total % flen;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err("send", e)),
            }
        }
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

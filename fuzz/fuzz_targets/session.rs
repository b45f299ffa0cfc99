//! The stream session state machine (`proto::session::Session`): PROXY
//! header, verify, handshake, frames, end of stream.
//!
//! Mode 0, a stranger: a server session (PROXY mode and keys from the
//! input; the key is a constant never in the input) fed the rest of the
//! input in chunks of the input's choosing. Checked:
//! - with a key, it never opens (a peer that does not know the key);
//! - every frame it hands out lies inside the buffer and is at most the
//!   maximum frame size;
//! - once it failed, it stays failed; nothing panics.
//!
//! Mode 1, honest peers: a client and a server session with the same key
//! (and, when the input says so, a PROXY header first) talk through
//! chunkings of the input's choosing; both must open, then the frames the
//! input makes arrive whole and in order.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sockserv::proto::frame::encode_header;
use sockserv::proto::handshake::{Role, NONCE_LEN};
use sockserv::proto::recv_buffer::RecvBuffer;
use sockserv::proto::session::{Session, SessionParams, Stage, Step};
use sockserv::ProxyMode;

#[path = "input.rs"]
mod input;
use input::Input;

const SECRET: &[u8] = b"\x9c\x1e\x7f sockserv session fuzz secret \x03\xd4";
const MAX_FRAME: u64 = 4096;

fn params(role: Role, key: Option<&[u8]>, proxy: ProxyMode) -> SessionParams {
    SessionParams {
        role,
        keys: Arc::from(key.map(|k| vec![k.to_vec()]).unwrap_or_default()),
        proxy,
        max_frame_size: MAX_FRAME,
        preamble_timeout: Duration::from_secs(10),
        tls: None,
    }
}

/// Polls until the session needs more; returns the payloads it handed out
/// and whether it opened, or `None` once it failed.
fn drain(s: &mut Session, buf: &mut RecvBuffer, opened: &mut bool) -> Option<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    for _ in 0..10_000 {
        let before = buf.pending().len();
        match s.poll(buf) {
            Ok(Step::NeedMore(_)) => return Some(frames),
            Ok(Step::Proxy { verify, .. }) => {
                if verify {
                    s.verified(true);
                }
            }
            Ok(Step::Open) => {
                assert!(!*opened, "Open reported twice");
                *opened = true;
            }
            Ok(Step::Frame(range)) => {
                assert!(*opened, "a frame before the session opened");
                assert!(range.len() as u64 <= MAX_FRAME, "frame over the maximum");
                assert!(range.len() <= before, "frame outside the buffer");
                frames.push(buf.bytes(range).to_vec());
            }
            Err(_) => {
                assert_eq!(s.stage(), Stage::Failed);
                assert!(s.poll(buf).is_err(), "a failed session came back");
                return None;
            }
        }
    }
    panic!("poll did not settle");
}

fn stranger(mut input: Input) {
    let mode = input.byte();
    let proxy = [ProxyMode::Off, ProxyMode::Optional, ProxyMode::Required][(mode % 3) as usize];
    let key = (mode & 4 != 0).then_some(SECRET);
    let mut s = Session::new(
        params(Role::Server, key, proxy),
        "tcp://192.0.2.1:1".into(),
        Instant::now(),
        [7; NONCE_LEN],
    );
    let mut buf = RecvBuffer::default();
    let mut opened = false;
    let mut out = Vec::new();
    while !input.0.is_empty() {
        let n = input.byte() as usize;
        buf.extend(input.bytes(n));
        let alive = drain(&mut s, &mut buf, &mut opened);
        s.take_transmit(&mut out);
        if key.is_some() {
            assert!(!opened, "a stranger got through the handshake");
        }
        if alive.is_none() {
            return;
        }
    }
    let _ = s.end_of_stream(&buf);
}

fn chunk(input: &mut Input) -> usize {
    match input.byte() {
        0 => usize::MAX,
        n => n as usize,
    }
}

fn honest(mut input: Input) {
    let mode = input.byte();
    let key = input.bytes(1 + (mode as usize >> 4));
    let key = if key.is_empty() { b"k".as_slice() } else { key };
    let proxied = mode & 1 != 0;
    let proxy = if proxied {
        ProxyMode::Required
    } else {
        ProxyMode::Off
    };
    let now = Instant::now();
    let mut server = Session::new(
        params(Role::Server, Some(key), proxy),
        "s".into(),
        now,
        [1; NONCE_LEN],
    );
    let mut client = Session::new(
        params(Role::Client, Some(key), proxy),
        "c".into(),
        now,
        [2; NONCE_LEN],
    );
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    if proxied {
        to_server.extend_from_slice(b"PROXY TCP4 198.51.100.1 192.0.2.1 1000 80\r\n");
    }
    let (mut sbuf, mut cbuf) = (RecvBuffer::default(), RecvBuffer::default());
    let (mut s_open, mut c_open) = (false, false);
    for _ in 0..1000 {
        client.take_transmit(&mut to_server);
        server.take_transmit(&mut to_client);
        // Deliver a prefix of each direction, as the input chunks it (all
        // of it once the input has run out).
        let n = chunk(&mut input).min(to_server.len());
        sbuf.extend(&to_server[..n]);
        to_server.drain(..n);
        let n = chunk(&mut input).min(to_client.len());
        cbuf.extend(&to_client[..n]);
        to_client.drain(..n);
        drain(&mut server, &mut sbuf, &mut s_open).expect("honest server failed");
        drain(&mut client, &mut cbuf, &mut c_open).expect("honest client failed");
        if s_open && c_open && to_server.is_empty() && !client.wants_transmit() {
            break;
        }
    }
    assert!(s_open && c_open, "honest peers did not both open");
    // Frames after the handshake arrive whole and in order.
    let mut sent = Vec::new();
    let mut wire = Vec::new();
    while !input.0.is_empty() && sent.len() < 32 {
        let len = input.byte() as usize;
        let payload = input.bytes(len).to_vec();
        wire.extend_from_slice(encode_header(payload.len() as u64).as_bytes());
        wire.extend_from_slice(&payload);
        sent.push(payload);
    }
    let mut got = Vec::new();
    for chunk in wire.chunks(7) {
        sbuf.extend(chunk);
        got.extend(drain(&mut server, &mut sbuf, &mut s_open).expect("frames refused"));
    }
    assert_eq!(got, sent);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    if input.byte() % 2 == 0 {
        stranger(input);
    } else {
        honest(input);
    }
});

//! The frame decoder (`RecvBuffer` over `decode_header`) fed arbitrary bytes
//! in arbitrary chunks, the way a socket hands them over.
//!
//! Input: 4 bytes of maximum payload, 1 byte of flags, 2 bytes of chunking
//! seed, 1 byte of largest chunk, then the stream.
//!
//! Checked, for every input:
//! - no panic (libfuzzer-sys aborts on any panic, even a caught one);
//! - the buffer never grows past what the maximum frame size allows (and
//!   the run scripts pass -malloc_limit_mb, so any larger malloc crashes);
//! - the frames decoded, and the error that ends the stream if any, are
//!   those of a reference decoder reading the whole stream at once;
//! - `NeedMore(n)` is exact: n more bytes are what the next step needs;
//! - `unconsume` gives back the same frame;
//! - `encode_header` round-trips through `decode_header` for any length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockserv::proto::frame::{decode_header, encode_header, MAX_HEADER_LEN, MAX_SHORT_PAYLOAD};
use sockserv::proto::recv_buffer::{Decoded, RecvBuffer};
use sockserv::ErrorKind;

/// How the reference decoder ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// No bytes left over.
    Clean,
    /// The stream stops inside a frame; the next step needs this many
    /// bytes in all (from the start of that frame).
    Incomplete(usize),
    Error(ErrorKind),
}

/// The protocol as PROTOCOL.md states it, written out separately from
/// `frame.rs`: whole stream in, frames and how it ends out.
fn reference(stream: &[u8], max: u64) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        if rest.len() < 4 {
            return (frames, End::Incomplete(4));
        }
        let short = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let (header, n) = match short {
            0.. => (4usize, short as u64),
            -1 => {
                if rest.len() < 12 {
                    return (frames, End::Incomplete(12));
                }
                let mut long = [0u8; 8];
                long.copy_from_slice(&rest[4..12]);
                (12, u64::from_be_bytes(long))
            }
            _ => return (frames, End::Error(ErrorKind::Protocol)),
        };
        if n > max {
            return (frames, End::Error(ErrorKind::FrameTooLarge));
        }
        let total = header + n as usize;
        if rest.len() < total {
            return (frames, End::Incomplete(total));
        }
        frames.push(&rest[header..total]);
        at += total;
    }
}

/// A small deterministic generator for chunk sizes.
struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    // Up to 1 MiB, 0 included: decode_header takes any maximum.
    let max = u64::from(u32::from_be_bytes([data[0], data[1], data[2], data[3]])) % ((1 << 20) + 1);
    let flags = data[4];
    let mut rng = XorShift(u32::from(u16::from_be_bytes([data[5], data[6]])) | 1 << 16);
    let largest_chunk = usize::from(data[7]) + 1;
    let stream = &data[8..];

    // Any length round-trips through the header codec, in the short form
    // exactly when it fits.
    if stream.len() >= 8 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&stream[..8]);
        let n = u64::from_be_bytes(n);
        let h = encode_header(n);
        let d = decode_header(h.as_bytes(), u64::MAX).unwrap().unwrap();
        assert_eq!(d.payload_len, n);
        assert_eq!(d.header_len, if n <= MAX_SHORT_PAYLOAD { 4 } else { 12 });
        assert_eq!(d.header_len, h.as_bytes().len());
    }

    let (expected, end) = reference(stream, max);
    let initial = [0, 16, 4096, 65536][usize::from(flags & 3)];
    let unconsume = flags & 4 != 0;
    // The buffer holds at most one partial frame plus a read's slack, and
    // grows by doubling: never more than twice that.
    let bound = initial.max(2 * (max as usize + MAX_HEADER_LEN + 4096));

    let mut buf = RecvBuffer::with_capacity(initial);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut fed = 0;
    let mut error = None;
    'feed: loop {
        // Decode every whole frame buffered, as the drivers do.
        loop {
            match buf.next_frame(max) {
                Ok(Decoded::Frame(range)) => {
                    let frame = buf.bytes(range.clone()).to_vec();
                    if unconsume {
                        // Give it back as recv_into does when the caller's
                        // buffer is too small (it re-encodes the header,
                        // which also works for a long-form header of a
                        // small frame: its last 4 bytes are the short form).
                        let header_len = encode_header(frame.len() as u64).as_bytes().len();
                        buf.unconsume(&range, header_len);
                        match buf.next_frame(max) {
                            Ok(Decoded::Frame(again)) => {
                                assert!(
                                    buf.bytes(again) == frame.as_slice(),
                                    "unconsume changed the frame"
                                )
                            }
                            other => panic!("unconsume lost the frame: {other:?}"),
                        }
                    }
                    got.push(frame);
                }
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n > 0);
                    // The reference, on the buffered bytes alone, must
                    // see no whole frame and need exactly n more.
                    let pending = buf.pending();
                    let (frames, next) = reference(pending, max);
                    assert!(frames.is_empty(), "NeedMore with a whole frame buffered");
                    let total = match next {
                        End::Incomplete(total) => total,
                        End::Clean => 4,
                        End::Error(kind) => panic!("NeedMore where {kind:?} is due"),
                    };
                    assert_eq!(pending.len() + n, total, "NeedMore is not exact");
                    break;
                }
                Err(e) => {
                    error = Some(e.kind());
                    break 'feed;
                }
            }
        }
        if fed == stream.len() {
            break;
        }
        let chunk = (rng.next() as usize % largest_chunk + 1).min(stream.len() - fed);
        let spare = buf.spare(chunk);
        assert!(spare.len() >= chunk);
        spare[..chunk].copy_from_slice(&stream[fed..fed + chunk]);
        buf.commit(chunk);
        fed += chunk;
        assert!(
            buf.capacity() <= bound,
            "buffer of {} bytes for a maximum frame of {max}",
            buf.capacity()
        );
    }

    assert_eq!(got.len(), expected.len(), "frame count differs");
    for (g, e) in got.iter().zip(&expected) {
        assert!(g == e, "frame bytes differ");
    }
    match end {
        End::Error(kind) => assert_eq!(error, Some(kind)),
        End::Clean => {
            assert_eq!(error, None);
            assert!(buf.pending().is_empty());
        }
        End::Incomplete(_) => assert_eq!(error, None),
    }
});

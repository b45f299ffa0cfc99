//! A receive buffer that frames are decoded out of. One read fills it with as
//! many bytes as the kernel has, so many small frames cost one system call;
//! its memory is reused, so steady-state receiving allocates nothing.

use std::ops::Range;

use crate::error::Result;
use crate::proto::frame::{self, Header};

/// What [`RecvBuffer::next_frame`] found in the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame; the range indexes [`RecvBuffer::bytes`].
    Frame(Range<usize>),
    /// Not a whole frame yet: at least this many more bytes must arrive.
    NeedMore(usize),
}

#[derive(Debug, Default)]
/// The receive buffer of a framed stream: bytes arrive at the end, whole
/// frames are taken from the front.
pub struct RecvBuffer {
    /// Initialised storage; `data[start..end]` holds the unread bytes.
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuffer {
    /// An empty buffer holding `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> RecvBuffer {
        RecvBuffer {
            data: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// Bytes received but not yet handed out as frames.
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// The payload bytes of a frame returned by [`Self::next_frame`].
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.data[range]
    }

    /// Decodes the next frame from the buffered bytes and marks it consumed:
    /// its payload stays in place until the next call that fills the buffer.
    pub fn next_frame(&mut self, max_payload: u64) -> Result<Decoded> {
        let available = self.end - self.start;
        let Some(header) = frame::decode_header(self.pending(), max_payload)? else {
            let header_len = if available < frame::MIN_HEADER_LEN {
                frame::MIN_HEADER_LEN
            } else {
                frame::MAX_HEADER_LEN
            };
            return Ok(Decoded::NeedMore(header_len - available));
        };
        let frame_len = frame_len(&header);
        if available < frame_len {
            return Ok(Decoded::NeedMore(frame_len - available));
        }
        let payload = self.start + header.header_len..self.start + frame_len;
        self.start += frame_len;
        Ok(Decoded::Frame(payload))
    }

    /// Gives the frame decoded last back to the buffer, so the next call to
    /// [`Self::next_frame`] returns it again (for a caller buffer too small).
    pub fn unconsume(&mut self, payload: &Range<usize>, header_len: usize) {
        debug_assert_eq!(payload.end, self.start);
        self.start = payload.start - header_len;
    }

    /// Free space after the unread bytes, at least `want` bytes long: the
    /// unread bytes are moved to the front or the storage grows as needed.
    /// Fill it, then report how much was written with [`Self::commit`].
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.data.len() - self.end < want {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.data.len() - self.end < want {
                let needed = self.end + want;
                self.data.resize(needed.max(self.data.len() * 2), 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` bytes of the slice from [`Self::spare`] as received.
    pub fn commit(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.data.len());
    }

    /// Drops the first `n` unread bytes (a preamble such as a PROXY header).
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.end - self.start, "consume past the unread bytes");
        self.start += n;
    }

    /// Forgets the unread bytes.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Appends `bytes` after the unread ones.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Frees the storage when nothing is unread and it is larger than
    /// `keep` bytes (after a large frame, an idle connection holds nothing).
    pub fn release_if_idle(&mut self, keep: usize) {
        if self.start == self.end && self.data.len() > keep {
            *self = RecvBuffer::default();
        }
    }

    /// Bytes of storage held, for memory accounting.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }
}

/// A frame's length as a `usize`; `decode_header` already capped it at the
/// maximum frame size, which the config keeps addressable.
fn frame_len(header: &Header) -> usize {
    usize::try_from(header.frame_len()).expect("max frame size fits in memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::encode_header;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = encode_header(payload.len() as u64).as_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_several_frames_from_one_fill() {
        let mut buf = RecvBuffer::with_capacity(16);
        let mut stream = framed(b"one");
        stream.extend(framed(b""));
        stream.extend(framed(b"three"));
        buf.extend(&stream);
        let mut got = Vec::new();
        while let Decoded::Frame(r) = buf.next_frame(100).unwrap() {
            got.push(buf.bytes(r).to_vec());
        }
        assert_eq!(got, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert!(buf.pending().is_empty());
    }

    #[test]
    fn reports_what_is_missing() {
        let mut buf = RecvBuffer::with_capacity(0);
        assert_eq!(buf.next_frame(100).unwrap(), Decoded::NeedMore(4));
        buf.extend(&[0, 0]);
        assert_eq!(buf.next_frame(100).unwrap(), Decoded::NeedMore(2));
        buf.extend(&[0, 10, 1]);
        assert_eq!(buf.next_frame(100).unwrap(), Decoded::NeedMore(9));
        buf.extend(&[0xff; 4]);
        assert_eq!(buf.next_frame(100).unwrap(), Decoded::NeedMore(5));
    }

    #[test]
    fn long_marker_waits_for_its_eight_bytes() {
        let mut buf = RecvBuffer::with_capacity(0);
        buf.extend(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(buf.next_frame(100).unwrap(), Decoded::NeedMore(7));
    }

    #[test]
    fn unconsume_returns_the_same_frame() {
        let mut buf = RecvBuffer::with_capacity(0);
        buf.extend(&framed(b"abc"));
        let Decoded::Frame(r) = buf.next_frame(100).unwrap() else {
            panic!("frame expected")
        };
        buf.unconsume(&r, 4);
        assert_eq!(buf.next_frame(100).unwrap(), Decoded::Frame(r));
    }

    #[test]
    fn spare_compacts_before_growing() {
        let mut buf = RecvBuffer::with_capacity(8);
        buf.extend(&framed(b"ab"));
        buf.extend(&[0, 0]);
        assert!(matches!(buf.next_frame(100).unwrap(), Decoded::Frame(_)));
        let len = buf.spare(6).len();
        assert_eq!((len, buf.capacity()), (6, 8));
        assert_eq!(buf.pending(), &[0, 0]);
    }
}

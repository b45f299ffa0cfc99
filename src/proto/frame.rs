//! The frame codec of `multiprocessing.connection`: a big-endian length
//! header, then the payload. No I/O here: the drivers own the sockets.
//!
//! | payload length n      | header                                        |
//! |-----------------------|-----------------------------------------------|
//! | n <= 0x7fffffff       | n as a big-endian `i32` (4 bytes)             |
//! | n  > 0x7fffffff       | `ff ff ff ff`, then n as a big-endian `u64`   |

use crate::error::{Error, ErrorKind, Result};

/// The largest payload the 4-byte header can carry.
pub const MAX_SHORT_PAYLOAD: u64 = 0x7fff_ffff;
/// The longest header: the -1 marker and a 64-bit length.
pub const MAX_HEADER_LEN: usize = 12;
/// The short header; every frame starts with these 4 bytes.
pub const MIN_HEADER_LEN: usize = 4;
const LONG_FORM_MARKER: i32 = -1;

/// A header ready to be written: up to 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: usize,
}

impl EncodedHeader {
    /// The encoded header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Encodes the header for a payload of `payload_len` bytes, choosing the
/// short form whenever it fits (as Python does).
pub fn encode_header(payload_len: u64) -> EncodedHeader {
    let mut bytes = [0u8; MAX_HEADER_LEN];
    if payload_len <= MAX_SHORT_PAYLOAD {
        bytes[..MIN_HEADER_LEN].copy_from_slice(&(payload_len as u32).to_be_bytes());
        EncodedHeader {
            bytes,
            len: MIN_HEADER_LEN,
        }
    } else {
        bytes[..MIN_HEADER_LEN].copy_from_slice(&LONG_FORM_MARKER.to_be_bytes());
        bytes[MIN_HEADER_LEN..].copy_from_slice(&payload_len.to_be_bytes());
        EncodedHeader {
            bytes,
            len: MAX_HEADER_LEN,
        }
    }
}

/// A decoded header: how many bytes it took and how long the payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the header itself.
    pub header_len: usize,
    /// Bytes of the payload that follows.
    pub payload_len: u64,
}

impl Header {
    /// Header plus payload, in bytes.
    pub fn frame_len(&self) -> u64 {
        self.header_len as u64 + self.payload_len
    }
}

/// Decodes the header at the start of `buf`. `Ok(None)` means more bytes are
/// needed. The length is checked against `max_payload` here, before anyone
/// allocates or reads the payload.
pub fn decode_header(buf: &[u8], max_payload: u64) -> Result<Option<Header>> {
    let Some(short) = buf.get(..MIN_HEADER_LEN) else {
        return Ok(None);
    };
    let short = i32::from_be_bytes(short.try_into().expect("4 bytes"));
    let header = if short >= 0 {
        Header {
            header_len: MIN_HEADER_LEN,
            payload_len: short as u64,
        }
    } else if short == LONG_FORM_MARKER {
        let Some(long) = buf.get(MIN_HEADER_LEN..MAX_HEADER_LEN) else {
            return Ok(None);
        };
        Header {
            header_len: MAX_HEADER_LEN,
            payload_len: u64::from_be_bytes(long.try_into().expect("8 bytes")),
        }
    } else {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!("invalid frame header: negative length {short} (only -1 is allowed, as the long-form marker)"),
        ));
    };
    if header.payload_len > max_payload {
        return Err(Error::new(
            ErrorKind::FrameTooLarge,
            format!(
                "frame of {} bytes exceeds the maximum frame size of {} bytes",
                header.payload_len, max_payload
            ),
        ));
    }
    Ok(Some(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_is_big_endian_i32() {
        assert_eq!(encode_header(0).as_bytes(), &[0, 0, 0, 0]);
        assert_eq!(encode_header(0x0102_0304).as_bytes(), &[1, 2, 3, 4]);
        assert_eq!(
            encode_header(MAX_SHORT_PAYLOAD).as_bytes(),
            &[0x7f, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn long_form_above_i32_max() {
        let h = encode_header(MAX_SHORT_PAYLOAD + 1);
        assert_eq!(
            h.as_bytes(),
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
        let d = decode_header(h.as_bytes(), u64::MAX).unwrap().unwrap();
        assert_eq!(d.header_len, 12);
        assert_eq!(d.payload_len, MAX_SHORT_PAYLOAD + 1);
    }

    #[test]
    fn long_form_accepted_for_small_lengths() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 5];
        let d = decode_header(&bytes, 100).unwrap().unwrap();
        assert_eq!((d.header_len, d.payload_len), (12, 5));
    }

    #[test]
    fn partial_headers_need_more() {
        assert_eq!(decode_header(&[0, 0, 0], 10).unwrap(), None);
        assert_eq!(decode_header(&[0xff; 11], 10).unwrap(), None);
    }

    #[test]
    fn other_negative_lengths_are_protocol_errors() {
        let err = decode_header(&(-2i32).to_be_bytes(), 10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert!(err.detail().contains("-2"), "{err}");
    }

    #[test]
    fn oversized_frames_name_both_sizes() {
        let err = decode_header(&[0, 0, 1, 0], 255).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
        assert!(err.detail().contains("256") && err.detail().contains("255"));
    }
}

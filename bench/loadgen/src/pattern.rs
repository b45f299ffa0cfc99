//! The byte stream each connection sends, and checks on the way back.
//!
//! Frame `seq` of connection `conn` is a header (the payload size) and a
//! window of a fixed pseudo-random table chosen by (conn, seq), with seq
//! (8 bytes LE) and conn (4 bytes LE) written over its start. The whole
//! stream is a function of (conn, seq), so the generator needs no send
//! buffer (big frames go out by writev straight from the table) and the
//! checker compares each received chunk in place, in any split: a lost,
//! duplicated, reordered, torn or cross-wired frame fails the check.

pub struct Pattern {
    table: Vec<u8>,
    size: usize,
}

/// Where a frame goes wrong: its byte offset (header included), got, want.
pub struct Mismatch {
    pub at: usize,
    pub got: u8,
    pub want: u8,
}

/// Where the window of (conn, seq) starts: 0..=255.
fn offset(conn: u32, seq: u64) -> usize {
    ((seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize ^ conn as usize) & 0xff
}

impl Pattern {
    pub fn new(size: usize) -> Pattern {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let table = (0..size + 256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Pattern { table, size }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Header and payload.
    pub fn frame_len(&self) -> usize {
        self.size + 4
    }

    /// Frame (conn, seq) in two pieces: `head[..head_len]` (header, seq,
    /// conn), then a slice of the table.
    pub fn pieces(&self, conn: u32, seq: u64) -> ([u8; 16], usize, &[u8]) {
        let mut head = [0u8; 16];
        let stamp = self.size.min(12);
        head[..4].copy_from_slice(&(self.size as u32).to_be_bytes());
        head[4..12].copy_from_slice(&seq.to_le_bytes());
        head[12..].copy_from_slice(&conn.to_le_bytes());
        let off = offset(conn, seq);
        (head, 4 + stamp, &self.table[off + stamp..off + self.size])
    }

    /// Appends frame (conn, seq) from its byte `from` on.
    pub fn append_frame(&self, out: &mut Vec<u8>, conn: u32, seq: u64, from: usize) {
        let (head, head_len, tail) = self.pieces(conn, seq);
        if from < head_len {
            out.extend_from_slice(&head[from..head_len]);
            out.extend_from_slice(tail);
        } else {
            out.extend_from_slice(&tail[from - head_len..]);
        }
    }

    /// Compares `data` with frame (conn, seq) from its byte `pos` up to the
    /// frame's end at most; returns how many bytes of `data` that covered.
    pub fn compare(&self, conn: u32, seq: u64, pos: usize, data: &[u8]) -> Result<usize, Mismatch> {
        let (head, head_len, tail) = self.pieces(conn, seq);
        let (mut pos, mut used) = (pos, 0);
        while used < data.len() && pos < head_len + tail.len() {
            let want = if pos < head_len {
                &head[pos..head_len]
            } else {
                &tail[pos - head_len..]
            };
            let k = want.len().min(data.len() - used);
            let got = &data[used..used + k];
            if got != &want[..k] {
                let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                return Err(Mismatch {
                    at: pos + i,
                    got: got[i],
                    want: want[i],
                });
            }
            pos += k;
            used += k;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` to the checker in chunks of `chunk` bytes, as frames
    /// (conn, 0), (conn, 1)...; returns the frames that passed, or the error.
    fn check_stream(p: &Pattern, conn: u32, stream: &[u8], chunk: usize) -> Result<u64, usize> {
        let (mut seq, mut pos) = (0u64, 0usize);
        for mut piece in stream.chunks(chunk) {
            while !piece.is_empty() {
                let used = p.compare(conn, seq, pos, piece).map_err(|m| m.at)?;
                piece = &piece[used..];
                pos += used;
                if pos == p.frame_len() {
                    seq += 1;
                    pos = 0;
                }
            }
        }
        Ok(seq)
    }

    #[test]
    fn any_split_passes_and_every_fault_fails() {
        for size in [0usize, 1, 7, 8, 12, 13, 64, 1000] {
            let p = Pattern::new(size);
            let mut s = Vec::new();
            for seq in 0..5 {
                p.append_frame(&mut s, 3, seq, 0);
            }
            assert_eq!(s.len(), 5 * (size + 4));
            for chunk in [1, 3, 4, 5, 16, 67, 4096] {
                assert_eq!(
                    check_stream(&p, 3, &s, chunk),
                    Ok(5),
                    "size {size} chunk {chunk}"
                );
            }
            let f = size + 4;
            let mut swapped = s.clone();
            swapped[f..2 * f].copy_from_slice(&s[2 * f..3 * f]);
            swapped[2 * f..3 * f].copy_from_slice(&s[f..2 * f]);
            let dropped = [&s[..f], &s[2 * f..]].concat();
            let mut flipped = s.clone();
            *flipped.last_mut().unwrap() ^= 1;
            if size >= 8 {
                assert!(
                    check_stream(&p, 3, &swapped, 7).is_err(),
                    "swap, size {size}"
                );
                assert!(
                    check_stream(&p, 3, &dropped, 7).is_err(),
                    "drop, size {size}"
                );
            }
            if size >= 12 {
                assert!(
                    check_stream(&p, 4, &s, 7).is_err(),
                    "wrong connection, size {size}"
                );
            }
            assert!(
                check_stream(&p, 3, &flipped, 7).is_err(),
                "flipped last byte, size {size}"
            );
        }
    }

    #[test]
    fn append_from_the_middle() {
        let p = Pattern::new(100);
        let (mut whole, mut rest) = (Vec::new(), Vec::new());
        p.append_frame(&mut whole, 9, 77, 0);
        for from in [0, 3, 4, 15, 16, 50, 104] {
            rest.clear();
            p.append_frame(&mut rest, 9, 77, from);
            assert_eq!(rest, whole[from..]);
        }
    }
}

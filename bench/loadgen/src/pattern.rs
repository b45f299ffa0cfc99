//! Frame payloads that can be checked byte for byte: frame `seq` of
//! connection `conn` is a window of a fixed pseudo-random table, chosen by
//! (conn, seq), with seq (8 bytes LE) and conn (4 bytes LE) written over its
//! start. A lost, duplicated, reordered, torn or cross-wired frame fails the
//! check, and checking is a memcmp against the table.

pub struct Pattern {
    table: Vec<u8>,
    size: usize,
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

    /// Appends the whole frame (header and payload) of (conn, seq).
    pub fn append_frame(&self, out: &mut Vec<u8>, conn: u32, seq: u64) {
        out.extend_from_slice(&(self.size as u32).to_be_bytes());
        let start = out.len();
        let off = offset(conn, seq);
        out.extend_from_slice(&self.table[off..off + self.size]);
        let stamp = stamp(conn, seq);
        let n = self.size.min(12);
        out[start..start + n].copy_from_slice(&stamp[..n]);
    }

    /// Checks an echoed payload; the error says where it first differs.
    pub fn check(&self, payload: &[u8], conn: u32, seq: u64) -> Result<(), String> {
        if payload.len() != self.size {
            return Err(format!(
                "connection {conn}: frame {seq} came back with {} bytes, sent {}",
                payload.len(),
                self.size
            ));
        }
        let stamp = stamp(conn, seq);
        let n = self.size.min(12);
        let off = offset(conn, seq);
        if payload[..n] == stamp[..n] && payload[n..] == self.table[off + n..off + self.size] {
            return Ok(());
        }
        let mut want = Vec::with_capacity(self.size + 4);
        self.append_frame(&mut want, conn, seq);
        let at = payload
            .iter()
            .zip(&want[4..])
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let got_seq =
            (self.size >= 8).then(|| u64::from_le_bytes(payload[..8].try_into().unwrap()));
        Err(format!(
            "connection {conn}: frame {seq} differs at byte {at} of {} (got 0x{:02x}, want 0x{:02x}; \
             its sequence field says {got_seq:?}): lost, reordered or corrupted",
            self.size, payload[at], want[4 + at]
        ))
    }
}

fn stamp(conn: u32, seq: u64) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[..8].copy_from_slice(&seq.to_le_bytes());
    s[8..].copy_from_slice(&conn.to_le_bytes());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mismatches() {
        for size in [0usize, 1, 7, 8, 12, 64, 1000] {
            let p = Pattern::new(size);
            let mut f = Vec::new();
            p.append_frame(&mut f, 3, 41);
            assert_eq!(f.len(), size + 4);
            assert!(p.check(&f[4..], 3, 41).is_ok());
            if size >= 8 {
                assert!(p.check(&f[4..], 3, 42).is_err(), "reorder, size {size}");
            }
            if size >= 12 {
                assert!(
                    p.check(&f[4..], 4, 41).is_err(),
                    "wrong connection, size {size}"
                );
            }
            if size > 0 {
                let mut g = f.clone();
                g[4 + size - 1] ^= 1;
                assert!(
                    p.check(&g[4..], 3, 41).is_err(),
                    "flipped last byte, size {size}"
                );
            }
        }
    }
}

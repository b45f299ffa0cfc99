//! Shared by the c_api and handshake targets through `#[path]`.

use sha2::{Digest, Sha256};

/// Whether two keys are the same HMAC-SHA256 key. HMAC pads a key to the
/// 64-byte block with zeros (and hashes a longer one first), so "k" and
/// "k\0\0" are one key: a property of HMAC (Python's too), not of sockserv.
/// (Keys here are at most 255 bytes.)
pub fn same_hmac_key(a: &[u8], b: &[u8]) -> bool {
    fn norm(k: &[u8]) -> Vec<u8> {
        let mut k = if k.len() > 64 {
            Sha256::digest(k).to_vec()
        } else {
            k.to_vec()
        };
        while k.last() == Some(&0) {
            k.pop();
        }
        k
    }
    norm(a) == norm(b)
}

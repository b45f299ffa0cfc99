//! The operating system's random source: the one place nonces come from
//! (handshake challenges, sealed datagrams).

use rand::TryRng;

use crate::error::{Error, ErrorKind, Result};

/// `N` bytes from the operating system's random source.
pub(crate) fn nonce<const N: usize>() -> Result<[u8; N]> {
    let mut nonce = [0u8; N];
    rand::rngs::SysRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| Error::new(ErrorKind::Io, format!("the OS random source failed: {e}")))?;
    Ok(nonce)
}

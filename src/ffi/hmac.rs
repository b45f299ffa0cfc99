//! HMAC-SHA256 for users who sign their own data.

use super::{bytes, bytes_mut, guard, sockserv_result};
use crate::error::{Error, ErrorKind};
use crate::proto::mac;

/// Writes HMAC-SHA256(`key`, `msg`) into `mac_out`, which must have room
/// for 32 bytes. `SOCKSERV_ERR_NULL_PARAMETER` for a NULL pointer with a
/// non-zero length. Any key length
/// works, 0 included; NULL is allowed for a length of 0.
///
/// @retval SOCKSERV_OK the 32 bytes were written.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `mac_out` is NULL, or `key` or `msg` is NULL
/// with a non-zero length.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_hmac_sha256(
    key: *const u8,
    key_len: usize,
    msg: *const u8,
    msg_len: usize,
    mac_out: *mut u8,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (key, msg, mac_out) = unsafe {
            (
                bytes(key, key_len, "key")?,
                bytes(msg, msg_len, "msg")?,
                bytes_mut(mac_out, 32, "mac_out")?,
            )
        };
        mac_out.copy_from_slice(&mac::hmac_sha256(key, msg));
        Ok(())
    })
}

/// Checks that `mac` (`mac_len` bytes) is HMAC-SHA256(`key`, `msg`):
/// `SOCKSERV_OK` if it is, `SOCKSERV_ERR_AUTH_FAILED` if not. The length is
/// checked first, then the bytes are compared in constant time.
///
/// @retval SOCKSERV_OK the MAC matches.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `key`, `msg` or `mac` is NULL with a
/// non-zero length.
/// @retval SOCKSERV_ERR_AUTH_FAILED `mac` is not the HMAC (or not 32 bytes).
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_hmac_sha256_verify(
    key: *const u8,
    key_len: usize,
    msg: *const u8,
    msg_len: usize,
    mac: *const u8,
    mac_len: usize,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let (key, msg, tag) = unsafe {
            (
                bytes(key, key_len, "key")?,
                bytes(msg, msg_len, "msg")?,
                bytes(mac, mac_len, "mac")?,
            )
        };
        if mac::verify_hmac_sha256(key, msg, tag) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::AuthFailed,
                format!("the {mac_len}-byte MAC does not match HMAC-SHA256 of the message"),
            ))
        }
    })
}

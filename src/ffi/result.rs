//! Result codes, their static text, the per-thread error detail, and the
//! library version.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::OnceLock;

use super::{guard, guard_value, set_last_error, LAST_ERROR};
use crate::error::ErrorKind;

/// The version of this header; `sockserv_version()` gives the library's.
/// Incompatible ABI changes bump MAJOR.
pub const SOCKSERV_VERSION_MAJOR: u32 = 0;
/// Additions to the API bump MINOR.
pub const SOCKSERV_VERSION_MINOR: u32 = 1;
/// Fixes bump PATCH.
pub const SOCKSERV_VERSION_PATCH: u32 = 0;

/// A buffer of this many bytes holds any address sockserv reports
/// (`tcp://[v6]:port`, `unix://path`), terminating NUL included.
pub const SOCKSERV_ADDRSTRLEN: usize = 128;

/// What a call did. `SOCKSERV_OK` is 0, so `if (rc)` tests for failure; the
/// detail of the last failure on a thread is in `sockserv_last_error`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sockserv_result {
    /// Success.
    SOCKSERV_OK = 0,
    /// A required pointer argument was NULL.
    SOCKSERV_ERR_NULL_PARAMETER = 1,
    /// An argument is out of range or malformed (an empty key, a bad fd...).
    SOCKSERV_ERR_INVALID_ARGUMENT = 2,
    /// The address could not be parsed or resolved.
    SOCKSERV_ERR_INVALID_ADDRESS = 3,
    /// The address is already in use (another server listens on it).
    SOCKSERV_ERR_ADDRESS_IN_USE = 4,
    /// Nobody accepts connections at the address.
    SOCKSERV_ERR_CONNECTION_REFUSED = 5,
    /// The operation did not finish within its timeout.
    SOCKSERV_ERR_TIMED_OUT = 6,
    /// The peer closed the connection (between frames).
    SOCKSERV_ERR_CLOSED = 7,
    /// The peer closed the connection in the middle of a frame.
    SOCKSERV_ERR_TRUNCATED_FRAME = 8,
    /// A frame is larger than the maximum frame size; the connection was
    /// closed because the stream cannot be resynchronised.
    SOCKSERV_ERR_FRAME_TOO_LARGE = 9,
    /// The peer broke the framing protocol (a negative length other than -1);
    /// the connection was closed.
    SOCKSERV_ERR_PROTOCOL = 10,
    /// Authentication failed: the keys do not match.
    SOCKSERV_ERR_AUTH_FAILED = 11,
    /// The peer broke or downgraded the handshake (no `#CHALLENGE#`, MD5,
    /// the legacy unprefixed form, an unexpected message).
    SOCKSERV_ERR_AUTH_PROTOCOL = 12,
    /// The caller's buffer is too small; the needed size was written.
    SOCKSERV_ERR_INSUFFICIENT_SIZE = 13,
    /// The server is shutting down and closed the connection.
    SOCKSERV_ERR_SHUTDOWN = 14,
    /// The call is not allowed in the object's current state.
    SOCKSERV_ERR_INVALID_STATE = 15,
    /// The connection is unusable after an earlier failure (a send that
    /// stopped in the middle of a frame, a refused frame).
    SOCKSERV_ERR_BROKEN = 16,
    /// Another operating system error; the detail names it.
    SOCKSERV_ERR_IO = 17,
    /// An internal error (a Rust panic) was caught at the API boundary.
    SOCKSERV_ERR_PANIC = 18,
    /// The operation would block: an event-mode connection's send queue is
    /// over its limit (the peer is not reading). Try again later.
    SOCKSERV_ERR_WOULD_BLOCK = 19,
    /// A datagram is larger than the maximum datagram size
    /// (`sockserv_config_set_max_datagram_size`): a send sent nothing; a
    /// received one was discarded. The detail gives both sizes.
    SOCKSERV_ERR_DATAGRAM_TOO_LARGE = 20,
    /// The TLS layer failed: the peer does not speak TLS (plaintext to a
    /// TLS end, or the reverse), a record was corrupted or forged, a fatal
    /// alert, no common version, cipher suite or ALPN protocol.
    SOCKSERV_ERR_TLS = 21,
    /// A certificate was refused: unknown issuer, expired or not yet
    /// valid, name mismatch, a required client certificate missing, a bad
    /// chain. The detail names the reason.
    SOCKSERV_ERR_CERTIFICATE = 22,
}

pub(crate) fn result_of(kind: ErrorKind) -> sockserv_result {
    use sockserv_result::*;
    match kind {
        ErrorKind::NullParameter => SOCKSERV_ERR_NULL_PARAMETER,
        ErrorKind::InvalidArgument => SOCKSERV_ERR_INVALID_ARGUMENT,
        ErrorKind::InvalidAddress => SOCKSERV_ERR_INVALID_ADDRESS,
        ErrorKind::AddressInUse => SOCKSERV_ERR_ADDRESS_IN_USE,
        ErrorKind::ConnectionRefused => SOCKSERV_ERR_CONNECTION_REFUSED,
        ErrorKind::TimedOut => SOCKSERV_ERR_TIMED_OUT,
        ErrorKind::Closed => SOCKSERV_ERR_CLOSED,
        ErrorKind::TruncatedFrame => SOCKSERV_ERR_TRUNCATED_FRAME,
        ErrorKind::FrameTooLarge => SOCKSERV_ERR_FRAME_TOO_LARGE,
        ErrorKind::Protocol => SOCKSERV_ERR_PROTOCOL,
        ErrorKind::AuthFailed => SOCKSERV_ERR_AUTH_FAILED,
        ErrorKind::AuthProtocol => SOCKSERV_ERR_AUTH_PROTOCOL,
        ErrorKind::InsufficientSize => SOCKSERV_ERR_INSUFFICIENT_SIZE,
        ErrorKind::Shutdown => SOCKSERV_ERR_SHUTDOWN,
        ErrorKind::InvalidState => SOCKSERV_ERR_INVALID_STATE,
        ErrorKind::Broken => SOCKSERV_ERR_BROKEN,
        ErrorKind::Io => SOCKSERV_ERR_IO,
        ErrorKind::Panic => SOCKSERV_ERR_PANIC,
        ErrorKind::WouldBlock => SOCKSERV_ERR_WOULD_BLOCK,
        ErrorKind::DatagramTooLarge => SOCKSERV_ERR_DATAGRAM_TOO_LARGE,
        ErrorKind::Tls => SOCKSERV_ERR_TLS,
        ErrorKind::Certificate => SOCKSERV_ERR_CERTIFICATE,
    }
}

/// Static text for each code, indexed by code; built once.
fn descriptions() -> &'static [CString] {
    static TABLE: OnceLock<Vec<CString>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = vec![CString::default(); ErrorKind::ALL.len() + 1];
        table[sockserv_result::SOCKSERV_OK as usize] = c"success".into();
        for kind in ErrorKind::ALL {
            table[result_of(kind) as usize] = CString::new(kind.description()).expect("no NUL");
        }
        table
    })
}

/// A static, NUL-terminated description of `code` (any value is accepted;
/// an unknown one gets "unknown sockserv result code"). Never NULL; do not
/// free it.
#[no_mangle]
pub extern "C" fn sockserv_strerror(code: c_int) -> *const c_char {
    guard_value(
        c"unknown sockserv result code".as_ptr(),
        || match usize::try_from(code)
            .ok()
            .and_then(|i| descriptions().get(i))
        {
            Some(text) => text.as_ptr(),
            None => c"unknown sockserv result code".as_ptr(),
        },
    )
}

/// Copies the detail of the last failure on the calling thread (the
/// address, the OS error, the sizes involved) into `buf`, truncated to
/// `len - 1` bytes and NUL-terminated. Returns the detail's full length
/// (like snprintf), 0 when this thread has had no failure. `buf` may be
/// NULL when `len` is 0, to learn the length. Successful calls do not clear
/// the detail.
#[no_mangle]
pub unsafe extern "C" fn sockserv_last_error(buf: *mut c_char, len: usize) -> usize {
    guard_value(0, || {
        LAST_ERROR.with(|e| {
            let e = e.borrow();
            if !buf.is_null() && len > 0 {
                let n = e.len().min(len - 1);
                // SAFETY: the caller contract says `buf` has `len` writable
                // bytes; we write `n + 1 <= len` of them.
                unsafe {
                    std::ptr::copy_nonoverlapping(e.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            e.len()
        })
    })
}

/// Forgets the calling thread's last failure detail.
#[no_mangle]
pub extern "C" fn sockserv_clear_error() {
    guard_value((), || set_last_error(""))
}

/// The library's version, "MAJOR.MINOR.PATCH", static. Compare with the
/// SOCKSERV_VERSION_* macros to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn sockserv_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// Receives each peer sockserv turned away (see `sockserv_set_refusal_log`):
/// `peer` is its address ("tcp://IP:PORT", "unix://PATH", "udp://IP:PORT";
/// the client's when a PROXY header named it), `code` why
/// (`SOCKSERV_ERR_AUTH_FAILED` for a wrong key, `SOCKSERV_ERR_AUTH_PROTOCOL`
/// for MD5 or an unknown digest, `SOCKSERV_ERR_PROTOCOL` for a bad PROXY
/// header, `SOCKSERV_ERR_CONNECTION_REFUSED` for the verify callback or the
/// connection cap, ...) and `detail` the text `sockserv_last_error` would
/// give; both strings are valid during the call only. Runs on the thread
/// that refused (accept, connection, I/O or datagram-receiving threads),
/// concurrently, so `userdata` must be safe to share between threads; keep
/// it quick (a flood of forged datagrams calls it for each). Must not throw
/// a C++ exception or longjmp out.
pub type sockserv_refusal_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        peer: *const c_char,
        code: sockserv_result,
        detail: *const c_char,
    ),
>;

/// A C `userdata` pointer, carried to the threads that run the log.
#[derive(Clone, Copy)]
struct LogUserData(*mut c_void);
// SAFETY: sockserv never dereferences userdata; the callback's contract says
// it runs on other threads, so the caller shares it knowingly.
unsafe impl Send for LogUserData {}
// SAFETY: as above: only handed back to the caller's callback.
unsafe impl Sync for LogUserData {}

/// Sets the process-wide refusal log (NULL removes it), like SQLite's
/// `SQLITE_CONFIG_LOG`: `log` is called for every refusal of every server
/// (both modes: failed PROXY headers and handshakes, verify and cap
/// refusals) and every datagram socket (dropped sealed datagrams); the
/// servers' counters count the same events. Any time, from any thread;
/// `userdata` must stay valid until the log is replaced or removed and no
/// call to the old one is running.
///
/// @retval SOCKSERV_OK the log is set (or removed).
/// @retval SOCKSERV_ERR_NULL_PARAMETER never: a NULL `log` removes the log,
/// and `userdata` may be NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub extern "C" fn sockserv_set_refusal_log(
    log: sockserv_refusal_fn,
    userdata: *mut c_void,
) -> sockserv_result {
    guard(|| {
        let Some(log) = log else {
            crate::error::set_refusal_log(None);
            return Ok(());
        };
        let userdata = LogUserData(userdata);
        crate::error::set_refusal_log(Some(std::sync::Arc::new(
            move |r: &crate::error::Refusal<'_>| {
                let userdata = userdata;
                // Addresses and details hold no NUL; if one did, it is cut.
                let text =
                    |s: &str| CString::new(s.split('\0').next().unwrap_or("")).unwrap_or_default();
                let (peer, detail) = (text(r.peer), text(r.detail));
                // SAFETY: the caller's function with the documented
                // signature; both strings outlive the call.
                unsafe {
                    log(
                        userdata.0,
                        peer.as_ptr(),
                        result_of(r.kind),
                        detail.as_ptr(),
                    )
                }
            },
        )));
        Ok(())
    })
}

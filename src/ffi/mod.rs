//! The C ABI: the only module with `extern "C"`, raw pointers and `unsafe`.
//!
//! Every exported function checks its pointers (NULL gives
//! `SOCKSERV_ERR_NULL_PARAMETER`), converts, calls the safe core inside
//! `guard` (which turns a panic into `SOCKSERV_ERR_PANIC`) and maps the
//! outcome to a `sockserv_result`. Outputs are written only on success.
//!
//! Safety contract for callers, stated once here and in the header: every
//! pointer argument is NULL or valid for the documented use, buffers are at
//! least as long as the size passed with them, and handles are not used after
//! their `_free`.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

// The header follows this order, one group per C object (cbindgen keeps
// source order; blank lines keep rustfmt from sorting them): results and
// errors, config, server, event callbacks, dialer, connection, datagram socket,
// datagram server, HMAC.
mod result;

mod config;

mod server;

mod events;

mod dialer;

mod conn;

mod conn_loop;

mod dgram;

mod dgram_server;

mod hmac;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};

pub use config::*;
pub use conn::*;
pub use conn_loop::*;
pub use dgram::*;
pub use dgram_server::*;
pub use dialer::*;
pub use events::*;
pub use hmac::*;
pub use result::*;
pub use server::*;

thread_local! {
    /// The detail of the last failure on this thread (see sockserv_last_error).
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

thread_local! {
    /// Set by [`inject_panic_in_next_call`]: the next exported call on this
    /// thread panics inside its guard.
    static INJECT_PANIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// For tests only (Rust, not part of the C ABI): makes the next exported
/// function called on this thread panic inside sockserv, as a bug would.
/// Valid input never makes sockserv panic, so this is how the tests show
/// that such a panic becomes `SOCKSERV_ERR_PANIC` instead of an abort,
/// also when the call is made from inside a handler.
#[doc(hidden)]
pub fn inject_panic_in_next_call() {
    INJECT_PANIC.with(|f| f.set(true));
}

pub(crate) fn set_last_error(detail: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(detail);
    });
}

/// Runs an exported function's body: a failure is recorded for
/// `sockserv_last_error` and mapped to its code; a panic is caught.
fn guard(body: impl FnOnce() -> Result<()>) -> sockserv_result {
    let body = || {
        if INJECT_PANIC.with(|f| f.replace(false)) {
            panic!("a panic injected by a test");
        }
        body()
    };
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => sockserv_result::SOCKSERV_OK,
        Ok(Err(e)) => {
            set_last_error(e.detail());
            result_of(e.kind())
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!(
                "internal error (panic) caught at the API boundary: {what}"
            ));
            sockserv_result::SOCKSERV_ERR_PANIC
        }
    }
}

/// For functions that return no code (`_free`, getters): a panic is
/// swallowed and `fallback` returned.
fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The body of a `_free` for a handle boxed by its `_new`: NULL does
/// nothing, else the box is dropped, a panic in its drop swallowed.
///
/// # Safety
/// `ptr` is NULL or came from `Box::into_raw` of a `Box<T>` and is freed
/// only this once.
unsafe fn free_box<T>(ptr: *mut T) {
    guard_value((), || {
        if !ptr.is_null() {
            // SAFETY: this function's contract: a non-NULL `ptr` is a live
            // `Box<T>`, freed once.
            drop(unsafe { Box::from_raw(ptr) });
        }
    })
}

/// A C `userdata` pointer, carried to the threads that run callbacks.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: sockserv never dereferences userdata; the C API documents which
// thread runs each callback that receives it, so the caller shares it
// knowingly.
unsafe impl Send for UserData {}
// SAFETY: as above: only handed back to the caller's callbacks.
unsafe impl Sync for UserData {}

/// The config a `_new`, `_open` or `_connect` call was given, copied, or
/// the defaults for NULL.
fn config_or_default(config: *const sockserv_config) -> Config {
    // SAFETY: caller contract: NULL or a live config.
    unsafe { config.as_ref() }.map_or_else(Config::default, |c| c.inner.clone())
}

/// A C timeout in milliseconds, where 0 means none (wait for ever).
fn from_ms(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.into()))
}

/// The other way: none is 0, and a timeout too long for a u32 saturates.
fn to_ms(timeout: Option<Duration>) -> u32 {
    timeout.map_or(0, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX))
}

/// A loop's wait in milliseconds: -1 for none, else rounded up (waking
/// before the deadline would only find nothing due and ask again).
fn loop_wait_ms(wait: Option<Duration>) -> c_int {
    match wait {
        None => -1,
        Some(t) => {
            let whole = t.as_millis() + u128::from(t.subsec_nanos() % 1_000_000 != 0);
            c_int::try_from(whole).unwrap_or(c_int::MAX)
        }
    }
}

fn null(name: &str) -> Error {
    Error::new(ErrorKind::NullParameter, format!("{name} is NULL"))
}

/// A shared reference from a pointer the C caller passed.
unsafe fn arg<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: the caller contract says a non-NULL pointer is valid.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(name))
}

/// An exclusive reference from a pointer the C caller passed.
unsafe fn arg_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: the caller contract says a non-NULL pointer is valid and not
    // used by another thread during the call.
    unsafe { ptr.as_mut() }.ok_or_else(|| null(name))
}

/// The bytes of a (pointer, length) pair; NULL is allowed for length 0.
unsafe fn bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: the caller contract says `ptr` points to `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A writable buffer from a (pointer, length) pair; NULL is allowed for
/// length 0.
unsafe fn bytes_mut<'a>(ptr: *mut u8, len: usize, name: &str) -> Result<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: the caller contract says `ptr` points to `len` writable bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A NUL-terminated UTF-8 string argument.
unsafe fn c_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: the caller contract says `ptr` is a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("{name} is not valid UTF-8"),
        )
    })
}

/// An output pointer, checked for NULL up front and written only once the
/// call has succeeded.
struct Out<T>(NonNull<T>);

unsafe fn out<T>(ptr: *mut T, name: &str) -> Result<Out<T>> {
    NonNull::new(ptr).map(Out).ok_or_else(|| null(name))
}

impl<T> Out<T> {
    fn put(self, value: T) {
        // SAFETY: `out` was given a non-NULL pointer that the caller contract
        // says is valid for writes of T; `write` does not read the old value.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// Copies `text` and its NUL into `buf` (of `len` bytes). `needed` receives
/// the size the copy takes, NUL included, also when `buf` is too small.
unsafe fn copy_str(text: &str, buf: *mut c_char, len: usize, needed: *mut usize) -> Result<()> {
    // SAFETY: our caller passes its C caller's pointer, valid or NULL.
    let needed = unsafe { out(needed, "needed") }?;
    let size = text.len() + 1;
    if len < size {
        needed.put(size);
        return Err(Error::new(
            ErrorKind::InsufficientSize,
            format!("the buffer holds {len} bytes, {size} are needed"),
        ));
    }
    // SAFETY: our caller promises `buf` has `len` writable bytes.
    let dst = unsafe { bytes_mut(buf.cast(), len, "buf") }?;
    dst[..text.len()].copy_from_slice(text.as_bytes());
    dst[text.len()] = 0;
    needed.put(size);
    Ok(())
}

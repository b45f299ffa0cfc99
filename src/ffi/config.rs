//! `sockserv_config`: the settings builder. Servers and connections copy it
//! when created, so it may be changed or freed afterwards. A config is not
//! locked: do not change one from two threads at once.

use std::ffi::{c_char, c_int};
use std::time::Duration;

use super::{arg_mut, bytes, c_str, free_box, from_ms, guard, out, sockserv_result};
use crate::config::{Config, TlsClientAuth, TlsVersion, WhenFull};
use crate::error::{Error, ErrorKind, Result};
use crate::proto::proxy::ProxyMode;

/// Settings for servers and clients (opaque). Create with
/// `sockserv_config_new`, free with `sockserv_config_free`. Not locked: do
/// not change one from two threads at once (reading it in `_new` calls from
/// several threads is fine). Setters refuse out-of-range values with
/// `SOCKSERV_ERR_INVALID_ARGUMENT` and leave the config unchanged.
pub struct sockserv_config {
    pub(super) inner: Config,
}

/// `sockserv_config_set_when_full`: what a server does with a connection
/// arriving while it already serves its maximum.
pub const SOCKSERV_WHEN_FULL_WAIT: c_int = 0;
/// Accept the connection and close it at once: the client fails fast (its
/// handshake or first receive sees the connection closed).
pub const SOCKSERV_WHEN_FULL_REFUSE: c_int = 1;

/// Creates a config with the defaults: no key (plain framing), 64 MiB
/// maximum frame, 10 s handshake and connect timeouts, no I/O timeout,
/// 1024 connections at most (then wait), backlog 1024, SO_REUSEADDR on,
/// SO_REUSEPORT off, TCP_NODELAY on, keepalive off. Free it with
/// `sockserv_config_free`.
///
/// @retval SOCKSERV_OK `*config_out` holds the new config.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config_out` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_new(
    config_out: *mut *mut sockserv_config,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let config_out = unsafe { out(config_out, "config_out") }?;
        config_out.put(Box::into_raw(Box::new(sockserv_config {
            inner: Config::default(),
        })));
        Ok(())
    })
}

/// Frees a config. NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_free(config: *mut sockserv_config) {
    // SAFETY: a non-NULL config came from sockserv_config_new
    // (Box::into_raw) and is freed once, as the caller contract says.
    unsafe { free_box(config) }
}

/// Runs `set` on the config behind `config`.
fn with_config(
    config: *mut sockserv_config,
    set: impl FnOnce(&mut Config) -> Result<()>,
) -> sockserv_result {
    guard(|| {
        // SAFETY: caller contract (see the module docs of ffi).
        let config = unsafe { arg_mut(config, "config") }?;
        set(&mut config.inner)
    })
}

/// Sets the shared key (replacing any others): connections then run the
/// HMAC-SHA256 handshake. The key is copied. An empty key is refused
/// (`SOCKSERV_ERR_INVALID_ARGUMENT`): it would let in anyone using one too.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL, or `key` is NULL with a
/// non-zero `key_len`.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT the key is empty; the config is unchanged.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_auth_key(
    config: *mut sockserv_config,
    key: *const u8,
    key_len: usize,
) -> sockserv_result {
    with_config(config, |c| {
        // SAFETY: caller contract: `key` has `key_len` readable bytes.
        let key = unsafe { bytes(key, key_len, "key") }?;
        c.set_key(key)
    })
}

/// Adds a key a server also accepts, for key rotation: a peer that proves
/// any of them is let in, and the server answers with the key that matched.
/// A client uses the first key.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL, or `key` is NULL with a
/// non-zero `key_len`.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT the key is empty; the config is unchanged.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_add_auth_key(
    config: *mut sockserv_config,
    key: *const u8,
    key_len: usize,
) -> sockserv_result {
    with_config(config, |c| {
        // SAFETY: caller contract: `key` has `key_len` readable bytes.
        let key = unsafe { bytes(key, key_len, "key") }?;
        c.add_key(key)
    })
}

/// Removes every key: connections then skip the handshake (plain framing).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_clear_auth_keys(
    config: *mut sockserv_config,
) -> sockserv_result {
    with_config(config, |c| {
        c.clear_keys();
        Ok(())
    })
}

/// The largest frame payload accepted, in bytes (default 64 MiB, up to
/// 2^63 - 1). A bigger frame is refused before anything is allocated.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0, or above 2^63 - 1.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_max_frame_size(
    config: *mut sockserv_config,
    max_bytes: u64,
) -> sockserv_result {
    with_config(config, |c| c.set_max_frame_size(max_bytes))
}

/// How long the whole handshake may take, on both sides (default 10000;
/// 0 is refused). On a server expecting a PROXY protocol header, the same
/// one deadline covers the header and the handshake, in both modes.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_handshake_timeout_ms(
    config: *mut sockserv_config,
    timeout_ms: u32,
) -> sockserv_result {
    with_config(config, |c| c.set_handshake_timeout(ms(timeout_ms)))
}

/// The initial timeout of each send and receive on new connections
/// (default 0: wait for ever). See `sockserv_conn_set_timeout_ms`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_io_timeout_ms(
    config: *mut sockserv_config,
    timeout_ms: u32,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_io_timeout(from_ms(timeout_ms));
        Ok(())
    })
}

/// How long `sockserv_connect` waits for each address to accept (default
/// 10000; 0 is refused).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_connect_timeout_ms(
    config: *mut sockserv_config,
    timeout_ms: u32,
) -> sockserv_result {
    with_config(config, |c| c.set_connect_timeout(ms(timeout_ms)))
}

/// The most connections a server serves at once (default 1024, at least 1);
/// see `sockserv_config_set_when_full` for what happens past it. A threaded
/// server counts handler threads, i.e. connections past their preamble
/// (see `sockserv_config_set_max_pending_handshakes`); event mode counts
/// every connection.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_max_connections(
    config: *mut sockserv_config,
    max: usize,
) -> sockserv_result {
    with_config(config, |c| c.set_max_connections(max))
}

/// Threaded servers: the most connections still in their preamble (PROXY
/// header, verify, handshake) at once (default 16384, at least 1). They wait
/// on an event-driven stage without a thread each and do not count against
/// `sockserv_config_set_max_connections`, so strangers who never answer the
/// challenge cannot hold the handler threads. Past this bound the newest
/// connection is accepted and closed at once (counted as
/// `SOCKSERV_STAT_REFUSED_WHEN_FULL`). Event mode ignores it.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_max_pending_handshakes(
    config: *mut sockserv_config,
    max: usize,
) -> sockserv_result {
    with_config(config, |c| c.set_max_pending_handshakes(max))
}

/// `SOCKSERV_WHEN_FULL_WAIT` (default): a connection past the maximum waits
/// in the kernel's accept queue (up to the backlog) until a slot frees, then
/// its handshake starts; its handshake timeout runs on the client meanwhile.
/// `SOCKSERV_WHEN_FULL_REFUSE`: it is accepted and closed at once.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT neither `SOCKSERV_WHEN_FULL_WAIT` nor
/// `SOCKSERV_WHEN_FULL_REFUSE`.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_when_full(
    config: *mut sockserv_config,
    when_full: c_int,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_when_full(match when_full {
            SOCKSERV_WHEN_FULL_WAIT => WhenFull::Wait,
            SOCKSERV_WHEN_FULL_REFUSE => WhenFull::Refuse,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("when_full {other} is neither SOCKSERV_WHEN_FULL_WAIT nor SOCKSERV_WHEN_FULL_REFUSE"),
                ))
            }
        });
        Ok(())
    })
}

/// The listen(2) backlog (default 1024; the kernel caps it at somaxconn).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT below 1.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_backlog(
    config: *mut sockserv_config,
    backlog: c_int,
) -> sockserv_result {
    with_config(config, |c| c.set_backlog(backlog))
}

/// SO_REUSEADDR on TCP listeners (default on: a restarted server can bind
/// while old connections sit in TIME_WAIT).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_reuse_address(
    config: *mut sockserv_config,
    on: bool,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_reuse_address(on);
        Ok(())
    })
}

/// SO_REUSEPORT on TCP listeners (default off): several processes may bind
/// the same port and the kernel spreads connections among them.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_reuse_port(
    config: *mut sockserv_config,
    on: bool,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_reuse_port(on);
        Ok(())
    })
}

/// IPV6_V6ONLY on IPv6 listeners (`tcp://[::]:PORT`): true serves IPv6
/// clients only, false IPv4 clients too (as IPv4-mapped addresses). Unset,
/// the system's default stands (Linux: false).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_v6_only(
    config: *mut sockserv_config,
    on: bool,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_v6_only(Some(on));
        Ok(())
    })
}

/// TCP_NODELAY on new TCP connections (default on: frames leave at once).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_nodelay(
    config: *mut sockserv_config,
    on: bool,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_nodelay(on);
        Ok(())
    })
}

/// Blocking connections (threaded servers, clients): hold a reply sent
/// while the peer's next frame has already arrived, and write it with the
/// next reply, or before the next receive, poll or flush would wait, or when
/// the handler returns or the connection is freed (default off). A peer
/// that pipelines requests then gets its replies many per system call. The
/// cost: a handler that works long between a send and its next receive
/// holds that reply meanwhile; call `sockserv_conn_flush` to send at once.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_coalesce_sends(
    config: *mut sockserv_config,
    on: bool,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_coalesce_sends(on);
        Ok(())
    })
}

/// SO_KEEPALIVE on new TCP connections (default off), with the kernel's
/// timings; `sockserv_conn_set_keepalive` sets timings per connection.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_keepalive(
    config: *mut sockserv_config,
    on: bool,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_keepalive(on);
        Ok(())
    })
}

/// Event mode: the number of I/O threads (default 0: one per core).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_io_threads(
    config: *mut sockserv_config,
    threads: usize,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_io_threads(threads);
        Ok(())
    })
}

/// Event mode: the most bytes a connection may have queued for sending
/// (default 8 MiB, at least 1). Past it, `sockserv_conn_send` returns
/// `SOCKSERV_ERR_WOULD_BLOCK` (a frame larger than the limit is still taken
/// when nothing else is queued); reading from that peer pauses once half
/// the limit is queued and resumes below a quarter, so a peer that does not
/// read cannot grow the server's memory.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_max_queued_bytes(
    config: *mut sockserv_config,
    max_bytes: usize,
) -> sockserv_result {
    with_config(config, |c| c.set_max_queued_bytes(max_bytes))
}

/// Event mode: close a connection whose queue is over the limit instead of
/// refusing the send (default off).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_close_when_backed_up(
    config: *mut sockserv_config,
    on: bool,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_close_when_backed_up(on);
        Ok(())
    })
}

/// Event mode: close connections that receive nothing for this long
/// (default 0: never); `on_close` gets `SOCKSERV_ERR_TIMED_OUT`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_idle_timeout_ms(
    config: *mut sockserv_config,
    timeout_ms: u32,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_idle_timeout(from_ms(timeout_ms));
        Ok(())
    })
}

/// `sockserv_config_set_proxy_protocol`: no PROXY header expected (default).
pub const SOCKSERV_PROXY_OFF: c_int = 0;
/// A connection may start with a PROXY header (v1 or v2); if it does, the
/// client's address it names becomes the connection's peer address. The
/// verify callback still runs at accept time, on the socket's peer.
pub const SOCKSERV_PROXY_OPTIONAL: c_int = 1;
/// Every connection must start with a PROXY header (the way to run behind
/// HAProxy): verify runs on the client's address it names, before the
/// handshake; a missing or malformed header closes the connection
/// (`SOCKSERV_STAT_PROXY_FAILURES`).
pub const SOCKSERV_PROXY_REQUIRED: c_int = 2;

/// Servers: whether connections start with a PROXY protocol header from a
/// load balancer (`SOCKSERV_PROXY_OFF`, `_OPTIONAL` or `_REQUIRED`).
/// Clients ignore it.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT none of the `SOCKSERV_PROXY_*` modes.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_proxy_protocol(
    config: *mut sockserv_config,
    mode: c_int,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_proxy_protocol(match mode {
            SOCKSERV_PROXY_OFF => ProxyMode::Off,
            SOCKSERV_PROXY_OPTIONAL => ProxyMode::Optional,
            SOCKSERV_PROXY_REQUIRED => ProxyMode::Required,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("PROXY protocol mode {other} is none of SOCKSERV_PROXY_OFF, _OPTIONAL, _REQUIRED"),
                ))
            }
        });
        Ok(())
    })
}

/// Sets the certificate chain (PEM, leaf first) and private key (PEM:
/// PKCS#8, PKCS#1 or SEC1) this end presents over TLS: a server's
/// certificate, or a client's for mutual TLS. Both are copied and checked
/// now: bad PEM or a key that does not belong to the leaf certificate is
/// refused, the config unchanged.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL, or a buffer is NULL
/// with a non-zero length.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT bad PEM, no certificate, no key, or
/// the key does not match the certificate; the detail says which.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_tls_cert(
    config: *mut sockserv_config,
    chain_pem: *const c_char,
    chain_len: usize,
    key_pem: *const c_char,
    key_len: usize,
) -> sockserv_result {
    with_config(config, |c| {
        // SAFETY: caller contract: each buffer has its length in bytes.
        let chain = unsafe { bytes(chain_pem.cast(), chain_len, "chain_pem") }?;
        // SAFETY: as above.
        let key = unsafe { bytes(key_pem.cast(), key_len, "key_pem") }?;
        c.set_tls_cert_pem(chain, key)
    })
}

/// As `sockserv_config_set_tls_cert`, reading the chain and the key from
/// PEM files (read now; the files are not needed afterwards).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config`, `chain_path` or `key_path` is NULL.
/// @retval SOCKSERV_ERR_IO a file cannot be read; the detail names it.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT a path is not UTF-8, bad PEM, or the
/// key does not match the certificate; the detail names the file and why.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_tls_cert_files(
    config: *mut sockserv_config,
    chain_path: *const c_char,
    key_path: *const c_char,
) -> sockserv_result {
    with_config(config, |c| {
        // SAFETY: caller contract: NUL-terminated strings.
        let chain = unsafe { c_str(chain_path, "chain_path") }?;
        // SAFETY: as above.
        let key = unsafe { c_str(key_path, "key_path") }?;
        c.set_tls_cert_files(chain, key)
    })
}

/// Sets the trust anchors (PEM, one or more CA certificates) the peer's
/// certificate must chain to: a client checks the server with them, a
/// server checks client certificates (see
/// `sockserv_config_set_tls_client_auth`). Copied; replaces any set before.
/// There are no system roots: a TLS client needs this.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL, or `ca_pem` is NULL with
/// a non-zero `len`.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT bad PEM, no certificate, or one that
/// is no usable CA; the config is unchanged.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_tls_ca(
    config: *mut sockserv_config,
    ca_pem: *const c_char,
    len: usize,
) -> sockserv_result {
    with_config(config, |c| {
        // SAFETY: caller contract: `ca_pem` has `len` readable bytes.
        let pem = unsafe { bytes(ca_pem.cast(), len, "ca_pem") }?;
        c.set_tls_ca_pem(pem)
    })
}

/// As `sockserv_config_set_tls_ca`, reading a PEM file (read now).
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` or `path` is NULL.
/// @retval SOCKSERV_ERR_IO the file cannot be read; the detail names it.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT the path is not UTF-8, or bad PEM.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_tls_ca_file(
    config: *mut sockserv_config,
    path: *const c_char,
) -> sockserv_result {
    with_config(config, |c| {
        // SAFETY: caller contract: a NUL-terminated string.
        let path = unsafe { c_str(path, "path") }?;
        c.set_tls_ca_file(path)
    })
}

/// The name a TLS client checks the server's certificate for: a DNS name
/// or an IP address. By default the host of the address connected to
/// (`tls://db.example:5000` checks "db.example"); a descriptor adopted
/// with `sockserv_conn_from_fd` checks its peer's IP address. Copied.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` or `name` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT not a DNS name or IP address.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_tls_server_name(
    config: *mut sockserv_config,
    name: *const c_char,
) -> sockserv_result {
    with_config(config, |c| {
        // SAFETY: caller contract: a NUL-terminated string.
        let name = unsafe { c_str(name, "name") }?;
        c.set_tls_server_name(name)
    })
}

/// `sockserv_config_set_tls_client_auth`: a TLS server asks for no client
/// certificate (the default).
pub const SOCKSERV_TLS_CLIENT_AUTH_NONE: c_int = 0;
/// A client may present a certificate; one that does must chain to the CA.
pub const SOCKSERV_TLS_CLIENT_AUTH_OPTIONAL: c_int = 1;
/// A client must present a certificate that chains to the CA (mutual TLS).
pub const SOCKSERV_TLS_CLIENT_AUTH_REQUIRED: c_int = 2;

/// Whether a TLS server asks clients for certificates
/// (`SOCKSERV_TLS_CLIENT_AUTH_*`). Other than NONE needs a CA
/// (`sockserv_config_set_tls_ca`); without one `sockserv_server_new` fails.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT none of the `SOCKSERV_TLS_CLIENT_AUTH_*` modes.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_tls_client_auth(
    config: *mut sockserv_config,
    mode: c_int,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_tls_client_auth(match mode {
            SOCKSERV_TLS_CLIENT_AUTH_NONE => TlsClientAuth::None,
            SOCKSERV_TLS_CLIENT_AUTH_OPTIONAL => TlsClientAuth::Optional,
            SOCKSERV_TLS_CLIENT_AUTH_REQUIRED => TlsClientAuth::Required,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("TLS client auth mode {other} is none of SOCKSERV_TLS_CLIENT_AUTH_NONE, _OPTIONAL, _REQUIRED"),
                ))
            }
        });
        Ok(())
    })
}

/// Adds an ALPN protocol name ("h2", "myproto/1"), in order of
/// preference. A server with ALPN protocols refuses a client offering
/// none of them (`SOCKSERV_ERR_TLS`); the agreed one is in
/// `sockserv_conn_tls_info`. Copied.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` or `protocol` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT empty, or longer than 255 bytes.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_add_tls_alpn(
    config: *mut sockserv_config,
    protocol: *const c_char,
) -> sockserv_result {
    with_config(config, |c| {
        // SAFETY: caller contract: a NUL-terminated string.
        let protocol = unsafe { c_str(protocol, "protocol") }?;
        c.add_tls_alpn(protocol.as_bytes())
    })
}

/// `sockserv_config_set_tls_min_version`: TLS 1.2 (and 1.3).
pub const SOCKSERV_TLS_VERSION_1_2: c_int = 0x0303;
/// TLS 1.3 only (the default).
pub const SOCKSERV_TLS_VERSION_1_3: c_int = 0x0304;

/// The lowest TLS version accepted: `SOCKSERV_TLS_VERSION_1_3` (the
/// default) or `SOCKSERV_TLS_VERSION_1_2`.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT neither version.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_tls_min_version(
    config: *mut sockserv_config,
    version: c_int,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_tls_min_version(match version {
            SOCKSERV_TLS_VERSION_1_2 => TlsVersion::Tls12,
            SOCKSERV_TLS_VERSION_1_3 => TlsVersion::Tls13,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "TLS version {other:#06x} is neither SOCKSERV_TLS_VERSION_1_2 nor _1_3"
                    ),
                ))
            }
        });
        Ok(())
    })
}

/// TLS on connections made with `sockserv_conn_from_fd` (either role):
/// `tls://` addresses imply it, so servers and `sockserv_connect` need
/// no call. Default off.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_tls(
    config: *mut sockserv_config,
    on: bool,
) -> sockserv_result {
    with_config(config, |c| {
        c.set_tls(on);
        Ok(())
    })
}

/// `sockserv_config_set_max_datagram_size`: the largest maximum datagram
/// size, the largest UDP payload over IPv4.
pub const SOCKSERV_MAX_DATAGRAM_SIZE: usize = 65507;
/// The default maximum datagram size (Python socketserver's
/// `max_packet_size`).
pub const SOCKSERV_DEFAULT_DATAGRAM_SIZE: usize = 8192;
/// Bytes a sealed datagram (sent with a key) carries beyond its payload:
/// a 25-byte header and a 32-byte tag (see docs/DATAGRAM.md).
pub const SOCKSERV_DATAGRAM_OVERHEAD: usize = 57;

/// The largest datagram payload sent or received, in bytes (default
/// `SOCKSERV_DEFAULT_DATAGRAM_SIZE`, 8192, at most
/// `SOCKSERV_MAX_DATAGRAM_SIZE`, 65507). A larger send fails with
/// `SOCKSERV_ERR_DATAGRAM_TOO_LARGE` and sends nothing; a larger datagram
/// received is discarded with that code (a server counts it). With a key
/// the datagram on the wire is `SOCKSERV_DATAGRAM_OVERHEAD` bytes longer.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0, or above `SOCKSERV_MAX_DATAGRAM_SIZE`.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_max_datagram_size(
    config: *mut sockserv_config,
    max_bytes: usize,
) -> sockserv_result {
    with_config(config, |c| c.datagram_mut().set_max_size(max_bytes))
}

/// With a key: how far a datagram's timestamp may be from the receiver's
/// clock, either way, in milliseconds (default 30000; 0 is refused). Older
/// or newer datagrams are dropped and counted.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_datagram_window_ms(
    config: *mut sockserv_config,
    window_ms: u32,
) -> sockserv_result {
    with_config(config, |c| {
        c.datagram_mut()
            .set_window(Duration::from_millis(window_ms.into()))
    })
}

/// With a key: how many accepted datagrams a socket remembers to refuse
/// their replays (default 65536, at least 1; about 40 bytes each). They
/// are forgotten once outside the window; when the memory is full the
/// oldest is forgotten and nothing that old is accepted any more, so a
/// replay is never let in.
///
/// @retval SOCKSERV_OK done.
/// @retval SOCKSERV_ERR_NULL_PARAMETER `config` is NULL.
/// @retval SOCKSERV_ERR_INVALID_ARGUMENT 0.
/// @retval SOCKSERV_ERR_PANIC an internal error (a bug) was caught.
#[no_mangle]
pub unsafe extern "C" fn sockserv_config_set_datagram_replay_capacity(
    config: *mut sockserv_config,
    capacity: usize,
) -> sockserv_result {
    with_config(config, |c| c.datagram_mut().set_replay_capacity(capacity))
}

fn ms(timeout_ms: u32) -> Duration {
    Duration::from_millis(timeout_ms.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header's literals are the core's values.
    #[test]
    fn constants_match_the_core() {
        use crate::config::datagram::{DEFAULT_MAX_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE};
        assert_eq!(SOCKSERV_MAX_DATAGRAM_SIZE, MAX_DATAGRAM_SIZE);
        assert_eq!(SOCKSERV_DEFAULT_DATAGRAM_SIZE, DEFAULT_MAX_DATAGRAM_SIZE);
        assert_eq!(SOCKSERV_DATAGRAM_OVERHEAD, crate::proto::sealed::OVERHEAD);
    }
}

"""Finding and loading libsockserv, and the C prototypes ctypes needs.

Where the library comes from, first match wins:

1. SOCKSERV_LIB, a path to libsockserv.so (if set, it must load): an
   explicit choice beats everything;
2. the copy bundled in this package, next to this file (what
   `pip install bindings/python` and the wheel put there);
3. the checkout's build, when this module runs from a checkout:
   $CARGO_TARGET_DIR or target/, release then debug;
4. the system loader: libsockserv.so.MAJOR (an installed library, found
   through ld.so's cache or LD_LIBRARY_PATH).
"""

from __future__ import annotations

import ctypes
import os
import pathlib
from ctypes import (
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

# The ABI this binding is written for: the soname's number, libsockserv.so.0.
MAJOR = 0
# The file the package bundles beside this module.
BUNDLED = "libsockserv.so"

# Callback types (sockserv.h's *_fn). ctypes takes the GIL when the
# library's threads call them. Data pointers are c_void_p so that the
# trampolines copy exactly `len` bytes with string_at (a c_char_p would stop
# at the first NUL).
HANDLER = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)
VERIFY = ctypes.CFUNCTYPE(c_bool, c_void_p, c_char_p)
OPEN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)
FRAME = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_void_p, c_size_t)
CLOSE = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_int)
DGRAM_HANDLER = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_void_p, c_size_t, c_char_p)
REFUSAL = ctypes.CFUNCTYPE(None, c_void_p, c_char_p, c_int, c_char_p)

_R = c_int  # enum sockserv_result
_P = c_void_p  # every opaque handle
_S = POINTER(c_size_t)
_ADDR = [c_char_p, c_size_t, _S]  # buf, len, needed

PROTOTYPES: Dict[str, Tuple[Any, List[Any]]] = {
    # Library
    "sockserv_version": (c_char_p, []),
    "sockserv_strerror": (c_char_p, [c_int]),
    "sockserv_last_error": (c_size_t, [c_char_p, c_size_t]),
    "sockserv_clear_error": (None, []),
    "sockserv_set_refusal_log": (_R, [REFUSAL, c_void_p]),
    "sockserv_hmac_sha256": (_R, [c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_uint8)]),
    "sockserv_hmac_sha256_verify": (
        _R,
        [c_char_p, c_size_t, c_char_p, c_size_t, c_char_p, c_size_t],
    ),
    # Config
    "sockserv_config_new": (_R, [POINTER(_P)]),
    "sockserv_config_free": (None, [_P]),
    "sockserv_config_set_auth_key": (_R, [_P, c_char_p, c_size_t]),
    "sockserv_config_add_auth_key": (_R, [_P, c_char_p, c_size_t]),
    "sockserv_config_clear_auth_keys": (_R, [_P]),
    "sockserv_config_set_max_frame_size": (_R, [_P, c_uint64]),
    "sockserv_config_set_handshake_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_config_set_io_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_config_set_connect_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_config_set_max_connections": (_R, [_P, c_size_t]),
    "sockserv_config_set_max_pending_handshakes": (_R, [_P, c_size_t]),
    "sockserv_config_set_when_full": (_R, [_P, c_int]),
    "sockserv_config_set_backlog": (_R, [_P, c_int]),
    "sockserv_config_set_reuse_address": (_R, [_P, c_bool]),
    "sockserv_config_set_reuse_port": (_R, [_P, c_bool]),
    "sockserv_config_set_v6_only": (_R, [_P, c_bool]),
    "sockserv_config_set_nodelay": (_R, [_P, c_bool]),
    "sockserv_config_set_coalesce_sends": (_R, [_P, c_bool]),
    "sockserv_config_set_keepalive": (_R, [_P, c_bool]),
    "sockserv_config_set_io_threads": (_R, [_P, c_size_t]),
    "sockserv_config_set_max_queued_bytes": (_R, [_P, c_size_t]),
    "sockserv_config_set_close_when_backed_up": (_R, [_P, c_bool]),
    "sockserv_config_set_idle_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_config_set_proxy_protocol": (_R, [_P, c_int]),
    "sockserv_config_set_max_datagram_size": (_R, [_P, c_size_t]),
    "sockserv_config_set_datagram_window_ms": (_R, [_P, c_uint32]),
    "sockserv_config_set_datagram_replay_capacity": (_R, [_P, c_size_t]),
    "sockserv_config_set_tls_cert": (_R, [_P, c_char_p, c_size_t, c_char_p, c_size_t]),
    "sockserv_config_set_tls_cert_files": (_R, [_P, c_char_p, c_char_p]),
    "sockserv_config_set_tls_ca": (_R, [_P, c_char_p, c_size_t]),
    "sockserv_config_set_tls_ca_file": (_R, [_P, c_char_p]),
    "sockserv_config_set_tls_server_name": (_R, [_P, c_char_p]),
    "sockserv_config_set_tls_client_auth": (_R, [_P, c_int]),
    "sockserv_config_add_tls_alpn": (_R, [_P, c_char_p]),
    "sockserv_config_set_tls_min_version": (_R, [_P, c_int]),
    "sockserv_config_set_tls": (_R, [_P, c_bool]),
    # Connections
    "sockserv_connect": (_R, [c_char_p, _P, POINTER(_P)]),
    "sockserv_conn_from_fd": (_R, [c_int, _P, c_int, POINTER(_P)]),
    "sockserv_conn_send": (_R, [_P, c_char_p, c_size_t]),
    "sockserv_conn_recv": (_R, [_P, POINTER(c_void_p), _S]),
    "sockserv_conn_recv_into": (_R, [_P, c_void_p, c_size_t, _S]),
    "sockserv_conn_poll": (_R, [_P, c_int, POINTER(c_bool)]),
    "sockserv_conn_peer_addr": (_R, [_P, *_ADDR]),
    "sockserv_conn_local_addr": (_R, [_P, *_ADDR]),
    "sockserv_conn_peer_cert_sha256": (_R, [_P, c_void_p]),
    "sockserv_conn_peer_cert_subject": (_R, [_P, *_ADDR]),
    "sockserv_conn_tls_info": (_R, [_P, POINTER(c_int), *_ADDR]),
    "sockserv_conn_fd": (_R, [_P, POINTER(c_int)]),
    "sockserv_conn_set_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_conn_get_timeout_ms": (_R, [_P, POINTER(c_uint32)]),
    "sockserv_conn_set_option": (_R, [_P, c_int, c_int64]),
    "sockserv_conn_get_option": (_R, [_P, c_int, POINTER(c_int64)]),
    "sockserv_conn_flush": (_R, [_P]),
    "sockserv_conn_set_nodelay": (_R, [_P, c_bool]),
    "sockserv_conn_get_nodelay": (_R, [_P, POINTER(c_bool)]),
    "sockserv_conn_set_keepalive": (_R, [_P, c_bool, c_uint32, c_uint32, c_uint32]),
    "sockserv_conn_close": (_R, [_P]),
    "sockserv_conn_set_userdata": (_R, [_P, c_void_p]),
    "sockserv_conn_get_userdata": (c_void_p, [_P]),
    "sockserv_conn_retain": (_R, [_P]),
    "sockserv_conn_release": (None, [_P]),
    "sockserv_conn_free": (None, [_P]),
    # Datagrams
    "sockserv_dgram_open": (_R, [c_char_p, _P, POINTER(_P)]),
    "sockserv_dgram_connect": (_R, [c_char_p, _P, POINTER(_P)]),
    "sockserv_dgram_send_to": (_R, [_P, c_char_p, c_char_p, c_size_t]),
    "sockserv_dgram_send": (_R, [_P, c_char_p, c_size_t]),
    "sockserv_dgram_recv_from": (_R, [_P, c_void_p, c_size_t, _S, c_char_p, c_size_t, _S]),
    "sockserv_dgram_recv": (_R, [_P, c_void_p, c_size_t, _S]),
    "sockserv_dgram_local_addr": (_R, [_P, *_ADDR]),
    "sockserv_dgram_fd": (_R, [_P, POINTER(c_int)]),
    "sockserv_dgram_set_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_dgram_get_timeout_ms": (_R, [_P, POINTER(c_uint32)]),
    "sockserv_dgram_stat": (_R, [_P, c_int, POINTER(c_uint64)]),
    "sockserv_dgram_free": (None, [_P]),
    "sockserv_dgram_server_new": (_R, [c_char_p, _P, POINTER(_P)]),
    "sockserv_dgram_server_set_handler": (_R, [_P, DGRAM_HANDLER, c_void_p]),
    "sockserv_dgram_server_socket": (_R, [_P, POINTER(_P)]),
    "sockserv_dgram_server_local_addr": (_R, [_P, *_ADDR]),
    "sockserv_dgram_server_serve": (_R, [_P]),
    "sockserv_dgram_server_start": (_R, [_P]),
    "sockserv_dgram_server_shutdown": (_R, [_P]),
    "sockserv_dgram_server_free": (None, [_P]),
    # Servers
    "sockserv_server_new": (_R, [c_char_p, _P, POINTER(_P)]),
    "sockserv_server_set_handler": (_R, [_P, HANDLER, c_void_p]),
    "sockserv_server_set_event_handlers": (_R, [_P, OPEN, FRAME, CLOSE, c_void_p]),
    "sockserv_server_set_verify": (_R, [_P, VERIFY, c_void_p]),
    "sockserv_server_local_addr": (_R, [_P, *_ADDR]),
    "sockserv_server_serve": (_R, [_P]),
    "sockserv_server_start": (_R, [_P]),
    "sockserv_server_shutdown": (_R, [_P]),
    "sockserv_server_stat": (_R, [_P, c_int, POINTER(c_uint64)]),
    "sockserv_server_free": (None, [_P]),
}


def _checkout_root() -> Optional[pathlib.Path]:
    """The repository this module sits in (bindings/python/sockserv/), if
    it runs from a checkout rather than an install."""
    repo = pathlib.Path(__file__).resolve().parents[3]
    return repo if (repo / "Cargo.toml").is_file() and (repo / "include" / "sockserv.h").is_file() else None


def candidates() -> List[str]:
    """The paths tried, in order."""
    asked = os.environ.get("SOCKSERV_LIB")
    if asked:
        return [asked]
    found: List[pathlib.Path] = []
    bundled = pathlib.Path(__file__).resolve().with_name(BUNDLED)
    if bundled.is_file():
        found.append(bundled)
    repo = _checkout_root()
    if repo is not None:
        target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
        found += [p for p in (target / d / BUNDLED for d in ("release", "debug")) if p.is_file()]
    return [str(p) for p in found] + [f"libsockserv.so.{MAJOR}"]


def _bind(lib: ctypes.CDLL, prototypes: Mapping[str, Tuple[Any, Sequence[Any]]]) -> None:
    for name, (restype, argtypes) in prototypes.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, list(argtypes)


def load() -> Tuple[ctypes.CDLL, str]:
    """Loads the first library that works; returns (CDLL, path)."""
    failures: List[str] = []
    for path in candidates():
        try:
            lib = ctypes.CDLL(path)
            _bind(lib, PROTOTYPES)
        except (OSError, AttributeError) as e:  # AttributeError: an older library
            failures.append(f"{path}: {e}")
            continue
        version = str(lib.sockserv_version().decode())
        if int(version.split(".")[0]) != MAJOR:
            raise ImportError(f"{path} is sockserv {version}; this binding needs {MAJOR}.x")
        return lib, path
    raise ImportError(
        "libsockserv not found (pip install bindings/python bundles it; or set "
        "SOCKSERV_LIB to its path, build it with `cargo build --release`, or "
        "install it): " + "; ".join(failures)
    )


lib, path = load()

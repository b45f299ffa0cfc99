"""Finding and loading libsockserv, and the C prototypes ctypes needs.

Where the library comes from, first match wins:

1. SOCKSERV_LIB, a path to libsockserv.so (if set, it must load);
2. this checkout's build: $CARGO_TARGET_DIR or target/, release then debug;
3. the system loader: libsockserv.so.MAJOR (an installed library, found
   through ld.so's cache or LD_LIBRARY_PATH).
"""

import ctypes
import os
import pathlib
from ctypes import POINTER, c_bool, c_char_p, c_int, c_size_t, c_uint32, c_uint64, c_void_p

# The ABI this binding is written for: the soname's number, libsockserv.so.0.
MAJOR = 0

# Callback types (sockserv_handler_fn, sockserv_verify_fn). ctypes takes the
# GIL when the library's threads call them.
HANDLER = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)
VERIFY = ctypes.CFUNCTYPE(c_bool, c_void_p, c_char_p)

_R = c_int  # enum sockserv_result
_P = c_void_p  # the opaque handles: sockserv_config *, sockserv_server *, sockserv_conn *

PROTOTYPES = {
    "sockserv_version": (c_char_p, []),
    "sockserv_strerror": (c_char_p, [c_int]),
    "sockserv_last_error": (c_size_t, [c_char_p, c_size_t]),
    "sockserv_config_new": (_R, [POINTER(_P)]),
    "sockserv_config_free": (None, [_P]),
    "sockserv_config_set_auth_key": (_R, [_P, c_char_p, c_size_t]),
    "sockserv_config_add_auth_key": (_R, [_P, c_char_p, c_size_t]),
    "sockserv_config_set_max_frame_size": (_R, [_P, c_uint64]),
    "sockserv_config_set_handshake_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_config_set_io_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_config_set_connect_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_config_set_max_connections": (_R, [_P, c_size_t]),
    "sockserv_config_set_backlog": (_R, [_P, c_int]),
    "sockserv_connect": (_R, [c_char_p, _P, POINTER(_P)]),
    "sockserv_conn_send": (_R, [_P, c_char_p, c_size_t]),
    "sockserv_conn_recv": (_R, [_P, POINTER(c_void_p), POINTER(c_size_t)]),
    "sockserv_conn_poll": (_R, [_P, c_int, POINTER(c_bool)]),
    "sockserv_conn_peer_addr": (_R, [_P, c_char_p, c_size_t, POINTER(c_size_t)]),
    "sockserv_conn_local_addr": (_R, [_P, c_char_p, c_size_t, POINTER(c_size_t)]),
    "sockserv_conn_fd": (_R, [_P, POINTER(c_int)]),
    "sockserv_conn_set_timeout_ms": (_R, [_P, c_uint32]),
    "sockserv_conn_get_timeout_ms": (_R, [_P, POINTER(c_uint32)]),
    "sockserv_conn_close": (_R, [_P]),
    "sockserv_conn_free": (None, [_P]),
    "sockserv_server_new": (_R, [c_char_p, _P, POINTER(_P)]),
    "sockserv_server_set_handler": (_R, [_P, HANDLER, c_void_p]),
    "sockserv_server_set_verify": (_R, [_P, VERIFY, c_void_p]),
    "sockserv_server_local_addr": (_R, [_P, c_char_p, c_size_t, POINTER(c_size_t)]),
    "sockserv_server_start": (_R, [_P]),
    "sockserv_server_shutdown": (_R, [_P]),
    "sockserv_server_stat": (_R, [_P, c_int, POINTER(c_uint64)]),
    "sockserv_server_free": (None, [_P]),
}


def candidates():
    """The paths tried, in order."""
    asked = os.environ.get("SOCKSERV_LIB")
    if asked:
        return [asked]
    repo = pathlib.Path(__file__).resolve().parents[3]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
    built = [target / p / "libsockserv.so" for p in ("release", "debug")]
    return [str(p) for p in built if p.exists()] + [f"libsockserv.so.{MAJOR}"]


def load():
    """Loads the first library that works; returns (CDLL, path)."""
    failures = []
    for path in candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            failures.append(str(e))
            continue
        for name, (restype, argtypes) in PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        version = lib.sockserv_version().decode()
        if int(version.split(".")[0]) != MAJOR:
            raise ImportError(f"{path} is sockserv {version}; this binding needs {MAJOR}.x")
        return lib, path
    raise ImportError(
        "libsockserv not found (set SOCKSERV_LIB to its path, build it with "
        "`cargo build --release`, or install it): " + "; ".join(failures)
    )


lib, path = load()

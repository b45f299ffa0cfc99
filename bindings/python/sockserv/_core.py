"""What every part of the binding shares: calling C and turning codes into
exceptions, addresses, timeouts, configs and their options, and reporting
exceptions raised in callbacks."""

from __future__ import annotations

import contextlib
import ctypes
import enum
import math
import os
import sys
import threading
import traceback
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    Optional,
    Sequence,
    Tuple,
    TypedDict,
    Union,
)

from ._lib import lib
from .errors import Code, UsageError, error_for

if TYPE_CHECKING:
    from typing_extensions import Self

ADDRSTRLEN = 128  # SOCKSERV_ADDRSTRLEN

#: What sockserv takes as bytes: a frame, a datagram, a key.
Buffer = Union[bytes, bytearray, memoryview]
#: An address: "tcp://HOST:PORT", "unix:///path", "udp://...", "unixgram://...",
#: or multiprocessing's forms, (host, port) for TCP and a path starting with
#: "/" or "." for a Unix stream socket.
Address = Union[str, Tuple[str, int]]
#: Receives an exception a callback raised (on the callback's thread).
ErrorHandler = Callable[[BaseException], None]
#: A file name: str or a path object.
StrPath = Union[str, "os.PathLike[str]"]


class WhenFull(enum.IntEnum):
    """`when_full=`: what a full server does with one more connection."""

    WAIT = 0  # SOCKSERV_WHEN_FULL_WAIT
    REFUSE = 1  # SOCKSERV_WHEN_FULL_REFUSE


class Proxy(enum.IntEnum):
    """`proxy_protocol=`: whether connections start with a PROXY header."""

    OFF = 0  # SOCKSERV_PROXY_OFF
    OPTIONAL = 1  # SOCKSERV_PROXY_OPTIONAL
    REQUIRED = 2  # SOCKSERV_PROXY_REQUIRED


class TLSClientAuth(enum.IntEnum):
    """`tls_client_auth=`: whether a TLS server asks for client certificates
    (both need `tls_ca` or `tls_ca_file`)."""

    NONE = 0  # SOCKSERV_TLS_CLIENT_AUTH_NONE
    OPTIONAL = 1  # SOCKSERV_TLS_CLIENT_AUTH_OPTIONAL: verified if sent
    REQUIRED = 2  # SOCKSERV_TLS_CLIENT_AUTH_REQUIRED: mutual TLS


class TLSVersion(enum.IntEnum):
    """`tls_min_version=` and TLSInfo.version (names as in ssl.TLSVersion)."""

    TLSv1_2 = 0x0303  # SOCKSERV_TLS_VERSION_1_2
    TLSv1_3 = 0x0304  # SOCKSERV_TLS_VERSION_1_3 (the default minimum)


class Options(TypedDict, total=False):
    """The keyword options of servers, clients and datagram sockets
    (sockserv_config_set_*). Times are in seconds, as in Python's socket
    module; the library's milliseconds are rounded up."""

    max_frame_size: int
    handshake_timeout: float
    connect_timeout: float
    io_timeout: Optional[float]  # None: no timeout
    max_connections: int
    max_pending_handshakes: int
    when_full: WhenFull
    backlog: int
    reuse_address: bool
    reuse_port: bool
    v6_only: bool
    nodelay: bool
    coalesce_sends: bool
    keepalive: bool
    io_threads: int  # event mode; 0: one per core
    max_queued_bytes: int  # event mode
    close_when_backed_up: bool  # event mode
    idle_timeout: Optional[float]  # event mode; None: never
    proxy_protocol: Proxy
    max_datagram_size: int
    datagram_window: float
    datagram_replay_capacity: int
    # TLS (tls:// addresses; see docs/tls.md). PEM everywhere.
    tls_cert_file: Tuple[StrPath, StrPath]  # (chain file, key file): this side's certificate
    tls_cert: Tuple[Buffer, Buffer]  # (chain PEM, key PEM), from memory
    tls_ca_file: StrPath  # the CA(s) the peer's certificate must chain to
    tls_ca: Buffer  # the same from memory
    tls_server_name: str  # what a client checks (default: the address's host)
    tls_client_auth: TLSClientAuth
    tls_alpn: Sequence[str]  # ALPN protocols, in order of preference
    tls_min_version: TLSVersion
    tls: bool  # TLS for from_fd (tls:// addresses imply it)


# Whether this thread is inside a callback (closing a server there would
# wait for the callback itself).
local = threading.local()


def in_callback() -> bool:
    return bool(getattr(local, "in_callback", False))


def last_error() -> str:
    """This thread's last failure detail (sockserv_last_error)."""
    # It returns the full length, like snprintf: ask, then copy.
    n = int(lib.sockserv_last_error(None, 0))
    buf = ctypes.create_string_buffer(n + 1)
    lib.sockserv_last_error(buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def check(rc: int, call: str) -> None:
    # The detail is per thread: read it on the thread that failed, at once.
    if rc != Code.OK:
        raise error_for(rc, last_error(), call)


def call(name: str, *args: Any) -> None:
    """Calls the C function `name`; raises the exception for its code."""
    check(int(getattr(lib, name)(*args)), name)


def address(addr: Address) -> bytes:
    """A sockserv address as C wants it, also from multiprocessing's forms.
    Anything else goes to sockserv as it is (which names a bad one)."""
    if isinstance(addr, tuple):
        host, port = addr
        text = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
    elif addr.startswith(("/", ".")):
        text = "unix://" + addr
    else:
        text = addr
    return text.encode()


def as_bytes(data: Buffer, what: str) -> bytes:
    if isinstance(data, str):
        raise TypeError(f"{what} must be bytes-like, not str")
    return bytes(data)


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds, rounded up (a positive timeout stays positive)."""
    if seconds <= 0:
        raise ValueError(f"a timeout must be positive, not {seconds!r} (None: none)")
    return max(1, math.ceil(seconds * 1000))


def ms_or_none(seconds: Optional[float]) -> int:
    return 0 if seconds is None else ms(seconds)


def read_address(fn: str, handle: int) -> str:
    buf, needed = ctypes.create_string_buffer(ADDRSTRLEN), ctypes.c_size_t()
    call(fn, handle, buf, ADDRSTRLEN, ctypes.byref(needed))
    return buf.value.decode()


# keyword -> (setter, conversion to the C argument)
_SETTERS: Dict[str, Tuple[str, Callable[[Any], Any]]] = {
    "max_frame_size": ("sockserv_config_set_max_frame_size", int),
    "handshake_timeout": ("sockserv_config_set_handshake_timeout_ms", ms),
    "connect_timeout": ("sockserv_config_set_connect_timeout_ms", ms),
    "io_timeout": ("sockserv_config_set_io_timeout_ms", ms_or_none),
    "max_connections": ("sockserv_config_set_max_connections", int),
    "max_pending_handshakes": ("sockserv_config_set_max_pending_handshakes", int),
    "when_full": ("sockserv_config_set_when_full", int),
    "backlog": ("sockserv_config_set_backlog", int),
    "reuse_address": ("sockserv_config_set_reuse_address", bool),
    "reuse_port": ("sockserv_config_set_reuse_port", bool),
    "v6_only": ("sockserv_config_set_v6_only", bool),
    "nodelay": ("sockserv_config_set_nodelay", bool),
    "coalesce_sends": ("sockserv_config_set_coalesce_sends", bool),
    "keepalive": ("sockserv_config_set_keepalive", bool),
    "io_threads": ("sockserv_config_set_io_threads", int),
    "max_queued_bytes": ("sockserv_config_set_max_queued_bytes", int),
    "close_when_backed_up": ("sockserv_config_set_close_when_backed_up", bool),
    "idle_timeout": ("sockserv_config_set_idle_timeout_ms", ms_or_none),
    "proxy_protocol": ("sockserv_config_set_proxy_protocol", int),
    "max_datagram_size": ("sockserv_config_set_max_datagram_size", int),
    "datagram_window": ("sockserv_config_set_datagram_window_ms", ms),
    "datagram_replay_capacity": ("sockserv_config_set_datagram_replay_capacity", int),
}


def _pem(value: Buffer, what: str) -> bytes:
    return value.encode() if isinstance(value, str) else as_bytes(value, what)


def _set_tls_cert(handle: Any, value: Tuple[Buffer, Buffer]) -> None:
    chain, key = _pem(value[0], "tls_cert chain"), _pem(value[1], "tls_cert key")
    call("sockserv_config_set_tls_cert", handle, chain, len(chain), key, len(key))


def _set_tls_ca(handle: Any, value: Buffer) -> None:
    pem = _pem(value, "tls_ca")
    call("sockserv_config_set_tls_ca", handle, pem, len(pem))


def _set_tls_alpn(handle: Any, protocols: Sequence[str]) -> None:
    if isinstance(protocols, (str, bytes)):
        raise TypeError("tls_alpn is a sequence of protocol names, e.g. ['h2']")
    for protocol in protocols:
        call("sockserv_config_add_tls_alpn", handle, protocol.encode())


# keyword -> how it is applied, in this order (the certificate and CA
# before what depends on them).
_TLS_SETTERS: Dict[str, Callable[[Any, Any], None]] = {
    "tls_cert_file": lambda h, v: call(
        "sockserv_config_set_tls_cert_files", h, os.fsencode(v[0]), os.fsencode(v[1])
    ),
    "tls_cert": _set_tls_cert,
    "tls_ca_file": lambda h, v: call("sockserv_config_set_tls_ca_file", h, os.fsencode(v)),
    "tls_ca": _set_tls_ca,
    "tls_server_name": lambda h, v: call("sockserv_config_set_tls_server_name", h, str(v).encode()),
    "tls_client_auth": lambda h, v: call("sockserv_config_set_tls_client_auth", h, int(v)),
    "tls_alpn": _set_tls_alpn,
    "tls_min_version": lambda h, v: call("sockserv_config_set_tls_min_version", h, int(v)),
    "tls": lambda h, v: call("sockserv_config_set_tls", h, bool(v)),
}
assert set(_SETTERS) | set(_TLS_SETTERS) == set(Options.__annotations__), "Options and _SETTERS disagree"


@contextlib.contextmanager
def config(key: Optional[Buffer], extra_keys: Iterable[Buffer], options: Options) -> Iterator[int]:
    """A sockserv_config for one server, connection or socket, which copies it."""
    unknown = set(options) - set(_SETTERS) - set(_TLS_SETTERS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    handle = ctypes.c_void_p()
    call("sockserv_config_new", ctypes.byref(handle))
    try:
        if key is not None:
            k = as_bytes(key, "key")
            call("sockserv_config_set_auth_key", handle, k, len(k))
        for extra in extra_keys:
            k = as_bytes(extra, "extra key")
            call("sockserv_config_add_auth_key", handle, k, len(k))
        for name, value in options.items():
            if name in _SETTERS:
                setter, convert = _SETTERS[name]
                call(setter, handle, convert(value))
        for name, apply in _TLS_SETTERS.items():
            if name in options:
                apply(handle, options[name])  # type: ignore[literal-required]
        assert handle.value is not None
        yield handle.value
    finally:
        lib.sockserv_config_free(handle)


def report(on_error: Optional[ErrorHandler], exc: BaseException, where: str) -> None:
    """Hands an exception from a callback to on_error, or prints it; nothing
    escapes into C."""
    try:
        if on_error is not None:
            on_error(exc)
            return
    except BaseException as e:  # noqa: BLE001 (the C boundary)
        exc, where = e, "on_error"
    try:
        print(f"sockserv: exception in the {where}:", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    except BaseException:  # noqa: BLE001 (stderr closed at exit, say)
        pass


class Handle:
    """What Connection and DatagramSocket share: a C handle that several
    threads may use at once, invalidated only once no call is in flight.
    A subclass names itself for the UsageError a call on a closed one
    raises: `_NAME` (the class), `_WHAT` ("the connection") and
    `_LENT_GONE` (why a lent one is gone). Each subclass has its own
    close(), which `with` and the finalizer call (a lent one is closed by
    its owner, not at collection)."""

    _NAME: str
    _WHAT: str
    _LENT_GONE: str

    def __init__(self, handle: int, lent: bool) -> None:
        self._handle: Optional[int] = handle
        self._lent = lent
        self._busy = 0  # calls in flight
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def _use(self) -> Iterator[int]:
        with self._cond:
            if self._handle is None:
                what = self._LENT_GONE if self._lent else "is closed"
                raise UsageError(Code.INVALID_STATE, f"{self._WHAT} {what}", self._NAME)
            self._busy += 1
            handle = self._handle
        try:
            yield handle
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._handle is None

    def _invalidate(self) -> None:
        """The owner is about to free a lent handle: later calls raise
        UsageError, and calls in flight finish first."""
        with self._cond:
            self._handle = None
            self._cond.wait_for(lambda: self._busy == 0)

    def close(self) -> None:
        raise NotImplementedError  # each subclass closes its own kind

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None and not self._lent:
            self.close()

"""Framed stream connections: connect(), from_fd(), and the Connection a
server lends to its handler or event callbacks."""

from __future__ import annotations

import ctypes
import enum
import math
import socket
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, Optional, Union

from . import _core
from ._core import Address, Buffer, Options, TLSVersion, as_bytes, call
from ._lib import lib
from .errors import Code, UsageError, error_for

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Option(enum.IntEnum):
    """Connection options (SOCKSERV_OPT_*), for set_option/get_option."""

    NODELAY = 0
    KEEPALIVE = 1
    KEEPALIVE_IDLE = 2
    KEEPALIVE_INTERVAL = 3
    KEEPALIVE_COUNT = 4
    RCVBUF = 5
    SNDBUF = 6
    LINGER = 7
    NONBLOCKING = 8


class Role(enum.IntEnum):
    """from_fd(): which end of the handshake the socket is."""

    SERVER = 0  # SOCKSERV_ROLE_SERVER: it was accepted (challenges first)
    CLIENT = 1  # SOCKSERV_ROLE_CLIENT: it was connected (answers first)


class PeerCertificate(NamedTuple):
    """The certificate the peer showed in the TLS handshake."""

    #: SHA-256 of its DER bytes (what `openssl x509 -fingerprint -sha256` shows).
    sha256: bytes
    #: Its subject, "CN=client,O=Example".
    subject: str


class TLSInfo(NamedTuple):
    """What the TLS handshake negotiated."""

    version: Union[TLSVersion, int]
    #: The ALPN protocol, None when none was negotiated.
    alpn: Optional[str]


def _text(fn: Callable[[Optional[ctypes.Array[ctypes.c_char]], int, Any], int], what: str) -> Optional[str]:
    """A (buf, len, &needed) string of any length; None for INVALID_STATE
    (no TLS, or no peer certificate)."""
    needed = ctypes.c_size_t()
    size = 256
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        rc = fn(buf, size, ctypes.byref(needed))
        if rc == Code.OK:
            return buf.value.decode("utf-8", "replace")
        if rc == Code.INVALID_STATE:
            return None
        if rc != Code.INSUFFICIENT_SIZE:
            break
        size = needed.value + 1
    _core.check(rc, what)
    raise AssertionError("unreachable")


class Connection(_core.Handle):
    """A framed connection: connect() and from_fd() make one (yours: close
    it, or use `with`); a Server's handler and an EventServer's callbacks
    are lent one (valid until the handler returns or on_close has run;
    using it afterwards raises UsageError).

    One thread may receive while others send. close() from another thread
    wakes a blocked send or receive, then frees the connection once no call
    is in flight. `userdata` is yours (the Python side of
    sockserv_conn_set_userdata).
    """

    _NAME = "Connection"
    _WHAT = "the connection"
    _LENT_GONE = "was lent to a callback that has returned"

    userdata: Any

    def __init__(self, handle: int, lent: bool = False) -> None:
        super().__init__(handle, lent)
        self.userdata = None

    def send(self, data: Buffer) -> None:
        """Sends bytes-like `data` as one frame. Event mode: queues it and
        never waits (TimeoutError with Code.WOULD_BLOCK when the queue is
        over its limit). Non-blocking mode: see setblocking()."""
        data = as_bytes(data, "data")
        with self._use() as h:
            call("sockserv_conn_send", h, data, len(data))

    def recv(self) -> bytes:
        """Receives the next whole frame, as bytes."""
        ptr, n = ctypes.c_void_p(), ctypes.c_size_t()
        with self._use() as h:
            call("sockserv_conn_recv", h, ctypes.byref(ptr), ctypes.byref(n))
            # Copied before anything else can receive on it (the frame is
            # borrowed from the connection's buffer).
            return ctypes.string_at(ptr.value, n.value) if ptr.value and n.value else b""

    def recv_into(self, buffer: Union[bytearray, memoryview]) -> int:
        """Receives the next frame into a writable buffer and returns its
        size. A frame that does not fit raises UsageError
        (Code.INSUFFICIENT_SIZE, the size needed in .needed) and stays
        queued for the next receive."""
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("recv_into needs a writable buffer")
        cap = view.nbytes
        # ctypes wants an address: a ctypes array over the caller's memory.
        c_buf = (ctypes.c_char * cap).from_buffer(view) if cap else None
        n = ctypes.c_size_t()
        with self._use() as h:
            rc = int(lib.sockserv_conn_recv_into(h, c_buf, cap, ctypes.byref(n)))
            if rc == Code.INSUFFICIENT_SIZE:
                err = error_for(rc, _core.last_error(), "sockserv_conn_recv_into")
                err.needed = n.value
                raise err
            _core.check(rc, "sockserv_conn_recv_into")
        return n.value

    def poll(self, timeout: Optional[float] = 0.0) -> bool:
        """Whether recv() would not wait, after waiting up to `timeout`
        seconds (None: for ever)."""
        ms = -1 if timeout is None else min(math.ceil(max(timeout, 0) * 1000), 2**31 - 1)
        readable = ctypes.c_bool()
        with self._use() as h:
            call("sockserv_conn_poll", h, ms, ctypes.byref(readable))
        return readable.value

    def settimeout(self, seconds: Optional[float]) -> None:
        """The timeout of each later send and receive; None: none.
        (Non-blocking mode is setblocking(False).)"""
        with self._use() as h:
            call("sockserv_conn_set_timeout_ms", h, _core.ms_or_none(seconds))

    def gettimeout(self) -> Optional[float]:
        ms = ctypes.c_uint32()
        with self._use() as h:
            call("sockserv_conn_get_timeout_ms", h, ctypes.byref(ms))
        return ms.value / 1000 if ms.value else None

    def set_option(self, option: Option, value: int) -> None:
        """Sets a SOCKSERV_OPT_* option (TCP ones on a Unix socket raise
        NetworkError with Code.IO)."""
        with self._use() as h:
            call("sockserv_conn_set_option", h, int(option), int(value))

    def get_option(self, option: Option) -> int:
        value = ctypes.c_int64()
        with self._use() as h:
            call("sockserv_conn_get_option", h, int(option), ctypes.byref(value))
        return value.value

    def setblocking(self, flag: bool) -> None:
        """Non-blocking mode (SOCKSERV_OPT_NONBLOCKING) when False: recv()
        with no whole frame ready, and send() the kernel cannot take at all,
        raise TimeoutError with Code.WOULD_BLOCK at once. A frame the kernel
        took part of is finished by the next send() or flush()."""
        self.set_option(Option.NONBLOCKING, 0 if flag else 1)

    def getblocking(self) -> bool:
        return self.get_option(Option.NONBLOCKING) == 0

    def flush(self) -> bool:
        """Writes what an earlier send left over (non-blocking mode, or a
        reply held by coalesce_sends). True when nothing is left; False
        while some is (non-blocking: wait until fileno() is writable)."""
        with self._use() as h:
            rc = int(lib.sockserv_conn_flush(h))
            if rc == Code.WOULD_BLOCK:
                return False
            _core.check(rc, "sockserv_conn_flush")
        return True

    @property
    def nodelay(self) -> bool:
        """TCP_NODELAY (TCP only: NetworkError on Unix sockets)."""
        on = ctypes.c_bool()
        with self._use() as h:
            call("sockserv_conn_get_nodelay", h, ctypes.byref(on))
        return on.value

    @nodelay.setter
    def nodelay(self, on: bool) -> None:
        with self._use() as h:
            call("sockserv_conn_set_nodelay", h, bool(on))

    def set_keepalive(self, on: bool, idle: int = 0, interval: int = 0, count: int = 0) -> None:
        """TCP keepalive: the first probe after `idle` seconds of silence,
        then every `interval`, dropped after `count` unanswered; zeros keep
        the kernel's timings."""
        with self._use() as h:
            call("sockserv_conn_set_keepalive", h, bool(on), idle, interval, count)

    @property
    def peer_address(self) -> str:
        with self._use() as h:
            return _core.read_address("sockserv_conn_peer_addr", h)

    @property
    def local_address(self) -> str:
        with self._use() as h:
            return _core.read_address("sockserv_conn_local_addr", h)

    @property
    def peer_certificate(self) -> Optional[PeerCertificate]:
        """The peer's TLS certificate (in a handler, in on_open, on a
        client): its SHA-256 fingerprint and subject. None without TLS, or
        when the peer showed none (a client under TLSClientAuth.OPTIONAL)."""
        digest = (ctypes.c_uint8 * 32)()
        with self._use() as h:
            rc = int(lib.sockserv_conn_peer_cert_sha256(h, digest))
            if rc == Code.INVALID_STATE:
                return None
            _core.check(rc, "sockserv_conn_peer_cert_sha256")
            subject = _text(
                lambda buf, n, needed: int(lib.sockserv_conn_peer_cert_subject(h, buf, n, needed)),
                "sockserv_conn_peer_cert_subject",
            )
        return PeerCertificate(bytes(digest), subject or "")

    @property
    def tls_info(self) -> Optional[TLSInfo]:
        """The TLS version and ALPN protocol negotiated; None without TLS."""
        version = ctypes.c_int()
        with self._use() as h:
            alpn = _text(
                lambda buf, n, needed: int(lib.sockserv_conn_tls_info(h, ctypes.byref(version), buf, n, needed)),
                "sockserv_conn_tls_info",
            )
        if alpn is None:
            return None
        v: Union[TLSVersion, int] = (
            TLSVersion(version.value) if version.value in TLSVersion._value2member_map_ else version.value
        )
        return TLSInfo(v, alpn or None)

    def fileno(self) -> int:
        """The socket, for select/poll; still the connection's: do not read,
        write or close it."""
        fd = ctypes.c_int()
        with self._use() as h:
            call("sockserv_conn_fd", h, ctypes.byref(fd))
        return fd.value

    def close(self) -> None:
        """Closes the connection (a lent one too: in event mode what is
        queued is written first, then on_close runs). Idempotent."""
        with self._cond:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            # Wakes any thread blocked on it, then waits for it to leave.
            lib.sockserv_conn_close(handle)
            self._cond.wait_for(lambda: self._busy == 0)
        if not self._lent:
            lib.sockserv_conn_free(handle)

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else ("lent" if self._lent else "open")
        return f"<sockserv.Connection {state}>"


def connect(address: Address, *, key: Optional[Buffer] = None, **options: Unpack[Options]) -> Connection:
    """Connects to `address` ("tcp://HOST:PORT", "unix://PATH", (host, port)
    or a Unix socket path starting with "/" or ".") and, with a key, runs
    the handshake. Options: see sockserv.Options (max_frame_size,
    connect_timeout, handshake_timeout, io_timeout, nodelay, keepalive,
    coalesce_sends...). A "tls://HOST:PORT" address needs `tls_ca` or
    `tls_ca_file` (the CA to trust), and `tls_cert_file` for a server
    that requires client certificates."""
    handle = ctypes.c_void_p()
    with _core.config(key, (), options) as cfg:
        call("sockserv_connect", _core.address(address), cfg, ctypes.byref(handle))
    assert handle.value is not None
    return Connection(handle.value)


def from_fd(
    sock: Union[int, socket.socket],
    role: Role,
    *,
    key: Optional[Buffer] = None,
    extra_keys: Iterable[Buffer] = (),
    **options: Unpack[Options],
) -> Connection:
    """Adopts a connected stream socket (TCP or Unix) you already have and
    runs the handshake as `role` when there is a key. On success the
    Connection owns the descriptor (a socket.socket passed in is detached);
    on failure it stays yours."""
    fd = sock.fileno() if isinstance(sock, socket.socket) else sock
    handle = ctypes.c_void_p()
    with _core.config(key, extra_keys, options) as cfg:
        call("sockserv_conn_from_fd", fd, cfg, int(role), ctypes.byref(handle))
    if isinstance(sock, socket.socket):
        sock.detach()
    assert handle.value is not None
    return Connection(handle.value)

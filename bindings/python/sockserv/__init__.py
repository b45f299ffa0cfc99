"""sockserv from Python: framed, HMAC-SHA256-authenticated servers and
clients over libsockserv's C ABI, through ctypes.

    import sockserv

    def echo(conn):                      # runs on a thread per connection
        while True:
            conn.send(conn.recv())       # ends with ConnectionClosed

    with sockserv.Server("tcp://127.0.0.1:0", echo, key=b"secret") as srv:
        srv.start()
        with sockserv.connect(srv.address, key=b"secret") as conn:
            conn.send(b"hello")
            assert conn.recv() == b"hello"

The bytes on the wire are multiprocessing.connection's (3.12+ handshake),
so a Server talks to multiprocessing's Client and connect() to its Listener.
Also: EventServer (callbacks on a few I/O threads), datagrams
(open_datagram, connect_datagram, DatagramServer; sealed with a key),
from_fd, connection options and non-blocking mode, statistics, TLS
("tls://" addresses and the tls_* options; conn.peer_certificate); an
EventServer in your own loop (start_embedded, fileno, timeout, process),
dialing out from it (EventServer.dial), and asyncio (asyncio_serve,
asyncio_connect).
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Optional, Union

from . import _lib
from ._core import Address, Buffer, ErrorHandler, Options, Proxy, StrPath, TLSClientAuth, TLSVersion, WhenFull
from ._dgram import (
    DATAGRAM_OVERHEAD,
    DEFAULT_DATAGRAM_SIZE,
    MAX_DATAGRAM_SIZE,
    DatagramHandler,
    DatagramServer,
    DatagramSocket,
    connect_datagram,
    open_datagram,
)
from ._lib import lib
from ._asyncio import AsyncConnection, AsyncioServing, asyncio_connect, asyncio_serve
from ._server import Dialer, EventServer, Handler, OnClose, OnDialError, OnFrame, OnOpen, Server, Verify
from ._stream import Connection, Option, PeerCertificate, Role, TLSInfo, connect, from_fd
from .errors import (
    AuthenticationError,
    CertificateError,
    Code,
    ConnectionClosed,
    InternalError,
    NetworkError,
    ProtocolError,
    SockservError,
    TimeoutError,
    TLSError,
    UsageError,
)

__all__ = [
    "ADDRSTRLEN",
    "DATAGRAM_OVERHEAD",
    "DEFAULT_DATAGRAM_SIZE",
    "MAX_DATAGRAM_SIZE",
    "Address",
    "AsyncConnection",
    "AsyncioServing",
    "AuthenticationError",
    "Buffer",
    "CertificateError",
    "Code",
    "Connection",
    "ConnectionClosed",
    "DatagramHandler",
    "DatagramServer",
    "DatagramSocket",
    "Dialer",
    "ErrorHandler",
    "EventServer",
    "Handler",
    "InternalError",
    "NetworkError",
    "OnClose",
    "OnDialError",
    "OnFrame",
    "OnOpen",
    "Option",
    "Options",
    "PeerCertificate",
    "ProtocolError",
    "Proxy",
    "RefusalLog",
    "Role",
    "Server",
    "SockservError",
    "StrPath",
    "TLSClientAuth",
    "TLSError",
    "TLSInfo",
    "TLSVersion",
    "TimeoutError",
    "UsageError",
    "Verify",
    "WhenFull",
    "asyncio_connect",
    "asyncio_serve",
    "clear_error",
    "connect",
    "connect_datagram",
    "from_fd",
    "hmac_sha256",
    "hmac_sha256_verify",
    "last_error",
    "library_path",
    "open_datagram",
    "set_refusal_log",
    "strerror",
    "version",
]

ADDRSTRLEN = 128  # SOCKSERV_ADDRSTRLEN
#: The header version this binding was written against (SOCKSERV_VERSION_*).
VERSION_MAJOR, VERSION_MINOR, VERSION_PATCH = 0, 1, 0


def version() -> str:
    """The library's version, "MAJOR.MINOR.PATCH"."""
    return str(lib.sockserv_version().decode())


def library_path() -> str:
    """The path of the libsockserv this module loaded."""
    return _lib.path


def strerror(code: int) -> str:
    """The library's static text for a code (any int)."""
    return str(lib.sockserv_strerror(int(code)).decode())


def last_error() -> str:
    """This thread's last failure detail (exceptions carry it as .detail)."""
    from ._core import last_error as detail

    return detail()


def clear_error() -> None:
    """Forgets this thread's last failure detail."""
    lib.sockserv_clear_error()


def hmac_sha256(key: Buffer, msg: Buffer) -> bytes:
    """HMAC-SHA256(key, msg), by the library (32 bytes)."""
    from ._core import as_bytes, call

    k, m = as_bytes(key, "key"), as_bytes(msg, "msg")
    out = (ctypes.c_uint8 * 32)()
    call("sockserv_hmac_sha256", k, len(k), m, len(m), out)
    return bytes(out)


def hmac_sha256_verify(key: Buffer, msg: Buffer, mac: Buffer) -> bool:
    """Whether `mac` is HMAC-SHA256(key, msg), compared in constant time."""
    from ._core import as_bytes, check

    k, m, t = as_bytes(key, "key"), as_bytes(msg, "msg"), as_bytes(mac, "mac")
    rc = int(lib.sockserv_hmac_sha256_verify(k, len(k), m, len(m), t, len(t)))
    if rc == Code.AUTH_FAILED:
        return False
    check(rc, "sockserv_hmac_sha256_verify")
    return True


#: refusal_log(peer_address, code, detail): one peer a server or datagram
#: socket turned away (see set_refusal_log); code is a Code (a plain int
#: for one this binding does not know, from a newer library).
RefusalLog = Callable[[str, Union[Code, int], str], None]

# The ctypes function the library holds, kept alive while it may call it.
_refusal_log: Optional[Any] = None


def set_refusal_log(log: Optional[RefusalLog]) -> None:
    """Sets (None removes) the process-wide refusal log: log(peer, code,
    detail) is called for each peer any server refuses (a failed PROXY
    header or handshake, the verify callback, the connection cap) and each
    sealed datagram a socket drops, on the library's thread that refused,
    so keep it quick. Exceptions it raises are swallowed (never into C)."""
    global _refusal_log

    if log is None:
        lib.sockserv_set_refusal_log(_lib.REFUSAL(), None)  # NULL
        _refusal_log = None
        return

    def trampoline(_userdata: Optional[int], peer: bytes, code: int, detail: bytes) -> None:
        try:
            kind: Union[Code, int] = Code(code) if code in Code._value2member_map_ else code
            log(peer.decode(errors="replace"), kind, detail.decode(errors="replace"))
        except BaseException:  # noqa: BLE001 (never into C)
            pass

    fn = _lib.REFUSAL(trampoline)
    lib.sockserv_set_refusal_log(fn, None)
    # The old one is dropped only once the library holds the new one.
    _refusal_log = fn

"""Result codes and the exceptions they raise: one class per family of
codes, each carrying the code (.code), the library's detail (.detail, from
sockserv_last_error on the failing thread) and the C function (.call)."""

from __future__ import annotations

import builtins
import enum
import multiprocessing
from typing import Dict, Optional, Tuple, Type, Union


class Code(enum.IntEnum):
    """sockserv_result, as in sockserv.h (a test checks every SOCKSERV_ code
    of the header is here with its value)."""

    OK = 0
    NULL_PARAMETER = 1
    INVALID_ARGUMENT = 2
    INVALID_ADDRESS = 3
    ADDRESS_IN_USE = 4
    CONNECTION_REFUSED = 5
    TIMED_OUT = 6
    CLOSED = 7
    TRUNCATED_FRAME = 8
    FRAME_TOO_LARGE = 9
    PROTOCOL = 10
    AUTH_FAILED = 11
    AUTH_PROTOCOL = 12
    INSUFFICIENT_SIZE = 13
    SHUTDOWN = 14
    INVALID_STATE = 15
    BROKEN = 16
    IO = 17
    PANIC = 18
    WOULD_BLOCK = 19
    DATAGRAM_TOO_LARGE = 20
    TLS = 21
    CERTIFICATE = 22


class SockservError(Exception):
    """A failed sockserv call. `.code` is a Code (a plain int for a code
    this binding does not know, from a newer library)."""

    code: Union[Code, int]
    detail: str
    call: str
    #: With Code.INSUFFICIENT_SIZE from a receive into a buffer: the size needed.
    needed: Optional[int] = None

    def __init__(self, code: int, detail: str = "", call: str = "") -> None:
        try:
            self.code = Code(code)
        except ValueError:
            self.code = code
        self.detail = detail
        self.call = call
        name = self.code.name if isinstance(self.code, Code) else f"code {code}"
        super().__init__(f"{call}: {name}" + (f": {detail}" if detail else ""))


class UsageError(SockservError):
    """The call was wrong: a bad argument or address, or the object's state
    does not allow it (e.g. a closed connection)."""


class NetworkError(SockservError, OSError):
    """The operating system said no: refused, address in use, another error."""


class TimeoutError(SockservError, builtins.TimeoutError):  # noqa: A001 (also the builtin)
    """The operation did not finish in time; the connection stays usable
    after a receive timed out. WOULD_BLOCK (non-blocking mode, a full event
    queue) is one too: try again later."""


class ConnectionClosed(SockservError, EOFError):
    """The connection ended: the peer closed it, the server is stopping, or
    an earlier failure broke it. An EOFError, like multiprocessing's."""


class ProtocolError(SockservError):
    """The peer broke the framing (a truncated or oversized frame, a
    datagram over the maximum size); a stream connection was closed."""


class AuthenticationError(SockservError, multiprocessing.AuthenticationError):
    """The handshake failed: wrong key, or a peer speaking another handshake."""


class InternalError(SockservError):
    """A bug inside sockserv was caught at its boundary."""


FAMILIES: Dict[Type[SockservError], Tuple[Code, ...]] = {
    UsageError: (
        Code.NULL_PARAMETER,
        Code.INVALID_ARGUMENT,
        Code.INVALID_ADDRESS,
        Code.INSUFFICIENT_SIZE,
        Code.INVALID_STATE,
    ),
    NetworkError: (Code.ADDRESS_IN_USE, Code.CONNECTION_REFUSED, Code.IO),
    TimeoutError: (Code.TIMED_OUT, Code.WOULD_BLOCK),
    ConnectionClosed: (Code.CLOSED, Code.SHUTDOWN, Code.BROKEN),
    ProtocolError: (
        Code.TRUNCATED_FRAME,
        Code.FRAME_TOO_LARGE,
        Code.PROTOCOL,
        Code.DATAGRAM_TOO_LARGE,
        Code.TLS,
    ),
    AuthenticationError: (Code.AUTH_FAILED, Code.AUTH_PROTOCOL, Code.CERTIFICATE),
    InternalError: (Code.PANIC,),
}
_CLASS_OF: Dict[int, Type[SockservError]] = {
    code: cls for cls, codes in FAMILIES.items() for code in codes
}


def error_for(code: int, detail: str = "", call: str = "") -> SockservError:
    """The exception for a code (SockservError for a code this binding does
    not know)."""
    return _CLASS_OF.get(code, SockservError)(code, detail, call)

"""Datagrams: DatagramSocket (open_datagram, connect_datagram, or a
DatagramServer's own socket) and DatagramServer (like socketserver's
UDPServer and UnixDatagramServer). With a key every datagram is sealed:
HMAC-SHA256-tagged, timestamped, and checked against replays."""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import _core, _lib
from ._core import Buffer, ErrorHandler, Options, as_bytes, call, report
from ._lib import lib
from .errors import Code, UsageError

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

MAX_DATAGRAM_SIZE = 65507  # SOCKSERV_MAX_DATAGRAM_SIZE
DEFAULT_DATAGRAM_SIZE = 8192  # SOCKSERV_DEFAULT_DATAGRAM_SIZE
DATAGRAM_OVERHEAD = 57  # SOCKSERV_DATAGRAM_OVERHEAD: a sealed datagram's extra bytes

# SOCKSERV_DGRAM_STAT_* in order.
DGRAM_STATS = (
    "sent",
    "received",
    "too_large",
    "too_short",
    "bad_version",
    "bad_tag",
    "too_old",
    "too_new",
    "replayed",
)


class DatagramSocket(_core.Handle):
    """A datagram socket. open_datagram() and connect_datagram() make one
    (yours: close it, or use `with`); a DatagramServer lends its own
    (.socket, and the handler's first argument), valid until the server is
    closed. Sends may come from several threads at once; receive from one
    thread at a time."""

    _NAME = "DatagramSocket"
    _WHAT = "the datagram socket"
    _LENT_GONE = "belongs to a closed server"

    def __init__(self, handle: int, lent: bool, max_size: int) -> None:
        super().__init__(handle, lent)
        self._max_size = max_size

    def send_to(self, to: str, data: Buffer) -> None:
        """Sends `data` as one datagram to `to` ("udp://HOST:PORT",
        "unixgram:///path", "unixgram://@name", or the sender a receive
        gave). Over max_datagram_size: ProtocolError
        (Code.DATAGRAM_TOO_LARGE), nothing sent."""
        data = as_bytes(data, "data")
        with self._use() as h:
            call("sockserv_dgram_send_to", h, to.encode(), data, len(data))

    def send(self, data: Buffer) -> None:
        """Sends `data` to the connected peer (connect_datagram)."""
        data = as_bytes(data, "data")
        with self._use() as h:
            call("sockserv_dgram_send", h, data, len(data))

    def recv_from(self) -> Tuple[bytes, str]:
        """Receives the next datagram: (payload, sender). Waits up to the
        timeout (TimeoutError). With a key, datagrams failing the checks are
        dropped and counted (stats()) and the wait goes on."""
        cap, from_cap = self._max_size, _core.ADDRSTRLEN
        for _ in range(3):  # a buffer too small is grown to the size needed
            buf = ctypes.create_string_buffer(max(cap, 1))
            sender = ctypes.create_string_buffer(from_cap)
            n, from_n = ctypes.c_size_t(), ctypes.c_size_t()
            with self._use() as h:
                rc = int(
                    lib.sockserv_dgram_recv_from(
                        h, buf, cap, ctypes.byref(n), sender, from_cap, ctypes.byref(from_n)
                    )
                )
                if rc == Code.INSUFFICIENT_SIZE:
                    cap, from_cap = max(cap, n.value), max(from_cap, from_n.value)
                    continue
                _core.check(rc, "sockserv_dgram_recv_from")
            return buf.raw[: n.value], sender.value.decode()
        raise AssertionError("sockserv_dgram_recv_from kept asking for more room")

    def recv(self) -> bytes:
        """Receives the next datagram's payload (connected sockets)."""
        cap = self._max_size
        for _ in range(3):
            buf = ctypes.create_string_buffer(max(cap, 1))
            n = ctypes.c_size_t()
            with self._use() as h:
                rc = int(lib.sockserv_dgram_recv(h, buf, cap, ctypes.byref(n)))
                if rc == Code.INSUFFICIENT_SIZE:
                    cap = max(cap, n.value)
                    continue
                _core.check(rc, "sockserv_dgram_recv")
            return buf.raw[: n.value]
        raise AssertionError("sockserv_dgram_recv kept asking for more room")

    @property
    def local_address(self) -> str:
        """The bound address ("udp://127.0.0.1:40000", "unixgram://@00a1f")."""
        with self._use() as h:
            return _core.read_address("sockserv_dgram_local_addr", h)

    def fileno(self) -> int:
        """The socket, for select/poll; do not read from it directly (with a
        key the datagrams would not be checked)."""
        fd = ctypes.c_int()
        with self._use() as h:
            call("sockserv_dgram_fd", h, ctypes.byref(fd))
        return fd.value

    def settimeout(self, seconds: Optional[float]) -> None:
        """The timeout of each later send and receive; None: none. A
        server's socket never waits to send."""
        with self._use() as h:
            call("sockserv_dgram_set_timeout_ms", h, _core.ms_or_none(seconds))

    def gettimeout(self) -> Optional[float]:
        ms = ctypes.c_uint32()
        with self._use() as h:
            call("sockserv_dgram_get_timeout_ms", h, ctypes.byref(ms))
        return ms.value / 1000 if ms.value else None

    def stats(self) -> Dict[str, int]:
        """The counters (SOCKSERV_DGRAM_STAT_*): sent, received, too_large,
        and with a key too_short, bad_version, bad_tag, too_old, too_new,
        replayed."""
        out: Dict[str, int] = {}
        value = ctypes.c_uint64()
        with self._use() as h:
            for i, name in enumerate(DGRAM_STATS):
                call("sockserv_dgram_stat", h, i, ctypes.byref(value))
                out[name] = value.value
        return out

    def close(self) -> None:
        """Closes and frees the socket (a Unix socket file it bound is
        removed); waits for calls in flight. A server's socket is closed
        with its server: close() on it does nothing. Idempotent."""
        if self._lent:
            return
        with self._cond:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            self._cond.wait_for(lambda: self._busy == 0)
        lib.sockserv_dgram_free(handle)


def _max_size(options: Options) -> int:
    return int(options.get("max_datagram_size", DEFAULT_DATAGRAM_SIZE))


def open_datagram(
    local: Optional[str] = None,
    *,
    key: Optional[Buffer] = None,
    extra_keys: Iterable[Buffer] = (),
    **options: Unpack[Options],
) -> DatagramSocket:
    """A datagram socket bound to `local` ("udp://0.0.0.0:0",
    "unixgram:///tmp/me.sock", "unixgram://@name"), or unbound (None: the
    first send_to binds it in the destination's family). Options:
    max_datagram_size, io_timeout (the initial timeout), datagram_window,
    datagram_replay_capacity."""
    handle = ctypes.c_void_p()
    with _core.config(key, extra_keys, options) as cfg:
        call("sockserv_dgram_open", None if local is None else local.encode(), cfg, ctypes.byref(handle))
    assert handle.value is not None
    return DatagramSocket(handle.value, False, _max_size(options))


def connect_datagram(
    address: str,
    *,
    key: Optional[Buffer] = None,
    extra_keys: Iterable[Buffer] = (),
    **options: Unpack[Options],
) -> DatagramSocket:
    """A datagram socket connected to `address`: send() goes there, and
    only its datagrams are received."""
    handle = ctypes.c_void_p()
    with _core.config(key, extra_keys, options) as cfg:
        call("sockserv_dgram_connect", address.encode(), cfg, ctypes.byref(handle))
    assert handle.value is not None
    return DatagramSocket(handle.value, False, _max_size(options))


#: handler(sock, payload, sender): one datagram, on the server's thread.
DatagramHandler = Callable[[DatagramSocket, bytes, str], None]


def _free_dgram_server(handle: int, callbacks: List[Any]) -> None:
    lib.sockserv_dgram_server_free(handle)
    callbacks.clear()


class DatagramServer:
    """A datagram server: one thread receives on `address` ("udp://...:0",
    "unixgram:///path", "unixgram://@name") and calls handler(sock, payload,
    sender) for each datagram, one at a time; reply with
    sock.send_to(sender, ...). Exceptions in the handler go to on_error
    (default: printed) and the server goes on. With a key, datagrams are
    sealed and checked (stats() counts the dropped ones)."""

    def __init__(
        self,
        address: str,
        handler: Optional[DatagramHandler] = None,
        *,
        key: Optional[Buffer] = None,
        extra_keys: Iterable[Buffer] = (),
        on_error: Optional[ErrorHandler] = None,
        **options: Unpack[Options],
    ) -> None:
        handle = ctypes.c_void_p()
        with _core.config(key, extra_keys, options) as cfg:
            call("sockserv_dgram_server_new", address.encode(), cfg, ctypes.byref(handle))
        assert handle.value is not None
        self._handle: Optional[int] = handle.value
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        callbacks: List[Any] = []
        self._finalizer = weakref.finalize(self, _free_dgram_server, handle.value, callbacks)
        try:
            sock = ctypes.c_void_p()
            call("sockserv_dgram_server_socket", handle.value, ctypes.byref(sock))
            assert sock.value is not None
            self.socket = DatagramSocket(sock.value, True, _max_size(options))
            if handler is not None:
                callbacks.append(_lib.DGRAM_HANDLER(_dgram_trampoline(handler, self.socket, on_error)))
                call("sockserv_dgram_server_set_handler", handle.value, callbacks[-1], None)
        except BaseException:
            self.close()
            raise

    def _live(self) -> int:
        if self._handle is None:
            raise UsageError(Code.INVALID_STATE, "the server is closed", "DatagramServer")
        return self._handle

    @property
    def address(self) -> str:
        with self._lock:
            return _core.read_address("sockserv_dgram_server_local_addr", self._live())

    def start(self) -> None:
        """Serves on a background thread and returns."""
        with self._lock:
            call("sockserv_dgram_server_start", self._live())

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serves until shutdown(); the wait is Python's, so Ctrl-C works."""
        self.start()
        while not self._stopped.wait(poll_interval):
            pass

    def shutdown(self) -> None:
        """Stops serving, from any thread (the handler too)."""
        with self._lock:
            if self._handle is not None:
                call("sockserv_dgram_server_shutdown", self._handle)
        self._stopped.set()

    def stats(self) -> Dict[str, int]:
        """The counters of the server's socket (see DatagramSocket.stats)."""
        with self._lock:
            self._live()
        return self.socket.stats()

    def close(self) -> None:
        """Stops the server, joins its thread and closes its socket. Not
        from the handler (use shutdown())."""
        if _core.in_callback():
            raise UsageError(
                Code.INVALID_STATE,
                "close() from the handler would wait for itself; use shutdown()",
                "DatagramServer.close",
            )
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            # No new handler call; then no call on the socket from any
            # thread once it is freed.
            lib.sockserv_dgram_server_shutdown(handle)
        self._stopped.set()
        sock = getattr(self, "socket", None)
        if sock is not None:
            sock._invalidate()
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dgram_trampoline(
    handler: DatagramHandler, sock: DatagramSocket, on_error: Optional[ErrorHandler]
) -> Callable[[Optional[int], int, Optional[int], int, bytes], None]:
    # Holds the socket wrapper, not the server (see Server._trampoline).
    def trampoline(_userdata: Optional[int], _sock: int, data: Optional[int], size: int, sender: bytes) -> None:
        try:
            payload = ctypes.string_at(data, size) if data and size else b""
            _core.local.in_callback = True
            try:
                handler(sock, payload, sender.decode("utf-8", "replace"))
            except BaseException as e:  # noqa: BLE001 (the C boundary)
                report(on_error, e, "datagram handler")
            finally:
                _core.local.in_callback = False
        except BaseException:  # noqa: BLE001 (never into C)
            pass

    return trampoline

"""Stream servers: Server (a thread per connection, like
socketserver.ThreadingTCPServer) and EventServer (a few I/O threads calling
on_open, on_frame and on_close)."""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

from . import _core, _lib
from ._core import Address, Buffer, ErrorHandler, Options, call, report
from ._lib import lib
from ._stream import Connection
from .errors import Code, ConnectionClosed, UsageError

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

#: handler(conn): serves one connection on a thread of its own.
Handler = Callable[[Connection], None]
#: verify(peer_address) -> bool: False refuses the peer before the handshake.
Verify = Callable[[str], bool]
#: on_open(conn), on_frame(conn, frame), on_close(conn, reason).
OnOpen = Callable[[Connection], None]
OnFrame = Callable[[Connection, bytes], None]
OnClose = Callable[[Connection, Code], None]

# SOCKSERV_STAT_* in order.
STATS = (
    "accepted",
    "active",
    "refused_by_verify",
    "refused_when_full",
    "handshake_failures",
    "handled",
    "proxy_failures",
)


def _verify_trampoline(verify: Verify, on_error: Optional[ErrorHandler]) -> Any:
    def trampoline(_userdata: Optional[int], peer: bytes) -> bool:
        try:
            _core.local.in_callback = True
            return bool(verify(peer.decode()))
        except BaseException as e:  # noqa: BLE001 (the C boundary)
            report(on_error, e, "verify callback")
            return False  # refuse a peer we could not judge
        finally:
            _core.local.in_callback = False

    return _lib.VERIFY(trampoline)


def _free_server(handle: int, callbacks: List[Any]) -> None:
    # `callbacks` (the ctypes function objects) is held until the server,
    # which may call them, is gone.
    lib.sockserv_server_free(handle)
    callbacks.clear()


class _ServerBase:
    def __init__(
        self,
        address: Address,
        key: Optional[Buffer],
        extra_keys: Iterable[Buffer],
        verify: Optional[Verify],
        on_error: Optional[ErrorHandler],
        options: Options,
    ) -> None:
        handle = ctypes.c_void_p()
        with _core.config(key, extra_keys, options) as cfg:
            call("sockserv_server_new", _core.address(address), cfg, ctypes.byref(handle))
        assert handle.value is not None
        self._handle: Optional[int] = handle.value
        self._on_error = on_error
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        # The ctypes callbacks must live as long as the C server: the
        # finalizer holds them (and not self) until it has freed it.
        self._callbacks: List[Any] = []
        self._finalizer = weakref.finalize(self, _free_server, handle.value, self._callbacks)
        try:
            if verify is not None:
                self._callbacks.append(_verify_trampoline(verify, on_error))
                call("sockserv_server_set_verify", handle.value, self._callbacks[-1], None)
        except BaseException:
            self.close()
            raise

    def _live(self) -> int:
        if self._handle is None:
            raise UsageError(Code.INVALID_STATE, "the server is closed", type(self).__name__)
        return self._handle

    @property
    def address(self) -> str:
        """The bound address, e.g. "tcp://127.0.0.1:40123" (port 0 resolved)."""
        with self._lock:
            return _core.read_address("sockserv_server_local_addr", self._live())

    def start(self) -> None:
        """Serves on background threads and returns."""
        with self._lock:
            call("sockserv_server_start", self._live())

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serves until shutdown(). The wait is Python's, so Ctrl-C works."""
        self.start()
        while not self._stopped.wait(poll_interval):
            pass

    def shutdown(self) -> None:
        """Stops accepting, from any thread (a callback too); live
        connections go on until they end or close()."""
        with self._lock:
            if self._handle is not None:
                call("sockserv_server_shutdown", self._handle)
        self._stopped.set()

    def stat(self, name: str) -> int:
        """One counter by name (see stats())."""
        value = ctypes.c_uint64()
        with self._lock:
            call("sockserv_server_stat", self._live(), STATS.index(name), ctypes.byref(value))
        return value.value

    def stats(self) -> Dict[str, int]:
        """The server's counters (SOCKSERV_STAT_*): accepted, active,
        refused_by_verify, refused_when_full, handshake_failures, handled,
        proxy_failures."""
        return {name: self.stat(name) for name in STATS}

    def close(self) -> None:
        """Stops the server, closes every connection, waits for the
        callbacks and joins the threads. Not from a callback (use shutdown())."""
        if _core.in_callback():
            raise UsageError(
                Code.INVALID_STATE,
                "close() from a callback would wait for itself; use shutdown()",
                f"{type(self).__name__}.close",
            )
        with self._lock:
            self._handle = None
        self._stopped.set()
        self._finalizer()  # frees the C server once; later calls do nothing

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Server(_ServerBase):
    """A threaded server, like socketserver.ThreadingTCPServer: `handler`
    is called with a Connection on a thread of its own for each
    authenticated connection, concurrently with the others; the connection
    closes when it returns. A handler ending with ConnectionClosed (the peer
    left) is normal; any other exception goes to on_error(exc), by default
    printed to stderr, and never into C.

    `verify(peer_address) -> bool` (optional) runs on the accept thread
    before the handshake; False refuses the peer (so does raising). `key`
    turns on authentication; `extra_keys` are also accepted (rotation).
    Options: see sockserv.Options.

    start() serves on background threads, serve_forever() on this one
    until shutdown(); close() (or leaving `with`) stops everything and joins
    the threads. The library is freed at exit if close() was not called.
    """

    def __init__(
        self,
        address: Address,
        handler: Optional[Handler] = None,
        *,
        key: Optional[Buffer] = None,
        extra_keys: Iterable[Buffer] = (),
        verify: Optional[Verify] = None,
        on_error: Optional[ErrorHandler] = None,
        **options: Unpack[Options],
    ) -> None:
        super().__init__(address, key, extra_keys, verify, on_error, options)
        if handler is None:
            return
        try:
            self._callbacks.append(_lib.HANDLER(self._trampoline(handler, on_error)))
            call("sockserv_server_set_handler", self._live(), self._callbacks[-1], None)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _trampoline(handler: Handler, on_error: Optional[ErrorHandler]) -> Callable[[Optional[int], int], None]:
        # A static method: the trampoline must not hold the Server (the
        # finalizer frees the C server when the Server is collected).
        def trampoline(_userdata: Optional[int], handle: int) -> None:
            try:
                conn = Connection(handle, lent=True)
                _core.local.in_callback = True
                try:
                    handler(conn)
                except ConnectionClosed:
                    pass  # the peer left or the server is stopping: a normal end
                except BaseException as e:  # noqa: BLE001 (the C boundary)
                    report(on_error, e, "handler")
                finally:
                    _core.local.in_callback = False
                    conn.close()  # the server frees it; no call may still use it
            except BaseException:  # noqa: BLE001 (never into C)
                pass

        return trampoline


class EventServer(_ServerBase):
    """An event-driven server (sockserv_server_set_event_handlers): a few
    I/O threads (io_threads=, default one per core) hold every connection
    and call, for each, on_open(conn) once, on_frame(conn, frame) for every
    whole frame, and on_close(conn, reason) once (reason: Code.OK after
    conn.close(), CLOSED when the peer left, SHUTDOWN when the server is
    closed, TIMED_OUT for idle_timeout=, or the error that ended it). Each
    may be None. The same Connection object is passed to all three; it may
    be sent on from any thread until on_close returns, and its sends queue
    without waiting (max_queued_bytes=, close_when_backed_up=).

    Callbacks run on an I/O thread that serves other connections
    meanwhile: do not block in them. An exception in on_open or on_frame is
    passed to on_error (default: printed) and closes that connection; one
    in on_close is passed on too. None reaches C.
    """

    def __init__(
        self,
        address: Address,
        *,
        on_open: Optional[OnOpen] = None,
        on_frame: Optional[OnFrame] = None,
        on_close: Optional[OnClose] = None,
        key: Optional[Buffer] = None,
        extra_keys: Iterable[Buffer] = (),
        verify: Optional[Verify] = None,
        on_error: Optional[ErrorHandler] = None,
        **options: Unpack[Options],
    ) -> None:
        super().__init__(address, key, extra_keys, verify, on_error, options)
        try:
            # The three trampolines share the handle -> Connection map; like
            # the callbacks, it lives as long as the C server, not the Server.
            self._callbacks.extend(_event_trampolines(on_open, on_frame, on_close, on_error))
            call("sockserv_server_set_event_handlers", self._live(), *self._callbacks[-3:], None)
        except BaseException:
            self.close()
            raise


def _event_trampolines(
    on_open: Optional[OnOpen],
    on_frame: Optional[OnFrame],
    on_close: Optional[OnClose],
    on_error: Optional[ErrorHandler],
) -> List[Any]:
    conns: Dict[int, Connection] = {}
    lock = threading.Lock()

    def conn_of(handle: int) -> Connection:
        with lock:
            conn = conns.get(handle)
            if conn is None:  # on_open was not seen (cannot happen; be safe)
                conn = conns[handle] = Connection(handle, lent=True)
            return conn

    def run(where: str, fn: Callable[[], None], conn: Connection, close_on_error: bool) -> None:
        _core.local.in_callback = True
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 (the C boundary)
            report(on_error, e, where)
            if close_on_error:
                try:
                    conn.close()
                except BaseException:  # noqa: BLE001
                    pass
        finally:
            _core.local.in_callback = False

    def opened(_userdata: Optional[int], handle: int) -> None:
        try:
            conn = conn_of(handle)
            if on_open is not None:
                run("on_open callback", lambda: on_open(conn), conn, True)
        except BaseException:  # noqa: BLE001 (never into C)
            pass

    def frame(_userdata: Optional[int], handle: int, data: Optional[int], size: int) -> None:
        try:
            conn = conn_of(handle)
            if on_frame is not None:
                payload = ctypes.string_at(data, size) if data and size else b""
                run("on_frame callback", lambda: on_frame(conn, payload), conn, True)
        except BaseException:  # noqa: BLE001 (never into C)
            pass

    def closed(_userdata: Optional[int], handle: int, reason: int) -> None:
        try:
            conn = conn_of(handle)
            try:
                code = Code(reason)
            except ValueError:
                code = Code.IO  # a code newer than this binding
            if on_close is not None:
                run("on_close callback", lambda: on_close(conn, code), conn, False)
            with lock:
                conns.pop(handle, None)
            conn._invalidate()  # the library frees it when this returns
        except BaseException:  # noqa: BLE001 (never into C)
            pass

    return [_lib.OPEN(opened), _lib.FRAME(frame), _lib.CLOSE(closed)]

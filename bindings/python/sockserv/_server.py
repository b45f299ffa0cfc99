"""Stream servers: Server (a thread per connection, like
socketserver.ThreadingTCPServer) and EventServer (a few I/O threads calling
on_open, on_frame and on_close)."""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import _core, _lib
from ._core import Address, Buffer, ErrorHandler, Options, call, report
from ._lib import lib
from ._stream import Connection
from .errors import Code, ConnectionClosed, SockservError, UsageError, error_for

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
#: on_dial_error(dialer, error): one failed attempt of a dialer.
OnDialError = Callable[["Dialer", SockservError], None]

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
        address: Optional[Address],
        key: Optional[Buffer],
        extra_keys: Iterable[Buffer],
        verify: Optional[Verify],
        on_error: Optional[ErrorHandler],
        options: Options,
    ) -> None:
        handle = ctypes.c_void_p()
        with _core.config(key, extra_keys, options) as cfg:
            if address is None:  # an engine with no listener, for dialing
                call("sockserv_server_new_unbound", cfg, ctypes.byref(handle))
            else:
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

    Embedded (start_embedded() instead of start()): no thread of
    sockserv's; your loop watches fileno() for readability, calls process()
    after every wake-up and then waits at most timeout(); the callbacks run
    inside process(), on your thread. sockserv.asyncio_serve() does that
    on an asyncio loop. `address` None makes an engine with no listener,
    for dial() only.

    dial(address) connects out from the same engine (without blocking,
    reconnecting with backoff); its connections get the same callbacks.
    on_dial_error(dialer, error) hears about each failed attempt.
    """

    def __init__(
        self,
        address: Optional[Address],
        *,
        on_open: Optional[OnOpen] = None,
        on_frame: Optional[OnFrame] = None,
        on_close: Optional[OnClose] = None,
        on_dial_error: Optional[OnDialError] = None,
        key: Optional[Buffer] = None,
        extra_keys: Iterable[Buffer] = (),
        verify: Optional[Verify] = None,
        on_error: Optional[ErrorHandler] = None,
        **options: Unpack[Options],
    ) -> None:
        super().__init__(address, key, extra_keys, verify, on_error, options)
        # handle -> Dialer, for on_dial_error and close(); shared with the
        # trampoline, which must not hold the server.
        self._dialers: Dict[int, Dialer] = {}
        try:
            # The three trampolines share the handle -> Connection map; like
            # the callbacks, it lives as long as the C server, not the Server.
            self._callbacks.extend(_event_trampolines(on_open, on_frame, on_close, on_error))
            call("sockserv_server_set_event_handlers", self._live(), *self._callbacks[-3:], None)
            if on_dial_error is not None:
                self._callbacks.append(_dial_error_trampoline(on_dial_error, self._dialers, on_error))
                call("sockserv_server_set_dial_error_handler", self._live(), self._callbacks[-1], None)
        except BaseException:
            self.close()
            raise

    def start_embedded(self) -> None:
        """Serves from the caller's loop instead of I/O threads: watch
        fileno(), call process(), wait at most timeout()."""
        with self._lock:
            call("sockserv_server_start_embedded", self._live())

    def fileno(self) -> int:
        """Embedded: the descriptor to watch for readability (level- or
        edge-triggered); sockserv's, do not read or close it."""
        fd = ctypes.c_int()
        with self._lock:
            call("sockserv_server_loop_fd", self._live(), ctypes.byref(fd))
        return fd.value

    def timeout(self) -> Optional[float]:
        """Embedded: how long the loop may sleep before the next process()
        if fileno() stays quiet, in seconds; None: no deadline; 0.0: more is
        ready, call process() again before sleeping."""
        ms = ctypes.c_int()
        with self._lock:
            call("sockserv_server_loop_timeout_ms", self._live(), ctypes.byref(ms))
        return None if ms.value < 0 else ms.value / 1000

    def process(self) -> bool:
        """Embedded: does all ready work without blocking; the callbacks
        run in here. False once the server has shut down (shutdown(), from
        a callback too; every connection is closed then): stop watching it
        and close() it."""
        with self._lock:
            handle = self._live()
        # Not under the lock: a callback may call shutdown() or dial().
        rc = int(lib.sockserv_server_process(handle))
        if rc == Code.SHUTDOWN:
            return False
        _core.check(rc, "sockserv_server_process")
        return True

    def dial(
        self,
        address: Address,
        *,
        reconnect: Optional[Tuple[float, float]] = (0.1, 30.0),
        key: Optional[Buffer] = None,
        **options: Unpack[Options],
    ) -> Dialer:
        """Connects to `address` from this server's engine, without
        blocking: connect, handshake, then on_open/on_frame/on_close like an
        accepted connection. `reconnect` (min, max) seconds: when the
        connection ends or an attempt fails it redials, the wait doubling
        from min to max; None: once only. With neither key nor options the
        server's settings are used."""
        raw = ctypes.c_void_p()
        with self._lock:
            handle = self._live()
            if key is None and not options:
                call("sockserv_server_dial", handle, _core.address(address), None, ctypes.byref(raw))
            else:
                with _core.config(key, (), options) as cfg:
                    call("sockserv_server_dial", handle, _core.address(address), cfg, ctypes.byref(raw))
        assert raw.value is not None
        dialer = Dialer(raw.value, self._dialers)
        try:
            lo, hi = (_core.ms(reconnect[0]), _core.ms(reconnect[1])) if reconnect is not None else (0, 0)
            call("sockserv_dialer_set_reconnect", raw.value, lo, hi)
        except BaseException:
            dialer.close()
            raise
        return dialer

    def close(self) -> None:
        for dialer in list(getattr(self, "_dialers", {}).values()):
            dialer.close()
        super().close()


class Dialer:
    """An outgoing connection of an EventServer (EventServer.dial): it
    redials when its connection ends until close(), which also closes
    the connection it has."""

    def __init__(self, handle: int, registry: Dict[int, Dialer]) -> None:
        self._handle: Optional[int] = handle
        self._registry = registry
        registry[handle] = self

    def close(self) -> None:
        """Stops redialing, closes its connection (on_close runs) and frees
        the dialer. Idempotent."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        self._registry.pop(handle, None)
        lib.sockserv_dialer_close(handle)
        lib.sockserv_dialer_free(handle)

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sockserv.Dialer {'closed' if self._handle is None else 'open'}>"


def _dial_error_trampoline(
    on_dial_error: OnDialError, dialers: Dict[int, Dialer], on_error: Optional[ErrorHandler]
) -> Any:
    def trampoline(_userdata: Optional[int], handle: Optional[int], code: int, detail: Optional[bytes]) -> None:
        try:
            dialer = dialers.get(handle or 0)
            if dialer is None:
                return  # closed meanwhile
            err = error_for(code, (detail or b"").decode(errors="replace"), "sockserv_server_dial")
            _core.local.in_callback = True
            try:
                on_dial_error(dialer, err)
            except BaseException as e:  # noqa: BLE001 (the C boundary)
                report(on_error, e, "on_dial_error callback")
            finally:
                _core.local.in_callback = False
        except BaseException:  # noqa: BLE001 (never into C)
            pass

    return _lib.DIAL_ERROR(trampoline)


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

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
"""

import contextlib
import ctypes
import math
import sys
import threading
import traceback
import weakref

from . import _lib
from ._lib import lib
from .errors import (
    AuthenticationError,
    Code,
    ConnectionClosed,
    InternalError,
    NetworkError,
    ProtocolError,
    SockservError,
    TimeoutError,
    UsageError,
    error_for,
)

__all__ = [
    "AuthenticationError",
    "Code",
    "Connection",
    "ConnectionClosed",
    "InternalError",
    "NetworkError",
    "ProtocolError",
    "Server",
    "SockservError",
    "TimeoutError",
    "UsageError",
    "connect",
    "library_path",
    "version",
]

ADDRSTRLEN = 128  # SOCKSERV_ADDRSTRLEN
# SOCKSERV_STAT_* in order.
_STATS = ("accepted", "active", "refused_by_verify", "refused_when_full",
          "handshake_failures", "handled")

# Whether this thread is inside a callback (closing the server there would
# wait for the callback itself).
_local = threading.local()


def version():
    """The library's version, "MAJOR.MINOR.PATCH"."""
    return lib.sockserv_version().decode()


def library_path():
    """The path of the libsockserv this module loaded."""
    return _lib.path


def _last_error():
    # sockserv_last_error returns the full length, like snprintf: ask, then copy.
    n = lib.sockserv_last_error(None, 0)
    buf = ctypes.create_string_buffer(n + 1)
    lib.sockserv_last_error(buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def _check(rc, call):
    # The detail is per thread: read it on the thread that failed, at once.
    if rc != Code.OK:
        raise error_for(rc, _last_error(), call)


def _call(name, *args):
    """Calls the C function `name`; raises the exception for its code."""
    _check(getattr(lib, name)(*args), name)


def _address(address):
    """A sockserv address, also from multiprocessing's forms: (host, port)
    is TCP, a path starting with "/" or "." a Unix socket. Anything else goes
    to sockserv as it is (which names a bad one)."""
    if isinstance(address, tuple):
        host, port = address
        return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
    if address.startswith(("/", ".")):
        return "unix://" + address
    return address


def _bytes(data, what):
    if isinstance(data, str):
        raise TypeError(f"{what} must be bytes-like, not str")
    return bytes(data)


def _ms(seconds):
    """Seconds as whole milliseconds, rounded up (a positive timeout stays positive)."""
    return max(1, math.ceil(seconds * 1000))


# keyword -> (setter, conversion). Timeouts are in seconds, as in Python's
# socket module; io_timeout=None means no timeout.
_OPTIONS = {
    "max_frame_size": ("sockserv_config_set_max_frame_size", int),
    "handshake_timeout": ("sockserv_config_set_handshake_timeout_ms", _ms),
    "connect_timeout": ("sockserv_config_set_connect_timeout_ms", _ms),
    "io_timeout": ("sockserv_config_set_io_timeout_ms", lambda s: 0 if s is None else _ms(s)),
    "max_connections": ("sockserv_config_set_max_connections", int),
    "backlog": ("sockserv_config_set_backlog", int),
}


@contextlib.contextmanager
def _config(key, extra_keys, options):
    """A sockserv_config for one server or connection, which copies it."""
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    handle = ctypes.c_void_p()
    _call("sockserv_config_new", ctypes.byref(handle))
    try:
        if key is not None:
            k = _bytes(key, "key")
            _call("sockserv_config_set_auth_key", handle, k, len(k))
        for extra in extra_keys:
            k = _bytes(extra, "extra key")
            _call("sockserv_config_add_auth_key", handle, k, len(k))
        for name, value in options.items():
            setter, convert = _OPTIONS[name]
            _call(setter, handle, convert(value))
        yield handle
    finally:
        lib.sockserv_config_free(handle)


class Connection:
    """A framed connection: connect() makes one (yours: close it, or use
    `with`), and a Server's handler is lent one (valid during the call only;
    using it afterwards raises UsageError).

    One thread may receive while others send. close() from another thread
    wakes a blocked send or receive, then frees the connection once no call
    is in flight.
    """

    def __init__(self, handle, lent=False):
        self._handle = handle
        self._lent = lent
        self._busy = 0  # calls in flight
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def _use(self):
        with self._cond:
            if self._handle is None:
                what = "was lent to a handler that has returned" if self._lent else "is closed"
                raise UsageError(Code.INVALID_STATE, f"the connection {what}", "Connection")
            self._busy += 1
            handle = self._handle
        try:
            yield handle
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def send(self, data):
        """Sends bytes-like `data` as one frame."""
        data = _bytes(data, "data")
        with self._use() as h:
            _call("sockserv_conn_send", h, data, len(data))

    def recv(self):
        """Receives the next whole frame, as bytes."""
        ptr, n = ctypes.c_void_p(), ctypes.c_size_t()
        with self._use() as h:
            _call("sockserv_conn_recv", h, ctypes.byref(ptr), ctypes.byref(n))
            # Copied before anything else can receive on it (the frame is
            # borrowed from the connection's buffer).
            return ctypes.string_at(ptr.value, n.value) if n.value else b""

    def poll(self, timeout=0.0):
        """Whether recv() would not wait, after waiting up to `timeout`
        seconds (None: for ever)."""
        ms = -1 if timeout is None else min(math.ceil(timeout * 1000), 2**31 - 1)
        readable = ctypes.c_bool()
        with self._use() as h:
            _call("sockserv_conn_poll", h, ms, ctypes.byref(readable))
        return readable.value

    def settimeout(self, seconds):
        """The timeout of each later send and receive; None: none."""
        with self._use() as h:
            ms = 0 if seconds is None else _ms(seconds)
            _call("sockserv_conn_set_timeout_ms", h, ms)

    def gettimeout(self):
        ms = ctypes.c_uint32()
        with self._use() as h:
            _call("sockserv_conn_get_timeout_ms", h, ctypes.byref(ms))
        return ms.value / 1000 if ms.value else None

    def _addr(self, name):
        buf, needed = ctypes.create_string_buffer(ADDRSTRLEN), ctypes.c_size_t()
        with self._use() as h:
            _call(name, h, buf, ADDRSTRLEN, ctypes.byref(needed))
        return buf.value.decode()

    @property
    def peer_address(self):
        return self._addr("sockserv_conn_peer_addr")

    @property
    def local_address(self):
        return self._addr("sockserv_conn_local_addr")

    def fileno(self):
        """The socket, for select/poll; still the connection's: do not read,
        write or close it."""
        fd = ctypes.c_int()
        with self._use() as h:
            _call("sockserv_conn_fd", h, ctypes.byref(fd))
        return fd.value

    @property
    def closed(self):
        return self._handle is None

    def close(self):
        """Closes the connection (a lent one too). Idempotent."""
        with self._cond:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            # Wakes any thread blocked on it, then waits for it to leave.
            lib.sockserv_conn_close(handle)
            self._cond.wait_for(lambda: self._busy == 0)
        if not self._lent:
            lib.sockserv_conn_free(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None) is not None and not self._lent:
            self.close()


def connect(address, *, key=None, **options):
    """Connects to `address` ("tcp://HOST:PORT", "unix://PATH", (host, port)
    or a Unix socket path starting with "/" or ".") and, with a key, runs the handshake. Options:
    max_frame_size, connect_timeout, handshake_timeout, io_timeout (seconds).
    """
    handle = ctypes.c_void_p()
    with _config(key, (), options) as cfg:
        _call("sockserv_connect", _address(address).encode(), cfg, ctypes.byref(handle))
    return Connection(handle.value)


def _report(on_error, exc, where):
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


def _handler_trampoline(handler, on_error):
    def call(_userdata, handle):
        try:
            conn = Connection(handle, lent=True)
            _local.in_callback = True
            try:
                handler(conn)
            except ConnectionClosed:
                pass  # the peer left or the server is stopping: a normal end
            except BaseException as e:  # noqa: BLE001 (the C boundary)
                _report(on_error, e, "handler")
            finally:
                _local.in_callback = False
                conn.close()  # the server frees it; no call may still use it
        except BaseException:  # noqa: BLE001 (never into C)
            pass

    return _lib.HANDLER(call)


def _verify_trampoline(verify, on_error):
    def call(_userdata, peer):
        try:
            _local.in_callback = True
            return bool(verify(peer.decode()))
        except BaseException as e:  # noqa: BLE001 (the C boundary)
            _report(on_error, e, "verify callback")
            return False  # refuse a peer we could not judge
        finally:
            _local.in_callback = False

    return _lib.VERIFY(call)


def _free_server(handle, callbacks):
    # `callbacks` (the ctypes function objects) is held until the server,
    # which may call them, is gone.
    lib.sockserv_server_free(handle)
    callbacks.clear()


class Server:
    """A threaded server, like socketserver.ThreadingTCPServer: `handler`
    is called with a Connection on a thread of its own for each
    authenticated connection, concurrently with the others; the connection
    closes when it returns. A handler ending with ConnectionClosed (the peer
    left) is normal; any other exception goes to on_error(exc), by default
    printed to stderr, and never into C.

    `verify(peer_address) -> bool` (optional) runs on the accept thread
    before the handshake; False refuses the peer. `key` turns on
    authentication; `extra_keys` are also accepted (rotation). Options:
    max_frame_size, handshake_timeout, io_timeout (seconds),
    max_connections, backlog.

    start() serves on background threads, serve_forever() on this one
    until shutdown(); close() (or leaving `with`) stops everything and joins
    the threads. The library is freed at exit if close() was not called.
    """

    def __init__(self, address, handler=None, *, key=None, extra_keys=(), verify=None,
                 on_error=None, **options):
        handle = ctypes.c_void_p()
        with _config(key, extra_keys, options) as cfg:
            _call("sockserv_server_new", _address(address).encode(), cfg, ctypes.byref(handle))
        self._handle = handle.value
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        # The ctypes callbacks must live as long as the C server: the
        # finalizer holds them (and not self) until it has freed it.
        callbacks = []
        self._finalizer = weakref.finalize(self, _free_server, self._handle, callbacks)
        try:
            if handler is not None:
                callbacks.append(_handler_trampoline(handler, on_error))
                _call("sockserv_server_set_handler", self._handle, callbacks[-1], None)
            if verify is not None:
                callbacks.append(_verify_trampoline(verify, on_error))
                _call("sockserv_server_set_verify", self._handle, callbacks[-1], None)
        except BaseException:
            self.close()
            raise

    def _live(self):
        if self._handle is None:
            raise UsageError(Code.INVALID_STATE, "the server is closed", "Server")
        return self._handle

    @property
    def address(self):
        """The bound address, e.g. "tcp://127.0.0.1:40123" (port 0 resolved)."""
        buf, needed = ctypes.create_string_buffer(ADDRSTRLEN), ctypes.c_size_t()
        with self._lock:
            _call("sockserv_server_local_addr", self._live(), buf, ADDRSTRLEN, ctypes.byref(needed))
        return buf.value.decode()

    def start(self):
        """Serves on background threads and returns."""
        with self._lock:
            _call("sockserv_server_start", self._live())

    def serve_forever(self, poll_interval=0.5):
        """Serves until shutdown(). The wait is Python's, so Ctrl-C works."""
        self.start()
        while not self._stopped.wait(poll_interval):
            pass

    def shutdown(self):
        """Stops accepting, from any thread (a handler too); live
        connections go on until their handlers return or close()."""
        with self._lock:
            if self._handle is not None:
                _call("sockserv_server_shutdown", self._handle)
        self._stopped.set()

    def stats(self):
        """The server's counters, as a dict."""
        value, out = ctypes.c_uint64(), {}
        with self._lock:
            for i, name in enumerate(_STATS):
                _call("sockserv_server_stat", self._live(), i, ctypes.byref(value))
                out[name] = value.value
        return out

    def close(self):
        """Stops the server, closes every connection, waits for the handlers
        and joins the threads. Not from a handler (use shutdown())."""
        if getattr(_local, "in_callback", False):
            raise UsageError(Code.INVALID_STATE,
                             "close() from a callback would wait for itself; use shutdown()",
                             "Server.close")
        with self._lock:
            self._handle = None
        self._stopped.set()
        self._finalizer()  # frees the C server once; later calls do nothing

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

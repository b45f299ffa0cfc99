"""sockserv on an asyncio loop, with no thread of sockserv's:
asyncio_serve() drives an embedded EventServer from loop.add_reader on its
descriptor and loop.call_later from its next deadline; asyncio_connect()
is the standalone client, connecting and authenticating without blocking
(sockserv_connect_start / sockserv_conn_continue), whose recv() and send()
await the socket instead of blocking the loop."""

from __future__ import annotations

import asyncio
import ctypes
from typing import TYPE_CHECKING, Optional

from . import _core
from ._core import Address, Buffer, call
from ._lib import lib
from ._server import EventServer
from ._stream import Connection
from .errors import Code, TimeoutError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._core import Options


class AsyncioServing:
    """An EventServer driven by an asyncio loop (see asyncio_serve). The
    callbacks run on the loop's thread, inside its reader and timer
    callbacks: keep them short, or hand work to a task."""

    def __init__(self, server: EventServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self._loop = loop
        self._timer: Optional[asyncio.TimerHandle] = None
        self._done: asyncio.Future[None] = loop.create_future()
        server.start_embedded()
        self._fd = server.fileno()
        loop.add_reader(self._fd, self._wake)
        self._wake()  # the first deadline, and whatever is already ready

    def _wake(self) -> None:
        # The rule, for asyncio's level-triggered selector as for any loop:
        # after every wake-up process(), then sleep at most timeout().
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done.done():
            return
        try:
            alive = self.server.process()
            delay = self.server.timeout() if alive else None
        except BaseException as e:  # noqa: BLE001 (a broken engine ends the serving)
            self._detach()
            self._done.set_exception(e)
            return
        if not alive:
            self._detach()
            self._done.set_result(None)
        elif delay is not None:
            # 0: more is ready now; call_later(0) runs after the loop's
            # next poll, so other work gets its turn in between.
            self._timer = self._loop.call_later(delay, self._wake)

    def _detach(self) -> None:
        self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stop(self) -> None:
        """Shuts the server down (every connection closes, on_close runs)
        and stops watching it; wait_closed() then returns. Callbacks may
        call server.shutdown() instead."""
        self.server.shutdown()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._done.done()

    async def wait_closed(self) -> None:
        """Returns once the server has shut down and every connection has
        closed; raises what broke the engine, if something did."""
        await asyncio.shield(self._done)


def asyncio_serve(server: EventServer, loop: Optional[asyncio.AbstractEventLoop] = None) -> AsyncioServing:
    """Starts `server` (an EventServer, not started) embedded in `loop`
    (default: the running loop) and returns at once; it serves until
    server.shutdown() (from a callback too) or stop(). Close the server
    after wait_closed() has returned."""
    return AsyncioServing(server, loop or asyncio.get_running_loop())


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, write: bool, timeout: float) -> None:
    """Waits until `fd` is readable (or writable), at most `timeout` s."""
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        pass  # the caller's call decides whether a deadline passed
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


class AsyncConnection:
    """A client connection for asyncio (see asyncio_connect): recv() and
    send() await the socket; `connection` is the sockserv.Connection
    underneath (non-blocking)."""

    def __init__(self, connection: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.connection = connection
        self._loop = loop

    async def recv(self) -> bytes:
        """The next whole frame. Frames already buffered inside sockserv
        come first, without waiting for the socket (pending())."""
        while True:
            try:
                return self.connection.recv()
            except TimeoutError as e:
                if e.code != Code.WOULD_BLOCK:
                    raise
            await _ready(self._loop, self.connection.fileno(), False, 3600.0)

    async def send(self, data: Buffer) -> None:
        """Sends one frame, awaiting the socket while the kernel's buffer
        is full; returns once all of it is written."""
        while True:
            try:
                self.connection.send(data)
                break
            except TimeoutError as e:
                if e.code != Code.WOULD_BLOCK:
                    raise
            await _ready(self._loop, self.connection.fileno(), True, 3600.0)
        while not self.connection.flush():
            await _ready(self._loop, self.connection.fileno(), True, 3600.0)

    def pending(self) -> int:
        """Whole frames buffered inside sockserv (sockserv_conn_pending):
        a loop waiting on fileno() would not be woken for them."""
        frames = ctypes.c_size_t()
        with self.connection._use() as h:
            call("sockserv_conn_pending", h, ctypes.byref(frames))
        return frames.value

    def close(self) -> None:
        self.connection.close()

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def asyncio_connect(
    address: Address, *, key: Optional[Buffer] = None, **options: Unpack[Options]
) -> AsyncConnection:
    """Connects to `address` and, with a key, runs the handshake, awaiting
    the socket at each step instead of blocking the loop (the
    connect_timeout and handshake_timeout options bound it). Options: see
    sockserv.Options."""
    loop = asyncio.get_running_loop()
    handle = ctypes.c_void_p()
    with _core.config(key, (), options) as cfg:
        call("sockserv_connect_start", _core.address(address), cfg, ctypes.byref(handle))
    assert handle.value is not None
    conn = Connection(handle.value)
    try:
        while True:
            want_write = ctypes.c_bool()
            with conn._use() as h:
                rc = int(lib.sockserv_conn_continue(h, ctypes.byref(want_write)))
            if rc == Code.OK:
                break
            if rc != Code.WOULD_BLOCK:
                _core.check(rc, "sockserv_conn_continue")
            # The descriptor may change while connecting (the next resolved
            # address gets a new socket): ask each time. A silent peer never
            # wakes us: wait no longer than its deadline, which only
            # sockserv_conn_continue notices.
            ms = ctypes.c_int()
            with conn._use() as h:
                _core.check(
                    int(lib.sockserv_conn_continue_timeout_ms(h, ctypes.byref(ms))),
                    "sockserv_conn_continue_timeout_ms",
                )
            await _ready(loop, conn.fileno(), want_write.value, max(ms.value, 0) / 1000)
        conn.setblocking(False)
    except BaseException:
        conn.close()
        raise
    return AsyncConnection(conn, loop)

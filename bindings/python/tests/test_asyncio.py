"""sockserv on an asyncio loop (issue 12): an embedded EventServer driven by
loop.add_reader + call_later (asyncio_serve), the standalone client
connecting without blocking (asyncio_connect), a dialer on the same loop,
and no thread of sockserv's anywhere. Every test is bounded by asyncio
timeouts."""

import asyncio
import os
import socket
import time

import pytest

import threading

import sockserv
from conftest import KEY, WAIT


def os_threads():
    return len(os.listdir("/proc/self/task"))


def sockserv_threads():
    """Threads of this process named by sockserv ("sockserv-accept", its
    I/O threads...)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # ended meanwhile
    return [n for n in names if n.startswith("sockserv")]


def run(coro, limit=30.0):
    return asyncio.run(asyncio.wait_for(coro, limit))


class Ticker:
    """A task that counts loop turns while others run: the loop never
    blocks for long inside sockserv."""

    def __init__(self):
        self.ticks = 0
        self.longest = 0.0
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now
            self.ticks += 1

    def stop(self):
        self.task.cancel()


def test_an_asyncio_server_with_blocking_clients_elsewhere():
    """asyncio_serve alone: blocking clients on a worker thread; every
    callback runs on the loop's thread, the idle timeout fires from
    call_later with no traffic, shutdown from a callback ends the serving,
    and sockserv starts no thread."""

    async def main():
        loop_thread = threading.get_ident()
        threads_before = sockserv_threads()
        seen = {"threads": set(), "closed": []}

        def on_frame(conn, frame):
            seen["threads"].add(threading.get_ident())
            if frame == b"quit":
                server.shutdown()
            else:
                conn.send(frame)

        def on_close(conn, reason):
            seen["threads"].add(threading.get_ident())
            seen["closed"].append(reason)

        server = sockserv.EventServer(
            "tcp://127.0.0.1:0", on_frame=on_frame, on_close=on_close, key=KEY, idle_timeout=0.3
        )
        try:
            serving = sockserv.asyncio_serve(server)
            ticker = Ticker()

            def clients():
                conns = [sockserv.connect(server.address, key=KEY, io_timeout=WAIT) for _ in range(20)]
                for i, c in enumerate(conns):
                    c.send(b"frame %d" % i)
                for i, c in enumerate(conns):
                    assert c.recv() == b"frame %d" % i
                big = os.urandom(2 << 20)
                conns[0].send(big)
                assert conns[0].recv() == big
                assert sockserv_threads() == threads_before
                # Silent now: the idle timeout closes all of them.
                started = time.monotonic()
                for c in conns:
                    with pytest.raises(sockserv.ConnectionClosed):
                        c.recv()
                quiet = time.monotonic() - started
                for c in conns:
                    c.close()
                with sockserv.connect(server.address, key=KEY, io_timeout=WAIT) as c:
                    c.send(b"quit")
                    # Closed by the shutdown, not by us leaving first.
                    with pytest.raises(sockserv.ConnectionClosed):
                        c.recv()
                return quiet

            quiet = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, clients), WAIT * 2)
            await asyncio.wait_for(serving.wait_closed(), WAIT)
            ticker.stop()
            assert 0.1 < quiet < 5.0, quiet
            assert ticker.ticks > 0
            assert seen["threads"] == {loop_thread}
            assert seen["closed"].count(sockserv.Code.TIMED_OUT) == 20
            assert seen["closed"][-1] == sockserv.Code.SHUTDOWN
            assert sockserv_threads() == threads_before
            assert serving.closed
            assert not server.process()  # shut down for good
        finally:
            server.close()

    run(main())


def test_an_asyncio_server_and_asyncio_clients_in_one_loop():
    async def main():
        threads = os_threads()
        seen = {"threads": 0, "opened": 0, "closed": []}

        def on_open(conn):
            seen["opened"] += 1
            seen["threads"] = max(seen["threads"], os_threads())

        def on_frame(conn, frame):
            seen["threads"] = max(seen["threads"], os_threads())
            if frame == b"quit":
                server.shutdown()  # from inside a callback
            else:
                conn.send(frame)

        def on_close(conn, reason):
            seen["closed"].append(reason)

        server = sockserv.EventServer(
            "tcp://127.0.0.1:0", on_open=on_open, on_frame=on_frame, on_close=on_close, key=KEY
        )
        try:
            serving = sockserv.asyncio_serve(server)
            ticker = Ticker()
            clients = [await sockserv.asyncio_connect(server.address, key=KEY) for _ in range(20)]
            # Every client sends before any reads: 20 frames in flight.
            for i, c in enumerate(clients):
                await c.send(b"frame %d" % i)
            for i, c in enumerate(clients):
                assert await asyncio.wait_for(c.recv(), WAIT) == b"frame %d" % i
            # Frames bigger than any socket buffer: send() awaits the socket.
            big = os.urandom(3 << 20)
            sender = asyncio.ensure_future(clients[0].send(big))
            assert await asyncio.wait_for(clients[0].recv(), WAIT) == big
            await sender
            await clients[1].send(b"quit")
            await asyncio.wait_for(serving.wait_closed(), WAIT)
            assert serving.closed
            ticker.stop()
            assert ticker.ticks > 0
            assert seen["opened"] == 20
            # Shutdown closed every connection inside process(), once each.
            assert seen["closed"] == [sockserv.Code.SHUTDOWN] * 20
            # No thread of sockserv's: the callbacks ran on this one, and
            # the process has no more threads than before.
            assert seen["threads"] <= threads
            assert os_threads() <= threads
            for c in clients:
                with pytest.raises(sockserv.ConnectionClosed):
                    await asyncio.wait_for(c.recv(), WAIT)
                c.close()
        finally:
            server.close()

    run(main())


def test_frames_buffered_inside_sockserv_are_not_stranded():
    """The issue's case: three frames arrive together; a loop that receives
    once per wake-up must see that two are still buffered (pending), and
    recv() returns them without waiting for the socket."""

    async def main():
        def on_frame(conn, frame):
            conn.send(frame)

        server = sockserv.EventServer("tcp://127.0.0.1:0", on_frame=on_frame, key=KEY)
        serving = sockserv.asyncio_serve(server)
        try:
            async with await sockserv.asyncio_connect(server.address, key=KEY) as c:
                for i in range(3):
                    await c.send(b"%d" % i)
                # All three echoes reach the socket before the first read.
                await asyncio.sleep(0.3)
                assert await asyncio.wait_for(c.recv(), WAIT) == b"0"
                assert c.pending() == 2
                # No wake-up would come for them: recv() must not wait.
                assert await asyncio.wait_for(c.recv(), 0.5) == b"1"
                assert c.pending() == 1
                assert await asyncio.wait_for(c.recv(), 0.5) == b"2"
                assert c.pending() == 0
        finally:
            serving.stop()
            await asyncio.wait_for(serving.wait_closed(), WAIT)
            server.close()

    run(main())


def test_connecting_to_a_silent_peer_does_not_block_the_loop():
    """A listener that accepts and never answers the handshake: the client
    gives up with TimeoutError after handshake_timeout, and the loop ran
    meanwhile (before: sockserv_connect blocked it for the whole time)."""

    async def main():
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            ticker = Ticker()
            started = time.monotonic()
            with pytest.raises(sockserv.TimeoutError):
                await sockserv.asyncio_connect(f"tcp://127.0.0.1:{port}", key=KEY, handshake_timeout=0.5)
            took = time.monotonic() - started
            ticker.stop()
            assert 0.4 < took < 5.0, took
            assert ticker.ticks >= 20, ticker.ticks
            assert ticker.longest < 0.25, ticker.longest

    run(main())


def test_a_dialer_on_the_same_loop():
    """Two embedded engines on one asyncio loop: a server, and an engine
    with no listener whose dialer connects to it, reconnecting after the
    server closed its connection."""

    async def main():
        echoed = []
        opens = []

        def serve_frame(conn, frame):
            if frame == b"close me":
                conn.close()
            else:
                conn.send(frame)

        def dial_open(conn):
            opens.append(conn)
            conn.send(b"hello %d" % len(opens))

        def dial_frame(conn, frame):
            echoed.append(frame)
            conn.send(b"close me")

        failures = []

        def dial_error(dialer, error):
            failures.append((dialer, error))

        server = sockserv.EventServer("tcp://127.0.0.1:0", on_frame=serve_frame, key=KEY)
        engine = sockserv.EventServer(
            None, on_open=dial_open, on_frame=dial_frame, on_dial_error=dial_error, key=KEY
        )
        try:
            s1 = sockserv.asyncio_serve(server)
            s2 = sockserv.asyncio_serve(engine)
            dialer = engine.dial(server.address, reconnect=(0.05, 0.2))
            end = time.monotonic() + WAIT
            while len(echoed) < 3 and time.monotonic() < end:
                await asyncio.sleep(0.01)
            assert echoed[:3] == [b"hello 1", b"hello 2", b"hello 3"]
            dialer.close()
            assert dialer.closed
            assert not failures
            # Nobody listens there: the failure reaches on_dial_error with
            # its code, on the loop's thread, once (no reconnect).
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                nobody = f"tcp://127.0.0.1:{s.getsockname()[1]}"
            once = engine.dial(nobody, reconnect=None)
            end = time.monotonic() + WAIT
            while not failures and time.monotonic() < end:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            assert len(failures) == 1, failures
            assert failures[0][0] is once
            assert isinstance(failures[0][1], sockserv.NetworkError)
            assert failures[0][1].code == sockserv.Code.CONNECTION_REFUSED
            once.close()
            s1.stop()
            s2.stop()
            await asyncio.wait_for(asyncio.gather(s1.wait_closed(), s2.wait_closed()), WAIT)
        finally:
            engine.close()
            server.close()

    run(main())


"""A program using the whole binding, as a user would: checked with
`mypy --strict` and run (it asserts what it gets), from an installed
package in a fresh venv (tests/packaging/python.rs) and from the checkout
(test_packaging.py). Prints "whole api ok" at the end."""

from __future__ import annotations

import asyncio
import pathlib
import socket
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import sockserv
from sockserv import Code, Connection, DatagramSocket, Option

KEY = b"whole api key"
WAIT = 10.0


def wait_until(cond: Callable[[], bool], limit: float = WAIT) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())


def threaded() -> None:
    errors: List[BaseException] = []

    def echo(conn: Connection) -> None:
        while True:
            conn.send(conn.recv())

    def verify(peer: str) -> bool:
        return peer.startswith("tcp://127.0.0.1:")

    with sockserv.Server(("127.0.0.1", 0), echo, key=KEY, extra_keys=[b"old"], verify=verify,
                         on_error=errors.append, io_timeout=WAIT, max_connections=8,
                         when_full=sockserv.WhenFull.WAIT, reuse_address=True, backlog=16,
                         proxy_protocol=sockserv.Proxy.OFF, handshake_timeout=5.0) as srv:
        srv.start()
        with sockserv.connect(srv.address, key=b"old", io_timeout=WAIT, connect_timeout=5.0,
                              max_frame_size=1 << 20, nodelay=True) as conn:
            conn.send(bytearray(b"frame"))
            assert conn.recv() == b"frame"
            conn.send(memoryview(b"into"))
            buf = bytearray(8)
            n: int = conn.recv_into(buf)
            assert bytes(buf[:n]) == b"into"
            assert conn.poll(0) is False
            conn.settimeout(0.05)
            timeout: Optional[float] = conn.gettimeout()
            assert timeout == 0.05
            try:
                conn.recv()
            except sockserv.TimeoutError as e:
                assert e.code is Code.TIMED_OUT
            conn.settimeout(None)
            conn.set_option(Option.KEEPALIVE, 1)
            assert conn.get_option(Option.KEEPALIVE) == 1
            conn.set_keepalive(True, idle=60, interval=10, count=4)
            conn.nodelay = False
            assert not conn.nodelay
            conn.setblocking(False)
            assert not conn.getblocking()
            assert conn.flush()
            conn.setblocking(True)
            peer: str = conn.peer_address
            local: str = conn.local_address
            assert peer == srv.address and local.startswith("tcp://")
            assert conn.fileno() >= 0
        stats: Dict[str, int] = srv.stats()
        assert wait_until(lambda: srv.stat("handled") == 1), stats
        srv.shutdown()
        address = srv.address
    assert not errors, errors

    try:
        sockserv.connect(address)
    except sockserv.SockservError as e:
        code = e.code
        assert code is Code.CONNECTION_REFUSED and isinstance(e, sockserv.NetworkError)
        assert address in e.detail and e.call == "sockserv_connect"
    else:
        raise AssertionError("connected to a closed server")


def event_mode() -> None:
    log: List[Tuple[str, Code]] = []
    lock = threading.Lock()

    def on_open(conn: Connection) -> None:
        conn.userdata = 0

    def on_frame(conn: Connection, frame: bytes) -> None:
        conn.userdata += 1
        conn.send(frame + b"!")

    def on_close(conn: Connection, reason: Code) -> None:
        with lock:
            log.append(("close", reason))

    with sockserv.EventServer("tcp://127.0.0.1:0", on_open=on_open, on_frame=on_frame, on_close=on_close,
                              key=KEY, io_threads=1, max_queued_bytes=1 << 20,
                              close_when_backed_up=False, idle_timeout=None) as srv:
        srv.start()
        with sockserv.connect(srv.address, key=KEY, io_timeout=WAIT) as conn:
            conn.send(b"event")
            assert conn.recv() == b"event!"
        assert wait_until(lambda: log == [("close", Code.CLOSED)])


def datagrams(tmp: str) -> None:
    def upper(sock: DatagramSocket, data: bytes, sender: str) -> None:
        sock.send_to(sender, data.upper())

    for bind in ("udp://127.0.0.1:0", f"unixgram://{tmp}/d.sock"):
        with sockserv.DatagramServer(bind, upper, key=KEY, max_datagram_size=1024,
                                     datagram_window=30.0, datagram_replay_capacity=1000) as srv:
            srv.start()
            with sockserv.connect_datagram(srv.address, key=KEY, io_timeout=WAIT) as sock:
                sock.send(b"sealed")
                assert sock.recv() == b"SEALED"
            with sockserv.open_datagram(None, key=KEY, io_timeout=WAIT) as sock:
                sock.send_to(srv.address, b"from")
                data, sender = sock.recv_from()
                assert data == b"FROM" and sender == srv.address
                sock.settimeout(1.0)
                assert sock.gettimeout() == 1.0 and sock.fileno() >= 0 and sock.local_address
                assert sock.stats()["received"] == 1
            assert wait_until(lambda: srv.stats()["received"] == 2)
            assert srv.socket.stats()["sent"] == 2
    assert sockserv.MAX_DATAGRAM_SIZE - sockserv.DEFAULT_DATAGRAM_SIZE > sockserv.DATAGRAM_OVERHEAD


def adopted() -> None:
    a, b = socket.socketpair()
    side: List[Connection] = []
    t = threading.Thread(target=lambda: side.append(sockserv.from_fd(a, sockserv.Role.SERVER, key=KEY)))
    t.start()
    with sockserv.from_fd(b, sockserv.Role.CLIENT, key=KEY, io_timeout=WAIT) as client:
        t.join(WAIT)
        with side[0] as server:
            client.send(b"adopted")
            assert server.recv() == b"adopted"


def tls_settings(tmp: str) -> None:
    # Typed TLS options (mypy checks them); the network part is in test_tls.py.
    options: sockserv.Options = {
        "tls_ca_file": pathlib.Path(tmp) / "missing-ca.pem",
        "tls_server_name": "localhost",
        "tls_alpn": ["echo/1"],
        "tls_min_version": sockserv.TLSVersion.TLSv1_3,
        "tls_client_auth": sockserv.TLSClientAuth.NONE,
    }
    try:
        sockserv.connect("tls://127.0.0.1:9", **options)
    except sockserv.NetworkError as e:
        assert e.code == Code.IO and e.call == "sockserv_config_set_tls_ca_file"
    else:
        raise AssertionError("a missing CA file was accepted")
    try:
        sockserv.connect("tls://127.0.0.1:9", tls_ca=b"not PEM")
    except sockserv.UsageError as e:
        assert e.code == Code.INVALID_ARGUMENT
    else:
        raise AssertionError("a bad CA was accepted")
    cert: Optional[sockserv.PeerCertificate] = None
    info: Optional[sockserv.TLSInfo] = None
    assert cert is None and info is None
    assert issubclass(sockserv.CertificateError, sockserv.TLSError)


def library() -> None:
    mac: bytes = sockserv.hmac_sha256(b"k", b"m")
    assert sockserv.hmac_sha256_verify(b"k", b"m", mac)
    assert sockserv.version().startswith(f"{sockserv.VERSION_MAJOR}.")
    assert sockserv.strerror(Code.DATAGRAM_TOO_LARGE)
    sockserv.clear_error()
    assert sockserv.last_error() == ""
    for code in Code:
        err: sockserv.SockservError = sockserv.errors.error_for(code, "d", "c")
        assert err.code == code
    print("library", sockserv.library_path())


def in_asyncio() -> None:
    """An embedded EventServer on asyncio, a dialing engine beside it, and
    the asyncio client."""

    async def run() -> None:
        dialed: List[bytes] = []
        failures: List[sockserv.SockservError] = []

        def echo(conn: Connection, frame: bytes) -> None:
            if frame == b"stop":
                server.shutdown()
            else:
                conn.send(frame)

        def dial_open(conn: Connection) -> None:
            conn.send(b"dialed")

        def dial_frame(conn: Connection, frame: bytes) -> None:
            dialed.append(frame)

        def dial_error(d: sockserv.Dialer, e: sockserv.SockservError) -> None:
            failures.append(e)

        server = sockserv.EventServer("tcp://127.0.0.1:0", on_frame=echo, key=KEY)
        engine = sockserv.EventServer(
            None, on_open=dial_open, on_frame=dial_frame, on_dial_error=dial_error, key=KEY
        )
        serving: sockserv.AsyncioServing = sockserv.asyncio_serve(server)
        dialing = sockserv.asyncio_serve(engine)
        dialer: sockserv.Dialer = engine.dial(server.address, reconnect=(0.05, 1.0))
        client: sockserv.AsyncConnection = await sockserv.asyncio_connect(server.address, key=KEY)
        await client.send(b"hi")
        assert await client.recv() == b"hi"
        assert client.pending() == 0
        end = time.monotonic() + WAIT
        while not dialed and time.monotonic() < end:
            await asyncio.sleep(0.01)
        assert dialed == [b"dialed"], (dialed, failures)
        timeout: Optional[float] = server.timeout()
        assert timeout is None or timeout >= 0
        dialer.close()
        await client.send(b"stop")
        await asyncio.wait_for(serving.wait_closed(), WAIT)
        dialing.stop()
        await asyncio.wait_for(dialing.wait_closed(), WAIT)
        client.close()
        engine.close()
        server.close()

    asyncio.run(run())
    print("asyncio ok")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        library()
        threaded()
        event_mode()
        datagrams(tmp)
        adopted()
        in_asyncio()
        tls_settings(tmp)
    print("whole api ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

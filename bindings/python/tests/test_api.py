"""The rest of the C API through the binding: the header and the binding
agree (every function, code and constant), event servers, datagrams
(sealed too), options and non-blocking mode, from_fd, HMAC."""

import gc
import re
import socket
import threading
import time

import pytest
import sockserv
from conftest import KEY, REPO, WAIT, echo, wait_until
from sockserv import Code, Option, _lib

HEADER = (REPO / "include" / "sockserv.h").read_text()


def header_defines(prefix):
    found = re.findall(rf"^#define\s+({prefix}\w+)\s+\(?(-?\d+)[uUlL]*\)?\s*$", HEADER, re.M)
    return {name: int(value) for name, value in found}


def test_every_result_code_of_the_header_is_a_code_member():
    # The last enumerator may have no trailing comma (C89).
    codes = dict(re.findall(r"^\s*SOCKSERV_(OK|ERR_\w+)\s*=\s*(\d+)\s*,?\s*$", HEADER, re.M))
    assert len(codes) >= 21, "the header parse found too few codes"
    missing = []
    for name, value in codes.items():
        member = name.removeprefix("ERR_")
        if member not in Code.__members__ or Code[member] != int(value):
            missing.append(f"{name} = {value}")
    assert not missing, f"sockserv.Code lacks: {missing}"
    assert len(Code) == len(codes), "Code has members the header does not"
    for code in Code:
        assert sockserv.strerror(code) != sockserv.strerror(999), code


def test_every_header_function_has_a_prototype_with_its_arity():
    # Declarations, not mentions in comments: a line starting with the
    # return type (after any all-caps attribute macro), up to the ";".
    decl = r"^(?:[A-Z_][A-Z0-9_]*\s+)*(?:const\s+)?(?:enum\s+|struct\s+)?\w+[\s\*]+(sockserv_\w+)\s*\(([^;()]*)\)\s*;"
    decls = re.findall(decl, HEADER, re.M)
    assert len(decls) >= 83
    wrong = []
    for name, params in decls:
        params = params.strip()
        arity = 0 if params in ("", "void") else params.count(",") + 1
        if name not in _lib.PROTOTYPES:
            wrong.append(f"{name}: no prototype")
        elif len(_lib.PROTOTYPES[name][1]) != arity:
            wrong.append(f"{name}: {len(_lib.PROTOTYPES[name][1])} argtypes, the header has {arity}")
    assert not wrong, wrong
    assert set(_lib.PROTOTYPES) == {n for n, _ in decls}


def test_constants_match_the_header():
    from sockserv import _dgram, _server

    def names(prefix):
        d = header_defines(prefix)
        return [k[len(prefix):].lower() for k, _ in sorted(d.items(), key=lambda kv: kv[1])], d

    stats, d = names("SOCKSERV_STAT_")
    assert list(_server.STATS) == stats and sorted(d.values()) == list(range(len(stats)))
    dstats, d = names("SOCKSERV_DGRAM_STAT_")
    assert list(_dgram.DGRAM_STATS) == dstats and sorted(d.values()) == list(range(len(dstats)))
    for prefix, enum in [
        ("SOCKSERV_OPT_", Option),
        ("SOCKSERV_WHEN_FULL_", sockserv.WhenFull),
        ("SOCKSERV_PROXY_", sockserv.Proxy),
        ("SOCKSERV_ROLE_", sockserv.Role),
    ]:
        d = header_defines(prefix)
        assert {k[len(prefix):]: v for k, v in d.items()} == {m.name: m.value for m in enum}, prefix
    tls = {
        name: int(value, 0)
        for name, value in re.findall(r"^#define\s+SOCKSERV_TLS_(\w+)\s+\(?(0x[0-9a-fA-F]+|\d+)", HEADER, re.M)
    }
    assert {k[len("CLIENT_AUTH_"):]: v for k, v in tls.items() if k.startswith("CLIENT_AUTH_")} == {
        m.name: m.value for m in sockserv.TLSClientAuth
    }
    assert {"TLSv" + k[len("VERSION_"):]: v for k, v in tls.items() if k.startswith("VERSION_")} == {
        m.name: m.value for m in sockserv.TLSVersion
    }
    plain = header_defines("SOCKSERV_")
    for name in ("MAX_DATAGRAM_SIZE", "DEFAULT_DATAGRAM_SIZE", "DATAGRAM_OVERHEAD", "ADDRSTRLEN",
                 "VERSION_MAJOR", "VERSION_MINOR", "VERSION_PATCH"):
        assert getattr(sockserv, name) == plain["SOCKSERV_" + name], name
    assert sockserv.version() == f"{sockserv.VERSION_MAJOR}.{sockserv.VERSION_MINOR}.{sockserv.VERSION_PATCH}"


def test_hmac_matches_the_stdlib():
    import hashlib
    import hmac

    mac = sockserv.hmac_sha256(b"key", b"message")
    assert mac == hmac.new(b"key", b"message", hashlib.sha256).digest()
    assert sockserv.hmac_sha256_verify(b"key", b"message", mac)
    assert not sockserv.hmac_sha256_verify(b"key", b"message", mac[:-1] + b"\0")
    assert not sockserv.hmac_sha256_verify(b"key", b"message", mac[:16])


def test_errors_carry_code_and_detail_and_clear_error():
    sockserv.clear_error()
    assert sockserv.last_error() == ""
    with pytest.raises(sockserv.UsageError) as e:
        sockserv.connect("tcp:/nonsense")
    assert e.value.code is Code.INVALID_ADDRESS and "nonsense" in e.value.detail
    assert sockserv.last_error() == e.value.detail
    sockserv.clear_error()
    assert sockserv.last_error() == ""


def test_refusal_log_sees_a_wrong_key_with_peer_code_and_detail():
    seen = []
    lock = threading.Lock()

    def log(peer, code, detail):
        with lock:
            seen.append((peer, code, detail))
        raise RuntimeError("swallowed: never into C")

    sockserv.set_refusal_log(log)
    try:
        gc.collect()  # the binding keeps the ctypes callback alive itself
        with sockserv.Server("tcp://127.0.0.1:0", echo, key=KEY, io_timeout=WAIT) as srv:
            srv.start()
            with pytest.raises(sockserv.AuthenticationError):
                sockserv.connect(srv.address, key=b"not the key", io_timeout=WAIT)
            # Logged before the client could see #FAILURE#, so it is there now.
            with lock:
                got = list(seen)
            assert len(got) == 1, got
            peer, code, detail = got[0]
            assert peer.startswith("tcp://127.0.0.1:") and peer != srv.address, peer
            assert code is Code.AUTH_FAILED, code
            assert "handshake" in detail, detail
            assert srv.stats()["handshake_failures"] == 1
            # Removed: a second refusal reaches nobody.
            sockserv.set_refusal_log(None)
            with pytest.raises(sockserv.AuthenticationError):
                sockserv.connect(srv.address, key=b"not the key", io_timeout=WAIT)
            assert wait_until(lambda: srv.stats()["handshake_failures"] == 2)
            with lock:
                assert len(seen) == 1, seen
    finally:
        sockserv.set_refusal_log(None)


# --- Event mode -----------------------------------------------------------------


class Events:
    def __init__(self):
        self.lock = threading.Lock()
        self.log = []
        self.errors = []

    def add(self, *item):
        with self.lock:
            self.log.append(item)

    def kinds(self):
        with self.lock:
            return [i[0] for i in self.log]


def event_server(ev, **kw):
    def on_open(conn):
        conn.userdata = "mine"
        ev.add("open", conn)

    def on_frame(conn, frame):
        ev.add("frame", frame)
        if frame == b"raise":
            raise ValueError("on_frame failed")
        if frame == b"close":
            conn.close()
            return
        conn.send(frame[::-1])

    def on_close(conn, reason):
        ev.add("close", reason, conn.userdata)

    return sockserv.EventServer("tcp://127.0.0.1:0", on_open=on_open, on_frame=on_frame, on_close=on_close,
                                on_error=ev.errors.append, io_threads=1, **kw)


def test_event_server_callbacks_and_reasons():
    ev = Events()
    with event_server(ev, key=KEY) as srv:
        gc.collect()  # the callbacks live as long as the server
        srv.start()
        with sockserv.connect(srv.address, key=KEY, io_timeout=WAIT) as conn:
            for msg in (b"abc", b"", b"x" * 100_000):
                conn.send(msg)
                assert conn.recv() == msg[::-1]
        assert wait_until(lambda: ev.kinds().count("close") == 1)
        assert ev.log[-1] == ("close", Code.CLOSED, "mine")
        # A close from on_frame: on_close gets OK, the client sees the end.
        with sockserv.connect(srv.address, key=KEY, io_timeout=WAIT) as conn:
            conn.send(b"close")
            with pytest.raises(sockserv.ConnectionClosed):
                conn.recv()
        assert wait_until(lambda: ev.kinds().count("close") == 2)
        assert ev.log[-1][:2] == ("close", Code.OK)
        # An exception in on_frame is reported and closes that connection only.
        with sockserv.connect(srv.address, key=KEY, io_timeout=WAIT) as conn:
            conn.send(b"raise")
            with pytest.raises(sockserv.ConnectionClosed):
                conn.recv()
        assert wait_until(lambda: ev.kinds().count("close") == 3)
        assert len(ev.errors) == 1 and isinstance(ev.errors[0], ValueError)
        # Still serving; then the server's close ends a live connection with SHUTDOWN.
        live = sockserv.connect(srv.address, key=KEY, io_timeout=WAIT)
        live.send(b"ok")
        assert live.recv() == b"ko"
        assert srv.stats()["accepted"] == 4
    assert ev.log[-1][:2] == ("close", Code.SHUTDOWN)
    assert ev.kinds().count("open") == ev.kinds().count("close") == 4
    with pytest.raises(sockserv.ConnectionClosed):
        live.recv()
    live.close()
    # The lent connection is unusable after on_close.
    opened = [i[1] for i in ev.log if i[0] == "open"]
    with pytest.raises(sockserv.UsageError):
        opened[0].send(b"too late")


def test_event_send_from_another_thread_and_exceptions_in_every_callback():
    conns, errors = [], []

    def on_open(conn):
        conns.append(conn)
        if len(conns) == 2:
            raise RuntimeError("on_open failed")

    def on_close(conn, reason):
        raise KeyError("on_close failed")

    with sockserv.EventServer("tcp://127.0.0.1:0", on_open=on_open, on_close=on_close,
                              on_error=errors.append) as srv:
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT) as client:
            assert wait_until(lambda: len(conns) == 1)
            # on_frame is None (frames dropped); a thread of ours pushes to the client.
            client.send(b"ignored")
            t = threading.Thread(target=lambda: [conns[0].send(b"push %d" % i) for i in range(3)])
            t.start()
            t.join(WAIT)
            assert [client.recv() for _ in range(3)] == [b"push 0", b"push 1", b"push 2"]
        # The second connection's on_open raises: reported, and it is closed.
        with sockserv.connect(srv.address, io_timeout=WAIT) as client:
            with pytest.raises(sockserv.ConnectionClosed):
                client.recv()
        assert wait_until(lambda: len(errors) == 3)
    kinds = sorted(type(e).__name__ for e in errors)
    assert kinds == ["KeyError", "KeyError", "RuntimeError"], errors


def test_event_server_idle_timeout_and_would_block():
    reasons = []
    with sockserv.EventServer("tcp://127.0.0.1:0", on_close=lambda c, r: reasons.append(r),
                              idle_timeout=0.1) as srv:
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
            with pytest.raises(sockserv.ConnectionClosed):
                conn.recv()
        assert wait_until(lambda: reasons == [Code.TIMED_OUT])

    # A peer that never reads: sends past max_queued_bytes say WOULD_BLOCK.
    results = []

    def on_open(conn):
        chunk = b"y" * 65536
        for _ in range(2000):
            try:
                conn.send(chunk)
            except sockserv.TimeoutError as e:
                results.append(e.code)
                return
        results.append("never blocked")

    with sockserv.EventServer("tcp://127.0.0.1:0", on_open=on_open, max_queued_bytes=1 << 20) as srv:
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT):
            assert wait_until(lambda: results)
    assert results == [Code.WOULD_BLOCK]


# --- Datagrams ------------------------------------------------------------------


def dgram_echo(sock, data, sender):
    sock.send_to(sender, data.upper())


@pytest.mark.parametrize("family", ["udp", "unixgram"])
def test_datagram_server_and_clients(family, tmp_path, errors):
    bind = "udp://127.0.0.1:0" if family == "udp" else f"unixgram://{tmp_path}/d.sock"
    with sockserv.DatagramServer(bind, dgram_echo, on_error=errors.on_error) as srv:
        srv.start()
        addr = srv.address
        assert addr.startswith(family + "://")
        # A connected socket...
        with sockserv.connect_datagram(addr, io_timeout=WAIT) as sock:
            sock.send(b"hello")
            assert sock.recv() == b"HELLO"
            assert sock.gettimeout() == WAIT
        # ... and an unconnected one, bound by its first send.
        with sockserv.open_datagram(io_timeout=WAIT) as sock:
            sock.send_to(addr, b"")
            data, sender = sock.recv_from()
            assert data == b"" and sender == addr
            assert sock.local_address.startswith(family + "://")
            assert sock.fileno() >= 0
            assert sock.stats()["sent"] == 1 and sock.stats()["received"] == 1
        assert wait_until(lambda: srv.stats()["received"] == 2)
        assert srv.socket.stats()["sent"] == 2
    assert not errors


def test_sealed_datagrams_drop_wrong_keys_and_replays(errors):
    with sockserv.DatagramServer("udp://127.0.0.1:0", dgram_echo, key=KEY, on_error=errors.on_error) as srv:
        srv.start()
        with sockserv.connect_datagram(srv.address, key=KEY, io_timeout=WAIT) as good:
            good.send(b"sealed")
            assert good.recv() == b"SEALED"
        with sockserv.connect_datagram(srv.address, key=b"wrong", io_timeout=0.2) as bad:
            bad.send(b"forged")
            with pytest.raises(sockserv.TimeoutError):
                bad.recv()
        assert wait_until(lambda: srv.stats()["bad_tag"] == 1)
        # Unsealed bytes from a plain socket are too short or fail the tag.
        with sockserv.open_datagram() as plain:
            plain.send_to(srv.address, b"x" * 10)
        assert wait_until(lambda: srv.stats()["too_short"] == 1)
        assert srv.stats()["received"] == 1
    assert not errors


def test_datagram_too_large_and_a_raising_handler(errors):
    def handler(sock, data, sender):
        raise ValueError(data)

    with sockserv.DatagramServer("udp://127.0.0.1:0", handler, on_error=errors.on_error,
                                 max_datagram_size=100) as srv:
        srv.start()
        with sockserv.open_datagram(max_datagram_size=100) as sock:
            with pytest.raises(sockserv.ProtocolError) as e:
                sock.send_to(srv.address, b"z" * 101)
            assert e.value.code is Code.DATAGRAM_TOO_LARGE
            sock.send_to(srv.address, b"one")
            sock.send_to(srv.address, b"two")
        assert wait_until(lambda: len(errors) == 2)
        assert [e.args[0] for e in errors] == [b"one", b"two"]
    with pytest.raises(sockserv.UsageError):
        srv.socket.send_to("udp://127.0.0.1:9", b"after close")


def test_datagram_receive_grows_its_buffer():
    with sockserv.open_datagram("udp://127.0.0.1:0", io_timeout=WAIT, max_datagram_size=60000) as rx, \
            sockserv.open_datagram(max_datagram_size=60000) as tx:
        tx.send_to(rx.local_address, b"q" * 60000)
        data, _ = rx.recv_from()
        assert data == b"q" * 60000


# --- Options, non-blocking mode, from_fd ------------------------------------------


def test_options_and_keepalive(echo_server):
    with sockserv.connect(echo_server.address, key=KEY, io_timeout=WAIT, nodelay=False, keepalive=True) as conn:
        assert conn.nodelay is False and conn.get_option(Option.KEEPALIVE) == 1
        conn.nodelay = True
        assert conn.get_option(Option.NODELAY) == 1
        conn.set_keepalive(True, idle=30, interval=5, count=3)
        assert [conn.get_option(o) for o in (Option.KEEPALIVE_IDLE, Option.KEEPALIVE_INTERVAL,
                                             Option.KEEPALIVE_COUNT)] == [30, 5, 3]
        conn.set_option(Option.SNDBUF, 65536)
        assert conn.get_option(Option.SNDBUF) >= 65536
        conn.set_option(Option.LINGER, 1)
        assert conn.get_option(Option.LINGER) == 1
        with pytest.raises(sockserv.UsageError):
            conn.set_option(999, 1)
        conn.send(b"still works")
        assert conn.recv() == b"still works"


def test_non_blocking_mode(echo_server):
    with sockserv.connect(echo_server.address, key=KEY, io_timeout=WAIT) as conn:
        assert conn.getblocking()
        conn.setblocking(False)
        assert not conn.getblocking()
        with pytest.raises(sockserv.TimeoutError) as e:
            conn.recv()
        assert e.value.code is Code.WOULD_BLOCK
        conn.send(b"nb")
        assert conn.flush()
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            try:
                assert conn.recv() == b"nb"
                break
            except sockserv.TimeoutError:
                conn.poll(0.05)
        else:
            pytest.fail("no echo in non-blocking mode")
        conn.setblocking(True)
        conn.send(b"b")
        assert conn.recv() == b"b"


def test_from_fd_both_roles_and_recv_into():
    a, b = socket.socketpair()
    result = {}

    def server_side():
        result["conn"] = sockserv.from_fd(a, sockserv.Role.SERVER, key=KEY, io_timeout=WAIT)

    t = threading.Thread(target=server_side)
    t.start()
    client = sockserv.from_fd(b.fileno(), sockserv.Role.CLIENT, key=KEY, io_timeout=WAIT)
    b.detach()
    t.join(WAIT)
    server = result["conn"]
    assert a.fileno() == -1  # detached: the connection owns it
    with client, server:
        client.send(b"0123456789")
        small = bytearray(4)
        with pytest.raises(sockserv.UsageError) as e:
            server.recv_into(small)
        assert e.value.code is Code.INSUFFICIENT_SIZE and e.value.needed == 10
        big = bytearray(16)
        assert server.recv_into(big) == 10 and bytes(big[:10]) == b"0123456789"
        with pytest.raises(sockserv.NetworkError):
            server.nodelay = True  # a Unix socket has no TCP_NODELAY
    # A wrong key leaves the fd ours.
    a, b = socket.socketpair()
    with a, b:
        t = threading.Thread(target=lambda: pytest.raises(sockserv.SockservError, sockserv.from_fd, a,
                                                          sockserv.Role.SERVER, key=KEY, io_timeout=WAIT))
        t.start()
        with pytest.raises(sockserv.AuthenticationError):
            sockserv.from_fd(b, sockserv.Role.CLIENT, key=b"other", io_timeout=WAIT)
        t.join(WAIT)
        assert b.fileno() >= 0


def test_when_full_refuse_and_server_options():
    gate = threading.Event()

    def handler(conn):
        gate.wait(WAIT)

    with sockserv.Server("tcp://127.0.0.1:0", handler, max_connections=1, when_full=sockserv.WhenFull.REFUSE,
                         reuse_port=True, backlog=8, coalesce_sends=True) as srv:
        srv.start()
        first = sockserv.connect(srv.address, io_timeout=WAIT)
        assert wait_until(lambda: srv.stat("active") == 1)
        second = sockserv.connect(srv.address, io_timeout=WAIT)
        with pytest.raises(sockserv.ConnectionClosed):
            second.recv()
        assert srv.stats()["refused_when_full"] == 1
        gate.set()
        first.close()
        second.close()


def test_unknown_option_and_bad_values():
    with pytest.raises(TypeError):
        sockserv.open_datagram(colour="blue")
    with pytest.raises(sockserv.UsageError) as e:
        sockserv.open_datagram(max_datagram_size=sockserv.MAX_DATAGRAM_SIZE + 1)
    assert e.value.call == "sockserv_config_set_max_datagram_size"
    with pytest.raises(ValueError):
        sockserv.connect("tcp://127.0.0.1:1", io_timeout=-1)


def test_event_connections_closed_from_other_threads_while_peers_leave():
    # Closes racing with peers' own closes and with on_close: every open
    # gets exactly one close, nothing hangs, nothing is reported.
    opened, closed, errors = [], [], []
    lock = threading.Lock()

    def on_open(conn):
        with lock:
            opened.append(conn)

    def on_close(conn, reason):
        with lock:
            closed.append(reason)

    with sockserv.EventServer("tcp://127.0.0.1:0", on_open=on_open, on_close=on_close,
                              on_frame=lambda c, f: c.send(f), on_error=errors.append, io_threads=2) as srv:
        srv.start()
        clients = [sockserv.connect(srv.address, io_timeout=WAIT) for _ in range(20)]
        assert wait_until(lambda: len(opened) == 20)
        # The server closes the even clients' connections, the odd clients close theirs.
        even = {c.local_address for c in clients[::2]}
        ours = [s for s in opened if s.peer_address in even]
        assert len(ours) == 10
        closer = threading.Thread(target=lambda: [s.close() for s in ours])
        closer.start()
        for c in clients[1::2]:
            c.close()
        closer.join(WAIT)
        assert not closer.is_alive()
        assert wait_until(lambda: len(closed) == 20)
        assert set(closed) <= {Code.OK, Code.CLOSED}
        for c in clients[::2]:
            c.close()
    assert not errors, errors
    assert len(closed) == 20


def test_an_on_error_that_raises_is_printed(capfd):
    def on_error(exc):
        raise RuntimeError("on_error failed too")

    def handler(conn):
        raise ValueError("first")

    with sockserv.Server("tcp://127.0.0.1:0", handler, on_error=on_error) as srv:
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
            with pytest.raises(sockserv.ConnectionClosed):
                conn.recv()
        assert wait_until(lambda: srv.stats()["handled"] == 1)
    err = capfd.readouterr().err
    assert "exception in the on_error" in err and "on_error failed too" in err


def test_exit_without_close_frees_every_server_cleanly(tmp_path):
    # Servers left open, with live connections and callbacks still due, are
    # freed at interpreter exit before Python tears down: no crash, no hang.
    import os
    import subprocess
    import sys

    program = tmp_path / "leave.py"
    program.write_text(
        "import sockserv\n"
        "ev = sockserv.EventServer('tcp://127.0.0.1:0', on_frame=lambda c, f: c.send(f),\n"
        "                          on_close=lambda c, r: print('closed', r.name, flush=True))\n"
        "ev.start()\n"
        "th = sockserv.Server('tcp://127.0.0.1:0', lambda c: c.send(c.recv()))\n"
        "th.start()\n"
        "dg = sockserv.DatagramServer('udp://127.0.0.1:0', lambda s, d, f: s.send_to(f, d))\n"
        "dg.start()\n"
        "a = sockserv.connect(ev.address, io_timeout=10)\n"
        "a.send(b'x'); assert a.recv() == b'x'\n"
        "b = sockserv.connect(th.address, io_timeout=10)\n"
        "b.send(b'y'); assert b.recv() == b'y'\n"
        "d = sockserv.connect_datagram(dg.address, io_timeout=10)\n"
        "d.send(b'z'); assert d.recv() == b'z'\n"
        "print('leaving', flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "bindings" / "python"))
    out = subprocess.run([sys.executable, "-B", str(program)], capture_output=True, text=True,
                         timeout=60, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["leaving", "closed", "SHUTDOWN"], out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "exception" not in out.stderr, out.stderr

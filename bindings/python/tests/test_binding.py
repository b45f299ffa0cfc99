"""The binding against the real library: exchanges, errors and their
classes, callbacks (kept alive, exceptions contained), lifetimes."""

import gc
import multiprocessing
import os
import threading

import pytest
import sockserv
from conftest import KEY, WAIT, echo, wait_until
from sockserv import Code


def test_library_and_version():
    assert sockserv.version().split(".")[0] == "0"
    if os.environ.get("SOCKSERV_LIB"):
        assert sockserv.library_path() == os.environ["SOCKSERV_LIB"]


@pytest.mark.parametrize("size", [0, 1, 100, 65536, 1 << 20])
def test_echo_sizes(echo_server, size):
    payload = bytes(i % 251 for i in range(size))
    with sockserv.connect(echo_server.address, key=KEY, io_timeout=WAIT) as conn:
        conn.send(payload)
        assert conn.recv() == payload


def test_echo_over_unix_with_path_and_bytes_like(tmp_path, errors):
    path = str(tmp_path / "s.sock")
    with sockserv.Server(path, echo, key=KEY, on_error=errors.on_error) as srv:
        srv.start()
        assert srv.address == "unix://" + path
        with sockserv.connect(path, key=KEY, io_timeout=WAIT) as conn:
            for data in (bytearray(b"ba"), memoryview(b"mv"), b"b"):
                conn.send(data)
                assert conn.recv() == bytes(data)
            with pytest.raises(TypeError):
                conn.send("str is not bytes")
            assert conn.peer_address == "unix://" + path
    assert not os.path.exists(path)
    assert not errors


def test_connection_details_and_timeout(echo_server):
    with sockserv.connect(echo_server.address, key=KEY) as conn:
        assert conn.peer_address == echo_server.address
        assert conn.local_address.startswith("tcp://127.0.0.1:")
        assert conn.fileno() >= 0
        assert conn.gettimeout() is None
        assert not conn.poll(0)
        conn.settimeout(0.05)
        assert conn.gettimeout() == 0.05
        with pytest.raises(sockserv.TimeoutError) as e:
            conn.recv()
        assert e.value.code == Code.TIMED_OUT
        assert isinstance(e.value, TimeoutError)  # the builtin too
        # A receive that timed out leaves the connection usable.
        conn.settimeout(WAIT)
        conn.send(b"after the timeout")
        assert conn.poll(WAIT)
        assert conn.recv() == b"after the timeout"


def test_use_after_close_raises(echo_server):
    conn = sockserv.connect(echo_server.address, key=KEY)
    conn.close()
    conn.close()  # idempotent
    assert conn.closed
    with pytest.raises(sockserv.UsageError) as e:
        conn.send(b"x")
    assert e.value.code == Code.INVALID_STATE
    echo_server.close()
    with pytest.raises(sockserv.UsageError):
        echo_server.address


def test_close_wakes_a_blocked_receive(echo_server):
    conn = sockserv.connect(echo_server.address, key=KEY)
    caught = []

    def receive():
        try:
            conn.recv()
        except sockserv.SockservError as e:
            caught.append(e)

    t = threading.Thread(target=receive)
    t.start()
    assert wait_until(lambda: conn._busy == 1)
    conn.close()
    t.join(WAIT)
    assert not t.is_alive()
    assert isinstance(caught[0], sockserv.ConnectionClosed), caught


def test_wrong_key(echo_server):
    with pytest.raises(sockserv.AuthenticationError) as e:
        sockserv.connect(echo_server.address, key=b"wrong")
    assert e.value.code == Code.AUTH_FAILED
    assert echo_server.address in e.value.detail
    assert e.value.call == "sockserv_connect"
    assert isinstance(e.value, multiprocessing.AuthenticationError)
    assert wait_until(lambda: echo_server.stats()["handshake_failures"] == 1)


def test_extra_keys_let_in_old_clients(errors):
    with sockserv.Server("tcp://127.0.0.1:0", echo, key=b"new", extra_keys=[b"old"], on_error=errors.on_error) as srv:
        srv.start()
        for key in (b"new", b"old"):
            with sockserv.connect(srv.address, key=key, io_timeout=WAIT) as conn:
                conn.send(key)
                assert conn.recv() == key


def test_errors_map_to_families():
    # Nobody listens on a port we just freed.
    with sockserv.Server("tcp://127.0.0.1:0") as srv:
        addr = srv.address
    with pytest.raises(sockserv.NetworkError) as e:
        sockserv.connect(addr)
    assert e.value.code == Code.CONNECTION_REFUSED and addr in e.value.detail
    assert isinstance(e.value, OSError)

    with pytest.raises(sockserv.UsageError) as e:
        sockserv.connect("tcp:/nonsense")
    assert e.value.code == Code.INVALID_ADDRESS

    with sockserv.Server("tcp://127.0.0.1:0") as srv:
        with pytest.raises(sockserv.NetworkError) as e:
            sockserv.Server(srv.address)
        assert e.value.code == Code.ADDRESS_IN_USE

    with pytest.raises(sockserv.UsageError) as e:
        sockserv.connect(addr, key=b"")
    assert e.value.code == Code.INVALID_ARGUMENT and e.value.call == "sockserv_config_set_auth_key"
    with pytest.raises(sockserv.UsageError) as e:
        sockserv.Server("tcp://127.0.0.1:0", max_pending_handshakes=0)
    assert e.value.call == "sockserv_config_set_max_pending_handshakes"
    with sockserv.Server("tcp://127.0.0.1:0", key=b"k", max_pending_handshakes=4096):
        pass
    with pytest.raises(TypeError):
        sockserv.connect(addr, no_such_option=1)

    # Every code has a family, and each family is a SockservError.
    families = sockserv.errors.FAMILIES
    covered = sorted(c for codes in families.values() for c in codes)
    assert covered == [c for c in Code if c != Code.OK]
    for cls, codes in families.items():
        for code in codes:
            err = sockserv.errors.error_for(code, "detail", "call")
            assert type(err) is cls and err.code == code and "detail" in str(err)


def test_frame_too_large_is_a_protocol_error(errors):
    with sockserv.Server("tcp://127.0.0.1:0", echo, max_frame_size=1024, on_error=errors.on_error) as srv:
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
            conn.send(b"x" * 2048)
            with pytest.raises(sockserv.ConnectionClosed):
                conn.recv()
        assert wait_until(lambda: len(errors) == 1)
    assert isinstance(errors[0], sockserv.ProtocolError)
    assert errors[0].code == Code.FRAME_TOO_LARGE and "2048" in errors[0].detail


def test_handler_exceptions_stay_in_python(errors):
    def handler(conn):
        msg = conn.recv()
        if msg == b"raise":
            raise ValueError("handler failed")
        if msg == b"exit":
            raise SystemExit(3)  # not even this crosses into C
        echo(conn)

    with sockserv.Server("tcp://127.0.0.1:0", handler, on_error=errors.on_error) as srv:
        srv.start()
        for msg in (b"raise", b"exit"):
            with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
                conn.send(msg)
                with pytest.raises(sockserv.ConnectionClosed):
                    conn.recv()
        assert wait_until(lambda: len(errors) == 2)
        # The server goes on.
        with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
            conn.send(b"first")
            conn.send(b"second")
            assert conn.recv() == b"second"
    assert isinstance(errors[0], ValueError) and isinstance(errors[1], SystemExit)


def test_default_error_report_prints_the_traceback(capfd):
    def handler(conn):
        raise RuntimeError("printed, not lost")

    with sockserv.Server("tcp://127.0.0.1:0", handler) as srv:
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
            with pytest.raises(sockserv.ConnectionClosed):
                conn.recv()
        assert wait_until(lambda: srv.stats()["handled"] == 1)
    err = capfd.readouterr().err
    assert "sockserv: exception in the handler" in err and "RuntimeError: printed, not lost" in err


def test_verify_accepts_refuses_and_contains_exceptions(errors):
    peers, verdicts = [], [False, "raise", True]

    def verify(peer):
        peers.append(peer)
        verdict = verdicts.pop(0)
        if verdict == "raise":
            raise KeyError("verify failed")
        return verdict

    with sockserv.Server("tcp://127.0.0.1:0", echo, key=KEY, verify=verify, on_error=errors.on_error) as srv:
        srv.start()
        for _ in range(2):
            with pytest.raises(sockserv.ConnectionClosed):
                sockserv.connect(srv.address, key=KEY, io_timeout=WAIT)
        with sockserv.connect(srv.address, key=KEY, io_timeout=WAIT) as conn:
            conn.send(b"verified")
            assert conn.recv() == b"verified"
        assert srv.stats()["refused_by_verify"] == 2
    assert len(peers) == 3 and all(p.startswith("tcp://127.0.0.1:") for p in peers)
    assert len(errors) == 1 and isinstance(errors[0], KeyError)


def test_callbacks_stay_alive_without_user_references():
    def make():
        # The only references to these lambdas are the server's.
        return sockserv.Server("tcp://127.0.0.1:0", lambda c: c.send(c.recv() * 2), verify=lambda p: True)

    with make() as srv:
        gc.collect()
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
            conn.send(b"ab")
            assert conn.recv() == b"abab"


def test_lent_connection_is_unusable_after_the_handler(errors):
    kept = []

    def handler(conn):
        kept.append(conn)
        conn.send(b"bye")

    with sockserv.Server("tcp://127.0.0.1:0", handler, on_error=errors.on_error) as srv:
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
            assert conn.recv() == b"bye"
        assert wait_until(lambda: srv.stats()["handled"] == 1)
    with pytest.raises(sockserv.UsageError) as e:
        kept[0].send(b"too late")
    assert e.value.code == Code.INVALID_STATE and "callback that has returned" in e.value.detail
    assert not errors


def test_close_from_a_handler_is_refused(errors):
    holder = {}

    def handler(conn):
        holder["srv"].close()

    with sockserv.Server("tcp://127.0.0.1:0", handler, on_error=errors.on_error) as srv:
        holder["srv"] = srv
        srv.start()
        with sockserv.connect(srv.address, io_timeout=WAIT):
            assert wait_until(lambda: len(errors) == 1)
    assert isinstance(errors[0], sockserv.UsageError) and errors[0].code == Code.INVALID_STATE


def test_serve_forever_until_shutdown(errors):
    srv = sockserv.Server("tcp://127.0.0.1:0", echo, on_error=errors.on_error)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    try:
        with sockserv.connect(srv.address, io_timeout=WAIT) as conn:
            conn.send(b"served")
            assert conn.recv() == b"served"
            srv.shutdown()
            t.join(WAIT)
            assert not t.is_alive()
            # Live connections go on; new ones are refused.
            conn.send(b"still here")
            assert conn.recv() == b"still here"
        with pytest.raises(sockserv.NetworkError):
            sockserv.connect(srv.address)
    finally:
        srv.shutdown()
        t.join(WAIT)
        srv.close()
    assert not errors


def test_concurrent_clients(echo_server):
    failures = []

    def client(n):
        try:
            with sockserv.connect(echo_server.address, key=KEY, io_timeout=WAIT) as conn:
                for i in range(50):
                    msg = f"{n}:{i}".encode()
                    conn.send(msg)
                    assert conn.recv() == msg
        except Exception as e:  # noqa: BLE001 (reported below)
            failures.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    assert wait_until(lambda: echo_server.stats()["handled"] == 8)

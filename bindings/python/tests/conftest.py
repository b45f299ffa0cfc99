"""Shared fixtures. The library comes from SOCKSERV_LIB (set by the Rust test
that runs this suite) or the checkout's target/ (see sockserv/_lib.py)."""

import faulthandler
import os
import pathlib
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
# mp_handshake.py (the 3.12 handshake for 3.11) and mp_peer.py live there.
sys.path.insert(0, str(REPO / "tests" / "py"))

import sockserv  # noqa: E402

KEY = b"binding test key"
# Every wait in these tests is bounded by this.
WAIT = 10.0


def pytest_sessionstart(session):
    # A hung test dumps every thread's stack and ends the run, rather than
    # waiting for the Rust harness to kill it silently.
    faulthandler.dump_traceback_later(float(os.environ.get("SOCKSERV_PYTEST_WATCHDOG", 240)), exit=True)


def pytest_sessionfinish(session, exitstatus):
    faulthandler.cancel_dump_traceback_later()


class Errors(list):
    on_error = None


def echo(conn):
    while True:
        conn.send(conn.recv())


@pytest.fixture
def errors():
    """A list that collects exceptions from a server's callbacks (on_error)."""
    found = Errors()
    lock = threading.Lock()

    def on_error(exc):
        with lock:
            found.append(exc)

    found.on_error = on_error
    return found


@pytest.fixture
def echo_server(errors):
    """An authenticated echo server on 127.0.0.1, started."""
    with sockserv.Server("tcp://127.0.0.1:0", echo, key=KEY, io_timeout=WAIT, on_error=errors.on_error) as srv:
        srv.start()
        yield srv
    assert not errors, errors


def wait_until(cond, limit=WAIT):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()

"""A multiprocessing.connection peer for sockserv's interop tests.

    mp_peer.py client   FAMILY ADDRESS [options]   connect, send the frame plan, check every echo
    mp_peer.py listener FAMILY ADDRESS [options]   accept one connection, echo until it closes

FAMILY is AF_INET (ADDRESS host:port; port 0 for a listener) or AF_UNIX
(ADDRESS a path). A listener prints "listening FAMILY ADDRESS" once bound.

--auth none    no authkey (plain frames)
--auth own     the 3.12+ {sha256} handshake from mp_handshake.py, over a
               connection opened without an authkey
--auth stock   the stdlib's own handshake (authkey=KEY): legacy HMAC-MD5 on
               3.11, {sha256} on 3.12+
--expect refused   the handshake must fail; prints "refused: TYPE: MESSAGE"

Frames use send_bytes/recv_bytes only (no pickling). The last line on
stdout is "ok" when everything went as expected; anything else exits 1.
A watchdog ends the process (with a traceback) if it runs past --timeout,
since the stdlib's connections have no timeouts of their own.
"""

import argparse
import faulthandler
import sys
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener

import mp_handshake

# The frame plan, the same as SIZES and BURST in tests/python_interop.rs:
# empty frames, sizes around Python's 16 KiB concatenation threshold and the
# 64 KiB receive buffer, 1 MiB, then a burst of small frames.
SIZES = [0, 1, 2, 100, 16384, 16385, 65535, 65536, 65537, 1 << 20, 0]
BURST = 1000
# Payloads are slices of one periodic pattern: byte j of frame `seed` is
# ((seed % 251 + j) * 7) % 251, as payload() in the Rust test computes it.
PATTERN = bytes((j * 7) % 251 for j in range((1 << 20) + 251))


def payload(size, seed):
    start = seed % 251
    return PATTERN[start:start + size]


def burst_size(i):
    return (i * 37) % 1500


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def check_echo(conn, sent, what):
    got = conn.recv_bytes()
    if got != sent:
        diff = next((j for j, (a, b) in enumerate(zip(got, sent)) if a != b), min(len(got), len(sent)))
        fail(f"{what}: sent {len(sent)} bytes, got {len(got)} back, first difference at byte {diff}")


def run_plan(conn):
    """Sends the plan and checks each echo byte for byte."""
    for seed, size in enumerate(SIZES):
        data = payload(size, seed)
        conn.send_bytes(data)
        check_echo(conn, data, f"frame {seed} ({size} bytes)")
    # The burst is sent from a second thread while this one reads the
    # echoes, so neither side can block on a full socket buffer.
    base = len(SIZES)
    sender = threading.Thread(
        target=lambda: [conn.send_bytes(payload(burst_size(i), base + i)) for i in range(BURST)],
        daemon=True,
    )
    sender.start()
    for i in range(BURST):
        check_echo(conn, payload(burst_size(i), base + i), f"burst frame {i}")
    sender.join()
    print(f"checked {len(SIZES) + BURST} echoes", flush=True)


def echo_until_closed(conn):
    count = 0
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            break
        conn.send_bytes(data)
        count += 1
    print(f"echoed {count} frames", flush=True)


def parse_address(family, text):
    if family == "AF_INET":
        host, port = text.rsplit(":", 1)
        return (host, int(port))
    return text


def format_address(family, address):
    if family == "AF_INET":
        return f"{address[0]}:{address[1]}"
    return address


def open_client(args, key):
    address = parse_address(args.family, args.address)
    if args.auth == "stock":
        return Client(address, family=args.family, authkey=key)
    conn = Client(address, family=args.family)
    if args.auth == "own":
        # The connecting side answers first, then challenges.
        mp_handshake.answer_challenge(conn, key)
        mp_handshake.deliver_challenge(conn, key)
    return conn


def accept_one(args, key):
    address = parse_address(args.family, args.address)
    stock_key = key if args.auth == "stock" else None
    with Listener(address, family=args.family, authkey=stock_key) as listener:
        print(f"listening {args.family} {format_address(args.family, listener.address)}", flush=True)
        conn = listener.accept()
    if args.auth == "own":
        # The accepting side challenges first, then answers.
        try:
            mp_handshake.deliver_challenge(conn, key)
            mp_handshake.answer_challenge(conn, key)
        except BaseException:
            conn.close()
            raise
    return conn


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["client", "listener"])
    parser.add_argument("family", choices=["AF_INET", "AF_UNIX"])
    parser.add_argument("address")
    parser.add_argument("--auth", choices=["none", "own", "stock"], default="none")
    parser.add_argument("--key", default="")
    parser.add_argument("--expect", choices=["ok", "refused"], default="ok")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.timeout, exit=True)
    print(f"python {sys.version.split()[0]}", flush=True)
    key = args.key.encode()
    if args.auth != "none" and not key:
        fail("--auth needs --key")

    opener = open_client if args.role == "client" else accept_one
    try:
        conn = opener(args, key)
    except (AuthenticationError, EOFError, ConnectionError) as e:
        if args.expect != "refused":
            raise
        # The handshake failed with an error, which is what was expected.
        print(f"refused: {type(e).__name__}: {e}", flush=True)
        print("ok", flush=True)
        return
    if args.expect == "refused":
        conn.close()
        fail("the handshake succeeded but was expected to be refused")
    with conn:
        if args.role == "client":
            run_plan(conn)
        else:
            echo_until_closed(conn)
    print("ok", flush=True)


if __name__ == "__main__":
    main()

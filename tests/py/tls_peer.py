"""A TLS peer for sockserv's tests: Python's stdlib `ssl` carrying the
multiprocessing.connection handshake and framing.

    tls_peer.py client   HOST:PORT --ca CA [options]   connect, send the frame plan, check every echo
    tls_peer.py listener HOST:PORT --cert C --key K [options]   accept one connection, echo until it closes

A listener prints "listening HOST:PORT" once bound (port 0: any). Both
print "tls VERSION" after the TLS handshake, and "peer SUBJECT" when the
peer sent a certificate.

--ca FILE          trust anchors for the peer (a listener: asks for a client
                   certificate, and with --require-client-cert insists)
--cert/--tls-key   our certificate chain and key
--server-name N    the name a client checks (default: HOST)
--authkey KEY      run the {sha256} challenge-response inside TLS
--expect refused   the TLS or HMAC handshake must fail; prints
                   "refused: TYPE: MESSAGE"
--frames N         the burst's length (default 200)
--greeting         the server first sends one frame, the client's address
                   as it saw it: print "greeted ADDRESS from LOCAL"
--acked N          instead of the plan: N frames one at a time, each
                   echoed before the next; when the connection fails,
                   connect again (at most 20 times) and resend the frame
                   not yet echoed. Prints "acked I" every 25 frames and
                   "acked N over K connections" at the end.
--pace MS          with --acked: pause this long after each frame

The handshake is the stdlib's own (multiprocessing.connection's
deliver_challenge/answer_challenge) on 3.12+, and mp_handshake.py's (the
same {sha256} form, written from PROTOCOL.md) on 3.11, whose stdlib only
speaks the legacy HMAC-MD5 form. Either runs over `Framed`, a small
adapter with the send_bytes/recv_bytes of a multiprocessing Connection on
an SSLSocket, framed as the stdlib frames (4-byte big-endian length). The
last line on stdout is "ok" when everything went as expected; anything
else exits 1. A watchdog ends the process past --timeout.
"""

import argparse
import faulthandler
import multiprocessing.connection as mpc
import socket
import ssl
import struct
import sys
import time
from multiprocessing import AuthenticationError

import mp_handshake

SIZES = [0, 1, 2, 100, 16384, 16385, 65535, 65536, 65537, 1 << 20, 0]
# Burst frames sent before their echoes are read.
WINDOW = 50
PATTERN = bytes((j * 7) % 251 for j in range((1 << 20) + 251))


def payload(size, seed):
    start = seed % 251
    return PATTERN[start:start + size]


def burst_size(i):
    return (i * 37) % 1500


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


class Framed:
    """send_bytes/recv_bytes of multiprocessing.connection.Connection, on
    an SSLSocket: the stdlib's framing (a 4-byte big-endian signed length,
    then the payload)."""

    def __init__(self, sock):
        self.sock = sock

    def send_bytes(self, buf):
        n = len(buf)
        if n > 0x7FFFFFFF:
            raise ValueError("this adapter sends short frames only")
        self.sock.sendall(struct.pack("!i", n) + bytes(buf))

    def _recv_exact(self, n):
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv_bytes(self, maxlength=None):
        (n,) = struct.unpack("!i", self._recv_exact(4))
        if n < 0:
            raise OSError(f"bad message length {n} (long frames are not used here)")
        if maxlength is not None and n > maxlength:
            raise OSError("bad message length")
        return self._recv_exact(n)

    def close(self):
        self.sock.close()


def handshake_module():
    # The stdlib's own functions when they speak {sha256} (3.12+).
    return mpc if sys.version_info >= (3, 12) else mp_handshake


def parse(hostport):
    host, port = hostport.rsplit(":", 1)
    return host.strip("[]"), int(port)


def describe(tls):
    print(f"tls {tls.version()}", flush=True)
    cert = tls.getpeercert()
    if cert:
        subject = ",".join(f"{k}={v}" for rdn in cert["subject"] for k, v in rdn)
        print(f"peer {subject}", flush=True)


def run_plan(conn, burst):
    for seed, size in enumerate(SIZES):
        data = payload(size, seed)
        conn.send_bytes(data)
        got = conn.recv_bytes()
        if got != data:
            fail(f"frame {seed}: sent {len(data)} bytes, got {len(got)} back, different")
    # The burst goes in windows of frames sent back to back, then their
    # echoes read: from one thread, as an SSLSocket must not be read and
    # written from two at once (OpenSSL's SSL objects are not thread-safe;
    # it showed as spurious EOFs). A window (at most 75 KB) fits in the
    # sockets' buffers, so neither side blocks.
    base = len(SIZES)
    for start in range(0, burst, WINDOW):
        window = range(start, min(start + WINDOW, burst))
        for i in window:
            conn.send_bytes(payload(burst_size(i), base + i))
        for i in window:
            if conn.recv_bytes() != payload(burst_size(i), base + i):
                fail(f"burst frame {i} came back different")
    print(f"checked {len(SIZES) + burst} echoes", flush=True)


def client(args):
    host, port = parse(args.address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(args.ca)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.tls_key)
    raw = socket.create_connection((host, port), timeout=args.timeout)
    tls = ctx.wrap_socket(raw, server_hostname=args.server_name or host)
    conn = Framed(tls)
    if args.authkey:
        # The connecting side answers first, then challenges.
        hs = handshake_module()
        hs.answer_challenge(conn, args.authkey.encode())
        hs.deliver_challenge(conn, args.authkey.encode())
    return tls, conn


def acked(args):
    """Frames one at a time through a server that may die under us."""
    connections, attempts, i = 0, 0, 0
    conn = None
    while i < args.acked:
        try:
            if conn is None:
                attempts += 1
                if attempts > 20:
                    fail(f"gave up after {attempts - 1} connections, {i} frames acked")
                tls, conn = client(args)
                connections += 1
                greet(tls, conn)
            data = f"frame {i} of {args.address}".encode() + payload(i % 2000, i)
            conn.send_bytes(data)
            if conn.recv_bytes() != data:
                fail(f"frame {i} came back different")
            i += 1
            time.sleep(args.pace / 1000)
            if i % 25 == 0:
                print(f"acked {i}", flush=True)
        except (ssl.SSLError, EOFError, ConnectionError, socket.timeout) as e:
            print(f"lost connection {connections}: {type(e).__name__}: {e}", flush=True)
            time.sleep(0.1)
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
            conn = None
    print(f"acked {args.acked} over {connections} connections", flush=True)
    conn.close()


def greet(tls, conn):
    if GREETING:
        seen = conn.recv_bytes(256).decode()
        local = tls.getsockname()
        print(f"greeted {seen} from {local[0]}:{local[1]}", flush=True)


GREETING = False


def listener(args):
    host, port = parse(args.address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(args.cert, args.tls_key)
    if args.ca:
        ctx.load_verify_locations(args.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if args.require_client_cert else ssl.CERT_OPTIONAL
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as lsock:
        lsock.bind((host, port))
        lsock.listen(1)
        bound = lsock.getsockname()
        shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
        print(f"listening {shown}:{bound[1]}", flush=True)
        raw, _ = lsock.accept()
    raw.settimeout(args.timeout)
    tls = ctx.wrap_socket(raw, server_side=True)
    conn = Framed(tls)
    if args.authkey:
        # The accepting side challenges first, then answers.
        hs = handshake_module()
        hs.deliver_challenge(conn, args.authkey.encode())
        hs.answer_challenge(conn, args.authkey.encode())
    return tls, conn


def echo_until_closed(conn):
    count = 0
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, ConnectionError, ssl.SSLEOFError):
            break
        conn.send_bytes(data)
        count += 1
    print(f"echoed {count} frames", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["client", "listener"])
    parser.add_argument("address")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--require-client-cert", action="store_true")
    parser.add_argument("--server-name")
    parser.add_argument("--authkey", default="")
    parser.add_argument("--expect", choices=["ok", "refused"], default="ok")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--greeting", action="store_true")
    parser.add_argument("--acked", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.0)
    args = parser.parse_args()
    global GREETING
    GREETING = args.greeting
    faulthandler.dump_traceback_later(args.timeout, exit=True)
    print(f"python {sys.version.split()[0]} {ssl.OPENSSL_VERSION}", flush=True)
    if args.authkey:
        print(f"handshake {'stdlib' if handshake_module() is mpc else 'mp_handshake'}", flush=True)
    if args.acked:
        acked(args)
        print("ok", flush=True)
        return
    opener = client if args.role == "client" else listener
    try:
        tls, conn = opener(args)
        describe(tls)
        if args.role == "client":
            greet(tls, conn)
        if args.role == "client":
            run_plan(conn, args.frames)
        else:
            echo_until_closed(conn)
    except (ssl.SSLError, AuthenticationError, EOFError, ConnectionError) as e:
        if args.expect != "refused":
            raise
        print(f"refused: {type(e).__name__}: {e}", flush=True)
        print("ok", flush=True)
        return
    if args.expect == "refused":
        fail("everything succeeded but was expected to be refused")
    conn.close()
    print("ok", flush=True)


if __name__ == "__main__":
    main()

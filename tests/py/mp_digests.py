"""A peer that runs Python's own multiprocessing.connection handshake
(deliver_challenge / answer_challenge, Python 3.12+) with a chosen digest,
for tests/digests.rs.

    mp_digests.py connect HOST PORT KEY DIGEST   # a client of a sockserv server
    mp_digests.py listen KEY DIGEST              # a listener for a sockserv client

Each side challenges with DIGEST (deliver_challenge's digest_name), so
sockserv must answer that digest in the role it plays; the other direction
uses whatever sockserv challenges with. After the handshake the peer sends
one frame and expects it echoed (connect), or echoes one frame (listen).
Prints "LISTENING PORT" (listen), then "OK" or "REFUSED <reason>"; any other
failure is a traceback and exit status 1. Bounded by an alarm.
"""

import signal
import sys
from multiprocessing import AuthenticationError
from multiprocessing import connection as mpc

signal.alarm(30)


def main():
    role = sys.argv[1]
    if role == "connect":
        host, port, key, digest = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        key = key.encode()
        conn = mpc.Client((host, port))  # no authkey: the handshake is ours
        try:
            mpc.answer_challenge(conn, key)
            mpc.deliver_challenge(conn, key, digest_name=digest)
        except AuthenticationError as e:
            print("REFUSED", e, flush=True)
            return
        msg = b"hello over " + digest.encode()
        conn.send_bytes(msg)
        back = conn.recv_bytes(1024)
        assert back == msg, (back, msg)
        conn.close()
        print("OK", flush=True)
    elif role == "listen":
        key, digest = sys.argv[2].encode(), sys.argv[3]
        listener = mpc.Listener(("127.0.0.1", 0))
        print("LISTENING", listener.address[1], flush=True)
        conn = listener.accept()
        try:
            mpc.deliver_challenge(conn, key, digest_name=digest)
            mpc.answer_challenge(conn, key)
        except AuthenticationError as e:
            print("REFUSED", e, flush=True)
            return
        conn.send_bytes(conn.recv_bytes(1024))
        conn.close()
        listener.close()
        print("OK", flush=True)
    else:
        sys.exit(f"unknown role {role!r}")


main()

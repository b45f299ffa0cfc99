"""A client that stops half-way, then waits to be killed (SIGKILL).

    python3 half_client.py HOST PORT STAGE

STAGE is where it stops:
  handshake  after the server's challenge, half of the response frame sent
  header     handshake done (when SOCKSERV_KEY is set), 2 of a header's 4 bytes
  payload    handshake done, a header of 1000 and 10 payload bytes

It prints "ready" once the bytes are sent, then sleeps: the test kills it
with SIGKILL, so the kernel closes the socket mid-frame, with no goodbye.
Written from /work/shared/PROTOCOL.md, with the standard library only.
"""

import hashlib
import hmac
import os
import socket
import struct
import sys
import time

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
TAG = b"{sha256}"


def send_frame(s, payload):
    s.sendall(struct.pack(">i", len(payload)) + payload)


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return data


def recv_frame(s):
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    return recv_exact(s, n)


def response(key, challenge_msg):
    body = challenge_msg[len(CHALLENGE):]
    return TAG + hmac.new(key, body, hashlib.sha256).digest()


def handshake(s, key):
    """The client role: answer, then challenge back."""
    send_frame(s, response(key, recv_frame(s)))
    if recv_frame(s) != WELCOME:
        raise SystemExit("our response was refused")
    body = TAG + os.urandom(40)
    send_frame(s, CHALLENGE + body)
    got = recv_frame(s)
    if not hmac.compare_digest(got, TAG + hmac.new(key, body, hashlib.sha256).digest()):
        raise SystemExit("the server's response is wrong")
    send_frame(s, WELCOME)


def main():
    host, port, stage = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    key = os.environ.get("SOCKSERV_KEY", "").encode()
    s = socket.create_connection((host, port), timeout=30)
    if stage == "handshake":
        frame = struct.pack(">i", 40) + response(key, recv_frame(s))
        s.sendall(frame[: len(frame) // 2])
    else:
        if key:
            handshake(s, key)
        if stage == "header":
            s.sendall(b"\x00\x00")
        elif stage == "payload":
            s.sendall(struct.pack(">i", 1000) + b"0123456789")
        else:
            raise SystemExit(f"unknown stage {stage!r}")
    print("ready", flush=True)
    # Killed long before this ends; bounded all the same.
    time.sleep(60)


if __name__ == "__main__":
    main()

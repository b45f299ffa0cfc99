"""The multiprocessing.connection handshake of Python 3.12+, for Python 3.11.

Written from /work/shared/PROTOCOL.md ("Authentication handshake"), so that a
3.11 interpreter, whose stdlib only speaks the legacy HMAC-MD5 form, can test
sockserv's {sha256} handshake. `conn` is a stdlib
multiprocessing.connection.Connection opened without an authkey: its
send_bytes/recv_bytes do the framing, this module only the messages.

The accepting side calls deliver_challenge then answer_challenge; the
connecting side answer_challenge then deliver_challenge.
"""

import hashlib
import hmac
import os
from multiprocessing import AuthenticationError

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
TAG = b"{sha256}"
NONCE_LEN = 40
# Every handshake message is refused above this size.
MAX_MESSAGE = 256
# The shortest challenge body an answering side accepts.
MIN_CHALLENGE_BODY = 20


def _response(key, body):
    # The MAC covers the whole challenge body, its {sha256} tag included.
    return TAG + hmac.new(key, body, hashlib.sha256).digest()


def deliver_challenge(conn, key):
    """Challenges the peer; sends #WELCOME# or #FAILURE# (then raises)."""
    body = TAG + os.urandom(NONCE_LEN)
    conn.send_bytes(CHALLENGE + body)
    got = conn.recv_bytes(MAX_MESSAGE)
    expected = _response(key, body)
    # Length first, then a constant-time comparison of the bytes.
    if len(got) == len(expected) and hmac.compare_digest(got, expected):
        conn.send_bytes(WELCOME)
        return
    conn.send_bytes(FAILURE)
    raise AuthenticationError(f"the peer's response does not match the key: {got!r}")


def answer_challenge(conn, key):
    """Answers the peer's challenge; raises unless the peer says #WELCOME#."""
    msg = conn.recv_bytes(MAX_MESSAGE)
    if not msg.startswith(CHALLENGE):
        raise AuthenticationError(f"expected a challenge, got {msg!r}")
    body = msg[len(CHALLENGE):]
    if len(body) < MIN_CHALLENGE_BODY:
        raise AuthenticationError(f"challenge too short: {len(body)} bytes")
    # Only {sha256} is spoken here; anything else is a protocol error.
    if not body.startswith(TAG):
        raise AuthenticationError(f"challenge is not tagged {TAG!r}: {body!r}")
    conn.send_bytes(_response(key, body))
    verdict = conn.recv_bytes(MAX_MESSAGE)
    if verdict != WELCOME:
        raise AuthenticationError(f"our response was rejected: {verdict!r}")

"""TLS through the binding, over real loopback TLS: tls:// servers in both
modes and connect(), certificates from files and memory, mutual TLS, ALPN,
the peer's certificate, the two TLS exceptions, adopted sockets, and
Python's own ssl module as the peer (also carrying multiprocessing's
handshake inside TLS). Certificates are made at test time by
c_examples/make-certs.sh (the openssl command line)."""

import hashlib
import multiprocessing
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading

import pytest

import sockserv
from sockserv import CertificateError, Code, TLSClientAuth, TLSError, TLSVersion

from conftest import KEY, REPO, WAIT, echo, wait_until


class Certs:
    def __init__(self, path):
        self.path = path

    def file(self, name):
        return str(self.path / name)

    def pem(self, name):
        return (self.path / name).read_bytes()

    def sha256(self, name):
        """The fingerprint, computed by the stdlib from the PEM."""
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(self.pem(name).decode())).digest()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is not installed (apt-get install openssl)")
    path = tmp_path_factory.mktemp("certs")
    script = REPO / "c_examples" / "make-certs.sh"
    for extra in ([], ["other"]):
        subprocess.run(["sh", str(script), str(path), *extra], check=True, timeout=60)
    return Certs(path)


def server_options(certs, **extra):
    options = dict(tls_cert_file=(certs.file("server.pem"), certs.file("server.key")), io_timeout=WAIT)
    options.update(extra)
    return options


def client_options(certs, ca="ca.pem", **extra):
    options = dict(tls_ca=certs.pem(ca), io_timeout=WAIT)
    options.update(extra)
    return options


def test_mutual_tls_with_a_key_alpn_and_the_peer_certificate(certs, errors):
    seen = {}

    def handler(conn):
        seen["cert"] = conn.peer_certificate
        seen["info"] = conn.tls_info
        echo(conn)

    with sockserv.Server(
        "tls://127.0.0.1:0",
        handler,
        key=KEY,
        on_error=errors.on_error,
        **server_options(
            certs,
            tls_ca_file=certs.file("ca.pem"),
            tls_client_auth=TLSClientAuth.REQUIRED,
            tls_alpn=["echo/2", "echo/1"],
        ),
    ) as srv:
        srv.start()
        assert re.fullmatch(r"tls://127\.0\.0\.1:\d+", srv.address) and not srv.address.endswith(":0")
        with sockserv.connect(
            srv.address,
            key=KEY,
            **client_options(
                certs,
                tls_cert=(certs.pem("client.pem"), certs.pem("client.key")),
                tls_alpn=["echo/1"],
                tls_min_version=TLSVersion.TLSv1_3,
            ),
        ) as conn:
            conn.send(b"over mutual TLS")
            assert conn.recv() == b"over mutual TLS"
            big = bytes(range(256)) * 4096  # 1 MiB: many TLS records
            conn.send(big)
            assert conn.recv() == big
            cert = conn.peer_certificate
            assert cert is not None
            assert cert.sha256 == certs.sha256("server.pem")
            assert "CN=localhost" in cert.subject
            assert conn.tls_info == sockserv.TLSInfo(TLSVersion.TLSv1_3, "echo/1")
        assert wait_until(lambda: "info" in seen)
    assert seen["cert"].sha256 == certs.sha256("client.pem")
    assert "CN=client" in seen["cert"].subject
    assert seen["info"].alpn == "echo/1"


def test_event_mode_knows_the_client_in_on_open(certs, errors):
    opened = []

    def on_open(conn):
        opened.append(conn.peer_certificate)

    with sockserv.EventServer(
        "tls://127.0.0.1:0",
        on_open=on_open,
        on_frame=lambda conn, frame: conn.send(frame),
        on_error=errors.on_error,
        **server_options(certs, tls_ca=certs.pem("ca.pem"), tls_client_auth=TLSClientAuth.OPTIONAL),
    ) as srv:
        srv.start()
        with sockserv.connect(
            srv.address, **client_options(certs, tls_cert_file=(certs.file("client.pem"), certs.file("client.key")))
        ) as conn:
            for i in range(100):
                conn.send(b"%d" % i)
            assert [conn.recv() for _ in range(100)] == [b"%d" % i for i in range(100)]
        # OPTIONAL: a client without a certificate is let in, with none.
        with sockserv.connect(srv.address, **client_options(certs)) as conn:
            conn.send(b"anonymous")
            assert conn.recv() == b"anonymous"
        assert wait_until(lambda: len(opened) == 2)
    assert opened[0] is not None and opened[0].sha256 == certs.sha256("client.pem")
    assert opened[1] is None
    assert not errors


def test_certificate_failures_raise_certificate_error_with_the_reason(certs, errors):
    with sockserv.Server("tls://127.0.0.1:0", echo, key=KEY, on_error=errors.on_error,
                         **server_options(certs)) as srv:
        srv.start()
        with pytest.raises(CertificateError) as e:
            sockserv.connect(srv.address, key=KEY, **client_options(certs, ca="other-ca.pem"))
        assert e.value.code == Code.CERTIFICATE and "unknown issuer" in e.value.detail
        assert isinstance(e.value, ssl.SSLCertVerificationError) and isinstance(e.value, TLSError)
        with pytest.raises(CertificateError) as e:
            sockserv.connect(srv.address, key=KEY, **client_options(certs, tls_server_name="example.org"))
        assert "name mismatch" in e.value.detail and "example.org" in e.value.detail
        with pytest.raises(sockserv.UsageError) as e:
            sockserv.connect(srv.address, key=KEY, io_timeout=WAIT)
        assert e.value.code == Code.INVALID_ARGUMENT and "trust anchors" in e.value.detail
        # Plaintext to the TLS port (a frame first, no key): refused, never an echo.
        plain = srv.address.replace("tls://", "tcp://", 1)
        with pytest.raises(sockserv.SockservError):
            with sockserv.connect(plain, io_timeout=WAIT) as conn:
                conn.send(b"x")
                conn.recv()
        # The server goes on.
        with sockserv.connect(srv.address, key=KEY, **client_options(certs)) as conn:
            conn.send(b"still serving")
            assert conn.recv() == b"still serving"
        assert wait_until(lambda: srv.stats()["handshake_failures"] >= 3)


def test_a_required_client_certificate_that_is_missing_is_refused(certs, errors):
    with sockserv.Server(
        "tls://127.0.0.1:0", echo, key=KEY, on_error=errors.on_error,
        **server_options(certs, tls_ca_file=certs.file("ca.pem"), tls_client_auth=TLSClientAuth.REQUIRED),
    ) as srv:
        srv.start()
        for extra in ({}, {"tls_cert": (certs.pem("other-client.pem"), certs.pem("other-client.key"))}):
            with pytest.raises(TLSError):  # or its subclass CertificateError
                with sockserv.connect(srv.address, key=KEY, **client_options(certs, **extra)) as conn:
                    conn.send(b"x")
                    conn.recv()


def test_bad_tls_settings_name_the_setter(certs, tmp_path):
    with pytest.raises(sockserv.UsageError) as e:
        sockserv.connect("tls://127.0.0.1:9", tls_ca=b"not a certificate")
    assert e.value.code == Code.INVALID_ARGUMENT and e.value.call == "sockserv_config_set_tls_ca"
    missing = tmp_path / "missing.pem"
    with pytest.raises(sockserv.NetworkError) as e:
        sockserv.connect("tls://127.0.0.1:9", tls_ca_file=missing)
    assert e.value.code == Code.IO and "missing.pem" in e.value.detail
    with pytest.raises(sockserv.UsageError) as e:
        sockserv.Server("tls://127.0.0.1:0", tls_cert=(certs.pem("server.pem"), certs.pem("client.key")))
    assert e.value.call == "sockserv_config_set_tls_cert"
    with pytest.raises(sockserv.UsageError) as e:
        sockserv.Server("tls://127.0.0.1:0")  # no certificate
    assert e.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(TypeError):
        sockserv.connect("tls://127.0.0.1:9", tls_alpn="h2")
    with pytest.raises(sockserv.UsageError):
        sockserv.connect("tls://127.0.0.1:9", tls_min_version=0x0301)


def test_adopted_sockets_with_tls_in_both_roles(certs):
    a, b = socket.socketpair()
    result = {}

    def serve():
        try:
            with sockserv.from_fd(a, sockserv.Role.SERVER, key=KEY, tls=True,
                                  **server_options(certs)) as conn:
                result["info"] = conn.tls_info
                conn.send(conn.recv())
        except BaseException as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=serve)
    t.start()
    try:
        with sockserv.from_fd(b, sockserv.Role.CLIENT, key=KEY, tls=True,
                              **client_options(certs, tls_server_name="localhost")) as conn:
            conn.send(b"adopted")
            assert conn.recv() == b"adopted"
            assert conn.peer_certificate.sha256 == certs.sha256("server.pem")
    finally:
        t.join(WAIT)
    assert "error" not in result, result
    assert result["info"].version == TLSVersion.TLSv1_3


def test_a_plain_connection_has_no_certificate(echo_server):
    with sockserv.connect(echo_server.address, key=KEY) as conn:
        assert conn.peer_certificate is None
        assert conn.tls_info is None


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


def read_frame(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "closed"
            data += chunk
        return data

    (n,) = struct.unpack("!i", exactly(4))
    return exactly(n)


def test_pythons_ssl_module_is_a_peer_both_ways(certs, errors):
    # Python's ssl client to a sockserv TLS server (no key: plain framing).
    with sockserv.Server("tls://127.0.0.1:0", echo, on_error=errors.on_error, **server_options(certs)) as srv:
        srv.start()
        host, port = srv.address[len("tls://"):].rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=certs.file("ca.pem"))
        with socket.create_connection((host, int(port)), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == "TLSv1.3"
                for payload in (b"from the stdlib", b"", b"x" * 100000):
                    tls.sendall(frame(payload))
                    assert read_frame(tls) == payload

    # A sockserv client to Python's ssl server.
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(certs.file("server.pem"), certs.file("server.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    got = []

    def serve():
        conn, _ = listener.accept()
        with sctx.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(WAIT)
            payload = read_frame(tls)
            got.append(payload)
            tls.sendall(frame(payload.upper()))

    t = threading.Thread(target=serve)
    t.start()
    try:
        port = listener.getsockname()[1]
        with sockserv.connect(f"tls://127.0.0.1:{port}", **client_options(certs)) as conn:
            conn.send(b"to the stdlib")
            assert conn.recv() == b"TO THE STDLIB"
            assert conn.tls_info.version == TLSVersion.TLSv1_3
    finally:
        t.join(WAIT)
        listener.close()
    assert got == [b"to the stdlib"]


class FramedTLS:
    """multiprocessing.connection's send_bytes/recv_bytes over an ssl
    socket: enough of a Connection for its handshake functions."""

    def __init__(self, tls):
        self.tls = tls

    def send_bytes(self, data):
        self.tls.sendall(frame(bytes(data)))

    def recv_bytes(self, maxlength=None):
        data = read_frame(self.tls)
        if maxlength is not None and len(data) > maxlength:
            raise OSError("message too long")
        return data


def handshake_module():
    """The stdlib's handshake on 3.12+ ({sha256}); tests/py/mp_handshake.py,
    the same bytes, on 3.11 (whose stdlib only has the legacy MD5 one)."""
    import multiprocessing.connection as mpc
    import sys

    if sys.version_info >= (3, 12):
        return mpc
    import mp_handshake

    return mp_handshake


def test_the_hmac_handshake_runs_inside_tls_with_pythons_ssl_and_handshake(certs, errors):
    hs = handshake_module()
    # Python (ssl + the multiprocessing handshake) to a sockserv TLS + HMAC server.
    with sockserv.Server("tls://127.0.0.1:0", echo, key=KEY, on_error=errors.on_error,
                         **server_options(certs)) as srv:
        srv.start()
        host, port = srv.address[len("tls://"):].rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=certs.file("ca.pem"))
        with socket.create_connection((host, int(port)), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                conn = FramedTLS(tls)
                hs.answer_challenge(conn, KEY)
                hs.deliver_challenge(conn, KEY)
                conn.send_bytes(b"inside TLS")
                assert conn.recv_bytes() == b"inside TLS"
        # A wrong key inside TLS is refused the same way.
        with socket.create_connection((host, int(port)), timeout=WAIT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                with pytest.raises(multiprocessing.AuthenticationError):
                    hs.answer_challenge(FramedTLS(tls), b"not the key")
        assert wait_until(lambda: srv.stats()["handshake_failures"] >= 1)

    # A sockserv TLS + HMAC client to Python (ssl + the handshake).
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(certs.file("server.pem"), certs.file("server.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    got = []

    def serve():
        raw, _ = listener.accept()
        with sctx.wrap_socket(raw, server_side=True) as tls:
            tls.settimeout(WAIT)
            conn = FramedTLS(tls)
            hs.deliver_challenge(conn, KEY)
            hs.answer_challenge(conn, KEY)
            payload = conn.recv_bytes()
            got.append(payload)
            conn.send_bytes(payload[::-1])

    t = threading.Thread(target=serve)
    t.start()
    try:
        port = listener.getsockname()[1]
        with sockserv.connect(f"tls://127.0.0.1:{port}", key=KEY, **client_options(certs)) as conn:
            conn.send(b"keyed and encrypted")
            assert conn.recv() == b"detpyrcne dna deyek"
    finally:
        t.join(WAIT)
        listener.close()
    assert got == [b"keyed and encrypted"]

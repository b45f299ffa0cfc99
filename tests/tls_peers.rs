//! TLS against real peers on loopback: OpenSSL's `s_server` and `s_client`
//! and Python's stdlib `ssl`, with certificates made at test time
//! (tests/common/certs.rs). First the fixture itself, checked by OpenSSL
//! (each certificate is what the tests take it for), then sockserv
//! against each peer.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::certs::{openssl, Certs, Pair};
use common::proc::{self, ChildGuard, Drain};

/// How long any one exchange with a peer may take.
const LIMIT: Duration = Duration::from_secs(20);

/// An `openssl s_server` or `s_client` child: its stdin is what it sends
/// over TLS, its stdout what it received (`-quiet`: nothing else), its
/// stderr its diagnostics. Killed when dropped.
struct OpensslPeer {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    received: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    stderr: Option<Drain>,
}

impl OpensslPeer {
    fn spawn(args: &[String]) -> OpensslPeer {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start openssl");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let stderr = Some(proc::drain(child.stderr.take().unwrap()));
        let (tx, received) = mpsc::channel();
        thread::spawn(move || {
            let mut chunk = [0u8; 65536];
            loop {
                match std::io::Read::read(&mut stdout, &mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        OpensslPeer {
            guard: ChildGuard::new(child),
            stdin,
            received,
            pending: Vec::new(),
            stderr,
        }
    }

    /// `openssl s_server` on 127.0.0.1 with `pair`, TLS 1.3 only, plus
    /// `extra`; returns once it accepts connections.
    fn server(pair: &Pair, extra: &[&str]) -> (OpensslPeer, u16) {
        let port = free_port();
        let mut args: Vec<String> = [
            "s_server",
            "-quiet",
            "-tls1_3",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            &pair.cert.display().to_string(),
            "-key",
            &pair.key.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut peer = OpensslPeer::spawn(&args);
        // A probe connection, closed at once: s_server shrugs it off and
        // accepts the next.
        let end = Instant::now() + LIMIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < end && peer.guard.child.try_wait().unwrap().is_none(),
                "s_server did not start: {}",
                peer.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
        (peer, port)
    }

    /// `openssl s_client` to 127.0.0.1:`port`, TLS 1.3 only, verifying
    /// the server against `ca` for the IP 127.0.0.1 (and failing the
    /// handshake when that fails), plus `extra`.
    fn client(port: u16, ca: &Path, extra: &[&str]) -> OpensslPeer {
        let mut args: Vec<String> = [
            "s_client",
            "-quiet",
            "-tls1_3",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            &ca.display().to_string(),
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        OpensslPeer::spawn(&args)
    }

    /// Sends `bytes` over its TLS connection.
    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    fn send_frame(&mut self, payload: &[u8]) {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        self.send(&bytes);
    }

    /// Exactly `n` bytes received over TLS, or `None` if the peer ended
    /// or `LIMIT` passed first.
    fn recv_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        let end = Instant::now() + LIMIT;
        while self.pending.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            self.pending.extend(self.received.recv_timeout(left).ok()?);
        }
        Some(self.pending.drain(..n).collect())
    }

    /// One frame received over TLS.
    fn recv_frame(&mut self) -> Option<Vec<u8>> {
        let header = self.recv_exact(4)?;
        let n = u32::from_be_bytes(header.try_into().unwrap());
        self.recv_exact(n as usize)
    }

    /// Waits for it to exit (at most `LIMIT`); whether it exited 0.
    fn exit_ok(&mut self) -> Option<bool> {
        self.guard.wait_for(LIMIT).map(|s| s.success())
    }

    /// What it said on stderr, once it is gone (killed if need be).
    fn stderr(&mut self) -> String {
        self.guard.kill9();
        self.stderr
            .take()
            .map(|d| d.collect_string(proc::PIPE_LIMIT))
            .unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Each certificate verifies (or fails) under OpenSSL as the tests take
/// it to: the fixture's own check, so a failure below is sockserv's.
#[test]
fn the_fixture_is_what_the_tests_take_it_for() {
    let Some(certs) = Certs::make("the_fixture_is_what_the_tests_take_it_for") else {
        return;
    };
    let verify = |pair: &Pair, ca: &Pair, extra: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(["verify", "-CAfile", &path(&ca.cert)])
            .args(extra)
            .arg(&pair.cert);
        let out = proc::run(&mut cmd, LIMIT, "openssl verify");
        (
            out.status.success(),
            format!("{}{}", proc::stdout(&out), proc::stderr(&out)),
        )
    };
    let ip = ["-purpose", "sslserver", "-verify_ip", "127.0.0.1"];
    for (name, pair) in [("server", &certs.server), ("client", &certs.client)] {
        let purpose = if name == "server" {
            &ip[..]
        } else {
            &["-purpose", "sslclient"][..]
        };
        let (ok, said) = verify(pair, &certs.ca, purpose);
        assert!(ok, "{name}: {said}");
    }
    for host in [
        &["-verify_ip", "::1"][..],
        &["-verify_hostname", "localhost"],
    ] {
        let (ok, said) = verify(&certs.server, &certs.ca, host);
        assert!(ok, "server for {host:?}: {said}");
    }
    let refused = [
        (
            "expired",
            &certs.expired,
            &certs.ca,
            "certificate has expired",
        ),
        (
            "not yet valid",
            &certs.not_yet_valid,
            &certs.ca,
            "certificate is not yet valid",
        ),
        (
            "wrong name",
            &certs.wrong_name,
            &certs.ca,
            "IP address mismatch",
        ),
        (
            "other CA's server",
            &certs.other_server,
            &certs.ca,
            "unable to get local issuer certificate",
        ),
        (
            "other CA's client",
            &certs.other_client,
            &certs.ca,
            "unable to get local issuer certificate",
        ),
    ];
    for (what, pair, ca, why) in refused {
        let (ok, said) = verify(pair, ca, &ip[2..]);
        assert!(!ok && said.contains(why), "{what}: {said}");
    }
    // The other CA's own certificates are fine under the other CA.
    let (ok, said) = verify(&certs.other_server, &certs.other_ca, &ip);
    assert!(ok, "{said}");
    // The key matches the certificate (the same public key in both).
    for pair in [&certs.server, &certs.client, &certs.ca] {
        let of_cert = openssl(
            &["x509", "-noout", "-pubkey", "-in", &path(&pair.cert)],
            None,
        );
        let of_key = openssl(&["pkey", "-pubout", "-in", &path(&pair.key)], None);
        assert_eq!(of_cert, of_key, "{}", pair.cert.display());
    }
    assert_ne!(certs.server.sha256(), certs.other_server.sha256());
}

/// The OpenSSL peers themselves, against each other with the fixture:
/// TLS 1.3, mutual authentication, frames both ways; and a client that
/// trusts the other CA refused. What the sockserv tests below rely on.
#[test]
fn openssl_peers_speak_tls13_with_the_fixture() {
    let Some(certs) = Certs::make("openssl_peers_speak_tls13_with_the_fixture") else {
        return;
    };
    let ca = path(&certs.ca.cert);
    let (mut server, port) = OpensslPeer::server(&certs.server, &["-Verify", "1", "-CAfile", &ca]);
    let mut client = OpensslPeer::client(
        port,
        &certs.ca.cert,
        &[
            "-cert",
            &path(&certs.client.cert),
            "-key",
            &path(&certs.client.key),
        ],
    );
    client.send_frame(b"from the client");
    assert_eq!(
        server.recv_frame().as_deref(),
        Some(&b"from the client"[..])
    );
    server.send_frame(b"from the server");
    assert_eq!(
        client.recv_frame().as_deref(),
        Some(&b"from the server"[..])
    );
    // s_server serves one connection at a time: end this one first.
    drop(client);

    let mut refused = OpensslPeer::client(port, &certs.other_ca.cert, &[]);
    assert_eq!(refused.exit_ok(), Some(false));
    let said = refused.stderr();
    assert!(said.contains("certificate verify failed"), "{said}");
    drop(server);
}

/// tests/py/tls_peer.py under the test's Python, killed when dropped.
struct PyTls {
    guard: ChildGuard,
    seen: Vec<String>,
}

impl PyTls {
    fn spawn(args: &[String]) -> PyTls {
        let script = proc::root().join("tests/py/tls_peer.py");
        let mut cmd = Command::new(common::python());
        // -B: no __pycache__ in the tree; -u: lines as printed; -E -s: no
        // PYTHON* variables or user site-packages.
        cmd.args(["-B", "-u", "-E", "-s"])
            .arg(&script)
            .args(args)
            .args(["--timeout", "30"]);
        PyTls {
            guard: ChildGuard::spawn(&mut cmd),
            seen: Vec::new(),
        }
    }

    /// The rest of the first line that starts with `prefix`.
    fn wait_line(&mut self, prefix: &str) -> String {
        let end = Instant::now() + LIMIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .guard
                .lines
                .as_ref()
                .unwrap()
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no {prefix:?} line ({e}) after {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }

    /// Waits for it to exit 0 with "ok" last; returns all it printed.
    fn expect_ok(mut self) -> Vec<String> {
        let status = self.guard.wait_for(LIMIT);
        let lines = self.guard.lines.take().unwrap();
        let end = Instant::now() + proc::PIPE_LIMIT;
        while let Ok(line) = lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
        assert!(
            status.is_some_and(|s| s.success()) && self.seen.last().is_some_and(|l| l == "ok"),
            "tls_peer.py: {status:?}: {:?}",
            self.seen
        );
        self.seen
    }
}

fn have_python() -> bool {
    Command::new(common::python())
        .args(["-c", "import ssl"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// The Python peer against itself: mutual TLS 1.3, the {sha256}
/// handshake inside, the frame plan echoed; and a client without a
/// certificate refused by a listener that requires one. What the sockserv
/// tests below rely on.
#[test]
fn python_peer_speaks_tls13_and_the_handshake_with_itself() {
    let test = "python_peer_speaks_tls13_and_the_handshake_with_itself";
    if !have_python() {
        return common::skip::required(test, "no python3 with ssl (SOCKSERV_PYTHON)");
    }
    let Some(certs) = Certs::make(test) else {
        return;
    };
    let (ca, key) = (
        path(&certs.ca.cert),
        std::str::from_utf8(common::KEY).unwrap(),
    );
    let listen = |extra: &[&str]| {
        let mut args = s(&["listener", "127.0.0.1:0", "--cert"]);
        args.extend([
            path(&certs.server.cert),
            "--tls-key".into(),
            path(&certs.server.key),
        ]);
        args.extend(s(&["--ca", &ca, "--require-client-cert"]));
        args.extend(s(extra));
        let mut py = PyTls::spawn(&args);
        let addr = py.wait_line("listening ");
        (py, addr)
    };
    let (listener, addr) = listen(&["--authkey", key]);
    let mut args = s(&["client", &addr, "--ca", &ca, "--authkey", key, "--cert"]);
    args.extend([
        path(&certs.client.cert),
        "--tls-key".into(),
        path(&certs.client.key),
    ]);
    let said = PyTls::spawn(&args).expect_ok();
    assert!(said.contains(&"tls TLSv1.3".into()), "{said:?}");
    assert!(said.contains(&"checked 211 echoes".into()), "{said:?}");
    let said = listener.expect_ok();
    assert!(
        said.contains(&"peer organizationName=sockserv tests,commonName=client".into()),
        "{said:?}"
    );

    let (listener, addr) = listen(&["--expect", "refused"]);
    PyTls::spawn(&s(&["client", &addr, "--ca", &ca, "--expect", "refused"])).expect_ok();
    let said = listener.expect_ok();
    assert!(
        said.iter()
            .any(|l| l.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE")),
        "{said:?}"
    );
}

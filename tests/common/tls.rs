//! The TLS peers the tests drive: OpenSSL's `s_server`/`s_client` and
//! tests/py/tls_peer.py (Python's `ssl` with the multiprocessing
//! handshake and framing), each a child process killed when dropped.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use super::certs::Pair;
use super::proc::{self, ChildGuard, Drain};

/// How long any one exchange with a peer may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// An `openssl s_server` or `s_client` child: its stdin is what it sends
/// over TLS, its stdout what it received (`-quiet`: nothing else), its
/// stderr its diagnostics. Killed when dropped.
pub struct OpensslPeer {
    pub guard: ChildGuard,
    stdin: Option<ChildStdin>,
    received: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    stderr: Option<Drain>,
}

impl OpensslPeer {
    pub fn spawn(args: &[String]) -> OpensslPeer {
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
    pub fn server(pair: &Pair, extra: &[&str]) -> (OpensslPeer, u16) {
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
    pub fn client(port: u16, ca: &Path, extra: &[&str]) -> OpensslPeer {
        OpensslPeer::client_version(port, ca, "-tls1_3", extra)
    }

    /// As [`OpensslPeer::client`], speaking only the version `flag` names
    /// (`-tls1_2`, `-tls1_3`).
    pub fn client_version(port: u16, ca: &Path, flag: &str, extra: &[&str]) -> OpensslPeer {
        let mut args: Vec<String> = [
            "s_client",
            "-quiet",
            flag,
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
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    pub fn send_frame(&mut self, payload: &[u8]) {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        self.send(&bytes);
    }

    /// Exactly `n` bytes received over TLS, or `None` if the peer ended
    /// or `LIMIT` passed first.
    pub fn recv_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        let end = Instant::now() + LIMIT;
        while self.pending.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            self.pending.extend(self.received.recv_timeout(left).ok()?);
        }
        Some(self.pending.drain(..n).collect())
    }

    /// One frame received over TLS.
    pub fn recv_frame(&mut self) -> Option<Vec<u8>> {
        let header = self.recv_exact(4)?;
        let n = u32::from_be_bytes(header.try_into().unwrap());
        self.recv_exact(n as usize)
    }

    /// Waits for it to exit (at most `LIMIT`); whether it exited 0.
    pub fn exit_ok(&mut self) -> Option<bool> {
        self.guard.wait_for(LIMIT).map(|s| s.success())
    }

    /// What it said on stderr, once it is gone (killed if need be).
    pub fn stderr(&mut self) -> String {
        self.guard.kill9();
        self.stderr
            .take()
            .map(|d| d.collect_string(proc::PIPE_LIMIT))
            .unwrap_or_default()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// tests/py/tls_peer.py under the test's Python, killed when dropped.
pub struct PyTls {
    pub guard: ChildGuard,
    pub seen: Vec<String>,
}

impl PyTls {
    pub fn spawn(args: &[String]) -> PyTls {
        PyTls::spawn_with(&super::python(), args)
    }

    /// As [`PyTls::spawn`], under the interpreter `python`.
    pub fn spawn_with(python: &str, args: &[String]) -> PyTls {
        let script = proc::root().join("tests/py/tls_peer.py");
        let mut cmd = Command::new(python);
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
    pub fn wait_line(&mut self, prefix: &str) -> String {
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
    pub fn expect_ok(mut self) -> Vec<String> {
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

pub fn have_python() -> bool {
    Command::new(super::python())
        .args(["-c", "import ssl"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

impl PyTls {
    /// Takes every line printed so far into `seen`, without waiting.
    pub fn poll(&mut self) -> &[String] {
        if let Some(lines) = self.guard.lines.as_ref() {
            while let Ok(line) = lines.try_recv() {
                self.seen.push(line);
            }
        }
        &self.seen
    }
}

/// A Python 3.12+ with `ssl` (whose stdlib speaks the {sha256}
/// handshake): `SOCKSERV_PYTHON312`, else python3.12, python3.13 or
/// python3.14 on PATH, else a pyenv version (as tests/python_interop.rs
/// searches).
pub fn modern_python() -> Option<String> {
    let asked = std::env::var("SOCKSERV_PYTHON312").ok();
    let code = "import ssl, sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)";
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    let mut versions: Vec<String> = pyenv
        .and_then(|p| std::fs::read_dir(p.join("versions")).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/python3").display().to_string())
        .collect();
    versions.sort();
    asked
        .into_iter()
        .chain(["python3.12", "python3.13", "python3.14"].map(String::from))
        .chain(versions)
        .find(|p| {
            Command::new(p)
                .args(["-E", "-s", "-c", code])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

//! HAProxy in front of sockserv with TLS, the two ways docs/ describe:
//! terminating TLS (`bind ... ssl crt`) with plaintext + `send-proxy-v2`
//! to the backends, and passing TLS through (`mode tcp`, the PROXY header
//! before TLS). Clients are a sockserv TLS client, then
//! tests/py/tls_peer.py (Python's `ssl`, the {sha256} handshake inside),
//! sending acknowledged frames and reconnecting; two backends, each a child process (this test binary
//! again), one killed with SIGKILL mid-run as in tests/c_api's HAProxy
//! test. Each backend greets a connection with the client address it
//! learnt from the PROXY header and its own name.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::certs::{Certs, Pair};
use common::proc::ChildGuard;
use common::tls::{free_port, have_python, path, s, PyTls};
use common::*;
use sockserv::proto::proxy::ProxyMode;
use sockserv::{Connection, Error, EventConn, EventHandler, Server};

const BACKEND_ENV: &str = "SOCKSERV_TLS_HAPROXY_BACKEND";
const CLIENTS: usize = 4;
const FRAMES: usize = 150;

struct Greeting(String);

impl EventHandler for Greeting {
    fn on_open(&self, conn: &Arc<EventConn>) {
        let _ = conn.send(format!("{} {}", conn.peer_addr(), self.0).as_bytes());
    }
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {}
}

/// A backend, run only as the child (ignored otherwise): `NAME MODE
/// [CERT KEY]` (one a line) in the environment; a keyed server with the PROXY header
/// required, plaintext (or TLS with CERT and KEY), greeting each
/// connection, then echoing. Prints its address; serves until its stdin
/// closes, or two minutes.
#[test]
#[ignore = "the backend child process of the HAProxy tests"]
fn haproxy_backend_child() {
    let Ok(spec) = std::env::var(BACKEND_ENV) else {
        return;
    };
    let words: Vec<&str> = spec.split('\n').collect();
    let (name, mode) = (words[0].to_string(), words[1]);
    let mut config = config_with_key(KEY);
    config.set_proxy_protocol(ProxyMode::Required);
    let mut addr = "tcp://127.0.0.1:0";
    if let [_, _, cert, key] = words[..] {
        config.set_tls_cert_files(cert, key).unwrap();
        addr = "tls://127.0.0.1:0";
    }
    let server = Server::bind(addr, &config).unwrap();
    match mode {
        "threaded" => server
            .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                if conn
                    .send(format!("{} {name}", conn.peer_addr()).as_bytes())
                    .is_ok()
                {
                    echo(conn);
                }
            }))
            .unwrap(),
        _ => server.set_event_handler(Arc::new(Greeting(name))).unwrap(),
    }
    server.start().unwrap();
    println!("ADDR {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(120));
    drop(server);
}

/// A backend child and the host:port it listens on.
fn backend(name: &str, mode: Mode, tls: Option<&Pair>) -> (ChildGuard, String) {
    let mode = if mode == Mode::Threaded {
        "threaded"
    } else {
        "event"
    };
    let mut spec = format!("{name}\n{mode}");
    if let Some(pair) = tls {
        spec.push_str(&format!(
            "\n{}\n{}",
            pair.cert.display(),
            pair.key.display()
        ));
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "haproxy_backend_child",
            "--ignored",
            "--nocapture",
        ])
        .env(BACKEND_ENV, spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let guard = ChildGuard::new(child);
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("the backend's ADDR line");
        if let Some(addr) = line.strip_prefix("ADDR ") {
            break addr
                .trim_start_matches("tcp://")
                .trim_start_matches("tls://")
                .to_string();
        }
    };
    (guard, addr)
}

fn have_haproxy() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// HAProxy with `frontend` (its bind line) balancing over `backends`
/// with send-proxy-v2; returns once it listens on `front`.
fn haproxy(dir: &Path, front: u16, bind: &str, backends: &[&str]) -> ChildGuard {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, hostport)| {
            format!("    server b{i} {hostport} send-proxy-v2 check inter 200ms fall 1 rise 1\n")
        })
        .collect();
    let config = format!(
        "global\n    maxconn 256\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         frontend sockserv\n    {bind}\n    default_backend servers\n\
         backend servers\n    balance roundrobin\n{servers}"
    );
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, &config).unwrap();
    let mut guard = ChildGuard::new(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", front)).is_err() {
        assert!(
            Instant::now() < end && guard.child.try_wait().unwrap().is_none(),
            "haproxy did not start listening:\n{config}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    guard
}

/// Runs `CLIENTS` acknowledged-frame clients against 127.0.0.1:`front`,
/// kills backend b0 once a third of the frames are acknowledged, and
/// checks: every frame acknowledged, every connection greeted with the
/// client's own address, both backends used, and the clients cut off by
/// the kill reconnected to the survivor.
fn clients_through(front: u16, certs: &Certs, mut backends: Vec<ChildGuard>) {
    let ca = path(&certs.ca.cert);
    let key = std::str::from_utf8(KEY).unwrap();
    let target = format!("127.0.0.1:{front}");
    let mut clients: Vec<PyTls> = (0..CLIENTS)
        .map(|_| {
            PyTls::spawn(&s(&[
                "client",
                &target,
                "--ca",
                &ca,
                "--authkey",
                key,
                "--greeting",
                "--acked",
                &FRAMES.to_string(),
                // Slow enough that every client is still under way when
                // a third of all frames are in.
                "--pace",
                "4",
            ]))
        })
        .collect();
    let acked = |lines: &[String]| {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("acked ")?.parse::<usize>().ok())
            .max()
            .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        let total: usize = clients.iter_mut().map(|c| acked(c.poll())).sum();
        if total >= CLIENTS * FRAMES / 3 {
            break;
        }
        assert!(Instant::now() < end, "only {total} frames acknowledged");
        thread::sleep(Duration::from_millis(5));
    }
    let mut killed = backends.remove(0);
    killed.kill9();
    let outputs: Vec<Vec<String>> = clients.into_iter().map(|c| c.expect_ok()).collect();
    let mut greeted_by = [0usize; 2];
    let mut cut_off = 0;
    for lines in &outputs {
        let done = format!("acked {FRAMES} over ");
        assert!(lines.iter().any(|l| l.starts_with(&done)), "{lines:?}");
        let mut after_loss = false;
        for line in lines {
            if line.starts_with("lost connection") {
                after_loss = true;
                cut_off += 1;
            }
            let Some(rest) = line.strip_prefix("greeted ") else {
                continue;
            };
            // "greeted PEER NAME from LOCAL": the backend saw the client.
            let words: Vec<&str> = rest.split(' ').collect();
            assert_eq!(words.len(), 4, "{line}");
            let seen = words[0]
                .trim_start_matches("tcp://")
                .trim_start_matches("tls://");
            assert_eq!(seen, words[3], "the backend saw another address: {line}");
            let b: usize = words[1].trim_start_matches('b').parse().unwrap();
            greeted_by[b] += 1;
            if after_loss {
                assert_eq!(
                    words[1], "b1",
                    "reconnected to the killed backend: {lines:?}"
                );
            }
        }
    }
    assert!(
        greeted_by[0] > 0 && greeted_by[1] > 0,
        "not both backends served: {greeted_by:?}"
    );
    assert!(cut_off > 0, "the kill cut off no client: {outputs:?}");
    eprintln!(
        "haproxy: {} frames acknowledged by {CLIENTS} clients; connections per backend \
         {greeted_by:?}; {cut_off} cut off by the kill and reconnected",
        CLIENTS * FRAMES
    );
    drop(backends);
}

/// A sockserv TLS client through HAProxy on `front`: greeted with its own
/// address by a backend, then an echo.
fn sockserv_client_through(front: u16, certs: &Certs) {
    let mut config = config_with_key(KEY);
    config.set_tls_ca_file(&certs.ca.cert).unwrap();
    let conn = sockserv::connect(&format!("tls://127.0.0.1:{front}"), &config).unwrap();
    conn.set_timeout(Some(Duration::from_secs(10)));
    assert_eq!(conn.tls_info().map(|i| i.version), Some(0x0304));
    let greeting = String::from_utf8(conn.recv_with(|f| f.to_vec()).unwrap()).unwrap();
    let seen = greeting.split(' ').next().unwrap();
    let local = conn
        .local_addr()
        .trim_start_matches("tcp://")
        .trim_start_matches("tls://");
    assert_eq!(
        seen.trim_start_matches("tcp://")
            .trim_start_matches("tls://"),
        local,
        "{greeting}"
    );
    roundtrip(&conn, b"through haproxy");
}

/// HAProxy terminates TLS (TLS 1.3, the fixture's server certificate)
/// and sends plaintext with a PROXY v2 header to the backends, one
/// threaded, one event-mode.
#[test]
fn haproxy_terminating_tls_in_front_of_plaintext_backends() {
    let test = "haproxy_terminating_tls_in_front_of_plaintext_backends";
    if !have_haproxy() {
        return common::skip::required(test, "haproxy is not installed (apt-get install haproxy)");
    }
    if !have_python() {
        return common::skip::required(test, "no python3 with ssl (SOCKSERV_PYTHON)");
    }
    let Some(certs) = Certs::make(test) else {
        return;
    };
    let (b0, a0) = backend("b0", Mode::Threaded, None);
    let (b1, a1) = backend("b1", Mode::Event, None);
    let front = free_port();
    let combined = certs
        .server
        .combined(&certs.dir.path().join("combined.pem"));
    let bind = format!(
        "bind 127.0.0.1:{front} ssl crt {} ssl-min-ver TLSv1.3",
        combined.display()
    );
    let _haproxy = haproxy(certs.dir.path(), front, &bind, &[&a0, &a1]);
    sockserv_client_through(front, &certs);
    clients_through(front, &certs, vec![b0, b1]);
}

/// HAProxy in TCP mode passes TLS through to TLS backends (one threaded,
/// one event-mode) with a PROXY v2 header before TLS, which the backends
/// require: the clients verify the backends' certificate and see their
/// own address in the greeting.
#[test]
fn haproxy_passing_tls_through_to_tls_backends() {
    let test = "haproxy_passing_tls_through_to_tls_backends";
    if !have_haproxy() {
        return common::skip::required(test, "haproxy is not installed (apt-get install haproxy)");
    }
    if !have_python() {
        return common::skip::required(test, "no python3 with ssl (SOCKSERV_PYTHON)");
    }
    let Some(certs) = Certs::make(test) else {
        return;
    };
    let (b0, a0) = backend("b0", Mode::Threaded, Some(&certs.server));
    let (b1, a1) = backend("b1", Mode::Event, Some(&certs.server));
    let front = free_port();
    let bind = format!("bind 127.0.0.1:{front}");
    let _haproxy = haproxy(certs.dir.path(), front, &bind, &[&a0, &a1]);
    sockserv_client_through(front, &certs);
    clients_through(front, &certs, vec![b0, b1]);
}

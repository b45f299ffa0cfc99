//! Memory held for partial frames follows the bytes that arrived, not the
//! length a header declares (issue 10, finding 3): 200 authenticated peers
//! each send a 60 MiB header and 1 KiB of payload to a threaded-mode
//! server, which runs in a child process (this test binary again) so its
//! resident memory is its own.
//!
//! Figures: `cargo test --test hostile_memory -- --nocapture`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{config_with_key, echo_server, settled_rss_kib, KEY};
use sockserv::Connection;
use sockserv::Role;

const PEERS: usize = 200;
const DECLARED: u64 = 60 << 20;
const SENT: usize = 1024;
/// The target, per connection, thread and buffers included.
const LIMIT_KIB: u64 = 128;
const CHILD_ENV: &str = "SOCKSERV_HOSTILE_MEMORY_CHILD";

/// The server side, run only as the child (ignored otherwise): a keyed
/// threaded echo server that prints its address and serves until its stdin
/// closes (bounded).
#[test]
#[ignore = "the child process of partial_frames_cost_what_arrived"]
fn memory_server_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mut config = config_with_key(KEY);
    config.set_max_connections(PEERS + 16).unwrap();
    let server = echo_server("tcp://127.0.0.1:0", &config);
    println!("ADDR {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    // Serves until the parent closes our stdin, or at most two minutes.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(120));
    drop(server);
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn authenticated(addr: &str) -> TcpStream {
    let target: std::net::SocketAddr = addr.trim_start_matches("tcp://").parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.connect(&target.into()).unwrap();
    let conn = Connection::establish(socket, &config_with_key(KEY), Role::Client)
        .map_err(|(e, _)| e)
        .unwrap();
    conn.into_socket().into()
}

#[test]
fn partial_frames_cost_what_arrived() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Guard(
        Command::new(exe)
            .args(["--exact", "memory_server_child", "--ignored", "--nocapture"])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("the child's ADDR line");
        if let Some(addr) = line.strip_prefix("ADDR ") {
            break addr.to_string();
        }
    };
    let pid = child.0.id();
    let idle = settled_rss_kib(pid);

    let mut peers: Vec<TcpStream> = (0..PEERS).map(|_| authenticated(&addr)).collect();
    let connected = settled_rss_kib(pid);

    let header = sockserv::proto::frame::encode_header(DECLARED);
    for p in &mut peers {
        p.write_all(header.as_bytes()).unwrap();
    }
    let after_header = settled_rss_kib(pid);
    for p in &mut peers {
        p.write_all(&[0x5a; SENT]).unwrap();
    }
    let after_payload = settled_rss_kib(pid);

    let per = |kib: u64| kib.saturating_sub(idle) / PEERS as u64;
    let report = format!(
        "threaded mode, {PEERS} authenticated peers, {} MiB declared, {SENT} B sent: \
         server RSS idle {idle} KiB, connected {connected} KiB ({} KiB/conn), \
         after the headers {after_header} KiB ({} KiB/conn), \
         after {SENT} B each {after_payload} KiB ({} KiB/conn)",
        DECLARED >> 20,
        per(connected),
        per(after_header),
        per(after_payload)
    );
    let _ = writeln!(std::io::stderr(), "{report}");
    assert!(per(after_payload) <= LIMIT_KIB, "{report}");
    assert!(per(after_header) <= LIMIT_KIB, "{report}");

    // Still a working server: a frame that completes is echoed whole.
    let mut small = authenticated(&addr);
    small
        .write_all(sockserv::proto::frame::encode_header(3).as_bytes())
        .unwrap();
    small.write_all(b"abc").unwrap();
    small
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut back = [0u8; 7];
    small.read_exact(&mut back).unwrap();
    assert_eq!(&back[4..], b"abc");
    drop(peers);
}

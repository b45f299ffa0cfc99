//! sockserv embedded in real event loops (issue 12): the C programs of
//! `tests/c/loop_{uv,event,poll}.c` (scenarios in `tests/c/loop_common.h`)
//! drive a server with `sockserv_server_start_embedded` from libuv, from
//! libevent level- and edge-triggered (`EV_ET`), and from a plain poll(2)
//! loop, while this test talks to them over loopback and Unix sockets with
//! sockserv's own client. Every program counts its threads in every
//! callback (`/proc/self/task`): an embedded server has none of its own.
//! Also the README's `poll()` loop, compiled as printed, and
//! `c_examples/uv_echo.c` and `event_echo.c` serving and dialing (each
//! other too). Built against Debian's libuv1-dev and libevent-dev
//! (`.ci/run` installs them; `skip::required` without). About 5 s, plus
//! the examples' build.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::proc::{assert_success, lib_dir, root, run};
use common::*;
use sockserv::{connect, Connection};

/// Compiling one program, or a scenario's whole run, takes at most this.
const LIMIT: Duration = Duration::from_secs(60);
/// One expected line from a program.
const LINE: Duration = Duration::from_secs(20);

/// A loop the scenarios run on.
#[derive(Clone, Debug)]
struct Backend {
    name: &'static str,
    exe: PathBuf,
    /// `LOOP_EDGE=1`: libevent with EV_ET.
    edge: bool,
}

/// The loops built against the library under test; a missing loop library
/// is a `skip::required` (CI installs both), named in `missing`.
struct Built {
    backends: Vec<Backend>,
    missing: Vec<String>,
}

fn pkg_config(args: &[&str]) -> Option<Vec<String>> {
    let out = Command::new("pkg-config").args(args).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    })
}

fn compile(lib: &Path, out: &Path, source: &str, package: Option<&str>) -> PathBuf {
    let exe = out.join(source.trim_end_matches(".c"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        "-g",
        "-O1",
    ])
    .arg("-I")
    .arg(root().join("include"))
    .arg("-I")
    .arg(root().join("tests/c"));
    if let Some(p) = package {
        cmd.args(pkg_config(&["--cflags", p]).expect("pkg-config --cflags"));
    }
    cmd.arg(root().join("tests/c").join(source))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lsockserv");
    if let Some(p) = package {
        cmd.args(pkg_config(&["--libs", p]).expect("pkg-config --libs"));
    }
    let output = run(&mut cmd, LIMIT, &cc);
    assert_success(&output, &format!("compiling tests/c/{source}"));
    exe
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let lib = lib_dir();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loops");
        std::fs::create_dir_all(&out).expect("create target/tmp/loops");
        let mut backends = vec![Backend {
            name: "poll",
            exe: compile(&lib, &out, "loop_poll.c", None),
            edge: false,
        }];
        let mut missing = Vec::new();
        if pkg_config(&["--exists", "libuv"]).is_some() {
            backends.push(Backend {
                name: "libuv",
                exe: compile(&lib, &out, "loop_uv.c", Some("libuv")),
                edge: false,
            });
        } else {
            missing.push("libuv (apt-get install libuv1-dev)".to_string());
        }
        if pkg_config(&["--exists", "libevent"]).is_some() {
            let exe = compile(&lib, &out, "loop_event.c", Some("libevent"));
            backends.push(Backend {
                name: "libevent",
                exe: exe.clone(),
                edge: false,
            });
            backends.push(Backend {
                name: "libevent edge-triggered",
                exe,
                edge: true,
            });
        } else {
            missing.push("libevent (apt-get install libevent-dev)".to_string());
        }
        Built { backends, missing }
    })
}

/// The backends to run `test` on, after recording a skip for each loop
/// library that is missing.
fn backends(test: &str) -> &'static [Backend] {
    let b = built();
    for m in &b.missing {
        skip::required(test, &format!("pkg-config finds no {m}"));
    }
    &b.backends
}

/// A running loop program: its stdout lines, waited on with a limit.
struct Prog {
    name: &'static str,
    guard: ChildGuard,
    seen: Vec<String>,
}

impl Prog {
    fn start(backend: &Backend, args: &[&str]) -> Prog {
        let mut cmd = Command::new(&backend.exe);
        cmd.args(args);
        if backend.edge {
            cmd.env("LOOP_EDGE", "1");
        }
        Prog {
            name: backend.name,
            guard: ChildGuard::spawn(&mut cmd),
            seen: Vec::new(),
        }
    }

    /// Waits for the next line starting with `prefix` and returns the rest.
    fn expect(&mut self, prefix: &str) -> String {
        let end = Instant::now() + LINE * time_scale();
        let lines = self.guard.lines.as_ref().expect("spawned");
        loop {
            match lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => "no such line in time",
                        RecvTimeoutError::Disconnected => "the program exited",
                    };
                    panic!(
                        "{}: waiting for {prefix:?}: {why}; its lines so far:\n{}",
                        self.name,
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// The address after "listening ".
    fn listening(&mut self) -> String {
        self.expect("listening ")
    }

    /// Waits for the program to end on its own (its scenario ended from a
    /// callback), checks it exited 0 with no thread but its own, and
    /// returns every line it printed.
    fn finish(mut self) -> Vec<String> {
        let threads = self.expect("threads ");
        assert_eq!(
            threads, "1",
            "{}: sockserv threads exist in embedded mode",
            self.name
        );
        let status = self.guard.wait_for(LINE * time_scale());
        if let Some(lines) = self.guard.lines.as_ref() {
            while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
                self.seen.push(line);
            }
        }
        let status = status.unwrap_or_else(|| {
            panic!(
                "{}: still running after its scenario ended:\n{}",
                self.name,
                self.seen.join("\n")
            )
        });
        assert!(
            status.success(),
            "{}: exited with {status:?}:\n{}",
            self.name,
            self.seen.join("\n")
        );
        std::mem::take(&mut self.seen)
    }
}

fn client(addr: &str) -> Connection {
    let c = connect(addr, &config_with_key(KEY)).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.set_timeout(Some(Duration::from_secs(10)));
    c
}

fn key() -> &'static str {
    std::str::from_utf8(KEY).unwrap()
}

fn recv(c: &Connection) -> Vec<u8> {
    c.recv_with(|f| f.to_vec()).expect("a frame back")
}

#[test]
fn echo_traffic_and_a_thousand_connections_then_shutdown_from_a_callback() {
    const N: usize = 1000;
    assert!(raise_fd_limit() as usize > N + 100, "RLIMIT_NOFILE too low");
    for b in backends("echo_traffic_and_a_thousand_connections") {
        let started = Instant::now();
        let mut p = Prog::start(b, &["serve", "tcp://127.0.0.1:0", "-k", key()]);
        let addr = p.listening();
        let clients: Vec<Connection> = (0..N).map(|_| client(&addr)).collect();
        // Every connection sends before any reads: the loop holds 1,000
        // connections with frames in flight at once.
        for (i, c) in clients.iter().enumerate() {
            c.send(format!("frame {i}").as_bytes()).unwrap();
        }
        for (i, c) in clients.iter().enumerate() {
            assert_eq!(recv(c), format!("frame {i}").as_bytes(), "{}", b.name);
        }
        // Bigger ones, pipelined: many reads and writes per frame.
        let big: Vec<Vec<u8>> = (0..8u8)
            .map(|i| {
                (0..(1usize << 20) + i as usize)
                    .map(|k| (k as u8) ^ i)
                    .collect()
            })
            .collect();
        for f in &big {
            clients[0].send(f).unwrap();
        }
        for f in &big {
            assert!(
                recv(&clients[0]) == *f,
                "{}: a 1 MiB frame came back wrong",
                b.name
            );
        }
        clients[1].send(b"quit").unwrap();
        let lines = p.finish();
        assert!(
            lines
                .iter()
                .any(|l| l == &format!("opened {N} closed {N} timed-out 0")),
            "{}: every connection opened and closed once: {lines:?}",
            b.name
        );
        eprintln!("{}: 1,000 connections in {:?}", b.name, started.elapsed());
    }
}

#[test]
fn a_dialer_reconnects_to_a_server_that_restarts() {
    for b in backends("a_dialer_reconnects_to_a_server_that_restarts") {
        let dir = TempDir::new("loops-dial");
        let addr = format!("unix://{}", dir.file("s.sock"));
        let config = config_with_key(KEY);
        let handler = Arc::new(EventEcho::default());
        let mut server = Some(event_server(&addr, &config, handler.clone()));
        let mut p = Prog::start(b, &["dial", &addr, "3", "-k", key()]);
        p.expect("echo 1");
        for round in 2..=3 {
            // The server goes away (freeing it closes the connection and
            // removes the socket file): the dialer's connection ends, and
            // its redials fail while nobody listens.
            drop(server.take());
            p.expect("down ");
            p.expect("dial error ");
            server = Some(event_server(&addr, &config, handler.clone()));
            // Back: the dialer reconnects on its own, within its backoff
            // (50 ms doubling to 400 ms), and the new connection works.
            p.expect(&format!("echo {round}"));
        }
        let lines = p.finish();
        drop(server);
        assert!(
            lines.iter().any(|l| l.starts_with("opens 3 echoes 3 ")),
            "{}: {lines:?}",
            b.name
        );
        assert_eq!(
            handler.opened.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "{}: one connection per server run",
            b.name
        );
    }
}

#[test]
fn backpressure_with_a_peer_that_does_not_read() {
    const QUEUE: usize = 256 * 1024;
    const BLOCK: usize = 64 * 1024;
    for b in backends("backpressure_with_a_peer_that_does_not_read") {
        let queue = QUEUE.to_string();
        let mut p = Prog::start(
            b,
            &["serve", "tcp://127.0.0.1:0", "-k", key(), "-q", &queue],
        );
        let addr = p.listening();
        let reader = client(&addr);
        let flooded = client(&addr);
        // It asks for a flood and reads nothing: the server queues 64 KiB
        // frames until sockserv refuses (the C side checks that the refusal
        // is SOCKSERV_ERR_WOULD_BLOCK and came before 4,096 frames).
        flooded.send(b"flood").unwrap();
        let queued: usize = p.expect("flood queued ").parse().unwrap();
        assert!(queued >= 1, "{}: nothing was queued", b.name);
        // What was taken: the queue limit (plus the frame that crossed
        // it) and what the kernel's socket buffers swallowed meanwhile.
        assert!(
            queued * BLOCK <= QUEUE + BLOCK + 32 * 1024 * 1024,
            "{}: {queued} frames of 64 KiB queued for a peer that does not read",
            b.name
        );
        // The loop is not stuck behind the backed-up peer.
        for i in 0..20u32 {
            reader.send(&i.to_be_bytes()).unwrap();
            assert_eq!(recv(&reader), i.to_be_bytes(), "{}", b.name);
        }
        // Nothing that was accepted is lost: every frame arrives, in order.
        for n in 0..queued {
            let f = recv(&flooded);
            assert_eq!(f.len(), BLOCK, "{}: frame {n}", b.name);
            assert!(
                f.iter().all(|&x| x == (n & 0xff) as u8),
                "{}: frame {n}",
                b.name
            );
        }
        reader.send(b"quit").unwrap();
        p.finish();
    }
}

#[test]
fn idle_timeouts_fire_with_no_traffic() {
    const IDLE_MS: u64 = 300;
    for b in backends("idle_timeouts_fire_with_no_traffic") {
        let idle = IDLE_MS.to_string();
        let mut p = Prog::start(b, &["serve", "tcp://127.0.0.1:0", "-k", key(), "-i", &idle]);
        let addr = p.listening();
        let started = Instant::now();
        let silent = client(&addr);
        // Nothing is sent: only sockserv_server_loop_timeout_ms's deadline
        // wakes the loop, and the connection is closed for it.
        let quiet: u64 = p
            .expect("timed out after ")
            .trim_end_matches(" ms")
            .parse()
            .unwrap();
        assert!(quiet + 5 >= IDLE_MS, "{}: closed after {quiet} ms", b.name);
        assert!(
            silent.recv_with(|f| f.len()).is_err(),
            "{}: the timed-out connection still delivers",
            b.name
        );
        assert!(started.elapsed() < Duration::from_secs(5) * time_scale());
        let other = client(&addr);
        other.send(b"quit").unwrap();
        let lines = p.finish();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("opened 2 closed 2 timed-out 1")),
            "{}: {lines:?}",
            b.name
        );
    }
}

#[test]
fn a_silent_peer_is_cut_at_the_handshake_timeout() {
    const HANDSHAKE_MS: u64 = 300;
    for b in backends("a_silent_peer_is_cut_at_the_handshake_timeout") {
        let limit = HANDSHAKE_MS.to_string();
        let mut p = Prog::start(
            b,
            &["serve", "tcp://127.0.0.1:0", "-k", key(), "-h", &limit],
        );
        let addr = p.listening();
        // Connects and never answers the challenge: only the deadline from
        // sockserv_server_loop_timeout_ms ends it, no traffic.
        let started = Instant::now();
        let mut silent = std::net::TcpStream::connect(addr.trim_start_matches("tcp://")).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let end = std::io::Read::read_to_end(&mut silent, &mut got);
        let took = started.elapsed();
        assert!(end.is_ok(), "{}: no end of stream: {end:?}", b.name);
        assert!(!got.is_empty(), "{}: no challenge was sent", b.name);
        assert!(
            took >= Duration::from_millis(HANDSHAKE_MS - 5)
                && took
                    < Duration::from_millis(HANDSHAKE_MS) + Duration::from_secs(2) * time_scale(),
            "{}: cut after {took:?}",
            b.name
        );
        let other = client(&addr);
        other.send(b"quit").unwrap();
        let lines = p.finish();
        assert!(
            lines.iter().any(|l| l.starts_with("opened 1 closed 1 ")),
            "{}: the silent peer never opened: {lines:?}",
            b.name
        );
    }
}

#[test]
fn a_callback_closes_another_connection() {
    for b in backends("a_callback_closes_another_connection") {
        let mut p = Prog::start(b, &["serve", "tcp://127.0.0.1:0", "-k", key()]);
        let addr = p.listening();
        let a = client(&addr);
        let victim = client(&addr);
        victim.send(b"victim").unwrap();
        assert_eq!(recv(&victim), b"victim");
        // A's frame makes its callback close the victim's connection.
        a.send(b"close-other").unwrap();
        assert_eq!(recv(&a), b"closed");
        assert_eq!(
            p.expect("victim closed "),
            "0",
            "{}: on_close(SOCKSERV_OK)",
            b.name
        );
        assert!(
            victim.recv_with(|f| f.len()).is_err(),
            "{}: the closed connection still delivers",
            b.name
        );
        // A goes on.
        a.send(b"after").unwrap();
        assert_eq!(recv(&a), b"after");
        a.send(b"quit").unwrap();
        p.finish();
    }
}

#[test]
fn a_server_and_a_dialer_to_it_in_one_loop() {
    for b in backends("a_server_and_a_dialer_to_it_in_one_loop") {
        let p = Prog::start(b, &["self", "300", "-k", key()]);
        let lines = p.finish();
        assert!(
            lines.iter().any(|l| l == "echoed 300"),
            "{}: {lines:?}",
            b.name
        );
    }
}

/// The README's `poll()` loop (its "In your own event loop" section), as
/// printed there, serving an echo until a frame says "quit".
#[test]
fn the_readme_poll_loop_serves_and_stops_from_a_callback() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let block = readme
        .split("```c\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|b| b.contains("serve_in_poll_loop"))
        .expect("a ```c block with serve_in_poll_loop in README.md");
    assert!(
        block.lines().count() <= 30,
        "the README's loop is meant to be short"
    );
    let program = format!(
        "#define _POSIX_C_SOURCE 200809L\n#include <stdio.h>\n#include <string.h>\n{block}\n{MAIN}"
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loops");
    std::fs::create_dir_all(&out).unwrap();
    let source = out.join("readme_poll_loop.c");
    std::fs::write(&source, program).unwrap();
    let lib = lib_dir();
    let exe = out.join("readme_poll_loop");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = run(
        Command::new(&cc)
            .args([
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-Wpedantic",
                "-Werror",
                "-I",
            ])
            .arg(root().join("include"))
            .arg(&source)
            .arg("-o")
            .arg(&exe)
            .arg("-L")
            .arg(&lib)
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-lsockserv"),
        LIMIT,
        &cc,
    );
    assert_success(&output, "compiling the README's poll loop");
    let mut child = ChildGuard::spawn(Command::new(&exe).arg(key()));
    let lines = child.lines.take().unwrap();
    let first = lines.recv_timeout(LINE).expect("listening line");
    let addr = first
        .strip_prefix("listening ")
        .expect("listening ADDR")
        .to_string();
    let clients: Vec<Connection> = (0..10).map(|_| client(&addr)).collect();
    for (i, c) in clients.iter().enumerate() {
        c.send(format!("{i}").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(recv(c), format!("{i}").as_bytes());
    }
    clients[3].send(b"quit").unwrap();
    let status = child.wait_for(LINE).expect("the program ends after quit");
    assert!(status.success(), "{status:?}");
    let last = lines.recv_timeout(LINE).expect("its last line");
    assert_eq!(
        last, "closed 10",
        "every connection closed once, by the shutdown"
    );
}

/// main() for the README's loop: an echo server; "quit" shuts it down from
/// the callback, and serve_in_poll_loop must then return SOCKSERV_OK.
const MAIN: &str = r#"
static int closed;
static sockserv_server *srv;

static void on_frame(void *ud, sockserv_conn *c, const uint8_t *data, size_t len)
{
    (void)ud;
    if (len == 4 && memcmp(data, "quit", 4) == 0)
        sockserv_server_shutdown(srv);
    else
        sockserv_conn_send(c, data, len);
}

static void on_close(void *ud, sockserv_conn *c, sockserv_result reason)
{
    (void)ud;
    (void)c;
    closed += reason == SOCKSERV_ERR_SHUTDOWN;
}

int main(int argc, char **argv)
{
    sockserv_config *cfg;
    char addr[SOCKSERV_ADDRSTRLEN];
    size_t n;
    sockserv_result rc;
    if (argc != 2 || sockserv_config_new(&cfg) ||
        sockserv_config_set_auth_key(cfg, (const uint8_t *)argv[1], strlen(argv[1])) ||
        sockserv_server_new("tcp://127.0.0.1:0", cfg, &srv) ||
        sockserv_server_set_event_handlers(srv, NULL, on_frame, on_close, NULL) ||
        sockserv_server_local_addr(srv, addr, sizeof addr, &n))
        return 2;
    sockserv_config_free(cfg);
    printf("listening %s\n", addr);
    fflush(stdout);
    rc = serve_in_poll_loop(srv);
    sockserv_server_free(srv);
    printf("closed %d\n", closed);
    return rc == SOCKSERV_OK ? 0 : 1;
}
"#;

/// c_examples/uv_echo.c and event_echo.c, built by the examples' Makefile:
/// each serves and dials itself in one loop (event_echo edge-triggered
/// too), and each dials the other's server across processes.
#[test]
fn the_loop_examples_serve_and_dial() {
    let b = built();
    if !b.missing.is_empty() {
        for m in &b.missing {
            skip::required(
                "the_loop_examples_serve_and_dial",
                &format!("pkg-config finds no {m}"),
            );
        }
        return;
    }
    let examples = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loops/examples");
    let make = run(
        common::proc::make_examples(&lib_dir(), &examples).arg("all"),
        LIMIT * 3,
        "make -C c_examples all",
    );
    assert_success(&make, "building c_examples");
    let exe = |name: &str| examples.join(name);
    let expect_run = |mut cmd: Command, what: &str| {
        let out = run(cmd.env("SOCKSERV_KEY", key()), LIMIT, what);
        assert_success(&out, what);
        let text = common::proc::stdout(&out);
        assert!(
            text.starts_with("listening on tcp://127.0.0.1:"),
            "{what}: {text}"
        );
        for i in 0..5 {
            assert!(
                text.contains(&format!("echoed: frame {i}\n")),
                "{what}: {text}"
            );
        }
        assert!(text.ends_with("done\n"), "{what}: {text}");
    };
    for (name, args) in [
        ("uv_echo", &["-n", "5"][..]),
        ("event_echo", &["-n", "5"][..]),
        ("event_echo", &["-e", "-n", "5"][..]),
    ] {
        let mut cmd = Command::new(exe(name));
        cmd.args(args);
        expect_run(cmd, &format!("{name} {args:?}"));
    }
    // Across processes and libraries: one serves only, the other dials it.
    for (server, client) in [("uv_echo", "event_echo"), ("event_echo", "uv_echo")] {
        let mut serving = Prog::start(
            &Backend {
                name: "example",
                exe: exe(server),
                edge: false,
            },
            &["-k", key(), "-n", "0"],
        );
        let addr = serving.expect("listening on ");
        let mut cmd = Command::new(exe(client));
        cmd.args(["-n", "5", "tcp://127.0.0.1:0", &addr]);
        expect_run(cmd, &format!("{client} dialing {server}"));
        serving.guard.signal(libc::SIGTERM);
        let status = serving.guard.wait_for(LINE).expect("it stops on SIGTERM");
        assert!(status.success(), "{server} -n 0: {status:?}");
    }
}

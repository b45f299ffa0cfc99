//! Helpers shared by the integration tests: servers on loopback with an
//! echo handler, raw peers for hostile input, bounded waits.
#![allow(dead_code)]

pub mod certs;
pub mod proc;
pub mod relay;
pub mod skip;
pub mod tls;
pub mod tunnel;

#[allow(unused_imports)]
pub use proc::{ChildGuard, TempDir};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockserv::{Config, Connection, ErrorKind, Server};

pub const KEY: &[u8] = b"correct horse battery staple";

pub fn config_with_key(key: &[u8]) -> Config {
    let mut c = Config::default();
    c.set_key(key).unwrap();
    c.set_handshake_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// Echoes every frame back until the peer closes or errs.
pub fn echo(conn: &Arc<Connection>) {
    loop {
        let frame = match conn.recv_with(|f| f.to_vec()) {
            Ok(f) => f,
            Err(_) => return,
        };
        if conn.send(&frame).is_err() {
            return;
        }
    }
}

/// A started echo server on `addr` with `config`.
pub fn echo_server(addr: &str, config: &Config) -> Server {
    let server = Server::bind(addr, config).unwrap();
    server.set_handler(Arc::new(echo)).unwrap();
    server.start().unwrap();
    server
}

/// Sends a frame and checks that the same bytes come back.
pub fn roundtrip(conn: &Connection, payload: &[u8]) {
    conn.send(payload).unwrap();
    let back = conn.recv_with(|f| f.to_vec()).unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
}

/// The TCP address of a server, as host:port for std sockets.
pub fn tcp_target(server: &Server) -> String {
    server.local_addr().trim_start_matches("tcp://").to_string()
}

/// A raw TCP socket to the server, for writing hostile bytes.
pub fn raw(server: &Server) -> TcpStream {
    let s = TcpStream::connect(tcp_target(server)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one frame from a raw socket (for raw peers speaking the protocol).
pub fn raw_read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    let n = i32::from_be_bytes(header);
    assert!(n >= 0, "raw reader only takes short headers");
    let mut payload = vec![0u8; n as usize];
    s.read_exact(&mut payload)?;
    Ok(payload)
}

pub fn raw_write_frame(s: &mut TcpStream, payload: &[u8]) {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    s.write_all(&bytes).unwrap();
}

/// How much slower than a plain run this one is allowed to be: time
/// bounds that assert a documented promise (with their own stated margin)
/// are multiplied by `SOCKSERV_TIME_SCALE` (default 1; .ci/sanitizers sets
/// it, since ASan and TSan run the code 2 to 15 times slower).
pub fn time_scale() -> u32 {
    std::env::var("SOCKSERV_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// Waits until `cond` holds, polling, for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

pub fn kind<T>(r: sockserv::Result<T>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

/// Threads of this process.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Which driver a test's server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Threaded,
    Event,
}

pub type Errors = Arc<std::sync::Mutex<Vec<sockserv::Error>>>;

/// Event-mode echo that records each connection's closing error.
struct RecordingEvents(Errors);

impl sockserv::EventHandler for RecordingEvents {
    fn on_open(&self, _: &Arc<sockserv::EventConn>) {}
    fn on_frame(&self, conn: &Arc<sockserv::EventConn>, frame: &[u8]) {
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<sockserv::EventConn>, reason: Option<&sockserv::Error>) {
        if let Some(e) = reason {
            self.0.lock().unwrap().push(e.clone());
        }
    }
}

/// An echo server in `mode` that records the error each connection ended
/// with.
pub fn recording_echo_server(config: &Config, mode: Mode) -> (Server, Errors) {
    recording_echo_server_on("tcp://127.0.0.1:0", config, mode)
}

/// [`recording_echo_server`] on `addr` (e.g. a `tls://` one).
pub fn recording_echo_server_on(addr: &str, config: &Config, mode: Mode) -> (Server, Errors) {
    let errors: Errors = Arc::default();
    let server = Server::bind(addr, config).unwrap();
    let seen = errors.clone();
    match mode {
        Mode::Threaded => server
            .set_handler(Arc::new(move |conn: &Arc<Connection>| loop {
                match conn.recv_with(|f| f.to_vec()) {
                    Ok(frame) => {
                        if conn.send(&frame).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        seen.lock().unwrap().push(e);
                        return;
                    }
                }
            }))
            .unwrap(),
        Mode::Event => server
            .set_event_handler(Arc::new(RecordingEvents(seen)))
            .unwrap(),
    }
    server.start().unwrap();
    (server, errors)
}

/// A raw TCP socket that has passed the handshake with `config`'s key, for
/// sending hostile frames after authentication.
pub fn authenticated_raw(server: &Server, config: &Config) -> TcpStream {
    let target: std::net::SocketAddr = tcp_target(server).parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.connect(&target.into()).unwrap();
    let conn = Connection::establish(socket, config, sockserv::proto::handshake::Role::Client)
        .map_err(|(e, _)| e)
        .unwrap();
    let stream: TcpStream = conn.into_socket().into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A client that keeps exchanging frames with an echo server on its own
/// thread until stopped, to show that other connections go on.
pub struct Canary {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Canary {
    pub fn start(server: &Server, config: &Config) -> Canary {
        let conn = sockserv::connect(server.local_addr(), config).unwrap();
        conn.set_timeout(Some(Duration::from_secs(10)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0u64;
            while !flag.load(std::sync::atomic::Ordering::SeqCst)
                && n < 1_000_000
                && started.elapsed() < Duration::from_secs(120)
            {
                let payload = n.to_be_bytes();
                conn.send(&payload).map_err(|e| e.to_string())?;
                let back = conn.recv_with(|f| f.to_vec()).map_err(|e| e.to_string())?;
                if back != payload {
                    return Err(format!("frame {n} came back wrong"));
                }
                n += 1;
            }
            Ok(n)
        });
        Canary {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it and returns how many frames it exchanged without a fault.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let result = self.thread.take().unwrap().join().unwrap();
        result.unwrap_or_else(|e| panic!("the canary connection failed: {e}"))
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An event-mode echo handler that counts opens and closes and records
/// every close reason.
#[derive(Default)]
pub struct EventEcho {
    pub opened: std::sync::atomic::AtomicUsize,
    pub closed: std::sync::atomic::AtomicUsize,
    pub reasons: std::sync::Mutex<Vec<Option<sockserv::Error>>>,
}

impl sockserv::EventHandler for EventEcho {
    fn on_open(&self, _: &Arc<sockserv::EventConn>) {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn on_frame(&self, conn: &Arc<sockserv::EventConn>, frame: &[u8]) {
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<sockserv::EventConn>, reason: Option<&sockserv::Error>) {
        self.reasons.lock().unwrap().push(reason.cloned());
        self.closed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A started event-mode server with `handler` on `addr`.
pub fn event_server(
    addr: &str,
    config: &Config,
    handler: Arc<dyn sockserv::EventHandler>,
) -> Server {
    let server = Server::bind(addr, config).unwrap();
    server.set_event_handler(handler).unwrap();
    server.start().unwrap();
    server
}

/// Raises the soft limit on open files to the hard limit (tests that hold
/// thousands of sockets).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the rlimit struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// What a [`counting_echo_server`] saw: every frame delivered to its
/// handler (counted, and kept when it starts with [`EVIL`]), and the error
/// each connection ended with.
#[derive(Default)]
pub struct Seen {
    pub frames: std::sync::atomic::AtomicU64,
    pub evil: std::sync::Mutex<Vec<Vec<u8>>>,
    pub opened: std::sync::atomic::AtomicU64,
    pub errors: std::sync::Mutex<Vec<sockserv::Error>>,
    /// Connections the handler holds now (threaded: handler running;
    /// event: between `on_open` and `on_close`), and the most at once.
    pub live: std::sync::atomic::AtomicU64,
    pub peak: std::sync::atomic::AtomicU64,
}

/// The prefix of every frame a hostile peer tries to get to a handler.
pub const EVIL: &[u8] = b"EVIL";

impl Seen {
    fn frame(&self, frame: &[u8]) {
        self.frames
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if frame.starts_with(EVIL) {
            self.evil.lock().unwrap().push(frame.to_vec());
        }
    }

    fn enter(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.live.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
    }

    fn leave(&self) {
        self.live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The most connections the handler held at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn frames(&self) -> u64 {
        self.frames.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn error_count(&self) -> usize {
        self.errors.lock().unwrap().len()
    }

    /// Waits for the error after the first `before`, and returns it.
    pub fn next_error(&self, before: usize) -> sockserv::Error {
        assert!(
            wait_until(Duration::from_secs(10), || self.error_count() > before),
            "the server recorded no error"
        );
        self.errors.lock().unwrap()[before].clone()
    }
}

struct CountingEvents(Arc<Seen>);

impl sockserv::EventHandler for CountingEvents {
    fn on_open(&self, _: &Arc<sockserv::EventConn>) {
        self.0
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.enter();
    }
    fn on_frame(&self, conn: &Arc<sockserv::EventConn>, frame: &[u8]) {
        self.0.frame(frame);
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<sockserv::EventConn>, reason: Option<&sockserv::Error>) {
        self.0.leave();
        if let Some(e) = reason {
            self.0.errors.lock().unwrap().push(e.clone());
        }
    }
}

/// An echo server in `mode` on 127.0.0.1 that counts what reaches its
/// handler: no frame of a peer that failed the handshake ever may.
pub fn counting_echo_server(config: &Config, mode: Mode) -> (Server, Arc<Seen>) {
    let seen: Arc<Seen> = Arc::default();
    let server = Server::bind("tcp://127.0.0.1:0", config).unwrap();
    let s = seen.clone();
    match mode {
        Mode::Threaded => server
            .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                s.opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                s.enter();
                struct Leave<'a>(&'a Seen);
                impl Drop for Leave<'_> {
                    fn drop(&mut self) {
                        self.0.leave();
                    }
                }
                let _leave = Leave(&s);
                loop {
                    match conn.recv_with(|f| {
                        s.frame(f);
                        f.to_vec()
                    }) {
                        Ok(frame) => {
                            if conn.send(&frame).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            s.errors.lock().unwrap().push(e);
                            return;
                        }
                    }
                }
            }))
            .unwrap(),
        Mode::Event => server
            .set_event_handler(Arc::new(CountingEvents(s)))
            .unwrap(),
    }
    server.start().unwrap();
    (server, seen)
}

/// The Python interpreter for helper scripts (`SOCKSERV_PYTHON`, default
/// `python3`).
pub fn python() -> String {
    std::env::var("SOCKSERV_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    rss_kib_in("/proc/self/status")
}

/// The resident memory of process `pid` (a child server), in KiB.
pub fn rss_kib_of(pid: u32) -> u64 {
    rss_kib_in(&format!("/proc/{pid}/status"))
}

fn rss_kib_in(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("VmRSS in {status}"))
}

/// Process `pid`'s RSS in KiB once it stopped changing (three equal
/// readings 100 ms apart), at most 15 s.
pub fn settled_rss_kib(pid: u32) -> u64 {
    let end = Instant::now() + Duration::from_secs(15);
    let mut last = rss_kib_of(pid);
    let mut same = 0;
    while Instant::now() < end && same < 3 {
        std::thread::sleep(Duration::from_millis(100));
        let now = rss_kib_of(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Frame `seq` of client `client`, into `out`: its size drawn log-uniformly
/// from 0 to `max` bytes (each power-of-two size class equally often), its
/// bytes pseudo-random; the same arguments always give the same frame, so
/// a receiver can tell a lost, corrupted or reordered frame from the right
/// one by making the one it expects.
pub fn test_frame(client: u32, seq: u32, max: usize, out: &mut Vec<u8>) {
    // splitmix64, seeded by the frame's identity.
    let mut state = (u64::from(client) << 32) | u64::from(seq);
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let classes = usize::BITS - max.leading_zeros(); // max in [2^(k-1), 2^k)
    let class = (next() % u64::from(classes + 1)) as u32;
    let size = match class {
        0 => 0,
        c if c == classes => max,
        c => {
            let low = 1usize << (c - 1);
            low + (next() as usize % low)
        }
    };
    out.clear();
    while out.len() < size {
        out.extend_from_slice(&next().to_le_bytes());
    }
    out.truncate(size);
}

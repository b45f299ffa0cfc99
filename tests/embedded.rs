//! Embedded mode from Rust: a server driven by the test's own loop (a mio
//! poll watching `loop_fd`, edge-triggered), with no sockserv thread;
//! callbacks on the loop's thread; shutdown from a callback; the
//! reentrancy and state errors. The C loops (poll, epoll level- and
//! edge-triggered) are tests/c/embed_*.c.

mod common;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use common::*;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sockserv::{connect, Config, Error, ErrorKind, EventConn, EventHandler, Server};

/// Runs the caller's side of the rule: wait on the fd (edge-triggered, at
/// most the timeout), process, until `done` or `limit`. Returns the last
/// result of process.
fn drive(server: &Server, limit: Duration, mut done: impl FnMut() -> bool) -> sockserv::Result<()> {
    let mut poll = Poll::new().unwrap();
    let fd: RawFd = server.loop_fd().unwrap();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(4);
    let end = Instant::now() + limit;
    while Instant::now() < end && !done() {
        // Capped by the limit only: a wake-up the library failed to give
        // (or a timeout it failed to set) stalls the test.
        let timeout = server.loop_timeout()?;
        let left = end.saturating_duration_since(Instant::now());
        poll.poll(&mut events, Some(timeout.map_or(left, |t| t.min(left))))
            .unwrap();
        server.process()?;
    }
    Ok(())
}

/// Threads of this process that sockserv started (they are all named
/// "sockserv-..."); the harness's own come and go beside them. The C
/// tests count every thread of their single-threaded processes.
fn sockserv_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("sockserv"))
        .count()
}

/// The tests count sockserv's threads: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Default)]
struct Recorder {
    opened: AtomicUsize,
    frames: AtomicUsize,
    closed: Mutex<Vec<Option<ErrorKind>>>,
    threads: Mutex<Vec<ThreadId>>,
    /// Set: the first frame "stop" shuts this server down from on_frame.
    server: OnceLock<Arc<Server>>,
    reentered: Mutex<Option<ErrorKind>>,
}

impl EventHandler for Recorder {
    fn on_open(&self, _: &Arc<EventConn>) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
    }
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        self.frames.fetch_add(1, Ordering::SeqCst);
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        if frame == b"stop" {
            let server = self.server.get().unwrap();
            *self.reentered.lock().unwrap() = server.process().err().map(|e| e.kind());
            server.shutdown();
        }
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, reason: Option<&Error>) {
        self.closed.lock().unwrap().push(reason.map(Error::kind));
    }
}

#[test]
fn echo_from_the_callers_loop_with_no_thread_and_shutdown_from_a_callback() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let handler = Arc::new(Recorder::default());
    let server = Arc::new(Server::bind("tcp://127.0.0.1:0", &Config::default()).unwrap());
    assert_eq!(kind(server.process()), ErrorKind::InvalidState);
    assert_eq!(kind(server.loop_fd()), ErrorKind::InvalidState);
    server.set_event_handler(handler.clone()).unwrap();
    let _ = handler.server.set(server.clone());
    let before = sockserv_threads();
    server.start_embedded().unwrap();
    assert_eq!(
        sockserv_threads(),
        before,
        "start_embedded started a thread"
    );
    assert_eq!(kind(server.start()), ErrorKind::InvalidState);
    assert_eq!(kind(server.start_embedded()), ErrorKind::InvalidState);

    let addr = server.local_addr().to_string();
    let client = std::thread::spawn(move || {
        let conns: Vec<_> = (0..3)
            .map(|_| connect(&addr, &Config::default()).unwrap())
            .collect();
        for (i, c) in conns.iter().enumerate() {
            for n in 0..50 {
                let msg = format!("{i}:{n}");
                c.send(msg.as_bytes()).unwrap();
                assert_eq!(c.recv_with(|f| f.to_vec()).unwrap(), msg.as_bytes());
            }
        }
        conns[0].send(b"stop").unwrap();
        // The others are closed by the shutdown: each sees the end.
        for c in &conns[1..] {
            assert!(c.recv_with(|f| f.to_vec()).is_err());
        }
    });
    let result = drive(&server, Duration::from_secs(20), || false);
    assert_eq!(result.map_err(|e| e.kind()), Err(ErrorKind::Shutdown));
    client.join().unwrap();
    assert_eq!(handler.opened.load(Ordering::SeqCst), 3);
    assert_eq!(handler.frames.load(Ordering::SeqCst), 151);
    let closed = handler.closed.lock().unwrap().clone();
    assert_eq!(closed, vec![Some(ErrorKind::Shutdown); 3]);
    assert_eq!(
        *handler.reentered.lock().unwrap(),
        Some(ErrorKind::InvalidState),
        "process from inside a callback must refuse"
    );
    let me = std::thread::current().id();
    assert!(handler.threads.lock().unwrap().iter().all(|t| *t == me));
    // Shut down for good: every later call says so.
    assert_eq!(kind(server.process()), ErrorKind::Shutdown);
    assert_eq!(kind(server.loop_timeout()), ErrorKind::Shutdown);
    assert_eq!(sockserv_threads(), before);
}

#[test]
fn start_embedded_needs_event_handlers_and_timeouts_fire_with_no_traffic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = Server::bind("tcp://127.0.0.1:0", &Config::default()).unwrap();
    assert_eq!(kind(server.start_embedded()), ErrorKind::InvalidState);

    let mut config = Config::default();
    config.set_idle_timeout(Some(Duration::from_millis(300)));
    let handler = Arc::new(Recorder::default());
    let server = Server::bind("tcp://127.0.0.1:0", &config).unwrap();
    server.set_event_handler(handler.clone()).unwrap();
    server.start_embedded().unwrap();
    assert_eq!(server.loop_timeout().unwrap(), Some(Duration::ZERO));
    server.process().unwrap();
    assert_eq!(server.loop_timeout().unwrap(), None, "nothing to wait for");
    let _client = connect(server.local_addr(), &Config::default()).unwrap();
    let started = Instant::now();
    drive(&server, Duration::from_secs(10), || {
        !handler.closed.lock().unwrap().is_empty()
    })
    .unwrap();
    let took = started.elapsed();
    assert_eq!(
        *handler.closed.lock().unwrap(),
        vec![Some(ErrorKind::TimedOut)]
    );
    assert!(took >= Duration::from_millis(250), "{took:?}");
}

/// The dialing side of an unbound embedded engine: says hello on open.
#[derive(Default)]
struct Dialing {
    frames: Mutex<Vec<Vec<u8>>>,
    threads: Mutex<Vec<ThreadId>>,
}

impl EventHandler for Dialing {
    fn on_open(&self, conn: &Arc<EventConn>) {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        conn.send(b"hello").unwrap();
    }
    fn on_frame(&self, _: &Arc<EventConn>, frame: &[u8]) {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        self.frames.lock().unwrap().push(frame.to_vec());
    }
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {}
}

#[test]
fn an_unbound_embedded_engine_dials_and_redials_from_the_callers_loop() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // A port with nobody on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("tcp://127.0.0.1:{port}");
    let handler = Arc::new(Dialing::default());
    let engine = Server::unbound(&Config::default()).unwrap();
    engine.set_event_handler(handler.clone()).unwrap();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = reports.clone();
    engine.set_dial_error_handler(Some(Arc::new(
        move |_: &Arc<sockserv::Dialer>, e: &Error| {
            sink.lock()
                .unwrap()
                .push((std::thread::current().id(), e.kind()));
        },
    )));
    let before = sockserv_threads();
    engine.start_embedded().unwrap();
    assert_eq!(sockserv_threads(), before);
    let dialer = engine.dial(&target, None).unwrap();
    dialer
        .set_reconnect(Duration::from_millis(50), Duration::from_millis(200))
        .unwrap();
    drive(&engine, Duration::from_secs(10), || {
        reports.lock().unwrap().len() >= 2
    })
    .unwrap();
    // Refused, and waiting for the backoff: a deadline, not "now", not "never".
    let timeout = engine.loop_timeout().unwrap();
    assert!(
        matches!(timeout, Some(t) if t <= Duration::from_millis(200)),
        "{timeout:?}"
    );
    assert_eq!(sockserv_threads(), before);
    // The peer comes up: the dialer's next try connects.
    let echo = event_server(&target, &Config::default(), Arc::new(EventEcho::default()));
    drive(&engine, Duration::from_secs(10), || {
        !handler.frames.lock().unwrap().is_empty()
    })
    .unwrap();
    assert_eq!(*handler.frames.lock().unwrap(), vec![b"hello".to_vec()]);
    let me = std::thread::current().id();
    assert!(handler.threads.lock().unwrap().iter().all(|t| *t == me));
    let reports = reports.lock().unwrap().clone();
    assert!(reports.iter().all(|(t, _)| *t == me), "{reports:?}");
    assert!(reports
        .iter()
        .all(|(_, k)| *k == ErrorKind::ConnectionRefused));
    dialer.close();
    drop(echo);
}

/// Keeps each connection's handle for a thread of the test's.
#[derive(Default)]
struct Keeper {
    conns: Mutex<Vec<Arc<EventConn>>>,
    closed: AtomicUsize,
}

impl EventHandler for Keeper {
    fn on_open(&self, conn: &Arc<EventConn>) {
        self.conns.lock().unwrap().push(conn.clone());
    }
    fn on_frame(&self, _: &Arc<EventConn>, _: &[u8]) {}
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn sends_and_closes_from_another_thread_wake_the_loop() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let handler = Arc::new(Keeper::default());
    let server = Server::bind("tcp://127.0.0.1:0", &Config::default()).unwrap();
    server.set_event_handler(handler.clone()).unwrap();
    server.start_embedded().unwrap();
    let client = connect(server.local_addr(), &Config::default()).unwrap();
    drive(&server, Duration::from_secs(10), || {
        !handler.conns.lock().unwrap().is_empty()
    })
    .unwrap();
    assert_eq!(server.loop_timeout().unwrap(), None, "idle: no deadline");
    let conn = handler.conns.lock().unwrap()[0].clone();
    // The loop sleeps with no deadline; only the other thread's send can
    // wake it (to write the frame). First the fd is made quiet (the new
    // connection's first writable edge may still be there); then one wait,
    // by itself: a loop that went on until the frame was written could miss
    // the pusher's "sent" flag set just after the wake-up and sleep again.
    let mut poll = Poll::new().unwrap();
    let fd: RawFd = server.loop_fd().unwrap();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(4);
    let quiet = (0..100).any(|_| {
        server.process().unwrap();
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        events.is_empty()
    });
    assert!(quiet, "an idle embedded server's fd stays readable");
    let pusher = {
        let conn = conn.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            conn.send(b"pushed").unwrap();
            conn
        })
    };
    let started = Instant::now();
    poll.poll(&mut events, Some(Duration::from_secs(10)))
        .unwrap();
    drop(poll);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the send did not wake the loop"
    );
    assert!(
        waited >= Duration::from_millis(90),
        "the loop's fd was readable before the send ({waited:?})"
    );
    let conn = pusher.join().unwrap();
    drive(&server, Duration::from_secs(10), || {
        conn.queued_bytes() == 0
    })
    .unwrap();
    assert_eq!(client.recv_with(|f| f.to_vec()).unwrap(), b"pushed");
    conn.close();
    drive(&server, Duration::from_secs(10), || {
        handler.closed.load(Ordering::SeqCst) == 1
    })
    .unwrap();
}

#[test]
fn an_embedded_server_speaks_tls_and_hmac_from_the_callers_loop() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(certs) = common::certs::Certs::make("embedded_tls") else {
        return;
    };
    let mut config = config_with_key(KEY);
    config
        .set_tls_cert_pem(&certs.server.cert_pem(), &certs.server.key_pem())
        .unwrap();
    let handler = Arc::new(Recorder::default());
    let server = Arc::new(Server::bind("tls://127.0.0.1:0", &config).unwrap());
    server.set_event_handler(handler.clone()).unwrap();
    let _ = handler.server.set(server.clone());
    let before = sockserv_threads();
    server.start_embedded().unwrap();
    let addr = server.local_addr().to_string();
    assert!(addr.starts_with("tls://"), "{addr}");
    let mut client_config = config_with_key(KEY);
    client_config.set_tls_ca_pem(&certs.ca.cert_pem()).unwrap();
    let client = std::thread::spawn(move || {
        let c = connect(&addr, &client_config).unwrap();
        assert_eq!(c.tls_info().unwrap().version, 0x0304);
        // A frame larger than a TLS record, and small ones.
        let big = vec![7u8; 100_000];
        c.send(&big).unwrap();
        assert_eq!(c.recv_with(|f| f.to_vec()).unwrap(), big);
        for n in 0..20 {
            let msg = format!("{n}");
            c.send(msg.as_bytes()).unwrap();
            assert_eq!(c.recv_with(|f| f.to_vec()).unwrap(), msg.as_bytes());
        }
        c.send(b"stop").unwrap();
    });
    let result = drive(&server, Duration::from_secs(20), || false);
    assert_eq!(result.map_err(|e| e.kind()), Err(ErrorKind::Shutdown));
    client.join().unwrap();
    assert_eq!(handler.frames.load(Ordering::SeqCst), 22);
    let me = std::thread::current().id();
    assert!(handler.threads.lock().unwrap().iter().all(|t| *t == me));
    assert_eq!(sockserv_threads(), before);
}

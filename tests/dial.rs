//! Outgoing connections of the event engine (`Server::dial`): a dialed
//! connection gets the same callbacks as an accepted one, redials with
//! capped exponential backoff, and reports each failure with its reason.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sockserv::{Config, Dialer, Error, ErrorKind, EventConn, EventHandler, Server};

/// The dialing side: says hello on open, records what comes back and how
/// connections end.
#[derive(Default)]
struct Client {
    opened: AtomicUsize,
    closed: AtomicUsize,
    frames: Mutex<Vec<Vec<u8>>>,
    reasons: Mutex<Vec<Option<ErrorKind>>>,
    conns: Mutex<Vec<Arc<EventConn>>>,
}

impl EventHandler for Client {
    fn on_open(&self, conn: &Arc<EventConn>) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.conns.lock().unwrap().push(conn.clone());
        conn.send(b"hello").unwrap();
    }
    fn on_frame(&self, _: &Arc<EventConn>, frame: &[u8]) {
        self.frames.lock().unwrap().push(frame.to_vec());
    }
    fn on_close(&self, _: &Arc<EventConn>, reason: Option<&Error>) {
        self.reasons.lock().unwrap().push(reason.map(Error::kind));
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every dial failure reported: when, its kind and detail.
type Reports = Arc<Mutex<Vec<(Instant, ErrorKind, String)>>>;

/// A started unbound engine with a [`Client`] handler, recording reports.
fn dialing_engine(config: &Config) -> (Server, Arc<Client>, Reports) {
    let engine = Server::unbound(config).unwrap();
    assert_eq!(engine.local_addr(), "");
    let client = Arc::new(Client::default());
    engine.set_event_handler(client.clone()).unwrap();
    let reports: Reports = Arc::default();
    let sink = reports.clone();
    engine.set_dial_error_handler(Some(Arc::new(move |_: &Arc<Dialer>, e: &Error| {
        sink.lock()
            .unwrap()
            .push((Instant::now(), e.kind(), e.detail().to_string()));
    })));
    engine.start().unwrap();
    (engine, client, reports)
}

/// A TCP port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_dialed_connection_echoes_over_tcp_and_unix_with_and_without_a_key() {
    let dir = TempDir::new("dial");
    let unix = format!("unix://{}/d.sock", dir.path().display());
    for addr in ["tcp://127.0.0.1:0", "tcp://[::1]:0", unix.as_str()] {
        for config in [Config::default(), config_with_key(KEY)] {
            let server_side = Arc::new(EventEcho::default());
            let server = event_server(addr, &config, server_side.clone());
            let (engine, client, reports) = dialing_engine(&config);
            let dialer = engine.dial(server.local_addr(), None).unwrap();
            assert_eq!(dialer.addr(), server.local_addr());
            assert!(wait_until(Duration::from_secs(10), || !client
                .frames
                .lock()
                .unwrap()
                .is_empty()));
            assert_eq!(client.frames.lock().unwrap()[0], b"hello");
            assert_eq!(client.opened.load(Ordering::SeqCst), 1);
            assert_eq!(server_side.opened.load(Ordering::SeqCst), 1);
            assert!(reports.lock().unwrap().is_empty(), "{:?}", reports);
            // Closing the dialer closes its connection: on_close once, with
            // no reason, and no redial.
            dialer.close();
            assert!(wait_until(Duration::from_secs(10), || client
                .closed
                .load(Ordering::SeqCst)
                == 1));
            assert_eq!(*client.reasons.lock().unwrap(), vec![None]);
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(client.opened.load(Ordering::SeqCst), 1);
            assert_eq!(server_side.opened.load(Ordering::SeqCst), 1);
        }
    }
}

#[test]
fn a_dialer_reconnects_to_a_server_that_restarts_on_the_same_port() {
    let config = Config::default();
    let first = event_server("tcp://127.0.0.1:0", &config, Arc::new(EventEcho::default()));
    let addr = first.local_addr().to_string();
    let (engine, client, reports) = dialing_engine(&config);
    let dialer = engine.dial(&addr, None).unwrap();
    dialer
        .set_reconnect(Duration::from_millis(20), Duration::from_millis(200))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || client
        .frames
        .lock()
        .unwrap()
        .len()
        == 1));
    // The server goes away: the connection ends (on_close), the dialer
    // keeps trying (refused) until the server is back.
    drop(first);
    assert!(wait_until(Duration::from_secs(10), || client
        .closed
        .load(Ordering::SeqCst)
        == 1));
    assert!(wait_until(Duration::from_secs(10), || !reports
        .lock()
        .unwrap()
        .is_empty()));
    let second = event_server(&addr, &config, Arc::new(EventEcho::default()));
    assert!(wait_until(Duration::from_secs(10), || client
        .frames
        .lock()
        .unwrap()
        .len()
        == 2));
    assert_eq!(client.opened.load(Ordering::SeqCst), 2);
    let reports = reports.lock().unwrap();
    assert!(reports
        .iter()
        .all(|(_, kind, _)| *kind == ErrorKind::ConnectionRefused));
    // Bounded: at most one attempt per 20 ms of the outage.
    assert!(reports.len() < 500, "{} reports", reports.len());
    drop(second);
}

#[test]
fn backoff_doubles_from_min_and_stops_growing_at_max() {
    let (engine, _client, reports) = dialing_engine(&Config::default());
    let dialer = engine
        .dial(&format!("tcp://127.0.0.1:{}", closed_port()), None)
        .unwrap();
    let (min, max) = (Duration::from_millis(40), Duration::from_millis(160));
    dialer.set_reconnect(min, max).unwrap();
    assert!(wait_until(Duration::from_secs(20), || reports
        .lock()
        .unwrap()
        .len()
        >= 8));
    dialer.close();
    let reports = reports.lock().unwrap().clone();
    // set_reconnect cut the first wait short (whether or not the first
    // connect had failed yet): measure from the second report on.
    let gaps: Vec<Duration> = reports
        .windows(2)
        .skip(1)
        .map(|w| w[1].0 - w[0].0)
        .collect();
    let ms: Vec<u128> = gaps.iter().map(Duration::as_millis).collect();
    eprintln!("gaps between refused dials (ms): {ms:?}");
    // A timer never fires early: 40 (or more), 80, 160, then 160 each.
    let slack = Duration::from_millis(2);
    assert!(gaps[1] + slack >= min * 2, "{ms:?}");
    assert!(gaps[2] + slack >= max, "{ms:?}");
    assert!(gaps[1] > gaps[0], "{ms:?}");
    for gap in &gaps[2..] {
        assert!(*gap + slack >= max, "{ms:?}");
    }
    // Capped: the later gaps stay near max, far from the next doubling.
    let mut capped = gaps[3..].to_vec();
    capped.sort();
    assert!(
        capped[capped.len() / 2] < max * 2 * time_scale(),
        "median of the capped gaps: {ms:?}"
    );
    assert!(reports
        .iter()
        .all(|(_, kind, _)| *kind == ErrorKind::ConnectionRefused));
}

#[test]
fn a_refused_dial_is_reported_with_its_code_and_once_means_once() {
    let (engine, client, reports) = dialing_engine(&Config::default());
    let addr = format!("tcp://127.0.0.1:{}", closed_port());
    let dialer = engine.dial(&addr, None).unwrap();
    dialer
        .set_reconnect(Duration::ZERO, Duration::ZERO)
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !reports
        .lock()
        .unwrap()
        .is_empty()));
    std::thread::sleep(Duration::from_millis(500));
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].1, ErrorKind::ConnectionRefused);
    assert!(
        reports[0].2.contains(&format!("connecting to {addr}")),
        "{}",
        reports[0].2
    );
    assert_eq!(client.opened.load(Ordering::SeqCst), 0);
    // Bad settings are refused.
    assert_eq!(
        dialer
            .set_reconnect(Duration::from_millis(10), Duration::from_millis(5))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn a_key_mismatch_is_reported_as_an_auth_failure_and_never_opens() {
    let server_side = Arc::new(EventEcho::default());
    let server = event_server("tcp://127.0.0.1:0", &config_with_key(KEY), server_side);
    let (engine, client, reports) = dialing_engine(&config_with_key(b"another key"));
    let dialer = engine.dial(server.local_addr(), None).unwrap();
    dialer
        .set_reconnect(Duration::from_millis(50), Duration::from_millis(50))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || reports
        .lock()
        .unwrap()
        .len()
        >= 2));
    dialer.close();
    for (_, kind, detail) in reports.lock().unwrap().iter() {
        assert_eq!(*kind, ErrorKind::AuthFailed, "{detail}");
    }
    assert_eq!(client.opened.load(Ordering::SeqCst), 0);
    assert_eq!(client.closed.load(Ordering::SeqCst), 0);
}

/// A listener whose accept queue is full: a new connect gets no answer
/// (the kernel drops its SYN), so it stays connecting.
fn silent_listener() -> (socket2::Socket, Vec<std::net::TcpStream>, String) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue (a backlog of 0 holds one; two to be sure).
    let fillers: Vec<_> = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    (socket, fillers, format!("tcp://{addr}"))
}

/// Sockets of this machine still sending SYNs to 127.0.0.1:`port`.
fn syn_sent_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3 && cols[2] == remote && cols[3] == "02"
        })
        .count()
}

#[test]
fn a_connect_that_gets_no_answer_times_out_within_the_connect_timeout() {
    let (_listener, _fillers, addr) = silent_listener();
    let mut config = Config::default();
    config
        .set_connect_timeout(Duration::from_millis(300))
        .unwrap();
    let (engine, client, reports) = dialing_engine(&config);
    let started = Instant::now();
    let dialer = engine.dial(&addr, None).unwrap();
    dialer
        .set_reconnect(Duration::ZERO, Duration::ZERO)
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !reports
        .lock()
        .unwrap()
        .is_empty()));
    let reports = reports.lock().unwrap();
    let (when, kind, detail) = &reports[0];
    assert_eq!(*kind, ErrorKind::TimedOut, "{detail}");
    assert!(detail.contains("timed out after 300 ms"), "{detail}");
    let took = *when - started;
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(3) * time_scale(), "{took:?}");
    assert_eq!(client.opened.load(Ordering::SeqCst), 0);
}

#[test]
fn closing_a_dialer_while_it_connects_stops_it_quietly() {
    let (listener, _fillers, addr) = silent_listener();
    let port = listener.local_addr().unwrap().as_socket().unwrap().port();
    let (engine, client, reports) = dialing_engine(&Config::default());
    let dialer = engine.dial(&addr, None).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || syn_sent_to(port) == 1),
        "the dialer's connect is under way"
    );
    dialer.close();
    assert!(dialer.is_closed());
    // Its socket is closed on the I/O thread.
    assert!(wait_until(Duration::from_secs(5), || syn_sent_to(port) == 0));
    // Room in the queue now: nothing of the dialer's arrives.
    listener.set_nonblocking(true).unwrap();
    while listener.accept().is_ok() {}
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(client.opened.load(Ordering::SeqCst), 0);
    assert!(reports.lock().unwrap().is_empty());
}

#[test]
fn dialing_needs_a_started_event_engine() {
    let engine = Server::unbound(&Config::default()).unwrap();
    assert_eq!(
        kind(engine.dial("tcp://127.0.0.1:1", None)),
        ErrorKind::InvalidState
    );
    // Threaded handlers cannot serve dialed connections.
    assert_eq!(kind(engine.start()), ErrorKind::InvalidState);
    let engine = Server::unbound(&Config::default()).unwrap();
    engine
        .set_event_handler(Arc::new(Client::default()))
        .unwrap();
    engine.start().unwrap();
    assert_eq!(
        kind(engine.dial("tcp://no such host name.invalid:1", None)),
        ErrorKind::InvalidAddress
    );
}

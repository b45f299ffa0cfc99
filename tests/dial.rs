//! Outgoing connections of the event engine (`Server::dial`): a dialed
//! connection gets the same callbacks as an accepted one, redials with
//! capped exponential backoff, and reports each failure with its reason;
//! and the standalone client driven step by step (`Connecting`).

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sockserv::{
    Config, Connecting, Dialer, Error, ErrorKind, EventConn, EventHandler, Progress, Server,
};

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
    // A listening event server dials too, and counts no refusal for a
    // dial that fails its handshake (the dial error handler hears of it).
    let keyed = event_server(
        "tcp://127.0.0.1:0",
        &config_with_key(KEY),
        Arc::new(EventEcho::default()),
    );
    let client = Arc::new(Client::default());
    let listening = event_server("tcp://127.0.0.1:0", &Config::default(), client.clone());
    let reports: Reports = Arc::default();
    let sink = reports.clone();
    listening.set_dial_error_handler(Some(Arc::new(move |_: &Arc<Dialer>, e: &Error| {
        sink.lock()
            .unwrap()
            .push((Instant::now(), e.kind(), e.detail().to_string()));
    })));
    let good = listening
        .dial(keyed.local_addr(), Some(&config_with_key(KEY)))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || client
        .frames
        .lock()
        .unwrap()
        .len()
        == 1));
    let bad = listening
        .dial(keyed.local_addr(), Some(&config_with_key(b"wrong")))
        .unwrap();
    bad.set_reconnect(Duration::ZERO, Duration::ZERO).unwrap();
    assert!(wait_until(Duration::from_secs(10), || !reports
        .lock()
        .unwrap()
        .is_empty()));
    assert_eq!(listening.stats().handshake_failures, 0);
    good.close();
}

/// A loop's short wait, so the handshake deadline is noticed in time.
const TICK: Duration = Duration::from_millis(20);

/// Drives a [`Connecting`] with poll(2) on its fd, as a loop would, each
/// wait at most `wait` (a loop that watches only the fd waits for ever).
fn drive(
    mut connecting: Connecting,
    limit: Duration,
    wait: Duration,
) -> sockserv::Result<sockserv::Connection> {
    let end = Instant::now() + limit;
    loop {
        match connecting.advance()? {
            Progress::Ready(conn) => return Ok(conn),
            Progress::Pending { want_write } => {
                assert!(Instant::now() < end, "still connecting after {limit:?}");
                let events = if want_write {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                };
                let mut pfd = libc::pollfd {
                    fd: connecting.fd(),
                    events,
                    revents: 0,
                };
                let ms = wait.min(end.saturating_duration_since(Instant::now()));
                // SAFETY: one pollfd we own, for at most `wait`.
                unsafe { libc::poll(&mut pfd, 1, ms.as_millis() as i32) };
            }
        }
    }
}

#[test]
fn a_loop_connects_and_authenticates_without_blocking_then_has_a_connection() {
    let config = config_with_key(KEY);
    let server = event_server("tcp://127.0.0.1:0", &config, Arc::new(EventEcho::default()));
    let started = Instant::now();
    let connecting = Connecting::start(server.local_addr(), &config).unwrap();
    assert!(started.elapsed() < Duration::from_millis(50) * time_scale());
    assert_eq!(connecting.addr(), server.local_addr());
    let conn = drive_without_stalls(connecting);
    // Non-blocking, as a loop wants; frames that come together are counted.
    assert!(conn.is_nonblocking());
    assert_eq!(conn.pending_frames(), 0);
    three_echoes_arrive_together_and_are_counted(&conn);
    assert_eq!(kind(conn.recv_with(|_| ())), ErrorKind::WouldBlock);
}

/// Drives `connecting` to its connection as a loop that watches only the
/// fd does (each wait up to 10 s): a step that held back what it had to
/// send (a handshake answer, a TLS flight) would stall until then.
fn drive_without_stalls(connecting: Connecting) -> sockserv::Connection {
    let started = Instant::now();
    let limit = Duration::from_secs(10);
    let conn = drive(connecting, limit, limit).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2) * time_scale(),
        "the handshake stalled: {:?}",
        started.elapsed()
    );
    conn
}

/// Sends three frames to an echo server and receives them once all three
/// are here: after the first, the other two show as pending (the socket
/// has nothing more to say about them).
fn three_echoes_arrive_together_and_are_counted(conn: &sockserv::Connection) {
    for word in [&b"a"[..], b"bb", b"ccc"] {
        conn.send(word).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || {
        conn.poll(Some(Duration::ZERO)).unwrap_or(false)
    }));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(conn.recv_with(|f| f.to_vec()).unwrap(), b"a");
    assert_eq!(conn.pending_frames(), 2);
    assert_eq!(conn.recv_with(|f| f.to_vec()).unwrap(), b"bb");
    assert_eq!(conn.pending_frames(), 1);
    assert_eq!(conn.recv_with(|f| f.to_vec()).unwrap(), b"ccc");
    assert_eq!(conn.pending_frames(), 0);
}

#[test]
fn a_loop_connect_reports_the_failures_connect_would() {
    // The wrong key.
    let server = event_server(
        "tcp://127.0.0.1:0",
        &config_with_key(KEY),
        Arc::new(EventEcho::default()),
    );
    let connecting = Connecting::start(server.local_addr(), &config_with_key(b"wrong")).unwrap();
    assert_eq!(
        kind(drive(connecting, Duration::from_secs(10), TICK)),
        ErrorKind::AuthFailed
    );
    // A Unix path with nobody there: refused at once.
    let dir = TempDir::new("dial-nb");
    let path = format!("unix://{}/none.sock", dir.path().display());
    assert_eq!(
        kind(Connecting::start(&path, &Config::default())),
        ErrorKind::ConnectionRefused
    );
    // A silent peer: the handshake deadline, in advance, not a block.
    let (_listener, addr) = silent_listener_accepting();
    let mut config = config_with_key(KEY);
    config
        .set_handshake_timeout(Duration::from_millis(200))
        .unwrap();
    let started = Instant::now();
    let connecting = Connecting::start(&addr, &config).unwrap();
    let Err(e) = drive(connecting, Duration::from_secs(10), TICK) else {
        panic!("a silent peer let the handshake pass");
    };
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(started.elapsed() >= Duration::from_millis(190));
}

/// A listener that completes TCP connects (the kernel does) and never
/// accepts or speaks.
fn silent_listener_accepting() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    (listener, addr)
}

#[test]
fn three_hundred_dialers_open_echo_and_close_cleanly_and_their_slots_are_reused() {
    raise_fd_limit();
    let server_side = Arc::new(EventEcho::default());
    let server = event_server("tcp://127.0.0.1:0", &Config::default(), server_side.clone());
    let mut config = Config::default();
    config.set_io_threads(2);
    let (engine, client, reports) = dialing_engine(&config);
    let n = 300;
    for round in 1..=2 {
        let dialers: Vec<Arc<Dialer>> = (0..n)
            .map(|_| engine.dial(server.local_addr(), None).unwrap())
            .collect();
        assert!(
            wait_until(Duration::from_secs(30), || client
                .frames
                .lock()
                .unwrap()
                .len()
                == n * round),
            "round {round}: {} echoes",
            client.frames.lock().unwrap().len()
        );
        for dialer in &dialers {
            dialer.close();
        }
        assert!(wait_until(Duration::from_secs(30), || client
            .closed
            .load(Ordering::SeqCst)
            == n * round));
    }
    assert_eq!(client.opened.load(Ordering::SeqCst), 2 * n);
    assert!(wait_until(Duration::from_secs(10), || server_side
        .closed
        .load(Ordering::SeqCst)
        == 2 * n));
    assert!(reports.lock().unwrap().is_empty());
    // Every reason a close() (none), every connection closed once.
    assert!(client.reasons.lock().unwrap().iter().all(Option::is_none));
}

#[test]
fn a_dialed_connection_talks_to_a_threaded_server_and_a_blocking_client_talks_to_it() {
    // Dialing a threaded server (its preamble stage runs the handshake).
    let config = config_with_key(KEY);
    let threaded = echo_server("tcp://127.0.0.1:0", &config);
    let (engine, client, reports) = dialing_engine(&config);
    let dialer = engine.dial(threaded.local_addr(), None).unwrap();
    assert!(wait_until(Duration::from_secs(10), || client
        .frames
        .lock()
        .unwrap()
        .len()
        == 1));
    // A dialed connection's handle sends from another thread too.
    let conn = client.conns.lock().unwrap()[0].clone();
    std::thread::spawn(move || conn.send(b"from a thread").unwrap())
        .join()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || client
        .frames
        .lock()
        .unwrap()
        .len()
        == 2));
    assert_eq!(client.frames.lock().unwrap()[1], b"from a thread");
    assert!(reports.lock().unwrap().is_empty());
    dialer.close();
}

/// A TLS + HMAC server's config and a client's trusting its CA, with the
/// certificates made for `test` (`None`: skipped, see `Certs::make`).
fn tls_configs(test: &str) -> Option<(common::certs::Certs, Config, Config)> {
    let certs = common::certs::Certs::make(test)?;
    let mut server = config_with_key(KEY);
    server
        .set_tls_cert_pem(&certs.server.cert_pem(), &certs.server.key_pem())
        .unwrap();
    let mut client = config_with_key(KEY);
    client.set_tls_ca_pem(&certs.ca.cert_pem()).unwrap();
    Some((certs, server, client))
}

#[test]
fn a_dialer_speaks_tls_and_hmac_and_reports_a_server_it_does_not_trust() {
    let Some((certs, server_config, client_config)) = tls_configs("tls_dialer") else {
        return;
    };
    let server = event_server(
        "tls://127.0.0.1:0",
        &server_config,
        Arc::new(EventEcho::default()),
    );
    assert!(
        server.local_addr().starts_with("tls://"),
        "{}",
        server.local_addr()
    );
    let (engine, client, reports) = dialing_engine(&client_config);
    let dialer = engine.dial(server.local_addr(), None).unwrap();
    assert!(wait_until(Duration::from_secs(10), || client
        .frames
        .lock()
        .unwrap()
        .len()
        == 1));
    assert_eq!(client.frames.lock().unwrap()[0], b"hello");
    let conn = client.conns.lock().unwrap()[0].clone();
    let info = conn.tls_info().expect("a TLS connection");
    assert_eq!(info.version, 0x0304);
    assert_eq!(
        info.peer_cert
            .as_ref()
            .expect("the server's certificate")
            .sha256,
        certs.server.sha256()
    );
    assert!(reports.lock().unwrap().is_empty());
    dialer.close();

    // A client that trusts another CA: reported as a certificate failure,
    // never opened.
    let mut distrustful = client_config.clone();
    distrustful
        .set_tls_ca_pem(&certs.other_ca.cert_pem())
        .unwrap();
    let (engine, client, reports) = dialing_engine(&distrustful);
    let dialer = engine.dial(server.local_addr(), None).unwrap();
    dialer
        .set_reconnect(Duration::ZERO, Duration::ZERO)
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !reports
        .lock()
        .unwrap()
        .is_empty()));
    let (_, kind, detail) = reports.lock().unwrap()[0].clone();
    assert_eq!(kind, ErrorKind::Certificate, "{detail}");
    assert_eq!(client.opened.load(Ordering::SeqCst), 0);
}

#[test]
fn a_loop_connects_over_tls_without_blocking() {
    let Some((certs, server_config, client_config)) = tls_configs("tls_loop_connect") else {
        return;
    };
    let server = event_server(
        "tls://127.0.0.1:0",
        &server_config,
        Arc::new(EventEcho::default()),
    );
    let connecting = Connecting::start(server.local_addr(), &client_config).unwrap();
    let conn = drive_without_stalls(connecting);
    let info = conn.tls_info().expect("a TLS connection");
    assert_eq!(info.version, 0x0304);
    assert_eq!(
        info.peer_cert.as_ref().unwrap().sha256,
        certs.server.sha256()
    );
    // Frames that arrive together are counted from the decrypted bytes.
    three_echoes_arrive_together_and_are_counted(&conn);
}

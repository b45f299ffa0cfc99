//! Faults, in both modes where both apply: clients killed with SIGKILL
//! mid-handshake, mid-header and mid-payload; a peer that never reads; a
//! slowloris; floods past the connection cap; a header alone declaring a
//! huge frame; panicking handlers, in Rust and through the C API. Each
//! shows that the fault gets its error, frees its slot, delivers nothing
//! partial, and that everybody else goes on.
//! (Shutdown in the middle of transfers has its own binary,
//! tests/shutdown_midtransfer.rs, for clean fd and thread counts.)

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sockserv::WhenFull;
use sockserv::{connect, Config, Connection, Error, ErrorKind, EventConn, EventHandler, Server};

/// Tests that hold or measure lots of memory run one at a time, so one's
/// allocations do not show in the other's resident-memory figures.
static MEMORY: Mutex<()> = Mutex::new(());

fn py_script(name: &str) -> String {
    format!("{}/tests/py/{name}", env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Clients killed half-way.

#[test]
fn threaded_clients_killed_mid_frame_and_mid_handshake() {
    killed_clients(Mode::Threaded);
}

#[test]
fn event_clients_killed_mid_frame_and_mid_handshake() {
    killed_clients(Mode::Event);
}

fn killed_clients(mode: Mode) {
    let config = config_with_key(KEY);
    let (server, seen) = counting_echo_server(&config, mode);
    let canary = Canary::start(&server, &config);
    let target = tcp_target(&server);
    let (host, port) = target.rsplit_once(':').unwrap();
    for stage in ["handshake", "header", "payload"] {
        let failures = server.stats().handshake_failures;
        let errors = seen.error_count();
        let mut child = ChildGuard::spawn(
            Command::new(python())
                .arg(py_script("half_client.py"))
                .args([host, port, stage])
                .env("SOCKSERV_KEY", std::str::from_utf8(KEY).unwrap()),
        );
        child.expect_line("ready", Duration::from_secs(20));
        // The server holds the half-done connection until the kill.
        assert!(wait_until(Duration::from_secs(5), || server.stats().active == 2));
        child.kill9();
        if stage == "handshake" {
            assert!(
                wait_until(Duration::from_secs(10), || server
                    .stats()
                    .handshake_failures
                    == failures + 1),
                "{mode:?}: the killed handshake was not counted"
            );
            assert_eq!(seen.error_count(), errors, "it reached a handler");
        } else {
            let e = seen.next_error(errors);
            assert_eq!(e.kind(), ErrorKind::TruncatedFrame, "{mode:?} {stage}: {e}");
        }
        // Its slot is free again: only the canary is left.
        assert!(
            wait_until(Duration::from_secs(10), || server.stats().active == 1),
            "{mode:?} {stage}: the slot was not freed"
        );
    }
    let exchanged = canary.finish();
    // The handlers saw the canary's frames and nothing else: no partial
    // frame of a killed client was ever delivered.
    assert_eq!(seen.frames(), exchanged, "{mode:?}");
    eprintln!("{mode:?}: 3 clients killed; the canary exchanged {exchanged} frames meanwhile");
}

// ---------------------------------------------------------------------------
// A peer that never reads while the server sends.

/// Threaded mode: the handler's blocking send meets the I/O timeout, the
/// connection is closed, and memory does not grow (a blocking send holds
/// nothing back). Event mode has the same in tests/event.rs
/// (a_peer_that_does_not_read_meets_the_queue_limit, and
/// reads_pause_while_replies_are_backed_up).
#[test]
fn threaded_a_peer_that_never_reads_times_out_with_bounded_memory() {
    let _memory = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let mut config = Config::default();
    config.set_io_timeout(Some(Duration::from_millis(500)));
    let outcome: Arc<Mutex<Option<(u64, Error)>>> = Arc::default();
    let server = Server::bind("tcp://127.0.0.1:0", &config).unwrap();
    let out = outcome.clone();
    server
        .set_handler(Arc::new(move |conn: &Arc<Connection>| {
            let frame = vec![0x5a; 256 * 1024];
            // Bounded: 64 GiB would be needed to end this loop by count.
            for sent in 0..262_144u64 {
                if let Err(e) = conn.send(&frame) {
                    *out.lock().unwrap() = Some((sent, e));
                    return;
                }
            }
        }))
        .unwrap();
    server.start().unwrap();
    let rss_before = rss_kib();
    let started = Instant::now();
    let client = connect(server.local_addr(), &Config::default()).unwrap();
    assert!(wait_until(Duration::from_secs(20), || outcome
        .lock()
        .unwrap()
        .is_some()));
    let (sent, e) = outcome.lock().unwrap().take().unwrap();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    let grew = rss_kib().saturating_sub(rss_before);
    assert!(grew < 64 * 1024, "memory grew by {grew} KiB");
    // The torn frame closed the stream: the client sees the end after the
    // whole frames the kernel held.
    client.set_timeout(Some(Duration::from_secs(10)));
    let mut whole = 0u64;
    let end = loop {
        match client.recv_with(|f| f.len()) {
            Ok(n) => {
                assert_eq!(n, 256 * 1024);
                whole += 1;
            }
            Err(e) => break e,
        }
        assert!(whole <= sent, "more frames than were sent");
    };
    assert_eq!(end.kind(), ErrorKind::TruncatedFrame, "{end}");
    eprintln!(
        "threaded: {sent} frames sent before the send timed out after {:?}, \
         {whole} arrived whole, memory grew by {grew} KiB",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// A slowloris: one byte per second of a correct handshake response.

#[test]
fn threaded_a_slowloris_is_timed_out_and_its_slot_freed() {
    slowloris(Mode::Threaded);
}

#[test]
fn event_a_slowloris_is_timed_out_and_its_slot_freed() {
    slowloris(Mode::Event);
}

fn slowloris(mode: Mode) {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let mut config = config_with_key(KEY);
    config.set_handshake_timeout(TIMEOUT).unwrap();
    // One slot: while the slowloris holds it, nobody else is served.
    config.set_max_connections(1).unwrap();
    config.set_when_full(WhenFull::Wait);
    let (server, seen) = counting_echo_server(&config, mode);

    let mut slow = raw(&server);
    let started = Instant::now();
    let challenge = raw_read_frame(&mut slow).unwrap();
    let body = &challenge[sockserv::proto::handshake::CHALLENGE.len()..];
    let mut response = (40u32).to_be_bytes().to_vec();
    response.extend_from_slice(b"{sha256}");
    response.extend_from_slice(&sockserv::proto::mac::hmac_sha256(KEY, body));
    let stop = Arc::new(AtomicBool::new(false));
    let dribbler = {
        let mut s = slow.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0;
            for &b in &response {
                if stop.load(Ordering::SeqCst) || s.write_all(&[b]).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            sent
        })
    };
    // A legitimate client arrives meanwhile and waits for the slot.
    let mut patient = config.clone();
    patient
        .set_handshake_timeout(Duration::from_secs(10))
        .unwrap();
    let addr = server.local_addr().to_string();
    let legit = std::thread::spawn(move || {
        let c = connect(&addr, &patient)?;
        roundtrip(&c, b"served after the slowloris");
        Ok::<Instant, Error>(Instant::now())
    });
    // The slowloris is cut at the deadline, although it keeps sending.
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let cut = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let dribbled = dribbler.join().unwrap();
    assert!(rest.is_empty(), "no verdict for an unfinished response");
    assert!(
        cut >= TIMEOUT - Duration::from_millis(100) && cut < TIMEOUT + Duration::from_secs(4),
        "{mode:?}: cut after {cut:?}"
    );
    let served_at = legit.join().unwrap().expect("the waiting client");
    assert!(served_at.duration_since(started) < TIMEOUT + Duration::from_secs(6));
    assert_eq!(server.stats().handshake_failures, 1);
    assert_eq!(seen.frames(), 1, "only the legitimate frame");
    eprintln!("{mode:?}: slowloris cut after {cut:?}, having dribbled {dribbled} bytes");
}

// ---------------------------------------------------------------------------
// Floods past the connection cap.

#[test]
fn threaded_a_flood_past_the_cap_is_refused_at_once() {
    flood_refused(Mode::Threaded);
}

#[test]
fn event_a_flood_past_the_cap_is_refused_at_once() {
    flood_refused(Mode::Event);
}

fn flood_refused(mode: Mode) {
    const CAP: usize = 8;
    const FLOOD: u64 = 200;
    let mut config = config_with_key(KEY);
    config.set_max_connections(CAP).unwrap();
    config.set_when_full(WhenFull::Refuse);
    let (server, seen) = counting_echo_server(&config, mode);
    let holders: Vec<Connection> = (0..CAP)
        .map(|_| {
            let c = connect(server.local_addr(), &config).unwrap();
            roundtrip(&c, b"hold");
            c
        })
        .collect();
    let mut kinds = std::collections::BTreeMap::new();
    for _ in 0..FLOOD {
        let e = connect(server.local_addr(), &config)
            .err()
            .expect("refused");
        *kinds.entry(format!("{:?}", e.kind())).or_insert(0) += 1;
        assert!(
            matches!(e.kind(), ErrorKind::Closed | ErrorKind::Io),
            "{mode:?}: {e}"
        );
    }
    let stats = server.stats();
    assert_eq!(stats.refused_when_full, FLOOD, "{stats:?}");
    assert_eq!(stats.active, CAP as u64);
    for h in &holders {
        roundtrip(h, b"untouched");
    }
    drop(holders);
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .active
        == 0));
    let fresh = connect(server.local_addr(), &config).unwrap();
    roundtrip(&fresh, b"a slot again");
    assert_eq!(seen.frames(), 2 * CAP as u64 + 1);
    eprintln!("{mode:?}: {FLOOD} connections past a cap of {CAP} refused: {kinds:?}");
}

#[test]
fn threaded_a_flood_past_the_cap_waits_and_loses_nobody() {
    flood_waits(Mode::Threaded);
}

#[test]
fn event_a_flood_past_the_cap_waits_and_loses_nobody() {
    flood_waits(Mode::Event);
}

fn flood_waits(mode: Mode) {
    const CAP: usize = 8;
    const THREADS: usize = 20;
    const EACH: usize = 10;
    let mut config = config_with_key(KEY);
    config.set_max_connections(CAP).unwrap();
    config
        .set_handshake_timeout(Duration::from_secs(30))
        .unwrap();
    let (server, seen) = counting_echo_server(&config, mode);
    let server = Arc::new(server);
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (server, peak, done) = (server.clone(), peak.clone(), done.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::SeqCst) && Instant::now() < end {
                peak.fetch_max(server.stats().active, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = server.local_addr().to_string();
            let config = config.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let c = connect(&addr, &config).unwrap();
                    roundtrip(&c, format!("{t}/{i}").as_bytes());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every waiting client is served");
    }
    done.store(true, Ordering::SeqCst);
    monitor.join().unwrap();
    let total = (THREADS * EACH) as u64;
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .active
        == 0));
    let stats = server.stats();
    assert_eq!(stats.accepted, total, "{stats:?}");
    assert_eq!(stats.refused_when_full, 0);
    assert_eq!(seen.frames(), total);
    // Threaded mode's `active` also counts connections in their preamble
    // (on the preamble stage, holding no thread): the cap bounds handlers.
    let peak = peak.load(Ordering::SeqCst);
    let handlers = seen.peak();
    assert!(
        handlers <= CAP as u64,
        "{handlers} handled at once, cap {CAP}"
    );
    if mode == Mode::Event {
        assert!(peak <= CAP as u64, "{peak} served at once, cap {CAP}");
    }
    eprintln!(
        "{mode:?}: {total} clients through a cap of {CAP}, at most {handlers} handled at once \
         ({peak} active)"
    );
}

// ---------------------------------------------------------------------------
// A header alone must not make the receiver allocate the declared frame.

/// Regression: the blocking receive used to make room for the whole
/// declared frame as soon as the header arrived: 4 bytes made it allocate
/// and zero up to the maximum frame size (64 MiB by default) per
/// connection. Now the buffer grows as the bytes arrive.
#[test]
fn a_header_alone_does_not_allocate_the_declared_frame() {
    let _memory = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    const DECLARED: usize = 60 << 20;
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let conn = Connection::new(ours.into(), &Config::default()).unwrap();
    conn.set_timeout(Some(Duration::from_millis(200)));
    theirs.write_all(&(DECLARED as u32).to_be_bytes()).unwrap();
    theirs.write_all(&[1; 100]).unwrap();
    assert_eq!(kind(conn.recv_with(|f| f.len())), ErrorKind::TimedOut);
    let held = conn.buffered_capacity();
    assert!(held <= 4 << 20, "{held} bytes held for 104 received");
    // The frame still arrives whole as its bytes come.
    let writer = std::thread::spawn(move || {
        let chunk = vec![1u8; 1 << 20];
        let mut left = DECLARED - 100;
        while left > 0 {
            let n = left.min(chunk.len());
            theirs.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        theirs
    });
    conn.set_timeout(Some(Duration::from_secs(60)));
    let ok = conn
        .recv_with(|f| f.len() == DECLARED && f.iter().all(|&b| b == 1))
        .unwrap();
    assert!(ok, "the frame arrived changed");
    drop(writer.join().unwrap());
}

// ---------------------------------------------------------------------------
// Panicking handlers.

#[test]
fn threaded_a_panicking_handler_does_not_take_down_the_server() {
    let server = Server::bind("tcp://127.0.0.1:0", &Config::default()).unwrap();
    server
        .set_handler(Arc::new(|conn: &Arc<Connection>| loop {
            let Ok(frame) = conn.recv_with(|f| f.to_vec()) else {
                return;
            };
            if frame == b"panic" {
                panic!("a handler bug (deliberate, in a test)");
            }
            if conn.send(&frame).is_err() {
                return;
            }
        }))
        .unwrap();
    server.start().unwrap();
    let bystander = connect(server.local_addr(), &Config::default()).unwrap();
    roundtrip(&bystander, b"before");
    for _ in 0..3 {
        let victim = connect(server.local_addr(), &Config::default()).unwrap();
        victim.set_timeout(Some(Duration::from_secs(10)));
        victim.send(b"panic").unwrap();
        assert_eq!(kind(victim.recv_with(|_| ())), ErrorKind::Closed);
    }
    roundtrip(&bystander, b"after");
    let fresh = connect(server.local_addr(), &Config::default()).unwrap();
    roundtrip(&fresh, b"new ones too");
    // The panicked connections' slots were freed.
    assert!(wait_until(Duration::from_secs(5), || server.stats().active == 2));
}

/// Panics in on_frame for frames saying "panic"; echoes the rest.
#[derive(Default)]
struct Panicky {
    reasons: Mutex<Vec<Option<ErrorKind>>>,
}

impl EventHandler for Panicky {
    fn on_open(&self, _: &Arc<EventConn>) {}
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        if frame == b"panic" {
            panic!("an on_frame bug (deliberate, in a test)");
        }
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, reason: Option<&Error>) {
        self.reasons.lock().unwrap().push(reason.map(Error::kind));
    }
}

#[test]
fn event_a_panicking_callback_closes_only_its_connection() {
    let handler = Arc::new(Panicky::default());
    // One I/O thread: the panic happens on the bystander's thread too.
    let mut config = Config::default();
    config.set_io_threads(1);
    let server = event_server("tcp://127.0.0.1:0", &config, handler.clone());
    let bystander = connect(server.local_addr(), &config).unwrap();
    roundtrip(&bystander, b"before");
    let victim = connect(server.local_addr(), &config).unwrap();
    victim.set_timeout(Some(Duration::from_secs(10)));
    victim.send(b"panic").unwrap();
    assert_eq!(kind(victim.recv_with(|_| ())), ErrorKind::Closed);
    roundtrip(&bystander, b"after");
    assert!(wait_until(Duration::from_secs(5), || !handler
        .reasons
        .lock()
        .unwrap()
        .is_empty()));
    assert_eq!(
        handler.reasons.lock().unwrap()[0],
        Some(ErrorKind::Panic),
        "on_close says why"
    );
}

/// The C API, called from Rust exactly as C would (the same exported
/// functions, with `extern "C"` callbacks): a panic inside sockserv during
/// a handler's call becomes SOCKSERV_ERR_PANIC, the process does not abort,
/// and the connection and server go on.
mod c_api_panics {
    use super::*;
    use sockserv::ffi::*;
    use std::ffi::{c_void, CStr, CString};
    use std::ptr;

    static CODES: Mutex<Vec<i32>> = Mutex::new(Vec::new());
    static DETAIL: Mutex<String> = Mutex::new(String::new());

    fn record(rc: sockserv_result) {
        CODES.lock().unwrap().push(rc as i32);
        if rc == sockserv_result::SOCKSERV_ERR_PANIC {
            let mut buf = [0u8; 256];
            // SAFETY: a buffer of its stated length.
            unsafe { sockserv_last_error(buf.as_mut_ptr().cast(), buf.len()) };
            let text = CStr::from_bytes_until_nul(&buf).unwrap();
            *DETAIL.lock().unwrap() = text.to_string_lossy().into_owned();
        }
    }

    /// On "panic": a send that panics inside sockserv, then a normal reply.
    unsafe fn answer(conn: *mut sockserv_conn, data: &[u8]) {
        if data == b"panic" {
            inject_panic_in_next_call();
            // SAFETY: a live connection lent to this callback.
            record(unsafe { sockserv_conn_send(conn, b"lost".as_ptr(), 4) });
            // SAFETY: as above.
            record(unsafe { sockserv_conn_send(conn, b"survived".as_ptr(), 8) });
        } else {
            // SAFETY: as above.
            unsafe { sockserv_conn_send(conn, data.as_ptr(), data.len()) };
        }
    }

    unsafe extern "C" fn handler(_: *mut c_void, conn: *mut sockserv_conn) {
        let mut data: *const u8 = ptr::null();
        let mut len = 0usize;
        // SAFETY: a live connection and valid out-pointers; the frame is
        // borrowed until the next receive.
        while unsafe { sockserv_conn_recv(conn, &mut data, &mut len) }
            == sockserv_result::SOCKSERV_OK
        {
            let frame = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
            // SAFETY: as above.
            unsafe { answer(conn, &frame) };
        }
    }

    unsafe extern "C" fn on_frame(
        _: *mut c_void,
        conn: *mut sockserv_conn,
        data: *const u8,
        len: usize,
    ) {
        // SAFETY: the frame is valid during the call.
        let frame = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        // SAFETY: a live connection.
        unsafe { answer(conn, &frame) };
    }

    fn run(event: bool) {
        CODES.lock().unwrap().clear();
        let addr = CString::new("tcp://127.0.0.1:0").unwrap();
        let mut srv: *mut sockserv_server = ptr::null_mut();
        // SAFETY: valid arguments; NULL config gives the defaults.
        unsafe {
            assert_eq!(
                sockserv_server_new(addr.as_ptr(), ptr::null(), &mut srv),
                sockserv_result::SOCKSERV_OK
            );
            let rc = if event {
                sockserv_server_set_event_handlers(srv, None, Some(on_frame), None, ptr::null_mut())
            } else {
                sockserv_server_set_handler(srv, Some(handler), ptr::null_mut())
            };
            assert_eq!(rc, sockserv_result::SOCKSERV_OK);
            assert_eq!(sockserv_server_start(srv), sockserv_result::SOCKSERV_OK);
        }
        let mut buf = [0u8; 128];
        let mut needed = 0usize;
        // SAFETY: a live server and a buffer of its stated length.
        unsafe { sockserv_server_local_addr(srv, buf.as_mut_ptr().cast(), buf.len(), &mut needed) };
        let bound = CStr::from_bytes_until_nul(&buf)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();

        let client = connect(&bound, &Config::default()).unwrap();
        // Generous: under TSan, printing the panic's backtrace takes long.
        client.set_timeout(Some(Duration::from_secs(120)));
        roundtrip(&client, b"before");
        client.send(b"panic").unwrap();
        assert_eq!(client.recv_with(|f| f.to_vec()).unwrap(), b"survived");
        roundtrip(&client, b"after");
        let other = connect(&bound, &Config::default()).unwrap();
        roundtrip(&other, b"others too");
        // SAFETY: the server from sockserv_server_new, freed once.
        unsafe { sockserv_server_free(srv) };
        let codes = CODES.lock().unwrap().clone();
        assert_eq!(
            codes,
            vec![
                sockserv_result::SOCKSERV_ERR_PANIC as i32,
                sockserv_result::SOCKSERV_OK as i32
            ]
        );
        assert!(
            DETAIL.lock().unwrap().contains("panic"),
            "{}",
            DETAIL.lock().unwrap()
        );
    }

    #[test]
    fn c_api_a_panic_during_a_threaded_handler_is_an_error_code() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        run(false);
    }

    #[test]
    fn c_api_a_panic_during_an_event_callback_is_an_error_code() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        run(true);
    }

    /// The two tests share CODES: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());
}

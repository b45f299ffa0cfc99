//! TLS against a hostile network: a relay on loopback that records the
//! stream and rewrites a byte after the handshake (the attack of issue
//! 11), shown first against plaintext (where it works: the reason for
//! TLS, and proof that the relay does what the TLS tests assume), then
//! against TLS; and slow, abandoned and garbage TLS handshakes, bounded
//! by the handshake deadline while newcomers and a canary go on.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::relay::{self, Relay};
use common::*;
use sockserv::{Config, Connection, Error, EventConn, EventHandler, Server};

/// Every frame a server's handler got, and every error a connection of
/// it ended with.
#[derive(Default)]
struct Got {
    frames: Mutex<Vec<Vec<u8>>>,
    errors: Mutex<Vec<Error>>,
    opened: std::sync::atomic::AtomicUsize,
}

impl Got {
    fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn frames(&self) -> Vec<Vec<u8>> {
        self.frames.lock().unwrap().clone()
    }
    fn errors(&self) -> Vec<Error> {
        self.errors.lock().unwrap().clone()
    }
}

struct GotEvents(Arc<Got>);

impl EventHandler for GotEvents {
    fn on_open(&self, _: &Arc<EventConn>) {
        self.0
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        self.0.frames.lock().unwrap().push(frame.to_vec());
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, reason: Option<&Error>) {
        if let Some(e) = reason {
            self.0.errors.lock().unwrap().push(e.clone());
        }
    }
}

/// An echo server on `addr` in `mode` that keeps what its handler got.
fn keeping_server(addr: &str, config: &Config, mode: Mode) -> (Server, Arc<Got>) {
    let got: Arc<Got> = Arc::default();
    let server = Server::bind(addr, config).unwrap();
    let g = got.clone();
    match mode {
        Mode::Threaded => server
            .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                g.opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                loop {
                    match conn.recv_with(|f| f.to_vec()) {
                        Ok(frame) => {
                            g.frames.lock().unwrap().push(frame.clone());
                            if conn.send(&frame).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            g.errors.lock().unwrap().push(e);
                            return;
                        }
                    }
                }
            }))
            .unwrap(),
        Mode::Event => server.set_event_handler(Arc::new(GotEvents(g))).unwrap(),
    }
    server.start().unwrap();
    (server, got)
}

const ORDER: &[u8] = b"pay alice 100";
/// Where the relay strikes, counted from the start of the frame's bytes
/// on the wire: plaintext, the '1' of "100" (4-byte header + 10); TLS,
/// a byte of the record's ciphertext (5-byte record header + 9).
const STRIKE: u64 = 14;
/// '1' ^ 8 = '9'.
const MASK: u8 = 0x08;

/// Plaintext with a key: the relay passes the handshake, then reads the
/// order and rewrites it, and the handler gets "pay alice 900". What TLS
/// is for; and the relay is shown to record and to rewrite.
#[test]
fn plaintext_relay_reads_and_rewrites_what_tls_protects() {
    for mode in [Mode::Threaded, Mode::Event] {
        let config = config_with_key(KEY);
        let (server, got) = keeping_server("tcp://127.0.0.1:0", &config, mode);
        let relay = Relay::start(&tcp_target(&server));
        let conn = sockserv::connect(&format!("tcp://{}", relay.addr()), &config).unwrap();
        conn.set_timeout(Some(Duration::from_secs(10)));
        // The handler runs once the server has had every handshake byte:
        // nothing of the client's is in flight when the relay is armed.
        assert!(wait_until(Duration::from_secs(10), || got.opened() == 1));
        relay.arm(STRIKE, MASK);
        conn.send(ORDER).unwrap();
        let back = conn.recv_with(|f| f.to_vec()).unwrap();
        assert_eq!(back, b"pay alice 900", "{mode:?}");
        assert!(relay.rewritten());
        assert_eq!(got.frames(), vec![b"pay alice 900".to_vec()], "{mode:?}");
        let (up, down) = relay.recorded();
        assert!(relay::contains(&up, b"pay alice 900") && relay::contains(&down, b"pay alice 900"));
        // The handshake too is in the clear (though the key is not).
        assert!(relay::contains(&down, b"#CHALLENGE#") && relay::contains(&up, b"#WELCOME#"));
        assert!(got.errors().is_empty(), "{:?}", got.errors());
    }
}

// ---- the same relay against TLS ----

use common::certs::Certs;

fn tls_server_config(certs: &Certs) -> Config {
    let mut c = config_with_key(KEY);
    c.set_tls_cert_files(&certs.server.cert, &certs.server.key)
        .unwrap();
    c
}

fn tls_client_config(certs: &Certs) -> Config {
    let mut c = config_with_key(KEY);
    c.set_tls_ca_file(&certs.ca.cert).unwrap();
    c
}

/// A TLS server in `mode` behind a relay, and a client through the relay.
fn through_relay(certs: &Certs, mode: Mode) -> (Server, Arc<Got>, Relay, sockserv::Connection) {
    let (server, got) = keeping_server("tls://127.0.0.1:0", &tls_server_config(certs), mode);
    let relay = Relay::start(server.local_addr().trim_start_matches("tls://"));
    let conn = sockserv::connect(
        &format!("tls://{}", relay.addr()),
        &tls_client_config(certs),
    )
    .unwrap();
    conn.set_timeout(Some(Duration::from_secs(10)));
    // The handler runs once every handshake byte is through the relay.
    assert!(wait_until(Duration::from_secs(10), || got.opened() == 1));
    (server, got, relay, conn)
}

/// TLS with a key, through the recording relay: the frames arrive and
/// echo, and the relay's recording (both ways) holds none of the
/// plaintext: not the frames, not the handshake's messages.
#[test]
fn tls_relay_records_none_of_the_plaintext() {
    let Some(certs) = Certs::make("tls_relay_records_none_of_the_plaintext") else {
        return;
    };
    let secret: Vec<u8> = b"SECRET-".iter().copied().cycle().take(100_000).collect();
    for mode in [Mode::Threaded, Mode::Event] {
        let (_server, got, relay, conn) = through_relay(&certs, mode);
        for frame in [ORDER, &secret] {
            conn.send(frame).unwrap();
            assert!(conn.recv_with(|f| f == frame).unwrap(), "{mode:?}: echo");
        }
        assert_eq!(
            got.frames(),
            vec![ORDER.to_vec(), secret.clone()],
            "{mode:?}"
        );
        drop(conn);
        let (up, down) = relay.recorded();
        assert!(
            up.len() > secret.len() && down.len() > secret.len(),
            "{mode:?}: relayed"
        );
        for plain in [
            ORDER,
            b"SECRET-SECRET-",
            b"#CHALLENGE#",
            b"#WELCOME#",
            b"{sha256}",
            KEY,
        ] {
            assert!(
                !relay::contains(&up, plain) && !relay::contains(&down, plain),
                "{mode:?}: the relay read {:?}",
                String::from_utf8_lossy(plain)
            );
        }
    }
}

/// TLS with a key, the relay rewriting one byte of the client's first
/// record after the handshake: the server closes the connection with a
/// TLS error naming the integrity check, the client gets an error too,
/// and no frame (altered or not) reaches the handler. Both modes.
#[test]
fn tls_relay_rewriting_a_byte_is_refused_and_nothing_altered_arrives() {
    let Some(certs) = Certs::make("tls_relay_rewriting_a_byte_is_refused") else {
        return;
    };
    for mode in [Mode::Threaded, Mode::Event] {
        let (server, got, relay, conn) = through_relay(&certs, mode);
        relay.arm(STRIKE, MASK);
        conn.send(ORDER).unwrap();
        let e = conn
            .recv_with(|f| f.to_vec())
            .expect_err("the altered record was answered");
        assert!(relay.rewritten(), "{mode:?}");
        assert_eq!(e.kind(), sockserv::ErrorKind::Tls, "{mode:?}: client: {e}");
        assert!(wait_until(Duration::from_secs(10), || !got
            .errors()
            .is_empty()));
        let seen = got.errors()[0].clone();
        assert_eq!(
            seen.kind(),
            sockserv::ErrorKind::Tls,
            "{mode:?}: server: {seen}"
        );
        assert!(
            seen.detail().contains("integrity"),
            "{mode:?}: server: {seen}"
        );
        assert!(got.frames().is_empty(), "{mode:?}: {:?}", got.frames());
        // The server goes on: a direct client is served.
        let direct = sockserv::connect(server.local_addr(), &tls_client_config(&certs)).unwrap();
        roundtrip(&direct, b"pay alice 100");
        eprintln!("{mode:?}: rewritten record: client: {e}\n    server: {seen}");
    }
}

// ---- floods and slow handshakes over TLS ----

/// Strangers held open during the slow-handshake test, of each kind.
const STRANGERS: usize = 200;
/// Newcomers timed while they sit.
const NEWCOMERS: usize = 30;
/// A newcomer (connect + TLS + HMAC + one echo) slower than this fails
/// (times [`time_scale`]; measured on a loaded 2-core machine, debug
/// build: at most 0.4 s).
const NEWCOMER_LIMIT: Duration = Duration::from_secs(2);

/// A real ClientHello (rustls, TLS 1.3) for 127.0.0.1, as the first bytes
/// a client sends.
fn client_hello(certs: &Certs) -> Vec<u8> {
    let config = common::tunnel::rustls_client_config(&certs.ca.cert);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Slow and abandoned TLS handshakes, in both modes, with a 1 s handshake
/// timeout: strangers that send nothing, a third of a ClientHello, or a
/// whole one and then never finish (the server did its signing for them)
/// sit while newcomers are timed; every newcomer gets through within the
/// limit, and every stranger is cut off by the deadline and counted as a
/// handshake failure. Then a flood of garbage records: each connection
/// refused with a TLS error at once, a canary never notices.
#[test]
fn tls_slow_handshakes_and_floods_are_bounded() {
    let Some(certs) = Certs::make("tls_slow_handshakes_and_floods_are_bounded") else {
        return;
    };
    assert!(raise_fd_limit() as usize > 4 * STRANGERS + 200);
    let hello = client_hello(&certs);
    assert_eq!(hello[0], 0x16, "a handshake record");
    for mode in [Mode::Threaded, Mode::Event] {
        let mut config = tls_server_config(&certs);
        config
            .set_handshake_timeout(Duration::from_secs(1))
            .unwrap();
        config.set_max_connections(4 * STRANGERS + 100).unwrap();
        let (server, got) = keeping_server("tls://127.0.0.1:0", &config, mode);
        let target = server.local_addr().trim_start_matches("tls://").to_string();
        let failures = server.stats().handshake_failures;
        let started = Instant::now();
        let mut strangers: Vec<std::net::TcpStream> = Vec::new();
        for i in 0..3 * STRANGERS {
            let mut s = std::net::TcpStream::connect(&target).unwrap();
            match i % 3 {
                0 => {}
                1 => s.write_all(&hello[..hello.len() / 3]).unwrap(),
                _ => s.write_all(&hello).unwrap(),
            }
            strangers.push(s);
        }
        let mut client = tls_client_config(&certs);
        let limit = NEWCOMER_LIMIT * time_scale();
        client.set_handshake_timeout(limit).unwrap();
        let mut times = Vec::new();
        for i in 0..NEWCOMERS {
            let t = Instant::now();
            let conn = sockserv::connect(server.local_addr(), &client)
                .unwrap_or_else(|e| panic!("{mode:?}: newcomer {i}: {e}"));
            roundtrip(&conn, b"newcomer");
            times.push(t.elapsed());
        }
        let slowest = *times.iter().max().unwrap();
        assert!(
            slowest < limit,
            "{mode:?}: a newcomer took {slowest:?} among {} strangers",
            strangers.len()
        );
        // Each stranger is cut off by the deadline: the server closes it.
        let cut_by = Instant::now();
        for s in &mut strangers {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        }
        let all_closed_after = started.elapsed();
        assert!(
            all_closed_after < Duration::from_secs(8) * time_scale(),
            "{mode:?}: the strangers were closed only after {all_closed_after:?}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || server.stats().handshake_failures
                >= failures + 3 * STRANGERS as u64),
            "{mode:?}: {} handshake failures counted for {} strangers",
            server.stats().handshake_failures - failures,
            3 * STRANGERS
        );
        eprintln!(
            "{mode:?}: {} TLS strangers (silent, a third of a ClientHello, a whole one): \
             {NEWCOMERS} newcomers, slowest {slowest:?}; all strangers closed {:?} after \
             the start ({:?} spent waiting for the last)",
            3 * STRANGERS,
            all_closed_after,
            cut_by.elapsed()
        );

        // A flood of garbage: 200 connections each writing 64 KiB that
        // claim to be TLS records (the header right, the body noise) and
        // 200 writing plain noise, while a canary exchanges frames.
        let canary = Canary::start(&server, &tls_client_config(&certs));
        let failures = server.stats().handshake_failures;
        let flood_started = Instant::now();
        let floods: Vec<_> = (0..2 * STRANGERS)
            .map(|i| {
                let target = target.clone();
                std::thread::spawn(move || {
                    let Ok(mut s) = std::net::TcpStream::connect(&target) else {
                        return;
                    };
                    let mut noise: Vec<u8> = (0..65536u32)
                        .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i as u32) >> 13) as u8)
                        .collect();
                    if i % 2 == 0 {
                        noise[..5].copy_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00]);
                    }
                    let _ = s.write_all(&noise);
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest);
                })
            })
            .collect();
        for f in floods {
            f.join().unwrap();
        }
        let flood_took = flood_started.elapsed();
        assert!(
            wait_until(Duration::from_secs(5), || server.stats().handshake_failures
                >= failures + 2 * STRANGERS as u64),
            "{mode:?}: {} of the {} flooding connections counted",
            server.stats().handshake_failures - failures,
            2 * STRANGERS
        );
        let exchanged = canary.finish();
        assert!(exchanged > 0, "{mode:?}");
        assert!(
            got.frames()
                .iter()
                .all(|f| f == b"newcomer" || f.len() == 8),
            "{mode:?}: a stranger's bytes reached the handler"
        );
        eprintln!(
            "{mode:?}: {} flooding connections refused in {flood_took:?}; the canary \
             exchanged {exchanged} frames meanwhile",
            2 * STRANGERS
        );
    }
}

/// One deadline covers the whole preamble: PROXY header, TLS handshake
/// and HMAC handshake. A peer that waits 0.3 s before its PROXY header
/// and 0.3 s more before its TLS handshake (each well inside a 1 s
/// handshake timeout), then never answers the challenge, is cut off 1 s
/// after it connected, not 1 s after its last step. Both modes.
#[test]
fn one_deadline_covers_proxy_header_tls_and_handshake() {
    let Some(certs) = Certs::make("one_deadline_covers_proxy_header_tls_and_handshake") else {
        return;
    };
    const DEADLINE: Duration = Duration::from_secs(1);
    const PAUSE: Duration = Duration::from_millis(300);
    for mode in [Mode::Threaded, Mode::Event] {
        let mut config = tls_server_config(&certs);
        config.set_proxy_protocol(sockserv::ProxyMode::Required);
        config.set_handshake_timeout(DEADLINE).unwrap();
        let (server, got) = keeping_server("tls://127.0.0.1:0", &config, mode);
        let target = server.local_addr().trim_start_matches("tls://").to_string();
        let mut tcp = std::net::TcpStream::connect(&target).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let connected = Instant::now();
        std::thread::sleep(PAUSE);
        tcp.write_all(b"PROXY TCP4 192.0.2.7 192.0.2.8 4321 80\r\n")
            .unwrap();
        std::thread::sleep(PAUSE);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = rustls::ClientConnection::new(
            common::tunnel::rustls_client_config(&certs.ca.cert),
            name,
        )
        .unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).unwrap();
        }
        let tls_done = connected.elapsed();
        // The server's challenge arrives inside TLS; the answer never does.
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let cut_off = connected.elapsed();
        assert!(
            tls_done >= 2 * PAUSE && tls_done < DEADLINE,
            "{mode:?}: TLS done after {tls_done:?}"
        );
        // A deadline restarted at each step would cut it at 1.6 s or later.
        assert!(
            cut_off >= DEADLINE - Duration::from_millis(50)
                && cut_off < DEADLINE + Duration::from_millis(500) * time_scale(),
            "{mode:?}: cut off {cut_off:?} after connecting (deadline {DEADLINE:?})"
        );
        assert!(wait_until(Duration::from_secs(5), || server
            .stats()
            .handshake_failures
            == 1));
        assert_eq!(got.opened(), 0);
        eprintln!("{mode:?}: PROXY + TLS done after {tls_done:?}, cut off after {cut_off:?}");
    }
}

/// Sends `BURST` small frames for each frame it gets.
struct Burst;

const BURST: usize = 2000;

impl EventHandler for Burst {
    fn on_open(&self, _: &Arc<EventConn>) {}
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        for i in 0..BURST {
            let mut out = frame.to_vec();
            out.extend_from_slice(&(i as u32).to_be_bytes());
            if conn.send(&out).is_err() {
                return;
            }
        }
    }
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {}
}

/// The TLS records in a recorded stream: (content type, length) each.
fn records(mut stream: &[u8]) -> Vec<(u8, usize)> {
    let mut found = Vec::new();
    while stream.len() >= 5 {
        let len = u16::from_be_bytes([stream[3], stream[4]]) as usize;
        found.push((stream[0], len));
        stream = &stream[(5 + len).min(stream.len())..];
    }
    found
}

/// Event mode packs many frames into each TLS record: a burst of 2,000
/// frames of 10 bytes sent from one `on_frame` crosses the relay in a
/// handful of records (application data: type 23), not one each.
#[test]
fn event_mode_packs_many_frames_per_tls_record() {
    let Some(certs) = Certs::make("event_mode_packs_many_frames_per_tls_record") else {
        return;
    };
    let server = event_server(
        "tls://127.0.0.1:0",
        &tls_server_config(&certs),
        Arc::new(Burst),
    );
    let relay = Relay::start(server.local_addr().trim_start_matches("tls://"));
    let conn = sockserv::connect(
        &format!("tls://{}", relay.addr()),
        &tls_client_config(&certs),
    )
    .unwrap();
    conn.set_timeout(Some(Duration::from_secs(10)));
    let (_, before) = relay.recorded();
    conn.send(b"burst!").unwrap();
    for i in 0..BURST {
        let frame = conn.recv_with(|f| f.to_vec()).unwrap();
        assert_eq!(&frame[6..], &(i as u32).to_be_bytes());
    }
    let (_, down) = relay.recorded();
    drop(conn);
    let burst: Vec<(u8, usize)> = records(&down[before.len()..])
        .into_iter()
        .filter(|(kind, _)| *kind == 23)
        .collect();
    let bytes: usize = burst.iter().map(|(_, n)| n).sum();
    eprintln!(
        "event mode: {BURST} frames of 10 bytes in {} TLS records ({bytes} bytes of records)",
        burst.len()
    );
    assert!(
        !burst.is_empty() && burst.len() * 20 <= BURST,
        "{BURST} frames took {} records",
        burst.len()
    );
}

/// TLS 1.3 key updates from the client mid-stream (rustls asking the
/// server to update too), in both modes: frames before and after each of
/// several updates echo intact, in both directions.
#[test]
fn key_updates_mid_stream_are_followed() {
    let Some(certs) = Certs::make("key_updates_mid_stream_are_followed") else {
        return;
    };
    let mut config = Config::default();
    config
        .set_tls_cert_files(&certs.server.cert, &certs.server.key)
        .unwrap();
    for mode in [Mode::Threaded, Mode::Event] {
        let (server, got) = keeping_server("tls://127.0.0.1:0", &config, mode);
        let target = server.local_addr().trim_start_matches("tls://").to_string();
        let tcp = std::net::TcpStream::connect(&target).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = rustls::ClientConnection::new(
            common::tunnel::rustls_client_config(&certs.ca.cert),
            name,
        )
        .unwrap();
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        let echo = |stream: &mut rustls::StreamOwned<_, std::net::TcpStream>, payload: &[u8]| {
            let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(payload);
            stream.write_all(&bytes).unwrap();
            stream.flush().unwrap();
            let mut back = vec![0u8; bytes.len()];
            stream
                .read_exact(&mut back)
                .unwrap_or_else(|e| panic!("{mode:?}: no echo of {payload:?}: {e}"));
            assert_eq!(back, bytes, "{mode:?}");
        };
        echo(&mut stream, b"before any update");
        for round in 0..3u8 {
            stream.conn.refresh_traffic_keys().unwrap();
            echo(&mut stream, &[b'k', round]);
            echo(&mut stream, &vec![round; 40_000]);
        }
        assert_eq!(got.frames().len(), 7, "{mode:?}");
        assert!(got.errors().is_empty(), "{mode:?}: {:?}", got.errors());
    }
}

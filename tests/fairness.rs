//! Event mode: a client flooding zero-length frames does not stall its
//! neighbours on the same I/O thread; each connection gets a fair share of
//! a turn (issue 10, finding 2). Also inside TLS, where thousands of frames
//! arrive in each record. The tests run one at a time (SERIAL) in their
//! own binary, so the timings are each test's alone.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::Certs;
use common::*;
use sockserv::{connect, Config};

const ROUNDTRIPS: usize = 500;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Echoes frames with a payload; empty ones (the flood) are taken and
/// dropped, so the flooder needs no reader and the test's threads leave
/// the CPUs to the I/O thread and the victim.
struct EchoNonEmpty;

impl sockserv::EventHandler for EchoNonEmpty {
    fn on_open(&self, _: &Arc<sockserv::EventConn>) {}
    fn on_frame(&self, conn: &Arc<sockserv::EventConn>, frame: &[u8]) {
        if !frame.is_empty() {
            let _ = conn.send(frame);
        }
    }
    fn on_close(&self, _: &Arc<sockserv::EventConn>, _: Option<&sockserv::Error>) {}
}

/// The victim's round-trip times, sorted.
fn victim_roundtrips(server: &sockserv::Server, config: &Config) -> Vec<Duration> {
    let victim = connect(server.local_addr(), config).unwrap();
    victim.set_timeout(Some(Duration::from_secs(10)));
    let mut times: Vec<Duration> = (0..ROUNDTRIPS)
        .map(|i| {
            let started = Instant::now();
            roundtrip(&victim, &(i as u32).to_be_bytes());
            started.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() * 99 / 100]
}

#[test]
fn a_flood_of_empty_frames_does_not_stall_a_neighbour() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut config = config_with_key(KEY);
    config.set_io_threads(1);
    let server = event_server("tcp://127.0.0.1:0", &config, Arc::new(EchoNonEmpty));
    let quiet = p99(&victim_roundtrips(&server, &config));

    let flooder = authenticated_raw(&server, &config);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = flooder.try_clone().unwrap();
    let flag = stop.clone();
    // 16,384 zero-length frames per write, as fast as the server takes
    // them (the writer blocks while the socket is full).
    let flood = std::thread::spawn(move || {
        let batch = vec![0u8; 64 * 1024];
        let started = Instant::now();
        let mut sent = 0u64;
        while !flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
            if writer.write_all(&batch).is_err() {
                break;
            }
            sent += batch.len() as u64 / 4;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let flooded = victim_roundtrips(&server, &config);
    stop.store(true, Ordering::SeqCst);
    let sent = flood.join().unwrap();
    flooder.shutdown(std::net::Shutdown::Both).unwrap();
    let p99_flooded = p99(&flooded);
    eprintln!("victim p99: {quiet:?} quiet, {p99_flooded:?} during a flood of {sent} empty frames");
    assert!(
        sent > 1_000_000,
        "the flood did not get going: {sent} frames"
    );
    // Debug build, 2 shared CPUs: 75-77 us with a share of 256 frames per
    // turn (2.9-3.8 ms with 1,024); 15 ms to 2.9 s when a turn took whole
    // read batches (64 k empty frames a batch) from the flooder.
    assert!(
        p99_flooded < Duration::from_millis(10),
        "a neighbour's p99 went from {quiet:?} to {p99_flooded:?} during the flood"
    );
}

#[test]
fn a_flood_of_empty_frames_inside_tls_does_not_stall_a_neighbour() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(certs) = Certs::make("a_flood_of_empty_frames_inside_tls_does_not_stall") else {
        return;
    };
    let mut config = Config::default();
    config
        .set_tls_cert_files(&certs.server.cert, &certs.server.key)
        .unwrap();
    config.set_tls_ca_file(&certs.ca.cert).unwrap();
    config.set_io_threads(1);
    let server = event_server("tls://127.0.0.1:0", &config, Arc::new(EchoNonEmpty));
    let quiet = p99(&victim_roundtrips(&server, &config));

    // The flooder: rustls straight on a socket, 16,384 zero-length frames
    // per write (four records' worth), as fast as the server takes them.
    let tcp =
        std::net::TcpStream::connect(server.local_addr().trim_start_matches("tls://")).unwrap();
    let closer = tcp.try_clone().unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls =
        rustls::ClientConnection::new(common::tunnel::rustls_client_config(&certs.ca.cert), name)
            .unwrap();
    let mut flooder = rustls::StreamOwned::new(tls, tcp);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let flood = std::thread::spawn(move || {
        let batch = vec![0u8; 64 * 1024];
        let started = Instant::now();
        let mut sent = 0u64;
        while !flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
            if flooder.write_all(&batch).is_err() {
                break;
            }
            sent += batch.len() as u64 / 4;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let flooded = victim_roundtrips(&server, &config);
    stop.store(true, Ordering::SeqCst);
    let _ = closer.shutdown(std::net::Shutdown::Both);
    let sent = flood.join().unwrap();
    let p99_flooded = p99(&flooded);
    eprintln!(
        "victim p99 over TLS: {quiet:?} quiet, {p99_flooded:?} during a flood of {sent} empty \
         frames inside TLS"
    );
    assert!(
        sent > 1_000_000,
        "the flood did not get going: {sent} frames"
    );
    // Twice the plaintext bound of tests/fairness.rs (10 ms): a record
    // (4,096 empty frames) is decrypted whole before its frames are shared
    // out. Measured, debug build, 2 cores at a load average of 15:
    // 0.2 to 6 ms (a turn that took whole reads of the flood: 15 ms to
    // seconds, as in plaintext).
    let bound = Duration::from_millis(20) * time_scale();
    assert!(
        p99_flooded < bound,
        "a neighbour's p99 went from {quiet:?} to {p99_flooded:?} during the flood"
    );
}

/// The other side of a turn's share: frames a turn left decrypted (its
/// share spent) are delivered on the next turn, though the socket has
/// nothing more to read. 75 frames of 0 to 256 KiB sent back to back on
/// one connection all echo (this stalled at frame 71 when the next turn
/// looked only at the wire buffer, which TLS empties into its plaintext
/// one).
#[test]
fn frames_left_over_from_a_turn_inside_tls_are_delivered() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(certs) = Certs::make("frames_left_over_from_a_turn_inside_tls_are_delivered") else {
        return;
    };
    const MAX: usize = 256 * 1024;
    const FRAMES: u32 = 75;
    let mut config = config_with_key(KEY);
    config
        .set_tls_cert_files(&certs.server.cert, &certs.server.key)
        .unwrap();
    config.set_tls_ca_file(&certs.ca.cert).unwrap();
    config.set_max_frame_size(MAX as u64).unwrap();
    let server = event_server("tls://127.0.0.1:0", &config, Arc::new(EventEcho::default()));
    let conn = Arc::new(connect(server.local_addr(), &config).unwrap());
    conn.set_timeout(Some(Duration::from_secs(5) * time_scale()));
    let sender = {
        let conn = conn.clone();
        std::thread::spawn(move || {
            let mut frame = Vec::new();
            for seq in 0..FRAMES {
                test_frame(0, seq, MAX, &mut frame);
                if conn.send(&frame).is_err() {
                    return;
                }
            }
        })
    };
    let mut want = Vec::new();
    for seq in 0..FRAMES {
        test_frame(0, seq, MAX, &mut want);
        let same = conn
            .recv_with(|got| got == want.as_slice())
            .unwrap_or_else(|e| panic!("frame {seq} of {FRAMES} ({} bytes): {e}", want.len()));
        assert!(same, "frame {seq} came back different");
    }
    sender.join().unwrap();
}

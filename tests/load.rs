//! Load: many clients, each sending many frames of random sizes through
//! one authenticated echo server, in both modes. The server checks every
//! frame against what that client's frame of that number must be (so a
//! lost, corrupted or reordered frame shows as a mismatch there), and
//! each client checks every echo the same way. Zero lost, zero corrupted,
//! zero reordered, and the server's counters equal the clients'.
//!
//! Frame sizes are drawn log-uniformly from 0 B to 256 KiB: each power-of-
//! two size class (0, 1, 2-3, 4-7, ... 128-256 KiB) equally often, so small
//! and large frames both get their share (the mean is 32 KiB).
//!
//! The default profile is small, for every `cargo test`. The full run:
//!
//!     SOCKSERV_LOAD=200x5000 cargo test --release --test load -- --nocapture
//!
//! (CLIENTSxFRAMES; figures of one full run are in docs/RELIABILITY.md).
//!
//! The same over TLS 1.3 (issue 11), certificates made at test time: by
//! default half the clients with half the frames each (a quarter of the
//! bytes, so the TLS cases add little to the run), or
//! `SOCKSERV_LOAD_TLS=CLIENTSxFRAMES`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sockserv::{connect, Config, Connection, Error, EventConn, EventHandler, Server};

const MAX_SIZE: usize = 256 * 1024;

fn profile(tls: bool) -> (u32, u32) {
    let (var, default) = if tls {
        ("SOCKSERV_LOAD_TLS", "12x75")
    } else {
        ("SOCKSERV_LOAD", "24x150")
    };
    let spec = std::env::var(var).unwrap_or_else(|_| default.into());
    let (c, f) = spec
        .split_once('x')
        .unwrap_or_else(|| panic!("SOCKSERV_LOAD={spec}: expected CLIENTSxFRAMES"));
    (c.parse().unwrap(), f.parse().unwrap())
}

/// Frame `seq` of client `client`.
fn frame(client: u32, seq: u32, out: &mut Vec<u8>) {
    test_frame(client, seq, MAX_SIZE, out);
}

/// Per connection, on the server: which client, and the next frame due.
#[derive(Default)]
struct Expect {
    client: Option<u32>,
    next: u32,
    scratch: Vec<u8>,
}

impl Expect {
    /// Checks one received frame; the first frame names the client.
    fn check(&mut self, got: &[u8], counters: &Counters) {
        let Some(client) = self.client else {
            self.client = Some(u32::from_be_bytes(got.try_into().expect("hello frame")));
            return;
        };
        frame(client, self.next, &mut self.scratch);
        if got == self.scratch.as_slice() {
            counters.frames.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes
                .fetch_add(got.len() as u64, Ordering::Relaxed);
        } else {
            counters.bad.fetch_add(1, Ordering::Relaxed);
        }
        self.next += 1;
    }
}

#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Frames that were not the one due: lost, corrupted or reordered.
    bad: AtomicU64,
    /// Echoes the server could not queue (event mode).
    refused: AtomicU64,
}

#[derive(Default)]
struct EventCheck {
    counters: Counters,
    conns: Mutex<HashMap<usize, Expect>>,
}

fn key(conn: &Arc<EventConn>) -> usize {
    Arc::as_ptr(conn) as usize
}

impl EventHandler for EventCheck {
    fn on_open(&self, conn: &Arc<EventConn>) {
        self.conns
            .lock()
            .unwrap()
            .insert(key(conn), Expect::default());
    }
    fn on_frame(&self, conn: &Arc<EventConn>, got: &[u8]) {
        // Each connection's callbacks run on one I/O thread, in order.
        if let Some(e) = self.conns.lock().unwrap().get_mut(&key(conn)) {
            e.check(got, &self.counters);
        }
        if conn.send(got).is_err() {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn on_close(&self, conn: &Arc<EventConn>, _: Option<&Error>) {
        self.conns.lock().unwrap().remove(&key(conn));
    }
}

fn start(mode: Mode, config: &Config, addr: &str) -> (Server, Arc<EventCheck>) {
    let check = Arc::new(EventCheck::default());
    let server = Server::bind(addr, config).unwrap();
    match mode {
        Mode::Threaded => {
            let check = check.clone();
            server
                .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                    let mut expect = Expect::default();
                    // Check the frame where it lies and echo it from there
                    // (sending while the receive buffer is borrowed is
                    // fine: sends and receives have separate locks).
                    while let Ok(Ok(())) = conn.recv_with(|got| {
                        expect.check(got, &check.counters);
                        conn.send(got)
                    }) {}
                }))
                .unwrap();
        }
        Mode::Event => server.set_event_handler(check.clone()).unwrap(),
    }
    server.start().unwrap();
    (server, check)
}

#[test]
fn threaded_load_loses_corrupts_and_reorders_nothing() {
    load(Mode::Threaded, false);
}

#[test]
fn event_load_loses_corrupts_and_reorders_nothing() {
    load(Mode::Event, false);
}

#[test]
fn threaded_tls_load_loses_corrupts_and_reorders_nothing() {
    load(Mode::Threaded, true);
}

#[test]
fn event_tls_load_loses_corrupts_and_reorders_nothing() {
    load(Mode::Event, true);
}

fn load(mode: Mode, tls: bool) {
    let (clients, frames) = profile(tls);
    let certs = if tls {
        match common::certs::Certs::make("tls_load") {
            Some(certs) => Some(certs),
            None => return,
        }
    } else {
        None
    };
    let mut config = config_with_key(KEY);
    let mut addr = "tcp://127.0.0.1:0";
    if let Some(certs) = &certs {
        // One config for both ends: the server's certificate, the
        // clients' CA.
        config
            .set_tls_cert_files(&certs.server.cert, &certs.server.key)
            .unwrap();
        config.set_tls_ca_file(&certs.ca.cert).unwrap();
        addr = "tls://127.0.0.1:0";
    }
    config.set_max_frame_size(MAX_SIZE as u64).unwrap();
    config.set_max_connections(clients as usize + 8).unwrap();
    config
        .set_handshake_timeout(Duration::from_secs(60))
        .unwrap();
    let (server, check) = start(mode, &config, addr);
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let echoed = Arc::new(AtomicU64::new(0));
    let bad_echoes = Arc::new(AtomicU64::new(0));
    // Clients connect while the earlier ones are already busy: how long
    // the slowest connect and handshake took tells whether newcomers wait.
    let slowest_connect = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let addr = server.local_addr().to_string();
            let config = config.clone();
            let (sent, echoed, bad_echoes) = (sent.clone(), echoed.clone(), bad_echoes.clone());
            let slowest_connect = slowest_connect.clone();
            std::thread::Builder::new()
                .name(format!("load-client-{client}"))
                .spawn(move || {
                    let connecting = Instant::now();
                    let conn = Arc::new(connect(&addr, &config).expect("connect"));
                    slowest_connect
                        .fetch_max(connecting.elapsed().as_millis() as u64, Ordering::Relaxed);
                    conn.set_timeout(Some(Duration::from_secs(if tls { 30 } else { 120 })));
                    // The first frame names the client (echoed like the rest).
                    roundtrip(&conn, &client.to_be_bytes());
                    // Send on a thread of its own while this one reads the
                    // echoes, so neither side blocks on a full socket.
                    let sender = {
                        let conn = conn.clone();
                        let sent = sent.clone();
                        std::thread::spawn(move || {
                            let mut buf = Vec::with_capacity(MAX_SIZE);
                            for seq in 0..frames {
                                frame(client, seq, &mut buf);
                                conn.send(&buf).expect("send");
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                    };
                    let mut want = Vec::with_capacity(MAX_SIZE);
                    for seq in 0..frames {
                        frame(client, seq, &mut want);
                        let same = conn.recv_with(|got| got == want.as_slice()).expect("recv");
                        if same {
                            echoed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            bad_echoes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    sender.join().unwrap();
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
    let elapsed = started.elapsed();
    let total = u64::from(clients) * u64::from(frames);
    let c = &check.counters;
    assert!(wait_until(Duration::from_secs(30), || server
        .stats()
        .active
        == 0));
    let stats = server.stats();
    let (got, bytes, bad) = (
        c.frames.load(Ordering::SeqCst),
        c.bytes.load(Ordering::SeqCst),
        c.bad.load(Ordering::SeqCst),
    );
    let report = format!(
        "{mode:?}{}: {clients} clients x {frames} frames in {elapsed:.1?}: sent {}, server got {got} \
         right ({:.1} MiB, {:.0} MiB/s each way), {bad} wrong, {} echoes refused; clients got {} \
         echoes right, {} wrong; slowest connect + handshake {} ms; server stats {stats:?}",
        if tls { " over TLS" } else { "" },
        sent.load(Ordering::SeqCst),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
        c.refused.load(Ordering::SeqCst),
        echoed.load(Ordering::SeqCst),
        bad_echoes.load(Ordering::SeqCst),
        slowest_connect.load(Ordering::SeqCst),
    );
    // Straight to fd 2: the figures show even when the test passes.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n{report}\n");
    assert_eq!(sent.load(Ordering::SeqCst), total, "{report}");
    assert_eq!(got, total, "{report}");
    assert_eq!(bad, 0, "{report}");
    assert_eq!(c.refused.load(Ordering::SeqCst), 0, "{report}");
    assert_eq!(echoed.load(Ordering::SeqCst), total, "{report}");
    assert_eq!(bad_echoes.load(Ordering::SeqCst), 0, "{report}");
    assert_eq!(stats.accepted, u64::from(clients), "{report}");
    assert_eq!(stats.handled, u64::from(clients), "{report}");
    assert_eq!(stats.handshake_failures, 0, "{report}");
    // Newcomers are let in within the default handshake timeout (10 s),
    // so a client with the default config would not be refused while the
    // earlier ones stream; this test's own timeout is 60 s, so that is a
    // real bound (measured with the default profile on a loaded 2-core
    // machine: 0.3 s threaded, up to 4.2 s event). Scaled under a
    // sanitizer by SOCKSERV_TIME_SCALE.
    let bound = 10_000 * u64::from(time_scale());
    assert!(
        slowest_connect.load(Ordering::SeqCst) < bound,
        "a newcomer waited past {bound} ms:\n{report}"
    );
}

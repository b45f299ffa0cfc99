//! A server dropped while 100 connections are in the middle of transfers,
//! in both modes: the drop returns promptly, every server thread is joined,
//! every handler's last call (or on_close) reports the shutdown, no frame is
//! ever delivered partial or corrupted on either side, the counts agree
//! (echoed <= delivered <= sent), and no fd or thread is left once the
//! clients are gone. One test in its own binary, so the counts are its own.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sockserv::{connect, Connection, Error, ErrorKind, EventConn, EventHandler, Server};

const CLIENTS: u32 = 100;
const MAX_SIZE: usize = 64 * 1024;
/// Frames a client may have sent and not yet seen echoed.
const WINDOW: u64 = 8;

/// What the server side saw, per client.
struct Tally {
    delivered: Vec<AtomicU64>,
    bad: AtomicU64,
    endings: Mutex<Vec<ErrorKind>>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            delivered: (0..CLIENTS).map(|_| AtomicU64::new(0)).collect(),
            bad: AtomicU64::new(0),
            endings: Mutex::new(Vec::new()),
        }
    }

    /// Checks a frame: "client, seq" first, then the frame due.
    fn check(&self, got: &[u8], scratch: &mut Vec<u8>) {
        let ok = got.len() >= 8 && {
            let client = u32::from_be_bytes(got[..4].try_into().unwrap());
            let seq = u32::from_be_bytes(got[4..8].try_into().unwrap());
            let due = self
                .delivered
                .get(client as usize)
                .map(|d| d.load(Ordering::SeqCst));
            test_frame(client, seq, MAX_SIZE, scratch);
            if due == Some(u64::from(seq)) && got[8..] == scratch[..] {
                self.delivered[client as usize].fetch_add(1, Ordering::SeqCst);
                true
            } else {
                false
            }
        };
        if !ok {
            self.bad.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn wire_frame(client: u32, seq: u32, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    test_frame(client, seq, MAX_SIZE, scratch);
    out.clear();
    out.extend_from_slice(&client.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(scratch);
}

struct EventTally(Arc<Tally>, Mutex<Vec<u8>>);

impl EventHandler for EventTally {
    fn on_open(&self, _: &Arc<EventConn>) {}
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        self.0.check(frame, &mut self.1.lock().unwrap());
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, reason: Option<&Error>) {
        let kind = reason.map_or(ErrorKind::Closed, Error::kind);
        self.0.endings.lock().unwrap().push(kind);
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientEnd {
    sent: u64,
    echoed: u64,
    bad_echoes: u64,
    recv_error: Option<ErrorKind>,
}

#[test]
fn dropping_a_server_mid_transfer_loses_nothing_silently_and_leaks_nothing() {
    let (fds, tasks) = (open_fds(), threads());
    for mode in [Mode::Event, Mode::Threaded] {
        run(mode);
        assert_eq!(open_fds(), fds, "{mode:?}: file descriptors leaked");
        assert_eq!(threads(), tasks, "{mode:?}: threads leaked");
    }
}

fn run(mode: Mode) {
    let mut config = config_with_key(KEY);
    config.set_max_connections(CLIENTS as usize + 8).unwrap();
    let tally = Arc::new(Tally::new());
    let server = Server::bind("tcp://127.0.0.1:0", &config).unwrap();
    match mode {
        Mode::Threaded => {
            let tally = tally.clone();
            server
                .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                    let mut scratch = Vec::new();
                    let ending = loop {
                        match conn.recv_with(|f| {
                            tally.check(f, &mut scratch);
                            conn.send(f)
                        }) {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) | Err(e) => break e.kind(),
                        }
                    };
                    tally.endings.lock().unwrap().push(ending);
                }))
                .unwrap();
        }
        Mode::Event => server
            .set_event_handler(Arc::new(EventTally(tally.clone(), Mutex::default())))
            .unwrap(),
    }
    server.start().unwrap();

    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    // Everyone connects first, then all transfer at once.
    let conns: Vec<Arc<Connection>> = (0..CLIENTS)
        .map(|_| {
            let conn = connect(server.local_addr(), &config).expect("connect");
            conn.set_timeout(Some(Duration::from_secs(30)));
            Arc::new(conn)
        })
        .collect();
    let clients: Vec<_> = conns
        .into_iter()
        .zip(0..CLIENTS)
        .map(|(conn, client)| {
            let (progress, stop) = (progress.clone(), stop.clone());
            std::thread::spawn(move || {
                let sender = {
                    let (conn, stop, progress) = (conn.clone(), stop.clone(), progress.clone());
                    std::thread::spawn(move || {
                        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
                        let started = Instant::now();
                        let mut sent = 0u64;
                        // Until the server goes (or the bounds).
                        while sent < 1_000_000 && started.elapsed() < Duration::from_secs(60) {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            // At most WINDOW frames in flight: a steady
                            // transfer, not a flood that starves the rest.
                            if sent - progress[client as usize].load(Ordering::SeqCst) >= WINDOW {
                                std::thread::sleep(Duration::from_millis(1));
                                continue;
                            }
                            wire_frame(client, sent as u32, &mut buf, &mut scratch);
                            if conn.send(&buf).is_err() {
                                break;
                            }
                            sent += 1;
                        }
                        sent
                    })
                };
                let mut end = ClientEnd::default();
                let (mut want, mut scratch) = (Vec::new(), Vec::new());
                loop {
                    wire_frame(client, end.echoed as u32, &mut want, &mut scratch);
                    match conn.recv_with(|f| f == want.as_slice()) {
                        Ok(true) => {
                            end.echoed += 1;
                            progress[client as usize].fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => end.bad_echoes += 1,
                        Err(e) => {
                            end.recv_error = Some(e.kind());
                            break;
                        }
                    }
                    if end.echoed + end.bad_echoes > 1_000_000 {
                        break;
                    }
                }
                // The receive side is done: stop sending too (a sender
                // still blocked is woken by the socket's close).
                stop.store(true, Ordering::SeqCst);
                conn.close();
                end.sent = sender.join().unwrap();
                end
            })
        })
        .collect();

    // Every client is mid-transfer: each has had some echoes.
    assert!(
        wait_until(Duration::from_secs(60), || progress
            .iter()
            .all(|p| p.load(Ordering::SeqCst) >= 3)),
        "{mode:?}: not every client got going: {:?}",
        progress
            .iter()
            .map(|p| p.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    );
    let dropping = Instant::now();
    drop(server);
    let drop_took = dropping.elapsed();
    let ends: Vec<ClientEnd> = clients.into_iter().map(|t| t.join().unwrap()).collect();

    // The promise (docs/RELIABILITY.md): drop returns in under 0.1 s (60 ms
    // measured at a load average of 35). The bound is 5x that, as margin
    // for a loaded machine, times SOCKSERV_TIME_SCALE under a sanitizer.
    let bound = Duration::from_millis(500) * time_scale();
    assert!(
        drop_took < bound,
        "{mode:?}: drop took {drop_took:?}, over {bound:?} (promised: under 0.1 s)"
    );
    assert_eq!(
        tally.bad.load(Ordering::SeqCst),
        0,
        "{mode:?}: a frame arrived wrong"
    );
    let endings = tally.endings.lock().unwrap().clone();
    assert_eq!(
        endings.len(),
        CLIENTS as usize,
        "{mode:?}: every handler ended"
    );
    assert!(
        endings.iter().all(|k| *k == ErrorKind::Shutdown),
        "{mode:?}: handlers' last calls: {endings:?}"
    );
    let (mut sent, mut delivered, mut echoed) = (0, 0, 0);
    for (i, end) in ends.iter().enumerate() {
        let d = tally.delivered[i].load(Ordering::SeqCst);
        assert_eq!(end.bad_echoes, 0, "{mode:?}: client {i} got a wrong echo");
        assert!(
            end.echoed <= d && d <= end.sent,
            "{mode:?}: client {i}: {} <= {d} <= {}",
            end.echoed,
            end.sent
        );
        assert!(
            matches!(
                end.recv_error,
                Some(
                    ErrorKind::Closed
                        | ErrorKind::TruncatedFrame
                        | ErrorKind::Io
                        | ErrorKind::Broken
                )
            ),
            "{mode:?}: client {i} ended with {:?}",
            end.recv_error
        );
        sent += end.sent;
        delivered += d;
        echoed += end.echoed;
    }
    eprintln!(
        "{mode:?}: dropped with {CLIENTS} connections mid-transfer in {drop_took:?}: \
         {sent} frames sent, {delivered} delivered whole, {echoed} echoed whole, none wrong; \
         every handler ended with Shutdown"
    );
}

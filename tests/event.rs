//! The event-driven mode: framing and auth over every transport, callbacks
//! exactly once, backpressure, sends across connections and threads,
//! timers, close, shutdown, and the rule for callbacks that block.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sockserv::{connect, Config, Error, ErrorKind, EventConn, EventHandler};

#[test]
fn echo_over_every_transport_with_and_without_a_key() {
    let dir = std::env::temp_dir().join(format!("sockserv-event-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unix = format!("unix://{}/e.sock", dir.display());
    for addr in ["tcp://127.0.0.1:0", "tcp://[::1]:0", unix.as_str()] {
        for config in [Config::default(), config_with_key(KEY)] {
            let handler = Arc::new(EventEcho::default());
            let server = event_server(addr, &config, handler.clone());
            let client = connect(server.local_addr(), &config).unwrap();
            for size in [0, 1, 100, 65_536, 1 << 20, 5 << 20] {
                let payload: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
                roundtrip(&client, &payload);
            }
            drop(client);
            assert!(wait_until(Duration::from_secs(10), || handler
                .closed
                .load(Ordering::SeqCst)
                == 1));
            assert_eq!(handler.opened.load(Ordering::SeqCst), 1);
            let reasons = handler.reasons.lock().unwrap();
            assert_eq!(
                reasons[0].as_ref().map(Error::kind),
                Some(ErrorKind::Closed)
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn many_frames_in_one_read_are_all_delivered_in_order() {
    let server = event_server(
        "tcp://127.0.0.1:0",
        &Config::default(),
        Arc::new(EventEcho::default()),
    );
    let mut s = raw(&server);
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let payload = i.to_be_bytes().repeat((i % 5) as usize);
        burst.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        burst.extend_from_slice(&payload);
    }
    s.write_all(&burst).unwrap();
    for i in 0..2000u32 {
        assert_eq!(
            raw_read_frame(&mut s).unwrap(),
            i.to_be_bytes().repeat((i % 5) as usize)
        );
    }
}

#[test]
fn callbacks_run_exactly_once_per_connection_however_it_ends() {
    let handler = Arc::new(EventEcho::default());
    let config = config_with_key(KEY);
    let server = event_server("tcp://127.0.0.1:0", &config, handler.clone());
    // Ends by the client closing, by a bad frame, by a wrong key (never
    // opened), and by the server's shutdown.
    drop(connect(server.local_addr(), &config).unwrap());
    let mut bad = authenticated_raw(&server, &config);
    bad.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(connect(server.local_addr(), &config_with_key(b"wrong")).is_err());
    let kept = connect(server.local_addr(), &config).unwrap();
    roundtrip(&kept, b"alive");
    assert!(wait_until(Duration::from_secs(10), || handler
        .closed
        .load(Ordering::SeqCst)
        == 2));
    drop(server);
    assert_eq!(handler.opened.load(Ordering::SeqCst), 3);
    assert_eq!(handler.closed.load(Ordering::SeqCst), 3);
    let kinds: Vec<_> = handler
        .reasons
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.as_ref().map(Error::kind))
        .collect();
    assert!(kinds.contains(&Some(ErrorKind::Protocol)), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&Some(ErrorKind::Shutdown)));
}

/// Sends from a thread of its own to every opened connection until the
/// send is refused, recording what it saw.
#[derive(Default)]
struct Flooder {
    conns: Mutex<Vec<Arc<EventConn>>>,
    closed: AtomicBool,
}

impl EventHandler for Flooder {
    fn on_open(&self, conn: &Arc<EventConn>) {
        self.conns.lock().unwrap().push(conn.clone());
    }
    fn on_frame(&self, _: &Arc<EventConn>, _: &[u8]) {}
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// The first connection a Flooder saw open, once it has.
fn first_open(handler: &Flooder) -> Arc<EventConn> {
    assert!(wait_until(Duration::from_secs(10), || !handler
        .conns
        .lock()
        .unwrap()
        .is_empty()));
    handler.conns.lock().unwrap()[0].clone()
}

fn flood_config(limit: usize, close: bool) -> Config {
    let mut config = Config::default();
    config.set_max_queued_bytes(limit).unwrap();
    config.set_close_when_backed_up(close);
    config
}

#[test]
fn a_peer_that_does_not_read_meets_the_queue_limit() {
    const LIMIT: usize = 1 << 20;
    let handler = Arc::new(Flooder::default());
    let server = event_server(
        "tcp://127.0.0.1:0",
        &flood_config(LIMIT, false),
        handler.clone(),
    );
    let client = connect(server.local_addr(), &Config::default()).unwrap();
    let conn = first_open(&handler);
    let frame = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let refused = loop {
        match conn.send(&frame) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(conn.queued_bytes() <= LIMIT + frame.len());
        assert!(sent < 100_000, "the queue never filled");
    };
    assert_eq!(refused.kind(), ErrorKind::WouldBlock, "{refused}");
    assert!(refused.detail().contains(&LIMIT.to_string()), "{refused}");
    // The client reads it all; then sending works again.
    client.set_timeout(Some(Duration::from_secs(10)));
    for _ in 0..sent {
        assert_eq!(client.recv_with(|f| f.len()).unwrap(), frame.len());
    }
    assert!(wait_until(Duration::from_secs(10), || conn.queued_bytes() == 0));
    conn.send(b"again").unwrap();
    assert_eq!(client.recv_with(|f| f.to_vec()).unwrap(), b"again");
}

#[test]
fn a_peer_that_does_not_read_can_be_closed_instead() {
    let handler = Arc::new(Flooder::default());
    let server = event_server(
        "tcp://127.0.0.1:0",
        &flood_config(1 << 20, true),
        handler.clone(),
    );
    let _client = connect(server.local_addr(), &Config::default()).unwrap();
    let conn = first_open(&handler);
    let frame = vec![1u8; 64 * 1024];
    let refused = (0..100_000).find_map(|_| conn.send(&frame).err()).unwrap();
    assert_eq!(refused.kind(), ErrorKind::Closed, "{refused}");
    assert!(wait_until(Duration::from_secs(10), || handler
        .closed
        .load(Ordering::SeqCst)));
}

#[test]
fn reads_pause_while_replies_are_backed_up() {
    const LIMIT: usize = 256 * 1024;
    const FRAMES: usize = 4000;
    let handler = Arc::new(EventEcho::default());
    let server = event_server(
        "tcp://127.0.0.1:0",
        &flood_config(LIMIT, false),
        handler.clone(),
    );
    let client = Arc::new(connect(server.local_addr(), &Config::default()).unwrap());
    // 64 MiB sent, nothing read: the server stops reading instead of
    // queueing every echo, so the sender blocks once the kernel's buffers
    // are full.
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (client, sent) = (client.clone(), sent.clone());
        std::thread::spawn(move || {
            let frame = vec![3u8; 16 * 1024];
            for _ in 0..FRAMES {
                client.send(&frame).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let stalled_at = sent.load(Ordering::SeqCst);
    assert!(
        stalled_at < FRAMES,
        "all 64 MiB went in: the server never stopped reading"
    );
    // Every echo still arrives, whole and in order, once the client reads.
    client.set_timeout(Some(Duration::from_secs(20)));
    for _ in 0..FRAMES {
        assert_eq!(client.recv_with(|f| f.len()).unwrap(), 16 * 1024);
    }
    sender.join().unwrap();
    assert_eq!(handler.closed.load(Ordering::SeqCst), 0);
    eprintln!("the sender stalled after {stalled_at} of {FRAMES} frames");
}

/// Relays frames from each connection to the other one.
#[derive(Default)]
struct Relay {
    conns: Mutex<Vec<Arc<EventConn>>>,
}

impl EventHandler for Relay {
    fn on_open(&self, conn: &Arc<EventConn>) {
        self.conns.lock().unwrap().push(conn.clone());
    }
    fn on_frame(&self, from: &Arc<EventConn>, frame: &[u8]) {
        for to in self.conns.lock().unwrap().iter() {
            if !Arc::ptr_eq(to, from) {
                to.send(frame).unwrap();
            }
        }
    }
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {}
}

#[test]
fn a_callback_can_send_to_another_connection() {
    let mut config = Config::default();
    config.set_io_threads(2);
    let handler = Arc::new(Relay::default());
    let server = event_server("tcp://127.0.0.1:0", &config, handler.clone());
    let a = connect(server.local_addr(), &config).unwrap();
    let b = connect(server.local_addr(), &config).unwrap();
    assert!(wait_until(Duration::from_secs(10), || handler
        .conns
        .lock()
        .unwrap()
        .len()
        == 2));
    for i in 0..100u32 {
        a.send(&i.to_be_bytes()).unwrap();
        assert_eq!(b.recv_with(|f| f.to_vec()).unwrap(), i.to_be_bytes());
        b.send(b"back").unwrap();
        assert_eq!(a.recv_with(|f| f.to_vec()).unwrap(), b"back");
    }
}

/// Replies once, then closes.
struct ReplyThenClose;

impl EventHandler for ReplyThenClose {
    fn on_open(&self, _: &Arc<EventConn>) {}
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        conn.send(frame).unwrap();
        conn.close();
        assert_eq!(
            conn.send(b"too late").unwrap_err().kind(),
            ErrorKind::Closed
        );
    }
    fn on_close(&self, _: &Arc<EventConn>, reason: Option<&Error>) {
        assert!(reason.is_none(), "{reason:?}");
    }
}

#[test]
fn close_writes_what_was_queued_first() {
    let server = event_server(
        "tcp://127.0.0.1:0",
        &Config::default(),
        Arc::new(ReplyThenClose),
    );
    let client = connect(server.local_addr(), &Config::default()).unwrap();
    client.set_timeout(Some(Duration::from_secs(10)));
    let big = vec![9u8; 4 << 20];
    client.send(&big).unwrap();
    assert_eq!(client.recv_with(|f| f.len()).unwrap(), big.len());
    assert_eq!(kind(client.recv_with(|_| ())), ErrorKind::Closed);
}

#[test]
fn handshake_and_idle_timeouts_are_enforced() {
    let handler = Arc::new(EventEcho::default());
    let mut config = config_with_key(KEY);
    config
        .set_handshake_timeout(Duration::from_millis(200))
        .unwrap();
    config.set_idle_timeout(Some(Duration::from_millis(300)));
    let server = event_server("tcp://127.0.0.1:0", &config, handler.clone());
    // Silent during the handshake: closed, never opened.
    let mut silent = raw(&server);
    raw_read_frame(&mut silent).unwrap();
    assert!(wait_until(Duration::from_secs(5), || server
        .stats()
        .handshake_failures
        == 1));
    // Idle after it: closed with TimedOut; activity keeps another alive.
    let idle = connect(server.local_addr(), &config).unwrap();
    let busy = connect(server.local_addr(), &config).unwrap();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(100));
        roundtrip(&busy, b"still here");
    }
    assert!(wait_until(Duration::from_secs(5), || handler
        .closed
        .load(Ordering::SeqCst)
        == 1));
    let reasons = handler.reasons.lock().unwrap().clone();
    assert_eq!(
        reasons[0].as_ref().map(Error::kind),
        Some(ErrorKind::TimedOut),
        "{reasons:?}"
    );
    idle.set_timeout(Some(Duration::from_secs(5)));
    assert_eq!(kind(idle.recv_with(|_| ())), ErrorKind::Closed);
    roundtrip(&busy, b"and still");
}

/// Blocks in on_frame for frames saying "block", until released.
struct Blocker {
    release: AtomicBool,
    blocked: AtomicUsize,
}

impl EventHandler for Blocker {
    fn on_open(&self, _: &Arc<EventConn>) {}
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        if frame == b"block" {
            self.blocked.fetch_add(1, Ordering::SeqCst);
            wait_until(Duration::from_secs(20), || {
                self.release.load(Ordering::SeqCst)
            });
        }
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {}
}

/// The documented rule: a callback that blocks holds up only the
/// connections of its own I/O thread; the other threads' go on.
#[test]
fn a_blocking_callback_stalls_only_its_own_io_thread() {
    let mut config = Config::default();
    config.set_io_threads(2);
    let handler = Arc::new(Blocker {
        release: AtomicBool::new(false),
        blocked: AtomicUsize::new(0),
    });
    let server = event_server("tcp://127.0.0.1:0", &config, handler.clone());
    // Connections go to the I/O threads in turn: first to 0, second to 1.
    let first = connect(server.local_addr(), &config).unwrap();
    roundtrip(&first, b"on thread 0");
    let second = connect(server.local_addr(), &config).unwrap();
    roundtrip(&second, b"on thread 1");
    first.send(b"block").unwrap();
    assert!(wait_until(Duration::from_secs(5), || handler
        .blocked
        .load(Ordering::SeqCst)
        == 1));
    for i in 0..50u32 {
        roundtrip(&second, &i.to_be_bytes());
    }
    handler.release.store(true, Ordering::SeqCst);
    assert_eq!(first.recv_with(|f| f.to_vec()).unwrap(), b"block");
}

#[test]
fn sends_from_other_threads_reach_the_peer_in_order() {
    let handler = Arc::new(Flooder::default());
    let server = event_server("tcp://127.0.0.1:0", &Config::default(), handler.clone());
    let client = connect(server.local_addr(), &Config::default()).unwrap();
    let conn = first_open(&handler);
    let senders: Vec<_> = (0..4u8)
        .map(|t| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                for seq in 0..500u32 {
                    // Every 25th frame is large enough to be written directly by send.
                    let len = if seq % 25 == 0 {
                        70_000
                    } else {
                        5 + seq as usize % 3000
                    };
                    let mut frame = vec![t; len];
                    frame[1..5].copy_from_slice(&seq.to_be_bytes());
                    while let Err(e) = conn.send(&frame) {
                        assert_eq!(e.kind(), ErrorKind::WouldBlock);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    client.set_timeout(Some(Duration::from_secs(20)));
    let mut next = [0u32; 4];
    for _ in 0..2000 {
        let frame = client.recv_with(|f| f.to_vec()).unwrap();
        let t = frame[0] as usize;
        assert!(
            frame[5..].iter().all(|&b| b == frame[0]),
            "frame torn or mixed"
        );
        assert_eq!(u32::from_be_bytes(frame[1..5].try_into().unwrap()), next[t]);
        next[t] += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
}

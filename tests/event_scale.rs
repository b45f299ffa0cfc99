//! At scale in event mode: 2,000 connections open and close cleanly, with
//! no fd or thread left behind; 5,000 idle authenticated connections cost
//! at most a stated ceiling of memory each and not one thread. The tests
//! run one at a time (SERIAL) in their own binary, so the counts and the
//! resident memory are each test's alone.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sockserv::connect;

const CONNECTIONS: usize = 2000;

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn two_thousand_connections_open_and_close_without_leaks() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        raise_fd_limit() as usize > 2 * CONNECTIONS + 100,
        "RLIMIT_NOFILE too low"
    );
    let (fds, tasks) = (open_fds(), threads());
    let mut config = config_with_key(KEY);
    config.set_max_connections(CONNECTIONS + 10).unwrap();
    let handler = Arc::new(EventEcho::default());
    let server = event_server("tcp://127.0.0.1:0", &config, handler.clone());
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let c = connect(server.local_addr(), &config).unwrap();
            roundtrip(&c, &(i as u32).to_be_bytes());
            c
        })
        .collect();
    assert_eq!(server.stats().active, CONNECTIONS as u64);
    assert_eq!(handler.opened.load(Ordering::SeqCst), CONNECTIONS);
    drop(clients);
    assert!(wait_until(Duration::from_secs(30), || handler
        .closed
        .load(Ordering::SeqCst)
        == CONNECTIONS));
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .active
        == 0));
    drop(server);
    assert_eq!(
        handler.closed.load(Ordering::SeqCst),
        CONNECTIONS,
        "on_close once each"
    );
    assert_eq!(open_fds(), fds, "file descriptors leaked");
    // At most as many as before: the other test's thread may still be
    // exiting when this one counted (more would be a leak).
    assert!(
        wait_until(Duration::from_secs(10), || threads() <= tasks),
        "threads leaked: {tasks} -> {}",
        threads()
    );
}

/// Idle connections held by the event-mode server.
const IDLE: usize = 5000;
/// The ceiling per idle connection, in KiB of this process's resident
/// memory (the server's side: the clients are raw sockets, whose buffers
/// are the kernel's). README: 0.7 KiB each, measured by the benchmark
/// (release); this debug build measured 0.68 to 0.69. The ceiling is 2 KiB, as
/// margin for the allocator's rounding, and fails a per-connection buffer
/// of a few KiB kept while idle.
const KIB_PER_IDLE_CONNECTION: f64 = 2.0;

/// 5,000 idle authenticated connections on an event-mode server with
/// handshake and idle timeouts armed: resident memory grows by at most
/// the ceiling per connection, and the thread count does not grow at all
/// (timers, not threads).
#[test]
fn five_thousand_idle_connections_cost_little_memory_and_no_threads() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        raise_fd_limit() as usize > 2 * IDLE + 100,
        "RLIMIT_NOFILE too low for {IDLE} connections"
    );
    let mut config = config_with_key(KEY);
    config.set_max_connections(IDLE + 10).unwrap();
    config.set_io_threads(2);
    // Armed for every connection, and never due during the test.
    config.set_idle_timeout(Some(Duration::from_secs(600)));
    let handler = Arc::new(EventEcho::default());
    let server = event_server("tcp://127.0.0.1:0", &config, handler.clone());
    // Warm up: a few connections through the whole path, then gone, so
    // the first-use allocations are not counted as per-connection costs.
    for _ in 0..50 {
        drop(authenticated_raw(&server, &config));
    }
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .active
        == 0));
    let (rss_before, tasks_before) = (rss_kib(), threads());
    let clients: Vec<std::net::TcpStream> = (0..IDLE)
        .map(|_| authenticated_raw(&server, &config))
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || handler
            .opened
            .load(Ordering::SeqCst)
            == IDLE + 50),
        "only {} of the connections opened",
        handler.opened.load(Ordering::SeqCst)
    );
    assert_eq!(server.stats().active, IDLE as u64);
    // Idle for a moment: nothing is due, nothing should grow.
    std::thread::sleep(Duration::from_millis(500));
    let (rss_after, tasks_after) = (rss_kib(), threads());
    let per_connection = (rss_after.saturating_sub(rss_before)) as f64 / IDLE as f64;
    // Straight to fd 2: the figures show even when the test passes.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n{IDLE} idle authenticated connections: resident memory {rss_before} -> \
         {rss_after} KiB ({per_connection:.2} KiB each); threads {tasks_before} -> {tasks_after}\n"
    );
    // Not one more (one fewer is the other test's thread exiting).
    assert!(
        tasks_after <= tasks_before,
        "idle connections took threads: {tasks_before} -> {tasks_after}"
    );
    assert!(
        per_connection <= KIB_PER_IDLE_CONNECTION,
        "{per_connection:.2} KiB per idle connection, over the ceiling of \
         {KIB_PER_IDLE_CONNECTION} KiB ({rss_before} -> {rss_after} KiB)"
    );
    // They are live: one of them still gets its echo.
    let mut last = clients.into_iter().last().unwrap();
    raw_write_frame(&mut last, b"still here");
    assert_eq!(raw_read_frame(&mut last).unwrap(), b"still here");
}

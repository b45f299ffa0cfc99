//! Event mode: a connection that has not finished the handshake and holds
//! a partial frame costs at most 1 KiB of the server's memory (issue 10,
//! finding 4: it was ~16.8 KiB, a full read's buffer for a frame of at most
//! 256 bytes). One test in its own binary, so the RSS is this test's alone.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::*;

const CONNECTIONS: usize = 2000;

#[test]
fn a_pre_auth_partial_frame_costs_at_most_1_kib() {
    assert!(
        raise_fd_limit() as usize > 2 * CONNECTIONS + 100,
        "RLIMIT_NOFILE too low"
    );
    let mut config = config_with_key(KEY);
    config.set_max_connections(CONNECTIONS + 10).unwrap();
    config
        .set_handshake_timeout(Duration::from_secs(60))
        .unwrap();
    config.set_io_threads(1);
    let handler = Arc::new(EventEcho::default());
    let server = event_server("tcp://127.0.0.1:0", &config, handler);
    let target = tcp_target(&server);
    // Warm up: one connection through the same path, so the I/O thread's
    // own buffers (scratch, events, slab) exist before the baseline, and
    // the code of each step is paged in (the test binary's pages are not a
    // connection's cost).
    let mut warm = TcpStream::connect(&target).unwrap();
    warm.write_all(&[0, 0, 0]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    warm.write_all(&[200]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut clients = Vec::with_capacity(CONNECTIONS);
    let before = rss_kib();
    for _ in 0..CONNECTIONS {
        let mut s = TcpStream::connect(&target).unwrap();
        // Three bytes of a header, then the fourth: a handshake frame of
        // 200 bytes announced, none of them sent.
        s.write_all(&[0, 0, 0]).unwrap();
        clients.push(s);
    }
    assert!(wait_until(Duration::from_secs(30), || server
        .stats()
        .active
        == CONNECTIONS as u64 + 1));
    std::thread::sleep(Duration::from_millis(300));
    for s in &mut clients {
        s.write_all(&[200]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib();
    let per_conn = (after.saturating_sub(before) * 1024) as usize / CONNECTIONS;
    eprintln!(
        "RSS {before} -> {after} KiB for {CONNECTIONS} pre-auth connections: {per_conn} bytes each"
    );
    assert_eq!(server.stats().handshake_failures, 0, "all still waiting");
    assert!(
        per_conn <= 1024,
        "{per_conn} bytes per pre-auth connection holding a partial frame (target: 1 KiB)"
    );
}

//! 2,000 connections open and close cleanly on an event-mode server, with
//! no fd or thread left behind. One test in its own binary, so the counts
//! are this test's alone.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sockserv::connect;

const CONNECTIONS: usize = 2000;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn two_thousand_connections_open_and_close_without_leaks() {
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
    assert_eq!(threads(), tasks, "threads leaked");
}

//! No thread or fd outlives a server. One test in its own binary, so no
//! other test's sockets or threads blur the counts.

mod common;

use std::time::Duration;

use common::*;
use sockserv::connect;

#[test]
fn a_dropped_server_leaves_no_fd_or_thread_behind() {
    let (fds, tasks) = (open_fds(), threads());
    for round in 0..3 {
        let config = config_with_key(KEY);
        let server = echo_server("tcp://127.0.0.1:0", &config);
        let mut clients: Vec<_> = (0..50)
            .map(|_| connect(server.local_addr(), &config).unwrap())
            .collect();
        for c in &clients {
            roundtrip(c, b"ping");
        }
        assert_eq!(server.stats().active, 50);
        // Half leave on their own; the rest are cut by the drop.
        let staying = clients.split_off(25);
        drop(clients);
        assert!(
            wait_until(Duration::from_secs(10), || server.stats().active == 25),
            "round {round}"
        );
        drop(server);
        drop(staying);
    }
    assert_eq!(open_fds(), fds, "file descriptors leaked");
    assert_eq!(threads(), tasks, "threads leaked");
}

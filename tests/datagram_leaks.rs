//! No thread, fd or socket file outlives a datagram server or socket. One
//! test in its own binary, so no other test's sockets or threads blur the
//! counts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sockserv::{Config, DgramServer, DgramSocket};

#[test]
fn dropped_datagram_servers_and_sockets_leave_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("sockserv-dgleak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::default();
    config.set_key(KEY).unwrap();
    config.set_io_timeout(Some(Duration::from_secs(10)));
    let (fds, tasks) = (open_fds(), threads());
    for round in 0..20 {
        let unix = format!("unixgram://{}/s{round}.sock", dir.display());
        for addr in ["udp://127.0.0.1:0", "udp://[::1]:0", unix.as_str()] {
            let server = DgramServer::bind(addr, &config).unwrap();
            server
                .set_handler(Arc::new(|sock: &DgramSocket, data: &[u8], from: &str| {
                    let _ = sock.send_to(from, data);
                }))
                .unwrap();
            server.start().unwrap();
            let open = DgramSocket::unbound(&config);
            open.send_to(server.local_addr(), b"ping").unwrap();
            assert_eq!(open.recv().unwrap().0, b"ping");
            let connected = DgramSocket::connect(server.local_addr(), &config).unwrap();
            connected.send(b"pong").unwrap();
            assert_eq!(connected.recv().unwrap().0, b"pong");
        }
    }
    assert_eq!(open_fds(), fds, "file descriptors leaked");
    assert_eq!(threads(), tasks, "threads leaked");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "socket files left: {left:?}");
    std::fs::remove_dir(&dir).unwrap();
}

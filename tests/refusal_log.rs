//! The refusal log (issue 10, finding 8): the application sees each peer
//! the library turned away, with the peer's address, the code and the
//! detail, in both server modes and for sealed datagrams.
//!
//! The log is process-wide, so one test owns it and runs every case in turn.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config_with_key, raw, raw_read_frame, raw_write_frame, wait_until, KEY};
use sockserv::ProxyMode;
use sockserv::{Config, DgramSocket, ErrorKind, Server};

type Log = Arc<Mutex<Vec<(String, ErrorKind, String)>>>;

fn started(config: &Config, event: bool) -> Server {
    let server = Server::bind("tcp://127.0.0.1:0", config).unwrap();
    if event {
        server
            .set_event_handler(Arc::new(common::EventEcho::default()))
            .unwrap();
    } else {
        server.set_handler(Arc::new(common::echo)).unwrap();
    }
    server
}

/// Waits (bounded) for a log entry from `peer` and returns it.
fn entry_from(log: &Log, peer: &str, what: &str) -> (ErrorKind, String) {
    let found = || {
        log.lock()
            .unwrap()
            .iter()
            .find(|(p, _, _)| p == peer)
            .map(|(_, k, d)| (*k, d.clone()))
    };
    assert!(
        wait_until(Duration::from_secs(10), || found().is_some()),
        "{what}: no refusal logged for {peer}; log: {:?}",
        log.lock().unwrap()
    );
    found().unwrap()
}

fn local_of(s: &TcpStream) -> String {
    format!("tcp://{}", s.local_addr().unwrap())
}

#[test]
fn every_refusal_reaches_the_log() {
    let log: Log = Arc::default();
    let sink = log.clone();
    sockserv::set_refusal_log(Some(Arc::new(move |r: &sockserv::Refusal<'_>| {
        sink.lock()
            .unwrap()
            .push((r.peer.to_string(), r.kind, r.detail.to_string()));
    })));

    for event in [false, true] {
        let mode = if event { "event" } else { "threaded" };
        let config = config_with_key(KEY);
        let server = started(&config, event);
        server.start().unwrap();

        // A wrong key.
        let mut s = raw(&server);
        let peer = local_of(&s);
        let challenge = raw_read_frame(&mut s).unwrap();
        let body = &challenge[b"#CHALLENGE#".len()..];
        let tag = sockserv::proto::mac::hmac_sha256(b"wrong key", body);
        raw_write_frame(&mut s, &[b"{sha256}".as_slice(), &tag].concat());
        assert_eq!(raw_read_frame(&mut s).unwrap(), b"#FAILURE#");
        let (kind, detail) = entry_from(&log, &peer, "wrong key");
        assert_eq!(kind, ErrorKind::AuthFailed, "{mode}: {detail}");
        assert!(
            detail.contains("does not match the key"),
            "{mode}: {detail}"
        );

        // Python 3.11's MD5 answer.
        let mut s = raw(&server);
        let peer = local_of(&s);
        raw_read_frame(&mut s).unwrap();
        raw_write_frame(&mut s, &[b"{md5}".as_slice(), &[0; 16]].concat());
        let (kind, detail) = entry_from(&log, &peer, "md5");
        assert_eq!(kind, ErrorKind::AuthProtocol, "{mode}: {detail}");
        assert!(detail.contains("MD5"), "{mode}: {detail}");

        // An honest client is not logged.
        let honest = sockserv::connect(server.local_addr(), &config).unwrap();
        common::roundtrip(&honest, b"fine");
        drop(honest);
        server.shutdown();

        // A verify callback's refusal.
        let server = started(&config, event);
        server.set_verify(Arc::new(|_: &str| false)).unwrap();
        server.start().unwrap();
        let s = raw(&server);
        let (kind, detail) = entry_from(&log, &local_of(&s), "verify");
        assert_eq!(kind, ErrorKind::ConnectionRefused, "{mode}: {detail}");
        assert!(detail.contains("verify"), "{mode}: {detail}");
        server.shutdown();

        // The connection cap, in the mode that refuses past it.
        let mut capped = config_with_key(KEY);
        capped.set_max_connections(1).unwrap();
        capped.set_when_full(sockserv::WhenFull::Refuse);
        let server = started(&capped, event);
        server.start().unwrap();
        let holder = sockserv::connect(server.local_addr(), &capped).unwrap();
        common::roundtrip(&holder, b"holding the only slot");
        let s = raw(&server);
        let (kind, detail) = entry_from(&log, &local_of(&s), "cap");
        assert_eq!(kind, ErrorKind::ConnectionRefused, "{mode}: {detail}");
        assert!(detail.contains("maximum of 1"), "{mode}: {detail}");
        drop(holder);
        server.shutdown();

        // A bad PROXY header where one is required.
        let mut proxied = config_with_key(KEY);
        proxied.set_proxy_protocol(ProxyMode::Required);
        let server = started(&proxied, event);
        server.start().unwrap();
        let mut s = raw(&server);
        s.write_all(b"PROXY NONSENSE\r\n").unwrap();
        let (kind, detail) = entry_from(&log, &local_of(&s), "PROXY");
        assert_eq!(kind, ErrorKind::Protocol, "{mode}: {detail}");
        server.shutdown();
    }

    // A forged sealed datagram.
    let mut config = Config::default();
    config.set_key(KEY).unwrap();
    let rx = DgramSocket::bind("udp://127.0.0.1:0", &config).unwrap();
    rx.set_timeout(Some(Duration::from_millis(300)));
    let to = rx
        .local_addr()
        .unwrap()
        .trim_start_matches("udp://")
        .to_string();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forged = sockserv::proto::sealed::seal(b"not the key", 1, [1; 16], b"x");
    tx.send_to(&forged, &to).unwrap();
    assert!(rx.recv().is_err(), "a forged datagram was delivered");
    let peer = format!("udp://{}", tx.local_addr().unwrap());
    let (kind, detail) = entry_from(&log, &peer, "datagram");
    assert_eq!(kind, ErrorKind::AuthFailed, "{detail}");
    assert!(detail.contains("tag"), "{detail}");

    sockserv::set_refusal_log(None);
}

//! Datagram sockets and servers over real loopback sockets: UDP over IPv4
//! and IPv6, Unix datagram sockets (paths and abstract names), sealed
//! datagrams and each way one is refused.

mod common;

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{skip, wait_until, TempDir, KEY};
use sockserv::proto::sealed::seal;
use sockserv::{Config, DgramServer, DgramSocket, ErrorKind};
use sockserv::{DgramStats, RecvFrom};

const WAIT: Duration = Duration::from_secs(10);

fn config(key: Option<&[u8]>) -> Config {
    let mut c = Config::default();
    if let Some(key) = key {
        c.set_key(key).unwrap();
    }
    c.set_io_timeout(Some(WAIT));
    c
}

/// A started server that echoes each datagram to its sender.
fn echo_server(addr: &str, config: &Config) -> DgramServer {
    let server = DgramServer::bind(addr, config).unwrap();
    server
        .set_handler(Arc::new(
            |sock: &DgramSocket, payload: &[u8], from: &str| {
                let _ = sock.send_to(from, payload);
            },
        ))
        .unwrap();
    server.start().unwrap();
    server
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A `unixgram://` address for `file` in `dir`.
fn unixgram(dir: &TempDir, file: &str) -> String {
    format!("unixgram://{}", dir.file(file))
}

/// Echo through a server, with the sender's address checked both ways:
/// the server saw the client's local address, and the reply came from the
/// server's.
fn echo_roundtrips(server_addr: &str, key: Option<&[u8]>) {
    let cfg = config(key);
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let server = DgramServer::bind(server_addr, &cfg).unwrap();
    let log = seen.clone();
    server
        .set_handler(Arc::new(
            move |sock: &DgramSocket, payload: &[u8], from: &str| {
                log.lock().unwrap().push(from.to_string());
                sock.send_to(from, payload).unwrap();
            },
        ))
        .unwrap();
    server.start().unwrap();
    let addr = server.local_addr().to_string();
    assert!(!addr.ends_with(":0"), "port 0 was not replaced: {addr}");

    // Connect-less: created by its first send, in the server's family.
    let client = DgramSocket::unbound(&cfg);
    for payload in [&b"hello"[..], b"", &[0xa5; 8192]] {
        client.send_to(&addr, payload).unwrap();
        let (back, from) = client.recv().unwrap();
        assert!(back == payload, "{} bytes came back wrong", payload.len());
        assert_eq!(from, addr);
    }
    // An unbound UDP client is bound to the unspecified address
    // (udp://0.0.0.0:PORT): the server sees the loopback one, same port.
    let client_addr = client.local_addr().unwrap().to_string();
    let port = |a: &str| a.rsplit_once(':').map(|(_, p)| p.to_string());
    for from in seen.lock().unwrap().iter() {
        if client_addr.starts_with("udp://") {
            assert_eq!(port(from), port(&client_addr), "{from} vs {client_addr}");
        } else {
            assert_eq!(*from, client_addr);
        }
    }

    // Connected.
    let connected = DgramSocket::connect(&addr, &cfg).unwrap();
    connected.send(b"connected").unwrap();
    let mut buf = [0u8; 64];
    match connected.recv_from(&mut buf).unwrap() {
        RecvFrom::Copied { len, from } => {
            assert_eq!(&buf[..len], b"connected");
            assert_eq!(from, addr);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        connected.local_addr().unwrap()
    );
    // The server counts after its handler returned, maybe after our receive.
    let counted = || {
        let stats = server.socket().stats();
        stats.received == 4 && stats.sent == 4
    };
    assert!(wait_until(WAIT, counted), "{:?}", server.socket().stats());
}

#[test]
fn udp_ipv4_echo() {
    echo_roundtrips("udp://127.0.0.1:0", None);
    echo_roundtrips("udp://127.0.0.1:0", Some(KEY));
}

#[test]
fn udp_ipv6_echo() {
    echo_roundtrips("udp://[::1]:0", None);
    echo_roundtrips("udp://[::1]:0", Some(KEY));
}

#[test]
fn unixgram_echo_with_a_path_and_an_abstract_name() {
    let dir = TempDir::new("echo");
    echo_roundtrips(&unixgram(&dir, "plain.sock"), None);
    echo_roundtrips(&unixgram(&dir, "sealed.sock"), Some(KEY));
    let name = format!("unixgram://@sockserv-test-{}", std::process::id());
    echo_roundtrips(&name, Some(KEY));
}

#[test]
fn an_unbound_unix_client_is_autobound_so_replies_reach_it() {
    let dir = TempDir::new("autobind");
    let server = echo_server(&unixgram(&dir, "s.sock"), &config(None));
    let client = DgramSocket::unbound(&config(None));
    client.send_to(server.local_addr(), b"ping").unwrap();
    let local = client.local_addr().unwrap();
    assert!(local.starts_with("unixgram://@"), "{local}");
    assert_eq!(client.recv().unwrap().0, b"ping");
}

#[test]
fn a_unix_server_replaces_a_stale_file_refuses_a_live_one_and_removes_its_own() {
    let dir = TempDir::new("files");
    let path = dir.0.join("s.sock");
    let addr = unixgram(&dir, "s.sock");
    // A stale socket file: bound once, its owner gone.
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let server = echo_server(&addr, &config(None));
    let err = DgramServer::bind(&addr, &config(None)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::AddressInUse, "{err}");
    drop(server);
    assert!(!path.exists(), "the socket file was left behind");
    // A file that is not a socket is left alone.
    std::fs::write(&path, b"data").unwrap();
    let err = DgramServer::bind(&addr, &config(None)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::AddressInUse, "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

#[test]
fn sending_to_a_unix_path_nobody_binds_is_refused() {
    let dir = TempDir::new("refused");
    let client = DgramSocket::unbound(&config(None));
    let err = client
        .send_to(&unixgram(&dir, "nobody.sock"), b"x")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(err.detail().contains("nobody.sock"), "{err}");
}

#[test]
fn bad_addresses_and_family_mismatches_are_clear() {
    let client = DgramSocket::unbound(&config(None));
    for addr in ["tcp://127.0.0.1:5", "udp://nowhere", "unixgram://", "x"] {
        let err = client.send_to(addr, b"x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidAddress, "{addr}: {err}");
    }
    let v4 = DgramSocket::bind("udp://127.0.0.1:0", &config(None)).unwrap();
    let err = v4.send_to("udp://[::1]:9", b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidAddress, "{err}");
    assert!(err.detail().contains("another address family"), "{err}");
    // Stream addresses and stream servers do not mix with datagrams.
    assert!(DgramServer::bind("tcp://127.0.0.1:0", &config(None)).is_err());
    assert!(sockserv::Server::bind("udp://127.0.0.1:0", &config(None)).is_err());
}

#[test]
fn an_unbound_socket_has_no_address_and_cannot_receive() {
    let s = DgramSocket::unbound(&config(None));
    assert_eq!(s.local_addr().unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(s.recv().unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(s.send(b"x").unwrap_err().kind(), ErrorKind::InvalidState);
    // Bound but not connected: send needs an address.
    let b = DgramSocket::bind("udp://127.0.0.1:0", &config(None)).unwrap();
    let err = b.send(b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    assert!(err.detail().contains("send_to"), "{err}");
}

#[test]
fn receive_timeouts_are_kept() {
    let s = DgramSocket::bind("udp://127.0.0.1:0", &config(None)).unwrap();
    for ms in [50u64, 200] {
        s.set_timeout(Some(Duration::from_millis(ms)));
        let started = Instant::now();
        let err = s.recv().unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(took >= Duration::from_millis(ms), "{took:?}");
        assert!(
            took < Duration::from_millis(ms) + Duration::from_secs(2),
            "{took:?}"
        );
    }
    assert_eq!(s.timeout(), Some(Duration::from_millis(200)));
    s.set_timeout(None);
    assert_eq!(s.timeout(), None);
}

#[test]
fn sending_over_the_maximum_sends_nothing() {
    let mut cfg = config(None);
    cfg.datagram_mut().set_max_size(1000).unwrap();
    let receiver = DgramSocket::bind("udp://127.0.0.1:0", &cfg).unwrap();
    receiver.set_timeout(Some(Duration::from_millis(200)));
    let sender = DgramSocket::unbound(&cfg);
    let to = receiver.local_addr().unwrap().to_string();
    let err = sender.send_to(&to, &[0u8; 1001]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DatagramTooLarge);
    assert!(
        err.detail().contains("1001") && err.detail().contains("1000"),
        "{err}"
    );
    assert_eq!(receiver.recv().unwrap_err().kind(), ErrorKind::TimedOut);
    sender.send_to(&to, &[0u8; 1000]).unwrap();
    assert_eq!(receiver.recv().unwrap().0.len(), 1000);
}

#[test]
fn the_maximum_is_settable_up_to_65507() {
    let mut cfg = Config::default();
    assert_eq!(cfg.datagram().max_size(), 8192, "socketserver's default");
    assert_eq!(
        cfg.datagram_mut().set_max_size(0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        cfg.datagram_mut().set_max_size(65508).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    cfg.datagram_mut().set_max_size(65507).unwrap();
    // The largest UDP datagram over IPv4 goes through whole.
    let receiver = DgramSocket::bind("udp://127.0.0.1:0", &cfg).unwrap();
    receiver.set_timeout(Some(WAIT));
    let sender = DgramSocket::unbound(&cfg);
    let payload: Vec<u8> = (0..65507u32).map(|i| i as u8).collect();
    sender
        .send_to(receiver.local_addr().unwrap(), &payload)
        .unwrap();
    assert!(receiver.recv().unwrap().0 == payload);
    // Sealed, the same payload is 57 bytes too long for UDP: the kernel's
    // refusal is reported as too large, not as a generic I/O error.
    cfg.set_key(KEY).unwrap();
    let sealed = DgramSocket::unbound(&cfg);
    let err = sealed
        .send_to(receiver.local_addr().unwrap(), &payload)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DatagramTooLarge, "{err}");
    assert!(err.detail().contains("65564"), "{err}");
}

#[test]
fn receiving_over_the_maximum_is_an_error_with_both_sizes_and_the_next_one_comes() {
    let mut cfg = config(None);
    cfg.datagram_mut().set_max_size(1000).unwrap();
    let receiver = DgramSocket::bind("udp://127.0.0.1:0", &cfg).unwrap();
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap().trim_start_matches("udp://");
    raw.send_to(&[1u8; 1500], to).unwrap();
    raw.send_to(&[2u8; 10], to).unwrap();
    let err = receiver.recv().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DatagramTooLarge);
    assert!(
        err.detail().contains("1500") && err.detail().contains("1000"),
        "{err}"
    );
    assert!(
        err.detail()
            .contains(&format!("udp://{}", raw.local_addr().unwrap())),
        "{err}"
    );
    assert_eq!(receiver.recv().unwrap().0, [2u8; 10]);
    assert_eq!(receiver.stats().too_large, 1);
    assert_eq!(receiver.stats().received, 1);
}

#[test]
fn a_buffer_too_small_keeps_the_datagram_queued() {
    let receiver = DgramSocket::bind("udp://127.0.0.1:0", &config(None)).unwrap();
    let sender = DgramSocket::unbound(&config(None));
    sender
        .send_to(receiver.local_addr().unwrap(), b"0123456789")
        .unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        receiver.recv_from(&mut small).unwrap(),
        RecvFrom::TooSmall(10)
    );
    assert_eq!(
        receiver.recv_from(&mut small).unwrap(),
        RecvFrom::TooSmall(10)
    );
    let mut big = [0u8; 10];
    match receiver.recv_from(&mut big).unwrap() {
        RecvFrom::Copied { len: 10, from } => {
            assert_eq!(&big, b"0123456789");
            let port = sender.local_addr().unwrap().rsplit_once(':').unwrap().1;
            assert_eq!(from, format!("udp://127.0.0.1:{port}"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(receiver.stats().received, 1);
}

#[test]
fn an_oversized_datagram_at_a_server_is_counted_and_others_are_served() {
    let mut cfg = config(None);
    cfg.datagram_mut().set_max_size(100).unwrap();
    let server = echo_server("udp://127.0.0.1:0", &cfg);
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = server.local_addr().trim_start_matches("udp://").to_string();
    let client = DgramSocket::unbound(&cfg);
    for i in 0..20u8 {
        raw.send_to(&[i; 101], &to).unwrap();
        client.send_to(server.local_addr(), &[i; 100]).unwrap();
        assert_eq!(client.recv().unwrap().0, [i; 100]);
    }
    let counted = || {
        let stats = server.socket().stats();
        stats.too_large == 20 && stats.received == 20
    };
    assert!(wait_until(WAIT, counted), "{:?}", server.socket().stats());
}

/// One sealed datagram as a raw peer would send it.
fn sealed(key: &[u8], ts: u64, nonce: u8, payload: &[u8]) -> Vec<u8> {
    seal(key, ts, [nonce; 16], payload)
}

/// Each way a sealed datagram is refused, at a server, between datagrams
/// of a good client that all come back; then the counters.
#[test]
fn each_rejection_is_dropped_and_counted_and_others_go_on() {
    let cfg = config(Some(KEY));
    let server = echo_server("udp://127.0.0.1:0", &cfg);
    let to = server.local_addr().trim_start_matches("udp://").to_string();
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = DgramSocket::unbound(&cfg);

    let now = now_ms();
    let mut wrong_version = sealed(KEY, now, 1, b"v");
    wrong_version[0] = 2;
    let mut tampered = sealed(KEY, now, 2, b"payload");
    tampered[25] ^= 1;
    let valid = sealed(KEY, now, 3, b"once");
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("too short", sealed(KEY, now, 4, b"")[..56].to_vec()),
        ("wrong version", wrong_version),
        ("tampered", tampered),
        ("other key", sealed(b"wrong key", now, 5, b"x")),
        (
            "unsealed",
            b"plain text that is long enough to hold a header and a tag".to_vec(),
        ),
        ("too old", sealed(KEY, now - 60_000, 6, b"old")),
        ("from the future", sealed(KEY, now + 60_000, 7, b"new")),
        ("valid", valid.clone()),
        ("replayed", valid.clone()),
        ("replayed again", valid),
    ];
    for (i, (_, datagram)) in bad.iter().enumerate() {
        raw.send_to(datagram, &to).unwrap();
        let payload = format!("good {i}");
        good.send_to(server.local_addr(), payload.as_bytes())
            .unwrap();
        assert_eq!(good.recv().unwrap().0, payload.as_bytes());
    }
    let want = DgramStats {
        sent: 12, // 11 echoes to the good client, 1 to the raw one
        received: 12,
        too_large: 0,
        too_short: 2,
        bad_version: 2, // the wrong version, and plain text ('p' is no version)
        bad_tag: 2,
        too_old: 1,
        too_new: 1,
        replayed: 2,
    };
    assert!(
        wait_until(WAIT, || server.socket().stats() == want),
        "{:?}",
        server.socket().stats()
    );
    // The raw peer got exactly one echo, sealed, for the valid datagram.
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    let n = raw.recv(&mut buf).unwrap();
    assert_eq!(n, 57 + 4);
    assert_eq!(&buf[25..29], b"once");
    raw.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(raw.recv(&mut buf).is_err(), "a refused datagram was echoed");
}

#[test]
fn a_client_drops_bad_replies_and_waits_for_a_good_one() {
    let cfg = config(Some(KEY));
    let client = DgramSocket::bind("udp://127.0.0.1:0", &cfg).unwrap();
    let to = client.local_addr().unwrap().trim_start_matches("udp://");
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.send_to(&sealed(b"forger", now_ms(), 1, b"evil"), to)
        .unwrap();
    raw.send_to(&[1, 2, 3], to).unwrap();
    raw.send_to(&sealed(KEY, now_ms(), 2, b"real"), to).unwrap();
    assert_eq!(client.recv().unwrap().0, b"real");
    let stats = client.stats();
    assert_eq!((stats.bad_tag, stats.too_short, stats.received), (1, 1, 1));
    // Only refused datagrams until the timeout: a timeout, not an error of
    // the forgery.
    raw.send_to(&sealed(b"forger", now_ms(), 3, b"evil"), to)
        .unwrap();
    client.set_timeout(Some(Duration::from_millis(200)));
    assert_eq!(client.recv().unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(client.stats().bad_tag, 2);
}

#[test]
fn the_window_and_the_replay_memory_are_settable() {
    let mut cfg = config(Some(KEY));
    cfg.datagram_mut()
        .set_window(Duration::from_millis(5000))
        .unwrap();
    cfg.datagram_mut().set_replay_capacity(2).unwrap();
    assert!(cfg.datagram_mut().set_window(Duration::ZERO).is_err());
    assert!(cfg.datagram_mut().set_replay_capacity(0).is_err());
    let receiver = DgramSocket::bind("udp://127.0.0.1:0", &cfg).unwrap();
    receiver.set_timeout(Some(Duration::from_millis(300)));
    let to = receiver.local_addr().unwrap().trim_start_matches("udp://");
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    let now = now_ms();
    // 10 s old: fine under the default 30 s window, too old under 5 s.
    raw.send_to(&sealed(KEY, now - 10_000, 1, b"a"), to)
        .unwrap();
    assert_eq!(receiver.recv().unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(receiver.stats().too_old, 1);
    // Three fresh datagrams into a memory of two: the oldest is forgotten,
    // and its replay is refused as too old rather than let in.
    let d: Vec<Vec<u8>> = (0..3)
        .map(|i| sealed(KEY, now + i, 10 + i as u8, b"d"))
        .collect();
    for datagram in &d {
        raw.send_to(datagram, to).unwrap();
        assert_eq!(receiver.recv().unwrap().0, b"d");
    }
    raw.send_to(&d[0], to).unwrap();
    raw.send_to(&d[2], to).unwrap();
    assert_eq!(receiver.recv().unwrap_err().kind(), ErrorKind::TimedOut);
    let stats = receiver.stats();
    assert_eq!((stats.too_old, stats.replayed), (2, 1));
}

#[test]
fn key_rotation_accepts_old_and_new_and_sends_with_the_first() {
    let mut server_cfg = config(Some(b"new key"));
    server_cfg.add_key(b"old key").unwrap();
    let server = echo_server("udp://127.0.0.1:0", &server_cfg);
    // A client still on the old key is accepted...
    let old = DgramSocket::unbound(&config(Some(b"old key")));
    old.set_timeout(Some(Duration::from_millis(300)));
    old.send_to(server.local_addr(), b"from old").unwrap();
    // ...but the reply is sealed with the server's first key, which it
    // does not hold yet: dropped as a bad tag.
    assert_eq!(old.recv().unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(old.stats().bad_tag, 1);
    // A client that accepts both (sending with either) gets it.
    let mut both = config(Some(b"old key"));
    both.add_key(b"new key").unwrap();
    let rotating = DgramSocket::unbound(&both);
    rotating.send_to(server.local_addr(), b"both").unwrap();
    assert_eq!(rotating.recv().unwrap().0, b"both");
    assert!(wait_until(WAIT, || server.socket().stats().received == 2));
    let none = DgramSocket::unbound(&config(Some(b"third key")));
    none.send_to(server.local_addr(), b"no").unwrap();
    assert!(wait_until(WAIT, || server.socket().stats().bad_tag == 1));
}

#[test]
fn a_plain_receiver_sees_a_sealed_datagram_as_bytes_and_vice_versa() {
    // No silent downgrade: a keyed receiver drops plain datagrams, and a
    // plain receiver gets sealed ones with their header and tag.
    let plain = DgramSocket::bind("udp://127.0.0.1:0", &config(None)).unwrap();
    let keyed = DgramSocket::unbound(&config(Some(KEY)));
    keyed.send_to(plain.local_addr().unwrap(), b"abc").unwrap();
    let (bytes, _) = plain.recv().unwrap();
    assert_eq!(bytes.len(), 57 + 3);
    assert_eq!(bytes[0], 1);
}

#[test]
fn shutdown_is_immediate_and_final() {
    let server = Arc::new(DgramServer::bind("udp://127.0.0.1:0", &config(None)).unwrap());
    server
        .set_handler(Arc::new(
            |sock: &DgramSocket, payload: &[u8], from: &str| {
                let _ = sock.send_to(from, payload);
            },
        ))
        .unwrap();
    let serving = server.clone();
    let thread = std::thread::spawn(move || serving.serve());
    // An echo shows the loop runs (the datagram waits in the socket until).
    let client = DgramSocket::unbound(&config(None));
    client.send_to(server.local_addr(), b"up?").unwrap();
    assert_eq!(client.recv().unwrap().0, b"up?");
    assert_eq!(server.start().unwrap_err().kind(), ErrorKind::InvalidState);
    let started = Instant::now();
    server.shutdown();
    thread.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.serve().unwrap_err().kind(), ErrorKind::Shutdown);
    // Nothing answers any more.
    client.set_timeout(Some(Duration::from_millis(200)));
    client.send_to(server.local_addr(), b"late").unwrap();
    assert_eq!(client.recv().unwrap_err().kind(), ErrorKind::TimedOut);
    // Shut down before it ever started: serving is refused too.
    let idle = DgramServer::bind("udp://127.0.0.1:0", &config(None)).unwrap();
    idle.shutdown();
    assert_eq!(idle.start().unwrap_err().kind(), ErrorKind::Shutdown);
    assert!(idle
        .set_handler(Arc::new(|_: &DgramSocket, _: &[u8], _: &str| {}))
        .is_err());
}

#[test]
fn a_server_socket_refuses_receives_and_a_handler_can_stop_its_server() {
    let server = echo_server("udp://127.0.0.1:0", &config(None));
    let err = server.socket().recv().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");

    let stopper = Arc::new(DgramServer::bind("udp://127.0.0.1:0", &config(None)).unwrap());
    let weak = Arc::downgrade(&stopper);
    stopper
        .set_handler(Arc::new(move |_: &DgramSocket, _: &[u8], _: &str| {
            if let Some(s) = weak.upgrade() {
                s.shutdown();
            }
        }))
        .unwrap();
    let serving = stopper.clone();
    let thread = std::thread::spawn(move || serving.serve());
    let client = DgramSocket::unbound(&config(None));
    // The loop may start after the first datagram; it is queued meanwhile.
    client.send_to(stopper.local_addr(), b"stop").unwrap();
    thread.join().unwrap().unwrap();
}

#[test]
fn a_panicking_handler_loses_its_datagram_only() {
    let server = DgramServer::bind("udp://127.0.0.1:0", &config(None)).unwrap();
    server
        .set_handler(Arc::new(
            |sock: &DgramSocket, payload: &[u8], from: &str| {
                if payload == b"panic" {
                    panic!("handler panic (expected by the test)");
                }
                sock.send_to(from, payload).unwrap();
            },
        ))
        .unwrap();
    server.start().unwrap();
    let client = DgramSocket::unbound(&config(None));
    for _ in 0..3 {
        client.send_to(server.local_addr(), b"panic").unwrap();
        client.send_to(server.local_addr(), b"fine").unwrap();
        assert_eq!(client.recv().unwrap().0, b"fine");
    }
    assert_eq!(server.handler_panics(), 3);
}

#[test]
fn many_senders_at_once_each_get_their_own_replies() {
    let cfg = config(Some(KEY));
    let server = echo_server("udp://127.0.0.1:0", &cfg);
    let addr = server.local_addr().to_string();
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (addr, cfg, done) = (addr.clone(), cfg.clone(), done.clone());
            std::thread::spawn(move || {
                let client = DgramSocket::unbound(&cfg);
                for i in 0..200u32 {
                    let payload = format!("{t}/{i}");
                    client.send_to(&addr, payload.as_bytes()).unwrap();
                    assert_eq!(client.recv().unwrap().0, payload.as_bytes());
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 4);
    assert!(wait_until(WAIT, || server.socket().stats().received == 800));
}

/// The format as docs/DATAGRAM.md states it, sealed by Python's standard
/// library (hmac, struct, os.urandom) and not by sockserv: the server takes
/// it, and Python opens the sealed reply with the same rules.
#[test]
fn python_seals_and_opens_by_the_documented_format() {
    if !common::proc::have(&common::python()) {
        return skip::required(
            "python_seals_and_opens_by_the_documented_format",
            &format!(
                "{} is not installed (apt-get install python3)",
                common::python()
            ),
        );
    }
    let server = echo_server("udp://127.0.0.1:0", &config(Some(KEY)));
    let target = server.local_addr().trim_start_matches("udp://");
    let (host, port) = target.rsplit_once(':').unwrap();
    let script = r#"
import hmac, hashlib, os, socket, struct, sys, time
key, host, port = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])
def seal(payload):
    header = bytes([1]) + struct.pack(">Q", int(time.time() * 1000)) + os.urandom(16)
    return header + payload + hmac.new(key, header + payload, hashlib.sha256).digest()
def open_(d):
    assert len(d) >= 57 and d[0] == 1
    body, tag = d[:-32], d[-32:]
    assert hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest())
    (ts,) = struct.unpack(">Q", d[1:9])
    assert abs(ts - time.time() * 1000) < 30000
    return body[25:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(seal(b"from python"), (host, port))
reply, _ = s.recvfrom(65535)
print(open_(reply).decode())
"#;
    let out = std::process::Command::new(common::python())
        .args(["-c", script, std::str::from_utf8(KEY).unwrap(), host, port])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from python\n");
}

#[test]
fn a_unix_send_to_a_full_queue_times_out_and_a_server_reply_does_not_wait() {
    let dir = TempDir::new("full");
    // A receiver that never reads: its queue fills.
    let sink = UnixDatagram::bind(dir.0.join("sink.sock")).unwrap();
    let mut cfg = config(None);
    cfg.set_io_timeout(Some(Duration::from_millis(100)));
    let sender = DgramSocket::unbound(&cfg);
    let to = unixgram(&dir, "sink.sock");
    let mut outcome = None;
    for _ in 0..100_000 {
        if let Err(e) = sender.send_to(&to, &[0u8; 1000]) {
            outcome = Some(e);
            break;
        }
    }
    let err = outcome.expect("the queue never filled");
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(err.detail().contains("queue"), "{err}");

    // A server answering a client that does not read: its replies are
    // refused at once (not waited on) and the server goes on serving.
    let server = echo_server(&unixgram(&dir, "server.sock"), &config(None));
    let deaf = DgramSocket::bind(&unixgram(&dir, "deaf.sock"), &config(None)).unwrap();
    for _ in 0..2000 {
        deaf.send_to(server.local_addr(), &[1u8; 1000]).unwrap();
    }
    let client = DgramSocket::unbound(&config(None));
    client
        .send_to(server.local_addr(), b"still there?")
        .unwrap();
    assert_eq!(client.recv().unwrap().0, b"still there?");
    assert!(wait_until(WAIT, || server.socket().stats().received == 2001));
    drop(sink);
}

#[test]
fn a_connected_udp_socket_learns_of_a_closed_port() {
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = format!("udp://{}", gone.local_addr().unwrap());
    drop(gone);
    let s = DgramSocket::connect(&addr, &config(None)).unwrap();
    s.send(b"anyone?").unwrap();
    // Linux reports the ICMP port-unreachable to a connected socket.
    let err = s.recv().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn an_ipv6_wildcard_server_takes_ipv4_unless_v6_only() {
    for (v6_only, answered) in [(None, true), (Some(true), false)] {
        let mut cfg = config(None);
        cfg.set_v6_only(v6_only);
        let server = echo_server("udp://[::]:0", &cfg);
        let port = server.local_addr().rsplit_once(':').unwrap().1.to_string();
        let v4 = DgramSocket::unbound(&config(None));
        v4.set_timeout(Some(Duration::from_millis(300)));
        v4.send_to(&format!("udp://127.0.0.1:{port}"), b"v4")
            .unwrap();
        match v4.recv() {
            Ok((payload, from)) => {
                assert!(answered, "{v6_only:?}: a v6-only server answered IPv4");
                assert_eq!(payload, b"v4");
                assert_eq!(from, format!("udp://127.0.0.1:{port}"));
            }
            Err(e) => {
                assert!(!answered, "{v6_only:?}: {e}");
                assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
            }
        }
        // IPv6 is served either way.
        let v6 = DgramSocket::unbound(&config(None));
        v6.send_to(&format!("udp://[::1]:{port}"), b"v6").unwrap();
        assert_eq!(v6.recv().unwrap().0, b"v6");
    }
}

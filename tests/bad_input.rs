//! Every bad input the core issue lists, thrown at one running server while
//! a canary connection keeps exchanging frames: each case gets its clear
//! error, and the canary and the server never notice. In both modes,
//! plaintext and over TLS (issue 11): there the raw peers' bytes go
//! inside TLS through a tunnel (tests/common/tunnel.rs), so each case
//! reaches the same layer behind the TLS one.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

use common::*;
use sockserv::proto::handshake::{CHALLENGE, FAILURE};
use sockserv::{connect, Config, Error, ErrorKind, Server};

const MAX_FRAME: u64 = 1 << 20;

fn hostile_config() -> Config {
    let mut c = config_with_key(KEY);
    c.set_max_frame_size(MAX_FRAME).unwrap();
    c.set_handshake_timeout(Duration::from_millis(500)).unwrap();
    c
}

/// Waits for the server to record one more connection error, returns it.
fn next_error(errors: &std::sync::Mutex<Vec<Error>>, before: usize) -> Error {
    assert!(
        wait_until(Duration::from_secs(10), || errors.lock().unwrap().len()
            > before),
        "the server recorded no error"
    );
    errors.lock().unwrap()[before].clone()
}

/// Reads until the server closes the socket; returns the bytes read.
fn read_to_close(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all
}

#[test]
fn threaded_every_bad_input_gets_its_error_and_the_rest_goes_on() {
    bad_inputs(Mode::Threaded, false);
}

#[test]
fn event_every_bad_input_gets_its_error_and_the_rest_goes_on() {
    bad_inputs(Mode::Event, false);
}

#[test]
fn threaded_every_bad_input_inside_tls_gets_its_error_and_the_rest_goes_on() {
    bad_inputs(Mode::Threaded, true);
}

#[test]
fn event_every_bad_input_inside_tls_gets_its_error_and_the_rest_goes_on() {
    bad_inputs(Mode::Event, true);
}

/// A raw TCP socket to `entry` (the server, or the tunnel into its TLS).
fn raw_to(entry: &str) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(entry).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A raw socket to `entry` past the handshake with the test's key.
fn authenticated_to(entry: &str) -> std::net::TcpStream {
    let target: std::net::SocketAddr = entry.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.connect(&target.into()).unwrap();
    let conn = sockserv::Connection::establish(
        socket,
        &hostile_config(),
        sockserv::proto::handshake::Role::Client,
    )
    .map_err(|(e, _)| e)
    .unwrap();
    let stream: std::net::TcpStream = conn.into_socket().into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn bad_inputs(mode: Mode, tls: bool) {
    let certs = if tls {
        match common::certs::Certs::make("bad_inputs inside TLS") {
            Some(certs) => Some(certs),
            None => return,
        }
    } else {
        None
    };
    // With TLS: the server's certificate, and the CA for the clients.
    let with_tls = |mut c: Config| {
        if let Some(certs) = &certs {
            c.set_tls_cert_files(&certs.server.cert, &certs.server.key)
                .unwrap();
            c.set_tls_ca_file(&certs.ca.cert).unwrap();
        }
        c
    };
    let config = with_tls(hostile_config());
    let addr = if tls {
        "tls://127.0.0.1:0"
    } else {
        "tcp://127.0.0.1:0"
    };
    let (server, errors) = recording_echo_server_on(addr, &config, mode);
    let hostport = server
        .local_addr()
        .trim_start_matches("tcp://")
        .trim_start_matches("tls://")
        .to_string();
    let _tunnel;
    let entry = match &certs {
        Some(certs) => {
            let tunnel = common::tunnel::Tunnel::start(&hostport, &certs.ca.cert);
            let entry = tunnel.entry.clone();
            _tunnel = tunnel;
            entry
        }
        None => hostport,
    };
    let canary = Canary::start(&server, &config);
    let failures = |s: &Server| s.stats().handshake_failures;

    // A length header over the maximum: refused before any allocation,
    // both sizes named, connection closed.
    let before = errors.lock().unwrap().len();
    let mut s = authenticated_to(&entry);
    s.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
        .unwrap();
    let e = next_error(&errors, before);
    assert_eq!(e.kind(), ErrorKind::FrameTooLarge, "{e}");
    assert!(
        e.detail().contains(&(MAX_FRAME + 1).to_string())
            && e.detail().contains(&MAX_FRAME.to_string()),
        "{e}"
    );
    assert!(read_to_close(&mut s).is_empty());

    // The long form declaring 4 GiB.
    let before = errors.lock().unwrap().len();
    let mut s = authenticated_to(&entry);
    let mut long = vec![0xff; 4];
    long.extend_from_slice(&(4u64 << 30).to_be_bytes());
    s.write_all(&long).unwrap();
    assert_eq!(next_error(&errors, before).kind(), ErrorKind::FrameTooLarge);

    // A negative length other than -1.
    let before = errors.lock().unwrap().len();
    let mut s = authenticated_to(&entry);
    s.write_all(&(-2i32).to_be_bytes()).unwrap();
    let e = next_error(&errors, before);
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(e.detail().contains("-2"), "{e}");

    // A peer that closes mid-header, then one that closes mid-payload.
    for partial in [vec![0u8, 0], vec![0, 0, 0, 10, 1, 2, 3]] {
        let before = errors.lock().unwrap().len();
        let mut s = authenticated_to(&entry);
        s.write_all(&partial).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let e = next_error(&errors, before);
        assert_eq!(e.kind(), ErrorKind::TruncatedFrame, "{e}");
    }

    // A clean close between frames is not an error of the peer's making.
    let before = errors.lock().unwrap().len();
    drop(authenticated_to(&entry));
    assert_eq!(next_error(&errors, before).kind(), ErrorKind::Closed);

    // A wrong key: refused on both sides, and never reaches the handler.
    let handled = server.stats().handled;
    let f = failures(&server);
    let e = connect(
        server.local_addr(),
        &with_tls(config_with_key(b"wrong key")),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    assert!(wait_until(Duration::from_secs(5), || failures(&server) == f + 1));
    assert_eq!(server.stats().handled, handled);

    // An MD5 response, and the legacy unprefixed MD5 one: #FAILURE#.
    for response in [[b"{md5}".as_slice(), &[0u8; 16]].concat(), vec![0u8; 16]] {
        let f = failures(&server);
        let mut s = raw_to(&entry);
        let challenge = raw_read_frame(&mut s).unwrap();
        assert!(challenge.starts_with(CHALLENGE));
        raw_write_frame(&mut s, &response);
        assert_eq!(raw_read_frame(&mut s).unwrap(), FAILURE);
        assert!(read_to_close(&mut s).is_empty());
        assert!(wait_until(Duration::from_secs(5), || failures(&server) == f + 1));
    }

    // A handshake frame over 256 bytes, then a 4 GiB one.
    for header in [257u32.to_be_bytes().to_vec(), long.clone()] {
        let f = failures(&server);
        let mut s = raw_to(&entry);
        raw_read_frame(&mut s).unwrap();
        s.write_all(&header).unwrap();
        assert!(read_to_close(&mut s).is_empty());
        assert!(wait_until(Duration::from_secs(5), || failures(&server) == f + 1));
    }

    // A peer that connects and says nothing: timed out, its slot freed.
    let f = failures(&server);
    let mut s = raw_to(&entry);
    let started = Instant::now();
    raw_read_frame(&mut s).unwrap();
    assert!(read_to_close(&mut s).is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(5), || failures(&server) == f + 1));

    // Garbage addresses.
    for addr in [
        "",
        "tcp://",
        "tcp://nohost",
        "tcp://1.2.3.4:99999",
        "bogus://x",
        "unix://",
    ] {
        assert_eq!(
            kind(connect(addr, &config)),
            ErrorKind::InvalidAddress,
            "{addr}"
        );
        assert_eq!(
            kind(Server::bind(addr, &config)),
            ErrorKind::InvalidAddress,
            "{addr}"
        );
    }

    // Through all of it the canary went on, and a new client still works.
    let exchanged = canary.finish();
    assert!(exchanged > 0);
    let fresh = connect(server.local_addr(), &config).unwrap();
    roundtrip(&fresh, b"still serving");
    eprintln!(
        "{mode:?}{}: the canary exchanged {exchanged} frames during the bad inputs",
        if tls { " over TLS" } else { "" }
    );
}

/// Connects a keyed client to a fake server that opens with `challenge`;
/// returns the client's error.
fn client_error_for_challenge(challenge: Vec<u8>) -> sockserv::Error {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        raw_write_frame(&mut s, &challenge);
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_end(&mut rest);
    });
    let e = connect(&addr, &config_with_key(KEY)).err().unwrap();
    fake.join().unwrap();
    e
}

#[test]
fn client_refuses_a_challenge_without_its_prefix() {
    let e = client_error_for_challenge([b"#HELLO#{sha256}".as_slice(), &[1; 40]].concat());
    assert_eq!(e.kind(), ErrorKind::AuthProtocol, "{e}");
    assert!(e.detail().contains("#CHALLENGE#"), "{e}");
}

#[test]
fn client_refuses_a_legacy_md5_challenge() {
    // Python 3.11's challenge: the prefix and 20 bare random bytes.
    let e = client_error_for_challenge([CHALLENGE, &[7; 20]].concat());
    assert_eq!(e.kind(), ErrorKind::AuthProtocol, "{e}");
    assert!(e.detail().contains("legacy"), "{e}");
}

#[test]
fn client_handshake_times_out_on_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    let mut config = config_with_key(KEY);
    config
        .set_handshake_timeout(Duration::from_millis(300))
        .unwrap();
    let started = Instant::now();
    let e = connect(&addr, &config).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(e.detail().contains("handshake"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = connect(&format!("tcp://127.0.0.1:{port}"), &Config::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(e.detail().contains(&port.to_string()), "{e}");
}

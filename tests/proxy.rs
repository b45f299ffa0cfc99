//! The PROXY protocol (v1 and v2) on the server side, in both modes: the
//! client's real address reaches verify and peer_addr; a missing or
//! malformed header, when required, closes only that connection.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sockserv::proto::handshake::Role;
use sockserv::proto::proxy::ProxyMode;
use sockserv::{Config, Connection, Error, EventConn, EventHandler, Server};

/// Greets each connection with the peer address it sees, then echoes.
fn greeting_handler(conn: &Arc<Connection>) {
    if conn.send(conn.peer_addr().as_bytes()).is_ok() {
        echo(conn);
    }
}

struct GreetingEvents;

impl EventHandler for GreetingEvents {
    fn on_open(&self, conn: &Arc<EventConn>) {
        let _ = conn.send(conn.peer_addr().as_bytes());
    }
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {}
}

/// A greeting server in `mode` that records what verify saw.
fn proxied_server(mode: Mode, config: &Config) -> (Server, Arc<Mutex<Vec<String>>>) {
    let verified = Arc::new(Mutex::new(Vec::new()));
    let server = Server::bind("tcp://127.0.0.1:0", config).unwrap();
    let log = verified.clone();
    server
        .set_verify(Arc::new(move |peer: &str| {
            log.lock().unwrap().push(peer.to_string());
            !peer.contains("198.51.100.66")
        }))
        .unwrap();
    match mode {
        Mode::Threaded => server.set_handler(Arc::new(greeting_handler)).unwrap(),
        Mode::Event => server.set_event_handler(Arc::new(GreetingEvents)).unwrap(),
    }
    server.start().unwrap();
    (server, verified)
}

fn proxy_config(proxy: ProxyMode, key: bool) -> Config {
    let mut config = if key {
        config_with_key(KEY)
    } else {
        Config::default()
    };
    config.set_proxy_protocol(proxy);
    config
        .set_handshake_timeout(Duration::from_millis(500))
        .unwrap();
    config
}

fn v1(ip: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 9000\r\n").into_bytes()
}

fn v2_tcp6(ip: std::net::Ipv6Addr, port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
    h.extend_from_slice(&ip.octets());
    h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&9000u16.to_be_bytes());
    h
}

/// Connects like a load balancer: the header first, then the client's
/// handshake and frames through the same socket.
fn through_proxy(server: &Server, header: &[u8], config: &Config) -> sockserv::Result<Connection> {
    let mut stream = TcpStream::connect(tcp_target(server)).unwrap();
    stream.write_all(header).unwrap();
    let mut client = config.clone();
    client.set_proxy_protocol(ProxyMode::Off);
    let conn = Connection::establish(stream.into(), &client, Role::Client).map_err(|(e, _)| e)?;
    conn.set_timeout(Some(Duration::from_secs(10)));
    Ok(conn)
}

fn greeting(conn: &Connection) -> String {
    String::from_utf8(conn.recv_with(|f| f.to_vec()).unwrap()).unwrap()
}

fn required_mode_reports_the_real_client(mode: Mode) {
    for key in [false, true] {
        let config = proxy_config(ProxyMode::Required, key);
        let (server, verified) = proxied_server(mode, &config);
        let a = through_proxy(&server, &v1("203.0.113.7", 51000), &config).unwrap();
        assert_eq!(greeting(&a), "tcp://203.0.113.7:51000");
        roundtrip(&a, b"after a v1 header");
        let ip6: std::net::Ipv6Addr = "2001:db8::42".parse().unwrap();
        let b = through_proxy(&server, &v2_tcp6(ip6, 4242), &config).unwrap();
        assert_eq!(greeting(&b), "tcp://[2001:db8::42]:4242");
        roundtrip(&b, b"after a v2 header");
        // verify saw the clients, not the proxy, and can refuse by them.
        assert_eq!(
            verified.lock().unwrap().as_slice(),
            ["tcp://203.0.113.7:51000", "tcp://[2001:db8::42]:4242"]
        );
        let refused = through_proxy(&server, &v1("198.51.100.66", 1), &config);
        if let Ok(conn) = refused {
            assert!(conn.recv_with(|_| ()).is_err());
        }
        assert!(wait_until(Duration::from_secs(5), || server
            .stats()
            .refused_by_verify
            == 1));
        // Still serving the others.
        roundtrip(&a, b"still here");
    }
}

#[test]
fn threaded_required_mode_reports_the_real_client() {
    required_mode_reports_the_real_client(Mode::Threaded);
}

#[test]
fn event_required_mode_reports_the_real_client() {
    required_mode_reports_the_real_client(Mode::Event);
}

fn bad_headers_close_only_their_connection(mode: Mode) {
    let config = proxy_config(ProxyMode::Required, true);
    let (server, _) = proxied_server(mode, &config);
    let good = through_proxy(&server, &v1("192.0.2.1", 1000), &config).unwrap();
    greeting(&good);
    let cases: [&[u8]; 3] = [
        b"",                                      // missing: the handshake frames come first
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0001 2\r\n", // malformed port
        b"PROXY TCP4 1.2.3.4\r\n",                // too few fields
    ];
    for (i, header) in cases.iter().enumerate() {
        assert!(through_proxy(&server, header, &config).is_err(), "case {i}");
        let expected = i as u64 + 1;
        assert!(
            wait_until(Duration::from_secs(5), || server.stats().proxy_failures
                == expected),
            "case {i}: {:?}",
            server.stats()
        );
        roundtrip(&good, b"unaffected");
    }
    // A silent connection is timed out too.
    let silent = raw(&server);
    assert!(wait_until(Duration::from_secs(5), || server
        .stats()
        .proxy_failures
        == 4));
    drop(silent);
    assert_eq!(server.stats().handled, 0);
}

#[test]
fn threaded_bad_headers_close_only_their_connection() {
    bad_headers_close_only_their_connection(Mode::Threaded);
}

#[test]
fn event_bad_headers_close_only_their_connection() {
    bad_headers_close_only_their_connection(Mode::Event);
}

fn optional_mode_takes_a_header_or_none(mode: Mode) {
    let config = proxy_config(ProxyMode::Optional, true);
    let (server, verified) = proxied_server(mode, &config);
    let proxied = through_proxy(&server, &v1("203.0.113.9", 7), &config).unwrap();
    let direct = sockserv::connect(server.local_addr(), &config).unwrap();
    direct.set_timeout(Some(Duration::from_secs(10)));
    // With a key, the header is read before the handshake's first answer,
    // so the greeting already names the client.
    assert_eq!(greeting(&proxied), "tcp://203.0.113.9:7");
    assert_eq!(greeting(&direct), direct.local_addr());
    roundtrip(&proxied, b"one");
    roundtrip(&direct, b"two");
    // In optional mode, verify runs at accept time on the socket's peer.
    assert!(verified
        .lock()
        .unwrap()
        .iter()
        .all(|p| p.starts_with("tcp://127.0.0.1:")));
}

#[test]
fn threaded_optional_mode_takes_a_header_or_none() {
    optional_mode_takes_a_header_or_none(Mode::Threaded);
}

#[test]
fn event_optional_mode_takes_a_header_or_none() {
    optional_mode_takes_a_header_or_none(Mode::Event);
}

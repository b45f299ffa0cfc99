//! Both server modes drive one session state machine (src/proto/session.rs),
//! so they must agree: one deadline for the whole preamble (PROXY header +
//! handshake), and the same close reasons, codes and texts, for the same
//! inputs.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use sockserv::proto::handshake::CHALLENGE;
use sockserv::ProxyMode;
use sockserv::{Config, ErrorKind};

const TIMEOUT: Duration = Duration::from_millis(1000);

fn proxied_config() -> Config {
    let mut c = config_with_key(KEY);
    c.set_handshake_timeout(TIMEOUT).unwrap();
    c.set_proxy_protocol(ProxyMode::Required);
    c
}

/// A peer sends its PROXY header at 0.7 of the handshake timeout, then
/// stalls after the challenge: the server must cut it about one timeout
/// after it connected, not 0.7 + 1 timeouts (each part given its own).
fn one_deadline_covers_proxy_header_and_handshake(mode: Mode) {
    let config = proxied_config();
    let (server, _errors) = recording_echo_server(&config, mode);
    let mut s = TcpStream::connect(tcp_target(&server)).unwrap();
    s.set_read_timeout(Some(TIMEOUT * 5)).unwrap();
    let started = Instant::now();
    std::thread::sleep(TIMEOUT * 7 / 10);
    s.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n")
        .unwrap();
    let challenge = raw_read_frame(&mut s).unwrap();
    assert!(challenge.starts_with(CHALLENGE));
    // Say nothing more; the server closes.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(
        took >= TIMEOUT * 9 / 10 && took < TIMEOUT * 14 / 10,
        "{mode:?}: closed after {took:?}; the one preamble deadline is {TIMEOUT:?}"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        server.stats().handshake_failures == 1
    }));
    assert_eq!(server.stats().proxy_failures, 0);
}

#[test]
fn threaded_one_deadline_covers_proxy_header_and_handshake() {
    one_deadline_covers_proxy_header_and_handshake(Mode::Threaded);
}

#[test]
fn event_one_deadline_covers_proxy_header_and_handshake() {
    one_deadline_covers_proxy_header_and_handshake(Mode::Event);
}

/// What one mode made of the bad inputs: each connection's close reason
/// (code and text, the peer's address replaced), and the counters of what
/// never opened.
fn outcomes(mode: Mode) -> (Vec<(ErrorKind, String)>, (u64, u64)) {
    let mut config = config_with_key(KEY);
    config.set_max_frame_size(1 << 20).unwrap();
    config.set_handshake_timeout(TIMEOUT).unwrap();
    let (server, errors) = recording_echo_server(&config, mode);
    let mut peers = Vec::new();
    let after_auth: [&[u8]; 5] = [
        // Over the maximum frame size.
        &((1u32 << 20) + 1).to_be_bytes(),
        // A negative length other than -1.
        &(-2i32).to_be_bytes(),
        // The end of the stream in a header, in a payload, between frames.
        &[0, 0],
        &[0, 0, 0, 10, 1, 2, 3],
        &[],
    ];
    for bytes in after_auth {
        let before = errors.lock().unwrap().len();
        let mut s = authenticated_raw(&server, &config);
        peers.push(s.local_addr().unwrap().to_string());
        s.write_all(bytes).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || errors.lock().unwrap().len()
                > before),
            "{mode:?}: no close reason for {bytes:?}"
        );
    }
    // Before the handshake: a wrong answer, a stream cut mid-handshake,
    // silence until the deadline.
    let mut s = raw(&server);
    raw_read_frame(&mut s).unwrap();
    raw_write_frame(&mut s, &[b"{sha256}".as_slice(), &[0u8; 32]].concat());
    let _ = s.read_to_end(&mut Vec::new());
    let mut s = raw(&server);
    raw_read_frame(&mut s).unwrap();
    s.write_all(&[0, 0, 0, 9, 1]).unwrap();
    drop(s);
    let mut s = raw(&server);
    let _ = s.read_to_end(&mut Vec::new());
    assert!(wait_until(Duration::from_secs(10), || {
        server.stats().handshake_failures == 3
    }));
    let texts = errors
        .lock()
        .unwrap()
        .iter()
        .zip(&peers)
        .map(|(e, peer)| (e.kind(), e.detail().replace(peer.as_str(), "PEER")))
        .collect();
    let stats = server.stats();
    drop(server);
    (texts, (stats.handshake_failures, stats.proxy_failures))
}

#[test]
fn both_modes_give_the_same_codes_and_texts_for_the_same_inputs() {
    let threaded = outcomes(Mode::Threaded);
    let event = outcomes(Mode::Event);
    assert_eq!(threaded, event);
    let kinds: Vec<ErrorKind> = threaded.0.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::FrameTooLarge,
            ErrorKind::Protocol,
            ErrorKind::TruncatedFrame,
            ErrorKind::TruncatedFrame,
            ErrorKind::Closed
        ]
    );
    assert!(
        threaded.0[3].1.contains("of a 14 byte frame"),
        "{threaded:?}"
    );
    assert!(
        threaded.0[4].1.contains("PEER closed the connection"),
        "{threaded:?}"
    );
}

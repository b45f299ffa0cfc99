//! A server's refusal counters are updated before the refused peer can see
//! the outcome (issue 10, finding 8): a client that got AUTH_FAILED, or saw
//! the connection close after a bad handshake frame or PROXY header, reads
//! the counter already raised, in both server modes. Each case is repeated
//! (a bounded number of times) because the old order lost the race only in
//! about half the runs.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{
    config_with_key, raw, raw_read_frame, raw_write_frame, recording_echo_server, Mode, KEY,
};
use sockserv::ErrorKind;
use sockserv::ProxyMode;

const ROUNDS: u64 = 40;

/// Reads until the server closes; bounded by the socket's read timeout.
fn expect_close(s: &mut std::net::TcpStream, what: &str) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: waiting for the close: {e}"),
    }
}

fn wrong_key_is_counted_before_the_client_hears(mode: Mode) {
    let config = config_with_key(KEY);
    let (server, _errors) = recording_echo_server(&config, mode);
    let wrong = config_with_key(b"not the key");
    for round in 1..=ROUNDS {
        let err = sockserv::connect(server.local_addr(), &wrong)
            .err()
            .expect("a wrong key was accepted");
        assert_eq!(err.kind(), ErrorKind::AuthFailed, "{err}");
        let seen = server.stats().handshake_failures;
        assert_eq!(
            seen, round,
            "{mode:?}: the client saw {err} before the counter rose"
        );
    }
}

#[test]
fn threaded_wrong_key_is_counted_first() {
    wrong_key_is_counted_before_the_client_hears(Mode::Threaded);
}

#[test]
fn event_wrong_key_is_counted_first() {
    wrong_key_is_counted_before_the_client_hears(Mode::Event);
}

/// A 257-byte response (over the handshake's limit): the server closes the
/// connection without a verdict; the counter rose before the close.
fn oversized_response_is_counted_first(mode: Mode) {
    let config = config_with_key(KEY);
    let (server, _errors) = recording_echo_server(&config, mode);
    for round in 1..=ROUNDS {
        let mut s = raw(&server);
        raw_read_frame(&mut s).unwrap();
        raw_write_frame(&mut s, &[b'{'; 257]);
        expect_close(&mut s, "oversized response");
        let seen = server.stats().handshake_failures;
        assert_eq!(seen, round, "{mode:?}: closed before the counter rose");
    }
}

#[test]
fn threaded_oversized_response_is_counted_first() {
    oversized_response_is_counted_first(Mode::Threaded);
}

#[test]
fn event_oversized_response_is_counted_first() {
    oversized_response_is_counted_first(Mode::Event);
}

/// A required PROXY header that is not one: closed, counted first.
fn bad_proxy_header_is_counted_first(mode: Mode) {
    let mut config = config_with_key(KEY);
    config.set_proxy_protocol(ProxyMode::Required);
    let (server, _errors) = recording_echo_server(&config, mode);
    for round in 1..=ROUNDS {
        let mut s = raw(&server);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"PROXY NONSENSE 1.2.3.4\r\n").unwrap();
        expect_close(&mut s, "bad PROXY header");
        let seen = server.stats().proxy_failures;
        assert_eq!(seen, round, "{mode:?}: closed before the counter rose");
    }
}

#[test]
fn threaded_bad_proxy_header_is_counted_first() {
    bad_proxy_header_is_counted_first(Mode::Threaded);
}

#[test]
fn event_bad_proxy_header_is_counted_first() {
    bad_proxy_header_is_counted_first(Mode::Event);
}

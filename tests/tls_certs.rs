//! Every certificate failure issue 11 lists, with certificates made at
//! test time, in both server modes: the code and the detail on the
//! client's side (its error) and on the server's (its refusal log entry
//! and its handshake-failure counter), while a canary TLS connection
//! keeps exchanging frames with the same server. Also a plaintext peer
//! on a TLS port and a TLS peer on a plaintext one.
//!
//! The refusal log is process-wide: one test owns it and runs every case
//! in turn.

mod common;

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::certs::{Certs, Pair, WRONG_NAME};
use common::*;
use sockserv::{Config, ErrorKind, Server, TlsClientAuth};

type Log = Arc<Mutex<Vec<(String, ErrorKind, String)>>>;

fn keyed() -> Config {
    let mut c = config_with_key(KEY);
    c.set_handshake_timeout(Duration::from_secs(2)).unwrap();
    c.set_io_timeout(Some(Duration::from_secs(10)));
    c
}

/// A server config presenting `pair`, requiring client certificates the
/// fixture's CA signed.
fn server_config(certs: &Certs, pair: &Pair) -> Config {
    let mut c = keyed();
    c.set_tls_cert_files(&pair.cert, &pair.key).unwrap();
    c.set_tls_ca_file(&certs.ca.cert).unwrap();
    c.set_tls_client_auth(TlsClientAuth::Required);
    c
}

/// A client config trusting `ca`, presenting `pair` if any.
fn client_config(ca: &Pair, pair: Option<&Pair>) -> Config {
    let mut c = keyed();
    c.set_tls_ca_file(&ca.cert).unwrap();
    if let Some(pair) = pair {
        c.set_tls_cert_files(&pair.cert, &pair.key).unwrap();
    }
    c
}

fn started(config: &Config, mode: Mode, addr: &str) -> Server {
    let server = Server::bind(addr, config).unwrap();
    match mode {
        Mode::Threaded => server.set_handler(Arc::new(echo)).unwrap(),
        Mode::Event => server
            .set_event_handler(Arc::new(EventEcho::default()))
            .unwrap(),
    }
    server.start().unwrap();
    server
}

/// Waits (bounded) for a refusal entry logged after the first `before`
/// whose kind is `kind` and whose detail has `want`; returns its detail.
fn refusal(log: &Log, before: usize, kind: ErrorKind, want: &str, what: &str) -> String {
    let found = || {
        log.lock().unwrap()[before..]
            .iter()
            .find(|(_, k, d)| *k == kind && d.contains(want))
            .map(|(_, _, d)| d.clone())
    };
    assert!(
        wait_until(Duration::from_secs(10), || found().is_some()),
        "{what}: no {kind:?} refusal with {want:?} on the server; logged: {:?}",
        &log.lock().unwrap()[before..]
    );
    found().unwrap()
}

struct Case<'a> {
    what: &'static str,
    /// The server the client goes to, and the client's config.
    server: &'a Server,
    client: Config,
    client_kind: ErrorKind,
    /// Each of these is in the client's detail.
    client_says: &'a [&'a str],
    server_kind: ErrorKind,
    server_says: &'a str,
}

#[test]
fn every_certificate_failure_is_named_on_both_sides_and_the_rest_goes_on() {
    let Some(certs) = Certs::make("every_certificate_failure_is_named_on_both_sides") else {
        return;
    };
    let log: Log = Arc::default();
    let sink = log.clone();
    sockserv::set_refusal_log(Some(Arc::new(move |r: &sockserv::Refusal<'_>| {
        sink.lock()
            .unwrap()
            .push((r.peer.to_string(), r.kind, r.detail.to_string()));
    })));
    let good_client = || client_config(&certs.ca, Some(&certs.client));
    let mut report = Vec::new();
    for mode in [Mode::Threaded, Mode::Event] {
        let tls = "tls://127.0.0.1:0";
        let good = started(&server_config(&certs, &certs.server), mode, tls);
        let canary = Canary::start(&good, &good_client());
        let foreign = started(&server_config(&certs, &certs.other_server), mode, tls);
        let expired = started(&server_config(&certs, &certs.expired), mode, tls);
        let early = started(&server_config(&certs, &certs.not_yet_valid), mode, tls);
        let misnamed = started(&server_config(&certs, &certs.wrong_name), mode, tls);
        let cases = [
            Case {
                what: "the server's certificate from an unknown CA",
                server: &foreign,
                client: good_client(),
                client_kind: ErrorKind::Certificate,
                client_says: &["unknown issuer"],
                server_kind: ErrorKind::Certificate,
                server_says: "unknown CA",
            },
            Case {
                what: "an expired server certificate",
                server: &expired,
                client: good_client(),
                client_kind: ErrorKind::Certificate,
                client_says: &["certificate verify failed: expired"],
                server_kind: ErrorKind::Certificate,
                server_says: "expired",
            },
            Case {
                what: "a server certificate not yet valid",
                server: &early,
                client: good_client(),
                client_kind: ErrorKind::Certificate,
                client_says: &["certificate verify failed: not yet valid"],
                server_kind: ErrorKind::Certificate,
                server_says: "refused our certificate",
            },
            Case {
                what: "a server certificate for another name",
                server: &misnamed,
                client: good_client(),
                client_kind: ErrorKind::Certificate,
                client_says: &["name mismatch (wanted 127.0.0.1", WRONG_NAME],
                server_kind: ErrorKind::Certificate,
                server_says: "refused our certificate",
            },
            Case {
                what: "a client certificate from an unknown CA",
                server: &good,
                client: client_config(&certs.ca, Some(&certs.other_client)),
                client_kind: ErrorKind::Certificate,
                client_says: &["unknown CA"],
                server_kind: ErrorKind::Certificate,
                server_says: "unknown issuer",
            },
            Case {
                what: "an expired client certificate",
                server: &good,
                client: client_config(&certs.ca, Some(&certs.expired)),
                client_kind: ErrorKind::Certificate,
                client_says: &["expired"],
                server_kind: ErrorKind::Certificate,
                server_says: "certificate verify failed: expired",
            },
            Case {
                what: "a client certificate not yet valid",
                server: &good,
                client: client_config(&certs.ca, Some(&certs.not_yet_valid)),
                client_kind: ErrorKind::Certificate,
                client_says: &["certificate"],
                server_kind: ErrorKind::Certificate,
                server_says: "certificate verify failed: not yet valid",
            },
            Case {
                what: "no client certificate where one is required",
                server: &good,
                client: client_config(&certs.ca, None),
                client_kind: ErrorKind::Certificate,
                client_says: &["requires a client certificate"],
                server_kind: ErrorKind::Certificate,
                server_says: "the client sent no certificate, which this server requires",
            },
        ];
        for case in &cases {
            let before = log.lock().unwrap().len();
            let failures = case.server.stats().handshake_failures;
            let handled = case.server.stats().handled;
            let started_at = Instant::now();
            let e = match sockserv::connect(case.server.local_addr(), &case.client) {
                Ok(conn) => {
                    // TLS 1.3: a client learns of its refused certificate
                    // from the server's alert, at the latest on its first
                    // read.
                    conn.set_timeout(Some(Duration::from_secs(5)));
                    let _ = conn.send(b"EVIL: in without a good certificate");
                    conn.recv_with(|f| f.to_vec())
                        .err()
                        .unwrap_or_else(|| panic!("{mode:?}: {}: the client got in", case.what))
                }
                Err(e) => e,
            };
            assert!(
                started_at.elapsed() < Duration::from_secs(5),
                "{}",
                case.what
            );
            assert_eq!(
                e.kind(),
                case.client_kind,
                "{mode:?}: {}: client: {e}",
                case.what
            );
            assert!(
                case.client_says.iter().all(|w| e.detail().contains(w)),
                "{mode:?}: {}: client: {e}",
                case.what
            );
            let said = refusal(&log, before, case.server_kind, case.server_says, case.what);
            assert!(
                wait_until(Duration::from_secs(5), || case
                    .server
                    .stats()
                    .handshake_failures
                    > failures),
                "{mode:?}: {}: not counted as a handshake failure",
                case.what
            );
            assert_eq!(
                case.server.stats().handled,
                handled,
                "{}: handled",
                case.what
            );
            report.push(format!(
                "{mode:?}: {}\n    client: {:?}: {}\n    server: {said}",
                case.what,
                e.kind(),
                e.detail()
            ));
        }

        // A plaintext peer on the TLS port: a frame, then the handshake
        // answer it would send. The server says "not TLS".
        let before = log.lock().unwrap().len();
        let mut s = TcpStream::connect(good.local_addr().trim_start_matches("tls://")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        raw_write_frame(&mut s, b"EVIL: plaintext on a TLS port");
        let said = refusal(&log, before, ErrorKind::Tls, "not TLS", "plaintext to TLS");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        report.push(format!(
            "{mode:?}: plaintext frame to TLS\n    server: {said}"
        ));
        // A sockserv plaintext client on a TLS port: it waits for the
        // challenge, the server for a ClientHello, until the server's
        // handshake deadline (0.5 s here) ends it. Refused, and counted.
        let mut impatient_config = server_config(&certs, &certs.server);
        impatient_config
            .set_handshake_timeout(Duration::from_millis(500))
            .unwrap();
        let impatient = started(&impatient_config, mode, tls);
        let before = log.lock().unwrap().len();
        let t = Instant::now();
        let plain = sockserv::connect(
            &impatient.local_addr().replace("tls://", "tcp://"),
            &keyed(),
        );
        let e = plain
            .err()
            .expect("a plaintext client got in on a TLS port");
        assert!(t.elapsed() < Duration::from_secs(5), "{e}");
        // The server's closing alert tells it what it met.
        assert_eq!(
            e.kind(),
            ErrorKind::Tls,
            "{mode:?}: plaintext client to TLS: {e}"
        );
        assert!(e.detail().contains("speaks TLS"), "{e}");
        assert!(wait_until(Duration::from_secs(5), || impatient
            .stats()
            .handshake_failures
            == 1));
        let said = log.lock().unwrap().get(before).cloned();
        report.push(format!(
            "{mode:?}: plaintext client to TLS (after {:?})\n    client: {:?}: {}\n    server: {said:?}",
            t.elapsed(),
            e.kind(),
            e.detail()
        ));

        // The reverse: a TLS client on a plaintext server. The client says
        // "not TLS" (the server's challenge is no TLS record).
        let plain_server = started(&keyed(), mode, "tcp://127.0.0.1:0");
        let before = log.lock().unwrap().len();
        let e = sockserv::connect(
            &plain_server.local_addr().replace("tcp://", "tls://"),
            &good_client(),
        )
        .err()
        .expect("a TLS client got through to a plaintext server");
        assert_eq!(e.kind(), ErrorKind::Tls, "{mode:?}: TLS to plaintext: {e}");
        assert!(e.detail().contains("not TLS"), "{mode:?}: {e}");
        assert!(wait_until(Duration::from_secs(5), || log
            .lock()
            .unwrap()
            .len()
            > before));
        let said = log.lock().unwrap()[before].clone();
        report.push(format!(
            "{mode:?}: TLS client to plaintext\n    client: {:?}: {}\n    server: {:?}: {}",
            e.kind(),
            e.detail(),
            said.1,
            said.2
        ));

        // Through all of it the canary went on; a good client still gets in
        // and is seen by its certificate.
        let exchanged = canary.finish();
        assert!(exchanged > 0, "{mode:?}");
        let fresh = sockserv::connect(good.local_addr(), &good_client()).unwrap();
        roundtrip(&fresh, b"still serving");
        report.push(format!("{mode:?}: the canary exchanged {exchanged} frames"));
    }
    sockserv::set_refusal_log(None);
    let mut err = std::io::stderr();
    let _ = writeln!(err, "\n{}\n", report.join("\n"));
}

//! TLS over loopback (issue 11): both server modes, the Rust client,
//! adopted descriptors in both roles, with and without the HMAC handshake
//! inside; every certificate failure on both sides with its code; plaintext
//! and TLS ends crossed; a relay that flips one byte after the handshake.
//! Certificates are made at test time with rcgen.

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sockserv::proto::handshake::Role;
use sockserv::{
    connect, Config, Connection, ErrorKind, EventConn, EventHandler, Server, TlsClientAuth,
};

const LIMIT: Duration = Duration::from_secs(10);

/// A CA, and certificates it signs.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate chain and key, PEM.
struct Cert {
    chain: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, names: &[&str], cn: &str, valid: Option<(i32, i32)>) -> Cert {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        // DER order O then CN (as openssl -subj /O=Example/CN=x writes it).
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some((from, to)) = valid {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Cert {
            chain: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// One CA, the server's certificate (localhost, 127.0.0.1, ::1) and a
/// client's, made once per test binary.
struct Pki {
    ca: Ca,
    server: Cert,
    client: Cert,
}

fn pki() -> &'static Pki {
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("sockserv test CA");
        let server = ca.issue(&["localhost", "127.0.0.1", "::1"], "server", None);
        let client = ca.issue(&["client.example"], "client", None);
        Pki { ca, server, client }
    })
}

fn server_config(key: Option<&[u8]>) -> Config {
    let p = pki();
    let mut c = Config::default();
    c.set_tls_cert_pem(p.server.chain.as_bytes(), p.server.key.as_bytes())
        .unwrap();
    c.set_tls_ca_pem(p.ca.pem.as_bytes()).unwrap();
    c.set_handshake_timeout(LIMIT).unwrap();
    if let Some(key) = key {
        c.set_key(key).unwrap();
    }
    c
}

fn client_config(key: Option<&[u8]>) -> Config {
    let p = pki();
    let mut c = Config::default();
    c.set_tls_ca_pem(p.ca.pem.as_bytes()).unwrap();
    c.set_handshake_timeout(LIMIT).unwrap();
    c.set_io_timeout(Some(LIMIT));
    if let Some(key) = key {
        c.set_key(key).unwrap();
    }
    c
}

fn with_client_cert(mut c: Config) -> Config {
    let p = pki();
    c.set_tls_cert_pem(p.client.chain.as_bytes(), p.client.key.as_bytes())
        .unwrap();
    c
}

/// What the handlers saw: the peer's certificate subject at open, the
/// frames, the close reasons.
#[derive(Default)]
struct Seen {
    subjects: Mutex<Vec<Option<String>>>,
    frames: Mutex<Vec<Vec<u8>>>,
    errors: Mutex<Vec<sockserv::Error>>,
}

struct Events(Arc<Seen>);

impl EventHandler for Events {
    fn on_open(&self, conn: &Arc<EventConn>) {
        let subject = conn
            .tls_info()
            .and_then(|i| i.peer_cert.as_ref())
            .map(|c| c.subject.clone());
        self.0.subjects.lock().unwrap().push(subject);
    }
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        self.0.frames.lock().unwrap().push(frame.to_vec());
        let _ = conn.send(frame);
    }
    fn on_close(&self, _conn: &Arc<EventConn>, error: Option<&sockserv::Error>) {
        if let Some(e) = error {
            self.0.errors.lock().unwrap().push(e.clone());
        }
    }
}

/// An echo server on `tls://127.0.0.1:0` in `mode`, recording what it saw.
fn tls_server(config: &Config, mode: Mode) -> (Server, Arc<Seen>) {
    let server = Server::bind("tls://127.0.0.1:0", config).unwrap();
    let seen = Arc::new(Seen::default());
    match mode {
        Mode::Threaded => {
            let s = seen.clone();
            server
                .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                    let subject = conn
                        .tls_info()
                        .and_then(|i| i.peer_cert.as_ref())
                        .map(|c| c.subject.clone());
                    s.subjects.lock().unwrap().push(subject);
                    loop {
                        match conn.recv_with(|f| f.to_vec()) {
                            Ok(frame) => {
                                s.frames.lock().unwrap().push(frame.clone());
                                if conn.send(&frame).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                s.errors.lock().unwrap().push(e);
                                return;
                            }
                        }
                    }
                }))
                .unwrap();
        }
        Mode::Event => server
            .set_event_handler(Arc::new(Events(seen.clone())))
            .unwrap(),
    }
    server.start().unwrap();
    (server, seen)
}

/// The error of a call that must fail.
fn kind_err<T>(r: sockserv::Result<T>) -> sockserv::Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn echo_many(conn: &Connection) {
    for i in 0..50u32 {
        let payload = format!("frame {i}").repeat(i as usize % 7 + 1);
        roundtrip(conn, payload.as_bytes());
    }
    // Larger than a TLS record, and than rustls's 64 KiB buffer.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    roundtrip(conn, &big);
}

fn loopback_echo(mode: Mode, key: Option<&[u8]>) {
    let (server, seen) = tls_server(&server_config(key), mode);
    assert!(server.local_addr().starts_with("tls://127.0.0.1:"));
    let conn = connect(server.local_addr(), &client_config(key)).unwrap();
    let info = conn.tls_info().expect("TLS info after connect");
    assert_eq!(info.version, 0x0304);
    let cert = info.peer_cert.as_ref().expect("the server's certificate");
    assert_eq!(cert.subject, "CN=server,O=Example");
    echo_many(&conn);
    drop(conn);
    // No client certificate was asked for.
    assert!(wait_until(LIMIT, || seen.subjects.lock().unwrap().len() == 1));
    assert_eq!(seen.subjects.lock().unwrap()[0], None);
    assert_eq!(seen.frames.lock().unwrap().len(), 51);
    server.shutdown();
}

#[test]
fn threaded_tls_echo() {
    loopback_echo(Mode::Threaded, None);
}

#[test]
fn event_tls_echo() {
    loopback_echo(Mode::Event, None);
}

#[test]
fn threaded_tls_with_hmac_echo() {
    loopback_echo(Mode::Threaded, Some(b"secret"));
}

#[test]
fn event_tls_with_hmac_echo() {
    loopback_echo(Mode::Event, Some(b"secret"));
}

#[test]
fn hmac_inside_tls_still_checks_the_key() {
    for mode in [Mode::Threaded, Mode::Event] {
        let (server, _seen) = tls_server(&server_config(Some(b"right")), mode);
        let e = kind_err(connect(server.local_addr(), &client_config(Some(b"wrong"))));
        assert_eq!(e.kind(), ErrorKind::AuthFailed, "{mode:?}: {e}");
        server.shutdown();
    }
}

#[test]
fn mutual_tls_shows_the_client_certificate_in_both_modes() {
    for mode in [Mode::Threaded, Mode::Event] {
        let mut config = server_config(Some(b"k"));
        config.set_tls_client_auth(TlsClientAuth::Required);
        let (server, seen) = tls_server(&config, mode);
        let conn = connect(
            server.local_addr(),
            &with_client_cert(client_config(Some(b"k"))),
        )
        .unwrap();
        roundtrip(&conn, b"who am I");
        assert!(wait_until(LIMIT, || !seen
            .subjects
            .lock()
            .unwrap()
            .is_empty()));
        assert_eq!(
            seen.subjects.lock().unwrap()[0].as_deref(),
            Some("CN=client,O=Example"),
            "{mode:?}"
        );
        server.shutdown();
    }
}

/// sockserv_conn_from_fd's path in both roles: a socket pair of TCP
/// sockets, one end adopted as the TLS server, the other as the client.
#[test]
fn adopted_descriptors_speak_tls_in_both_roles() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client_side = std::thread::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        let mut c = client_config(Some(b"k"));
        c.set_tls(true);
        // The default server name is the peer's IP: 127.0.0.1 is in the
        // server's certificate.
        let conn = Connection::establish(s.into(), &c, Role::Client)
            .map_err(|(e, _)| e)
            .unwrap();
        roundtrip(&conn, b"over an adopted fd");
        conn.tls_info().unwrap().peer_cert.clone().unwrap().subject
    });
    let (s, _) = listener.accept().unwrap();
    let mut c = server_config(Some(b"k"));
    c.set_tls(true);
    let conn = Connection::establish(s.into(), &c, Role::Server)
        .map_err(|(e, _)| e)
        .unwrap();
    let frame = conn.recv_with(|f| f.to_vec()).unwrap();
    conn.send(&frame).unwrap();
    assert_eq!(client_side.join().unwrap(), "CN=server,O=Example");
}

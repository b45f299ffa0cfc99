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

/// Every refusal in this test binary, as (peer, kind, detail).
fn refusals() -> &'static Mutex<Vec<(String, ErrorKind, String)>> {
    static LOG: std::sync::OnceLock<Mutex<Vec<(String, ErrorKind, String)>>> =
        std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        sockserv::set_refusal_log(Some(Arc::new(|r: &sockserv::Refusal<'_>| {
            refusals()
                .lock()
                .unwrap()
                .push((r.peer.to_string(), r.kind, r.detail.to_string()));
        })));
        Mutex::new(Vec::new())
    })
}

/// A TLS connection attempt from a socket whose port is known, so the
/// server's refusal of it can be found in the log: the client's outcome
/// and the server's reason.
fn attempt(
    server: &Server,
    config: &Config,
) -> (sockserv::Result<Connection>, (ErrorKind, String)) {
    refusals();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let peer = format!(
        "tcp://{}",
        socket.local_addr().unwrap().as_socket().unwrap()
    );
    let target: std::net::SocketAddr = server
        .local_addr()
        .strip_prefix("tls://")
        .unwrap()
        .parse()
        .unwrap();
    socket.connect(&target.into()).unwrap();
    let mut config = config.clone();
    config.set_tls(true);
    let client = Connection::establish(socket, &config, Role::Client).map_err(|(e, _)| e);
    // With no key a client may be open before the server's verdict: its
    // first receive hears it.
    let client = match client {
        Ok(conn) => conn.recv_with(|_| ()).map(|()| conn),
        Err(e) => Err(e),
    };
    let mut found = None;
    assert!(
        wait_until(LIMIT, || {
            found = refusals()
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.0 == peer)
                .map(|r| (r.1, r.2.clone()));
            found.is_some()
        }),
        "the server logged no refusal of {peer}"
    );
    (client, found.unwrap())
}

#[track_caller]
fn expect(
    what: &str,
    (client, server): (sockserv::Result<Connection>, (ErrorKind, String)),
    client_kind: ErrorKind,
    client_text: &str,
    server_kind: ErrorKind,
    server_text: &str,
) {
    let e = kind_err(client);
    assert_eq!(e.kind(), client_kind, "{what}: client: {e}");
    assert!(e.detail().contains(client_text), "{what}: client: {e}");
    assert_eq!(server.0, server_kind, "{what}: server: {}", server.1);
    assert!(
        server.1.contains(server_text),
        "{what}: server: {}",
        server.1
    );
    assert!(
        server.1.contains("TLS handshake with"),
        "{what}: server: {}",
        server.1
    );
}

fn certificate_failures(mode: Mode, key: Option<&[u8]>) {
    let p = pki();
    let what = |case: &str| format!("{mode:?} key={}: {case}", key.is_some());
    // A client trusting another CA.
    let (server, _) = tls_server(&server_config(key), mode);
    let mut other = client_config(key);
    other
        .set_tls_ca_pem(Ca::new("another CA").pem.as_bytes())
        .unwrap();
    expect(
        &what("unknown CA"),
        attempt(&server, &other),
        ErrorKind::Certificate,
        "unknown issuer",
        ErrorKind::Certificate,
        "does not trust our certificate",
    );
    // The wrong name.
    let mut named = client_config(key);
    named.set_tls_server_name("db.example").unwrap();
    expect(
        &what("name mismatch"),
        attempt(&server, &named),
        ErrorKind::Certificate,
        "name mismatch (wanted db.example",
        ErrorKind::Certificate,
        "refused our certificate",
    );
    server.shutdown();

    // An expired server certificate, one not valid yet.
    for (valid, client_text, server_text) in [
        ((2000, 2001), "expired", "expired"),
        ((2090, 2091), "not yet valid", "refused our certificate"),
    ] {
        let cert = p.ca.issue(&["127.0.0.1"], "server", Some(valid));
        let mut config = server_config(key);
        config
            .set_tls_cert_pem(cert.chain.as_bytes(), cert.key.as_bytes())
            .unwrap();
        let (server, _) = tls_server(&config, mode);
        expect(
            &what(client_text),
            attempt(&server, &client_config(key)),
            ErrorKind::Certificate,
            client_text,
            ErrorKind::Certificate,
            server_text,
        );
        server.shutdown();
    }

    // A required client certificate: missing, then from another CA.
    let mut config = server_config(key);
    config.set_tls_client_auth(TlsClientAuth::Required);
    let (server, seen) = tls_server(&config, mode);
    expect(
        &what("no client certificate"),
        attempt(&server, &client_config(key)),
        ErrorKind::Certificate,
        "requires a client certificate",
        ErrorKind::Certificate,
        "the client sent no certificate, which this server requires",
    );
    let stranger = Ca::new("stranger CA").issue(&["client.example"], "mallory", None);
    let mut config = client_config(key);
    config
        .set_tls_cert_pem(stranger.chain.as_bytes(), stranger.key.as_bytes())
        .unwrap();
    expect(
        &what("client certificate from another CA"),
        attempt(&server, &config),
        ErrorKind::Certificate,
        "does not trust our certificate",
        ErrorKind::Certificate,
        "unknown issuer",
    );
    // None of them was let in.
    assert!(seen.subjects.lock().unwrap().is_empty());
    assert!(seen.frames.lock().unwrap().is_empty());
    assert!(server.stats().handshake_failures >= 2);
    server.shutdown();
}

#[test]
fn threaded_certificate_failures_have_clear_codes_on_both_sides() {
    certificate_failures(Mode::Threaded, None);
    certificate_failures(Mode::Threaded, Some(b"k"));
}

#[test]
fn event_certificate_failures_have_clear_codes_on_both_sides() {
    certificate_failures(Mode::Event, None);
    certificate_failures(Mode::Event, Some(b"k"));
}

/// Plaintext to a TLS server, and TLS to a plaintext one: both ends say
/// what happened.
#[test]
fn plaintext_and_tls_crossed_give_clear_codes() {
    for mode in [Mode::Threaded, Mode::Event] {
        // A plaintext client on a TLS port.
        let (server, _) = tls_server(&server_config(None), mode);
        refusals();
        let plain_addr = server.local_addr().replacen("tls://", "tcp://", 1);
        let mut plain = Config::default();
        plain.set_io_timeout(Some(LIMIT));
        let conn = connect(&plain_addr, &plain).unwrap();
        let local = conn.local_addr().to_string();
        let _ = conn.send(b"hello in the clear");
        let e = kind_err(conn.recv_with(|_| ()));
        assert_eq!(e.kind(), ErrorKind::Tls, "{mode:?}: {e}");
        assert!(
            e.detail().contains("speaks TLS and this end does not"),
            "{e}"
        );
        assert!(wait_until(LIMIT, || refusals().lock().unwrap().iter().any(
            |r| r.0 == local && r.1 == ErrorKind::Tls && r.2.contains("not TLS")
        )));
        server.shutdown();

        // A TLS client on a plaintext port.
        let plain_server = Server::bind("tcp://127.0.0.1:0", &Config::default()).unwrap();
        let errors: Arc<Mutex<Vec<sockserv::Error>>> = Arc::default();
        match mode {
            Mode::Threaded => {
                let seen = errors.clone();
                plain_server
                    .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                        if let Err(e) = conn.recv_with(|_| ()) {
                            seen.lock().unwrap().push(e);
                        }
                    }))
                    .unwrap();
            }
            Mode::Event => {
                let seen = Arc::new(Seen::default());
                plain_server
                    .set_event_handler(Arc::new(Events(seen.clone())))
                    .unwrap();
                let errors = errors.clone();
                std::thread::spawn(move || {
                    if wait_until(LIMIT, || !seen.errors.lock().unwrap().is_empty()) {
                        errors
                            .lock()
                            .unwrap()
                            .extend(seen.errors.lock().unwrap().drain(..));
                    }
                });
            }
        }
        plain_server.start().unwrap();
        let tls_addr = plain_server.local_addr().replacen("tcp://", "tls://", 1);
        let e = kind_err(connect(&tls_addr, &client_config(None)));
        assert_eq!(e.kind(), ErrorKind::Tls, "{mode:?}: {e}");
        assert!(e.detail().contains("TLS handshake with"), "{e}");
        assert!(wait_until(LIMIT, || !errors.lock().unwrap().is_empty()));
        let e = errors.lock().unwrap()[0].clone();
        assert_eq!(e.kind(), ErrorKind::Tls, "{mode:?} server: {e}");
        assert!(
            e.detail().contains("speaks TLS and this end does not"),
            "{e}"
        );
        plain_server.shutdown();
    }
}

/// A relay between client and server that records what passes and, once
/// armed, flips one bit of the next chunk from the client.
struct Relay {
    addr: String,
    armed: Arc<std::sync::atomic::AtomicBool>,
    recorded: Arc<Mutex<Vec<u8>>>,
}

fn relay(server: &Server) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tls://{}", listener.local_addr().unwrap());
    let target = server
        .local_addr()
        .strip_prefix("tls://")
        .unwrap()
        .to_string();
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorded: Arc<Mutex<Vec<u8>>> = Arc::default();
    let (armed2, recorded2) = (armed.clone(), recorded.clone());
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let upstream = TcpStream::connect(target).unwrap();
        for s in [&client, &upstream] {
            s.set_read_timeout(Some(LIMIT)).unwrap();
        }
        let (mut c_in, mut u_out) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let (mut u_in, mut c_out) = (upstream, client);
            let _ = std::io::copy(&mut u_in, &mut c_out);
            let _ = c_out.shutdown(std::net::Shutdown::Both);
        });
        let mut buf = [0u8; 16384];
        loop {
            let n = match std::io::Read::read(&mut c_in, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            recorded2.lock().unwrap().extend_from_slice(&buf[..n]);
            if armed2.swap(false, std::sync::atomic::Ordering::SeqCst) {
                // Inside the record, past its 5-byte header.
                buf[n / 2 + 2] ^= 0x01;
            }
            if std::io::Write::write_all(&mut u_out, &buf[..n]).is_err() {
                break;
            }
        }
        let _ = u_out.shutdown(std::net::Shutdown::Both);
        let _ = back.join();
    });
    Relay {
        addr,
        armed,
        recorded,
    }
}

/// A relay flipping one bit after the handshake: the server closes the
/// connection with a TLS error, the handler never sees the altered frame,
/// and the recorded stream holds none of the plaintext.
#[test]
fn a_flipped_bit_after_the_handshake_closes_with_a_tls_error() {
    for mode in [Mode::Threaded, Mode::Event] {
        let (server, seen) = tls_server(&server_config(Some(b"k")), mode);
        let relay = relay(&server);
        let mut config = client_config(Some(b"k"));
        config.set_tls_server_name("127.0.0.1").unwrap();
        let conn = connect(&relay.addr, &config).unwrap();
        roundtrip(&conn, b"pay alice 100");
        relay.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        conn.send(b"pay alice 200").unwrap();
        let e = kind_err(conn.recv_with(|f| f.to_vec()));
        assert_eq!(e.kind(), ErrorKind::Tls, "{mode:?} client: {e}");
        assert!(wait_until(LIMIT, || !seen
            .errors
            .lock()
            .unwrap()
            .is_empty()));
        let e = seen.errors.lock().unwrap()[0].clone();
        assert_eq!(e.kind(), ErrorKind::Tls, "{mode:?} server: {e}");
        assert!(e.detail().contains("bad record MAC"), "{e}");
        assert_eq!(
            *seen.frames.lock().unwrap(),
            vec![b"pay alice 100".to_vec()],
            "{mode:?}: only the untouched frame arrived"
        );
        let recorded = relay.recorded.lock().unwrap();
        assert!(recorded.len() > 100);
        for plain in [&b"pay alice"[..], b"#CHALLENGE#", b"{sha256}"] {
            assert!(
                !recorded.windows(plain.len()).any(|w| w == plain),
                "{mode:?}: the relay read {:?}",
                String::from_utf8_lossy(plain)
            );
        }
        server.shutdown();
    }
}

/// What is missing is said before any connection: a TLS server without a
/// certificate, a client without trust anchors, client certificates asked
/// for with no CA to check them.
#[test]
fn missing_settings_are_refused_up_front() {
    let e = kind_err(Server::bind("tls://127.0.0.1:0", &Config::default()));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.detail().contains("needs a certificate"), "{e}");
    let mut config = server_config(None);
    config.set_tls_client_auth(TlsClientAuth::Required);
    let mut no_ca = Config::default();
    let p = pki();
    no_ca
        .set_tls_cert_pem(p.server.chain.as_bytes(), p.server.key.as_bytes())
        .unwrap();
    no_ca.set_tls_client_auth(TlsClientAuth::Optional);
    let e = kind_err(Server::bind("tls://127.0.0.1:0", &no_ca));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.detail().contains("no CA"), "{e}");
    let (server, _) = tls_server(&config, Mode::Event);
    let e = kind_err(connect(server.local_addr(), &Config::default()));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.detail()
            .contains("no trust anchors: set one with sockserv_config_set_tls_ca"),
        "{e}"
    );
    server.shutdown();
    // A key that is not the certificate's.
    let mut c = Config::default();
    let e = c
        .set_tls_cert_pem(p.server.chain.as_bytes(), p.client.key.as_bytes())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.detail().contains("does not belong"), "{e}");
}

/// ALPN: the agreed protocol is visible on both ends; none in common is a
/// TLS error.
#[test]
fn alpn_is_agreed_or_refused() {
    for mode in [Mode::Threaded, Mode::Event] {
        let mut config = server_config(None);
        config.add_tls_alpn(b"sockserv/2").unwrap();
        config.add_tls_alpn(b"sockserv/1").unwrap();
        let (server, _) = tls_server(&config, mode);
        let mut client = client_config(None);
        client.add_tls_alpn(b"sockserv/1").unwrap();
        let conn = connect(server.local_addr(), &client).unwrap();
        roundtrip(&conn, b"x");
        assert_eq!(
            conn.tls_info().unwrap().alpn.as_deref(),
            Some(&b"sockserv/1"[..])
        );
        let mut other = client_config(None);
        other.add_tls_alpn(b"h2").unwrap();
        let e = kind_err(
            connect(server.local_addr(), &other).and_then(|c| c.recv_with(|_| ()).map(|()| c)),
        );
        assert_eq!(e.kind(), ErrorKind::Tls, "{mode:?}: {e}");
        assert!(e.detail().contains("ALPN"), "{e}");
        server.shutdown();
    }
}

/// TLS 1.2 when asked for: a server allowing it still negotiates 1.3 with
/// a client that offers both.
#[test]
fn min_version_twelve_still_prefers_thirteen() {
    let mut config = server_config(Some(b"k"));
    config.set_tls_min_version(sockserv::TlsVersion::Tls12);
    let (server, _) = tls_server(&config, Mode::Event);
    let mut client = client_config(Some(b"k"));
    client.set_tls_min_version(sockserv::TlsVersion::Tls12);
    let conn = connect(server.local_addr(), &client).unwrap();
    roundtrip(&conn, b"x");
    assert_eq!(conn.tls_info().unwrap().version, 0x0304);
    server.shutdown();
}

/// Thousands of small frames sent without waiting: more than a turn's
/// share at once, so some wait decrypted in the session for the next turn
/// (a reader thread drains the echoes meanwhile).
#[test]
fn pipelined_small_frames_all_come_back() {
    for mode in [Mode::Threaded, Mode::Event] {
        let (server, _) = tls_server(&server_config(None), mode);
        let conn = Arc::new(connect(server.local_addr(), &client_config(None)).unwrap());
        let count = 20_000u32;
        let reader = {
            let conn = conn.clone();
            std::thread::spawn(move || {
                for i in 0..count {
                    let got = conn.recv_with(|f| f.to_vec()).unwrap();
                    assert_eq!(got, i.to_be_bytes(), "frame {i}");
                }
            })
        };
        for i in 0..count {
            conn.send(&i.to_be_bytes()).unwrap();
        }
        reader.join().unwrap();
        server.shutdown();
    }
}

/// A load balancer's PROXY header comes before TLS (HAProxy in TCP mode
/// with send-proxy-v2 in front of TLS backends): the handler sees the
/// client it names, over TLS with HMAC inside.
#[test]
fn a_proxy_header_goes_before_tls() {
    for mode in [Mode::Threaded, Mode::Event] {
        let mut config = server_config(Some(b"k"));
        config.set_proxy_protocol(sockserv::ProxyMode::Required);
        let server = Server::bind("tls://127.0.0.1:0", &config).unwrap();
        let peers: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = peers.clone();
        match mode {
            Mode::Threaded => server
                .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                    seen.lock().unwrap().push(conn.peer_addr().to_string());
                    echo(conn);
                }))
                .unwrap(),
            Mode::Event => {
                struct Peers(Arc<Mutex<Vec<String>>>);
                impl EventHandler for Peers {
                    fn on_open(&self, conn: &Arc<EventConn>) {
                        self.0.lock().unwrap().push(conn.peer_addr().to_string());
                    }
                    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
                        let _ = conn.send(frame);
                    }
                    fn on_close(&self, _: &Arc<EventConn>, _: Option<&sockserv::Error>) {}
                }
                server.set_event_handler(Arc::new(Peers(seen))).unwrap()
            }
        }
        server.start().unwrap();
        let target = server.local_addr().strip_prefix("tls://").unwrap();
        let mut stream = TcpStream::connect(target).unwrap();
        std::io::Write::write_all(
            &mut stream,
            b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 443\r\n",
        )
        .unwrap();
        let mut client = client_config(Some(b"k"));
        client.set_tls(true);
        let conn = Connection::establish(stream.into(), &client, Role::Client)
            .map_err(|(e, _)| e)
            .unwrap();
        roundtrip(&conn, b"through the balancer");
        assert!(wait_until(LIMIT, || !peers.lock().unwrap().is_empty()));
        assert_eq!(
            peers.lock().unwrap()[0],
            "tcp://203.0.113.7:5555",
            "{mode:?}"
        );
        server.shutdown();
    }
}

//! TLS against real peers on loopback: OpenSSL's `s_server` and `s_client`
//! and Python's stdlib `ssl`, with certificates made at test time
//! (tests/common/certs.rs). First the fixture itself, checked by OpenSSL
//! (each certificate is what the tests take it for), then sockserv
//! against each peer.

mod common;

use std::process::Command;

use common::certs::{openssl, Certs, Pair};
use common::proc;
use common::tls::*;

/// Each certificate verifies (or fails) under OpenSSL as the tests take
/// it to: the fixture's own check, so a failure below is sockserv's.
#[test]
fn the_fixture_is_what_the_tests_take_it_for() {
    let Some(certs) = Certs::make("the_fixture_is_what_the_tests_take_it_for") else {
        return;
    };
    let verify = |pair: &Pair, ca: &Pair, extra: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(["verify", "-CAfile", &path(&ca.cert)])
            .args(extra)
            .arg(&pair.cert);
        let out = proc::run(&mut cmd, LIMIT, "openssl verify");
        (
            out.status.success(),
            format!("{}{}", proc::stdout(&out), proc::stderr(&out)),
        )
    };
    let ip = ["-purpose", "sslserver", "-verify_ip", "127.0.0.1"];
    for (name, pair) in [("server", &certs.server), ("client", &certs.client)] {
        let purpose = if name == "server" {
            &ip[..]
        } else {
            &["-purpose", "sslclient"][..]
        };
        let (ok, said) = verify(pair, &certs.ca, purpose);
        assert!(ok, "{name}: {said}");
    }
    for host in [
        &["-verify_ip", "::1"][..],
        &["-verify_hostname", "localhost"],
    ] {
        let (ok, said) = verify(&certs.server, &certs.ca, host);
        assert!(ok, "server for {host:?}: {said}");
    }
    let refused = [
        (
            "expired",
            &certs.expired,
            &certs.ca,
            "certificate has expired",
        ),
        (
            "not yet valid",
            &certs.not_yet_valid,
            &certs.ca,
            "certificate is not yet valid",
        ),
        (
            "wrong name",
            &certs.wrong_name,
            &certs.ca,
            "IP address mismatch",
        ),
        (
            "other CA's server",
            &certs.other_server,
            &certs.ca,
            "unable to get local issuer certificate",
        ),
        (
            "other CA's client",
            &certs.other_client,
            &certs.ca,
            "unable to get local issuer certificate",
        ),
    ];
    for (what, pair, ca, why) in refused {
        let (ok, said) = verify(pair, ca, &ip[2..]);
        assert!(!ok && said.contains(why), "{what}: {said}");
    }
    // The other CA's own certificates are fine under the other CA.
    let (ok, said) = verify(&certs.other_server, &certs.other_ca, &ip);
    assert!(ok, "{said}");
    // The key matches the certificate (the same public key in both).
    for pair in [&certs.server, &certs.client, &certs.ca] {
        let of_cert = openssl(
            &["x509", "-noout", "-pubkey", "-in", &path(&pair.cert)],
            None,
        );
        let of_key = openssl(&["pkey", "-pubout", "-in", &path(&pair.key)], None);
        assert_eq!(of_cert, of_key, "{}", pair.cert.display());
    }
    assert_ne!(certs.server.sha256(), certs.other_server.sha256());
}

/// The OpenSSL peers themselves, against each other with the fixture:
/// TLS 1.3, mutual authentication, frames both ways; and a client that
/// trusts the other CA refused. What the sockserv tests below rely on.
#[test]
fn openssl_peers_speak_tls13_with_the_fixture() {
    let Some(certs) = Certs::make("openssl_peers_speak_tls13_with_the_fixture") else {
        return;
    };
    let ca = path(&certs.ca.cert);
    let (mut server, port) = OpensslPeer::server(&certs.server, &["-Verify", "1", "-CAfile", &ca]);
    let mut client = OpensslPeer::client(
        port,
        &certs.ca.cert,
        &[
            "-cert",
            &path(&certs.client.cert),
            "-key",
            &path(&certs.client.key),
        ],
    );
    client.send_frame(b"from the client");
    assert_eq!(
        server.recv_frame().as_deref(),
        Some(&b"from the client"[..])
    );
    server.send_frame(b"from the server");
    assert_eq!(
        client.recv_frame().as_deref(),
        Some(&b"from the server"[..])
    );
    // s_server serves one connection at a time: end this one first.
    drop(client);

    let mut refused = OpensslPeer::client(port, &certs.other_ca.cert, &[]);
    assert_eq!(refused.exit_ok(), Some(false));
    let said = refused.stderr();
    assert!(said.contains("certificate verify failed"), "{said}");
    drop(server);
}

/// The Python peer against itself: mutual TLS 1.3, the {sha256}
/// handshake inside, the frame plan echoed; and a client without a
/// certificate refused by a listener that requires one. What the sockserv
/// tests below rely on.
#[test]
fn python_peer_speaks_tls13_and_the_handshake_with_itself() {
    let test = "python_peer_speaks_tls13_and_the_handshake_with_itself";
    if !have_python() {
        return common::skip::required(test, "no python3 with ssl (SOCKSERV_PYTHON)");
    }
    let Some(certs) = Certs::make(test) else {
        return;
    };
    let (ca, key) = (
        path(&certs.ca.cert),
        std::str::from_utf8(common::KEY).unwrap(),
    );
    let listen = |extra: &[&str]| {
        let mut args = s(&["listener", "127.0.0.1:0", "--cert"]);
        args.extend([
            path(&certs.server.cert),
            "--tls-key".into(),
            path(&certs.server.key),
        ]);
        args.extend(s(&["--ca", &ca, "--require-client-cert"]));
        args.extend(s(extra));
        let mut py = PyTls::spawn(&args);
        let addr = py.wait_line("listening ");
        (py, addr)
    };
    let (listener, addr) = listen(&["--authkey", key]);
    let mut args = s(&["client", &addr, "--ca", &ca, "--authkey", key, "--cert"]);
    args.extend([
        path(&certs.client.cert),
        "--tls-key".into(),
        path(&certs.client.key),
    ]);
    let said = PyTls::spawn(&args).expect_ok();
    assert!(said.contains(&"tls TLSv1.3".into()), "{said:?}");
    assert!(said.contains(&"checked 211 echoes".into()), "{said:?}");
    let said = listener.expect_ok();
    assert!(
        said.contains(&"peer organizationName=sockserv tests,commonName=client".into()),
        "{said:?}"
    );

    let (listener, addr) = listen(&["--expect", "refused"]);
    PyTls::spawn(&s(&["client", &addr, "--ca", &ca, "--expect", "refused"])).expect_ok();
    let said = listener.expect_ok();
    assert!(
        said.iter()
            .any(|l| l.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE")),
        "{said:?}"
    );
}

// ---- sockserv against the peers ----

use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Mode};
use sockserv::Role;
use sockserv::{
    Config, Connection, EventConn, EventHandler, Server, TlsClientAuth, TlsInfo, TlsVersion,
};

/// A TLS server config with the fixture's server certificate; with
/// `auth` other than None, client certificates checked against the CA.
fn server_config(certs: &Certs, auth: TlsClientAuth, key: bool) -> Config {
    let mut c = if key {
        common::config_with_key(common::KEY)
    } else {
        Config::default()
    };
    c.set_tls_cert_files(&certs.server.cert, &certs.server.key)
        .unwrap();
    if auth != TlsClientAuth::None {
        c.set_tls_ca_file(&certs.ca.cert).unwrap();
        c.set_tls_client_auth(auth);
    }
    c.set_handshake_timeout(Duration::from_secs(10)).unwrap();
    c.set_io_timeout(Some(Duration::from_secs(30)));
    c
}

/// A TLS client config trusting the fixture's CA, presenting the client
/// certificate when `cert`.
fn client_config(certs: &Certs, cert: bool, key: bool) -> Config {
    let mut c = if key {
        common::config_with_key(common::KEY)
    } else {
        Config::default()
    };
    c.set_tls_ca_file(&certs.ca.cert).unwrap();
    if cert {
        c.set_tls_cert_files(&certs.client.cert, &certs.client.key)
            .unwrap();
    }
    c.set_handshake_timeout(Duration::from_secs(10)).unwrap();
    c.set_io_timeout(Some(Duration::from_secs(30)));
    c
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a connection's TLS handshake gave, as one line: "version 0304
/// peer HEX SUBJECT" or "version 0304 peer none".
fn identity(info: Option<&TlsInfo>) -> String {
    let Some(info) = info else {
        return "no TLS".into();
    };
    let mut line = match &info.peer_cert {
        Some(p) => format!(
            "version {:04x} peer {} {}",
            info.version,
            hex(&p.sha256),
            p.subject
        ),
        None => format!("version {:04x} peer none", info.version),
    };
    if let Some(alpn) = &info.alpn {
        line.push_str(&format!(" alpn {}", String::from_utf8_lossy(alpn)));
    }
    line
}

struct IdentityEvents;

impl EventHandler for IdentityEvents {
    fn on_open(&self, conn: &Arc<EventConn>) {
        let _ = conn.send(identity(conn.tls_info()).as_bytes());
    }
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&sockserv::Error>) {}
}

/// A TLS echo server on 127.0.0.1 in `mode` that first tells each client
/// what it sees of it (its [`identity`] line, from the handler or from
/// `on_open`).
fn identity_server(config: &Config, mode: Mode) -> Server {
    let server = Server::bind("tls://127.0.0.1:0", config).unwrap();
    match mode {
        Mode::Threaded => server
            .set_handler(Arc::new(|conn: &Arc<Connection>| {
                if conn.send(identity(conn.tls_info()).as_bytes()).is_ok() {
                    common::echo(conn);
                }
            }))
            .unwrap(),
        Mode::Event => server.set_event_handler(Arc::new(IdentityEvents)).unwrap(),
    }
    server.start().unwrap();
    server
}

fn port_of(server: &Server) -> u16 {
    let addr = server.local_addr();
    assert!(addr.starts_with("tls://127.0.0.1:"), "{addr}");
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Frames of these sizes go both ways in the OpenSSL exchanges: empty,
/// small, one TLS record's worth and more, several records.
const OPENSSL_SIZES: [usize; 6] = [0, 1, 100, 16384, 16385, 200_000];

fn frame_bytes(size: usize, seed: usize) -> Vec<u8> {
    (0..size)
        .map(|j| ((seed * 31 + j * 7) % 251) as u8)
        .collect()
}

/// `openssl s_client -tls1_3` against a sockserv TLS server in both
/// modes, with mutual TLS: the server's handler (threaded) and `on_open`
/// (event) see TLS 1.3 and the client certificate's SHA-256 and subject;
/// frames echo byte for byte. A client without a certificate under
/// optional client auth is let in and seen as such.
#[test]
fn openssl_s_client_against_sockserv_servers() {
    let Some(certs) = Certs::make("openssl_s_client_against_sockserv_servers") else {
        return;
    };
    let client_id = format!("version 0304 peer {} ", hex(&certs.client.sha256()));
    for mode in [Mode::Threaded, Mode::Event] {
        let server = identity_server(&server_config(&certs, TlsClientAuth::Required, false), mode);
        let mut client = OpensslPeer::client(
            port_of(&server),
            &certs.ca.cert,
            &[
                "-cert",
                &path(&certs.client.cert),
                "-key",
                &path(&certs.client.key),
            ],
        );
        let seen = String::from_utf8(client.recv_frame().expect("the identity frame")).unwrap();
        assert!(seen.starts_with(&client_id), "{mode:?}: {seen}");
        assert!(
            seen.contains("CN=client") && seen.contains("O=sockserv tests"),
            "{mode:?}: {seen}"
        );
        for (seed, &size) in OPENSSL_SIZES.iter().enumerate() {
            let data = frame_bytes(size, seed);
            client.send_frame(&data);
            let back = client.recv_frame().unwrap_or_else(|| {
                panic!("{mode:?}: no echo of {size} bytes: {}", client.stderr())
            });
            assert!(back == data, "{mode:?}: the echo of {size} bytes differs");
        }
        drop(client);

        let server = identity_server(&server_config(&certs, TlsClientAuth::Optional, false), mode);
        let mut client = OpensslPeer::client(port_of(&server), &certs.ca.cert, &[]);
        let seen = client.recv_frame().expect("the identity frame");
        assert_eq!(seen, b"version 0304 peer none", "{mode:?}");
        client.send_frame(b"anonymous");
        assert_eq!(client.recv_frame().as_deref(), Some(&b"anonymous"[..]));
    }
}

/// A sockserv client against `openssl s_server -tls1_3` requiring a
/// client certificate: the client sees TLS 1.3 and the server
/// certificate's SHA-256 and subject, checked for 127.0.0.1 (the
/// address's host) and for localhost (set_tls_server_name); frames go
/// both ways.
#[test]
fn sockserv_client_against_openssl_s_server() {
    let Some(certs) = Certs::make("sockserv_client_against_openssl_s_server") else {
        return;
    };
    let ca = path(&certs.ca.cert);
    for name in [None, Some("localhost")] {
        let (mut server, port) =
            OpensslPeer::server(&certs.server, &["-Verify", "1", "-CAfile", &ca]);
        let mut config = client_config(&certs, true, false);
        if let Some(name) = name {
            config.set_tls_server_name(name).unwrap();
        }
        let conn = sockserv::connect(&format!("tls://127.0.0.1:{port}"), &config)
            .unwrap_or_else(|e| panic!("{name:?}: {e}: {}", server.stderr()));
        let info = conn.tls_info().expect("TLS info after connect");
        assert_eq!(info.version, 0x0304);
        let peer = info.peer_cert.as_ref().expect("the server's certificate");
        assert_eq!(peer.sha256, certs.server.sha256());
        assert!(peer.subject.contains("CN=server"), "{}", peer.subject);
        for (seed, &size) in OPENSSL_SIZES.iter().enumerate() {
            let data = frame_bytes(size, seed);
            conn.send(&data).unwrap();
            let got = server.recv_frame().expect("s_server got the frame");
            assert!(
                got == data,
                "s_server got {} bytes, not the {size} sent",
                got.len()
            );
            server.send_frame(&data);
            let back = conn.recv_with(|f| f.to_vec()).unwrap();
            assert!(
                back == data,
                "the frame of {size} bytes from s_server differs"
            );
        }
        drop(conn);
    }
}

/// Python's `ssl` with the multiprocessing handshake and framing as the
/// client of a sockserv TLS server with a key, in both modes, mutual TLS:
/// the whole frame plan echoes; Python sees TLS 1.3 and the server's
/// certificate.
#[test]
fn python_tls_client_against_sockserv_servers() {
    let test = "python_tls_client_against_sockserv_servers";
    if !have_python() {
        return common::skip::required(test, "no python3 with ssl (SOCKSERV_PYTHON)");
    }
    let Some(certs) = Certs::make(test) else {
        return;
    };
    let key = std::str::from_utf8(common::KEY).unwrap();
    // IPv4 in one mode, IPv6 in the other (the certificate has both).
    for (mode, addr) in [
        (Mode::Threaded, "tls://127.0.0.1:0"),
        (Mode::Event, "tls://[::1]:0"),
    ] {
        let config = server_config(&certs, TlsClientAuth::Required, true);
        let server = match mode {
            Mode::Threaded => common::echo_server(addr, &config),
            Mode::Event => {
                common::event_server(addr, &config, Arc::new(common::EventEcho::default()))
            }
        };
        let target = server.local_addr().trim_start_matches("tls://").to_string();
        let mut args = s(&[
            "client",
            &target,
            "--ca",
            &path(&certs.ca.cert),
            "--authkey",
            key,
        ]);
        args.extend(s(&["--cert", &path(&certs.client.cert)]));
        args.extend(s(&["--tls-key", &path(&certs.client.key)]));
        let said = PyTls::spawn(&args).expect_ok();
        assert!(said.contains(&"tls TLSv1.3".into()), "{mode:?}: {said:?}");
        assert!(
            said.contains(&"checked 211 echoes".into()),
            "{mode:?}: {said:?}"
        );
        assert!(
            said.contains(&"peer organizationName=sockserv tests,commonName=server".into()),
            "{mode:?}: {said:?}"
        );
        // A wrong key inside TLS is refused all the same.
        let mut args = s(&["client", &target, "--ca", &path(&certs.ca.cert)]);
        args.extend(s(&["--authkey", "not the key", "--expect", "refused"]));
        args.extend(s(&["--cert", &path(&certs.client.cert)]));
        args.extend(s(&["--tls-key", &path(&certs.client.key)]));
        PyTls::spawn(&args).expect_ok();
    }
}

/// A sockserv client against a Python `ssl` listener running the
/// multiprocessing handshake: TLS 1.3, mutual, the key checked inside;
/// Python sees the client certificate; frames echo.
#[test]
fn sockserv_client_against_python_tls_listener() {
    let test = "sockserv_client_against_python_tls_listener";
    if !have_python() {
        return common::skip::required(test, "no python3 with ssl (SOCKSERV_PYTHON)");
    }
    let Some(certs) = Certs::make(test) else {
        return;
    };
    let key = std::str::from_utf8(common::KEY).unwrap();
    // Over IPv4 and IPv6: the client checks the certificate for the
    // address's host, 127.0.0.1 or ::1.
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        let mut args = s(&["listener", listen, "--cert", &path(&certs.server.cert)]);
        args.extend(s(&[
            "--tls-key",
            &path(&certs.server.key),
            "--ca",
            &path(&certs.ca.cert),
        ]));
        args.extend(s(&["--require-client-cert", "--authkey", key]));
        let mut py = PyTls::spawn(&args);
        let addr = py.wait_line("listening ");
        let conn = sockserv::connect(&format!("tls://{addr}"), &client_config(&certs, true, true))
            .unwrap_or_else(|e| panic!("{listen}: {e}"));
        assert_eq!(conn.tls_info().map(|i| i.version), Some(0x0304));
        for (seed, &size) in OPENSSL_SIZES.iter().enumerate() {
            let data = frame_bytes(size, seed);
            conn.send(&data).unwrap();
            let back = conn.recv_with(|f| f.to_vec()).unwrap();
            assert!(back == data, "the echo of {size} bytes differs");
        }
        drop(conn);
        let said = py.expect_ok();
        assert!(
            said.contains(&"peer organizationName=sockserv tests,commonName=client".into()),
            "{said:?}"
        );
        assert!(
            said.contains(&format!("echoed {} frames", OPENSSL_SIZES.len())),
            "{said:?}"
        );
    }
}

/// What `openssl s_client` meets at a sockserv server in `mode` with
/// `config`: `Ok` with the identity line, or `Err` with its stderr when
/// refused (the server then counted a handshake failure, handled none).
fn s_client_meets(
    certs: &Certs,
    config: &Config,
    mode: Mode,
    flag: &str,
    extra: &[&str],
) -> Result<String, String> {
    let server = identity_server(config, mode);
    let mut client = OpensslPeer::client_version(port_of(&server), &certs.ca.cert, flag, extra);
    match client.recv_frame() {
        Some(seen) => {
            client.send_frame(b"negotiated");
            assert_eq!(client.recv_frame().as_deref(), Some(&b"negotiated"[..]));
            Ok(String::from_utf8(seen).unwrap())
        }
        None => {
            assert!(
                wait_until(Duration::from_secs(10), || server
                    .stats()
                    .handshake_failures
                    == 1),
                "{mode:?}: the refusal was not counted"
            );
            assert_eq!(server.stats().handled, 0);
            Err(client.stderr())
        }
    }
}

/// Versions and ALPN against `openssl s_client`, both modes: TLS 1.2 is
/// refused by default (1.3 only) and spoken when allowed; an ALPN
/// protocol in common is agreed and seen by the server, none in common
/// refused.
#[test]
fn versions_and_alpn_with_openssl() {
    let Some(certs) = Certs::make("versions_and_alpn_with_openssl") else {
        return;
    };
    for mode in [Mode::Threaded, Mode::Event] {
        let config = server_config(&certs, TlsClientAuth::None, false);
        let said = s_client_meets(&certs, &config, mode, "-tls1_2", &[]).unwrap_err();
        assert!(said.contains("protocol version"), "{mode:?}: {said}");

        let mut tls12 = config.clone();
        tls12.set_tls_min_version(TlsVersion::Tls12);
        let seen = s_client_meets(&certs, &tls12, mode, "-tls1_2", &[]).unwrap();
        assert_eq!(seen, "version 0303 peer none", "{mode:?}");
        let seen = s_client_meets(&certs, &tls12, mode, "-tls1_3", &[]).unwrap();
        assert_eq!(seen, "version 0304 peer none", "{mode:?}");

        let mut alpn = config.clone();
        alpn.add_tls_alpn(b"sockserv/1").unwrap();
        alpn.add_tls_alpn(b"other/2").unwrap();
        let seen =
            s_client_meets(&certs, &alpn, mode, "-tls1_3", &["-alpn", "x,sockserv/1"]).unwrap();
        assert_eq!(seen, "version 0304 peer none alpn sockserv/1", "{mode:?}");
        let said = s_client_meets(&certs, &alpn, mode, "-tls1_3", &["-alpn", "x"]).unwrap_err();
        assert!(said.contains("no application protocol"), "{mode:?}: {said}");
    }
}

/// Connections made from a socket the application opened
/// (`Connection::establish`, what `sockserv_conn_from_fd` runs) with TLS
/// on, in both roles: a client to `openssl s_server` (checking the
/// certificate for the socket's peer address), a server for
/// `openssl s_client`; frames both ways.
#[test]
fn established_sockets_speak_tls_with_openssl_in_both_roles() {
    let Some(certs) = Certs::make("established_sockets_speak_tls_with_openssl_in_both_roles")
    else {
        return;
    };
    let socket_to = |port: u16| {
        let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.connect(&target.into()).unwrap();
        socket
    };
    // The client role.
    let (mut server, port) = OpensslPeer::server(&certs.server, &[]);
    let mut config = client_config(&certs, false, false);
    config.set_tls(true);
    let conn = Connection::establish(socket_to(port), &config, Role::Client)
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(conn.tls_info().map(|i| i.version), Some(0x0304));
    conn.send(b"from an established client").unwrap();
    assert_eq!(
        server.recv_frame().as_deref(),
        Some(&b"from an established client"[..])
    );
    server.send_frame(b"from s_server");
    assert_eq!(conn.recv_with(|f| f.to_vec()).unwrap(), b"from s_server");
    drop(conn);

    // The server role.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = OpensslPeer::client(port, &certs.ca.cert, &[]);
    let (accepted, _) = listener.accept().unwrap();
    let mut config = server_config(&certs, TlsClientAuth::None, false);
    config.set_tls(true);
    let conn = Connection::establish(socket2::Socket::from(accepted), &config, Role::Server)
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!(conn.tls_info().map(|i| i.version), Some(0x0304));
    client.send_frame(b"from s_client");
    assert_eq!(conn.recv_with(|f| f.to_vec()).unwrap(), b"from s_client");
    conn.send(b"from an established server").unwrap();
    assert_eq!(
        client.recv_frame().as_deref(),
        Some(&b"from an established server"[..])
    );
}

/// A stock Python 3.12+ as the peer: the stdlib's own deliver_challenge /
/// answer_challenge (multiprocessing.connection) over TLS, both
/// directions, against an event-mode server and a sockserv client.
#[test]
fn stock_python312_handshake_over_tls_both_ways() {
    let test = "stock_python312_handshake_over_tls_both_ways";
    let Some(python) = modern_python() else {
        return common::skip::required(
            test,
            "no Python 3.12+ with ssl (python3.12..3.14 on PATH, or SOCKSERV_PYTHON312)",
        );
    };
    let Some(certs) = Certs::make(test) else {
        return;
    };
    let key = std::str::from_utf8(common::KEY).unwrap();
    let ca = path(&certs.ca.cert);
    let server = common::event_server(
        "tls://127.0.0.1:0",
        &server_config(&certs, TlsClientAuth::None, true),
        Arc::new(common::EventEcho::default()),
    );
    let target = server.local_addr().trim_start_matches("tls://").to_string();
    let said = PyTls::spawn_with(
        &python,
        &s(&["client", &target, "--ca", &ca, "--authkey", key]),
    )
    .expect_ok();
    assert!(said.contains(&"handshake stdlib".into()), "{said:?}");
    assert!(said.contains(&"checked 211 echoes".into()), "{said:?}");

    let mut args = s(&[
        "listener",
        "127.0.0.1:0",
        "--cert",
        &path(&certs.server.cert),
    ]);
    args.extend(s(&[
        "--tls-key",
        &path(&certs.server.key),
        "--authkey",
        key,
    ]));
    let mut py = PyTls::spawn_with(&python, &args);
    let addr = py.wait_line("listening ");
    let conn = sockserv::connect(
        &format!("tls://{addr}"),
        &client_config(&certs, false, true),
    )
    .unwrap();
    for (seed, &size) in OPENSSL_SIZES.iter().enumerate() {
        let data = frame_bytes(size, seed);
        conn.send(&data).unwrap();
        assert!(conn.recv_with(|f| f == data.as_slice()).unwrap(), "{size}");
    }
    drop(conn);
    let said = py.expect_ok();
    assert!(said.contains(&"handshake stdlib".into()), "{said:?}");
}

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

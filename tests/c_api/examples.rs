//! The example programs talk to each other: the right key, a wrong key,
//! SIGTERM and SIGINT, bad usage, the Makefile's demo.

use super::*;

#[test]
fn examples_exchange_with_the_right_key_and_stop_on_sigint() {
    let server = EchoServer::start("tcp://127.0.0.1:0", &[], RUN_LIMIT);
    assert!(
        server.addr.starts_with("tcp://127.0.0.1:"),
        "{}",
        server.addr
    );
    assert!(!server.addr.ends_with(":0"), "port 0 was not replaced");

    let out = client(
        "echo_client",
        &[],
        Some(KEY),
        &[&server.addr, "hello", "framed world", ""],
    );
    assert_success(&out, "echo_client");
    assert_eq!(stdout(&out), "hello\nframed world\n\n");

    // The C++ client, its key given with -k.
    let out = client(
        "raii_client",
        &[],
        None,
        &["-k", KEY, &server.addr, "from C++"],
    );
    assert_success(&out, "raii_client");
    assert_eq!(stdout(&out), "from C++\n");

    let (status, stderr) = server.stop(libc::SIGINT, Duration::from_secs(10));
    assert!(
        status.success(),
        "echo_server exited with {status:?}:\n{stderr}"
    );
    assert!(stderr.contains("SIGINT received"), "{stderr}");
}

#[test]
fn a_wrong_key_is_refused_clearly_and_the_server_keeps_serving() {
    let server = EchoServer::start("tcp://127.0.0.1:0", &[], RUN_LIMIT);

    for (name, args) in [
        (
            "echo_client",
            ["-k", "not-the-key", server.addr.as_str(), "hello"],
        ),
        (
            "raii_client",
            ["-k", "not-the-key", server.addr.as_str(), "hello"],
        ),
    ] {
        let out = client(name, &[], None, &args);
        assert_eq!(out.status.code(), Some(1), "{name}\n{}", show(&out));
        assert_eq!(stdout(&out), "", "{name} printed an echo");
        let err = stderr(&out);
        assert!(
            err.contains("authentication failed: the keys do not match"),
            "{name}: unclear message:\n{err}"
        );
        assert!(
            err.contains(&server.addr),
            "{name} does not name the address:\n{err}"
        );
    }
    // The key from the environment, wrong too.
    let out = client("echo_client", &[], Some("also wrong"), &[&server.addr, "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    // The server is unharmed: the right key still works.
    let out = client("echo_client", &[], Some(KEY), &[&server.addr, "still here"]);
    assert_success(&out, "echo_client after the refusals");
    assert_eq!(stdout(&out), "still here\n");

    let (status, stderr) = server.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        status.success(),
        "echo_server exited with {status:?}:\n{stderr}"
    );
}

#[test]
fn sigterm_stops_a_unix_server_and_removes_its_socket() {
    let dir = TempDir::new("unix");
    let path = dir.0.join("echo.sock");
    let addr = format!("unix://{}", path.display());
    let server = EchoServer::start(&addr, &[], RUN_LIMIT);
    assert_eq!(server.addr, addr);
    assert!(path.exists(), "no socket file at {}", path.display());

    let out = client("echo_client", &[], Some(KEY), &[&addr, "over unix"]);
    assert_success(&out, "echo_client over unix");
    assert_eq!(stdout(&out), "over unix\n");

    let (status, stderr) = server.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        status.success(),
        "echo_server exited with {status:?}:\n{stderr}"
    );
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(!path.exists(), "the socket file was left behind");
}

#[test]
fn bad_usage_and_bad_addresses_fail_with_a_message() {
    let out = client("echo_client", &[], None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(stderr(&out).contains("usage:"));
    let out = client("echo_client", &[], Some(KEY), &["tcp:/nonsense", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("the address could not be parsed"),
        "{}",
        show(&out)
    );
    let out = run(
        &mut Command::new(built().examples.join("echo_server")),
        RUN_LIMIT,
        "echo_server",
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn makefile_demo_runs() {
    let b = built();
    let output = run(
        make_examples(&b.lib_dir, &b.examples).arg("demo"),
        RUN_LIMIT,
        "make -C c_examples demo",
    );
    assert_success(&output, "make demo");
    let out = stdout(&output);
    for expected in [
        "listening on tcp://127.0.0.1:",
        "hello\nframed world\n",
        "authentication failed: the keys do not match",
        "still serving",
        "the server exited with status 0",
        "== demo OK ==",
    ] {
        assert!(
            out.contains(expected) || stderr(&output).contains(expected),
            "the demo lacks {expected:?}\n{}",
            show(&output)
        );
    }
}

// ---------------------------------------------------------------------------
// TLS: the examples' -C/-K/-A flags and `make demo-tls`, with certificates
// made at test time by c_examples/make-certs.sh (the openssl command line).

/// Whether the openssl command line works (it has no --version).
fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A CA with server and client certificates in `dir`, and an unrelated
/// second CA with the prefix "other-".
fn make_certs(dir: &TempDir) {
    for extra in [None, Some("other")] {
        let mut cmd = Command::new("sh");
        cmd.arg(root().join("c_examples/make-certs.sh"))
            .arg(dir.path());
        cmd.args(extra);
        assert_success(&run(&mut cmd, RUN_LIMIT, "make-certs.sh"), "make-certs.sh");
    }
}

#[test]
fn examples_over_tls_and_each_refusal_is_clear() {
    if !have_openssl() {
        return skip::required(
            "examples_over_tls_and_each_refusal_is_clear",
            "the openssl command line is not installed (apt-get install openssl)",
        );
    }
    let certs = TempDir::new("example-certs");
    make_certs(&certs);
    let f = |name: &str| certs.file(name);
    let mut cmd = Command::new(built().examples.join("echo_server"));
    cmd.args(["-v", "-C", &f("server.pem"), "-K", &f("server.key")])
        .arg("tls://127.0.0.1:0")
        .env("SOCKSERV_KEY", KEY);
    let server = EchoServer::spawn(cmd, RUN_LIMIT);
    assert!(
        server.addr.starts_with("tls://127.0.0.1:") && !server.addr.ends_with(":0"),
        "{}",
        server.addr
    );

    // The right CA and key: the echoes on stdout, the server's certificate
    // on stderr.
    let ca = f("ca.pem");
    let out = client(
        "echo_client",
        &[],
        Some(KEY),
        &["-A", &ca, &server.addr, "hello", "over TLS"],
    );
    assert_success(&out, "echo_client over TLS");
    assert_eq!(stdout(&out), "hello\nover TLS\n");
    let err = stderr(&out);
    assert!(err.contains("TLS 1.3"), "{err}");
    assert!(err.contains("CN=localhost"), "{err}");
    // The fingerprint it prints is the one openssl computes.
    let fp = run(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(f("server.pem")),
        RUN_LIMIT,
        "openssl x509",
    );
    let fp = stdout(&fp);
    let fp = fp.trim().rsplit('=').next().unwrap_or("");
    assert_eq!(fp.len(), 95, "{fp}");
    assert!(err.contains(&format!("sha256 {fp}")), "{fp} not in:\n{err}");

    // Refusals, each with its own words, and the exit status 1.
    let other = f("other-ca.pem");
    let plain = server.addr.replacen("tls://", "tcp://", 1);
    for (what, args, expected) in [
        (
            "a client trusting another CA",
            vec!["-A", other.as_str(), server.addr.as_str(), "x"],
            "unknown issuer",
        ),
        (
            "a client without a CA",
            vec![server.addr.as_str(), "x"],
            "no trust anchors",
        ),
    ] {
        let out = client("echo_client", &[], Some(KEY), &args);
        assert_eq!(out.status.code(), Some(1), "{what}\n{}", show(&out));
        assert_eq!(stdout(&out), "", "{what}: an echo came back");
        assert!(stderr(&out).contains(expected), "{what}:\n{}", show(&out));
    }
    // Plaintext to the TLS port (no key, so a frame comes first): refused.
    let out = client("echo_client", &[], None, &[&plain, "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(stdout(&out), "", "plaintext got an echo");

    // Still serving.
    let out = client(
        "echo_client",
        &[],
        Some(KEY),
        &["-A", &ca, &server.addr, "still"],
    );
    assert_success(&out, "echo_client after the refusals");
    assert_eq!(stdout(&out), "still\n");
    let (status, log) = server.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("refused"), "no refusal logged:\n{log}");

    // Bad usage: -C without -K, -A without -C on the server.
    for args in [
        vec!["-C", "x.pem", "tls://127.0.0.1:0"],
        vec!["-A", "ca.pem", "tls://127.0.0.1:0"],
    ] {
        let out = run(
            Command::new(built().examples.join("echo_server")).args(&args),
            RUN_LIMIT,
            "echo_server",
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", show(&out));
    }
    // A certificate file that does not exist: the server names it and stops.
    let missing = certs.file("missing.pem");
    let out = run(
        Command::new(built().examples.join("echo_server")).args([
            "-C",
            &missing,
            "-K",
            &f("server.key"),
            "tls://127.0.0.1:0",
        ]),
        RUN_LIMIT,
        "echo_server",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("missing.pem"), "{}", show(&out));
}

#[test]
fn examples_over_mutual_tls() {
    if !have_openssl() {
        return skip::required(
            "examples_over_mutual_tls",
            "the openssl command line is not installed (apt-get install openssl)",
        );
    }
    let certs = TempDir::new("example-mtls");
    make_certs(&certs);
    let f = |name: &str| certs.file(name);
    let mut cmd = Command::new(built().examples.join("echo_server"));
    cmd.args(["-v", "-C", &f("server.pem"), "-K", &f("server.key")])
        .args(["-A", &f("ca.pem"), "tls://127.0.0.1:0"])
        .env("SOCKSERV_KEY", KEY);
    let server = EchoServer::spawn(cmd, RUN_LIMIT);
    let ca = f("ca.pem");
    let (cert, key) = (f("client.pem"), f("client.key"));
    let out = client(
        "echo_client",
        &[],
        Some(KEY),
        &["-A", &ca, "-C", &cert, "-K", &key, &server.addr, "mutual"],
    );
    assert_success(&out, "echo_client with a client certificate");
    assert_eq!(stdout(&out), "mutual\n");

    // No certificate, or one from another CA: refused, no echo.
    let (other_cert, other_key) = (f("other-client.pem"), f("other-client.key"));
    for args in [
        vec!["-A", ca.as_str(), server.addr.as_str(), "x"],
        vec![
            "-A",
            ca.as_str(),
            "-C",
            other_cert.as_str(),
            "-K",
            other_key.as_str(),
            server.addr.as_str(),
            "x",
        ],
    ] {
        let out = client("echo_client", &[], Some(KEY), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}\n{}", show(&out));
        assert_eq!(stdout(&out), "", "{args:?}: an echo came back");
    }
    // The right certificate and a wrong key: the HMAC inside TLS refuses.
    let out = client(
        "echo_client",
        &[],
        Some("not-the-key"),
        &["-A", &ca, "-C", &cert, "-K", &key, &server.addr, "x"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        show(&out)
    );

    let (status, stderr) = server.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{stderr}");
    // The server saw who the client was, and why the others were refused.
    assert!(stderr.contains("certificate CN=client"), "{stderr}");
    assert!(
        stderr.contains("sent no certificate"),
        "the missing client certificate is not named:\n{stderr}"
    );
}

#[test]
fn makefile_demo_tls_runs() {
    if !have_openssl() {
        return skip::required(
            "makefile_demo_tls_runs",
            "the openssl command line is not installed (apt-get install openssl)",
        );
    }
    let b = built();
    let output = run(
        make_examples(&b.lib_dir, &b.examples).arg("demo-tls"),
        RUN_LIMIT,
        "make -C c_examples demo-tls",
    );
    assert_success(&output, "make demo-tls");
    let all = stdout(&output) + &stderr(&output);
    for expected in [
        "listening on tls://127.0.0.1:",
        "hello\nover mutual TLS\n",
        "server certificate CN=localhost",
        "certificate CN=client",
        "unknown issuer",
        "a client trusting another CA is refused",
        "a client without a certificate is refused",
        "still serving",
        "the server exited with status 0",
        "== demo-tls OK ==",
    ] {
        assert!(
            all.contains(expected),
            "the TLS demo lacks {expected:?}\n{}",
            show(&output)
        );
    }
    // Its temporary CA is gone.
    let left: Vec<_> = std::fs::read_dir(&b.examples)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("demo-tls."))
        .collect();
    assert!(left.is_empty(), "demo-tls left {left:?}");
}

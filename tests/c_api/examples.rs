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

//! Embedded mode from C (issue 12): tests/c/embed_poll.c (a plain poll()
//! loop) and tests/c/embed_epoll.c (an epoll loop with the server's fd
//! level-triggered, and with EPOLLET), each running the scenarios of
//! tests/c/embed_common.h: echo over 1,000 connections and a burst past a
//! connection's share of a turn, backpressure with a peer that does not
//! read, the idle and handshake timeouts with no traffic (and no busy
//! loop), a callback closing another connection, shutdown from a callback,
//! max_connections waiting for a slot; the process's thread count never
//! changes.

use super::*;

fn embed_program(name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
    std::fs::create_dir_all(&out).expect("create target/tmp/c-tests");
    compile(
        Lang::C,
        &lib_dir(),
        &root().join("tests/c").join(format!("{name}.c")),
        &out,
    )
}

fn passes(exe: &Path, args: &[&str], loop_name: &str) {
    let output = run(
        Command::new(exe).args(args),
        RUN_LIMIT,
        &format!("{} {args:?}", exe.display()),
    );
    assert_success(&output, loop_name);
    let out = stdout(&output);
    let last = out.lines().last().unwrap_or("");
    let prefix = format!("embed {loop_name}: ");
    // Guard against a run that silently checked little.
    let count: usize = last
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", show(&output)));
    assert!(count > 1000, "only {count} checks ran:\n{}", show(&output));
    assert!(last.ends_with(", 0 failed"), "{}", show(&output));
    assert!(
        out.contains(&format!("{loop_name}: echo: 1000 connections, 5000 frames")),
        "{}",
        show(&output)
    );
}

#[test]
fn embedded_server_in_a_poll_loop() {
    passes(&embed_program("embed_poll"), &[], "poll");
}

#[test]
fn embedded_server_in_a_level_triggered_epoll_loop() {
    passes(&embed_program("embed_epoll"), &["lt"], "epoll-lt");
}

#[test]
fn embedded_server_in_an_edge_triggered_epoll_loop() {
    passes(&embed_program("embed_epoll"), &["et"], "epoll-et");
}

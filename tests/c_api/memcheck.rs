//! valgrind: the C test programs and the examples leak nothing and make
//! no memory errors; the control shows valgrind catches a leak.

use super::*;

/// The valgrind command, or None (said loudly) when it is not installed.
/// A distinct exit code (99) tells valgrind's findings from the program's
/// own failures (a client refused with a wrong key exits 1 on purpose).
pub(super) fn valgrind(log_dir: &Path, test: &str) -> Option<Vec<String>> {
    let found = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip::required(test, "valgrind is not installed (apt-get install valgrind)");
        return None;
    }
    Some(vec![
        "valgrind".into(),
        "--leak-check=full".into(),
        "--errors-for-leak-kinds=definite".into(),
        "--error-exitcode=99".into(),
        format!("--log-file={}/valgrind-%p.log", log_dir.display()),
    ])
}

/// The valgrind logs in `dir`, checked: no errors, no definite leaks.
/// Returns their summary lines, for the test output.
pub(super) fn check_valgrind_logs(dir: &Path) -> String {
    let mut summary = String::new();
    let mut logs = 0;
    for entry in std::fs::read_dir(dir).expect("log dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("valgrind-") {
            continue;
        }
        logs += 1;
        let log = std::fs::read_to_string(entry.path()).expect("read valgrind log");
        assert!(
            log.contains("ERROR SUMMARY: 0 errors"),
            "valgrind found errors ({name}):\n{log}"
        );
        assert!(
            !log.contains("definitely lost: ") || log.contains("definitely lost: 0 bytes"),
            "valgrind found a definite leak ({name}):\n{log}"
        );
        let command = log.lines().find(|l| l.contains("Command:")).unwrap_or("");
        summary.push_str(command);
        summary.push('\n');
        for line in log.lines().filter(|l| {
            l.contains("ERROR SUMMARY")
                || l.contains("definitely lost:")
                || l.contains("All heap blocks were freed")
        }) {
            summary.push_str(line);
            summary.push('\n');
        }
    }
    assert!(logs > 0, "no valgrind logs in {}", dir.display());
    summary
}

#[test]
fn valgrind_api_test_program() {
    let dir = TempDir::new("vg-api");
    let Some(vg) = valgrind(&dir.0, "valgrind_api_test_program") else {
        return;
    };
    let output = run(
        Command::new(&vg[0])
            .args(&vg[1..])
            .arg(&built().api_test)
            .arg(&dir.0),
        VALGRIND_LIMIT,
        "api_test under valgrind",
    );
    assert_success(&output, "api_test under valgrind");
    eprintln!("{}", check_valgrind_logs(&dir.0));
}

#[test]
fn valgrind_examples_exchange() {
    let dir = TempDir::new("vg-examples");
    let Some(vg) = valgrind(&dir.0, "valgrind_examples_exchange") else {
        return;
    };
    let server = EchoServer::start("tcp://127.0.0.1:0", &vg, VALGRIND_LIMIT);
    let out = client(
        "echo_client",
        &vg,
        Some(KEY),
        &[&server.addr, "hello", "again"],
    );
    assert_success(&out, "echo_client under valgrind");
    assert_eq!(stdout(&out), "hello\nagain\n");
    let out = client("echo_client", &vg, Some("wrong"), &[&server.addr, "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = client("raii_client", &vg, Some(KEY), &[&server.addr, "from C++"]);
    assert_success(&out, "raii_client under valgrind");
    let (status, stderr) = server.stop(libc::SIGTERM, Duration::from_secs(60));
    assert!(
        status.success(),
        "echo_server under valgrind exited with {status:?}:\n{stderr}"
    );
    eprintln!("{}", check_valgrind_logs(&dir.0));
}

/// The control: the same valgrind command fails on a program that leaks.
#[test]
fn valgrind_catches_a_deliberate_leak() {
    let dir = TempDir::new("vg-leak");
    let Some(vg) = valgrind(&dir.0, "valgrind_catches_a_deliberate_leak") else {
        return;
    };
    let output = run(
        Command::new(&vg[0])
            .args(&vg[1..])
            .arg(&built().leak_control),
        VALGRIND_LIMIT,
        "leak_control under valgrind",
    );
    assert_eq!(output.status.code(), Some(99), "{}", show(&output));
    let logs: String = std::fs::read_dir(&dir.0)
        .expect("log dir")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("definitely lost"), "{logs}");
    assert!(logs.contains("sockserv_config_new"), "{logs}");
}

#[test]
fn valgrind_datagram_test_program() {
    let dir = TempDir::new("vg-dgram");
    let Some(vg) = valgrind(&dir.0, "valgrind_datagram_test_program") else {
        return;
    };
    let output = run(
        Command::new(&vg[0])
            .args(&vg[1..])
            .arg(datagram_test())
            .arg(&dir.0),
        VALGRIND_LIMIT,
        "datagram_test under valgrind",
    );
    assert_success(&output, "datagram_test under valgrind");
    assert_datagram_summary(&output);
    eprintln!("{}", check_valgrind_logs(&dir.0));
}

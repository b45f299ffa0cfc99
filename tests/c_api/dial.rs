//! tests/c/dial_test.c: outgoing connections from C (issue 12): dialing
//! from an unbound engine, dial errors with their codes, closing and
//! freeing dialers.

use super::*;

fn dial_test() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
            std::fs::create_dir_all(&out).expect("create target/tmp/c-tests");
            compile(
                Lang::C,
                &lib_dir(),
                &root().join("tests/c/dial_test.c"),
                &out,
            )
        })
        .clone()
}

#[test]
fn c_dial_test_program_passes() {
    let output = run(&mut Command::new(dial_test()), RUN_LIMIT, "dial_test");
    assert_success(&output, "dial_test");
    check_summary(&output);
}

/// The same under valgrind: no memory errors, no definite leaks (dialers
/// freed inside their own report, connections freed while connecting).
#[test]
fn valgrind_dial_test_program() {
    let dir = TempDir::new("vg-dial");
    let Some(vg) = super::memcheck::valgrind(&dir.0, "valgrind_dial_test_program") else {
        return;
    };
    let output = run(
        Command::new(&vg[0])
            .args(&vg[1..])
            .arg(dial_test())
            // Its upper time bounds (connect_start in < 50 ms...) stretch.
            .env(
                "SOCKSERV_TIME_SCALE",
                (20 * common::time_scale()).to_string(),
            ),
        VALGRIND_LIMIT,
        "dial_test under valgrind",
    );
    assert_success(&output, "dial_test under valgrind");
    check_summary(&output);
    eprintln!("{}", super::memcheck::check_valgrind_logs(&dir.0));
}

fn check_summary(output: &Output) {
    let text = stdout(output);
    let last = text.lines().last().unwrap_or("");
    let count: usize = last
        .strip_prefix("dial_test: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", show(output)));
    assert!(count >= 50, "only {count} checks ran:\n{}", show(output));
    assert!(last.ends_with(", 0 failed"), "{last}");
}

//! tests/c/dial_test.c: outgoing connections from C (issue 12): dialing
//! from an unbound engine, dial errors with their codes, closing and
//! freeing dialers.

use super::*;

#[test]
fn c_dial_test_program_passes() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
    std::fs::create_dir_all(&out).expect("create target/tmp/c-tests");
    let exe = compile(
        Lang::C,
        &lib_dir(),
        &root().join("tests/c/dial_test.c"),
        &out,
    );
    let output = run(&mut Command::new(&exe), RUN_LIMIT, "dial_test");
    assert_success(&output, "dial_test");
    let text = stdout(&output);
    let last = text.lines().last().unwrap_or("");
    let count: usize = last
        .strip_prefix("dial_test: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", show(&output)));
    assert!(count >= 20, "only {count} checks ran:\n{}", show(&output));
    assert!(last.ends_with(", 0 failed"), "{last}");
}

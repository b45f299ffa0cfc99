//! Datagrams from C: tests/c/datagram_test.c, compiled on first use.

use super::*;

pub(crate) fn datagram_test() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
        std::fs::create_dir_all(&out).expect("create target/tmp/c-tests");
        compile(
            Lang::C,
            &built().lib_dir,
            &root().join("tests/c/datagram_test.c"),
            &out,
        )
    })
}

pub(crate) fn assert_datagram_summary(output: &Output) {
    let out = stdout(output);
    let last = out.lines().last().unwrap_or("");
    let count: usize = last
        .strip_prefix("datagram_test: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", show(output)));
    assert!(count > 200, "only {count} checks ran:\n{}", show(output));
    assert!(last.ends_with(", 0 failed"), "{last}");
}

#[test]
fn c_datagram_test_program_passes() {
    let dir = TempDir::new("dgram");
    let output = run(
        Command::new(datagram_test()).arg(&dir.0),
        RUN_LIMIT,
        "datagram_test",
    );
    assert_success(&output, "datagram_test");
    assert_datagram_summary(&output);
}

//! The one way a test skips a check. A skip is said loudly (straight to
//! fd 2: libtest swallows `eprintln!` of a passing test) and recorded, one
//! line per skip, in the file named by `SOCKSERV_SKIP_LOG` (default
//! `target/tmp/skipped.log`), which `.ci/run` reads.
//!
//! Two kinds:
//! - [`required`]: a tool or interpreter CI installs is missing. With
//!   `CI=true` that is a failure, not a skip; elsewhere a loud skip,
//!   recorded as `required`, so `.ci/run` fails on it too.
//! - [`optional`]: the check does not apply here (e.g. a legacy-only check
//!   when the interpreter is new), recorded as `optional`.

use std::io::Write;
use std::path::PathBuf;

/// Where skips are recorded.
pub fn log_path() -> PathBuf {
    match std::env::var_os("SOCKSERV_SKIP_LOG") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped.log"),
    }
}

/// Whether this run is CI's (`CI=true`, as CI services set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn record(kind: &str, test: &str, why: &str) {
    let line = format!("{kind}\t{test}\t{}\n", why.replace(['\n', '\t'], " "));
    let path = log_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write of one short line with O_APPEND: lines of parallel tests
    // do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!(
            "cannot record the skip of {test} in {}: {e}",
            path.display()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED ({kind}) {test}: {why} ***\n    (recorded in {})\n",
        path.display()
    );
}

/// Skips a check whose tool CI guarantees: fails under `CI=true`.
#[track_caller]
pub fn required(test: &str, why: &str) {
    if in_ci() {
        panic!(
            "{test}: {why}\n(CI=true: CI installs this, so its absence is a failure, not a skip)"
        );
    }
    record("required", test, why);
}

/// Skips a check that does not apply on this machine.
pub fn optional(test: &str, why: &str) {
    record("optional", test, why);
}

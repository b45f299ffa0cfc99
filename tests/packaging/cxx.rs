//! include/sockserv.hpp, the C++17 wrapper: tests/cxx/wrapper_test.cpp
//! built with every warning an error by g++, by clang++ when installed, and
//! with AddressSanitizer + UndefinedBehaviorSanitizer; the C++ example; and
//! the header's refusal of older standards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc::{assert_success, have, lib_dir, root, run, show, stdout, TempDir};

const LIMIT: Duration = Duration::from_secs(180);
const FLAGS: [&str; 5] = ["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

fn compile(compiler: &str, extra: &[&str], source: &Path, exe: &Path) {
    let lib = lib_dir();
    let output = run(
        Command::new(compiler)
            .args(FLAGS)
            .args(["-g", "-O1"])
            .args(extra)
            .arg("-I")
            .arg(root().join("include"))
            .arg(source)
            .arg("-o")
            .arg(exe)
            .arg("-L")
            .arg(&lib)
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .args(["-lsockserv", "-pthread"]),
        LIMIT,
        compiler,
    );
    assert_success(&output, &format!("{compiler} {}", source.display()));
}

/// Builds and runs the wrapper test; checks its summary line.
fn wrapper_test(compiler: &str, extra: &[&str], env: &[(&str, &str)]) {
    let dir = TempDir::new("cxx");
    let exe = dir.path().join("wrapper_test");
    compile(
        compiler,
        extra,
        &root().join("tests/cxx/wrapper_test.cpp"),
        &exe,
    );
    let output = run(
        Command::new(&exe).envs(env.iter().copied()),
        LIMIT,
        "wrapper_test",
    );
    assert_success(
        &output,
        &format!("wrapper_test built by {compiler} {extra:?}"),
    );
    let out = stdout(&output);
    let checks: usize = out
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("wrapper_test: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line\n{}", show(&output)));
    // Guards against a run that silently checked little.
    assert!(checks >= 60, "only {checks} checks ran\n{}", show(&output));
    assert!(out.trim_end().ends_with(", 0 failed"), "{}", show(&output));
}

#[test]
fn cxx_wrapper_with_gxx() {
    wrapper_test("g++", &[], &[]);
}

#[test]
fn cxx_wrapper_with_clangxx() {
    if !have("clang++") {
        return crate::skip::required(
            "cxx_wrapper_with_clangxx",
            "clang++ is not installed (optional: apt-get install clang)",
        );
    }
    wrapper_test("clang++", &[], &[]);
}

/// Use-after-free or a leak in the trampolines and RAII classes, or
/// undefined behaviour, fails the run.
#[test]
fn cxx_wrapper_under_asan_and_ubsan() {
    wrapper_test(
        "g++",
        &[
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ],
        &[("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")],
    );
}

#[test]
fn cxx_example_builds_with_its_makefile_and_runs() {
    let dir = TempDir::new("cxx-example");
    let exe: PathBuf = dir.path().join("cxx_echo");
    let make = run(
        Command::new("make")
            .arg("-C")
            .arg(root().join("c_examples"))
            .arg(format!("LIBDIR={}", lib_dir().display()))
            .arg(format!("BUILD={}", dir.path().display()))
            .arg(&exe),
        LIMIT,
        "make cxx_echo",
    );
    assert_success(&make, "make -C c_examples .../cxx_echo");
    let output = run(Command::new(&exe).args(["one", "two"]), LIMIT, "cxx_echo");
    assert_success(&output, "cxx_echo");
    let out = stdout(&output);
    for mode in ["threaded", "event   "] {
        for word in ["one", "two"] {
            let line = format!("{mode} tcp://127.0.0.1:");
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&line) && l.ends_with(&format!("echoed \"{word}\""))),
                "no {mode} echo of {word}\n{}",
                show(&output)
            );
        }
    }
    assert!(out.contains(" greeted \"welcome\"\n"), "{}", show(&output));
    assert!(
        out.contains("wrong key refused: code 11, ") && out.contains("the keys do not match"),
        "{}",
        show(&output)
    );
}

#[test]
fn cxx_header_refuses_older_standards() {
    let dir = TempDir::new("cxx14");
    let source = dir.path().join("old.cpp");
    std::fs::write(
        &source,
        "#include \"sockserv.hpp\"\nint main() { return 0; }\n",
    )
    .unwrap();
    let output = run(
        Command::new("g++")
            .args(["-std=c++14", "-fsyntax-only", "-I"])
            .arg(root().join("include"))
            .arg(&source),
        LIMIT,
        "g++ -std=c++14",
    );
    assert!(!output.status.success(), "{}", show(&output));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("sockserv.hpp needs C++17"), "{err}");
}

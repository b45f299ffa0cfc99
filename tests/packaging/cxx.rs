//! include/sockserv.hpp, the C++17 wrapper: tests/cxx/wrapper_test.cpp
//! built with every warning an error by g++, by clang++ when installed, and
//! with AddressSanitizer + UndefinedBehaviorSanitizer; proof that the
//! wrapper covers every function of sockserv.h and that the test reaches
//! each through it; the C++ example; and the header's refusal of older
//! standards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc::{assert_success, have, lib_dir, make_examples, root, run, show, stdout, TempDir};

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

/// Every function sockserv.h declares: the names before "(" on the
/// declaration lines (comments, macros and callback typedefs left out).
fn header_functions() -> Vec<String> {
    let header = std::fs::read_to_string(root().join("include/sockserv.h")).unwrap();
    let mut names: Vec<String> = header
        .lines()
        .filter(|l| {
            let first = l.chars().next().unwrap_or(' ');
            !(first.is_whitespace() || "/*#}".contains(first) || l.starts_with("typedef"))
        })
        .filter_map(|l| {
            // "enum sockserv_result sockserv_x(", "void *sockserv_x(": the
            // name is the identifier just before "(".
            let open = l.find('(')?;
            let start = l[..open].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            let name = &l[start + 1..open];
            name.starts_with("sockserv_").then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn mentions_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let before = text[..i].chars().next_back().is_none_or(|c| !ident(c));
        let after = text[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !ident(c));
        before && after
    })
}

/// The wrapper names every C function, and the wrapper test binary links
/// every one (an inline function of a header-only wrapper is only emitted,
/// so only references its C function, when the test uses it); the test
/// itself calls none directly but sockserv_strerror, so each is reached
/// through the wrapper.
fn check_every_function_reached(exe: &Path) {
    let functions = header_functions();
    // The issue counts 83; more may come, fewer means the parse broke.
    assert!(
        functions.len() >= 83,
        "only {} functions parsed: {functions:?}",
        functions.len()
    );
    let hpp = std::fs::read_to_string(root().join("include/sockserv.hpp")).unwrap();
    let unwrapped: Vec<&String> = functions
        .iter()
        .filter(|f| !mentions_word(&hpp, f))
        .collect();
    assert!(
        unwrapped.is_empty(),
        "sockserv.hpp does not wrap {unwrapped:?}"
    );

    let test = std::fs::read_to_string(root().join("tests/cxx/wrapper_test.cpp")).unwrap();
    let direct: Vec<&String> = functions
        .iter()
        .filter(|f| *f != "sockserv_strerror" && test.contains(&format!("{f}(")))
        .collect();
    assert!(
        direct.is_empty(),
        "wrapper_test.cpp calls {direct:?} directly, not through the wrapper"
    );

    if !have("nm") {
        return crate::skip::required(
            "check_every_function_reached",
            "nm is not installed (apt-get install binutils)",
        );
    }
    let output = run(
        Command::new("nm").args(["-D", "--undefined-only"]).arg(exe),
        LIMIT,
        "nm -D",
    );
    assert_success(&output, "nm -D wrapper_test");
    let symbols: std::collections::HashSet<String> = stdout(&output)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap_or(s).to_string())
        .collect();
    let unreached: Vec<&String> = functions.iter().filter(|f| !symbols.contains(*f)).collect();
    assert!(
        unreached.is_empty(),
        "wrapper_test never reaches {unreached:?}"
    );
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
        Command::new(&exe)
            .envs(env.iter().copied())
            // The TLS part makes its certificates with this script (openssl).
            .env(
                "SOCKSERV_MAKE_CERTS",
                root().join("c_examples/make-certs.sh"),
            ),
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
    assert!(checks >= 150, "only {checks} checks ran\n{}", show(&output));
    assert!(out.trim_end().ends_with(", 0 failed"), "{}", show(&output));
    // A part the machine cannot run (no IPv6) is said out loud.
    for line in out.lines().filter(|l| l.contains("SKIPPED")) {
        crate::skip::optional(&format!("wrapper_test built by {compiler}"), line);
    }
    check_every_function_reached(&exe);
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
        make_examples(&lib_dir(), dir.path()).arg(&exe),
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
    for word in ["one", "two"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("datagram udp://127.0.0.1:")
                    && l.ends_with(&format!("echoed \"{word}\""))),
            "no datagram echo of {word}\n{}",
            show(&output)
        );
    }
    assert!(
        out.contains("datagram client sent 2, received 2\n"),
        "{}",
        show(&output)
    );
    assert!(out.contains(" greeted \"welcome\"\n"), "{}", show(&output));
    assert!(
        out.contains("wrong key refused: code 11, ") && out.contains("the keys do not match"),
        "{}",
        show(&output)
    );
}

/// Projects that include the wrapper build with stricter warnings and
/// newer standards than ours: it must stay silent there too.
#[test]
fn cxx_header_is_quiet_under_strict_warnings_and_newer_standards() {
    // The wrapper test instantiates every template of the wrapper.
    let sources = [
        root().join("tests/cxx/wrapper_test.cpp"),
        root().join("c_examples/cxx_echo.cpp"),
    ];
    let strict = [
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        "-Wshadow",
        "-Wconversion",
        "-Wsign-conversion",
        "-Wold-style-cast",
        "-Wnon-virtual-dtor",
    ];
    let mut compilers = vec!["g++"];
    if have("clang++") {
        compilers.push("clang++");
    }
    for compiler in compilers {
        for std in ["-std=c++17", "-std=c++20"] {
            let output = run(
                Command::new(compiler)
                    .arg(std)
                    .args(strict)
                    .args(["-fsyntax-only", "-I"])
                    .arg(root().join("include"))
                    .args(&sources),
                LIMIT,
                compiler,
            );
            assert_success(&output, &format!("{compiler} {std} with strict warnings"));
        }
    }
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

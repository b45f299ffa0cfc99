//! Sanitizers: the C test program, the datagram, concurrency, handles and dial programs and the examples
//! built with AddressSanitizer + UndefinedBehaviorSanitizer, and the
//! concurrency program with ThreadSanitizer, run against the library this
//! test built (whose Rust code is not instrumented: .ci/sanitizers runs the
//! Rust side under ASan and TSan). SOCKSERV_SANITIZER_LIB_DIR links them
//! against another libsockserv.so instead (.ci/sanitizers passes its
//! ASan-built one, with SOCKSERV_SANITIZER_LIB_INSTRUMENTED=address). A
//! missing runtime is a required skip (a failure under CI=true).

use super::*;

const ASAN_FLAGS: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
];
const TSAN_FLAGS: &[&str] = &["-fsanitize=thread", "-fno-omit-frame-pointer"];
/// The exit code of a sanitizer's finding, told from a program's own.
const SANITIZER_EXIT: i32 = 97;

/// `env` with the sanitizers' options, as a wrapper for the programs.
fn sanitizer_env() -> Vec<String> {
    vec![
        "env".into(),
        // fast_unwind_on_malloc=0: full stacks through the library's
        // frames too (it is built without frame pointers).
        format!(
            "ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:fast_unwind_on_malloc=0:exitcode={SANITIZER_EXIT}"
        ),
        format!("UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode={SANITIZER_EXIT}"),
        format!(
            "TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:exitcode={SANITIZER_EXIT}{}",
            tsan_library_option()
        ),
    ]
}

/// The library's own synchronisation (Rust's futex-based locks) is
/// invisible to TSan unless the library is instrumented too, so its
/// system calls on a descriptor handed between its threads look racy:
/// with the plain library, only the C program's accesses are checked. The
/// library's inside runs under TSan in .ci/sanitizers, with the Rust tests.
fn tsan_library_option() -> &'static str {
    ":ignore_noninstrumented_modules=1"
}

/// Why a sanitizer build is not there: its runtime is missing (`required`:
/// CI installs it, so under CI=true that fails the test), or
/// SOCKSERV_SANITIZER_LIB_INSTRUMENTED names the other sanitizer (a
/// deliberate choice of .ci/sanitizers, not a missing tool).
struct Unavailable {
    required: bool,
    why: String,
}

/// The sanitizer builds, made once.
struct Sanitized {
    /// api_test-asan, concurrency-asan, datagram_test-asan,
    /// sanitizer_control-asan, and the examples in examples-asan/.
    asan: Result<PathBuf, Unavailable>,
    /// concurrency-tsan, sanitizer_control-tsan.
    tsan: Result<PathBuf, Unavailable>,
}

/// The directory of a sanitizer's builds, or None after the skip (which
/// fails the test under CI=true when the runtime is missing).
fn builds(which: &'static Result<PathBuf, Unavailable>, test: &str) -> Option<&'static Path> {
    match which {
        Ok(dir) => Some(dir),
        Err(Unavailable {
            required: true,
            why,
        }) => {
            skip::required(test, why);
            None
        }
        Err(Unavailable { why, .. }) => {
            skip::optional(test, why);
            None
        }
    }
}

fn sanitized() -> &'static Sanitized {
    static SANITIZED: OnceLock<Sanitized> = OnceLock::new();
    SANITIZED.get_or_init(|| {
        let lib_dir = match std::env::var_os("SOCKSERV_SANITIZER_LIB_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => built().lib_dir.clone(),
        };
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-sanitized");
        std::fs::create_dir_all(&out).expect("create target/tmp/c-sanitized");
        let source = |name: &str| root().join("tests/c").join(name);
        // A library instrumented for ASan (SOCKSERV_SANITIZER_LIB_INSTRUMENTED
        // =address) links only with programs built for ASan.
        let instrumented = std::env::var("SOCKSERV_SANITIZER_LIB_INSTRUMENTED").unwrap_or_default();
        let available = |name: &str, flags: &[&str], other: &str, package: &str| {
            if instrumented == other {
                return Err(Unavailable {
                    required: false,
                    why: format!(
                        "no {name} build: SOCKSERV_SANITIZER_LIB_INSTRUMENTED={other} \
                         (the library is built for the other sanitizer)"
                    ),
                });
            }
            sanitizer_works(&out, flags).map_err(|e| Unavailable {
                required: true,
                why: format!(
                    "no {name} build: the C compiler cannot build and run a program \
                     with it (apt-get install {package}): {e}"
                ),
            })
        };
        let asan = available("ASan", ASAN_FLAGS, "thread", "gcc (libasan8, libubsan1)").map(|()| {
            for name in [
                "api_test.c",
                "concurrency.c",
                "datagram_test.c",
                "dial_test.c",
                "handles.c",
                "sanitizer_control.c",
            ] {
                compile_with(Lang::C, &lib_dir, &source(name), &out, ASAN_FLAGS, "-asan");
            }
            let flags = format!("-O1 -g {}", ASAN_FLAGS.join(" "));
            let make = run(
                make_examples(&lib_dir, &out.join("examples-asan"))
                    .arg("all")
                    .arg(format!("CFLAGS={flags}"))
                    .arg(format!("CXXFLAGS={flags}")),
                RUN_LIMIT,
                "make -C c_examples all (ASan)",
            );
            assert_success(&make, "building c_examples with ASan + UBSan");
            out.clone()
        });
        let tsan = available("TSan", TSAN_FLAGS, "address", "gcc (libtsan2)").map(|()| {
            for name in ["concurrency.c", "dial_test.c", "sanitizer_control.c"] {
                compile_with(Lang::C, &lib_dir, &source(name), &out, TSAN_FLAGS, "-tsan");
            }
            out.clone()
        });
        Sanitized { asan, tsan }
    })
}

/// Whether the C compiler builds and runs a program with `flags` (the
/// sanitizer's runtime library is installed); if not, what went wrong.
fn sanitizer_works(out: &Path, flags: &[&str]) -> Result<(), String> {
    let probe = out.join("probe.c");
    std::fs::write(&probe, "int main(void) { return 0; }\n").expect("write probe.c");
    let exe = out.join(format!("probe{}", flags[0].replace(['=', ','], "-")));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let quiet = |cmd: &mut Command, what: &str| match cmd.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{what}: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("{what}: {e}")),
    };
    quiet(
        Command::new(&cc)
            .args(flags)
            .arg(&probe)
            .arg("-o")
            .arg(&exe),
        "the probe's compile",
    )?;
    quiet(&mut Command::new(&exe), "the probe's run")
}

/// Runs a sanitized program with the sanitizers' options, and checks that
/// it succeeded and no sanitizer spoke.
fn run_sanitized(exe: &Path, args: &[&str], what: &str) -> Output {
    let env = sanitizer_env();
    let output = run(
        Command::new(&env[0]).args(&env[1..]).arg(exe).args(args),
        RUN_LIMIT,
        what,
    );
    assert_success(&output, what);
    assert_no_sanitizer_report(&output, what);
    output
}

fn assert_no_sanitizer_report(output: &Output, what: &str) {
    let err = stderr(output);
    for finding in [
        "ERROR: AddressSanitizer",
        "ERROR: LeakSanitizer",
        "runtime error:",
        "WARNING: ThreadSanitizer",
    ] {
        assert!(
            !err.contains(finding),
            "{what}: {finding}\n{}",
            show(output)
        );
    }
}

#[test]
fn asan_ubsan_api_test_program() {
    let Some(dir) = builds(&sanitized().asan, "asan_ubsan_api_test_program") else {
        return;
    };
    let tmp = TempDir::new("asan-api");
    let tmp_arg = tmp.0.to_string_lossy().into_owned();
    let output = run_sanitized(
        &dir.join("api_test-asan"),
        &[&tmp_arg],
        "api_test (ASan + UBSan)",
    );
    let out = stdout(&output);
    assert!(
        out.lines().last().unwrap_or("").ends_with(", 0 failed"),
        "{out}"
    );
}

/// tests/c/dial_test.c (dialers freed inside their reports, connections
/// freed while connecting) under ASan + UBSan, and under TSan (its
/// callbacks run on the I/O threads beside the main thread's checks).
#[test]
fn asan_ubsan_and_tsan_dial_test_program() {
    for (build, suffix, what) in [
        (&sanitized().asan, "asan", "dial_test (ASan + UBSan)"),
        (&sanitized().tsan, "tsan", "dial_test (TSan)"),
    ] {
        let Some(dir) = builds(build, "asan_ubsan_and_tsan_dial_test_program") else {
            continue;
        };
        let exe = dir.join(format!("dial_test-{suffix}"));
        let output = run_sanitized(&exe, &[], what);
        assert!(stdout(&output).contains(", 0 failed"), "{}", show(&output));
    }
}

#[test]
fn asan_ubsan_concurrency_program() {
    let Some(dir) = builds(&sanitized().asan, "asan_ubsan_concurrency_program") else {
        return;
    };
    let output = run_sanitized(
        &dir.join("concurrency-asan"),
        &[],
        "concurrency (ASan + UBSan)",
    );
    assert!(stdout(&output).contains(", 0 failed"), "{}", show(&output));
}

/// tests/c/handles.c under ASan + UBSan: 8 threads calling through
/// retained handles of connections that close at random, and sends after
/// on_close (the old use-after-free), with 0 reports.
#[test]
fn asan_ubsan_handles_program() {
    let Some(dir) = builds(&sanitized().asan, "asan_ubsan_handles_program") else {
        return;
    };
    let output = run_sanitized(&dir.join("handles-asan"), &[], "handles (ASan + UBSan)");
    assert!(
        stdout(&output)
            .lines()
            .last()
            .unwrap_or("")
            .ends_with(", 0 failed"),
        "{}",
        show(&output)
    );
}

/// tests/c/datagram_test.c (sealed and plain datagrams, the server, every
/// NULL and bad argument) under ASan + UBSan.
#[test]
fn asan_ubsan_datagram_test_program() {
    let Some(dir) = builds(&sanitized().asan, "asan_ubsan_datagram_test_program") else {
        return;
    };
    let tmp = TempDir::new("asan-dgram");
    let tmp_arg = tmp.0.to_string_lossy().into_owned();
    let output = run_sanitized(
        &dir.join("datagram_test-asan"),
        &[&tmp_arg],
        "datagram_test (ASan + UBSan)",
    );
    assert_datagram_summary(&output);
}

#[test]
fn tsan_concurrency_program() {
    let Some(dir) = builds(&sanitized().tsan, "tsan_concurrency_program") else {
        return;
    };
    let output = run_sanitized(&dir.join("concurrency-tsan"), &[], "concurrency (TSan)");
    assert!(stdout(&output).contains(", 0 failed"), "{}", show(&output));
    eprintln!("{}", stdout(&output));
}

#[test]
fn asan_ubsan_examples_exchange() {
    let Some(dir) = builds(&sanitized().asan, "asan_ubsan_examples_exchange") else {
        return;
    };
    let examples = dir.join("examples-asan");
    let env = sanitizer_env();
    let server = EchoServer::start_in(&examples, "tcp://127.0.0.1:0", &env, RUN_LIMIT);
    let out = client_in(
        &examples,
        "echo_client",
        &env,
        Some(KEY),
        &[&server.addr, "hello", "again"],
    );
    assert_success(&out, "echo_client (ASan)");
    assert_no_sanitizer_report(&out, "echo_client (ASan)");
    assert_eq!(stdout(&out), "hello\nagain\n");
    // A wrong key: the client's own failure (1), not a sanitizer's (97).
    let out = client_in(
        &examples,
        "echo_client",
        &env,
        Some("wrong"),
        &[&server.addr, "x"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_no_sanitizer_report(&out, "echo_client with a wrong key (ASan)");
    if examples.join("raii_client").exists() {
        let out = client_in(
            &examples,
            "raii_client",
            &env,
            Some(KEY),
            &[&server.addr, "from C++"],
        );
        assert_success(&out, "raii_client (ASan)");
        assert_no_sanitizer_report(&out, "raii_client (ASan)");
    }
    let (status, stderr) = server.stop(libc::SIGTERM, Duration::from_secs(30));
    assert!(
        status.success(),
        "echo_server (ASan) exited with {status:?}:\n{stderr}"
    );
    for finding in [
        "ERROR: AddressSanitizer",
        "ERROR: LeakSanitizer",
        "runtime error:",
    ] {
        assert!(
            !stderr.contains(finding),
            "echo_server (ASan): {finding}\n{stderr}"
        );
    }
}

/// The controls: each sanitized build catches a deliberate bug of its kind
/// (the leak is an object of the library's own, made through its API).
#[test]
fn sanitizers_catch_deliberate_bugs() {
    let env = sanitizer_env();
    let mut cases = Vec::new();
    if let Some(dir) = builds(&sanitized().asan, "sanitizers_catch_deliberate_bugs (ASan)") {
        let exe = dir.join("sanitizer_control-asan");
        cases.push((exe.clone(), "leak", "LeakSanitizer", "sockserv_config_new"));
        cases.push((exe.clone(), "heap", "heap-buffer-overflow", "main"));
        cases.push((exe, "ub", "signed integer overflow", "runtime error"));
    }
    if let Some(dir) = builds(&sanitized().tsan, "sanitizers_catch_deliberate_bugs (TSan)") {
        cases.push((
            dir.join("sanitizer_control-tsan"),
            "race",
            "data race",
            "bump",
        ));
    }
    for (exe, bug, finding, where_) in cases {
        let output = run(
            Command::new(&env[0]).args(&env[1..]).arg(&exe).arg(bug),
            RUN_LIMIT,
            bug,
        );
        assert_eq!(
            output.status.code(),
            Some(SANITIZER_EXIT),
            "{bug}\n{}",
            show(&output)
        );
        let err = stderr(&output);
        assert!(
            err.contains(finding) && err.contains(where_),
            "{bug}\n{err}"
        );
    }
}

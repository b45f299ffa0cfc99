//! The C side: C programs compiled against the committed header and the
//! library this `cargo test` just built, run as real processes.
//!
//! - `tests/c/api_test.c` checks the whole C API from C (also under valgrind);
//!   `tests/c/header_cxx.cpp` compiles the header as C++11.
//! - The examples in `c_examples/` (built with their own Makefile) talk to
//!   each other: the right key, a wrong key, SIGTERM and SIGINT.
//! - The shared library exports exactly the functions the header declares.
//! - The same programs, and `tests/c/concurrency.c` (threads sharing
//!   connections, shutdown racing with connects), built with ASan + UBSan
//!   and TSan; controls show each sanitizer catches a deliberate bug.
//!
//! Where the library comes from: `cargo test` builds the lib target with all
//! its crate types in one rustc run, so `libsockserv.so` sits beside the
//! rlib this test links, in `target/<profile>/deps/` (it is not copied up to
//! `target/<profile>/` by `cargo test`, only by `cargo build`). Programs are
//! compiled into `target/tmp/c-tests/`, never into the source tree.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// The tree, the library under test and temporary directories, shared with
// tests/packaging (c_api runs its own processes: see `run`).
#[path = "packaging/proc.rs"]
#[allow(dead_code)]
mod proc;
use proc::{lib_dir, root, TempDir};

const KEY: &str = "c-api-test-key";
/// How long a program may run natively, and under valgrind.
const RUN_LIMIT: Duration = Duration::from_secs(120);
const VALGRIND_LIMIT: Duration = Duration::from_secs(300);
/// How long to wait for a child's output pipes to close after it exited.
const PIPE_LIMIT: Duration = Duration::from_secs(5);

/// Everything compiled once per test run (tests share it).
struct Built {
    lib_dir: PathBuf,
    api_test: PathBuf,
    header_cxx: PathBuf,
    leak_control: PathBuf,
    examples: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let lib_dir = lib_dir();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
        std::fs::create_dir_all(&out).expect("create target/tmp/c-tests");
        let c = |name: &str| compile(Lang::C, &lib_dir, &root().join("tests/c").join(name), &out);
        let api_test = c("api_test.c");
        let leak_control = c("leak_control.c");
        let header_cxx = compile(
            Lang::Cxx11,
            &lib_dir,
            &root().join("tests/c/header_cxx.cpp"),
            &out,
        );
        // The examples are built by their own Makefile, against this library.
        let examples = out.join("examples");
        let make = run(
            make_examples(&lib_dir, &examples).arg("all"),
            RUN_LIMIT,
            "make -C c_examples all",
        );
        assert_success(&make, "building c_examples with make");
        Built {
            lib_dir,
            api_test,
            header_cxx,
            leak_control,
            examples,
        }
    })
}

#[derive(Clone, Copy)]
enum Lang {
    C,
    Cxx11,
}

/// Compiles one source file into `out`, with every warning an error.
fn compile(lang: Lang, lib_dir: &Path, source: &Path, out: &Path) -> PathBuf {
    compile_with(lang, lib_dir, source, out, &[], "")
}

/// The same with `extra` flags (sanitizers), into a file named with `suffix`.
fn compile_with(
    lang: Lang,
    lib_dir: &Path,
    source: &Path,
    out: &Path,
    extra: &[&str],
    suffix: &str,
) -> PathBuf {
    let stem = source.file_stem().expect("file name").to_string_lossy();
    let exe = out.join(format!("{stem}{suffix}"));
    let (compiler, flags): (String, &[&str]) = match lang {
        Lang::C => (
            std::env::var("CC").unwrap_or_else(|_| "cc".into()),
            &["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"],
        ),
        Lang::Cxx11 => (
            std::env::var("CXX").unwrap_or_else(|_| "c++".into()),
            &["-std=c++11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"],
        ),
    };
    let mut cmd = Command::new(&compiler);
    cmd.args(flags)
        .args(["-g", "-O0", "-I"])
        .arg(root().join("include"))
        .arg(source)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib_dir)
        // The rpath lets the program find this very library when run.
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-lsockserv", "-pthread"])
        .args(extra);
    let output = run(&mut cmd, RUN_LIMIT, &compiler);
    assert_success(&output, &format!("compiling {}", source.display()));
    exe
}

fn make_examples(lib_dir: &Path, build: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(root().join("c_examples"))
        .arg(format!("LIBDIR={}", lib_dir.display()))
        .arg(format!("BUILD={}", build.display()));
    cmd
}

// ---------------------------------------------------------------------------
// Processes: every child is killed and reaped when its guard drops, also when
// a test fails half-way; every wait is bounded.

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Waits at most `limit` for the child to exit.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes no pointers; the pid is our child's, not yet
        // reaped (we hold its Child), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }
}

/// A pipe read to the end on a thread, so a chatty child never blocks.
struct Drain {
    bytes: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

fn drain(mut pipe: impl Read + Send + 'static) -> Drain {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let sink = bytes.clone();
    let thread = thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    Drain { bytes, thread }
}

impl Drain {
    /// What was read, once the pipe closed or `limit` passed: a grandchild
    /// that still holds the pipe open must not hang the test.
    fn collect(self, limit: Duration) -> String {
        let end = Instant::now() + limit;
        while !self.thread.is_finished() && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        let bytes = self.bytes.lock().unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Runs a command to completion within `limit`, capturing its output.
fn run(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = without_cargo_library_path(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut guard = ChildGuard(child);
    let stdout = drain(guard.0.stdout.take().expect("stdout"));
    let stderr = drain(guard.0.stderr.take().expect("stderr"));
    let status = guard.wait_for(limit);
    drop(guard); // kills it if it is still running, so the pipes close
    let output = Output {
        status: status.unwrap_or_default(),
        stdout: stdout.collect(PIPE_LIMIT).into_bytes(),
        stderr: stderr.collect(PIPE_LIMIT).into_bytes(),
    };
    assert!(
        status.is_some(),
        "{what} did not finish within {limit:?}\n{}",
        show(&output)
    );
    output
}

/// `cargo test` puts target/<profile>/ first in LD_LIBRARY_PATH, where an
/// older `cargo build` may have left an older libsockserv.so; the programs'
/// RUNPATH names the library under test, so let it decide.
fn without_cargo_library_path(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("LD_LIBRARY_PATH")
}

fn show(output: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_success(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed\n{}", show(output));
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// The example server as a child process.

struct EchoServer {
    child: ChildGuard,
    addr: String,
    stderr: Option<Drain>,
}

impl EchoServer {
    /// Starts `echo_server ADDR` (under `wrapper`, e.g. valgrind, if given)
    /// with the key in SOCKSERV_KEY, and reads the address it prints.
    fn start(addr: &str, wrapper: &[String], limit: Duration) -> EchoServer {
        EchoServer::start_in(&built().examples, addr, wrapper, limit)
    }

    /// The same with the echo_server built in `dir` (a sanitizer build).
    fn start_in(dir: &Path, addr: &str, wrapper: &[String], limit: Duration) -> EchoServer {
        let exe = dir.join("echo_server");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&exe);
                cmd
            }
            None => Command::new(&exe),
        };
        cmd.arg(addr).env("SOCKSERV_KEY", KEY);
        EchoServer::spawn(cmd, limit)
    }

    /// Runs a prepared echo_server command and reads the address it prints.
    fn spawn(mut cmd: Command, limit: Duration) -> EchoServer {
        let child = without_cargo_library_path(&mut cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start echo_server");
        let mut child = ChildGuard(child);
        let lines = read_lines(child.0.stdout.take().expect("stdout"));
        let stderr = drain(child.0.stderr.take().expect("stderr"));
        let Ok(first) = lines.recv_timeout(limit) else {
            drop(child); // kill it, so its stderr pipe closes
            panic!(
                "echo_server printed no address within {limit:?}; stderr:\n{}",
                stderr.collect(PIPE_LIMIT)
            )
        };
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        EchoServer {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Sends `signal` and waits for a clean exit; returns the server's stderr.
    fn stop(mut self, signal: libc::c_int, limit: Duration) -> (ExitStatus, String) {
        self.child.signal(signal);
        let status = self.child.wait_for(limit);
        let stderr = self.stderr.take().expect("stderr").collect(PIPE_LIMIT);
        let status = status
            .unwrap_or_else(|| panic!("echo_server did not stop within {limit:?}:\n{stderr}"));
        (status, stderr)
    }
}

/// Reads lines on a thread and hands them over a channel, so the reader can
/// wait for one with a timeout.
fn read_lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs an example client (`echo_client` or `raii_client`).
fn client(name: &str, wrapper: &[String], key_env: Option<&str>, args: &[&str]) -> Output {
    client_in(&built().examples, name, wrapper, key_env, args)
}

/// The same with the clients built in `dir` (a sanitizer build).
fn client_in(
    dir: &Path,
    name: &str,
    wrapper: &[String],
    key_env: Option<&str>,
    args: &[&str],
) -> Output {
    let exe = dir.join(name);
    assert!(exe.exists(), "{} was not built", exe.display());
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(&exe);
            cmd
        }
        None => Command::new(&exe),
    };
    cmd.args(args).env_remove("SOCKSERV_KEY");
    if let Some(key) = key_env {
        cmd.env("SOCKSERV_KEY", key);
    }
    run(&mut cmd, VALGRIND_LIMIT, name)
}

// ---------------------------------------------------------------------------
// valgrind

/// The valgrind command, or None (said loudly) when it is not installed.
/// A distinct exit code (99) tells valgrind's findings from the program's
/// own failures (a client refused with a wrong key exits 1 on purpose).
fn valgrind(log_dir: &Path, test: &str) -> Option<Vec<String>> {
    let found = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        // Straight to fd 2, not eprintln!: libtest captures that, and a
        // skipped check must be seen even when the test passes.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {test}: valgrind is not installed \
             (apt-get install valgrind); CI must install it ***\n"
        );
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
fn check_valgrind_logs(dir: &Path) -> String {
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

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn c_api_test_program_passes() {
    let dir = TempDir::new("api");
    let output = run(
        Command::new(&built().api_test).arg(&dir.0),
        RUN_LIMIT,
        "api_test",
    );
    assert_success(&output, "api_test");
    let out = stdout(&output);
    let last = out.lines().last().unwrap_or("");
    // Guard against a run that silently checked little.
    let count: usize = last
        .strip_prefix("api_test: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", show(&output)));
    assert!(count > 800, "only {count} checks ran:\n{}", show(&output));
    assert!(last.ends_with(", 0 failed"), "{last}");
}

#[test]
fn header_compiles_and_links_as_cxx11() {
    let output = run(
        &mut Command::new(&built().header_cxx),
        RUN_LIMIT,
        "header_cxx",
    );
    assert_success(&output, "header_cxx");
    assert!(stdout(&output).starts_with("header_cxx: ok"));
}

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
fn library_exports_exactly_the_header_functions() {
    let lib = built().lib_dir.join("libsockserv.so");
    let output = run(
        Command::new("nm").args(["-D", "--defined-only"]).arg(&lib),
        RUN_LIMIT,
        "nm (binutils)",
    );
    assert_success(&output, "nm -D");
    // Lines are "ADDRESS TYPE NAME"; --defined-only leaves out the symbols
    // the library imports (glibc's, versioned like memcpy@GLIBC_2.14).
    let mut exported: Vec<String> = stdout(&output)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect();
    exported.sort();
    exported.dedup();
    let strays: Vec<&String> = exported
        .iter()
        .filter(|n| !n.starts_with("sockserv_"))
        .collect();
    assert!(strays.is_empty(), "exported without the prefix: {strays:?}");

    let mut declared = header_functions();
    declared.sort();
    assert_eq!(exported, declared, "exports and header declarations differ");
}

/// api_test.c calls every function of the header (with NULLs, at least), so
/// a function added to the API without a C test shows up here.
#[test]
fn c_tests_call_every_header_function() {
    // The C test programs together: api_test.c, and datagram_test.c for
    // the datagram functions.
    let sources: String = ["api_test.c", "datagram_test.c"]
        .iter()
        .map(|name| std::fs::read_to_string(root().join("tests/c").join(name)).expect(name))
        .collect();
    let missing: Vec<String> = header_functions()
        .into_iter()
        .filter(|name| !sources.contains(&format!("{name}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "no C test program calls {missing:?}: add their NULL and error checks"
    );
}

/// Names of the functions declared in include/sockserv.h.
fn header_functions() -> Vec<String> {
    let header = std::fs::read_to_string(root().join("include/sockserv.h")).expect("header");
    let mut names = Vec::new();
    for line in header.lines() {
        let code = line.trim_start();
        if code.starts_with("/*") || code.starts_with('*') || code.starts_with("//") {
            continue;
        }
        if code.starts_with("typedef") || code.starts_with('#') {
            continue;
        }
        // The identifier just before the first "(".
        if let Some(paren) = code.find('(') {
            let name = code[..paren]
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("");
            if name.starts_with("sockserv_") {
                names.push(name.to_string());
            }
        }
    }
    assert!(names.len() > 40, "found only {names:?} in the header");
    names
}

/// The complete C program in the README compiles with -Werror against the
/// header and does what the README says.
#[test]
fn readme_c_program_compiles_and_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let program = readme
        .split("```c\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```c block in README.md");
    assert!(
        program.contains("int main("),
        "the first C block is the complete program"
    );
    let dir = TempDir::new("readme");
    let source = dir.0.join("readme_program.c");
    std::fs::write(&source, program).expect("write the README program");
    let exe = compile(Lang::C, &built().lib_dir, &source, &dir.0);
    let output = run(&mut Command::new(exe), RUN_LIMIT, "readme_program");
    assert_success(&output, "the README's C program");
    assert!(
        stdout(&output).contains("echoed hello"),
        "{}",
        show(&output)
    );
}

// ---------------------------------------------------------------------------
// Sockets you already have, several processes on one port, and a real
// load balancer in front: echo_server as the child process each time.

/// A command that starts echo_server with `listener` as descriptor `target`
/// in the child (and nowhere else once the parent drops it), after `env`.
fn echo_server_inheriting(
    listener: &std::net::TcpListener,
    target: i32,
    env: &str,
    args: &[&str],
) -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    // sh sets LISTEN_PID to its own pid, which exec keeps for echo_server.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{env} exec \"$0\" \"$@\""))
        .arg(built().examples.join("echo_server"))
        .args(args)
        .env("SOCKSERV_KEY", KEY);
    // SAFETY: between fork and exec the closure only calls dup2(2) and
    // fcntl(2), which are async-signal-safe, on descriptors this process
    // owns.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it instead.
            let rc = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn keyed() -> sockserv::Config {
    let mut config = sockserv::Config::default();
    config.set_key(KEY.as_bytes()).unwrap();
    config
}

fn roundtrip(conn: &sockserv::Connection, payload: &[u8]) {
    conn.send(payload).unwrap();
    assert_eq!(conn.recv_with(|f| f.to_vec()).unwrap(), payload);
}

#[test]
fn systemd_socket_activation_and_inetd_style_fds() {
    for (target, env, addr) in [
        (
            3,
            "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=echo;",
            "systemd://echo",
        ),
        (3, "export LISTEN_PID=$$ LISTEN_FDS=1;", "systemd://"),
        (7, "", "fd://7"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let expected = format!("tcp://{}", listener.local_addr().unwrap());
        let server = EchoServer::spawn(
            echo_server_inheriting(&listener, target, env, &[addr]),
            RUN_LIMIT,
        );
        drop(listener); // the child holds the only copy now
        assert_eq!(server.addr, expected, "{addr}");
        let conn = sockserv::connect(&server.addr, &keyed()).unwrap();
        roundtrip(&conn, addr.as_bytes());
        let (status, stderr) = server.stop(libc::SIGTERM, RUN_LIMIT);
        assert!(status.success(), "{addr}: {stderr}");
    }
    // Meant for another process (LISTEN_PID is not the server's): refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = echo_server_inheriting(
        &listener,
        3,
        "export LISTEN_PID=1 LISTEN_FDS=1;",
        &["systemd://"],
    );
    let output = run(
        &mut cmd,
        RUN_LIMIT,
        "echo_server systemd:// for another pid",
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("LISTEN_PID"), "{}", show(&output));
}

/// Sockets a process holds open, from /proc.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn reuse_port_spreads_connections_over_processes() {
    let exe = built().examples.join("echo_server");
    let spawn = |addr: &str| {
        let mut cmd = Command::new(&exe);
        cmd.args(["-r", addr]).env("SOCKSERV_KEY", KEY);
        EchoServer::spawn(cmd, RUN_LIMIT)
    };
    let first = spawn("tcp://127.0.0.1:0");
    let mut servers = vec![spawn(&first.addr), spawn(&first.addr)];
    servers.insert(0, first);
    let addr = servers[0].addr.clone();
    let before: Vec<usize> = servers
        .iter()
        .map(|s| open_sockets(s.child.0.id()))
        .collect();
    let conns: Vec<_> = (0..60)
        .map(|i| {
            let c = sockserv::connect(&addr, &keyed()).unwrap();
            roundtrip(&c, format!("client {i}").as_bytes());
            c
        })
        .collect();
    let gained: Vec<usize> = servers
        .iter()
        .zip(&before)
        .map(|(s, b)| open_sockets(s.child.0.id()).saturating_sub(*b))
        .collect();
    assert_eq!(gained.iter().sum::<usize>(), 60, "{gained:?}");
    assert!(
        gained.iter().all(|&g| g > 0),
        "the kernel used only some processes: {gained:?}"
    );
    // Two processes die; the third takes every new connection.
    drop(conns);
    let survivor = servers.pop().unwrap();
    drop(servers); // SIGKILL
    for i in 0..20 {
        let c = sockserv::connect(&addr, &keyed()).unwrap();
        roundtrip(&c, format!("after {i}").as_bytes());
    }
    let (status, _) = survivor.stop(libc::SIGTERM, RUN_LIMIT);
    assert!(status.success());
    eprintln!("SO_REUSEPORT: 60 connections over 3 processes: {gained:?}");
}

/// A port nobody listens on right now (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `frames` frames one at a time through `addr`, each acknowledged
/// by its echo; a broken connection is replaced and the unacknowledged
/// frame sent again. Returns the local addresses it used.
fn send_acknowledged(
    addr: &str,
    client: usize,
    frames: u32,
    acked: &std::sync::atomic::AtomicU32,
) -> Vec<String> {
    let mut used = Vec::new();
    let mut conn: Option<sockserv::Connection> = None;
    let mut seq = 0;
    let mut failures = 0;
    while seq < frames {
        assert!(failures < 50, "client {client}: too many failed attempts");
        let c = match conn.take() {
            Some(c) => c,
            None => match sockserv::connect(addr, &keyed()) {
                Ok(c) => {
                    c.set_timeout(Some(Duration::from_secs(10)));
                    used.push(c.local_addr().to_string());
                    c
                }
                Err(_) => {
                    failures += 1;
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let payload = format!("client {client} frame {seq}");
        let echoed = c
            .send(payload.as_bytes())
            .and_then(|()| c.recv_with(|f| f.to_vec()));
        match echoed {
            Ok(back) => {
                assert_eq!(
                    back,
                    payload.as_bytes(),
                    "an acknowledged frame came back wrong"
                );
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                seq += 1;
                conn = Some(c);
            }
            // The backend died: reconnect and send the same frame again.
            Err(_) => failures += 1,
        }
    }
    used
}

#[test]
fn haproxy_in_front_of_two_servers() {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED haproxy_in_front_of_two_servers: haproxy is not installed \
             (apt-get install haproxy); CI must install it ***\n"
        );
        return;
    }
    let exe = built().examples.join("echo_server");
    let backend = || {
        let mut cmd = Command::new(&exe);
        cmd.args(["-p", "-v", "tcp://127.0.0.1:0"])
            .env("SOCKSERV_KEY", KEY);
        EchoServer::spawn(cmd, RUN_LIMIT)
    };
    let backends = [backend(), backend()];
    let front = free_port();
    let dir = TempDir::new("haproxy");
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let hostport = b.addr.trim_start_matches("tcp://");
            format!("    server s{i} {hostport} send-proxy-v2 check inter 200ms fall 1 rise 1\n")
        })
        .collect();
    let config = format!(
        "global\n    maxconn 256\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         frontend sockserv\n    bind 127.0.0.1:{front}\n    default_backend servers\n\
         backend servers\n    balance roundrobin\n{servers}"
    );
    let cfg = dir.0.join("haproxy.cfg");
    std::fs::write(&cfg, &config).unwrap();
    let haproxy = ChildGuard(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    let addr = format!("tcp://127.0.0.1:{front}");
    let ready = (0..100).any(|_| {
        let up = std::net::TcpStream::connect(("127.0.0.1", front)).is_ok();
        if !up {
            thread::sleep(Duration::from_millis(50));
        }
        up
    });
    assert!(ready, "haproxy did not start listening:\n{config}");

    // Four clients through HAProxy; once they are under way, one backend dies.
    const CLIENTS: usize = 4;
    const FRAMES: u32 = 300;
    let acked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, acked) = (addr.clone(), acked.clone());
            thread::spawn(move || send_acknowledged(&addr, i, FRAMES, &acked))
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(30);
    while acked.load(std::sync::atomic::Ordering::SeqCst) < (CLIENTS as u32 * FRAMES) / 3
        && Instant::now() < end
    {
        thread::sleep(Duration::from_millis(5));
    }
    let [killed, survivor] = backends;
    let killed_log = {
        let mut killed = killed;
        killed.child.signal(libc::SIGKILL);
        killed.child.wait_for(RUN_LIMIT);
        killed.stderr.take().unwrap().collect(PIPE_LIMIT)
    };
    let used: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(
        acked.load(std::sync::atomic::Ordering::SeqCst),
        CLIENTS as u32 * FRAMES
    );
    let (status, survivor_log) = survivor.stop(libc::SIGTERM, RUN_LIMIT);
    assert!(status.success(), "{survivor_log}");
    drop(haproxy);
    // Both backends served clients, and saw the clients' own addresses
    // (their ports), not HAProxy's.
    let logs = format!("{killed_log}{survivor_log}");
    for local in &used {
        assert!(
            logs.contains(&format!("connection from {local}\n")),
            "no backend saw client {local}:\n{logs}"
        );
    }
    assert!(killed_log.contains("connection from") && survivor_log.contains("connection from"));
    eprintln!(
        "haproxy: {} frames acknowledged by {CLIENTS} clients over {} connections, one backend killed",
        CLIENTS as u32 * FRAMES,
        used.len()
    );
}

// ---------------------------------------------------------------------------
// Datagrams: tests/c/datagram_test.c, compiled on first use.

fn datagram_test() -> &'static Path {
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

fn assert_datagram_summary(output: &Output) {
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

// ---------------------------------------------------------------------------
// Sanitizers: the C test program, the concurrency program and the examples
// built with AddressSanitizer + UndefinedBehaviorSanitizer, and the
// concurrency program with ThreadSanitizer, run against the library this
// test built (whose Rust code is not instrumented: .ci/sanitizers runs the
// Rust side under ASan and TSan). SOCKSERV_SANITIZER_LIB_DIR links them
// against another libsockserv.so instead (.ci/sanitizers passes its
// ASan-built one, with SOCKSERV_SANITIZER_LIB_INSTRUMENTED=address). A
// missing runtime skips loudly.

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

/// The sanitizer builds, made once; `None` where the runtime is missing.
struct Sanitized {
    /// api_test-asan, concurrency-asan, sanitizer_control-asan, and the
    /// examples in examples-asan/.
    asan: Option<PathBuf>,
    /// concurrency-tsan, sanitizer_control-tsan.
    tsan: Option<PathBuf>,
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
        let asan = (instrumented != "thread" && sanitizer_works(&out, ASAN_FLAGS)).then(|| {
            for name in ["api_test.c", "concurrency.c", "sanitizer_control.c"] {
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
        let tsan = (instrumented != "address" && sanitizer_works(&out, TSAN_FLAGS)).then(|| {
            for name in ["concurrency.c", "sanitizer_control.c"] {
                compile_with(Lang::C, &lib_dir, &source(name), &out, TSAN_FLAGS, "-tsan");
            }
            out.clone()
        });
        Sanitized { asan, tsan }
    })
}

/// Whether the C compiler builds and runs a program with `flags` (the
/// sanitizer's runtime library is installed).
fn sanitizer_works(out: &Path, flags: &[&str]) -> bool {
    let probe = out.join("probe.c");
    std::fs::write(&probe, "int main(void) { return 0; }\n").expect("write probe.c");
    let exe = out.join(format!("probe{}", flags[0].replace(['=', ','], "-")));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(flags)
        .arg(&probe)
        .arg("-o")
        .arg(&exe)
        .succeeds_quietly();
    built && Command::new(&exe).succeeds_quietly()
}

trait Quiet {
    /// Runs to completion quietly; whether it succeeded.
    fn succeeds_quietly(&mut self) -> bool;
}

impl Quiet for Command {
    fn succeeds_quietly(&mut self) -> bool {
        self.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// Says loudly that a sanitizer check did not run.
fn skipped(test: &str, sanitizer: &str, package: &str) {
    // Straight to fd 2, not eprintln!: libtest captures that, and a skipped
    // check must be seen even when the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: no {sanitizer} build (the C compiler cannot build \
         with it: apt-get install {package}; CI must install it. Or \
         SOCKSERV_SANITIZER_LIB_INSTRUMENTED names another sanitizer) ***\n"
    );
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
    let Some(dir) = &sanitized().asan else {
        return skipped(
            "asan_ubsan_api_test_program",
            "ASan",
            "gcc (libasan8, libubsan1)",
        );
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

#[test]
fn asan_ubsan_concurrency_program() {
    let Some(dir) = &sanitized().asan else {
        return skipped(
            "asan_ubsan_concurrency_program",
            "ASan",
            "gcc (libasan8, libubsan1)",
        );
    };
    let output = run_sanitized(
        &dir.join("concurrency-asan"),
        &[],
        "concurrency (ASan + UBSan)",
    );
    assert!(stdout(&output).contains(", 0 failed"), "{}", show(&output));
}

#[test]
fn tsan_concurrency_program() {
    let Some(dir) = &sanitized().tsan else {
        return skipped("tsan_concurrency_program", "TSan", "gcc (libtsan2)");
    };
    let output = run_sanitized(&dir.join("concurrency-tsan"), &[], "concurrency (TSan)");
    assert!(stdout(&output).contains(", 0 failed"), "{}", show(&output));
    eprintln!("{}", stdout(&output));
}

#[test]
fn asan_ubsan_examples_exchange() {
    let Some(dir) = &sanitized().asan else {
        return skipped(
            "asan_ubsan_examples_exchange",
            "ASan",
            "gcc (libasan8, libubsan1)",
        );
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
    match &sanitized().asan {
        Some(dir) => {
            let exe = dir.join("sanitizer_control-asan");
            cases.push((exe.clone(), "leak", "LeakSanitizer", "sockserv_config_new"));
            cases.push((exe.clone(), "heap", "heap-buffer-overflow", "main"));
            cases.push((exe, "ub", "signed integer overflow", "runtime error"));
        }
        None => skipped("sanitizers_catch_deliberate_bugs (ASan)", "ASan", "gcc"),
    }
    match &sanitized().tsan {
        Some(dir) => cases.push((
            dir.join("sanitizer_control-tsan"),
            "race",
            "data race",
            "bump",
        )),
        None => skipped("sanitizers_catch_deliberate_bugs (TSan)", "TSan", "gcc"),
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

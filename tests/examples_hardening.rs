//! The README's C program and `c_examples/echo_server` under exactly
//! `valgrind --leak-check=full --error-exitcode=1` (no suppressions, every
//! leak kind valgrind counts as an error by default, "possibly lost"
//! included), and `echo_server` refusing an empty key (issue 10, 10 and 11).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::proc::{
    assert_success, have, lib_dir, make_examples, root, run, show, stdout, TempDir,
};
use common::skip;

const KEY: &str = "correct horse battery staple";
/// The exact command of the issue.
const VALGRIND: [&str; 3] = ["valgrind", "--leak-check=full", "--error-exitcode=1"];
const BUILD_LIMIT: Duration = Duration::from_secs(300);
const VALGRIND_LIMIT: Duration = Duration::from_secs(120);

struct Built {
    examples: PathBuf,
    readme: PathBuf,
}

/// The examples (their own Makefile) and the README's first C block, built
/// against the library this `cargo test` built.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let lib = lib_dir();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-hardening");
        std::fs::create_dir_all(&out).expect("create the build dir");
        let examples = out.join("examples");
        let make = run(
            make_examples(&lib, &examples).arg("all"),
            BUILD_LIMIT,
            "make -C c_examples all",
        );
        assert_success(&make, "building c_examples");
        let program = common::proc::readme_c_program();
        let source = out.join("readme_program.c");
        std::fs::write(&source, program).expect("write the README program");
        let exe = out.join("readme_program");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let compile = run(
            Command::new(&cc)
                .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-O0", "-I"])
                .arg(root().join("include"))
                .arg(&source)
                .arg("-o")
                .arg(&exe)
                .arg("-L")
                .arg(&lib)
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .args(["-lsockserv", "-pthread"]),
            BUILD_LIMIT,
            "compiling the README program",
        );
        assert_success(&compile, "compiling the README program");
        Built {
            examples,
            readme: exe,
        }
    })
}

/// cargo's library path would let the programs find another libsockserv.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("LD_LIBRARY_PATH").env_remove("SOCKSERV_KEY");
    cmd
}

fn valgrind(test: &str) -> Option<Command> {
    if !have("valgrind") {
        skip::required(
            test,
            "valgrind is not installed (apt-get install valgrind); CI must install it",
        );
        return None;
    }
    let mut cmd = command(VALGRIND[0]);
    cmd.args(&VALGRIND[1..]);
    Some(cmd)
}

/// A child killed and reaped when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn collect(pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(pipe).read_to_string(&mut text);
        text
    })
}

#[test]
fn readme_program_is_clean_under_exact_valgrind() {
    let Some(mut vg) = valgrind("readme_program_is_clean_under_exact_valgrind") else {
        return;
    };
    let out = run(
        vg.arg(&built().readme),
        VALGRIND_LIMIT,
        "the README program under valgrind",
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("echoed hello"), "{}", show(&out));
}

#[test]
fn echo_server_is_clean_under_exact_valgrind() {
    let Some(mut vg) = valgrind("echo_server_is_clean_under_exact_valgrind") else {
        return;
    };
    let b = built();
    let child = vg
        .arg(b.examples.join("echo_server"))
        .arg("tcp://127.0.0.1:0")
        .env("SOCKSERV_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo_server under valgrind");
    let mut server = Guard(child);
    let stderr = collect(server.0.stderr.take().expect("stderr"));
    let out = server.0.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let Ok(first) = lines.recv_timeout(VALGRIND_LIMIT) else {
        drop(server);
        panic!("no address from echo_server:\n{}", stderr.join().unwrap());
    };
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    let client = |key: &str, msg: &str| {
        run(
            command(b.examples.join("echo_client"))
                .env("SOCKSERV_KEY", key)
                .args([addr.as_str(), msg]),
            VALGRIND_LIMIT,
            "echo_client",
        )
    };
    let good = client(KEY, "hello");
    assert_success(&good, "echo_client with the key");
    assert_eq!(stdout(&good), "hello\n");
    let bad = client("wrong", "x");
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
    let term = run(
        Command::new("kill")
            .arg("-TERM")
            .arg(server.0.id().to_string()),
        Duration::from_secs(10),
        "kill -TERM",
    );
    assert_success(&term, "kill -TERM echo_server");
    let status = server.wait_for(VALGRIND_LIMIT);
    let log = stderr.join().unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("echo_server did not stop:\n{log}"));
    assert!(
        status.success(),
        "echo_server under {VALGRIND:?}: {status:?}\n{log}"
    );
    assert!(log.contains("ERROR SUMMARY: 0 errors"), "{log}");
    // The refusal log: the wrong key's client, by address, code and detail.
    assert!(
        log.contains("echo_server: refused tcp://127.0.0.1:")
            && log.contains("authentication failed")
            && log.contains("does not match the key"),
        "{log}"
    );
}

/// The control: the same command exits 1 on a program that leaks, so a
/// clean run above means valgrind was looking.
#[test]
fn exact_valgrind_fails_on_a_leak() {
    let Some(mut vg) = valgrind("exact_valgrind_fails_on_a_leak") else {
        return;
    };
    let dir = TempDir::new("vg-exact-control");
    let source = dir.path().join("leak.c");
    std::fs::write(
        &source,
        "#include <stdlib.h>\nint main(void) { volatile char *p = malloc(48); p[0] = 1; p = 0; return 0; }\n",
    )
    .unwrap();
    let exe = dir.path().join("leak");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let compile = run(
        Command::new(&cc)
            .args(["-g", "-O0"])
            .arg(&source)
            .arg("-o")
            .arg(&exe),
        BUILD_LIMIT,
        "compiling the leak",
    );
    assert_success(&compile, "compiling the leak");
    let out = run(vg.arg(&exe), VALGRIND_LIMIT, "the leak under valgrind");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

/// `-k ""` and `SOCKSERV_KEY=` are refused as the library refuses an empty
/// key: exit 1 before listening, never "anyone may connect".
#[test]
fn echo_server_refuses_an_empty_key() {
    let exe = built().examples.join("echo_server");
    let cases: [(&str, Command); 3] = [
        ("-k \"\"", {
            let mut c = command(&exe);
            c.args(["-k", "", "tcp://127.0.0.1:0"]);
            c
        }),
        ("SOCKSERV_KEY=", {
            let mut c = command(&exe);
            c.env("SOCKSERV_KEY", "").arg("tcp://127.0.0.1:0");
            c
        }),
        ("-k \"\" over a good SOCKSERV_KEY", {
            let mut c = command(&exe);
            c.env("SOCKSERV_KEY", KEY)
                .args(["-k", "", "tcp://127.0.0.1:0"]);
            c
        }),
    ];
    for (what, mut cmd) in cases {
        let out = run(&mut cmd, Duration::from_secs(10), what);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        assert!(
            !stdout(&out).contains("listening"),
            "{what}: {}",
            show(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("empty key"), "{what}: {}", show(&out));
        assert!(
            !err.contains("anyone may connect"),
            "{what}: {}",
            show(&out)
        );
    }
    // No key at all still serves (and says so): only an empty one is refused.
    let mut child = Guard(
        command(&exe)
            .arg("tcp://127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let (tx, first) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = first
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    assert!(line.starts_with("listening on "), "{line:?}");
    assert!(child.wait_for(Duration::from_millis(200)).is_none());
}

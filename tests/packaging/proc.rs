//! Running programs from tests: every child is killed and reaped if it
//! outlives its time limit or the test fails, and its output is read on
//! threads so a chatty child never blocks. Also the library under test, temp
//! directories, and the loud SKIPPED line for a missing tool.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding the libsockserv.so and libsockserv.a that this
/// `cargo test` built: `cargo test` builds every crate type of the lib in
/// one rustc run into target/<profile>/deps/, beside the rlib it links.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("target/<profile>/deps").to_path_buf();
    for name in ["libsockserv.so", "libsockserv.a"] {
        let lib = deps.join(name);
        let built = modified(&lib)
            .unwrap_or_else(|| panic!("{} is missing: cargo test builds it", lib.display()));
        // A newer source means this library is not the one under test.
        for source in rust_sources(&root().join("src")) {
            assert!(
                modified(&source).expect("source mtime") <= built,
                "{} is older than {}",
                lib.display(),
                source.display()
            );
        }
    }
    deps
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src/").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// Kills and reaps the child when dropped, also when a test panics.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `cmd` to completion within `limit`, capturing its output; panics
/// (after killing it) if it runs longer.
pub fn run(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut guard = ChildGuard(child);
    let out = drain(guard.0.stdout.take().expect("stdout"));
    let err = drain(guard.0.stderr.take().expect("stderr"));
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= end {
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    drop(guard); // kills it if it still runs, so its pipes close
                 // A grandchild holding a pipe open could keep a reader waiting: give
                 // the readers a bounded time.
    let collect = |h: JoinHandle<Vec<u8>>| {
        let end = Instant::now() + Duration::from_secs(5);
        while !h.is_finished() && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        if h.is_finished() {
            h.join().unwrap_or_default()
        } else {
            b"(output still open after the process ended)".to_vec()
        }
    };
    let output = Output {
        status: status.unwrap_or_default(),
        stdout: collect(out),
        stderr: collect(err),
    };
    assert!(
        status.is_some(),
        "{what} did not finish within {limit:?}; killed\n{}",
        show(&output)
    );
    output
}

pub fn show(output: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[track_caller]
pub fn assert_success(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed\n{}", show(output));
}

/// Whether `program` runs (`program --version` exits 0).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Says loudly that `test` skipped something. Straight to fd 2, not
/// eprintln!: libtest captures that, and a skip must be seen even when the
/// test passes.
pub fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sockserv-test-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! Running programs from tests: every child is killed and reaped when its
//! guard drops (also when a test fails half-way), every wait is bounded,
//! and output is read on threads so a chatty child never blocks. Also the
//! tree, the library under test, and temp directories.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// How long to wait for a child's output pipes to close after it exited (a
/// grandchild holding one open must not hang a test).
pub const PIPE_LIMIT: Duration = Duration::from_secs(5);

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `make -C c_examples LIBDIR=<lib_dir> BUILD=<build>`, the targets still
/// to add: the C examples built against the library in `lib_dir`.
pub fn make_examples(lib_dir: &Path, build: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(root().join("c_examples"))
        .arg(format!("LIBDIR={}", lib_dir.display()))
        .arg(format!("BUILD={}", build.display()));
    cmd
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

/// A child process, killed (SIGKILL) and reaped when dropped. `lines` has
/// its stdout line by line when it was started with [`ChildGuard::spawn`].
pub struct ChildGuard {
    pub child: Child,
    pub lines: Option<Receiver<String>>,
}

impl ChildGuard {
    /// Guards a child started elsewhere.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child, lines: None }
    }

    /// Starts `cmd` with stdin closed and its stdout lines on `lines`.
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let mut child = without_cargo_library_path(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = read_lines(child.stdout.take().expect("stdout"));
        ChildGuard {
            child,
            lines: Some(lines),
        }
    }

    /// Waits at most `limit` for the line `want` on stdout.
    pub fn expect_line(&self, want: &str, limit: Duration) {
        let lines = self.lines.as_ref().expect("started with ChildGuard::spawn");
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(e) => panic!("no {want:?} line from the child: {e}"),
            }
        }
    }

    /// Waits at most `limit` for the child to exit.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes no pointers; the pid is our child's, not yet
        // reaped (we hold its Child), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// SIGKILL, then reap: the kernel closes its sockets with no goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads lines on a thread and hands them over a channel, so the reader can
/// wait for one with a timeout.
pub fn read_lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
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

/// A pipe read to the end on a thread, so a chatty child never blocks.
pub struct Drain {
    bytes: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

pub fn drain(mut pipe: impl Read + Send + 'static) -> Drain {
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
    /// What was read, once the pipe closed or `limit` passed.
    pub fn collect(self, limit: Duration) -> Vec<u8> {
        let end = Instant::now() + limit;
        while !self.thread.is_finished() && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        let bytes = self.bytes.lock().unwrap();
        bytes.clone()
    }

    pub fn collect_string(self, limit: Duration) -> String {
        String::from_utf8_lossy(&self.collect(limit)).into_owned()
    }
}

/// The README's complete C program: its first ```c block.
pub fn readme_c_program() -> String {
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
    program.to_string()
}

/// `cargo test` puts target/<profile>/ first in LD_LIBRARY_PATH, where an
/// older `cargo build` may have left an older libsockserv.so; the programs'
/// RUNPATH names the library under test, so let it decide, unless the test
/// set LD_LIBRARY_PATH itself.
pub fn without_cargo_library_path(cmd: &mut Command) -> &mut Command {
    if !cmd.get_envs().any(|(key, _)| key == "LD_LIBRARY_PATH") {
        cmd.env_remove("LD_LIBRARY_PATH");
    }
    cmd
}

/// Runs `cmd` to completion within `limit`, capturing its output; panics
/// (after killing it) if it runs longer.
pub fn run(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = without_cargo_library_path(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut guard = ChildGuard::new(child);
    let out = drain(guard.child.stdout.take().expect("stdout"));
    let err = drain(guard.child.stderr.take().expect("stderr"));
    let status = guard.wait_for(limit);
    drop(guard); // kills it if it still runs, so its pipes close
    let output = Output {
        status: status.unwrap_or_default(),
        stdout: out.collect(PIPE_LIMIT),
        stderr: err.collect(PIPE_LIMIT),
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

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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

    /// `file` inside the directory, as a string (for socket addresses).
    pub fn file(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

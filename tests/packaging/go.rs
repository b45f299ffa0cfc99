//! bindings/go, the cgo package: `gofmt -l`, `go vet` and `go test -v`
//! against the library this `cargo test` built, with the C example server
//! (c_examples/echo_server, built here) and Python's
//! multiprocessing.connection (a Python 3.12+, whose stock handshake is
//! HMAC-SHA256) as peers; and a user's program in a module of its own
//! that requires the package through a replace line. Go's caches live under target/, GOPROXY=off: the
//! package uses the standard library only, nothing is fetched. No `go`: a
//! loud SKIPPED line, and a failure under CI=true (.ci/run installs
//! golang-go).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::proc::{assert_success, lib_dir, make_examples, root, run, show, stdout, TempDir};

/// A cold build cache compiles the standard library's cgo parts first.
const LIMIT: Duration = Duration::from_secs(600);

/// Every `func TestX(t *testing.T)` and `func ExampleX()` (whose output
/// `go test` compares) in bindings/go/*_test.go, with
/// whether it needs a Python 3.12+ (its body calls `python(t)`).
fn go_tests() -> Vec<(String, bool)> {
    let mut tests = Vec::new();
    for entry in std::fs::read_dir(root().join("bindings/go"))
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if !path.to_string_lossy().ends_with("_test.go") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for func in text.split("\nfunc ").skip(1) {
            let name = func.split('(').next().unwrap_or_default();
            if name.starts_with("Test") || name.starts_with("Example") {
                tests.push((name.to_string(), func.contains("python(t)")));
            }
        }
    }
    tests.sort();
    tests
}

fn have_go() -> bool {
    Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_python_312(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SOCKSERV_PYTHON, python3.13, python3.12, python3, then pyenv's
/// versions, newest first: the first that is 3.12 or later.
fn python_312() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("SOCKSERV_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.extend(["python3.13", "python3.12", "python3"].map(PathBuf::from));
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    if let Some(versions) = pyenv.map(|p| p.join("versions")) {
        let mut found: Vec<PathBuf> = std::fs::read_dir(versions)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin/python3"))
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    candidates.into_iter().find(|p| is_python_312(p))
}

fn go(args: &[&str], env: &[(&str, String)], what: &str) -> std::process::Output {
    go_in(&root().join("bindings/go"), args, env, what)
}

fn go_in(dir: &Path, args: &[&str], env: &[(&str, String)], what: &str) -> std::process::Output {
    let target = lib_dir()
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf();
    let lib = lib_dir();
    let output = run(
        Command::new("go")
            .args(args)
            .current_dir(dir)
            .env("GOCACHE", target.join("go/cache"))
            .env("GOPATH", target.join("go/path"))
            .env("GOPROXY", "off")
            .env("GOSUMDB", "off")
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .env("GO111MODULE", "on")
            .env("CGO_ENABLED", "1")
            .env(
                "CGO_LDFLAGS",
                format!("-L{0} -Wl,-rpath,{0}", lib.display()),
            )
            .envs(env.iter().map(|(k, v)| (k, v))),
        LIMIT,
        what,
    );
    assert_success(&output, what);
    output
}

#[test]
fn go_binding_tests() {
    if !have_go() {
        let why = "go is not installed (apt-get install golang-go)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}: CI must have it (.ci/run installs it)"
        );
        return crate::skip::required("go_binding_tests", why);
    }
    // The C example server, built against the library under test.
    let dir = TempDir::new("go");
    let echo_server = dir.path().join("echo_server");
    let make = run(
        make_examples(&lib_dir(), dir.path()).arg(&echo_server),
        LIMIT,
        "make echo_server",
    );
    assert_success(&make, "make -C c_examples .../echo_server");

    let fmt = run(
        Command::new("gofmt")
            .arg("-l")
            .arg(root().join("bindings/go")),
        LIMIT,
        "gofmt -l",
    );
    assert_success(&fmt, "gofmt -l bindings/go");
    assert!(
        stdout(&fmt).trim().is_empty(),
        "not gofmt-formatted:\n{}",
        show(&fmt)
    );
    go(&["vet", "./..."], &[], "go vet ./...");

    let mut env = vec![("SOCKSERV_ECHO_SERVER", echo_server.display().to_string())];
    let python = python_312();
    match &python {
        Some(p) => env.push(("SOCKSERV_PYTHON", p.display().to_string())),
        None => crate::skip::required(
            "go_binding_tests: Python interop",
            "no Python 3.12+ found (SOCKSERV_PYTHON, python3.12, pyenv)",
        ),
    }
    let output = go(
        // Go's own timeout first: a hang ends with every goroutine's stack.
        &["test", "-count=1", "-v", "-timeout", "300s", "./..."],
        &env,
        "go test -v ./...",
    );
    let out = stdout(&output);
    let tests = go_tests();
    assert!(
        tests.len() >= 19,
        "only {} Go tests found: {tests:?}",
        tests.len()
    );
    for (test, needs_python) in &tests {
        if *needs_python && python.is_none() {
            assert!(
                out.contains(&format!("--- SKIP: {test} ")),
                "{}",
                show(&output)
            );
        } else {
            assert!(
                out.contains(&format!("--- PASS: {test} ")),
                "{test} did not pass\n{}",
                show(&output)
            );
        }
    }
}

/// A program of a user's, in a module of its own that requires the package
/// through a replace line (bindings/go/testdata/program), built and run.
#[test]
fn go_program_in_its_own_module() {
    if !have_go() {
        let why = "go is not installed (apt-get install golang-go)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}: CI must have it (.ci/run installs it)"
        );
        return crate::skip::required("go_program_in_its_own_module", why);
    }
    let dir = TempDir::new("go-program");
    std::fs::write(
        dir.path().join("go.mod"),
        format!(
            "module example.com/user\n\ngo 1.19\n\nrequire sockserv v0.0.0\n\nreplace sockserv => {}\n",
            root().join("bindings/go").display()
        ),
    )
    .unwrap();
    std::fs::copy(
        root().join("bindings/go/testdata/program/main.go"),
        dir.path().join("main.go"),
    )
    .unwrap();
    let exe = dir.path().join("program");
    go_in(
        dir.path(),
        &["build", "-o", exe.to_str().unwrap(), "."],
        &[],
        "go build (a user's module)",
    );
    let output = run(&mut Command::new(&exe), LIMIT, "the Go program");
    assert_success(&output, "the Go program");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        stdout(&output),
        format!("there and back (sockserv {version})\n"),
        "{}",
        show(&output)
    );
}

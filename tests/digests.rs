//! Every digest Python 3.12+ lets a peer choose (`{sha256}`, `{sha384}`,
//! `{sha3_256}`, `{sha3_384}`), against Python's own
//! `multiprocessing.connection.deliver_challenge` / `answer_challenge`, with
//! sockserv answering in both roles and both server modes (issue 10, 9).
//!
//! Needs a Python 3.12 or newer: `SOCKSERV_PYTHON`, else `python3`,
//! `python3.13`, `python3.12`, else a pyenv one. Without one the tests say
//! SKIPPED loudly, except under CI (`CI=true`), where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    config_with_key, recording_echo_server, roundtrip, tcp_target, ChildGuard, Mode, KEY,
};
use sockserv::ErrorKind;

const DIGESTS: [&str; 4] = ["sha256", "sha384", "sha3_256", "sha3_384"];
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/mp_digests.py");
const LIMIT: Duration = Duration::from_secs(30);

fn version_of(python: &Path) -> Option<(u32, u32)> {
    let out = Command::new(python)
        .args(["-E", "-s", "-c", "import sys; print(*sys.version_info[:2])"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// A Python 3.12+ interpreter, or None after saying so (a failure in CI).
fn python312() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("SOCKSERV_PYTHON") {
            candidates.push(p.into());
        }
        candidates.extend(["python3", "python3.13", "python3.12"].map(PathBuf::from));
        let pyenv = std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
        if let Some(Ok(entries)) = pyenv.map(|root| std::fs::read_dir(root.join("versions"))) {
            let mut versions: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("bin/python3"))
                .collect();
            versions.sort();
            versions.reverse();
            candidates.extend(versions);
        }
        candidates
            .into_iter()
            .find(|p| version_of(p).is_some_and(|v| v >= (3, 12)))
    });
    if found.is_none() {
        let what =
            "no Python 3.12+ found (SOCKSERV_PYTHON, python3, python3.13, python3.12, pyenv)";
        common::skip::required("digests", what);
    }
    found.as_deref()
}

fn peer(python: &Path, args: &[&str]) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(python)
            .arg("-E")
            .arg("-s")
            .arg(SCRIPT)
            .args(args),
    )
}

/// The child's next stdout line, bounded.
fn line(child: &ChildGuard) -> String {
    child
        .lines
        .as_ref()
        .expect("started with ChildGuard::spawn")
        .recv_timeout(LIMIT)
        .unwrap_or_else(|e| panic!("no line from the Python peer: {e}"))
}

fn key_str() -> &'static str {
    std::str::from_utf8(KEY).unwrap()
}

/// Python's client answers sockserv's challenge, then challenges with
/// `digest`: the sockserv server must answer it.
fn python_client_challenges_server(mode: Mode) {
    let Some(python) = python312() else { return };
    let config = config_with_key(KEY);
    let (server, errors) = recording_echo_server(&config, mode);
    let target = tcp_target(&server);
    let (host, port) = target.rsplit_once(':').unwrap();
    for digest in DIGESTS {
        let child = peer(python, &["connect", host, port, key_str(), digest]);
        assert_eq!(
            line(&child),
            "OK",
            "{mode:?}, {digest}: {:?}",
            errors.lock().unwrap()
        );
    }
    assert_eq!(server.stats().handshake_failures, 0, "{mode:?}");
}

#[test]
fn threaded_server_answers_every_python_digest() {
    python_client_challenges_server(Mode::Threaded);
}

#[test]
fn event_server_answers_every_python_digest() {
    python_client_challenges_server(Mode::Event);
}

#[test]
fn client_answers_every_python_digest() {
    let Some(python) = python312() else { return };
    let config = config_with_key(KEY);
    for digest in DIGESTS {
        let child = peer(python, &["listen", key_str(), digest]);
        let port = line(&child)
            .strip_prefix("LISTENING ")
            .expect("LISTENING line")
            .to_string();
        let conn = sockserv::connect(&format!("tcp://127.0.0.1:{port}"), &config)
            .unwrap_or_else(|e| panic!("{digest}: {e}"));
        roundtrip(&conn, b"hello");
        drop(conn);
        assert_eq!(line(&child), "OK", "{digest}");
    }
}

#[test]
fn a_wrong_key_is_still_refused_with_sha3() {
    let Some(python) = python312() else { return };
    for digest in ["sha3_256", "sha3_384"] {
        let child = peer(python, &["listen", "the python side's key", digest]);
        let port = line(&child)
            .strip_prefix("LISTENING ")
            .expect("LISTENING line")
            .to_string();
        let err = sockserv::connect(&format!("tcp://127.0.0.1:{port}"), &config_with_key(KEY))
            .err()
            .unwrap_or_else(|| panic!("{digest}: a wrong key was accepted"));
        assert_eq!(err.kind(), ErrorKind::AuthFailed, "{digest}: {err}");
        let verdict = line(&child);
        assert!(verdict.starts_with("REFUSED"), "{digest}: {verdict}");
    }
}

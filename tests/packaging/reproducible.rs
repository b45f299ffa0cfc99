//! Reproducible and path-free: two copies of the source tree in different
//! directories, each built the way `make install-strip` builds (`make
//! build`: a release build with the checkout, cargo's registry and the
//! toolchain remapped), give byte-identical stripped libraries, and neither
//! holds the directory it was built in, cargo's home or the user's home.
//!
//! Each copy gets its own target directory, so both are whole builds (about
//! 20 s each on an idle machine); nothing is shared that could hide a
//! difference. To spend one release build less, the first build is the one
//! dpkg-buildpackage made (tests/packaging/debian.rs calls
//! `second_checkout_builds_the_same`); only without the Debian tools does
//! the test here build both itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::proc::{assert_success, have, root, run, TempDir};

const LIMIT: Duration = Duration::from_secs(900);

/// Copies the files of the source tree (git's view of it: tracked and
/// untracked-but-not-ignored files, so target/ and .git stay behind) to
/// `dest`, keeping their permissions.
pub fn copy_tree(dest: &Path) {
    let output = run(
        Command::new("git").arg("-C").arg(root()).args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ]),
        Duration::from_secs(60),
        "git ls-files",
    );
    assert_success(&output, "git ls-files");
    let mut copied = 0;
    for name in output.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).expect("UTF-8 file name");
        let from = root().join(name);
        if !from.is_file() {
            continue; // deleted in the work tree, not yet committed
        }
        let to = dest.join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {name}: {e}"));
        copied += 1;
    }
    assert!(copied > 50, "only {copied} files copied");
}

/// `make build` in a copy of the tree at `src`, with its own target dir;
/// returns the release directory.
pub fn release_build(src: &Path, target: &Path) -> PathBuf {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(src)
        .arg("build")
        .env("CARGO_TARGET_DIR", target);
    // What the outer `cargo test` sets is not for the inner build.
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("CARGO_") && k != "CARGO_HOME")
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", target);
    let output = run(&mut cmd, LIMIT, "make build (cargo build --release)");
    assert_success(&output, "make build");
    target.join("release")
}

/// `strip` (as install-strip does) a copy of `file` into `out`.
fn stripped(file: &Path, out: &Path, how: &str) -> Vec<u8> {
    std::fs::copy(file, out).unwrap();
    let output = run(
        Command::new("strip").arg(how).arg(out),
        Duration::from_secs(120),
        "strip",
    );
    assert_success(&output, "strip");
    std::fs::read(out).unwrap()
}

/// The places a path-free build must not name.
pub fn forbidden_paths(checkout: &Path) -> Vec<String> {
    let mut paths = vec![checkout.display().to_string(), root().display().to_string()];
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(Path::new(&home).join(".cargo").display().to_string());
        paths.push(Path::new(&home).join(".rustup").display().to_string());
    }
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        paths.push(Path::new(&cargo_home).display().to_string());
    }
    paths
}

#[track_caller]
pub fn assert_path_free(bytes: &[u8], what: &str, checkout: &Path) {
    for path in forbidden_paths(checkout) {
        let needle = path.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{what} contains {path}"
        );
    }
}

/// Builds a second copy of the tree in another directory and compares its
/// libraries with `first` (the release directory of a build of `checkout`).
pub fn second_checkout_builds_the_same(first: &Path, checkout: &Path, dir: &Path) {
    let two = dir.join("second/place/elsewhere/sockserv-copy");
    copy_tree(&two);
    let started = Instant::now();
    let second = release_build(&two, &dir.join("target-two"));
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "reproducible: second release build in {:?}\n",
            started.elapsed()
        )
        .as_bytes(),
    );
    for (name, how) in [
        ("libsockserv.so", "--strip-unneeded"),
        ("libsockserv.a", "--strip-debug"),
    ] {
        let a = stripped(&first.join(name), &dir.join(format!("one-{name}")), how);
        let b = stripped(&second.join(name), &dir.join(format!("two-{name}")), how);
        assert_path_free(&a, name, checkout);
        assert_path_free(&b, name, &two);
        assert!(a == b, "the stripped {name} of the two checkouts differ");
    }
    // Unstripped too, debug information included.
    let a = std::fs::read(first.join("libsockserv.so")).unwrap();
    let b = std::fs::read(second.join("libsockserv.so")).unwrap();
    assert_path_free(&a, "the unstripped libsockserv.so", checkout);
    assert!(
        a == b,
        "the unstripped libsockserv.so of the two checkouts differ"
    );
}

#[test]
fn two_checkouts_build_identical_path_free_libraries() {
    if !have("git") {
        return crate::skip::required(
            "two_checkouts_build_identical_path_free_libraries",
            "git is not installed",
        );
    }
    if crate::debian::have_debian_tools() {
        // debian::dpkg_buildpackage_... compares its build with a second one.
        return;
    }
    let dir = TempDir::new("reproducible");
    let one = dir.path().join("one/sockserv");
    copy_tree(&one);
    let first = release_build(&one, &dir.path().join("target-one"));
    second_checkout_builds_the_same(&first, &one, dir.path());
}

//! `make install` into a temporary prefix, then programs built against the
//! installed files the three ways a user would: pkg-config (dynamic),
//! pkg-config --static, and CMake's find_package. Each program runs an
//! authenticated exchange (tests/packaging/consumer/consumer.c).
//!
//! The library installed is the one this `cargo test` built (BUILT=): a
//! nested `cargo build --release` would wait on cargo's lock on target/.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::proc::{assert_success, have, lib_dir, root, run, show, stdout, TempDir};

const LIMIT: Duration = Duration::from_secs(180);
const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAJOR: &str = env!("CARGO_PKG_VERSION_MAJOR");
/// Rust's std needs these from the system when linked statically.
const STATIC_LIBS: &str = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";

/// `make install` with `vars` (PREFIX=, DESTDIR=...), as the README says.
fn make(target: &str, vars: &[String]) -> Output {
    let output = run(
        Command::new("make")
            .arg("-C")
            .arg(root())
            .arg(target)
            .arg(format!("BUILT={}", lib_dir().display()))
            // No loader cache refresh for a test prefix.
            .arg("LDCONFIG=true")
            .args(vars),
        LIMIT,
        &format!("make {target}"),
    );
    assert_success(&output, &format!("make {target}"));
    output
}

/// A temp dir with sockserv installed in `<dir>/prefix`.
fn installed(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let prefix = dir.path().join("prefix");
    make("install", &[format!("PREFIX={}", prefix.display())]);
    (dir, prefix)
}

/// The dynamic section entries of `kind` (SONAME, NEEDED) of an ELF file.
fn dynamic(file: &Path, kind: &str) -> Vec<String> {
    let output = run(
        Command::new("readelf").arg("-d").arg(file),
        LIMIT,
        "readelf (binutils)",
    );
    assert_success(&output, "readelf -d");
    stdout(&output)
        .lines()
        .filter(|l| l.contains(&format!("({kind})")))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect()
}

/// Runs a shell command line (the README's, with $(pkg-config ...)) in `dir`.
fn sh(script: &str, dir: &Path, prefix: &Path) -> Output {
    let output = run(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
        LIMIT,
        script,
    );
    assert_success(&output, script);
    output
}

fn consumer_source() -> PathBuf {
    root().join("tests/packaging/consumer/consumer.c")
}

/// Runs a consumer program and checks it did its authenticated exchange.
fn run_consumer(exe: &Path, lib_path: Option<&Path>) {
    let mut cmd = Command::new(exe);
    cmd.env_remove("LD_LIBRARY_PATH");
    if let Some(dir) = lib_path {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    let output = run(&mut cmd, LIMIT, &exe.display().to_string());
    assert_success(&output, &exe.display().to_string());
    let expected = format!("consumer: sockserv {VERSION} echoed \"hello from an installed");
    assert!(stdout(&output).contains(&expected), "{}", show(&output));
}

#[test]
fn the_built_library_has_the_soname() {
    let so = lib_dir().join("libsockserv.so");
    assert_eq!(dynamic(&so, "SONAME"), [format!("libsockserv.so.{MAJOR}")]);
}

#[test]
fn make_install_lays_out_the_prefix_and_uninstall_removes_it() {
    let (dir, prefix) = installed("layout");
    let lib = prefix.join("lib");
    let real = format!("libsockserv.so.{VERSION}");
    let so_major = format!("libsockserv.so.{MAJOR}");
    let link = |name: &str| std::fs::read_link(lib.join(name)).ok();
    assert!(lib.join(&real).is_file() && link(&real).is_none());
    assert_eq!(link(&so_major), Some(PathBuf::from(&real)));
    assert_eq!(link("libsockserv.so"), Some(PathBuf::from(&so_major)));
    assert_eq!(dynamic(&lib.join(&real), "SONAME"), [so_major.as_str()]);
    assert!(lib.join("libsockserv.a").is_file());
    for header in ["sockserv.h", "sockserv.hpp"] {
        let installed = std::fs::read(prefix.join("include").join(header)).expect(header);
        let ours = std::fs::read(root().join("include").join(header)).unwrap();
        assert!(installed == ours, "{header} differs from include/{header}");
    }

    let pc = std::fs::read_to_string(lib.join("pkgconfig/sockserv.pc")).expect("sockserv.pc");
    for line in [
        format!("prefix={}", prefix.display()),
        format!("libdir={}", lib.display()),
        format!("Version: {VERSION}"),
        "Libs: -L${libdir} -lsockserv".into(),
        format!("Libs.private: {STATIC_LIBS}"),
    ] {
        assert!(
            pc.lines().any(|l| l == line),
            "sockserv.pc lacks {line:?}:\n{pc}"
        );
    }
    let cmake = lib.join("cmake/sockserv");
    let config = std::fs::read_to_string(cmake.join("sockserv-config.cmake")).unwrap();
    let version = std::fs::read_to_string(cmake.join("sockserv-config-version.cmake")).unwrap();
    for text in [&pc, &config, &version] {
        assert!(!text.contains('@'), "an unsubstituted @VAR@:\n{text}");
    }
    assert!(config.contains(&format!("IMPORTED_SONAME \"{so_major}\"")));
    assert!(version.contains(&format!("set(PACKAGE_VERSION \"{VERSION}\")")));

    make("uninstall", &[format!("PREFIX={}", prefix.display())]);
    let mut left = Vec::new();
    for entry in walk(&prefix) {
        if !entry.is_dir() {
            left.push(entry);
        }
    }
    assert!(left.is_empty(), "uninstall left {left:?}");
    drop(dir);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// install-strip drops the debug information, not the exported functions.
#[test]
fn install_strip_keeps_every_export() {
    let dir = TempDir::new("strip");
    let prefix = dir.path().join("prefix");
    make("install-strip", &[format!("PREFIX={}", prefix.display())]);
    let so = prefix.join(format!("lib/libsockserv.so.{VERSION}"));
    let output = run(
        Command::new("nm").args(["-D", "--defined-only"]).arg(&so),
        LIMIT,
        "nm -D",
    );
    assert_success(&output, "nm -D");
    let exports = stdout(&output)
        .lines()
        .filter(|l| l.contains(" sockserv_"))
        .count();
    // Every function the header declares, additions not yet in the ABI
    // baseline included.
    let functions = crate::abi::header_function_count();
    assert_eq!(exports, functions, "{}", stdout(&output));
    assert_eq!(dynamic(&so, "SONAME"), [format!("libsockserv.so.{MAJOR}")]);
    let size = std::fs::metadata(&so).unwrap().len();
    let unstripped = std::fs::metadata(lib_dir().join("libsockserv.so"))
        .unwrap()
        .len();
    assert!(
        size < unstripped,
        "{size} bytes stripped, {unstripped} before"
    );
}

/// DESTDIR stages the files; what they say inside is still PREFIX.
#[test]
fn destdir_stages_an_install_for_packaging() {
    let dir = TempDir::new("destdir");
    let stage = dir.path().join("stage");
    let prefix = "/opt/sockserv-destdir-test";
    assert!(!Path::new(prefix).exists());
    make(
        "install",
        &[
            format!("DESTDIR={}", stage.display()),
            format!("PREFIX={prefix}"),
        ],
    );
    let staged = stage.join(prefix.trim_start_matches('/'));
    let pc = std::fs::read_to_string(staged.join("lib/pkgconfig/sockserv.pc")).unwrap();
    assert!(pc.contains(&format!("prefix={prefix}\n")), "{pc}");
    assert!(staged
        .join(format!("lib/libsockserv.so.{VERSION}"))
        .is_file());
    assert!(!Path::new(prefix).exists(), "DESTDIR was not honoured");
}

#[test]
fn pkg_config_builds_dynamic_c_and_cxx_consumers() {
    if !have("pkg-config") {
        return crate::skip::required(
            "pkg_config_builds_dynamic_c_and_cxx_consumers",
            "pkg-config is not installed (apt-get install pkgconf); CI must install it",
        );
    }
    let (dir, prefix) = installed("pkgconfig");
    let lib = prefix.join("lib");
    sh(
        &format!(
            "cc -std=c99 -Wall -Wextra -Wpedantic -Werror {} $(pkg-config --cflags --libs sockserv) \
             -o consumer",
            consumer_source().display()
        ),
        dir.path(),
        &prefix,
    );
    let exe = dir.path().join("consumer");
    // It records the soname, not the dev symlink or the full version.
    let needed = dynamic(&exe, "NEEDED");
    assert!(
        needed.contains(&format!("libsockserv.so.{MAJOR}")),
        "{needed:?}"
    );
    run_consumer(&exe, Some(&lib));

    // The C++ example, with the installed sockserv.hpp.
    sh(
        &format!(
            "c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror {} \
             $(pkg-config --cflags --libs sockserv) -pthread -o cxx_echo",
            root().join("c_examples/cxx_echo.cpp").display()
        ),
        dir.path(),
        &prefix,
    );
    let mut cmd = Command::new(dir.path().join("cxx_echo"));
    let output = run(cmd.env("LD_LIBRARY_PATH", &lib), LIMIT, "cxx_echo");
    assert_success(&output, "cxx_echo against the installed library");
    assert!(
        stdout(&output).contains("wrong key refused"),
        "{}",
        show(&output)
    );
}

#[test]
fn pkg_config_static_links_the_archive() {
    if !have("pkg-config") {
        return crate::skip::required(
            "pkg_config_static_links_the_archive",
            "pkg-config is not installed (apt-get install pkgconf); CI must install it",
        );
    }
    let (dir, prefix) = installed("static");
    // The README's command: with both libraries installed, -lsockserv would
    // pick the shared one, so the archive is named (-l:libsockserv.a).
    sh(
        &format!(
            "cc -std=c99 -Wall -Wextra -Werror {} \
             $(pkg-config --static --cflags --libs sockserv | sed 's/-lsockserv/-l:libsockserv.a/') \
             -o consumer_static",
            consumer_source().display()
        ),
        dir.path(),
        &prefix,
    );
    let exe = dir.path().join("consumer_static");
    let needed = dynamic(&exe, "NEEDED");
    assert!(
        !needed.iter().any(|n| n.starts_with("libsockserv")),
        "{needed:?}"
    );
    // No library path needed: sockserv is inside.
    run_consumer(&exe, None);
}

#[test]
fn cmake_find_package_builds_shared_and_static_consumers() {
    if !have("cmake") {
        return crate::skip::required(
            "cmake_find_package_builds_shared_and_static_consumers",
            "cmake is not installed (apt-get install cmake); CI must install it",
        );
    }
    let (dir, prefix) = installed("cmake");
    let build = dir.path().join("build");
    let configure = run(
        Command::new("cmake")
            .arg("-S")
            .arg(root().join("tests/packaging/consumer"))
            .arg("-B")
            .arg(&build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())),
        LIMIT,
        "cmake (configure)",
    );
    assert_success(&configure, "cmake configure with find_package(sockserv)");
    let compile = run(
        Command::new("cmake").arg("--build").arg(&build),
        LIMIT,
        "cmake --build",
    );
    assert_success(&compile, "cmake --build");

    let shared = build.join("consumer");
    let needed = dynamic(&shared, "NEEDED");
    assert!(
        needed.contains(&format!("libsockserv.so.{MAJOR}")),
        "{needed:?}"
    );
    // CMake gives build-tree programs an rpath to the imported library.
    run_consumer(&shared, None);

    let fat = build.join("consumer_static");
    let needed = dynamic(&fat, "NEEDED");
    assert!(
        !needed.iter().any(|n| n.starts_with("libsockserv")),
        "{needed:?}"
    );
    run_consumer(&fat, None);
}

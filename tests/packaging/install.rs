//! `make install` into a temporary prefix, then programs built against the
//! installed files the ways a user would: pkg-config (dynamic),
//! pkg-config --static, `cc -static`, and CMake's find_package, also after
//! the whole prefix was moved. Each program runs an authenticated exchange
//! (tests/packaging/consumer/consumer.c).
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
/// Rust's std needs these from the system when linked statically (not
/// -lgcc_s: the compiler adds it when linking dynamically, and `cc -static`
/// has none).
const STATIC_LIBS: &str = "-lutil -lrt -lpthread -lm -ldl -lc";

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
    sh_pc(script, dir, &prefix.join("lib/pkgconfig"))
}

/// `sh` with the pkg-config directory named.
fn sh_pc(script: &str, dir: &Path, pc_dir: &Path) -> Output {
    let output = run(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("PKG_CONFIG_PATH", pc_dir),
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
        // Relocatable: no absolute path in it.
        "prefix=${pcfiledir}/../..".to_string(),
        "libdir=${prefix}/lib".into(),
        "includedir=${prefix}/include".into(),
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
    for text in [&pc, &config] {
        assert!(
            !text.contains(&prefix.display().to_string()),
            "an absolute path in an installed file:\n{text}"
        );
    }
    // The man pages (when doxygen is there), examples and licences.
    if have("doxygen") {
        let man3 = prefix.join("share/man/man3");
        let page = std::fs::read_to_string(man3.join("sockserv.h.3")).expect("sockserv.h.3");
        assert!(page.starts_with(".TH \"sockserv.h\" 3"), "{page:.200}");
        assert!(page.contains("sockserv_server_new"), "{page:.200}");
        let link = std::fs::read_to_string(man3.join("sockserv_connect.3")).unwrap();
        assert_eq!(link.trim(), ".so man3/sockserv.h.3");
        // One page per function of the header, at least.
        let pages = std::fs::read_dir(&man3).unwrap().count();
        assert!(pages > crate::abi::header_function_count(), "{pages} pages");
    } else {
        crate::skip::required(
            "make_install_lays_out_the_prefix_and_uninstall_removes_it (man pages)",
            "doxygen is not installed (apt-get install doxygen); CI must install it",
        );
    }
    let doc = prefix.join("share/doc/sockserv");
    for file in ["LICENSE-MIT", "LICENSE-APACHE", "examples/echo_server.c"] {
        assert!(doc.join(file).is_file(), "{file} not in share/doc/sockserv");
    }
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
    assert!(pc.contains("prefix=${pcfiledir}/../..\n"), "{pc}");
    assert!(!pc.contains(&stage.display().to_string()), "{pc}");
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
    // --define-prefix (pkgconf: the prefix is two levels above the .pc)
    // has a ${prefix} to override.
    let vars = sh(
        "pkg-config --define-prefix --variable=libdir sockserv",
        dir.path(),
        &prefix,
    );
    assert_eq!(
        Path::new(stdout(&vars).trim()).canonicalize().unwrap(),
        lib.canonicalize().unwrap()
    );
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
    cmake_build(&prefix, &build);
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

/// Configures and builds tests/packaging/consumer with find_package(sockserv)
/// looking in `prefix`.
fn cmake_build(prefix: &Path, build: &Path) {
    let configure = run(
        Command::new("cmake")
            .arg("-S")
            .arg(root().join("tests/packaging/consumer"))
            .arg("-B")
            .arg(build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())),
        LIMIT,
        "cmake (configure)",
    );
    assert_success(&configure, "cmake configure with find_package(sockserv)");
    let compile = run(
        Command::new("cmake").arg("--build").arg(build),
        LIMIT,
        "cmake --build",
    );
    assert_success(&compile, "cmake --build");
}

/// `cc -static`: sockserv, libc and all, no loader, no library at run time.
#[test]
fn cc_static_links_a_fully_static_consumer() {
    if !have("pkg-config") {
        return crate::skip::required(
            "cc_static_links_a_fully_static_consumer",
            "pkg-config is not installed (apt-get install pkgconf); CI must install it",
        );
    }
    let (dir, prefix) = installed("fullstatic");
    sh(
        &format!(
            "cc -static -std=c99 -Wall -Wextra -Werror {} \
             $(pkg-config --static --cflags --libs sockserv) -o consumer_full",
            consumer_source().display()
        ),
        dir.path(),
        &prefix,
    );
    let exe = dir.path().join("consumer_full");
    assert_eq!(dynamic(&exe, "NEEDED"), Vec::<String>::new());
    let headers = run(
        Command::new("readelf").arg("-l").arg(&exe),
        LIMIT,
        "readelf -l",
    );
    assert!(
        !stdout(&headers).contains("INTERP"),
        "a static program has no loader:\n{}",
        stdout(&headers)
    );
    // The installed libraries are gone: it cannot be using them.
    std::fs::remove_dir_all(&prefix).unwrap();
    run_consumer(&exe, None);
}

/// Install with a Debian-style multiarch libdir, move the whole prefix
/// somewhere else, and build and run consumers from the new place through
/// pkg-config and CMake: nothing in the installed files names the old one.
#[test]
fn a_moved_prefix_still_builds_and_runs_consumers() {
    if !have("pkg-config") || !have("cmake") {
        return crate::skip::required(
            "a_moved_prefix_still_builds_and_runs_consumers",
            "pkg-config or cmake is not installed (apt-get install pkgconf cmake); CI must \
             install them",
        );
    }
    let dir = TempDir::new("moved");
    let old = dir.path().join("old");
    let multiarch = "lib/x86_64-linux-gnu";
    make(
        "install",
        &[
            format!("PREFIX={}", old.display()),
            format!("libdir={}/{multiarch}", old.display()),
        ],
    );
    let new = dir.path().join("moved/somewhere/new");
    std::fs::create_dir_all(new.parent().unwrap()).unwrap();
    std::fs::rename(&old, &new).unwrap();
    let lib = new.join(multiarch);
    let pc_dir = lib.join("pkgconfig");

    // pkg-config's answers follow the file.
    let vars = sh_pc(
        "pkg-config --variable=libdir sockserv && pkg-config --variable=prefix sockserv",
        dir.path(),
        &pc_dir,
    );
    let vars = stdout(&vars);
    let mut lines = vars.lines().map(|l| Path::new(l).canonicalize().unwrap());
    assert_eq!(lines.next(), Some(lib.canonicalize().unwrap()), "{vars}");
    assert_eq!(lines.next(), Some(new.canonicalize().unwrap()), "{vars}");

    sh_pc(
        &format!(
            "cc -std=c99 -Wall -Werror {} $(pkg-config --cflags --libs sockserv) -o consumer",
            consumer_source().display()
        ),
        dir.path(),
        &pc_dir,
    );
    run_consumer(&dir.path().join("consumer"), Some(&lib));

    let build = dir.path().join("build");
    cmake_build(&new, &build);
    run_consumer(&build.join("consumer"), None);
    run_consumer(&build.join("consumer_static"), None);
    assert!(!old.exists());
}

/// The installed library's dynamic symbol table: every sockserv_* function
/// of the header is defined with the default version SOCKSERV_0 and nothing
/// else is exported, and a program linked against it records the version
/// it needs.
#[test]
fn installed_library_versions_every_export_as_sockserv_0() {
    let (dir, prefix) = installed("symver");
    let so = prefix.join(format!("lib/libsockserv.so.{VERSION}"));
    let output = run(
        Command::new("readelf").args(["--dyn-syms", "-W"]).arg(&so),
        LIMIT,
        "readelf --dyn-syms",
    );
    assert_success(&output, "readelf --dyn-syms");
    let table = stdout(&output);
    // Num: Value Size Type Bind Vis Ndx Name; the version node itself is an
    // absolute symbol named SOCKSERV_0.
    let defined: Vec<&str> = table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 8 && f[4] == "GLOBAL" && f[6] != "UND" && f[6] != "ABS").then(|| f[7])
        })
        .collect();
    assert!(table.contains(" ABS SOCKSERV_0\n"), "{table}");
    let functions = crate::abi::header_function_count();
    assert_eq!(defined.len(), functions, "{table}");
    for name in &defined {
        let (bare, version) = name.split_once("@@").unwrap_or((name, ""));
        assert!(
            bare.starts_with("sockserv_") && version == "SOCKSERV_0",
            "{name} is not a SOCKSERV_0 sockserv_ function:\n{table}"
        );
    }
    let versions = run(
        Command::new("readelf").arg("-V").arg(&so),
        LIMIT,
        "readelf -V",
    );
    assert!(
        stdout(&versions).contains("Name: SOCKSERV_0"),
        "{}",
        stdout(&versions)
    );

    if !have("pkg-config") {
        return crate::skip::required(
            "installed_library_versions_every_export_as_sockserv_0 (consumer)",
            "pkg-config is not installed (apt-get install pkgconf); CI must install it",
        );
    }
    sh(
        &format!(
            "cc -std=c99 {} $(pkg-config --cflags --libs sockserv) -o consumer",
            consumer_source().display()
        ),
        dir.path(),
        &prefix,
    );
    let exe = dir.path().join("consumer");
    let needs = run(
        Command::new("objdump").arg("-T").arg(&exe),
        LIMIT,
        "objdump -T",
    );
    let needs = stdout(&needs);
    let sockserv: Vec<&str> = needs.lines().filter(|l| l.contains(" sockserv_")).collect();
    assert!(
        !sockserv.is_empty() && sockserv.iter().all(|l| l.contains("(SOCKSERV_0)")),
        "{needs}"
    );
    run_consumer(&exe, Some(&prefix.join("lib")));
}

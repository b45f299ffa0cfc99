//! The Debian package, built the way a packager does: `dpkg-buildpackage
//! -us -uc -b` in a copy of the tree gives libsockserv0 (with shlibs, the
//! symbols file and the ldconfig trigger) and libsockserv-dev, lintian finds
//! no error in them, and a program builds through pkg-config against the
//! unpacked packages and runs. Then a second checkout elsewhere is built
//! and its libraries compared with this build's (reproducible.rs).
//! .ci/run installs the packages for real with
//! apt-get: with SOCKSERV_DEB_OUT=DIR this test leaves the .debs there, so
//! CI builds them once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::proc::{assert_success, have, root, run, show, stdout, TempDir};
use crate::reproducible::{assert_path_free, copy_tree, second_checkout_builds_the_same};

const LIMIT: Duration = Duration::from_secs(900);
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn tool(cmd: &mut Command, what: &str) -> Output {
    let output = run(cmd, LIMIT, what);
    assert_success(&output, what);
    output
}

fn multiarch() -> String {
    let out = tool(
        Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"),
        "dpkg-architecture",
    );
    stdout(&out).trim().to_string()
}

/// `dpkg-deb -c`: the paths a package holds.
fn contents(deb: &Path) -> Vec<String> {
    let out = tool(Command::new("dpkg-deb").arg("-c").arg(deb), "dpkg-deb -c");
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

fn deb(dir: &Path, package: &str) -> PathBuf {
    let arch = stdout(&tool(
        Command::new("dpkg-architecture").arg("-qDEB_HOST_ARCH"),
        "dpkg-architecture",
    ))
    .trim()
    .to_string();
    let path = dir.join(format!("{package}_{VERSION}-1_{arch}.deb"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

const TOOLS: [&str; 6] = [
    "dpkg-buildpackage",
    "lintian",
    "dh",
    "fakeroot",
    "git",
    "pkg-config",
];

fn missing_tool() -> Option<&'static str> {
    TOOLS
        .into_iter()
        .find(|program| !have(program) && !Path::new(&format!("/usr/bin/{program}")).exists())
}

pub fn have_debian_tools() -> bool {
    missing_tool().is_none()
}

#[test]
fn dpkg_buildpackage_builds_lintian_clean_packages_that_work() {
    if let Some(program) = missing_tool() {
        return crate::skip::required(
            "dpkg_buildpackage_builds_lintian_clean_packages_that_work",
            &format!(
                "{program} is not installed (apt-get install dpkg-dev debhelper lintian \
                 fakeroot pkgconf git); CI must install it"
            ),
        );
    }
    let dir = TempDir::new("debian");
    // dpkg-buildpackage writes the packages beside the source directory.
    let out = dir.path().join("build");
    let src = out.join(format!("sockserv-{VERSION}"));
    copy_tree(&src);
    let started = Instant::now();
    let mut build = Command::new("dpkg-buildpackage");
    build
        .args(["-us", "-uc", "-b"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", dir.path().join("target"));
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("CARGO_") && k != "CARGO_HOME")
        {
            build.env_remove(&key);
        }
    }
    build.env("CARGO_TARGET_DIR", dir.path().join("target"));
    let built = tool(&mut build, "dpkg-buildpackage -us -uc -b");
    let log = format!(
        "{}{}",
        stdout(&built),
        String::from_utf8_lossy(&built.stderr)
    );
    // dpkg-gensymbols: the symbols file matches the library exactly (a
    // missing symbol fails the build, a new one only warns).
    assert!(
        !log.contains("dpkg-gensymbols: warning"),
        "debian/libsockserv0.symbols is not the library's:\n{log}"
    );
    let build_time = started.elapsed();

    let lib = deb(&out, "libsockserv0");
    let dev = deb(&out, "libsockserv-dev");
    let ma = multiarch();
    let lib_files = contents(&lib);
    for file in [
        format!("/usr/lib/{ma}/libsockserv.so.{VERSION}"),
        format!("/usr/lib/{ma}/libsockserv.so.0"),
        "/usr/share/doc/libsockserv0/copyright".into(),
    ] {
        assert!(
            lib_files.contains(&file),
            "libsockserv0 lacks {file}: {lib_files:#?}"
        );
    }
    let dev_files = contents(&dev);
    for file in [
        "/usr/include/sockserv.h".to_string(),
        "/usr/include/sockserv.hpp".into(),
        format!("/usr/lib/{ma}/libsockserv.so"),
        format!("/usr/lib/{ma}/libsockserv.a"),
        format!("/usr/lib/{ma}/pkgconfig/sockserv.pc"),
        format!("/usr/lib/{ma}/cmake/sockserv/sockserv-config.cmake"),
        "/usr/share/man/man3/sockserv.h.3.gz".into(),
        "/usr/share/man/man3/sockserv_connect.3.gz".into(),
        "/usr/share/doc/libsockserv-dev/examples/echo_server.c".into(),
    ] {
        assert!(
            dev_files.contains(&file),
            "libsockserv-dev lacks {file}: {dev_files:#?}"
        );
    }
    // The control files dpkg needs for a library.
    let control = dir.path().join("control");
    tool(
        Command::new("dpkg-deb").arg("-e").arg(&lib).arg(&control),
        "dpkg-deb -e",
    );
    let shlibs = std::fs::read_to_string(control.join("shlibs")).expect("shlibs");
    assert!(shlibs.starts_with("libsockserv 0 libsockserv0"), "{shlibs}");
    let symbols = std::fs::read_to_string(control.join("symbols")).expect("symbols");
    assert!(
        symbols.contains(" sockserv_connect@SOCKSERV_0 0.1.0"),
        "{symbols}"
    );
    let triggers = std::fs::read_to_string(control.join("triggers")).expect("triggers");
    assert!(triggers.contains("ldconfig"), "{triggers}");

    // lintian: no error (warnings are listed for whoever reads the log).
    let started_lint = Instant::now();
    let changes = out.join(format!(
        "sockserv_{VERSION}-1_{}.changes",
        stdout(&tool(
            Command::new("dpkg-architecture").arg("-qDEB_HOST_ARCH"),
            "dpkg-architecture"
        ))
        .trim()
    ));
    let lint = run(
        Command::new("lintian")
            .arg("--fail-on")
            .arg("error")
            .arg(&changes),
        LIMIT,
        "lintian",
    );
    let tags = stdout(&lint);
    let errors: Vec<&str> = tags.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(
        lint.status.success() && errors.is_empty(),
        "lintian found errors:\n{}",
        show(&lint)
    );
    let lint_time = started_lint.elapsed();

    // The packages' library is path-free, and a program builds against the
    // unpacked packages through pkg-config and runs.
    let sysroot = dir.path().join("root");
    for package in [&lib, &dev] {
        tool(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(package)
                .arg(&sysroot),
            "dpkg-deb -x",
        );
    }
    let so = sysroot.join(format!("usr/lib/{ma}/libsockserv.so.{VERSION}"));
    assert_path_free(&std::fs::read(&so).unwrap(), "the packaged library", &src);
    let exe = dir.path().join("consumer");
    tool(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cc -std=c99 -Wall -Werror {} $(pkg-config --cflags --libs sockserv) -o {}",
                root().join("tests/packaging/consumer/consumer.c").display(),
                exe.display()
            ))
            .env(
                "PKG_CONFIG_PATH",
                sysroot.join(format!("usr/lib/{ma}/pkgconfig")),
            )
            .env("PKG_CONFIG_SYSROOT_DIR", &sysroot),
        "cc against the unpacked packages",
    );
    let ran = tool(
        Command::new(&exe).env("LD_LIBRARY_PATH", sysroot.join(format!("usr/lib/{ma}"))),
        "the consumer",
    );
    assert!(
        stdout(&ran).contains(&format!("consumer: sockserv {VERSION} echoed")),
        "{}",
        show(&ran)
    );

    if let Some(keep) = std::env::var_os("SOCKSERV_DEB_OUT") {
        std::fs::create_dir_all(&keep).unwrap();
        for package in [&lib, &dev] {
            std::fs::copy(package, Path::new(&keep).join(package.file_name().unwrap())).unwrap();
        }
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("debian: dpkg-buildpackage {build_time:?}, lintian {lint_time:?}\n").as_bytes(),
    );

    // The release build dpkg-buildpackage made is the first of the two the
    // reproducibility check compares.
    second_checkout_builds_the_same(&dir.path().join("target/release"), &src, dir.path());
}

/// debian/libsockserv0.symbols lists every function of the header (at the
/// SOCKSERV_0 version) and nothing else, so dpkg-gensymbols checks them all.
#[test]
fn the_symbols_file_lists_every_function_of_the_header() {
    let text = std::fs::read_to_string(root().join("debian/libsockserv0.symbols")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("libsockserv.so.0 libsockserv0 #MINVER#"));
    let mut listed = Vec::new();
    for line in lines.filter(|l| l.starts_with(' ')) {
        let (symbol, _version) = line.trim().split_once(' ').expect("SYMBOL VERSION");
        let (name, node) = symbol.split_once('@').expect("NAME@NODE");
        assert_eq!(node, "SOCKSERV_0", "{line}");
        if name != "SOCKSERV_0" {
            listed.push(name.to_string());
        }
    }
    let header = std::fs::read_to_string(root().join("include/sockserv.h")).unwrap();
    assert_eq!(listed.len(), crate::abi::header_function_count(), "{text}");
    for name in &listed {
        assert!(
            header.contains(&format!("{name}(")),
            "{name} is not in the header"
        );
    }
}

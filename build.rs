//! Gives the shared library its soname, `libsockserv.so.MAJOR`, so programs
//! linked against it record that name (not the unversioned dev symlink) and
//! keep working across compatible upgrades. MAJOR is the ABI version: the
//! header says incompatible ABI changes bump it, and tests/packaging/abi.rs
//! enforces that against a recorded baseline.
//!
//! Symbol versions (SOCKSERV_0, packaging/libsockserv.map) are not applied
//! here: rustc links every cdylib with an unversioned version script of its
//! own, which GNU ld refuses to combine with a named node ("anonymous
//! version tag cannot be combined") and rust-lld keeps ahead of one
//! ("attempt to reassign symbol of VER_NDX_GLOBAL"). `make install` links
//! the installed libsockserv.so from libsockserv.a with the script instead.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // ELF platforms only: other linkers spell this differently
    // (-install_name on macOS) and are not supported by `make install`.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if !matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    ) {
        return;
    }
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    let soname = format!("libsockserv.so.{major}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    link_soname_in_tree(&soname);
}

/// Programs built against the library in target/ (c_examples, the C tests,
/// the README's `cc ... -Ltarget/release -lsockserv`) record the soname and
/// look for that file when they run: give it to them as a symlink beside
/// libsockserv.so, in target/<profile>/ and its deps/ (where `cargo test`
/// leaves the library). OUT_DIR is target/<profile>/build/sockserv-HASH/out.
#[cfg(unix)]
fn link_soname_in_tree(soname: &str) {
    let out_dir = std::env::var("OUT_DIR").expect("set by cargo");
    let Some(profile_dir) = Path::new(&out_dir).ancestors().nth(3) else {
        return;
    };
    for dir in [profile_dir.to_path_buf(), profile_dir.join("deps")] {
        let link = dir.join(soname);
        if dir.is_dir() && std::fs::symlink_metadata(&link).is_err() {
            // Relative, so it points at the library beside it even before
            // this build has written it.
            let _ = std::os::unix::fs::symlink("libsockserv.so", &link);
        }
    }
}

#[cfg(not(unix))]
fn link_soname_in_tree(_soname: &str) {}

//! The header compiles as legacy code needs it: C89 and C++98 with
//! -pedantic -Werror (g++, and clang++ when installed), included twice.
//!
//! For that, cbindgen.toml writes the include guard, `extern "C"` and the
//! sockserv_result enum itself (cbindgen ends every enum with a comma, which
//! C89 and C++98 refuse). This also checks that enum is what cbindgen makes
//! of src/ffi, less the comma; after a change to the enum in src/ffi:
//!     SOCKSERV_BLESS=1 cargo test --test packaging header_std
//!     SOCKSERV_BLESS=1 cargo test --test header

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::proc::{have, root, run, show, TempDir};

const MARK: &str =
    "/* sockserv_result: cbindgen's from src/ffi less its last comma (tests/packaging/header_std.rs) */\n";
const END: &str = "} sockserv_result;";

/// The enum as cbindgen generates it from src/ffi, without the comma after
/// its last value.
fn generated_enum() -> String {
    let mut config =
        cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml");
    config.export.exclude.retain(|e| e != "sockserv_result");
    config.export.rename.remove("sockserv_result");
    config.after_includes = None;
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root())
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    let text = String::from_utf8(out).expect("UTF-8");
    let open = text
        .find("typedef enum sockserv_result {")
        .expect("sockserv_result in cbindgen's output");
    let start = text[..open].rfind("/**").expect("its documentation");
    let end = text[open..].find(END).expect("its end") + open + END.len();
    let block = &text[start..end];
    let comma = block.rfind(",\n}").expect("the trailing comma");
    format!("{}{}", &block[..comma], &block[comma + 1..])
}

#[test]
fn the_hand_written_enum_is_what_cbindgen_generates() {
    let path = root().join("cbindgen.toml");
    let toml = std::fs::read_to_string(&path).expect("cbindgen.toml");
    let start = toml
        .find(MARK)
        .expect("the sockserv_result mark in cbindgen.toml")
        + MARK.len();
    let end = toml[start..].find(END).expect("the enum's end") + start + END.len();
    let generated = generated_enum();
    if std::env::var_os("SOCKSERV_BLESS").is_some() {
        let updated = format!("{}{}{}", &toml[..start], generated, &toml[end..]);
        std::fs::write(&path, updated).expect("write cbindgen.toml");
        return;
    }
    assert!(
        toml[start..end] == generated,
        "cbindgen.toml's sockserv_result differs from src/ffi's: run `SOCKSERV_BLESS=1 cargo \
         test --test packaging header_std`, then `SOCKSERV_BLESS=1 cargo test --test header`\n\
         --- cbindgen.toml\n{}\n--- from src/ffi\n{generated}",
        &toml[start..end]
    );
    let header = std::fs::read_to_string(root().join("include/sockserv.h")).unwrap();
    assert!(
        header.contains(&generated),
        "include/sockserv.h lacks the enum: SOCKSERV_BLESS=1 cargo test --test header"
    );
}

/// Compiles a translation unit that includes `header_dir`'s sockserv.h
/// twice and uses it; returns whether it compiled, and the output.
fn compiles(compiler: &str, std: &str, header_dir: &Path, dir: &Path) -> (bool, String) {
    let cxx = std.contains("++");
    let source = dir.join(if cxx { "tu.cpp" } else { "tu.c" });
    std::fs::write(
        &source,
        "#include <sockserv.h>\n#include <sockserv.h>\n\
         static sockserv_result check(sockserv_result rc) { return rc; }\n\
         int main(void)\n{\n    sockserv_config *config = 0;\n    \
         sockserv_result rc = check(SOCKSERV_OK);\n    \
         if (sockserv_config_new(&config) == SOCKSERV_OK)\n        \
         sockserv_config_free(config);\n    return (int)rc;\n}\n",
    )
    .unwrap();
    let output = run(
        Command::new(compiler)
            .arg(std)
            .args(["-pedantic", "-Werror", "-Wall", "-Wextra", "-fsyntax-only"])
            .arg("-I")
            .arg(header_dir)
            .arg(&source),
        Duration::from_secs(120),
        compiler,
    );
    (output.status.success(), show(&output))
}

#[test]
fn header_compiles_as_c89_and_cxx98_with_pedantic_errors() {
    let dir = TempDir::new("header-std");
    let include = root().join("include");
    let mut compilers = vec![("cc", "-std=c89"), ("c++", "-std=c++98")];
    if have("clang++") {
        compilers.push(("clang++", "-std=c++98"));
    } else {
        crate::skip::required(
            "header_compiles_as_c89_and_cxx98_with_pedantic_errors (clang++)",
            "clang++ is not installed (apt-get install clang); CI must install it",
        );
    }
    for (compiler, std) in &compilers {
        let (ok, output) = compiles(compiler, std, &include, dir.path());
        assert!(
            ok,
            "{compiler} {std} -pedantic -Werror refuses the header:\n{output}"
        );
    }
    // And the check can fail: a trailing enum comma, or a // comment after
    // #endif, is refused.
    let header = std::fs::read_to_string(include.join("sockserv.h")).unwrap();
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for broken in [
        header.replacen(" = 22\n}", " = 22,\n}", 1),
        header.replacen("#endif  /* SOCKSERV_H */", "#endif  // SOCKSERV_H", 1),
    ] {
        assert_ne!(broken, header, "the edit did not apply");
        std::fs::write(bad.join("sockserv.h"), &broken).unwrap();
        let (ok, _) = compiles("cc", "-std=c89", &bad, dir.path());
        assert!(!ok, "cc -std=c89 accepted a broken header");
    }
}

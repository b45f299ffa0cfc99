//! The committed header must be exactly what cbindgen (pinned in
//! Cargo.toml) generates from src/ffi. SOCKSERV_BLESS=1 rewrites it.

use std::path::Path;

#[test]
fn committed_header_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = root.join("include/sockserv.h");
    if std::env::var_os("SOCKSERV_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/sockserv.h");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/sockserv.h is stale: run `SOCKSERV_BLESS=1 cargo test --test header` and commit it"
    );
}

#[test]
fn version_macros_match_cargo_toml() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sockserv.h"))
            .expect("header");
    for (name, value) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define SOCKSERV_VERSION_{name} {value}\n");
        assert!(header.contains(&line), "header lacks {line:?}");
    }
    // SAFETY: sockserv_version returns a static NUL-terminated string.
    let runtime = unsafe { std::ffi::CStr::from_ptr(sockserv::ffi::sockserv_version()) };
    assert_eq!(runtime.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

/// Every exported function that returns `sockserv_result` lists, in its
/// header comment, the codes it can return as `@retval` lines (Doxygen
/// shows them as a table): at least `SOCKSERV_OK` and `SOCKSERV_ERR_PANIC`
/// (every call runs inside the panic guard), `SOCKSERV_ERR_NULL_PARAMETER`
/// when it takes a pointer, and only codes that exist, each once.
#[test]
fn every_fallible_function_lists_its_codes() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sockserv.h"))
            .expect("header");
    let codes: Vec<&str> = header
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("SOCKSERV_").filter(|_| l.contains(" = ")))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        codes.contains(&"ERR_PANIC"),
        "no sockserv_result in {codes:?}"
    );
    let mut comment = String::new();
    let mut in_comment = false;
    let mut checked = 0;
    let mut problems = Vec::new();
    let lines: Vec<&str> = header.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t.starts_with("/**") {
            comment.clear();
            in_comment = true;
        }
        if in_comment {
            comment.push_str(t.trim_start_matches("/**").trim_start_matches('*'));
            comment.push('\n');
            in_comment = !t.ends_with("*/");
            continue;
        }
        let Some(rest) = t.strip_prefix("enum sockserv_result sockserv_") else {
            continue;
        };
        let name = format!("sockserv_{}", rest.split('(').next().unwrap());
        let mut declaration = String::new();
        for l in &lines[i..] {
            declaration.push_str(l);
            if l.contains(';') {
                break;
            }
        }
        checked += 1;
        let mut listed = Vec::new();
        for l in comment.lines().map(str::trim) {
            let Some(retval) = l.strip_prefix("@retval ") else {
                continue;
            };
            // "SOCKSERV_ERR_A, SOCKSERV_ERR_B what they mean"
            for word in retval.split_whitespace() {
                let Some(code) = word.trim_end_matches(',').strip_prefix("SOCKSERV_") else {
                    break;
                };
                if !codes.contains(&code) {
                    problems.push(format!("{name}: @retval names no code: {word}"));
                }
                if listed.contains(&code.to_string()) {
                    problems.push(format!("{name}: SOCKSERV_{code} listed twice"));
                }
                listed.push(code.to_string());
                if !word.ends_with(',') {
                    break;
                }
            }
        }
        let mut required = vec!["OK", "ERR_PANIC"];
        let params = declaration.split_once('(').unwrap().1;
        if params.contains('*') {
            required.push("ERR_NULL_PARAMETER");
        }
        for code in required {
            if !listed.iter().any(|l| l == code) {
                problems.push(format!(
                    "{name}: no `@retval SOCKSERV_{code}` in its comment"
                ));
            }
        }
        comment.clear();
    }
    assert!(
        checked > 70,
        "only {checked} functions returning sockserv_result found"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

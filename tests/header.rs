//! The committed header must be exactly what cbindgen (pinned in
//! Cargo.toml) generates from src/ffi, arranged by [`arrange`] so that each
//! constant and callback type sits next to the function that takes it.
//! SOCKSERV_BLESS=1 rewrites it.

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
    let generated = arrange(&String::from_utf8(generated).expect("UTF-8")).into_bytes();
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

/// cbindgen writes every constant first, then the types, then the
/// functions (in src/ffi's order, which is by object). This moves, without
/// changing any text:
/// - each family of constants to just before the function it is for: a
///   family starts with a constant whose comment opens with that
///   function's name in backquotes ("`sockserv_server_stat`: ...") and
///   takes the constants after it up to the next such one; constants
///   before the first family (the version, SOCKSERV_ADDRSTRLEN) stay on top;
/// - each callback typedef to just before the first function that takes it.
///
/// The opaque struct typedefs stay on top, so every later declaration can
/// name them. Items are the blank-line separated paragraphs of the output.
fn arrange(header: &str) -> String {
    let mut paragraphs: Vec<String> = header.split("\n\n").map(String::from).collect();
    let function_of = |p: &str| -> Option<String> {
        let code = p.rsplit("*/").next().unwrap_or(p);
        let (head, _) = code.split_once('(')?;
        let name = head.split_whitespace().last()?.trim_start_matches('*');
        (name.starts_with("sockserv_") && !code.contains("typedef") && !code.contains("#define"))
            .then(|| name.to_string())
    };
    let functions: Vec<String> = paragraphs.iter().filter_map(|p| function_of(p)).collect();
    let is_constant = |p: &str| {
        p.lines()
            .any(|l| l.starts_with("#define SOCKSERV_") && l.split_whitespace().count() > 2)
    };
    // The function a family head names, from its comment's first words.
    let head_of = |p: &str| -> Option<String> {
        let first = p
            .lines()
            .find(|l| l.trim_start().starts_with("* "))?
            .trim_start();
        let name = first.strip_prefix("* `")?.split('`').next()?;
        functions
            .iter()
            .any(|f| f == name)
            .then(|| name.to_string())
    };
    // (target function, paragraph), in their order.
    let mut moves: Vec<(String, String)> = Vec::new();
    let mut family: Option<String> = None;
    let mut kept = Vec::new();
    for p in paragraphs.drain(..) {
        if is_constant(&p) {
            if let Some(target) = head_of(&p) {
                family = Some(target);
            }
            if let Some(target) = &family {
                moves.push((target.clone(), p));
                continue;
            }
        } else if let Some(name) = p
            .contains("typedef")
            .then(|| p.split("(*").nth(1))
            .flatten()
            .and_then(|rest| rest.split(')').next())
        {
            let name = name.to_string();
            let user = kept_or_later_user(&functions, &name, header);
            if let Some(user) = user {
                moves.push((user, p));
                continue;
            }
        }
        kept.push(p);
    }
    let mut out = Vec::new();
    let mut banners = 0;
    let mut group = None;
    for p in kept {
        if let Some(f) = function_of(&p) {
            let title = group_of(&f);
            if group != Some(title) {
                out.push(format!("/* ---- {title} ---- */"));
                banners += 1;
                group = Some(title);
            }
            for (_, moved) in moves.iter().filter(|(t, _)| *t == f) {
                out.push(moved.clone());
            }
        }
        out.push(p);
    }
    assert_eq!(
        out.len() - banners,
        header.split("\n\n").count(),
        "arrange lost or doubled a paragraph"
    );
    assert_eq!(banners, GROUPS.len(), "each group once, in src/ffi's order");
    out.join("\n\n")
}

/// The header's groups, one per C object, in src/ffi's module order, and
/// the function names that belong to each (the first match wins).
const GROUPS: [(&str, &[&str]); 9] = [
    (
        "Results and errors",
        &[
            "sockserv_strerror",
            "sockserv_last_error",
            "sockserv_clear_error",
            "sockserv_version",
            "sockserv_set_refusal_log",
        ],
    ),
    ("Config: sockserv_config", &["sockserv_config_"]),
    ("Event callbacks", &["sockserv_server_set_event_handlers"]),
    (
        "Dialer: sockserv_dialer",
        &[
            "sockserv_server_set_dial_error_handler",
            "sockserv_server_dial",
            "sockserv_dialer_",
        ],
    ),
    ("Server: sockserv_server", &["sockserv_server_"]),
    (
        "Connection: sockserv_conn",
        &["sockserv_connect", "sockserv_conn_"],
    ),
    (
        "Datagram server: sockserv_dgram_server",
        &["sockserv_dgram_server_"],
    ),
    ("Datagram socket: sockserv_dgram", &["sockserv_dgram_"]),
    ("HMAC", &["sockserv_hmac_"]),
];

fn group_of(function: &str) -> &'static str {
    GROUPS
        .iter()
        .find(|(_, prefixes)| prefixes.iter().any(|p| function.starts_with(p)))
        .map(|(title, _)| *title)
        .unwrap_or_else(|| panic!("{function} belongs to no group of the header: add it to GROUPS"))
}

/// The first function (in header order) whose parameters name `callback`.
fn kept_or_later_user(functions: &[String], callback: &str, header: &str) -> Option<String> {
    functions
        .iter()
        .find(|f| {
            header.split("\n\n").any(|p| {
                let code = p.rsplit("*/").next().unwrap_or(p);
                !code.contains("typedef")
                    && code.contains(&format!(" {f}("))
                    && code.contains(callback)
            })
        })
        .cloned()
}

/// Every macro of the header is SOCKSERV_-prefixed (an unprefixed
/// `LISTEN_FDS_START` once leaked from the core): a `pub const` outside
/// src/ffi that cbindgen picks up fails here. (Functions are checked by
/// tests/packaging/abi.rs.)
#[test]
fn every_name_in_the_header_is_prefixed() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sockserv.h"))
            .expect("header");
    let mut unprefixed = Vec::new();
    for line in header.lines() {
        if let Some(define) = line.strip_prefix("#define ") {
            let name = define.split_whitespace().next().unwrap_or_default();
            if !name.starts_with("SOCKSERV_") {
                unprefixed.push(name.to_string());
            }
        }
    }
    assert!(
        header.contains("#define SOCKSERV_ADDRSTRLEN "),
        "the check reads the macros"
    );
    assert!(unprefixed.is_empty(), "unprefixed macros: {unprefixed:?}");
}

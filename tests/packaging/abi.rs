//! The ABI check: every function, callback type, opaque type, enum value
//! and macro of include/sockserv.h, with its C signature (parameter names
//! left out), is recorded in packaging/abi-baseline.txt. Removing or
//! changing one fails this test unless SOCKSERV_VERSION_MAJOR (the soname's
//! number, from Cargo.toml) went up; additions pass. The header is generated
//! from src/ffi and checked fresh by tests/header.rs, so it is the ABI's
//! whole description: there are no public structs whose layout could change.
//!
//! One exception, written down in the baseline itself: a macro may be
//! withdrawn without a major bump by a `withdrawn macro NAME: VALUE: why`
//! line. A macro has no symbol in the shared object, so binaries built
//! against it keep working; only sources that name it need the change the
//! line explains. Functions, callbacks, types and enum values cannot be
//! withdrawn this way.
//!
//! Record the baseline (after a major bump, or to take in additions):
//!     SOCKSERV_BLESS=1 cargo test --test packaging abi

use std::collections::BTreeMap;
use std::io::Write;

use crate::proc::root;

const BASELINE: &str = "packaging/abi-baseline.txt";

/// The ABI items of a header: "KIND NAME" -> signature, and its major version.
#[derive(Debug, PartialEq)]
struct Abi {
    major: u32,
    items: BTreeMap<String, String>,
    /// Baseline only: macros withdrawn under this major version, "macro
    /// NAME" -> "VALUE: why"; kept when the baseline is recorded anew.
    withdrawn: BTreeMap<String, String>,
}

fn parse_header(header: &str) -> Abi {
    let code = strip_comments(header);
    let mut major = None;
    let mut items = BTreeMap::new();
    let mut body = String::new();
    let mut in_cplusplus = false;
    for line in code.lines() {
        let line = line.trim();
        if line.starts_with("#ifdef __cplusplus") {
            in_cplusplus = true; // extern "C" { and its closing brace
        } else if in_cplusplus {
            in_cplusplus = !line.starts_with("#endif");
        } else if let Some(define) = line.strip_prefix("#define ") {
            let mut parts = define.split_whitespace();
            let name = parts.next().unwrap_or_default();
            let value: Vec<&str> = parts.collect();
            match name {
                "SOCKSERV_VERSION_MAJOR" => major = Some(value.join(" ").parse().expect("MAJOR")),
                // Releases change these without changing the ABI.
                "SOCKSERV_VERSION_MINOR" | "SOCKSERV_VERSION_PATCH" => {}
                _ if value.is_empty() => {} // the include guard
                _ => {
                    items.insert(format!("macro {name}"), value.join(" "));
                }
            }
        } else if !line.starts_with('#') {
            body.push_str(line);
            body.push(' ');
        }
    }
    for statement in body.split(';').map(squash).filter(|s| !s.is_empty()) {
        parse_statement(&statement, &mut items);
    }
    Abi {
        major: major.expect("SOCKSERV_VERSION_MAJOR in the header"),
        items,
        withdrawn: BTreeMap::new(),
    }
}

fn parse_statement(s: &str, items: &mut BTreeMap<String, String>) {
    if let Some(open) = s.find('{') {
        // typedef enum NAME { A = 0, B = 1, } NAME
        let name = s[..open].split_whitespace().last().expect("enum name");
        let close = s.rfind('}').expect("closing brace");
        for variant in s[open + 1..close].split(',').map(squash) {
            if let Some((v, value)) = variant.split_once('=') {
                items.insert(
                    format!("enum {}", v.trim()),
                    format!("{name} = {}", value.trim()),
                );
            } else {
                assert!(
                    variant.is_empty(),
                    "enum value without a number: {variant:?}"
                );
            }
        }
    } else if let Some(rest) = s.strip_prefix("typedef struct ") {
        let name = rest.split_whitespace().last().expect("type name");
        items.insert(format!("type {name}"), "opaque struct".into());
    } else if let Some(rest) = s.strip_prefix("typedef ") {
        // typedef RET (*NAME)(PARAMS)
        let (ret, rest) = rest.split_once("(*").expect("a function pointer typedef");
        let (name, params) = rest.split_once(")(").expect("callback parameters");
        let params = params.strip_suffix(')').expect("closing parenthesis");
        items.insert(
            format!("callback {}", name.trim()),
            format!("{} ({})", squash(ret), param_types(params)),
        );
    } else {
        // RET NAME(PARAMS)
        let (head, params) = s.split_once('(').expect("a function declaration");
        let params = params.strip_suffix(')').expect("closing parenthesis");
        let mut tokens = tokens(head);
        let name = tokens.pop().expect("function name");
        assert!(
            name.starts_with("sockserv_"),
            "unexpected declaration {s:?}"
        );
        items.insert(
            format!("function {name}"),
            format!("{} ({})", tokens.join(" "), param_types(params)),
        );
    }
}

/// "const uint8_t *key, size_t key_len" -> "const uint8_t *, size_t": the
/// names are not part of the ABI, so renaming one is no break.
fn param_types(params: &str) -> String {
    params
        .split(',')
        .map(|p| {
            let mut t = tokens(p);
            if t.len() > 1 && t.last().is_some_and(|l| l != "*") {
                t.pop();
            }
            t.join(" ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn tokens(s: &str) -> Vec<String> {
    s.replace('*', " * ")
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("unterminated comment");
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn render(abi: &Abi) -> String {
    let mut text = format!(
        "# The ABI of include/sockserv.h for SOCKSERV_VERSION_MAJOR {major} (soname \
         libsockserv.so.{major}).\n\
         # tests/packaging/abi.rs fails when an item here is removed or changed while the\n\
         # major version stays {major}; additions are fine. Regenerate:\n\
         #     SOCKSERV_BLESS=1 cargo test --test packaging abi\n\
         major {major}\n",
        major = abi.major
    );
    for (key, signature) in &abi.items {
        text.push_str(&format!("{key}: {signature}\n"));
    }
    for (key, why) in &abi.withdrawn {
        text.push_str(&format!("withdrawn {key}: {why}\n"));
    }
    text
}

fn parse_baseline(text: &str) -> Abi {
    let mut major = None;
    let mut items = BTreeMap::new();
    let mut withdrawn = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        if let Some(m) = line.strip_prefix("major ") {
            major = Some(m.parse().expect("major version"));
        } else if let Some(rest) = line.strip_prefix("withdrawn ") {
            let (key, why) = rest
                .split_once(": ")
                .expect("withdrawn KIND NAME: VALUE: why");
            assert!(
                key.starts_with("macro "),
                "only macros can be withdrawn without a major bump, not {key:?}"
            );
            withdrawn.insert(key.to_string(), why.to_string());
        } else {
            let (key, sig) = line.split_once(": ").expect("KIND NAME: SIGNATURE");
            items.insert(key.to_string(), sig.to_string());
        }
    }
    Abi {
        major: major.expect("a `major N` line"),
        items,
        withdrawn,
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    /// Nothing removed or changed; these were added.
    Compatible(Vec<String>),
    /// Removed or changed under the same major version.
    Broken(Vec<String>),
    /// The major version went up: the baseline must be recorded anew.
    NewMajor { from: u32, to: u32 },
}

fn compare(baseline: &Abi, current: &Abi) -> Verdict {
    if current.major != baseline.major {
        return Verdict::NewMajor {
            from: baseline.major,
            to: current.major,
        };
    }
    let mut broken = Vec::new();
    for (key, was) in &baseline.items {
        match current.items.get(key) {
            None if baseline.withdrawn.contains_key(key) => {}
            None => broken.push(format!("removed: {key}: {was}")),
            Some(now) if now != was => broken.push(format!("changed: {key}: {was}  ->  {now}")),
            Some(_) => {}
        }
    }
    if !broken.is_empty() {
        return Verdict::Broken(broken);
    }
    let added = current
        .items
        .iter()
        .filter(|(k, _)| !baseline.items.contains_key(*k))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    Verdict::Compatible(added)
}

/// How many functions include/sockserv.h declares.
pub fn header_function_count() -> usize {
    parse_header(&header())
        .items
        .keys()
        .filter(|k| k.starts_with("function "))
        .count()
}

fn header() -> String {
    std::fs::read_to_string(root().join("include/sockserv.h")).expect("include/sockserv.h")
}

#[test]
fn abi_matches_the_baseline() {
    let mut current = parse_header(&header());
    let path = root().join(BASELINE);
    let baseline_text = std::fs::read_to_string(&path).unwrap_or_default();
    let bless = std::env::var_os("SOCKSERV_BLESS").is_some();
    if baseline_text.is_empty() {
        assert!(
            bless,
            "{BASELINE} is missing: record it with SOCKSERV_BLESS=1"
        );
    } else {
        let baseline = parse_baseline(&baseline_text);
        if baseline.major == current.major {
            // Recording the baseline anew keeps what was withdrawn.
            current.withdrawn = baseline.withdrawn.clone();
        }
        match compare(&baseline, &current) {
            Verdict::Compatible(added) if added.is_empty() => {}
            Verdict::Compatible(added) => {
                if !bless {
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n*** NOTE abi_matches_the_baseline: {} addition(s) not yet in {BASELINE} \
                         (fine; record them with SOCKSERV_BLESS=1 so later changes to them are \
                         checked):\n    {}\n",
                        added.len(),
                        added.join("\n    ")
                    );
                }
            }
            Verdict::Broken(what) => panic!(
                "the ABI changed incompatibly while SOCKSERV_VERSION_MAJOR stayed {}:\n    {}\n\
                 Restore these, or bump the major version in Cargo.toml (which changes the \
                 soname), regenerate the header, then record a new baseline with \
                 SOCKSERV_BLESS=1 cargo test --test packaging abi",
                current.major,
                what.join("\n    ")
            ),
            Verdict::NewMajor { from, to } => assert!(
                bless,
                "SOCKSERV_VERSION_MAJOR went from {from} to {to}: record the new ABI with \
                 SOCKSERV_BLESS=1 cargo test --test packaging abi"
            ),
        }
    }
    if bless {
        std::fs::write(&path, render(&current)).expect("write the baseline");
    }
}

/// The check catches each kind of break, and lets additions, parameter
/// renames and a major bump through: it can fail.
#[test]
fn abi_check_catches_breaks_and_allows_additions() {
    let original = header();
    let base = parse_header(&original);
    assert!(base.items.len() > 80, "parsed only {:?}", base.items);
    assert_eq!(
        base.items["function sockserv_conn_send"],
        "enum sockserv_result (const struct sockserv_conn *, const uint8_t *, size_t)"
    );
    assert_eq!(
        base.items["callback sockserv_verify_fn"],
        "bool (void *, const char *)"
    );
    assert_eq!(
        base.items["enum SOCKSERV_ERR_WOULD_BLOCK"],
        "sockserv_result = 19"
    );
    assert_eq!(base.items["macro SOCKSERV_ADDRSTRLEN"], "128");
    assert_eq!(base.items["type sockserv_conn"], "opaque struct");
    // The baseline's own format reads back as what was written.
    assert_eq!(parse_baseline(&render(&base)), base);

    let edit = |from: &str, to: &str| {
        assert!(original.contains(from), "the header lacks {from:?}");
        parse_header(&original.replacen(from, to, 1))
    };
    let breaks = [
        // A function removed.
        edit("void sockserv_clear_error(void);", ""),
        // A parameter's type changed.
        edit("int backlog);", "long backlog);"),
        // A return type changed.
        edit("size_t sockserv_last_error(", "int sockserv_last_error("),
        // An enum value renumbered.
        edit(
            "SOCKSERV_ERR_WOULD_BLOCK = 19",
            "SOCKSERV_ERR_WOULD_BLOCK = 20",
        ),
        // A macro's value changed.
        edit(
            "#define SOCKSERV_ADDRSTRLEN 128",
            "#define SOCKSERV_ADDRSTRLEN 64",
        ),
        // A callback gained a parameter.
        edit(
            "(*sockserv_handler_fn)(void *userdata, struct sockserv_conn *conn);",
            "(*sockserv_handler_fn)(void *userdata, struct sockserv_conn *conn, int flags);",
        ),
    ];
    for (i, changed) in breaks.iter().enumerate() {
        assert!(
            matches!(compare(&base, changed), Verdict::Broken(ref w) if w.len() == 1),
            "break {i} not caught: {:?}",
            compare(&base, changed)
        );
    }

    // Additions and renamed parameters are compatible.
    let added = edit(
        "void sockserv_clear_error(void);",
        "void sockserv_clear_error(void);\nint sockserv_new_function(int x);",
    );
    assert_eq!(
        compare(&base, &added),
        Verdict::Compatible(vec!["function sockserv_new_function: int (int)".into()])
    );
    let renamed = edit("int backlog);", "int queue_length);");
    assert_eq!(compare(&base, &renamed), Verdict::Compatible(vec![]));

    // A macro can be withdrawn by a line in the baseline, and that line
    // survives a new recording; nothing else can be.
    let without_macro = edit("#define SOCKSERV_ADDRSTRLEN 128", "");
    assert!(matches!(compare(&base, &without_macro), Verdict::Broken(_)));
    let withdrawing = format!(
        "{}withdrawn macro SOCKSERV_ADDRSTRLEN: 128: a test\n",
        render(&base)
    );
    let withdrawing = parse_baseline(&withdrawing);
    assert_eq!(
        compare(&withdrawing, &without_macro),
        Verdict::Compatible(vec![])
    );
    assert!(render(&withdrawing).contains("withdrawn macro SOCKSERV_ADDRSTRLEN: 128: a test\n"));
    let function = format!(
        "{}withdrawn function sockserv_clear_error: void (void): a test\n",
        render(&base)
    );
    assert!(std::panic::catch_unwind(|| parse_baseline(&function)).is_err());

    // A break with the major version bumped asks for a new baseline.
    let major = |m: u32| format!("#define SOCKSERV_VERSION_MAJOR {m}\n");
    let bumped = parse_header(
        &original
            .replacen(&major(base.major), &major(base.major + 1), 1)
            .replacen("void sockserv_clear_error(void);", "", 1),
    );
    assert_eq!(
        compare(&base, &bumped),
        Verdict::NewMajor {
            from: base.major,
            to: base.major + 1
        }
    );
}

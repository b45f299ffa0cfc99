//! The layers of `src/` (documented in src/lib.rs) in the order they may
//! use each other: a module imports only modules of its own layer or of one
//! before it, and no two modules import each other, directly or around a
//! loop. This reads every `crate::` and top-level `super::` path in every
//! source file (comments and strings aside) and fails on a step backwards
//! or a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The documented order, first to last. A module belongs to the longest
/// prefix that names it; `server` (the accept loop) comes after its drivers.
const ORDER: &[&str] = &[
    "error",
    "addr",
    "sys",
    "util",
    "proto",
    "config",
    "stream",
    "server::driver",
    // Threaded mode runs its preambles on event mode's engine.
    "server::event",
    "server::threaded",
    "server",
    "datagram",
    "ffi",
];

fn layer_of(module: &str) -> Option<usize> {
    ORDER
        .iter()
        .enumerate()
        .filter(|(_, layer)| module == **layer || module.starts_with(&format!("{layer}::")))
        .max_by_key(|(_, layer)| layer.len())
        .map(|(i, _)| i)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` -> `a::b`, `src/a/mod.rs` -> `a`, `src/lib.rs` -> ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a line: no `//` comment, no string literal contents.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        if c == '"' {
            in_str = true;
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            break;
        }
        out.push(c);
    }
    out
}

/// Module paths named after `crate::` (or `super::` resolved) in `code`,
/// with groups like `crate::{a, b::c}` expanded one level.
fn paths_after(code: &str, prefix: &str, base: &str, out: &mut Vec<String>) {
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                if !item.is_empty() && item != "self" {
                    out.push(join(base, &segments(item)));
                }
            }
        } else {
            out.push(join(base, &segments(rest)));
        }
    }
}

fn segments(path: &str) -> String {
    path.split("::")
        .take_while(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect::<Vec<_>>()
        .join("::")
}

fn join(base: &str, path: &str) -> String {
    match (base.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => base.to_string(),
        _ => format!("{base}::{path}"),
    }
}

/// Every module of the crate and the module paths each file names.
fn crate_graph() -> (BTreeSet<String>, BTreeMap<String, Vec<String>>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut uses = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        let text = std::fs::read_to_string(file).expect("read a source file");
        let mut named = Vec::new();
        for line in text.lines() {
            let code = code_of(line);
            paths_after(&code, "crate::", "", &mut named);
            // `super::` at the top level of a file is its parent module;
            // indented, it is the file itself (inside `mod tests`).
            if !line.starts_with(char::is_whitespace) {
                paths_after(&code, "super::", &parent, &mut named);
            }
        }
        uses.insert(module, named);
    }
    (modules, uses)
}

/// The module file a path lands in: its longest prefix that is a module.
fn resolve(modules: &BTreeSet<String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|p| modules.contains(p))
}

#[test]
fn every_module_belongs_to_a_documented_layer() {
    let (modules, _) = crate_graph();
    let lost: Vec<&String> = modules
        .iter()
        .filter(|m| !m.is_empty() && layer_of(m).is_none())
        .collect();
    assert!(lost.is_empty(), "modules in no layer of ORDER: {lost:?}");
}

#[test]
fn no_module_imports_a_later_layer() {
    let (modules, uses) = crate_graph();
    let mut wrong = Vec::new();
    for (module, named) in &uses {
        // The crate root re-exports from everywhere.
        let Some(own) = layer_of(module) else {
            continue;
        };
        for path in named {
            let Some(target) = resolve(&modules, path) else {
                continue;
            };
            if let Some(theirs) = layer_of(&target) {
                if theirs > own {
                    wrong.push(format!(
                        "{module} ({}) uses {path} ({})",
                        ORDER[own], ORDER[theirs]
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order {ORDER:?}:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycles_between_modules() {
    let (modules, uses) = crate_graph();
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (module, named) in &uses {
        if module.is_empty() {
            continue;
        }
        let targets = edges.entry(module.as_str()).or_default();
        for path in named {
            if let Some(target) = resolve(&modules, path) {
                if &target != module && !target.is_empty() {
                    targets.insert(target);
                }
            }
        }
    }
    // Depth-first search; a back edge is a cycle.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node, 1);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|m| *m == next).unwrap();
                    cycles.push(format!("{} -> {next}", stack[from..].join(" -> ")));
                }
                Some(_) => {}
                None => visit(next, edges, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(node, 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for node in edges.keys() {
        if !state.contains_key(node) {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The checks above must see what they check: a known import is found, and
/// a made-up backwards one would be refused.
#[test]
fn the_reader_finds_imports() {
    let (modules, uses) = crate_graph();
    let named = &uses["stream::connection"];
    assert!(named.iter().any(|p| p.starts_with("proto::")), "{named:?}");
    let target = resolve(&modules, "server::accept::Server").unwrap();
    assert!(layer_of(&target).unwrap() > layer_of("stream::connection").unwrap());
    let mut found = Vec::new();
    paths_after(
        &code_of("use crate::{sys, proto::frame}; // crate::ffi"),
        "crate::",
        "",
        &mut found,
    );
    assert_eq!(found, ["sys", "proto::frame"]);
}

/// README's "Layout" section names every file under src/ (a folder stands
/// for its mod.rs), and no other.
#[test]
fn readme_layout_matches_the_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README has a Layout section");
    let section = section.split("\n## ").next().unwrap();
    let mut listed = BTreeSet::new();
    let mut dirs: Vec<String> = Vec::new();
    for line in section.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if indent < 4 || indent % 4 != 0 {
            continue;
        }
        let level = indent / 4 - 1;
        let path = if level == 0 {
            if !name.starts_with("src/") {
                continue;
            }
            name.to_string()
        } else {
            let Some(parent) = dirs.get(level - 1) else {
                continue;
            };
            format!("{parent}{name}")
        };
        if path.ends_with('/') {
            // A folder's line describes its mod.rs.
            listed.insert(format!("{path}mod.rs"));
            dirs.truncate(level);
            dirs.push(path);
        } else {
            listed.insert(path);
        }
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let actual: BTreeSet<String> = files
        .iter()
        .map(|f| f.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<_> = actual.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&actual).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's Layout and src/ differ: not listed {missing:?}, listed but absent {extra:?}"
    );
}

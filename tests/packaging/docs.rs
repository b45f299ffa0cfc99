//! The docs: `make -C docs` (Doxygen over the headers and docs/*.md) builds
//! without a warning, and every relative link in the Markdown resolves.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::proc::{assert_success, have, root, run, show, TempDir};

#[test]
fn doxygen_builds_the_reference_without_warnings() {
    if !have("doxygen") {
        return crate::skip::required(
            "doxygen_builds_the_reference_without_warnings",
            "doxygen is not installed (apt-get install doxygen); CI must install it",
        );
    }
    let out = TempDir::new("doxygen");
    let output = run(
        Command::new("make")
            .arg("-C")
            .arg(root().join("docs"))
            .arg(format!("OUT={}", out.path().display())),
        Duration::from_secs(180),
        "make -C docs",
    );
    assert_success(&output, "make -C docs");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !err.contains("warning"),
        "doxygen warned:\n{}",
        show(&output)
    );
    let html = out.path().join("html");
    assert!(html.join("index.html").is_file(), "no index.html");
    // Every function of the C header has its entry.
    let header_page =
        std::fs::read_to_string(html.join("sockserv_8h.html")).expect("sockserv_8h.html");
    for f in [
        "sockserv_connect",
        "sockserv_server_set_event_handlers",
        "sockserv_last_error",
    ] {
        assert!(header_page.contains(f), "{f} is not in the reference");
    }
}

/// Links like [text](docs/server.md) or (../include/sockserv.h) point at
/// files that exist.
#[test]
fn markdown_links_resolve() {
    let mut files = vec![
        root().join("README.md"),
        root().join("bindings/python/README.md"),
    ];
    for entry in std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "md") {
            files.push(entry.path());
        }
    }
    assert!(files.len() >= 7, "{files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read markdown");
        // Prose only: code blocks hold things like C++'s `[](...)`.
        let mut in_code = false;
        let prose: String = text
            .lines()
            .filter(|l| {
                if l.trim_start().starts_with("```") {
                    in_code = !in_code;
                    return false;
                }
                !in_code
            })
            .collect::<Vec<_>>()
            .join("\n");
        let dir = file.parent().unwrap();
        for target in prose
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() || path.contains("://") {
                continue;
            }
            if !Path::new(dir).join(path).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

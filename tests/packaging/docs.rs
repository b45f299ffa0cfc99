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

/// The HAProxy snippets docs/tls.md shows are sections of
/// docs/haproxy-tls.cfg, word for word, so the file the TLS deployment
/// tests run is the one the guide explains.
#[test]
fn tls_guide_haproxy_snippets_are_the_config_file() {
    let guide = std::fs::read_to_string(root().join("docs/tls.md")).expect("docs/tls.md");
    let cfg = std::fs::read_to_string(root().join("docs/haproxy-tls.cfg")).expect("cfg");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in guide.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(String::new()),
            }
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    let haproxy: Vec<&String> = blocks
        .iter()
        .filter(|b| b.starts_with("frontend "))
        .collect();
    assert_eq!(haproxy.len(), 2, "passthrough and terminated: {blocks:#?}");
    for block in haproxy {
        assert!(
            cfg.contains(block.as_str()),
            "docs/tls.md shows a section docs/haproxy-tls.cfg lacks:\n{block}"
        );
    }
    for needed in ["send-proxy-v2", "ssl crt ", "mode tcp"] {
        assert!(cfg.contains(needed), "haproxy-tls.cfg lacks {needed:?}");
    }
}

/// `haproxy -c` accepts docs/haproxy-tls.cfg with a real certificate file
/// (made by c_examples/make-certs.sh) in place of its path.
#[test]
fn tls_haproxy_config_is_valid() {
    // Neither has --version, which `have` runs.
    let works = |tool: &str, arg: &str| {
        Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for (tool, found) in [
        ("haproxy", works("haproxy", "-v")),
        ("openssl", works("openssl", "version")),
    ] {
        if !found {
            return crate::skip::required(
                "tls_haproxy_config_is_valid",
                &format!("{tool} is not installed (apt-get install {tool}); CI must install it"),
            );
        }
    }
    let dir = TempDir::new("haproxy-tls-cfg");
    let output = run(
        Command::new("sh")
            .arg(root().join("c_examples/make-certs.sh"))
            .arg(dir.path()),
        Duration::from_secs(60),
        "make-certs.sh",
    );
    assert_success(&output, "make-certs.sh");
    let pem = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect(name);
    let combined = dir.path().join("haproxy.pem");
    std::fs::write(&combined, pem("server.pem") + &pem("server.key")).unwrap();
    let cfg = std::fs::read_to_string(root().join("docs/haproxy-tls.cfg")).expect("cfg");
    assert!(cfg.contains("/etc/haproxy/sockserv.pem"), "{cfg}");
    let cfg = cfg.replace("/etc/haproxy/sockserv.pem", &combined.display().to_string());
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, &cfg).unwrap();
    let output = run(
        Command::new("haproxy").arg("-c").arg("-f").arg(&path),
        Duration::from_secs(30),
        "haproxy -c",
    );
    assert_success(&output, "haproxy -c -f docs/haproxy-tls.cfg");
    // And the check is a check: a certificate path that does not exist fails.
    std::fs::write(
        &path,
        cfg.replace(&combined.display().to_string(), "/nonexistent.pem"),
    )
    .unwrap();
    let output = run(
        Command::new("haproxy").arg("-c").arg("-f").arg(&path),
        Duration::from_secs(30),
        "haproxy -c (missing certificate)",
    );
    assert!(!output.status.success(), "{}", show(&output));
}

/// The openssl commands docs/tls.md gives under "Making certificates" run
/// as written (OpenSSL 3.0+) and make a chain `openssl verify` accepts,
/// with the server's subjectAltName the guide promises.
#[test]
fn tls_guide_certificate_commands_work() {
    let openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !openssl {
        return crate::skip::required(
            "tls_guide_certificate_commands_work",
            "openssl is not installed (apt-get install openssl); CI must install it",
        );
    }
    let guide = std::fs::read_to_string(root().join("docs/tls.md")).expect("docs/tls.md");
    let start = guide.find("## Making certificates").expect("the section");
    let end = start + guide[start..].find("\n## ").expect("its end");
    // The indented blocks are the commands, in order.
    let script: Vec<&str> = guide[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .collect();
    assert!(script.len() >= 15, "{script:#?}");
    let dir = TempDir::new("tls-guide-certs");
    let output = run(
        Command::new("sh")
            .arg("-ec")
            .arg(script.join("\n"))
            .current_dir(dir.path()),
        Duration::from_secs(60),
        "the certificate commands of docs/tls.md",
    );
    assert_success(&output, "docs/tls.md's openssl commands");
    let output = run(
        Command::new("openssl")
            .args(["verify", "-CAfile", "ca.pem", "server.pem", "client.pem"])
            .current_dir(dir.path()),
        Duration::from_secs(30),
        "openssl verify",
    );
    assert_success(&output, "openssl verify");
    let output = run(
        Command::new("openssl")
            .args([
                "x509",
                "-in",
                "server.pem",
                "-noout",
                "-ext",
                "subjectAltName",
            ])
            .current_dir(dir.path()),
        Duration::from_secs(30),
        "openssl x509 -ext",
    );
    let san = crate::proc::stdout(&output);
    assert!(
        san.contains("DNS:localhost") && san.contains("IP Address:127.0.0.1"),
        "{san}"
    );
}

//! The C API from C: api_test.c, the header as C++11, the exported
//! symbols against the header, and the README's C program.

use super::*;

#[test]
fn c_api_test_program_passes() {
    let dir = TempDir::new("api");
    let output = run(
        Command::new(&built().api_test).arg(&dir.0),
        RUN_LIMIT,
        "api_test",
    );
    assert_success(&output, "api_test");
    let out = stdout(&output);
    let last = out.lines().last().unwrap_or("");
    // Guard against a run that silently checked little.
    let count: usize = last
        .strip_prefix("api_test: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", show(&output)));
    assert!(count > 800, "only {count} checks ran:\n{}", show(&output));
    assert!(last.ends_with(", 0 failed"), "{last}");
}

/// tests/c/handles.c: retained connection handles used after the
/// connection ended get `SOCKSERV_ERR_CLOSED` (issue 10, finding 7), and
/// 8 threads sending to connections that close at random.
#[test]
fn retained_handles_program_passes() {
    let output = run(&mut Command::new(&built().handles), RUN_LIMIT, "handles");
    assert_success(&output, "handles");
    let out = stdout(&output);
    let last = out.lines().last().unwrap_or("");
    let count: usize = last
        .strip_prefix("handles: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", show(&output)));
    assert!(count > 30, "only {count} checks ran:\n{}", show(&output));
    assert!(last.ends_with(", 0 failed"), "{last}");
    eprintln!("{out}");
}

#[test]
fn header_compiles_and_links_as_cxx11() {
    let output = run(
        &mut Command::new(&built().header_cxx),
        RUN_LIMIT,
        "header_cxx",
    );
    assert_success(&output, "header_cxx");
    assert!(stdout(&output).starts_with("header_cxx: ok"));
}

#[test]
fn library_exports_exactly_the_header_functions() {
    let lib = built().lib_dir.join("libsockserv.so");
    let output = run(
        Command::new("nm").args(["-D", "--defined-only"]).arg(&lib),
        RUN_LIMIT,
        "nm (binutils)",
    );
    assert_success(&output, "nm -D");
    // Lines are "ADDRESS TYPE NAME"; --defined-only leaves out the symbols
    // the library imports (glibc's, versioned like memcpy@GLIBC_2.14).
    let mut exported: Vec<String> = stdout(&output)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect();
    exported.sort();
    exported.dedup();
    let strays: Vec<&String> = exported
        .iter()
        .filter(|n| !n.starts_with("sockserv_"))
        .collect();
    assert!(strays.is_empty(), "exported without the prefix: {strays:?}");

    let mut declared = header_functions();
    declared.sort();
    assert_eq!(exported, declared, "exports and header declarations differ");
}

/// api_test.c calls every function of the header (with NULLs, at least), so
/// a function added to the API without a C test shows up here.
#[test]
fn c_tests_call_every_header_function() {
    // The C test programs together: api_test.c, and datagram_test.c for
    // the datagram functions.
    let sources: String = ["api_test.c", "datagram_test.c"]
        .iter()
        .map(|name| std::fs::read_to_string(root().join("tests/c").join(name)).expect(name))
        .collect();
    let missing: Vec<String> = header_functions()
        .into_iter()
        .filter(|name| !sources.contains(&format!("{name}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "no C test program calls {missing:?}: add their NULL and error checks"
    );
}

/// Names of the functions declared in include/sockserv.h.
fn header_functions() -> Vec<String> {
    let header = std::fs::read_to_string(root().join("include/sockserv.h")).expect("header");
    let mut names = Vec::new();
    for line in header.lines() {
        let code = line.trim_start();
        if code.starts_with("/*") || code.starts_with('*') || code.starts_with("//") {
            continue;
        }
        if code.starts_with("typedef") || code.starts_with('#') {
            continue;
        }
        // The identifier just before the first "(".
        if let Some(paren) = code.find('(') {
            let name = code[..paren]
                .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("");
            if name.starts_with("sockserv_") {
                names.push(name.to_string());
            }
        }
    }
    assert!(names.len() > 40, "found only {names:?} in the header");
    names
}

/// The complete C program in the README compiles with -Werror against the
/// header and does what the README says.
#[test]
fn readme_c_program_compiles_and_runs() {
    let program = common::proc::readme_c_program();
    let dir = TempDir::new("readme");
    let source = dir.0.join("readme_program.c");
    std::fs::write(&source, program).expect("write the README program");
    let exe = compile(Lang::C, &built().lib_dir, &source, &dir.0);
    let output = run(&mut Command::new(exe), RUN_LIMIT, "readme_program");
    assert_success(&output, "the README's C program");
    assert!(
        stdout(&output).contains("echoed hello"),
        "{}",
        show(&output)
    );
}

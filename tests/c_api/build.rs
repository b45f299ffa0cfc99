//! The C programs and the examples, compiled once per test run against the
//! library under test.

use super::*;

/// Everything compiled once per test run (tests share it).
pub(crate) struct Built {
    pub(crate) lib_dir: PathBuf,
    pub(crate) api_test: PathBuf,
    pub(crate) header_cxx: PathBuf,
    pub(crate) leak_control: PathBuf,
    pub(crate) handles: PathBuf,
    pub(crate) examples: PathBuf,
}

pub(crate) fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let lib_dir = lib_dir();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
        std::fs::create_dir_all(&out).expect("create target/tmp/c-tests");
        let c = |name: &str| compile(Lang::C, &lib_dir, &root().join("tests/c").join(name), &out);
        let api_test = c("api_test.c");
        let leak_control = c("leak_control.c");
        let handles = c("handles.c");
        let header_cxx = compile(
            Lang::Cxx11,
            &lib_dir,
            &root().join("tests/c/header_cxx.cpp"),
            &out,
        );
        // The examples are built by their own Makefile, against this library.
        let examples = out.join("examples");
        let make = run(
            make_examples(&lib_dir, &examples).arg("all"),
            RUN_LIMIT,
            "make -C c_examples all",
        );
        assert_success(&make, "building c_examples with make");
        Built {
            lib_dir,
            api_test,
            header_cxx,
            leak_control,
            handles,
            examples,
        }
    })
}

#[derive(Clone, Copy)]
pub(crate) enum Lang {
    C,
    Cxx11,
}

/// Compiles one source file into `out`, with every warning an error.
pub(crate) fn compile(lang: Lang, lib_dir: &Path, source: &Path, out: &Path) -> PathBuf {
    compile_with(lang, lib_dir, source, out, &[], "")
}

/// The same with `extra` flags (sanitizers), into a file named with `suffix`.
pub(crate) fn compile_with(
    lang: Lang,
    lib_dir: &Path,
    source: &Path,
    out: &Path,
    extra: &[&str],
    suffix: &str,
) -> PathBuf {
    let stem = source.file_stem().expect("file name").to_string_lossy();
    let exe = out.join(format!("{stem}{suffix}"));
    let (compiler, flags): (String, &[&str]) = match lang {
        Lang::C => (
            std::env::var("CC").unwrap_or_else(|_| "cc".into()),
            &["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror"],
        ),
        Lang::Cxx11 => (
            std::env::var("CXX").unwrap_or_else(|_| "c++".into()),
            &["-std=c++11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"],
        ),
    };
    let mut cmd = Command::new(&compiler);
    cmd.args(flags)
        .args(["-g", "-O0", "-I"])
        .arg(root().join("include"))
        .arg(source)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib_dir)
        // The rpath lets the program find this very library when run.
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-lsockserv", "-pthread"])
        .args(extra);
    let output = run(&mut cmd, RUN_LIMIT, &compiler);
    assert_success(&output, &format!("compiling {}", source.display()));
    exe
}

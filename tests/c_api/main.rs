//! The C side: C programs compiled against the committed header and the
//! library this `cargo test` just built, run as real processes.
//!
//! - `tests/c/api_test.c` checks the whole C API from C (also under valgrind);
//!   `tests/c/header_cxx.cpp` compiles the header as C++11.
//! - The examples in `c_examples/` (built with their own Makefile) talk to
//!   each other: the right key, a wrong key, SIGTERM and SIGINT.
//! - The shared library exports exactly the functions the header declares.
//! - The same programs, `tests/c/datagram_test.c` and
//!   `tests/c/concurrency.c` (threads sharing connections, shutdown racing
//!   with connects), built with ASan + UBSan and TSan; controls show each
//!   sanitizer catches a deliberate bug.
//!
//! Where the library comes from: `cargo test` builds the lib target with all
//! its crate types in one rustc run, so `libsockserv.so` sits beside the
//! rlib this test links, in `target/<profile>/deps/` (it is not copied up to
//! `target/<profile>/` by `cargo test`, only by `cargo build`). Programs are
//! compiled into `target/tmp/c-tests/`, never into the source tree.
//!
//! Modules by concern: `build` (compiling the programs once), `children`
//! (the example programs as child processes), `api` (api_test.c, the
//! header, the exported symbols, the README's program), `examples` (the
//! example programs talking to each other), `memcheck` (valgrind),
//! `deployment` (inherited sockets, SO_REUSEPORT, HAProxy), `datagram`
//! (datagram_test.c), `dial` (dial_test.c: outgoing connections and the
//! non-blocking client), `sanitizers` (ASan + UBSan and TSan), `embedded`
//! (embedded mode from poll and epoll loops: tests/c/embed_*.c).

#[path = "../common/mod.rs"]
mod common;

mod api;
mod build;
mod children;
mod datagram;
mod deployment;
mod dial;
mod embedded;
mod examples;
mod memcheck;
mod sanitizers;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use build::{built, compile, compile_with, Lang};
use children::{client, client_in, EchoServer};
use common::proc::{
    assert_success, drain, lib_dir, make_examples, read_lines, root, show, stderr, stdout,
    ChildGuard, Drain, TempDir, PIPE_LIMIT,
};
use common::skip;
use datagram::{assert_datagram_summary, datagram_test};

const KEY: &str = "c-api-test-key";
/// How long a program may run natively, and under valgrind.
const RUN_LIMIT: Duration = Duration::from_secs(120);
const VALGRIND_LIMIT: Duration = Duration::from_secs(300);

use common::proc::{run, without_cargo_library_path};

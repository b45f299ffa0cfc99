//! Packaging and the other-language front ends, checked the way a user
//! meets them: the ABI baseline (abi), `make install` and programs built
//! against the install with pkg-config and CMake (install), the C++17
//! wrapper (cxx), the Python binding's pytest suite (python), the Go cgo
//! package's `go test` (go), the docs (docs), the C header under C89 and
//! C++98 (header_std), the Debian package (debian) and two checkouts
//! building identical libraries (reproducible). A missing tool is a skip
//! through tests/common/skip.rs (a failure in CI).

#[path = "../common/mod.rs"]
mod common;
use common::{proc, skip};

mod abi;
mod cxx;
mod debian;
mod docs;
mod go;
mod header_std;
mod install;
mod python;
mod reproducible;

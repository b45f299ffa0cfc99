//! Packaging and the other-language front ends, checked the way a user
//! meets them: the ABI baseline (abi), `make install` and programs built
//! against the install with pkg-config and CMake (install), the C++17
//! wrapper (cxx), the Python binding's pytest suite (python), and the docs
//! (docs). A missing tool is a skip through tests/common/skip.rs (a failure in CI).

#[path = "../common/mod.rs"]
mod common;
use common::{proc, skip};

mod abi;
mod cxx;
mod docs;
mod install;
mod python;

//! Packaging and the other-language front ends, checked the way a user
//! meets them: the ABI baseline (abi), `make install` and programs built
//! against the install with pkg-config and CMake (install), the C++17
//! wrapper (cxx), the Python binding's pytest suite (python), the Go cgo
//! package's `go test` (go), and the docs (docs). A missing optional tool
//! prints a loud SKIPPED line.

mod abi;
mod cxx;
mod docs;
mod go;
mod install;
mod proc;
mod python;

//! Packaging and the other-language front ends, checked the way a user
//! meets them: the ABI baseline (abi), `make install` and programs built
//! against the install with pkg-config and CMake (install), the C++17
//! wrapper (cxx), the Python binding's pytest suite (python), the Go cgo
//! package's `go test` (go), the docs (docs), the C header under C89 and
//! C++98 (header_std), the Debian package (debian) and two checkouts
//! building identical libraries (reproducible). A missing optional tool
//! prints a loud SKIPPED line.

mod abi;
mod cxx;
mod debian;
mod docs;
mod go;
mod header_std;
mod install;
mod proc;
mod python;
mod reproducible;

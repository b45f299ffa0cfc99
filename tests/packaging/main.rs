//! Packaging and the other-language front ends, checked the way a user
//! meets them: the C++17 wrapper (cxx). A missing optional tool prints a
//! loud SKIPPED line.

mod cxx;
mod proc;

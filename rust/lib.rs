//! Native core of r1omni-fast.
//!
//! The core modules are plain Rust and never see Python types; `cargo test` runs them without
//! an interpreter. `python` (behind the cargo feature of the same name, which maturin enables)
//! is the only module that knows pyo3: it converts arguments, releases the GIL around native
//! work and maps errors to Python exceptions.

pub mod build_info;
// --- rewards ---
pub mod reward;
// --- end rewards ---

#[cfg(feature = "python")]
mod python;

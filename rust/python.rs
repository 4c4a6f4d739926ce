//! The binding layer: the only file that knows pyo3.
//!
//! Each function converts its arguments, releases the GIL around native work, maps errors to
//! Python exceptions (one adapter per error type) and writes results into numpy arrays.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::build_info as core_build_info;

/// Build information as a dict of strings (`r1omni_fast._native.build_info()`).
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in core_build_info::build_info() {
        d.set_item(k, v)?;
    }
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", core_build_info::VERSION)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    Ok(())
}

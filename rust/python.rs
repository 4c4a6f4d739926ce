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

// --- rewards: bindings of crate::reward ---

mod reward_bindings {
    use std::collections::HashMap;
    use std::os::raw::c_char;

    use numpy::{IntoPyArray, PyArray1};
    use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::{PyBytes, PyDict, PyString};

    use crate::reward::{self, Accuracy, LabelMatcher, RewardError};

    /// The one adapter from reward errors to Python exceptions.
    fn to_py_err(e: RewardError) -> PyErr {
        match e {
            RewardError::Panic(_) => PyRuntimeError::new_err(e.to_string()),
            _ => PyValueError::new_err(e.to_string()),
        }
    }

    extern "C" {
        // In the stable ABI since 3.10, and exported with this signature by every CPython 3,
        // so the abi3-py39 build may call it. Reads the str's UTF-8 without copying when it is
        // ASCII, and otherwise encodes it once and caches the result in the str.
        fn PyUnicode_AsUTF8AndSize(unicode: *mut ffi::PyObject, size: *mut ffi::Py_ssize_t) -> *const c_char;
    }

    /// The UTF-8 bytes of a Python str, borrowed from the str or, for a str holding lone
    /// surrogates, encoded with "surrogatepass" into a bytes object of our own.
    enum Utf8<'a, 'py> {
        Borrowed(&'a [u8]),
        Encoded(Bound<'py, PyBytes>),
    }

    impl Utf8<'_, '_> {
        fn as_bytes(&self) -> &[u8] {
            match self {
                Self::Borrowed(b) => b,
                Self::Encoded(b) => b.as_bytes(),
            }
        }
    }

    /// UTF-8 of `text` (any str, lone surrogates included); `what` and `index` name the
    /// argument in the TypeError for a non-str.
    fn utf8_of<'a, 'py>(text: &'a Bound<'py, PyAny>, what: &str, index: Option<usize>) -> PyResult<Utf8<'a, 'py>> {
        let s = text.cast::<PyString>().map_err(|_| {
            let ty = text.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            let at = index.map(|i| format!("[{i}]")).unwrap_or_default();
            PyTypeError::new_err(format!("{what}{at} is {ty}, expected str"))
        })?;
        let mut size: ffi::Py_ssize_t = 0;
        // Safety: `s` is a live str and `size` a valid out-pointer.
        let ptr = unsafe { PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut size) };
        if !ptr.is_null() {
            // Safety: the buffer belongs to the str, which is immutable and outlives the borrow
            // `'a` of `text`; CPython frees it only with the str.
            let len = usize::try_from(size).expect("CPython returned a negative size");
            return Ok(Utf8::Borrowed(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }));
        }
        // Lone surrogates are not UTF-8: drop the UnicodeEncodeError and pass them through.
        drop(PyErr::take(s.py()));
        // Safety: `s` is a live str; the codec names are NUL-terminated literals; the call
        // returns a new reference or NULL with an exception set, which from_owned_ptr_or_err
        // turns into Err.
        let bytes = unsafe {
            Bound::from_owned_ptr_or_err(
                s.py(),
                ffi::PyUnicode_AsEncodedString(s.as_ptr(), c"utf-8".as_ptr(), c"surrogatepass".as_ptr()),
            )?
        };
        Ok(Utf8::Encoded(bytes.cast_into::<PyBytes>()?))
    }

    fn utf8_all<'a, 'py>(texts: &'a [Bound<'py, PyAny>], what: &str) -> PyResult<Vec<Utf8<'a, 'py>>> {
        texts.iter().enumerate().map(|(i, t)| utf8_of(t, what, Some(i))).collect()
    }

    /// Inverse of [`utf8_of`] for a byte range of a text.
    fn decode_text<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
        PyString::from_encoded_object(PyBytes::new(py, bytes).as_any(), Some(c"utf-8"), Some(c"surrogatepass"))
    }

    /// Scores batches of completions; built once per mode and label set.
    #[pyclass(name = "RewardScorer", module = "r1omni_fast._native", frozen)]
    pub struct PyRewardScorer {
        accuracy: Accuracy,
    }

    #[pymethods]
    impl PyRewardScorer {
        #[new]
        #[pyo3(signature = (mode, labels=None, aliases=None))]
        fn new(mode: &str, labels: Option<Vec<String>>, aliases: Option<HashMap<String, String>>) -> PyResult<Self> {
            let accuracy = match (mode, labels) {
                ("r1omni", None) if aliases.is_none() => Accuracy::R1Omni,
                ("r1omni", _) => {
                    return Err(PyValueError::new_err(
                        "mode 'r1omni' compares strings exactly and takes no labels or aliases",
                    ))
                }
                ("robust", Some(labels)) => {
                    let aliases = aliases.unwrap_or_default().into_iter().collect();
                    Accuracy::Robust(LabelMatcher::new(labels, aliases).map_err(to_py_err)?)
                }
                ("robust", None) => return Err(PyValueError::new_err("mode 'robust' needs labels")),
                (other, _) => {
                    return Err(PyValueError::new_err(format!(
                        "unknown accuracy mode {other:?}: use 'r1omni' or 'robust'"
                    )))
                }
            };
            Ok(Self { accuracy })
        }

        /// The accuracy mode, "r1omni" or "robust".
        #[getter]
        fn mode(&self) -> &'static str {
            match self.accuracy {
                Accuracy::R1Omni => "r1omni",
                Accuracy::Robust(_) => "robust",
            }
        }

        /// The label set (robust mode), else None.
        #[getter]
        fn labels(&self) -> Option<Vec<String>> {
            match &self.accuracy {
                Accuracy::R1Omni => None,
                Accuracy::Robust(m) => Some(m.labels().to_vec()),
            }
        }

        /// Columns "format" and/or "accuracy" (float64 arrays), scored in parallel without the GIL.
        #[pyo3(signature = (completions, solutions=None, *, format=true, accuracy=true))]
        fn score<'py>(
            &self,
            py: Python<'py>,
            completions: Vec<Bound<'py, PyAny>>,
            solutions: Option<Vec<Bound<'py, PyAny>>>,
            format: bool,
            accuracy: bool,
        ) -> PyResult<Bound<'py, PyDict>> {
            let completions = utf8_all(&completions, "completions")?;
            let solutions = solutions.as_deref().map(|s| utf8_all(s, "solution")).transpose()?;
            let completion_bytes: Vec<&[u8]> = completions.iter().map(|b| b.as_bytes()).collect();
            let solution_bytes: Option<Vec<&[u8]>> =
                solutions.as_ref().map(|s| s.iter().map(|b| b.as_bytes()).collect());
            let mode = accuracy.then_some(&self.accuracy);
            let columns = py
                .detach(|| reward::score_batch(&completion_bytes, solution_bytes.as_deref(), format, mode))
                .map_err(to_py_err)?;
            let out = PyDict::new(py);
            if let Some(v) = columns.format {
                out.set_item("format", v.into_pyarray(py))?;
            }
            if let Some(v) = columns.accuracy {
                out.set_item("accuracy", v.into_pyarray(py))?;
            }
            Ok(out)
        }
    }

    /// `(think, answer, well_formed)` of one completion; see `reward::parse_completion`.
    #[pyfunction]
    fn parse_completion<'py>(
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
    ) -> PyResult<(Option<Bound<'py, PyString>>, Option<Bound<'py, PyString>>, bool)> {
        let encoded = utf8_of(text, "text", None)?;
        let bytes = encoded.as_bytes();
        let parsed = reward::guarded(1, |_| Ok(reward::parse_completion(bytes))).map_err(to_py_err)?;
        let parsed = &parsed[0];
        let part = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| decode_text(py, &bytes[r])).transpose();
        Ok((part(&parsed.think)?, part(&parsed.answer)?, parsed.well_formed))
    }

    /// Test hook: a batch whose item `panic_at` panics inside the parallel scorer.
    #[pyfunction]
    fn _panicking_batch_for_tests<'py>(py: Python<'py>, n: usize, panic_at: usize) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let v = py.detach(|| reward::panicking_batch_for_tests(n, panic_at)).map_err(to_py_err)?;
        Ok(v.into_pyarray(py))
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_class::<PyRewardScorer>()?;
        m.add_function(wrap_pyfunction!(parse_completion, m)?)?;
        m.add_function(wrap_pyfunction!(_panicking_batch_for_tests, m)?)?;
        Ok(())
    }
}

// --- end rewards ---

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", core_build_info::VERSION)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    reward_bindings::register(m)?; // rewards
    Ok(())
}

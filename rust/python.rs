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

    use crate::reward::{self, Accuracy, LabelMatcher, Prediction, RewardError, Text};

    /// The one adapter from reward errors to Python exceptions.
    fn to_py_err(e: RewardError) -> PyErr {
        match e {
            RewardError::Panic(_) => PyRuntimeError::new_err(e.to_string()),
            _ => PyValueError::new_err(e.to_string()),
        }
    }

    extern "C" {
        // In the stable ABI since 3.10, and exported with this signature by every CPython 3,
        // so the abi3 build (abi3-py310) may call it. Reads the str's UTF-8 without copying when it is
        // ASCII, and otherwise encodes it once and caches the result in the str.
        fn PyUnicode_AsUTF8AndSize(
            unicode: *mut ffi::PyObject,
            size: *mut ffi::Py_ssize_t,
        ) -> *const c_char;
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
    fn utf8_of<'a, 'py>(
        text: &'a Bound<'py, PyAny>,
        what: &str,
        index: Option<usize>,
    ) -> PyResult<Utf8<'a, 'py>> {
        let s = text.cast::<PyString>().map_err(|_| {
            let ty = text
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            let at = index.map(|i| format!("[{i}]")).unwrap_or_default();
            PyTypeError::new_err(format!("{what}{at} is {ty}, expected str"))
        })?;
        let mut size: ffi::Py_ssize_t = 0;
        // Safety: `s` is a live str and `size` a valid out-pointer.
        let ptr = unsafe { PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut size) };
        if !ptr.is_null() {
            // Safety: on success `size` is the buffer's length (non-negative); the buffer belongs
            // to the str, which is immutable and outlives the borrow `'a` of `text`; CPython
            // frees it only with the str.
            return Ok(Utf8::Borrowed(unsafe {
                std::slice::from_raw_parts(ptr.cast::<u8>(), size as usize)
            }));
        }
        // Lone surrogates are not UTF-8: drop the UnicodeEncodeError and pass them through.
        drop(PyErr::take(s.py()));
        // Safety: `s` is a live str; the codec names are NUL-terminated literals; the call
        // returns a new reference or NULL with an exception set, which from_owned_ptr_or_err
        // turns into Err.
        let bytes = unsafe {
            Bound::from_owned_ptr_or_err(
                s.py(),
                ffi::PyUnicode_AsEncodedString(
                    s.as_ptr(),
                    c"utf-8".as_ptr(),
                    c"surrogatepass".as_ptr(),
                ),
            )?
        };
        Ok(Utf8::Encoded(bytes.cast_into::<PyBytes>()?))
    }

    /// Reading a str's code units in place (PEP 393), so that the scorer's threads encode them
    /// without the GIL. The limited API has no call for it, so the layout of CPython's str
    /// objects is written here for the versions it is known for, and checked against known strs
    /// once per process; any other version, or a str that is not compact (a str subclass), takes
    /// the `PyUnicode_AsUTF8AndSize` path.
    mod pep393 {
        use std::sync::OnceLock;

        use pyo3::prelude::*;
        use pyo3::types::PyString;

        use crate::reward::Text;

        /// Offsets in a str object (64-bit CPython, default build).
        struct Layout {
            /// Of the data of a compact ASCII str (`sizeof(PyASCIIObject)`).
            ascii_data: usize,
            /// Of the data of any other compact str (`sizeof(PyCompactUnicodeObject)`).
            compact_data: usize,
            /// Whether `state` has the `ready` bit (before 3.12).
            has_ready_bit: bool,
        }

        /// `PyASCIIObject.length` and `.state` (after the object header and the hash).
        const LENGTH_OFFSET: usize = 16;
        const STATE_OFFSET: usize = 32;

        fn known_layout(py: Python<'_>) -> Option<Layout> {
            if !cfg!(all(target_pointer_width = "64", target_endian = "little")) {
                return None;
            }
            let v = py.version_info();
            match (v.major, v.minor) {
                // `wchar_t *wstr` in PyASCIIObject, `wstr_length` in PyCompactUnicodeObject.
                (3, 9..=11) => Some(Layout { ascii_data: 48, compact_data: 72, has_ready_bit: true }),
                (3, 12..=14) => Some(Layout { ascii_data: 40, compact_data: 56, has_ready_bit: false }),
                _ => None,
            }
        }

        /// The layout, once it has read known strs of every kind back correctly.
        fn layout(py: Python<'_>) -> Option<&'static Layout> {
            static LAYOUT: OnceLock<Option<Layout>> = OnceLock::new();
            LAYOUT
                .get_or_init(|| {
                    let layout = known_layout(py)?;
                    let probes = ["plain ascii", "caf\u{e9}", "\u{201c}x\u{2014}", "a\u{1f642}b"];
                    probes
                        .iter()
                        .all(|&p| {
                            let s = PyString::new(py, p);
                            // Safety: `s` is a live str, read under the GIL.
                            let text = unsafe { read(&s, &layout) };
                            text.is_some_and(|t| code_points(t) == p.chars().map(u32::from).collect::<Vec<_>>())
                        })
                        .then_some(layout)
                })
                .as_ref()
        }

        fn code_points(t: Text<'_>) -> Vec<u32> {
            match t {
                Text::Utf8(b) => std::str::from_utf8(b).map_or_else(|_| vec![u32::MAX], |s| s.chars().map(u32::from).collect()),
                Text::Latin1(u) => u.iter().map(|&c| c.into()).collect(),
                Text::Ucs2(u) => u.iter().map(|&c| c.into()).collect(),
                Text::Ucs4(u) => u.to_vec(),
            }
        }

        /// The code units of `s` in place, or None when it is not a compact str.
        ///
        /// # Safety
        /// `layout` must be this interpreter's (as [`layout`] returns it). The slice lives as
        /// long as the borrow of `s`: a compact str's data is part of the object, and a str
        /// another reference is held to is never changed.
        unsafe fn read<'a>(s: &'a Bound<'_, PyString>, layout: &Layout) -> Option<Text<'a>> {
            let base = s.as_ptr().cast::<u8>();
            let state = base.add(STATE_OFFSET).cast::<u32>().read();
            let (kind, compact, ascii, ready) = ((state >> 2) & 7, state >> 5 & 1 == 1, state >> 6 & 1 == 1, state >> 7 & 1 == 1);
            if !compact || (layout.has_ready_bit && !ready) {
                return None;
            }
            let len = base.add(LENGTH_OFFSET).cast::<isize>().read() as usize;
            let data = base.add(if ascii { layout.ascii_data } else { layout.compact_data });
            Some(match (kind, ascii) {
                (1, true) => Text::Utf8(std::slice::from_raw_parts(data, len)),
                (1, false) => Text::Latin1(std::slice::from_raw_parts(data, len)),
                (2, false) => Text::Ucs2(std::slice::from_raw_parts(data.cast::<u16>(), len)),
                (4, false) => Text::Ucs4(std::slice::from_raw_parts(data.cast::<u32>(), len)),
                _ => return None,
            })
        }

        /// The code units of `s` when this interpreter's layout is known and `s` is compact.
        pub fn code_units<'a>(s: &'a Bound<'_, PyString>) -> Option<Text<'a>> {
            let layout = layout(s.py())?;
            // Safety: `layout` comes from `layout()`; the borrow of `s` bounds the slice.
            unsafe { read(s, layout) }
        }
    }

    /// A text handed to the scorer: its code units in place, or UTF-8 from CPython.
    enum Handed<'a, 'py> {
        Units(Text<'a>),
        Utf8(Utf8<'a, 'py>),
    }

    impl Handed<'_, '_> {
        fn text(&self) -> Text<'_> {
            match self {
                Self::Units(t) => *t,
                Self::Utf8(u) => Text::Utf8(u.as_bytes()),
            }
        }
    }

    /// The texts of `texts` for the scorer, code units read in place where possible (no UTF-8
    /// encoding under the GIL); errors as [`utf8_of`]'s.
    fn hand_all<'a, 'py>(texts: &'a [Bound<'py, PyAny>], what: &str) -> PyResult<Vec<Handed<'a, 'py>>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| match t.cast::<PyString>().ok().and_then(pep393::code_units) {
                Some(units) => Ok(Handed::Units(units)),
                None => utf8_of(t, what, Some(i)).map(Handed::Utf8),
            })
            .collect()
    }

    fn utf8_all<'a, 'py>(
        texts: &'a [Bound<'py, PyAny>],
        what: &str,
    ) -> PyResult<Vec<Utf8<'a, 'py>>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| utf8_of(t, what, Some(i)))
            .collect()
    }

    /// Inverse of [`utf8_of`] for a byte range of a text.
    fn decode_text<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
        PyString::from_encoded_object(
            PyBytes::new(py, bytes).as_any(),
            Some(c"utf-8"),
            Some(c"surrogatepass"),
        )
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
        fn new(
            mode: &str,
            labels: Option<Vec<String>>,
            aliases: Option<HashMap<String, String>>,
        ) -> PyResult<Self> {
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
                ("robust", None) => {
                    return Err(PyValueError::new_err("mode 'robust' needs labels"))
                }
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
            let completions = hand_all(&completions, "completions")?;
            let solutions = solutions
                .as_deref()
                .map(|s| hand_all(s, "solution"))
                .transpose()?;
            let completion_bytes: Vec<Text> = completions.iter().map(Handed::text).collect();
            let solution_bytes: Option<Vec<Text>> = solutions
                .as_ref()
                .map(|s| s.iter().map(Handed::text).collect());
            let mode = accuracy.then_some(&self.accuracy);
            let columns = py
                .detach(|| {
                    reward::score_batch(&completion_bytes, solution_bytes.as_deref(), format, mode)
                })
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

        /// The answer of each completion as the accuracy reward reads it: R1-Omni's answer text
        /// (mode r1omni), or the label named, else None (mode robust).
        fn answers<'py>(
            &self,
            py: Python<'py>,
            completions: Vec<Bound<'py, PyAny>>,
        ) -> PyResult<Vec<Option<Bound<'py, PyString>>>> {
            let texts = utf8_all(&completions, "completions")?;
            let bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
            let found = py
                .detach(|| reward::predictions(&bytes, &self.accuracy))
                .map_err(to_py_err)?;
            found
                .into_iter()
                .zip(&bytes)
                .map(|(p, text)| match (p, &self.accuracy) {
                    (Prediction::Text(r), _) => decode_text(py, &text[r]).map(Some),
                    (Prediction::Label(i), Accuracy::Robust(m)) => {
                        Ok(Some(PyString::new(py, &m.labels()[i])))
                    }
                    _ => Ok(None),
                })
                .collect()
        }
    }

    /// `(think, answer, well_formed)` as Python values.
    type PyParsed<'py> = (
        Option<Bound<'py, PyString>>,
        Option<Bound<'py, PyString>>,
        bool,
    );

    /// `(think, answer, well_formed)` of one completion; see `reward::parse_completion`.
    #[pyfunction]
    fn parse_completion<'py>(py: Python<'py>, text: &Bound<'py, PyAny>) -> PyResult<PyParsed<'py>> {
        let encoded = utf8_of(text, "text", None)?;
        let bytes = encoded.as_bytes();
        let parsed =
            reward::guarded(1, |_| Ok(reward::parse_completion(bytes))).map_err(to_py_err)?;
        let parsed = &parsed[0];
        let part = |r: &Option<std::ops::Range<usize>>| {
            r.clone().map(|r| decode_text(py, &bytes[r])).transpose()
        };
        Ok((
            part(&parsed.think)?,
            part(&parsed.answer)?,
            parsed.well_formed,
        ))
    }

    /// Test hook: a batch whose item `panic_at` panics inside the parallel scorer.
    #[pyfunction]
    fn _panicking_batch_for_tests<'py>(
        py: Python<'py>,
        n: usize,
        panic_at: usize,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let v = py
            .detach(|| reward::panicking_batch_for_tests(n, panic_at))
            .map_err(to_py_err)?;
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

// --- media: bindings of rust/media (r1omni_fast.media) ---

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::types::PyList;

use crate::media;

/// The one adapter from `media::MediaError` to `r1omni_fast.media.MediaError(path, reason)`.
fn media_error_object<'py>(py: Python<'py>, e: &media::MediaError) -> PyResult<Bound<'py, PyAny>> {
    py.import("r1omni_fast.media")?
        .getattr("MediaError")?
        .call1((e.path.clone(), e.reason.clone()))
}

fn media_error(py: Python<'_>, e: media::MediaError) -> PyErr {
    match media_error_object(py, &e) {
        Ok(obj) => PyErr::from_value(obj),
        Err(err) => err,
    }
}

/// `media::ClipOptions` from keyword arguments named as its fields, each written once here; an
/// option not given keeps its default (`media::ClipOptions::default()`, the Python `load_clip`'s).
/// `audio_path` is an option of one clip only (`batch` refuses it). Errors name the option: a
/// TypeError for an unknown one or a value of the wrong type, a ValueError for a bad
/// `aspect`/`downmix`.
fn clip_options(kwargs: Option<&Bound<'_, PyDict>>, batch: bool) -> PyResult<media::ClipOptions> {
    use pyo3::exceptions::{PyTypeError, PyValueError};
    let mut o = media::ClipOptions::default();
    for (key, value) in kwargs.into_iter().flatten() {
        let key: String = key.extract()?;
        // The argument extraction message of pyo3, which these options had as positional ones.
        let named = |e: PyErr| PyTypeError::new_err(format!("argument '{key}': {e}"));
        let text = || value.extract::<String>().map_err(named);
        match key.as_str() {
            "num_frames" => o.num_frames = value.extract().map_err(named)?,
            "image_size" => o.image_size = value.extract().map_err(named)?,
            "aspect" => o.aspect = text()?.parse().map_err(PyValueError::new_err)?,
            "mean" => o.mean = value.extract().map_err(named)?,
            "std" => o.std = value.extract().map_err(named)?,
            "n_mels" => o.n_mels = value.extract().map_err(named)?,
            "audio" => o.audio = value.extract().map_err(named)?,
            "require_audio" => o.require_audio = value.extract().map_err(named)?,
            "audio_path" if !batch => o.audio_path = value.extract().map_err(named)?,
            "max_dimension" => o.max_dimension = value.extract().map_err(named)?,
            "decoder_threads" => o.decoder_threads = value.extract().map_err(named)?,
            "downmix" => o.downmix = text()?.parse().map_err(PyValueError::new_err)?,
            "max_num_frames" => o.max_num_frames = value.extract().map_err(named)?,
            "max_image_size" => o.max_image_size = value.extract().map_err(named)?,
            "max_output_bytes" => o.max_output_bytes = value.extract().map_err(named)?,
            "audio_path" => {
                return Err(PyTypeError::new_err(
                    "audio_path is an option of one clip: load the clips that have separate audio with media_load_clip",
                ))
            }
            other => return Err(PyTypeError::new_err(format!("unexpected clip option {other:?}"))),
        }
    }
    Ok(o)
}

/// A decoded clip as a dict of the `Clip` fields (numpy arrays for the tensors).
fn clip_to_dict<'py>(py: Python<'py>, clip: media::Clip, opts: &media::ClipOptions) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let k = clip.frame_indices.len();
    let s = opts.image_size as usize;
    d.set_item("frames", PyArray1::from_vec(py, clip.frames).reshape([k, 3, s, s])?)?;
    let idx: Vec<i64> = clip.frame_indices.iter().map(|&i| i as i64).collect();
    d.set_item("frame_indices", PyArray1::from_vec(py, idx))?;
    d.set_item("num_video_frames", clip.num_video_frames)?;
    d.set_item("declared_frames", clip.declared_frames)?;
    d.set_item("fps", clip.fps)?;
    match clip.mel {
        Some(mel) => d.set_item("mel", PyArray1::from_vec(py, mel).reshape([opts.n_mels, media::mel::N_FRAMES])?)?,
        None => d.set_item("mel", py.None())?,
    }
    d.set_item("has_audio", clip.has_audio)?;
    d.set_item("audio_seconds", clip.audio_seconds)?;
    Ok(d)
}

/// `load_clip` of rust/media; returns the `Clip` fields as a dict. The options are keyword
/// arguments (see [`clip_options`]).
#[pyfunction]
#[pyo3(signature = (path, **options))]
fn media_load_clip<'py>(
    py: Python<'py>,
    path: String,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = clip_options(options, false)?;
    let clip = py.detach(|| media::load_clip(&path, &opts)).map_err(|e| media_error(py, e))?;
    clip_to_dict(py, clip, &opts)
}

/// `load_batch` of rust/media: a list with a dict per decoded clip or a `MediaError` instance
/// (`threads` = 0: all cores; the options as [`media_load_clip`]'s, `audio_path` excepted).
#[pyfunction]
#[pyo3(signature = (paths, threads, **options))]
fn media_load_batch<'py>(
    py: Python<'py>,
    paths: Vec<String>,
    threads: usize,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyList>> {
    let opts = clip_options(options, true)?;
    let results = py.detach(|| media::load_batch(&paths, &opts, threads));
    let out = PyList::empty(py);
    for r in results {
        match r {
            Ok(clip) => out.append(clip_to_dict(py, clip, &opts)?)?,
            Err(e) => out.append(media_error_object(py, &e)?)?,
        }
    }
    Ok(out)
}

/// `decode_frames` of rust/media: uint8 (k, H, W, 3) RGB24 at the given presentation indices.
#[pyfunction]
#[pyo3(signature = (path, indices, max_dimension, decoder_threads))]
fn media_decode_frames<'py>(
    py: Python<'py>,
    path: String,
    indices: Vec<i64>,
    max_dimension: u32,
    decoder_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(&bad) = indices.iter().find(|&&i| i < 0) {
        return Err(media_error(py, media::MediaError::new(&path, format!("frame index {bad} is negative"))));
    }
    let idx: Vec<usize> = indices.iter().map(|&i| i as usize).collect();
    let frames = py
        .detach(|| {
            let frames = media::decode_frames(&path, &idx, max_dimension, decoder_threads)?;
            let (w, h) = frames.first().map_or((0, 0), |f| (f.width, f.height));
            if frames.iter().any(|f| (f.width, f.height) != (w, h)) {
                return Err(media::MediaError::new(&path, "the requested frames differ in size"));
            }
            let data: Vec<u8> = frames.into_iter().flat_map(|f| f.data).collect();
            Ok((data, idx.len(), h as usize, w as usize))
        })
        .map_err(|e| media_error(py, e))?;
    let (data, k, h, w) = frames;
    Ok(PyArray1::from_vec(py, data).reshape([k, h, w, 3])?.into_any())
}

/// First audio stream of a file as 16 kHz mono float32, or None when the file has none
/// (`max_seconds`: keep only the first seconds; decoding stops soon after them).
#[pyfunction]
#[pyo3(signature = (path, downmix, max_seconds))]
fn media_load_audio<'py>(
    py: Python<'py>,
    path: String,
    downmix: &str,
    max_seconds: Option<f64>,
) -> PyResult<Option<Bound<'py, PyArray1<f32>>>> {
    let downmix: media::Downmix = downmix.parse().map_err(pyo3::exceptions::PyValueError::new_err)?;
    let audio = py
        .detach(|| media::audio::load_audio_16k(&path, downmix, max_seconds))
        .map_err(|e| media_error(py, e))?;
    Ok(audio.map(|a| PyArray1::from_vec(py, a.samples)))
}

/// `whisper_log_mel` of rust/media: float32 (n_mels, 3000).
#[pyfunction]
fn media_whisper_log_mel<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, f32>,
    n_mels: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let owned: Vec<f32>;
    let slice = match samples.as_slice() {
        Ok(s) => s,
        Err(_) => {
            owned = samples.as_array().iter().copied().collect();
            &owned
        }
    };
    let mel = py
        .detach(|| media::whisper_log_mel(slice, n_mels))
        .map_err(pyo3::exceptions::PyValueError::new_err)?;
    Ok(PyArray1::from_vec(py, mel).reshape([n_mels, media::mel::N_FRAMES])?.into_any())
}

/// `fft_floor` of rust/media/mel.rs: the float64 FFTs alone of `whisper_log_mel(samples)`
/// (for the benchmark's account); returns how many ran.
#[pyfunction]
fn media_mel_fft_floor(py: Python<'_>, samples: PyReadonlyArray1<'_, f32>) -> PyResult<usize> {
    let slice = samples.as_slice().map_err(|_| pyo3::exceptions::PyValueError::new_err("samples must be contiguous"))?;
    Ok(py.detach(|| media::mel::fft_floor(slice)))
}

/// `log_mel` of rust/media/mel.rs: the Whisper log-mel of `samples` padded/cut to `n_samples`,
/// its first `frames` frames: float32 (n_mels, frames).
#[pyfunction]
#[pyo3(signature = (samples, n_mels, n_samples, frames))]
fn media_log_mel<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, f32>,
    n_mels: usize,
    n_samples: usize,
    frames: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let owned: Vec<f32>;
    let slice = match samples.as_slice() {
        Ok(s) => s,
        Err(_) => {
            owned = samples.as_array().iter().copied().collect();
            &owned
        }
    };
    let mel = py
        .detach(|| media::mel::log_mel(slice, n_mels, n_samples, frames))
        .map_err(pyo3::exceptions::PyValueError::new_err)?;
    Ok(PyArray1::from_vec(py, mel).reshape([n_mels, frames])?.into_any())
}

/// The picture half of the pipeline on one RGB24 picture: uint8 (H, W, 3) -> float32
/// (3, S, S): pad (or not), PIL-exact bicubic resize, normalise.
#[pyfunction]
#[pyo3(signature = (rgb, image_size, aspect, mean, std))]
fn media_preprocess_frame<'py>(
    py: Python<'py>,
    rgb: numpy::PyReadonlyArray3<'py, u8>,
    image_size: u32,
    aspect: &str,
    mean: [f32; 3],
    std: [f32; 3],
) -> PyResult<Bound<'py, PyAny>> {
    let aspect: media::image::Aspect = aspect.parse().map_err(pyo3::exceptions::PyValueError::new_err)?;
    let arr = rgb.as_array();
    let shape = arr.shape().to_vec();
    if shape[2] != 3 || shape[0] == 0 || shape[1] == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "rgb must be a non-empty (H, W, 3) uint8 array, got shape {shape:?}"
        )));
    }
    if image_size == 0 || image_size > media::DEFAULT_MAX_IMAGE_SIZE {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "image_size must be between 1 and {}, got {image_size}",
            media::DEFAULT_MAX_IMAGE_SIZE
        )));
    }
    let img = media::image::RgbImage {
        width: shape[1] as u32,
        height: shape[0] as u32,
        // One memcpy for a C-contiguous array (what the Python wrapper passes), else element-wise.
        data: arr.as_slice().map_or_else(|| arr.iter().copied().collect(), <[u8]>::to_vec),
    };
    let s = image_size as usize;
    let out = py
        .detach(|| {
            let mut out = vec![0f32; 3 * s * s];
            media::image::to_model_input(&img, image_size, aspect, mean, std, &mut out).map(|_| out)
        })
        .map_err(pyo3::exceptions::PyValueError::new_err)?;
    Ok(PyArray1::from_vec(py, out).reshape([3, s, s])?.into_any())
}

/// `probe_video` of rust/media/qwen.rs: the first video stream's presented frame count,
/// declared count, frame rate and upright size, as a dict.
#[pyfunction]
#[pyo3(signature = (path, max_dimension))]
fn media_probe_video<'py>(py: Python<'py>, path: String, max_dimension: u32) -> PyResult<Bound<'py, PyDict>> {
    let info = py
        .detach(|| media::qwen::probe_video(&path, max_dimension))
        .map_err(|e| media_error(py, e))?;
    let d = PyDict::new(py);
    d.set_item("num_frames", info.num_frames)?;
    d.set_item("declared_frames", info.declared_frames)?;
    d.set_item("fps", info.fps)?;
    d.set_item("width", info.width)?;
    d.set_item("height", info.height)?;
    Ok(d)
}

/// `decode_resized` of rust/media/qwen.rs: uint8 (k, height, width, 3), each frame resized as
/// torchvision's antialiased bicubic resize of a uint8 tensor.
#[pyfunction]
#[pyo3(signature = (path, indices, height, width, max_dimension, decoder_threads))]
fn media_decode_resized<'py>(
    py: Python<'py>,
    path: String,
    indices: Vec<i64>,
    height: u32,
    width: u32,
    max_dimension: u32,
    decoder_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(&bad) = indices.iter().find(|&&i| i < 0) {
        return Err(media_error(py, media::MediaError::new(&path, format!("frame index {bad} is negative"))));
    }
    let idx: Vec<usize> = indices.iter().map(|&i| i as usize).collect();
    let data = py
        .detach(|| media::qwen::decode_resized(&path, &idx, width, height, max_dimension, decoder_threads))
        .map_err(|e| media_error(py, e))?;
    Ok(PyArray1::from_vec(py, data).reshape([idx.len(), height as usize, width as usize, 3])?.into_any())
}

/// RGB24 pictures uint8 (k, H, W, 3) -> uint8 (k, height, width, 3), resized as torchvision's
/// antialiased bicubic resize of a uint8 tensor (frames in parallel, GIL released).
#[pyfunction]
#[pyo3(signature = (frames, height, width))]
fn media_resize_bicubic_antialias<'py>(
    py: Python<'py>,
    frames: numpy::PyReadonlyArray4<'py, u8>,
    height: u32,
    width: u32,
) -> PyResult<Bound<'py, PyAny>> {
    use rayon::prelude::*;
    let arr = frames.as_array();
    let shape = arr.shape().to_vec();
    if shape[3] != 3 || shape[1] == 0 || shape[2] == 0 || height == 0 || width == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "frames must be a non-empty (k, H, W, 3) uint8 array and the size positive, got shape {shape:?} -> {height}x{width}"
        )));
    }
    let (k, ih, iw) = (shape[0], shape[1], shape[2]);
    let owned: Vec<u8>;
    let data: &[u8] = match frames.as_slice() {
        Ok(s) => s,
        Err(_) => {
            owned = arr.iter().copied().collect();
            &owned
        }
    };
    let per_in = ih * iw * 3;
    let per_out = height as usize * width as usize * 3;
    let out = py.detach(|| {
        let mut out = vec![0u8; k * per_out];
        out.par_chunks_mut(per_out.max(1)).enumerate().for_each_init(
            || media::qwen::AaResizer::new(width, height),
            |resizer, (i, dst)| {
                let src = media::image::RgbView { width: iw as u32, height: ih as u32, stride: iw * 3, data: &data[i * per_in..(i + 1) * per_in] };
                resizer.resize_into(src, dst);
            },
        );
        out
    });
    Ok(PyArray1::from_vec(py, out).reshape([k, height as usize, width as usize, 3])?.into_any())
}

fn register_media(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(media_preprocess_frame, m)?)?;
    m.add_function(wrap_pyfunction!(media_load_clip, m)?)?;
    m.add_function(wrap_pyfunction!(media_load_batch, m)?)?;
    m.add_function(wrap_pyfunction!(media_decode_frames, m)?)?;
    m.add_function(wrap_pyfunction!(media_load_audio, m)?)?;
    m.add_function(wrap_pyfunction!(media_whisper_log_mel, m)?)?;
    m.add_function(wrap_pyfunction!(media_probe_video, m)?)?;
    m.add_function(wrap_pyfunction!(media_log_mel, m)?)?;
    m.add_function(wrap_pyfunction!(media_mel_fft_floor, m)?)?;
    m.add_function(wrap_pyfunction!(media_decode_resized, m)?)?;
    m.add_function(wrap_pyfunction!(media_resize_bicubic_antialias, m)?)?;
    Ok(())
}
// --- end media ---

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", core_build_info::VERSION)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    reward_bindings::register(m)?; // rewards

    register_media(m)?; // media
    Ok(())
}

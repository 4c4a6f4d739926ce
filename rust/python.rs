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

#[allow(clippy::too_many_arguments)]
fn clip_options(
    num_frames: usize,
    image_size: u32,
    aspect: &str,
    mean: [f32; 3],
    std: [f32; 3],
    n_mels: usize,
    audio: bool,
    require_audio: bool,
    audio_path: Option<String>,
    max_dimension: u32,
    decoder_threads: usize,
) -> PyResult<media::ClipOptions> {
    let aspect = aspect.parse().map_err(pyo3::exceptions::PyValueError::new_err)?;
    Ok(media::ClipOptions {
        num_frames,
        image_size,
        aspect,
        mean,
        std,
        n_mels,
        audio,
        require_audio,
        audio_path,
        max_dimension,
        decoder_threads,
    })
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
    d.set_item("fps", clip.fps)?;
    match clip.mel {
        Some(mel) => d.set_item("mel", PyArray1::from_vec(py, mel).reshape([opts.n_mels, media::mel::N_FRAMES])?)?,
        None => d.set_item("mel", py.None())?,
    }
    d.set_item("has_audio", clip.has_audio)?;
    d.set_item("audio_seconds", clip.audio_seconds)?;
    Ok(d)
}

/// `load_clip` of rust/media; returns the `Clip` fields as a dict.
#[pyfunction]
#[pyo3(signature = (path, num_frames, image_size, aspect, mean, std, n_mels, audio, require_audio, audio_path, max_dimension, decoder_threads))]
#[allow(clippy::too_many_arguments)]
fn media_load_clip<'py>(
    py: Python<'py>,
    path: String,
    num_frames: usize,
    image_size: u32,
    aspect: &str,
    mean: [f32; 3],
    std: [f32; 3],
    n_mels: usize,
    audio: bool,
    require_audio: bool,
    audio_path: Option<String>,
    max_dimension: u32,
    decoder_threads: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = clip_options(num_frames, image_size, aspect, mean, std, n_mels, audio, require_audio, audio_path, max_dimension, decoder_threads)?;
    let clip = py.detach(|| media::load_clip(&path, &opts)).map_err(|e| media_error(py, e))?;
    clip_to_dict(py, clip, &opts)
}

/// `load_batch` of rust/media: a list with a dict per decoded clip or a `MediaError` instance.
#[pyfunction]
#[pyo3(signature = (paths, threads, num_frames, image_size, aspect, mean, std, n_mels, audio, require_audio, max_dimension, decoder_threads))]
#[allow(clippy::too_many_arguments)]
fn media_load_batch<'py>(
    py: Python<'py>,
    paths: Vec<String>,
    threads: usize,
    num_frames: usize,
    image_size: u32,
    aspect: &str,
    mean: [f32; 3],
    std: [f32; 3],
    n_mels: usize,
    audio: bool,
    require_audio: bool,
    max_dimension: u32,
    decoder_threads: usize,
) -> PyResult<Bound<'py, PyList>> {
    let opts = clip_options(num_frames, image_size, aspect, mean, std, n_mels, audio, require_audio, None, max_dimension, decoder_threads)?;
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

/// First audio stream of a file as 16 kHz mono float32, or None when the file has none.
#[pyfunction]
fn media_load_audio<'py>(py: Python<'py>, path: String) -> PyResult<Option<Bound<'py, PyArray1<f32>>>> {
    let samples = py.detach(|| media::audio::load_audio_16k(&path)).map_err(|e| media_error(py, e))?;
    Ok(samples.map(|s| PyArray1::from_vec(py, s)))
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

fn register_media(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(media_load_clip, m)?)?;
    m.add_function(wrap_pyfunction!(media_load_batch, m)?)?;
    m.add_function(wrap_pyfunction!(media_decode_frames, m)?)?;
    m.add_function(wrap_pyfunction!(media_load_audio, m)?)?;
    m.add_function(wrap_pyfunction!(media_whisper_log_mel, m)?)?;
    Ok(())
}
// --- end media ---

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", core_build_info::VERSION)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    register_media(m)?; // media
    Ok(())
}

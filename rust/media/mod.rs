//! Native media: video frames and Whisper log-mel features, exactly as HumanOmni/R1-Omni
//! preprocess them (DESIGN.md §2).
//!
//! Plain Rust over FFmpeg (`ffmpeg-next`, system libraries); never sees Python types.
//! - [`sampling`]: HumanOmni "v1" uniform frame indices.
//! - [`video`]: demux once, decode only the frames needed, RGB24 at full size.
//! - [`image`]: display orientation, pad to square, PIL-exact bicubic resize, normalise into CHW float32.
//! - [`audio`]: first audio stream -> FFmpeg's mono downmix (or the channel mean) -> 16 kHz float32.
//! - [`mel`]: Whisper log-mel spectrogram (n_mels x 3000).
//! - [`clip`]: the whole per-clip pipeline and the parallel batch loader.
//! - [`qwen`]: frames as the Qwen2.5-Omni utilities give them (torchvision's antialiased bicubic).

pub mod audio;
pub mod clip;
pub mod image;
pub mod mel;
pub mod profile;
pub mod qwen;
pub mod sampling;
pub mod video;

use std::fmt;
use std::sync::Once;

pub use audio::Downmix;
pub use clip::{load_batch, load_clip, Clip, ClipOptions};
pub use mel::whisper_log_mel;
pub use video::decode_frames;

/// Default guard on the width and height of a decoded picture (pixels, each side).
pub const DEFAULT_MAX_DIMENSION: u32 = 8192;
/// Default largest `num_frames` of a clip.
pub const DEFAULT_MAX_NUM_FRAMES: usize = 1024;
/// Default largest `image_size` (output side, pixels).
pub const DEFAULT_MAX_IMAGE_SIZE: u32 = 4096;
/// Default largest total of output bytes of one `load_clip` / `load_batch` call (4 GiB).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 4 << 30;

/// A media input that could not be turned into arrays: which input, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaError {
    pub path: String,
    pub reason: String,
}

impl MediaError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        MediaError { path: path.into(), reason: reason.into() }
    }
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for MediaError {}

/// Result of one media operation; the error names the input.
pub type MediaResult<T> = Result<T, MediaError>;

/// Registers FFmpeg once per process and silences its console logging (errors surface as
/// `MediaError`s instead of interleaved stderr lines from worker threads).
pub(crate) fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Quiet);
    });
}

/// Runs `f`, turning a panic inside it into a `MediaError` for `path`, so that no input can
/// unwind across the FFI boundary or abort a batch.
pub(crate) fn guarded<T>(path: &str, f: impl FnOnce() -> MediaResult<T>) -> MediaResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(MediaError::new(path, format!("internal error while decoding: {what}")))
        }
    }
}

/// Versions of the FFmpeg libraries this build is linked against, for `build_info()`.
pub fn ffmpeg_versions() -> Vec<(String, String)> {
    fn ver(v: u32) -> String {
        format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
    }
    // SAFETY: the *_version() functions only return a compiled-in constant.
    unsafe {
        vec![
            ("ffmpeg.libavcodec".into(), ver(ffmpeg_next::ffi::avcodec_version())),
            ("ffmpeg.libavformat".into(), ver(ffmpeg_next::ffi::avformat_version())),
            ("ffmpeg.libavutil".into(), ver(ffmpeg_next::ffi::avutil_version())),
            ("ffmpeg.libswscale".into(), ver(ffmpeg_next::ffi::swscale_version())),
            ("ffmpeg.libswresample".into(), ver(ffmpeg_next::ffi::swresample_version())),
        ]
    }
}

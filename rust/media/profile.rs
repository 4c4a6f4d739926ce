//! Per-stage wall times of the native clip pipeline, printed to stderr for each clip when the
//! environment variable `R1OMNI_MEDIA_PROFILE` is set to a non-empty value other than `0`.
//!
//! The stages: `demux` (open + read every packet, which also counts the frames), `decode`
//! (keyframe seeks + decoding up to the last target, without the colour conversion), `convert`
//! (swscale YUV -> RGB), `resize` (pad + bicubic resize), `normalise` (into float32 CHW),
//! `audio` (audio decode + channel mean + resample to 16 kHz) and `mel` (Whisper log-mel); then
//! how many pictures the video decoder reconstructed, of the stream's frames.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether per-stage times are printed (read once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("R1OMNI_MEDIA_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// Accumulated wall time per stage of one clip.
#[derive(Debug, Default, Clone, Copy)]
pub struct StageTimes {
    pub demux: Duration,
    pub decode: Duration,
    pub convert: Duration,
    pub resize: Duration,
    pub normalise: Duration,
    pub audio: Duration,
    pub mel: Duration,
    /// Pictures the video decoder reconstructed (targets and the reference pictures they need).
    pub pictures: usize,
    /// Frames of the video stream.
    pub frames: usize,
}

impl StageTimes {
    /// One stderr line: the path, each stage and the total in milliseconds.
    pub fn report(&self, path: &str, total: Duration) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "media profile {path}: demux {:.2} decode {:.2} convert {:.2} resize {:.2} normalise {:.2} \
             audio {:.2} mel {:.2} total {:.2} ms; decoded {} of {} pictures",
            ms(self.demux), ms(self.decode), ms(self.convert), ms(self.resize), ms(self.normalise),
            ms(self.audio), ms(self.mel), ms(total), self.pictures, self.frames,
        );
    }
}

/// Runs `f` and adds its wall time to `*slot`.
pub fn timed<T>(slot: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    *slot += t.elapsed();
    out
}

//! The per-clip pipeline (frames + log-mel) and the parallel batch loader.

use std::time::Instant;

use rayon::prelude::*;

use super::audio::{load_audio_16k, track_to_16k};
use super::image::{normalise_into, pad_and_resize, Aspect};
use super::mel::{whisper_log_mel, MAX_MELS};
use super::profile::{self, timed, StageTimes};
use super::sampling::uniform_indices;
use super::video::{decode_track, demux, fps, frame_count, DemuxRequest};
use super::{guarded, MediaError, MediaResult, DEFAULT_MAX_DIMENSION};

/// Options of [`load_clip`] (names and defaults as the Python `load_clip`).
#[derive(Debug, Clone)]
pub struct ClipOptions {
    pub num_frames: usize,
    pub image_size: u32,
    pub aspect: Aspect,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub n_mels: usize,
    /// Compute the log-mel at all.
    pub audio: bool,
    /// Fail when there is no audio stream instead of using silence.
    pub require_audio: bool,
    /// Read the audio from this file instead of the video's own first audio stream.
    pub audio_path: Option<String>,
    pub max_dimension: u32,
    /// Decoder threads per clip (0 lets FFmpeg choose).
    pub decoder_threads: usize,
}

impl Default for ClipOptions {
    fn default() -> Self {
        ClipOptions {
            num_frames: 8,
            image_size: 224,
            aspect: Aspect::Pad,
            mean: [0.5; 3],
            std: [0.5; 3],
            n_mels: 128,
            audio: true,
            require_audio: false,
            audio_path: None,
            max_dimension: DEFAULT_MAX_DIMENSION,
            decoder_threads: 0,
        }
    }
}

impl ClipOptions {
    /// Rejects options no clip could satisfy (reported against `path`).
    fn validate(&self, path: &str) -> MediaResult<()> {
        let bad = |r: String| Err(MediaError::new(path, r));
        if self.num_frames == 0 {
            return bad("num_frames must be at least 1".into());
        }
        if self.image_size == 0 || self.image_size > 4096 {
            return bad(format!("image_size must be between 1 and 4096, got {}", self.image_size));
        }
        if self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) || self.mean.iter().any(|m| !m.is_finite()) {
            return bad("mean and std must be finite and std non-zero".into());
        }
        if self.audio && (self.n_mels == 0 || self.n_mels > MAX_MELS) {
            return bad(format!("n_mels must be between 1 and {MAX_MELS}, got {}", self.n_mels));
        }
        Ok(())
    }
}

/// A clip ready for the model.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Row-major (k, 3, S, S) normalised float32.
    pub frames: Vec<f32>,
    pub frame_indices: Vec<usize>,
    pub num_video_frames: usize,
    pub fps: f64,
    /// Row-major (n_mels, 3000), when audio was requested.
    pub mel: Option<Vec<f32>>,
    pub has_audio: bool,
    pub audio_seconds: f64,
}

/// Decodes `path` into model inputs: HumanOmni-sampled frames and the Whisper log-mel.
pub fn load_clip(path: &str, opts: &ClipOptions) -> MediaResult<Clip> {
    let started = Instant::now();
    let mut times = StageTimes::default();
    let clip = guarded(path, || load_clip_timed(path, opts, &mut times));
    if profile::enabled() {
        times.report(path, started.elapsed());
    }
    clip
}

fn load_clip_timed(path: &str, opts: &ClipOptions, times: &mut StageTimes) -> MediaResult<Clip> {
    opts.validate(path)?;
    let own_audio = opts.audio && opts.audio_path.is_none();
    let request = DemuxRequest { video: true, audio: own_audio, max_dimension: opts.max_dimension };
    let demuxed = timed(&mut times.demux, || demux(path, request))?;
    let video = demuxed.video.as_ref().expect("demux checked the video stream");
    let n = frame_count(video);
    let indices = uniform_indices(n, opts.num_frames);
    let decode_started = Instant::now();
    let pictures =
        decode_track(video, &indices, opts.decoder_threads, opts.max_dimension, path, &mut times.convert)?;
    times.decode += decode_started.elapsed().saturating_sub(times.convert);
    let s = opts.image_size as usize;
    let per_frame = 3 * s * s;
    let mut frames = vec![0f32; indices.len() * per_frame];
    for (pic, out) in pictures.iter().zip(frames.chunks_mut(per_frame)) {
        let resized = timed(&mut times.resize, || pad_and_resize(pic, opts.image_size, opts.aspect, opts.mean))
            .map_err(|r| MediaError::new(path, r))?;
        timed(&mut times.normalise, || normalise_into(&resized, opts.mean, opts.std, out));
    }

    let (mel, has_audio, audio_seconds) = if opts.audio {
        let samples = timed(&mut times.audio, || match &opts.audio_path {
            Some(audio_path) => load_audio_16k(audio_path),
            None => track_to_16k(demuxed.audio.as_ref(), path),
        })?;
        if samples.is_none() && opts.require_audio {
            let source = opts.audio_path.as_deref().unwrap_or(path);
            return Err(MediaError::new(source, "no audio stream (require_audio=True)"));
        }
        let has_audio = samples.is_some();
        let samples = samples.unwrap_or_default();
        let mel = timed(&mut times.mel, || whisper_log_mel(&samples, opts.n_mels))
            .map_err(|r| MediaError::new(path, r))?;
        (Some(mel), has_audio, samples.len() as f64 / 16_000.0)
    } else {
        (None, false, 0.0)
    };
    Ok(Clip {
        frames,
        frame_indices: indices,
        num_video_frames: n,
        fps: fps(video),
        mel,
        has_audio,
        audio_seconds,
    })
}

/// [`load_clip`] over many paths in parallel (rayon), results in input order, one error per
/// failed item. `threads` = 0 uses rayon's global pool; otherwise a pool of that size.
pub fn load_batch(paths: &[String], opts: &ClipOptions, threads: usize) -> Vec<MediaResult<Clip>> {
    let run = || paths.par_iter().map(|p| load_clip(p, opts)).collect::<Vec<_>>();
    if threads == 0 {
        return run();
    }
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    }
}

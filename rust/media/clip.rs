//! The per-clip pipeline (frames + log-mel) and the parallel batch loader.

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::audio::{load_audio_16k, track_to_16k, Downmix};
use super::image::{fill_colour, normalise_pixels, Aspect, SquareResizer};
use super::mel::{whisper_log_mel, MAX_MELS, N_SAMPLES, SAMPLE_RATE};
use super::profile::{self, timed, StageTimes};
use super::sampling::uniform_indices;
use super::video::{decode_targets, demux, fps, frame_count, DemuxRequest, RgbConverter, Track};
use super::{guarded, MediaError, MediaResult, DEFAULT_MAX_DIMENSION, DEFAULT_MAX_IMAGE_SIZE, DEFAULT_MAX_NUM_FRAMES, DEFAULT_MAX_OUTPUT_BYTES};

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
    /// How multichannel audio becomes mono.
    pub downmix: Downmix,
    /// Largest accepted `num_frames`.
    pub max_num_frames: usize,
    /// Largest accepted `image_size`.
    pub max_image_size: u32,
    /// Largest accepted total of output bytes (frames and mel of every clip of a batch).
    pub max_output_bytes: u64,
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
            downmix: Downmix::Ffmpeg,
            max_num_frames: DEFAULT_MAX_NUM_FRAMES,
            max_image_size: DEFAULT_MAX_IMAGE_SIZE,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

impl ClipOptions {
    /// Bytes of one clip's outputs: frames (k, 3, S, S) and mel (n_mels, 3000), float32.
    pub fn output_bytes(&self) -> u64 {
        let s = self.image_size as u64;
        let frames = (self.num_frames as u64).saturating_mul(3 * s * s * 4);
        let mel = if self.audio { self.n_mels as u64 * super::mel::N_FRAMES as u64 * 4 } else { 0 };
        frames.saturating_add(mel)
    }

    /// Rejects options no clip could satisfy, before anything is allocated (reported against
    /// `path`); `clips` is the number of clips whose outputs must fit `max_output_bytes`.
    pub fn validate_for(&self, path: &str, clips: usize) -> MediaResult<()> {
        let bad = |r: String| Err(MediaError::new(path, r));
        if self.num_frames == 0 || self.num_frames > self.max_num_frames {
            return bad(format!(
                "num_frames must be between 1 and max_num_frames={}, got {}",
                self.max_num_frames, self.num_frames
            ));
        }
        if self.image_size == 0 || self.image_size > self.max_image_size {
            return bad(format!(
                "image_size must be between 1 and max_image_size={}, got {}",
                self.max_image_size, self.image_size
            ));
        }
        let total = self.output_bytes().saturating_mul(clips as u64);
        if total > self.max_output_bytes {
            return bad(format!(
                "the outputs of {clips} clip(s) (num_frames={}, image_size={}) need {total} bytes, over \
                 max_output_bytes={}",
                self.num_frames, self.image_size, self.max_output_bytes
            ));
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
    /// Frames FFmpeg presents (counted from the packets; what sampling used).
    pub num_video_frames: usize,
    /// The container's declared frame count (0 when unknown): a hint only.
    pub declared_frames: i64,
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
    opts.validate_for(path, 1)?;
    let own_audio = opts.audio && opts.audio_path.is_none();
    let request = DemuxRequest { video: true, audio: own_audio, max_dimension: opts.max_dimension };
    let mut demuxed = timed(&mut times.demux, || demux(path, request))?;
    let video = demuxed.video.take().expect("demux checked the video stream");
    let audio_track = demuxed.audio.take();
    // Audio (decode, resample, log-mel) runs beside the video when a worker is free.
    let (num_video_frames, fps, declared_frames) = (frame_count(&video), fps(&video), video.declared_frames.max(0));
    let mut audio_times = StageTimes::default();
    let audio_times_slot = &mut audio_times;
    let (frames, audio) = rayon::join(
        {
            let times = &mut *times;
            move || clip_frames(&video, path, opts, times)
        },
        move || clip_audio(audio_track, path, opts, audio_times_slot),
    );
    times.audio += audio_times.audio;
    times.mel += audio_times.mel;
    let (frame_indices, frames) = frames?;
    let (mel, has_audio, audio_seconds) = audio?;
    Ok(Clip {
        frames,
        frame_indices,
        num_video_frames,
        declared_frames,
        fps,
        mel,
        has_audio,
        audio_seconds,
    })
}

/// The sampled frames of a clip as (indices, (k, 3, S, S) float32): each target picture is
/// converted, padded, resized and normalised as soon as it is decoded.
fn clip_frames(
    video: &Track,
    path: &str,
    opts: &ClipOptions,
    times: &mut StageTimes,
) -> MediaResult<(Vec<usize>, Vec<f32>)> {
    let indices = uniform_indices(frame_count(video), opts.num_frames);
    let s = opts.image_size as usize;
    let per_frame = 3 * s * s;
    let mut frames = vec![0f32; indices.len() * per_frame];
    let orientation = video.orientation;
    let mut converter = RgbConverter::new();
    let mut resizer = SquareResizer::new(opts.image_size);
    let fill = fill_colour(opts.mean);
    let (mut resize_time, mut normalise_time) = (Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    let decoded = decode_targets(video, &indices, opts.decoder_threads, path, &mut |idx, picture| {
        let rgb = converter.convert_view(picture, path, opts.max_dimension)?;
        let upright;
        let rgb = if orientation.is_identity() {
            rgb
        } else {
            upright = orientation.apply(rgb);
            upright.view()
        };
        let resized = timed(&mut resize_time, || resizer.resize(rgb, opts.aspect, fill))
            .map_err(|r| MediaError::new(path, r))?;
        // Short clips repeat frames: normalise into the first slot, copy into the others.
        let mut slots = indices.iter().enumerate().filter(|&(_, &i)| i == idx).map(|(slot, _)| slot);
        let first = slots.next().expect("targets come from indices");
        timed(&mut normalise_time, || {
            normalise_pixels(resized, opts.mean, opts.std, &mut frames[first * per_frame..(first + 1) * per_frame]);
            for slot in slots {
                frames.copy_within(first * per_frame..(first + 1) * per_frame, slot * per_frame);
            }
        });
        Ok(())
    });
    times.convert += converter.spent;
    times.resize += resize_time;
    times.normalise += normalise_time;
    times.decode += started.elapsed().saturating_sub(converter.spent + resize_time + normalise_time);
    times.pictures += decoded?;
    times.frames += frame_count(video);
    Ok((indices, frames))
}

/// The clip's Whisper log-mel, whether it has audio, and the audio length in seconds.
fn clip_audio(
    own_track: Option<Track>,
    path: &str,
    opts: &ClipOptions,
    times: &mut StageTimes,
) -> MediaResult<(Option<Vec<f32>>, bool, f64)> {
    if !opts.audio {
        return Ok((None, false, 0.0));
    }
    // The features use the first 30 s: decoding stops soon after them.
    let limit = Some((N_SAMPLES / SAMPLE_RATE) as f64);
    let audio = timed(&mut times.audio, || match &opts.audio_path {
        Some(audio_path) => load_audio_16k(audio_path, opts.downmix, limit),
        None => track_to_16k(own_track.as_ref(), path, opts.downmix, limit),
    })?;
    if audio.is_none() && opts.require_audio {
        let source = opts.audio_path.as_deref().unwrap_or(path);
        return Err(MediaError::new(source, "no audio stream (require_audio=True)"));
    }
    let has_audio = audio.is_some();
    let (samples, seconds) = audio.map_or((Vec::new(), 0.0), |a| (a.samples, a.seconds));
    let mel = timed(&mut times.mel, || whisper_log_mel(&samples, opts.n_mels)).map_err(|r| MediaError::new(path, r))?;
    Ok((Some(mel), has_audio, seconds))
}

/// [`load_clip`] over many paths in parallel (rayon), results in input order, one error per
/// failed item. `threads` = 0 uses rayon's global pool; otherwise a pool of that size.
///
/// Scheduling: each worker takes the next clip from one shared queue ordered by file size,
/// largest first (longest-processing-time-first), so that a big clip does not start last and
/// leave the other workers idle at the end of the batch. Inside a clip, idle workers pick up its
/// audio and log-mel work.
pub fn load_batch(paths: &[String], opts: &ClipOptions, threads: usize) -> Vec<MediaResult<Clip>> {
    // The whole batch's outputs are checked against the limits before any clip is decoded.
    if let Some(first) = paths.first() {
        if let Err(e) = opts.validate_for(first, paths.len()) {
            return paths.iter().map(|p| Err(MediaError::new(p.clone(), e.reason.clone()))).collect();
        }
    }
    let run = || {
        let mut order: Vec<usize> = (0..paths.len()).collect();
        let size = |i: usize| std::fs::metadata(&paths[i]).map_or(0, |m| m.len());
        order.sort_by_cached_key(|&i| std::cmp::Reverse(size(i)));
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<MediaResult<Clip>>>> = Mutex::new((0..paths.len()).map(|_| None).collect());
        let workers = rayon::current_num_threads().min(paths.len());
        rayon::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|_| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    let clip = load_clip(&paths[i], opts);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(clip);
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .map(|r| r.expect("every queued clip was loaded"))
            .collect::<Vec<_>>()
    };
    if threads == 0 {
        return run();
    }
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    }
}

//! Audio: first audio stream -> mono -> 16 kHz float32 (swresample).
//!
//! Mono is FFmpeg's downmix by default ([`Downmix::Ffmpeg`]: swresample's channel matrix, what
//! decord's `AudioReader(mono=True)` gave HumanOmni's training), or the plain mean of the
//! channels ([`Downmix::Mean`]). Non-finite samples become 0, before resampling (so one NaN
//! cannot smear over the filter's support) and after it. Decoding can stop after a given
//! number of seconds (the 30 s Whisper features use), so memory does not grow with the clip.

use ffmpeg_next as ff;
use ff::ffi;

use super::video::{demux, DemuxRequest, Track};
use super::{guarded, MediaError, MediaResult};

pub const TARGET_RATE: i32 = 16_000;

/// How several channels become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Downmix {
    /// swresample's matrix for the frame's channel layout to mono (as `ffmpeg -ac 1` and
    /// decord's `AudioReader(mono=True)`): e.g. stereo `(L + R) / sqrt 2`; 5.1 adds the centre
    /// at 1, front pairs at 1/sqrt 2, surrounds at 1/2, drops the LFE.
    #[default]
    Ffmpeg,
    /// The mean of the channels.
    Mean,
}

impl std::str::FromStr for Downmix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ffmpeg" => Ok(Downmix::Ffmpeg),
            "mean" => Ok(Downmix::Mean),
            other => Err(format!("downmix must be \"ffmpeg\" or \"mean\", got {other:?}")),
        }
    }
}

/// swresample set up to turn one channel layout / sample format into mono float at the same
/// rate (a channel matrix, no resampling).
struct Rematrix {
    swr: *mut ffi::SwrContext,
    key: (i32, u64, i32, i32),
    out: Vec<f32>,
}

impl Rematrix {
    fn new() -> Self {
        Rematrix { swr: std::ptr::null_mut(), key: (0, 0, 0, 0), out: Vec::new() }
    }

    /// Appends the downmix of `frame` to `mono`.
    ///
    /// # Safety
    /// `frame` must be a valid decoded audio frame.
    unsafe fn append(&mut self, frame: *const ffi::AVFrame, mono: &mut Vec<f32>) -> Result<(), String> {
        let n = (*frame).nb_samples.max(0);
        let channels = (*frame).ch_layout.nb_channels;
        if channels <= 0 || n == 0 {
            return Ok(());
        }
        let mut in_layout: ffi::AVChannelLayout = std::mem::zeroed();
        if (*frame).ch_layout.order == ffi::AVChannelOrder::AV_CHANNEL_ORDER_UNSPEC
            || ffi::av_channel_layout_copy(&mut in_layout, &(*frame).ch_layout) < 0
        {
            ffi::av_channel_layout_uninit(&mut in_layout);
            ffi::av_channel_layout_default(&mut in_layout, channels);
        }
        let mask = if in_layout.order == ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE { in_layout.u.mask } else { 0 };
        let key = (channels, mask, (*frame).format, (*frame).sample_rate);
        if self.swr.is_null() || key != self.key {
            ffi::swr_free(&mut self.swr);
            let mut out_layout: ffi::AVChannelLayout = std::mem::zeroed();
            ffi::av_channel_layout_default(&mut out_layout, 1);
            let in_fmt: ffi::AVSampleFormat = std::mem::transmute((*frame).format);
            let rate = (*frame).sample_rate;
            let rc = ffi::swr_alloc_set_opts2(
                &mut self.swr, &mut out_layout, ffi::AVSampleFormat::AV_SAMPLE_FMT_FLT, rate,
                &mut in_layout, in_fmt, rate, 0, std::ptr::null_mut(),
            );
            if rc < 0 || self.swr.is_null() || ffi::swr_init(self.swr) < 0 {
                ffi::swr_free(&mut self.swr);
                ffi::av_channel_layout_uninit(&mut in_layout);
                return Err(format!("cannot downmix {channels} audio channels ({in_fmt:?}) to mono"));
            }
            self.key = key;
        }
        ffi::av_channel_layout_uninit(&mut in_layout);
        let cap = ffi::swr_get_out_samples(self.swr, n).max(0) as usize + 16;
        self.out.resize(cap, 0.0);
        let mut out_ptr = self.out.as_mut_ptr() as *mut u8;
        let written = ffi::swr_convert(
            self.swr, &mut out_ptr, cap as i32, (*frame).extended_data as *mut *const u8, n,
        );
        if written < 0 {
            return Err("audio downmix failed".into());
        }
        mono.extend(self.out[..written as usize].iter().map(|&v| if v.is_finite() { v } else { 0.0 }));
        Ok(())
    }
}

impl Drop for Rematrix {
    fn drop(&mut self) {
        // SAFETY: swr is null or a context this struct allocated.
        unsafe { ffi::swr_free(&mut self.swr) }
    }
}

/// Mono samples of one decoded frame, appended to `out` (mean over channels).
///
/// # Safety
/// `frame` must be a valid decoded audio frame.
unsafe fn append_mono(frame: *const ffi::AVFrame, out: &mut Vec<f32>) -> Result<(), String> {
    use ffi::AVSampleFormat::*;
    let channels = (*frame).ch_layout.nb_channels.max(0) as usize;
    let n = (*frame).nb_samples.max(0) as usize;
    if channels == 0 || n == 0 {
        return Ok(());
    }
    let format: ffi::AVSampleFormat = std::mem::transmute((*frame).format);
    let planar = ffi::av_sample_fmt_is_planar(format) == 1;
    let data = (*frame).extended_data;
    // Sample s of channel c as f32, for each storage type.
    let read = |c: usize, s: usize| -> f32 {
        let (plane, offset) = if planar { (c, s) } else { (0, s * channels + c) };
        let base = *data.add(plane);
        match format {
            AV_SAMPLE_FMT_FLT | AV_SAMPLE_FMT_FLTP => *(base as *const f32).add(offset),
            AV_SAMPLE_FMT_DBL | AV_SAMPLE_FMT_DBLP => *(base as *const f64).add(offset) as f32,
            AV_SAMPLE_FMT_S16 | AV_SAMPLE_FMT_S16P => *(base as *const i16).add(offset) as f32 / 32768.0,
            AV_SAMPLE_FMT_S32 | AV_SAMPLE_FMT_S32P => *(base as *const i32).add(offset) as f32 / 2147483648.0,
            AV_SAMPLE_FMT_S64 | AV_SAMPLE_FMT_S64P => (*(base as *const i64).add(offset) as f64 / 2f64.powi(63)) as f32,
            AV_SAMPLE_FMT_U8 | AV_SAMPLE_FMT_U8P => (*base.add(offset) as f32 - 128.0) / 128.0,
            _ => f32::NAN,
        }
    };
    if !matches!(
        format,
        AV_SAMPLE_FMT_FLT | AV_SAMPLE_FMT_FLTP | AV_SAMPLE_FMT_DBL | AV_SAMPLE_FMT_DBLP
            | AV_SAMPLE_FMT_S16 | AV_SAMPLE_FMT_S16P | AV_SAMPLE_FMT_S32 | AV_SAMPLE_FMT_S32P
            | AV_SAMPLE_FMT_S64 | AV_SAMPLE_FMT_S64P | AV_SAMPLE_FMT_U8 | AV_SAMPLE_FMT_U8P
    ) {
        return Err(format!("unsupported audio sample format {format:?}"));
    }
    out.reserve(n);
    for s in 0..n {
        let mut sum = 0f32;
        for c in 0..channels {
            sum += read(c, s);
        }
        let v = sum / channels as f32;
        out.push(if v.is_finite() { v } else { 0.0 });
    }
    Ok(())
}

/// Decodes an audio track to mono float32; returns (samples, sample rate, whether decoding
/// stopped early). With `max_seconds`, stops once the samples cover that many seconds plus a
/// one-second margin (so that resampling the kept samples gives the same first `max_seconds`
/// as resampling everything).
fn decode_mono(track: &Track, path: &str, downmix: Downmix, max_seconds: Option<f64>) -> MediaResult<(Vec<f32>, i32, bool)> {
    let err = |r: String| MediaError::new(path, r);
    let mut ctx = ff::codec::Context::new();
    // SAFETY: copying the parameters of one valid context into a fresh one.
    unsafe {
        let mut params = ffi::avcodec_parameters_alloc();
        let ok = !params.is_null()
            && ffi::avcodec_parameters_from_context(params, track.ctx.as_ptr()) >= 0
            && ffi::avcodec_parameters_to_context(ctx.as_mut_ptr(), params) >= 0;
        ffi::avcodec_parameters_free(&mut params);
        if !ok {
            return Err(err("cannot copy audio codec parameters".into()));
        }
        (*ctx.as_mut_ptr()).pkt_timebase = track.time_base.into();
    }
    let mut decoder = ctx.decoder().audio().map_err(|e| err(format!("no decoder for the audio codec: {e}")))?;
    let mut frame = ff::util::frame::Audio::empty();
    let mut mono = Vec::new();
    let mut rate = 0i32;
    let mut rematrix = Rematrix::new();
    let mut drain = |decoder: &mut ff::decoder::Audio, mono: &mut Vec<f32>, rate_out: &mut i32| -> MediaResult<()> {
        while decoder.receive_frame(&mut frame).is_ok() {
            // SAFETY: `frame` holds a picture just returned by the decoder.
            unsafe {
                let r = (*frame.as_ptr()).sample_rate;
                if rate == 0 {
                    rate = r;
                } else if r != rate {
                    return Err(err(format!("sample rate changes mid-stream ({rate} -> {r} Hz)")));
                }
                match downmix {
                    Downmix::Mean => append_mono(frame.as_ptr(), mono).map_err(&err)?,
                    Downmix::Ffmpeg => rematrix.append(frame.as_ptr(), mono).map_err(&err)?,
                }
                *rate_out = rate;
            }
        }
        Ok(())
    };
    let mut stopped = false;
    let mut rate_seen = 0i32;
    for p in &track.packets {
        // A packet the decoder rejects is dropped, as players do.
        let _ = decoder.send_packet(p);
        drain(&mut decoder, &mut mono, &mut rate_seen)?;
        if let Some(limit) = max_seconds {
            if rate_seen > 0 && mono.len() as f64 >= (limit + 1.0) * rate_seen as f64 {
                stopped = true;
                break;
            }
        }
    }
    if !stopped {
        let _ = decoder.send_eof();
        drain(&mut decoder, &mut mono, &mut rate_seen)?;
    }
    drop(drain);
    let rate = rate_seen;
    if mono.is_empty() {
        return Err(err("audio stream decodes to no samples".into()));
    }
    if rate <= 0 {
        return Err(err(format!("invalid audio sample rate {rate}")));
    }
    Ok((mono, rate, stopped))
}

/// Resamples mono float32 from `rate` to 16 kHz with swresample's default filter.
pub fn resample_to_16k(mono: &[f32], rate: i32) -> Result<Vec<f32>, String> {
    if rate == TARGET_RATE {
        return Ok(mono.to_vec());
    }
    if rate <= 0 {
        return Err(format!("invalid sample rate {rate}"));
    }
    let n_in = i32::try_from(mono.len()).map_err(|_| "audio too long to resample".to_string())?;
    // SAFETY: standard swresample life cycle; buffers are sized by swr_get_out_samples.
    unsafe {
        let mut swr: *mut ffi::SwrContext = std::ptr::null_mut();
        let mut layout: ffi::AVChannelLayout = std::mem::zeroed();
        ffi::av_channel_layout_default(&mut layout, 1);
        let fmt = ffi::AVSampleFormat::AV_SAMPLE_FMT_FLT;
        let rc = ffi::swr_alloc_set_opts2(&mut swr, &mut layout, fmt, TARGET_RATE, &mut layout, fmt, rate, 0, std::ptr::null_mut());
        if rc < 0 || swr.is_null() || ffi::swr_init(swr) < 0 {
            ffi::swr_free(&mut swr);
            return Err("cannot set up the audio resampler".into());
        }
        let cap = ffi::swr_get_out_samples(swr, n_in).max(0) as usize + 64;
        let mut out = vec![0f32; cap];
        let mut in_ptr = mono.as_ptr() as *const u8;
        let mut out_ptr = out.as_mut_ptr() as *mut u8;
        let written = ffi::swr_convert(swr, &mut out_ptr, cap as i32, &mut in_ptr, n_in);
        let mut total = written.max(0) as usize;
        let mut failed = written < 0;
        // Flush what the filter still holds.
        while !failed {
            if out.len() - total < 1024 {
                out.resize(total + 4096, 0.0);
            }
            out_ptr = out.as_mut_ptr().add(total) as *mut u8;
            let w = ffi::swr_convert(swr, &mut out_ptr, (out.len() - total) as i32, std::ptr::null_mut(), 0);
            if w <= 0 {
                failed = w < 0;
                break;
            }
            total += w as usize;
        }
        ffi::swr_free(&mut swr);
        if failed {
            return Err("audio resampling failed".into());
        }
        out.truncate(total);
        for v in out.iter_mut() {
            if !v.is_finite() {
                *v = 0.0;
            }
        }
        Ok(out)
    }
}

/// 16 kHz mono audio of a clip: the samples (at most `max_seconds` of them when given) and the
/// length of the whole stream in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio16k {
    pub samples: Vec<f32>,
    /// `samples.len() / 16000` when the stream was decoded to its end; otherwise the stream's
    /// length from its packets' timestamps and durations.
    pub seconds: f64,
}

/// Length of a track from its packets: last (pts + duration) - first pts, in seconds.
fn packet_seconds(track: &Track) -> Option<f64> {
    let tb = track.time_base.numerator() as f64 / track.time_base.denominator().max(1) as f64;
    let first = track.packets.iter().filter_map(|p| p.pts()).min()?;
    let last = track.packets.iter().filter_map(|p| p.pts().map(|t| t + p.duration().max(0))).max()?;
    let s = (last - first) as f64 * tb;
    (s.is_finite() && s > 0.0).then_some(s)
}

/// The first audio stream of a demuxed file as 16 kHz mono float32, or `None` without one.
pub(crate) fn track_to_16k(
    track: Option<&Track>,
    path: &str,
    downmix: Downmix,
    max_seconds: Option<f64>,
) -> MediaResult<Option<Audio16k>> {
    let Some(track) = track else { return Ok(None) };
    let (mono, rate, stopped) = decode_mono(track, path, downmix, max_seconds)?;
    let mut samples = resample_to_16k(&mono, rate).map_err(|r| MediaError::new(path, r))?;
    drop(mono);
    let mut seconds = samples.len() as f64 / TARGET_RATE as f64;
    if let Some(limit) = max_seconds {
        samples.truncate((limit * TARGET_RATE as f64).ceil() as usize);
        if stopped {
            seconds = packet_seconds(track).unwrap_or(seconds).max(seconds);
        }
    }
    Ok(Some(Audio16k { samples, seconds }))
}

/// The first audio stream of `path` (a video or an audio file) as 16 kHz mono float32;
/// `Ok(None)` when the file has no audio stream. `max_seconds` keeps only the first seconds
/// (decoding stops soon after them).
pub fn load_audio_16k(path: &str, downmix: Downmix, max_seconds: Option<f64>) -> MediaResult<Option<Audio16k>> {
    guarded(path, || {
        let demuxed = demux(path, DemuxRequest { video: false, audio: true, max_dimension: u32::MAX })?;
        track_to_16k(demuxed.audio.as_ref(), path, downmix, max_seconds)
    })
}

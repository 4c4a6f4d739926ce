//! Audio: first audio stream -> mean of channels -> 16 kHz float32 mono (swresample).
//!
//! Non-finite samples become 0, before resampling (so one NaN cannot smear over the filter's
//! support) and after it.

use ffmpeg_next as ff;
use ff::ffi;

use super::video::{demux, DemuxRequest, Track};
use super::{guarded, MediaError, MediaResult};

pub const TARGET_RATE: i32 = 16_000;

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

/// Decodes an audio track to mono float32; returns (samples, sample rate).
fn decode_mono(track: &Track, path: &str) -> MediaResult<(Vec<f32>, i32)> {
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
    let mut drain = |decoder: &mut ff::decoder::Audio, mono: &mut Vec<f32>| -> MediaResult<()> {
        while decoder.receive_frame(&mut frame).is_ok() {
            // SAFETY: `frame` holds a picture just returned by the decoder.
            unsafe {
                let r = (*frame.as_ptr()).sample_rate;
                if rate == 0 {
                    rate = r;
                } else if r != rate {
                    return Err(err(format!("sample rate changes mid-stream ({rate} -> {r} Hz)")));
                }
                append_mono(frame.as_ptr(), mono).map_err(&err)?;
            }
        }
        Ok(())
    };
    for p in &track.packets {
        // A packet the decoder rejects is dropped, as players do.
        let _ = decoder.send_packet(p);
        drain(&mut decoder, &mut mono)?;
    }
    let _ = decoder.send_eof();
    drain(&mut decoder, &mut mono)?;
    if mono.is_empty() {
        return Err(err("audio stream decodes to no samples".into()));
    }
    if rate <= 0 {
        return Err(err(format!("invalid audio sample rate {rate}")));
    }
    Ok((mono, rate))
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

/// The first audio stream of a demuxed file as 16 kHz mono float32, or `None` without one.
pub(crate) fn track_to_16k(track: Option<&Track>, path: &str) -> MediaResult<Option<Vec<f32>>> {
    let Some(track) = track else { return Ok(None) };
    let (mono, rate) = decode_mono(track, path)?;
    resample_to_16k(&mono, rate).map(Some).map_err(|r| MediaError::new(path, r))
}

/// The first audio stream of `path` (a video or an audio file) as 16 kHz mono float32;
/// `Ok(None)` when the file has no audio stream.
pub fn load_audio_16k(path: &str) -> MediaResult<Option<Vec<f32>>> {
    guarded(path, || {
        let demuxed = demux(path, DemuxRequest { video: false, audio: true, max_dimension: u32::MAX })?;
        track_to_16k(demuxed.audio.as_ref(), path)
    })
}

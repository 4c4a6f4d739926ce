//! Demuxing and exact video-frame decoding.
//!
//! One pass reads every packet of the first video stream (and, when asked, of the first audio
//! stream) into memory; the packet count is the exact frame count N. Frame i is the packet with
//! the i-th smallest presentation timestamp. To decode a set of target frames, each target is
//! reached from the last keyframe before it (a "seek" inside the in-memory packet list when the
//! target lies beyond a keyframe we have not reached), non-target packets are sent with
//! `skip_frame = AVDISCARD_NONREF` so that non-reference pictures are not reconstructed, and
//! pictures are matched to targets by timestamp. Streams without usable timestamps fall back to
//! decoding everything and counting output frames. Conversion to RGB24 uses swscale at full size
//! with the frame's colour matrix and range (the same call PyAV's `to_ndarray("rgb24")` makes).

use std::collections::{BTreeMap, BTreeSet};

use ffmpeg_next as ff;
use ff::codec::packet::{Packet, Ref as _};
use ff::ffi;

use super::image::{Orientation, RgbImage, RgbView};
use super::{guarded, init_ffmpeg, MediaError, MediaResult};

/// Give up demuxing after this many consecutive unreadable packets (a demuxer resyncs past one
/// bad packet; an endless run of them means the file is garbage).
const MAX_CONSECUTIVE_BAD_PACKETS: usize = 1024;

/// One elementary stream: an unopened decoder context and all of its packets in decode order.
pub(crate) struct Track {
    pub ctx: ff::codec::Context,
    pub packets: Vec<Packet>,
    pub time_base: ff::Rational,
    pub frame_rate: ff::Rational,
    /// `r_frame_rate` of the stream (the base rate).
    pub base_rate: ff::Rational,
    /// `nb_frames` from the container (0 when unknown): a hint, never checked against.
    pub declared_frames: i64,
    /// The stream's display matrix as FFmpeg's command line applies it (identity without one).
    pub orientation: Orientation,
}

/// Whether FFmpeg's decoders drop the picture of this packet (`AV_PKT_FLAG_DISCARD`: the MP4
/// edit list keeps it only as a reference for the presented pictures).
pub(crate) fn is_discarded(p: &Packet) -> bool {
    // SAFETY: a plain field read of a valid packet.
    unsafe { (*p.as_ptr()).flags & ffi::AV_PKT_FLAG_DISCARD != 0 }
}

/// The display matrix (9 x int32, 16.16 / 2.30 fixed point) turned into the right-angle
/// transform FFmpeg 5.1's command line inserts for it (`transpose`, `hflip`, `vflip`): the
/// angle is `-round(av_display_rotation_get(m))` modulo 360, then
/// 90: `cclock_flip` if `m[3] > 0` else `clock`; 180: `hflip` if `m[0] < 0`, `vflip` if
/// `m[4] < 0`; 270: `clock_flip` if `m[3] < 0` else `cclock`; 0: `vflip` if `m[4] < 0`.
/// Other angles (which the command line rotates with interpolation) are left as stored.
pub fn orientation_of_display_matrix(m: &[i32; 9]) -> Orientation {
    let fp = |v: i32| v as f64 / 65536.0;
    let (s0, s1) = (fp(m[0]).hypot(fp(m[3])), fp(m[1]).hypot(fp(m[4])));
    if s0 == 0.0 || s1 == 0.0 {
        return Orientation::default();
    }
    let rotation = -(fp(m[1]) / s1).atan2(fp(m[0]) / s0).to_degrees();
    let mut theta = -rotation.round();
    theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
    let near = |a: f64| (theta - a).abs() < 1.0;
    let t = |transpose, flip_x, flip_y| Orientation { transpose, flip_x, flip_y };
    if near(90.0) {
        if m[3] > 0 { t(true, false, false) } else { t(true, true, false) }
    } else if near(180.0) {
        t(false, m[0] < 0, m[4] < 0)
    } else if near(270.0) {
        if m[3] < 0 { t(true, true, true) } else { t(true, false, true) }
    } else if theta.abs() < 1.0 {
        t(false, false, m[4] < 0)
    } else {
        Orientation::default()
    }
}

fn stream_orientation(stream: &ff::format::stream::Stream) -> Orientation {
    for sd in stream.side_data() {
        if sd.kind() == ff::codec::packet::side_data::Type::DisplayMatrix && sd.data().len() >= 36 {
            let d = sd.data();
            let m: [i32; 9] = std::array::from_fn(|i| i32::from_ne_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]]));
            return orientation_of_display_matrix(&m);
        }
    }
    Orientation::default()
}

/// The streams a caller asked for, read in one pass.
pub(crate) struct Demuxed {
    pub video: Option<Track>,
    pub audio: Option<Track>,
}

/// What to read, and the guards on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DemuxRequest {
    pub video: bool,
    pub audio: bool,
    pub max_dimension: u32,
}

fn is_attached_picture(stream: &ff::format::stream::Stream) -> bool {
    stream.disposition().contains(ff::format::stream::Disposition::ATTACHED_PIC)
}

/// Opens `path` and reads the packets of its first video and/or first audio stream.
pub(crate) fn demux(path: &str, req: DemuxRequest) -> MediaResult<Demuxed> {
    init_ffmpeg();
    let err = |reason: String| MediaError::new(path, reason);
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read file: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() == 0 {
        return Err(err("empty file".into()));
    }
    let mut input = open_input(path).map_err(|e| err(format!("not a readable media file: {e}")))?;

    let format_name = input.format().name().to_string();
    if req.video && is_still_image_format(&format_name) {
        return Err(err(format!("a still image ({format_name}), not a video")));
    }
    let pick = |kind: ff::media::Type| -> MediaResult<Option<(usize, Track)>> {
        let Some(stream) = input
            .streams()
            .find(|s| s.parameters().medium() == kind && !is_attached_picture(s))
        else {
            return Ok(None);
        };
        let ctx = ff::codec::Context::from_parameters(stream.parameters())
            .map_err(|e| err(format!("cannot read {kind:?} codec parameters: {e}")))?;
        Ok(Some((
            stream.index(),
            Track {
                ctx,
                packets: Vec::new(),
                time_base: stream.time_base(),
                frame_rate: stream.avg_frame_rate(),
                base_rate: stream.rate(),
                declared_frames: stream.frames(),
                orientation: stream_orientation(&stream),
            },
        )))
    };
    let mut video = if req.video { pick(ff::media::Type::Video)? } else { None };
    let mut audio = if req.audio { pick(ff::media::Type::Audio)? } else { None };
    if req.video && video.is_none() {
        return Err(err("no video stream".into()));
    }
    if let Some((_, v)) = &video {
        // SAFETY: the context was just filled from the stream's parameters.
        let (w, h) = unsafe { ((*v.ctx.as_ptr()).width, (*v.ctx.as_ptr()).height) };
        check_dimensions(path, w, h, req.max_dimension)?;
    }

    let mut bad_in_a_row = 0usize;
    let mut truncated = false;
    loop {
        let mut packet = Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => bad_in_a_row = 0,
            Err(ff::Error::Eof) => break,
            Err(ff::Error::InvalidData) => {
                bad_in_a_row += 1;
                if bad_in_a_row > MAX_CONSECUTIVE_BAD_PACKETS {
                    return Err(err("corrupt container: no readable packets".into()));
                }
                continue;
            }
            Err(e) => {
                // I/O errors are sticky in libavformat: stop here, and judge what we have.
                truncated = true;
                let _ = e;
                break;
            }
        }
        if packet.size() == 0 {
            continue;
        }
        let target = match (&mut video, &mut audio) {
            (Some((i, t)), _) if *i == packet.stream() => t,
            (_, Some((i, t))) if *i == packet.stream() => t,
            _ => continue,
        };
        if packet.is_corrupt() {
            truncated = true;
        }
        target.packets.push(packet);
    }

    if let Some((_, v)) = &video {
        let n = frame_count(v);
        if n == 0 {
            return Err(err("video stream has no packets".into()));
        }
        // The declared count is a hint (edit lists, muxers and writers that lie make it differ
        // from what is presented); only a read error or a packet flagged corrupt is truncation.
        if truncated {
            return Err(err(format!(
                "truncated or corrupt file: reading stopped with an error after {n} video frames \
                 (the container declares {})",
                v.declared_frames
            )));
        }
    }
    Ok(Demuxed { video: video.map(|(_, t)| t), audio: audio.map(|(_, t)| t) })
}

/// Opens `path` for demuxing.
///
/// The stream probe (`avformat_find_stream_info`, which decodes the first pictures and audio
/// frames of every stream) is skipped for MP4/MOV files whose header already gives each stream's
/// codec, picture size or sample rate and channels: their sample tables hold the exact frame
/// count and frame rate, and the decoders learn everything else from the bitstream. Any other
/// file is probed, as `ffmpeg_next::format::input` does.
fn open_input(path: &str) -> Result<ff::format::context::Input, ff::Error> {
    let c_path = std::ffi::CString::new(path).map_err(|_| ff::Error::InvalidData)?;
    // SAFETY: the standard libavformat open sequence; on failure the context is closed here,
    // on success it is owned by the returned `Input`.
    unsafe {
        let mut ctx: *mut ffi::AVFormatContext = std::ptr::null_mut();
        let rc = ffi::avformat_open_input(&mut ctx, c_path.as_ptr(), std::ptr::null(), std::ptr::null_mut());
        if rc < 0 {
            return Err(ff::Error::from(rc));
        }
        if !header_is_complete(ctx) {
            let rc = ffi::avformat_find_stream_info(ctx, std::ptr::null_mut());
            if rc < 0 {
                ffi::avformat_close_input(&mut ctx);
                return Err(ff::Error::from(rc));
            }
        }
        Ok(ff::format::context::Input::wrap(ctx))
    }
}

/// Whether an opened MP4/MOV file's header describes every stream fully (see [`open_input`]).
///
/// # Safety
/// `ctx` must be a valid, opened input context.
unsafe fn header_is_complete(ctx: *const ffi::AVFormatContext) -> bool {
    let format = (*ctx).iformat;
    if format.is_null() || std::ffi::CStr::from_ptr((*format).name).to_bytes() != b"mov,mp4,m4a,3gp,3g2,mj2" {
        return false;
    }
    let streams = std::slice::from_raw_parts((*ctx).streams, (*ctx).nb_streams as usize);
    streams.iter().all(|&st| {
        let par = (*st).codecpar;
        if par.is_null() || (*par).codec_id == ffi::AVCodecID::AV_CODEC_ID_NONE {
            return false;
        }
        match (*par).codec_type {
            ffi::AVMediaType::AVMEDIA_TYPE_VIDEO => (*par).width > 0 && (*par).height > 0,
            ffi::AVMediaType::AVMEDIA_TYPE_AUDIO => (*par).sample_rate > 0 && (*par).ch_layout.nb_channels > 0,
            _ => true,
        }
    })
}

/// FFmpeg's single-picture demuxers (`png_pipe`, `jpeg_pipe`, `image2`, ...): a still image
/// is not a clip.
fn is_still_image_format(name: &str) -> bool {
    name.ends_with("_pipe") || name == "image2"
}

pub(crate) fn check_dimensions(path: &str, w: i32, h: i32, max_dimension: u32) -> MediaResult<()> {
    if w <= 0 || h <= 0 {
        return Err(MediaError::new(path, format!("invalid picture size {w}x{h}")));
    }
    if w as u32 > max_dimension || h as u32 > max_dimension {
        return Err(MediaError::new(
            path,
            format!("picture size {w}x{h} exceeds the dimension limit {max_dimension}"),
        ));
    }
    Ok(())
}

/// Frames per second of a track: the average frame rate; else the base rate (`r_frame_rate`);
/// else `(N - 1) / (last - first presentation time)` of the presented frames; else
/// `N / (sum of their packet durations)`; NaN when none of these exists (never 0).
pub(crate) fn fps(track: &Track) -> f64 {
    let rate = |r: ff::Rational| (r.numerator() > 0 && r.denominator() > 0).then(|| r.numerator() as f64 / r.denominator() as f64);
    if let Some(r) = rate(track.frame_rate).or_else(|| rate(track.base_rate)) {
        return r;
    }
    let tb = track.time_base.numerator() as f64 / track.time_base.denominator().max(1) as f64;
    let presented: Vec<&Packet> = track.packets.iter().filter(|p| !is_discarded(p)).collect();
    let n = presented.len() as f64;
    let pts: Vec<i64> = presented.iter().filter_map(|p| p.pts()).collect();
    if let (Some(lo), Some(hi)) = (pts.iter().min(), pts.iter().max()) {
        let span = (*hi as f64 - *lo as f64) * tb;
        if pts.len() == presented.len() && presented.len() > 1 && span > 0.0 && span.is_finite() {
            return (n - 1.0) / span;
        }
    }
    let total: f64 = presented.iter().map(|p| p.duration().max(0) as f64).sum::<f64>() * tb;
    if total > 0.0 && total.is_finite() {
        return n / total;
    }
    f64::NAN
}

/// Converts decoded pictures to packed RGB24 at full size as the ffmpeg command line does (the
/// same swscale, its default bicubic flags, the picture's tagged matrix and range), recreating
/// the swscale context when the picture format or size changes mid-stream. The output picture is FFmpeg-allocated (aligned
/// rows, as PyAV's), and is reused from one conversion to the next.
pub(crate) struct RgbConverter {
    scaler: Option<(ff::format::Pixel, u32, u32, ff::software::scaling::Context)>,
    out: ff::util::frame::Video,
    /// Wall time spent converting (for the stage profile).
    pub spent: std::time::Duration,
}

impl RgbConverter {
    pub fn new() -> Self {
        RgbConverter { scaler: None, out: ff::util::frame::Video::empty(), spent: std::time::Duration::ZERO }
    }

    /// `frame` as RGB24, borrowed from the converter's output picture (no copy).
    pub fn convert_view(&mut self, frame: &ff::util::frame::Video, path: &str, max_dim: u32) -> MediaResult<RgbView<'_>> {
        let started = std::time::Instant::now();
        let (fmt, w, h) = (frame.format(), frame.width(), frame.height());
        check_dimensions(path, w as i32, h as i32, max_dim)?;
        let stale = !matches!(&self.scaler, Some((f, sw, sh, _)) if *f == fmt && *sw == w && *sh == h);
        if stale {
            let mut ctx = ff::software::scaling::Context::get(
                fmt,
                w,
                h,
                ff::format::Pixel::RGB24,
                w,
                h,
                // The ffmpeg command line's default (`-sws_flags bicubic`): pictures without an
                // unscaled fast path (10-bit, 4:2:2, ...) then convert exactly as
                // `ffmpeg -pix_fmt rgb24` converts them; 8-bit 4:2:0 takes the fast path either way.
                ff::software::scaling::Flags::BICUBIC,
            )
            .map_err(|e| MediaError::new(path, format!("cannot convert {fmt:?} pictures to RGB: {e}")))?;
            set_colour_details(&mut ctx, frame);
            self.scaler = Some((fmt, w, h, ctx));
            self.out = ff::util::frame::Video::empty();
        }
        let (_, _, _, ctx) = self.scaler.as_mut().expect("scaler set above");
        ctx.run(frame, &mut self.out)
            .map_err(|e| MediaError::new(path, format!("colour conversion failed: {e}")))?;
        self.spent += started.elapsed();
        Ok(RgbView { width: w, height: h, stride: self.out.stride(0), data: self.out.data(0) })
    }

    /// `frame` as an owned, tightly packed RGB24 picture.
    fn convert(&mut self, frame: &ff::util::frame::Video, path: &str, max_dim: u32) -> MediaResult<RgbImage> {
        let view = self.convert_view(frame, path, max_dim)?;
        let row = view.width as usize * 3;
        let mut data = Vec::with_capacity(row * view.height as usize);
        for y in 0..view.height as usize {
            data.extend_from_slice(view.row(y));
        }
        Ok(RgbImage { width: view.width, height: view.height, data })
    }
}

/// Uses the picture's tagged YUV matrix and range, as `sws_scale_frame` does for PyAV; untagged
/// pictures keep swscale's defaults (BT.601, range implied by the pixel format).
fn set_colour_details(ctx: &mut ff::software::scaling::Context, frame: &ff::util::frame::Video) {
    // SAFETY: plain field reads of a valid frame and a valid, initialised sws context.
    unsafe {
        let f = frame.as_ptr();
        let space = (*f).colorspace as i32;
        let full_range = (*f).color_range == ffi::AVColorRange::AVCOL_RANGE_JPEG;
        let tagged = matches!(space, 1 | 4 | 5 | 6 | 7 | 9 | 10);
        if !tagged && !full_range {
            return;
        }
        let s = ctx.as_mut_ptr();
        let mut inv_table: *mut i32 = std::ptr::null_mut();
        let mut table: *mut i32 = std::ptr::null_mut();
        let (mut src_range, mut dst_range, mut brightness, mut contrast, mut saturation) = (0, 0, 0, 0, 0);
        if ffi::sws_getColorspaceDetails(
            s, &mut inv_table, &mut src_range, &mut table, &mut dst_range,
            &mut brightness, &mut contrast, &mut saturation,
        ) < 0
        {
            return;
        }
        let coefficients = if tagged { ffi::sws_getCoefficients(space) } else { inv_table as *const i32 };
        let src_range = if full_range { 1 } else { src_range };
        ffi::sws_setColorspaceDetails(
            s, coefficients, src_range, table, dst_range, brightness, contrast, saturation,
        );
    }
}

/// Decoder thread settings: `0` lets FFmpeg choose; frame threads otherwise.
fn open_video_decoder(track: &Track, threads: usize, path: &str) -> MediaResult<ff::decoder::Video> {
    // Context holds an AVCodecContext; a fresh copy per decode keeps `track` reusable.
    let mut ctx = ff::codec::Context::new();
    // SAFETY: copying the parameters of one valid context into a fresh one.
    unsafe {
        let params = ffi::avcodec_parameters_alloc();
        if params.is_null()
            || ffi::avcodec_parameters_from_context(params, track.ctx.as_ptr()) < 0
            || ffi::avcodec_parameters_to_context(ctx.as_mut_ptr(), params) < 0
        {
            let mut p = params;
            ffi::avcodec_parameters_free(&mut p);
            return Err(MediaError::new(path, "cannot copy video codec parameters"));
        }
        let mut p = params;
        ffi::avcodec_parameters_free(&mut p);
        (*ctx.as_mut_ptr()).pkt_timebase = track.time_base.into();
    }
    ctx.set_threading(ff::codec::threading::Config {
        kind: ff::codec::threading::Type::Frame,
        count: threads,
        ..Default::default()
    });
    ctx.decoder()
        .video()
        .map_err(|e| MediaError::new(path, format!("no decoder for the video codec: {e}")))
}

fn set_skip(decoder: &mut ff::decoder::Video, skip_non_reference: bool) {
    // SAFETY: skip_frame is a plain field the decoder reads per packet (and frame threads copy).
    unsafe {
        (*decoder.as_mut_ptr()).skip_frame = if skip_non_reference {
            ffi::AVDiscard::AVDISCARD_NONREF
        } else {
            ffi::AVDiscard::AVDISCARD_DEFAULT
        };
    }
}

/// Number of frames FFmpeg presents: the packets not flagged discarded.
pub(crate) fn frame_count(track: &Track) -> usize {
    track.packets.iter().filter(|p| !is_discarded(p)).count()
}

/// Decodes frames `indices` (presentation order, any order, repeats allowed) of `track` to RGB24.
/// Adds the time spent in colour conversion to `convert_time`.
pub(crate) fn decode_track(
    track: &Track,
    indices: &[usize],
    threads: usize,
    max_dim: u32,
    path: &str,
    convert_time: &mut std::time::Duration,
) -> MediaResult<Vec<RgbImage>> {
    let mut converter = RgbConverter::new();
    let mut got: BTreeMap<usize, RgbImage> = BTreeMap::new();
    let orientation = track.orientation;
    let decoded = decode_targets(track, indices, threads, path, &mut |idx, f| {
        let picture = converter.convert(f, path, max_dim)?;
        let picture = if orientation.is_identity() { picture } else { orientation.apply(picture.view()) };
        got.insert(idx, picture);
        Ok(())
    });
    *convert_time += converter.spent;
    decoded?;
    Ok(indices.iter().map(|i| got[i].clone()).collect())
}

/// Decodes the distinct frames of `indices` (presentation order) and hands each decoded target
/// picture to `on_target(index, picture)` once, in decode order. Returns how many pictures the
/// decoder reconstructed (targets and the reference pictures they need; skipped non-reference
/// pictures are not counted). Errors when an index is out of range or a target cannot be
/// decoded.
pub(crate) fn decode_targets(
    track: &Track,
    indices: &[usize],
    threads: usize,
    path: &str,
    on_target: &mut dyn FnMut(usize, &ff::util::frame::Video) -> MediaResult<()>,
) -> MediaResult<usize> {
    let n = frame_count(track);
    if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
        return Err(MediaError::new(path, format!("frame index {bad} out of range: the video has {n} frames")));
    }
    if indices.is_empty() {
        return Ok(0);
    }
    let pts: Vec<Option<i64>> = track.packets.iter().map(|p| p.pts()).collect();
    // Presentation order: the packets whose pictures are presented, by timestamp.
    let mut order: Vec<usize> = (0..track.packets.len()).filter(|&d| !is_discarded(&track.packets[d])).collect();
    let timestamps_usable = order.iter().all(|&d| pts[d].is_some()) && {
        order.sort_by_key(|&d| pts[d]);
        order.windows(2).all(|w| pts[w[0]] != pts[w[1]])
    };
    let mut decoder = open_video_decoder(track, threads, path)?;
    let delivered = std::cell::RefCell::new(BTreeSet::<usize>::new());
    let mut sink = |idx: usize, f: &ff::util::frame::Video| -> MediaResult<()> {
        if delivered.borrow_mut().insert(idx) {
            on_target(idx, f)?;
        }
        Ok(())
    };
    let mut pictures = 0usize;
    if timestamps_usable {
        decode_by_timestamp(track, &pts, &order, indices, &mut decoder, &mut pictures, &mut sink)?;
        // A target the fast path did not produce (the leading pictures of an open-GOP keyframe
        // need the GOP before it; a decoder may drop a picture at an early drain): decode every
        // picture from one keyframe before the earliest missing target, then from the start.
        for from_start in [false, true] {
            let missing: BTreeMap<i64, usize> = indices
                .iter()
                .filter(|i| !delivered.borrow().contains(i))
                .map(|&i| (pts[order[i]].expect("checked"), i))
                .collect();
            let Some(first) = missing.values().map(|&i| order[i]).min() else { break };
            let start = if from_start {
                0
            } else {
                let key = last_keyframe(track, &pts, first, pts[first].expect("checked"));
                (0..key).rev().find(|&d| track.packets[d].is_key()).unwrap_or(0)
            };
            decode_all_from(track, &pts, start, missing, &mut decoder, &mut pictures, &mut sink)?;
            if start == 0 {
                break;
            }
        }
    } else {
        decode_sequentially(track, indices, &mut decoder, &mut pictures, &mut sink)?;
    }
    let delivered = delivered.into_inner();
    match indices.iter().find(|i| !delivered.contains(i)) {
        Some(i) => Err(MediaError::new(path, format!("frame {i} could not be decoded (corrupt stream)"))),
        None => Ok(pictures),
    }
}

/// The last keyframe at or before decode position `dec` that is presented no later than `ts`
/// (packet 0 when there is none).
fn last_keyframe(track: &Track, pts: &[Option<i64>], dec: usize, ts: i64) -> usize {
    (0..=dec)
        .rev()
        .find(|&d| track.packets[d].is_key() && pts[d].is_some_and(|p| p <= ts))
        .unwrap_or(0)
}

/// The slow, sure path: a flushed decoder fed every packet from `start` (nothing skipped) until
/// every picture of `wanted` (timestamp -> presentation index) has come out, or to the end.
fn decode_all_from(
    track: &Track,
    pts: &[Option<i64>],
    start: usize,
    mut wanted: BTreeMap<i64, usize>,
    decoder: &mut ff::decoder::Video,
    pictures: &mut usize,
    sink: &mut dyn FnMut(usize, &ff::util::frame::Video) -> MediaResult<()>,
) -> MediaResult<()> {
    let _ = pts;
    decoder.flush();
    set_skip(decoder, false);
    let mut frame = ff::util::frame::Video::empty();
    let mut take = |f: &ff::util::frame::Video, wanted: &mut BTreeMap<i64, usize>| -> MediaResult<()> {
        if let Some(idx) = f.timestamp().or(f.pts()).and_then(|t| wanted.remove(&t)) {
            sink(idx, f)?;
        }
        Ok(())
    };
    for p in &track.packets[start..] {
        if wanted.is_empty() {
            break;
        }
        let _ = decoder.send_packet(p);
        receive_all(decoder, &mut frame, pictures, |f| take(f, &mut wanted))?;
    }
    let _ = decoder.send_eof();
    receive_all(decoder, &mut frame, pictures, |f| take(f, &mut wanted))?;
    decoder.flush();
    Ok(())
}

/// Hands every picture the decoder has ready to `on_frame`, counting them in `pictures`.
fn receive_all(
    decoder: &mut ff::decoder::Video,
    frame: &mut ff::util::frame::Video,
    pictures: &mut usize,
    mut on_frame: impl FnMut(&ff::util::frame::Video) -> MediaResult<()>,
) -> MediaResult<()> {
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => {
                *pictures += 1;
                on_frame(frame)?
            }
            // EAGAIN: needs more input; EOF: drained; any other error is a bad picture that
            // the decoder has already dropped.
            Err(ff::Error::Other { errno }) if errno == ffi::EAGAIN => return Ok(()),
            Err(ff::Error::Eof) => return Ok(()),
            Err(_) => return Ok(()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn decode_by_timestamp(
    track: &Track,
    pts: &[Option<i64>],
    order: &[usize],
    indices: &[usize],
    decoder: &mut ff::decoder::Video,
    pictures: &mut usize,
    sink: &mut dyn FnMut(usize, &ff::util::frame::Video) -> MediaResult<()>,
) -> MediaResult<()> {
    // Pending targets keyed by timestamp -> presentation index.
    let mut pending: BTreeMap<i64, usize> = BTreeMap::new();
    for &i in indices {
        pending.insert(pts[order[i]].expect("checked"), i);
    }
    // Per target: the last keyframe at or before it in decode order that is presented no later
    // than it (an open-GOP leading picture needs the keyframe before).
    let key_start: BTreeMap<usize, usize> = indices
        .iter()
        .map(|&i| (i, last_keyframe(track, pts, order[i], pts[order[i]].expect("checked"))))
        .collect();
    let n = track.packets.len();
    let mut frame = ff::util::frame::Video::empty();
    let mut next_packet = 0usize; // next packet (decode order) to send
    let mut drained = false;
    while let Some((&target_ts, &target_idx)) = pending.iter().next() {
        let target_dec = order[target_idx];
        let start = key_start[&target_idx];
        // Jump ahead (a seek in the packet list) when a keyframe lies between where the
        // decoder is and the target; a drained decoder must restart from a keyframe too.
        // Otherwise keep going: the target is ahead, or already sent and in the reorder buffer.
        if !drained && start > next_packet {
            // Before leaving this stretch of packets, release what the decoder holds: pictures
            // it has already reconstructed (references presented after the last target, or a
            // pending target), so that every decoded picture is delivered or counted.
            let _ = decoder.send_eof();
            drained = true;
            receive_all(decoder, &mut frame, pictures, |f| {
                if let Some(idx) = f.timestamp().or(f.pts()).and_then(|t| pending.remove(&t)) {
                    sink(idx, f)?;
                }
                Ok(())
            })?;
            continue; // the target may have come out
        }
        if drained {
            decoder.flush();
            next_packet = start;
            drained = false;
        }
        let mut reached = false;
        while !reached {
            // Once the target's packet is sent, everything it depends on is in the decoder: when
            // no other pending target needs the packets that follow (each is already sent, or
            // starts at a keyframe not before them), draining releases it without decoding the
            // reference pictures a reorder delay would otherwise pull in.
            let drain_now = !drained
                && next_packet > target_dec
                && pending.values().all(|&u| {
                    u == target_idx || order[u] < next_packet || key_start[&u] >= next_packet
                });
            if next_packet < n && !drain_now {
                let p = &track.packets[next_packet];
                let is_target = pts[next_packet].is_some_and(|t| pending.contains_key(&t));
                set_skip(decoder, !is_target);
                // A packet the decoder rejects is skipped; its picture is reported missing.
                let _ = decoder.send_packet(p);
                next_packet += 1;
            } else if !drained {
                let _ = decoder.send_eof();
                drained = true;
            } else {
                break;
            }
            receive_all(decoder, &mut frame, pictures, |f| {
                let ts = f.timestamp().or(f.pts());
                if let Some(idx) = ts.and_then(|t| pending.remove(&t)) {
                    sink(idx, f)?;
                    if idx == target_idx {
                        reached = true;
                    }
                }
                Ok(())
            })?;
        }
        if !reached {
            // Never produced: leave it for the caller to report.
            pending.remove(&target_ts);
        }
    }
    if !drained {
        // Count the pictures still held (decoded before the last target, presented after it).
        let _ = decoder.send_eof();
        receive_all(decoder, &mut frame, pictures, |_| Ok(()))?;
    }
    Ok(())
}

fn decode_sequentially(
    track: &Track,
    indices: &[usize],
    decoder: &mut ff::decoder::Video,
    pictures: &mut usize,
    sink: &mut dyn FnMut(usize, &ff::util::frame::Video) -> MediaResult<()>,
) -> MediaResult<()> {
    let last = *indices.iter().max().expect("non-empty");
    let mut frame = ff::util::frame::Video::empty();
    let count = std::cell::Cell::new(0usize);
    let mut on_frame = |f: &ff::util::frame::Video| -> MediaResult<()> {
        let i = count.get();
        if indices.contains(&i) {
            sink(i, f)?;
        }
        count.set(i + 1);
        Ok(())
    };
    for p in &track.packets {
        let _ = decoder.send_packet(p);
        receive_all(decoder, &mut frame, pictures, &mut on_frame)?;
        if count.get() > last {
            return Ok(());
        }
    }
    let _ = decoder.send_eof();
    receive_all(decoder, &mut frame, pictures, &mut on_frame)
}

/// Frames `indices` (presentation order) of the first video stream of `path`, as RGB24 at full
/// size, exactly as FFmpeg decodes them (equal to PyAV's `to_ndarray(format="rgb24")`), with the
/// stream's display matrix applied (see [`orientation_of_display_matrix`]).
pub fn decode_frames(path: &str, indices: &[usize], max_dimension: u32, threads: usize) -> MediaResult<Vec<RgbImage>> {
    guarded(path, || {
        let demuxed = demux(path, DemuxRequest { video: true, audio: false, max_dimension })?;
        let track = demuxed.video.expect("demux checked the video stream");
        let mut convert_time = std::time::Duration::ZERO;
        decode_track(&track, indices, threads, max_dimension, path, &mut convert_time)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(v: f64) -> i32 {
        (v * 65536.0).round() as i32
    }

    fn matrix(a: f64, b: f64, c: f64, d: f64) -> [i32; 9] {
        [fixed(a), fixed(b), 0, fixed(c), fixed(d), 0, 0, 0, 1 << 30]
    }

    #[test]
    fn display_matrices_map_as_ffmpeg_5_1_command_line() {
        let t = |transpose, flip_x, flip_y| Orientation { transpose, flip_x, flip_y };
        // av_display_rotation_set(m, angle): a = cos, b = -sin, c = sin, d = cos.
        let rot = |deg: f64| {
            let r = deg.to_radians();
            matrix(r.cos(), -r.sin(), r.sin(), r.cos())
        };
        assert_eq!(orientation_of_display_matrix(&rot(0.0)), t(false, false, false));
        // A counter-clockwise display rotation of 90 degrees (what `-metadata rotate=90` writes):
        // theta = 270, m[3] > 0 -> cclock.
        assert_eq!(orientation_of_display_matrix(&rot(90.0)), t(true, false, true));
        assert_eq!(orientation_of_display_matrix(&rot(180.0)), t(false, true, true));
        assert_eq!(orientation_of_display_matrix(&rot(-90.0)), t(true, true, false));
        // Flips.
        assert_eq!(orientation_of_display_matrix(&matrix(-1.0, 0.0, 0.0, 1.0)), t(false, true, false));
        assert_eq!(orientation_of_display_matrix(&matrix(1.0, 0.0, 0.0, -1.0)), t(false, false, true));
        // Transpose (m[3] > 0 at theta 90): cclock_flip.
        assert_eq!(orientation_of_display_matrix(&matrix(0.0, 1.0, 1.0, 0.0)), t(true, false, false));
        // Anti-transpose: clock_flip.
        assert_eq!(orientation_of_display_matrix(&matrix(0.0, -1.0, -1.0, 0.0)), t(true, true, true));
        // 45 degrees and a degenerate matrix are left as stored.
        assert_eq!(orientation_of_display_matrix(&rot(45.0)), t(false, false, false));
        assert_eq!(orientation_of_display_matrix(&[0; 9]), t(false, false, false));
    }
}

//! Video frames as the Qwen2.5-Omni utilities (`qwen-omni-utils`) hand them to the processor:
//! the presented frames at given indices, upright, resized with torchvision's
//! `resize(uint8 tensor, (h, w), BICUBIC, antialias=True)`.
//!
//! torchvision resizes a uint8 tensor by converting it to float32, calling PyTorch's
//! `_upsample_bicubic2d_aa` (a separable filter: the width pass first, then the height pass, a
//! pass skipped when its size is unchanged; Keys' cubic with a = -0.5, the support widened by the
//! scale when shrinking, the taps normalised to sum 1, all in float32), clamping to [0, 255] and
//! rounding half to even. [`resize_bicubic_antialias`] repeats that arithmetic operation for
//! operation, including where PyTorch's x86-64 CPU build fuses multiply-adds: the taps' filter
//! polynomials are fused; each output's sum takes the first product alone, then its remaining
//! taps four at a time as separate products added in order, and the last (fewer than four) as
//! fused multiply-adds. The result equals PyTorch 2.x's float output bit for bit on this build
//! (tested against `torch.nn.functional.interpolate` in tests/test_media_qwen.py).

use super::image::{RgbImage, RgbView};
use super::video::{check_dimensions, decode_targets, demux, fps, frame_count, DemuxRequest, RgbConverter};
use super::{guarded, MediaError, MediaResult};

/// Keys' cubic (a = -0.5) as PyTorch's `HelperInterpCubic::aa_filter<float>`: float32, the
/// polynomials evaluated with fused multiply-adds.
fn aa_filter(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        // ((A + 2) * x - (A + 3)) * x * x + 1
        let t = (A + 2.0).mul_add(x, -(A + 3.0));
        (t * x).mul_add(x, 1.0)
    } else if x < 2.0 {
        // ((A * x - 5A) * x + 8A) * x - 4A
        let t = A.mul_add(x, -(5.0 * A));
        let t = t.mul_add(x, 8.0 * A);
        t.mul_add(x, -(4.0 * A))
    } else {
        0.0
    }
}

/// The taps of one axis: output `i` reads `len[i]` inputs from `first[i]` with weights
/// `weights[i * stride..]` (PyTorch's `_compute_index_ranges_weights` with antialias).
#[derive(Debug, Clone, PartialEq)]
pub struct AaTaps {
    pub first: Vec<usize>,
    pub len: Vec<usize>,
    pub stride: usize,
    pub weights: Vec<f32>,
}

impl AaTaps {
    pub fn new(input: usize, output: usize) -> Self {
        // area_pixel_compute_scale<float>: float(input) / output in float32.
        let scale = input as f32 / output as f32;
        // (interp_size * 0.5) * scale in double, stored as float.
        let support: f32 = if scale >= 1.0 { (2.0 * scale as f64) as f32 } else { 2.0 };
        let invscale: f32 = if scale >= 1.0 { (1.0 / scale as f64) as f32 } else { 1.0 };
        let stride = (support.ceil() as usize) * 2 + 1;
        let mut first = Vec::with_capacity(output);
        let mut len = Vec::with_capacity(output);
        let mut weights = vec![0f32; output * stride];
        for i in 0..output {
            let center = (scale as f64 * (i as f64 + 0.5)) as f32;
            let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
            let xsize = (((center + support) as f64 + 0.5) as i64).min(input as i64) - xmin;
            let xsize = xsize.max(0) as usize;
            let w = &mut weights[i * stride..i * stride + stride];
            let mut total = 0f32;
            for (j, wj) in w.iter_mut().enumerate().take(xsize) {
                // (j + xmin - center + 0.5) * invscale: int64 - float in float, then double.
                let arg = (((j as i64 + xmin) as f32 - center) as f64 + 0.5) * invscale as f64;
                *wj = aa_filter(arg as f32);
                total += *wj;
            }
            if total != 0.0 {
                for wj in w.iter_mut().take(xsize) {
                    *wj /= total;
                }
            }
            first.push(xmin as usize);
            len.push(xsize);
        }
        AaTaps { first, len, stride, weights }
    }

    fn of(&self, i: usize) -> (usize, &[f32]) {
        (self.first[i], &self.weights[i * self.stride..i * self.stride + self.len[i]])
    }
}

/// `acc = x[0] * w[0]`, then the taps 1.. four at a time as separate products added in order,
/// the rest as fused multiply-adds: PyTorch's float loop as its x86-64 build computes it.
/// `x(j)` is tap `j`'s input.
#[inline(always)]
fn taps_dot(w: &[f32], x: impl Fn(usize) -> f32) -> f32 {
    let n = w.len();
    if n == 0 {
        return 0.0;
    }
    let mut acc = x(0) * w[0];
    let mut j = 1;
    while j + 4 <= n {
        for k in j..j + 4 {
            acc += x(k) * w[k];
        }
        j += 4;
    }
    while j < n {
        acc = x(j).mul_add(w[j], acc);
        j += 1;
    }
    acc
}

/// The same sum for a whole row at once (the height pass): `out[e] = sum_j rows[j][e] * w[j]`.
#[inline(always)]
fn taps_rows(out: &mut [f32], w: &[f32], row: impl Fn(usize) -> usize, data: &[f32]) {
    let len = out.len();
    let n = w.len();
    if n == 0 {
        out.fill(0.0);
        return;
    }
    let r0 = &data[row(0)..row(0) + len];
    for (o, &v) in out.iter_mut().zip(r0) {
        *o = v * w[0];
    }
    let mut j = 1;
    while j + 4 <= n {
        for k in j..j + 4 {
            let r = &data[row(k)..row(k) + len];
            for (o, &v) in out.iter_mut().zip(r) {
                *o += v * w[k];
            }
        }
        j += 4;
    }
    while j < n {
        let r = &data[row(j)..row(j) + len];
        for (o, &v) in out.iter_mut().zip(r) {
            *o = v.mul_add(w[j], *o);
        }
        j += 1;
    }
}

/// Clamp to [0, 255], round half to even, as torchvision's cast back to uint8.
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    v.clamp(0.0, 255.0).round_ties_even() as u8
}

/// Resizes RGB24 pictures as torchvision's `resize(..., BICUBIC, antialias=True)` of a uint8
/// tensor, reusing the taps and buffers from one picture to the next.
pub struct AaResizer {
    width: usize,
    height: usize,
    taps_x: Option<(usize, AaTaps)>,
    taps_y: Option<(usize, AaTaps)>,
    plane: Vec<f32>,
    row: Vec<f32>,
}

impl AaResizer {
    pub fn new(width: u32, height: u32) -> Self {
        AaResizer { width: width as usize, height: height as usize, taps_x: None, taps_y: None, plane: Vec::new(), row: Vec::new() }
    }

    /// Resizes `src` into `out` (`height * width * 3` bytes, packed RGB24).
    pub fn resize_into(&mut self, src: RgbView<'_>, out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has FMA (checked just above).
                return unsafe { self.resize_into_fma(src, out) };
            }
        }
        self.resize_into_generic(src, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma,avx2")]
    unsafe fn resize_into_fma(&mut self, src: RgbView<'_>, out: &mut [u8]) {
        self.resize_into_generic(src, out)
    }

    #[inline(always)]
    fn resize_into_generic(&mut self, src: RgbView<'_>, out: &mut [u8]) {
        let (in_w, in_h) = (src.width as usize, src.height as usize);
        let (w, h) = (self.width, self.height);
        assert_eq!(out.len(), w * h * 3, "output must hold height x width x 3 bytes");
        if self.taps_x.as_ref().map(|t| t.0) != Some(in_w) {
            self.taps_x = Some((in_w, AaTaps::new(in_w, w)));
        }
        if self.taps_y.as_ref().map(|t| t.0) != Some(in_h) {
            self.taps_y = Some((in_h, AaTaps::new(in_h, h)));
        }
        // Width pass (skipped when the width is unchanged), into a float plane of in_h x w.
        self.plane.resize(in_h * w * 3, 0.0);
        let taps_x = &self.taps_x.as_ref().expect("set above").1;
        for y in 0..in_h {
            let s = src.row(y);
            let dst = &mut self.plane[y * w * 3..(y + 1) * w * 3];
            if in_w == w {
                for (d, &v) in dst.iter_mut().zip(s) {
                    *d = v as f32;
                }
                continue;
            }
            for x in 0..w {
                let (first, wt) = taps_x.of(x);
                for c in 0..3 {
                    dst[x * 3 + c] = taps_dot(wt, |j| s[(first + j) * 3 + c] as f32);
                }
            }
        }
        // Height pass (skipped when the height is unchanged), then back to bytes.
        let row_len = w * 3;
        if in_h == h {
            for (o, &v) in out.iter_mut().zip(&self.plane) {
                *o = to_u8(v);
            }
            return;
        }
        let taps_y = &self.taps_y.as_ref().expect("set above").1;
        self.row.resize(row_len, 0.0);
        for y in 0..h {
            let (first, wt) = taps_y.of(y);
            taps_rows(&mut self.row, wt, |j| (first + j) * row_len, &self.plane);
            for (o, &v) in out[y * row_len..(y + 1) * row_len].iter_mut().zip(&self.row) {
                *o = to_u8(v);
            }
        }
    }
}

/// One RGB24 picture resized as torchvision's `resize(..., BICUBIC, antialias=True)` of a uint8
/// tensor (see the module documentation).
pub fn resize_bicubic_antialias(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut data = vec![0u8; width as usize * height as usize * 3];
    AaResizer::new(width, height).resize_into(img.view(), &mut data);
    RgbImage { width, height, data }
}

/// What [`probe_video`] reads from the container and its packets, without decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Frames FFmpeg presents (packets not discarded), as `load_clip` counts them.
    pub num_frames: usize,
    /// The container's declared count (0 when unknown).
    pub declared_frames: i64,
    /// The average frame rate (see `Clip.fps`).
    pub fps: f64,
    /// The picture size after the display matrix (the size `decode_frames` returns).
    pub width: u32,
    pub height: u32,
}

/// Frame count, frame rate and upright picture size of the first video stream of `path`.
pub fn probe_video(path: &str, max_dimension: u32) -> MediaResult<VideoInfo> {
    guarded(path, || {
        let demuxed = demux(path, DemuxRequest { video: true, audio: false, max_dimension })?;
        let track = demuxed.video.expect("demux checked the video stream");
        // SAFETY: plain field reads of the context filled from the stream's parameters.
        let (w, h) = unsafe { ((*track.ctx.as_ptr()).width, (*track.ctx.as_ptr()).height) };
        check_dimensions(path, w, h, max_dimension)?;
        let (w, h) = if track.orientation.transpose { (h, w) } else { (w, h) };
        Ok(VideoInfo {
            num_frames: frame_count(&track),
            declared_frames: track.declared_frames.max(0),
            fps: fps(&track),
            width: w as u32,
            height: h as u32,
        })
    })
}

/// Frames `indices` (presentation order; repeats allowed) of `path`, upright, each resized to
/// `width x height` as torchvision's antialiased bicubic resize as soon as it is decoded:
/// packed RGB24, `indices.len() * height * width * 3` bytes.
pub fn decode_resized(
    path: &str,
    indices: &[usize],
    width: u32,
    height: u32,
    max_dimension: u32,
    threads: usize,
) -> MediaResult<Vec<u8>> {
    guarded(path, || {
        if width == 0 || height == 0 {
            return Err(MediaError::new(path, format!("output size {width}x{height} is empty")));
        }
        let demuxed = demux(path, DemuxRequest { video: true, audio: false, max_dimension })?;
        let track = demuxed.video.expect("demux checked the video stream");
        let per = width as usize * height as usize * 3;
        let mut out = vec![0u8; indices.len() * per];
        let orientation = track.orientation;
        let mut converter = RgbConverter::new();
        let mut resizer = AaResizer::new(width, height);
        decode_targets(&track, indices, threads, path, &mut |idx, picture| {
            let rgb = converter.convert_view(picture, path, max_dimension)?;
            let upright;
            let rgb = if orientation.is_identity() {
                rgb
            } else {
                upright = orientation.apply(rgb);
                upright.view()
            };
            let mut slots = indices.iter().enumerate().filter(|&(_, &i)| i == idx).map(|(s, _)| s);
            let first = slots.next().expect("targets come from indices");
            resizer.resize_into(rgb, &mut out[first * per..(first + 1) * per]);
            for slot in slots {
                out.copy_within(first * per..(first + 1) * per, slot * per);
            }
            Ok(())
        })?;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow, obviously-correct reference in f64: the same taps, no rounding between passes.
    fn reference(img: &RgbImage, w: usize, h: usize) -> Vec<f64> {
        let (iw, ih) = (img.width as usize, img.height as usize);
        let tx = AaTaps::new(iw, w);
        let ty = AaTaps::new(ih, h);
        let mut plane = vec![0f64; ih * w * 3];
        for y in 0..ih {
            for x in 0..w {
                for c in 0..3 {
                    plane[(y * w + x) * 3 + c] = if iw == w {
                        img.data[(y * iw + x) * 3 + c] as f64
                    } else {
                        let (f, wt) = tx.of(x);
                        wt.iter().enumerate().map(|(j, &k)| k as f64 * img.data[(y * iw + f + j) * 3 + c] as f64).sum()
                    };
                }
            }
        }
        let mut out = vec![0f64; h * w * 3];
        for y in 0..h {
            for e in 0..w * 3 {
                out[y * w * 3 + e] = if ih == h {
                    plane[y * w * 3 + e]
                } else {
                    let (f, wt) = ty.of(y);
                    wt.iter().enumerate().map(|(j, &k)| k as f64 * plane[(f + j) * w * 3 + e]).sum()
                };
            }
        }
        out
    }

    fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut state = seed;
        let data = (0..w * h * 3)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        RgbImage { width: w, height: h, data }
    }

    #[test]
    fn taps_sum_to_one_and_stay_in_range() {
        for &(i, o) in &[(160, 420), (640, 364), (7, 3), (1, 28), (28, 1), (1920, 532)] {
            let t = AaTaps::new(i, o);
            for k in 0..o {
                let (f, w) = t.of(k);
                assert!(f + w.len() <= i && !w.is_empty(), "{i}->{o} output {k}");
                let s: f64 = w.iter().map(|&v| v as f64).sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o} output {k}: sum {s}");
            }
        }
    }

    #[test]
    fn within_half_a_level_of_the_exact_sum() {
        for (k, &(w, h, ow, oh)) in [(160, 96, 420, 252), (97, 161, 56, 84), (640, 480, 364, 280), (5, 3, 28, 28), (300, 2, 28, 28)]
            .iter()
            .enumerate()
        {
            let img = noise(w, h, k as u64);
            let got = resize_bicubic_antialias(&img, ow, oh);
            let want = reference(&img, ow as usize, oh as usize);
            for (g, r) in got.data.iter().zip(&want) {
                let r = r.clamp(0.0, 255.0);
                assert!((*g as f64 - r).abs() <= 0.5 + 1e-3, "{w}x{h} -> {ow}x{oh}: {g} vs {r}");
            }
        }
    }

    #[test]
    fn same_size_is_identity() {
        let img = noise(33, 17, 9);
        assert_eq!(resize_bicubic_antialias(&img, 33, 17), img);
    }
}

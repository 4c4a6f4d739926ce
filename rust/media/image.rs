//! From a full-size RGB24 picture to a model-ready CHW float32 tensor.
//!
//! Order (as HumanOmni): the display matrix applied ([`Orientation`]); optional pad to a square
//! with the fill colour `int(mean*255)`, the picture centred on the short axis (PIL
//! `expand2square`); bicubic resize to S x S bit-exact with Pillow's `Image.resize(...,
//! BICUBIC)` (its `ImagingResample`: two passes, each rounding to 8 bits, in Pillow 13's order --
//! vertical first when the height shrinks by more than twice as many pixels as the width,
//! horizontal first otherwise; a = -0.5, support scaled on downsampling, coefficients normalised then rounded to
//! 22-bit fixed point); then `(x/255 - mean) / std` per channel.

/// A packed RGB24 picture, rows without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn view(&self) -> RgbView<'_> {
        RgbView { width: self.width, height: self.height, stride: self.width as usize * 3, data: &self.data }
    }
}

/// A borrowed packed RGB24 picture whose rows start `stride` bytes apart (FFmpeg's layout).
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub data: &'a [u8],
}

impl<'a> RgbView<'a> {
    /// The `width * 3` bytes of row `y`.
    pub fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.stride..y * self.stride + self.width as usize * 3]
    }
}

/// A right-angle display transform: transpose (`out[y][x] = in[x][y]`) first when `transpose`,
/// then mirror the columns (`flip_x`) and the rows (`flip_y`) of the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Orientation {
    pub transpose: bool,
    pub flip_x: bool,
    pub flip_y: bool,
}

impl Orientation {
    pub fn is_identity(&self) -> bool {
        *self == Orientation::default()
    }

    /// `src` as displayed: a new packed picture (W x H swapped when transposed).
    pub fn apply(&self, src: RgbView<'_>) -> RgbImage {
        let (w, h) = (src.width as usize, src.height as usize);
        let (ow, oh) = if self.transpose { (h, w) } else { (w, h) };
        let mut data = vec![0u8; ow * oh * 3];
        for y in 0..oh {
            let ty = if self.flip_y { oh - 1 - y } else { y };
            for x in 0..ow {
                let tx = if self.flip_x { ow - 1 - x } else { x };
                // (tx, ty) in the transposed picture is (ty, tx) in the source.
                let (sx, sy) = if self.transpose { (ty, tx) } else { (tx, ty) };
                let s = &src.row(sy)[sx * 3..sx * 3 + 3];
                data[(y * ow + x) * 3..(y * ow + x) * 3 + 3].copy_from_slice(s);
            }
        }
        RgbImage { width: ow as u32, height: oh as u32, data }
    }
}

/// Rows per block of the horizontal pass (the transposed block stays in cache).
const ROW_BLOCK: usize = 64;

/// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Pillow's bicubic kernel (a = -0.5), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The fixed-point taps of one axis (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`):
/// output `i` reads `len[i]` inputs from `first[i]` with weights `k[i * ksize..]`.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    ksize: usize,
    first: Vec<usize>,
    len: Vec<usize>,
    k: Vec<i32>,
}

impl Taps {
    fn new(in_size: usize, out_size: usize) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut taps = Taps { ksize, first: Vec::with_capacity(out_size), len: Vec::with_capacity(out_size), k: vec![0; out_size * ksize] };
        let mut w = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let xmax = xmax.max(0) as usize;
            let mut ww = 0.0;
            for (x, wx) in w.iter_mut().enumerate().take(xmax) {
                *wx = bicubic(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                ww += *wx;
            }
            let row = &mut taps.k[xx * ksize..(xx + 1) * ksize];
            for x in 0..xmax {
                let v = if ww != 0.0 { w[x] / ww } else { w[x] };
                let fixed = v * (1u32 << PRECISION_BITS) as f64;
                row[x] = if v < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            taps.first.push(xmin as usize);
            taps.len.push(xmax);
        }
        taps
    }

    fn weights(&self, i: usize) -> &[i32] {
        &self.k[i * self.ksize..i * self.ksize + self.len[i]]
    }
}

/// `acc[i] = 2^21 + sum_j weights[j] * data[(first + j) * stride + i]`: the fixed-point taps of
/// one output (a column of a transposed block, or a row of the vertical pass), vectorised with
/// AVX2 where the CPU has it (the same integer arithmetic either way).
fn taps_sum(acc: &mut [i32], data: &[u8], stride: usize, first: usize, weights: &[i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { taps_sum_avx2(acc, data, stride, first, weights) };
        }
    }
    taps_sum_portable(acc, data, stride, first, weights)
}

#[inline(always)]
fn taps_sum_portable(acc: &mut [i32], data: &[u8], stride: usize, first: usize, weights: &[i32]) {
    acc.fill(1i32 << (PRECISION_BITS - 1));
    let n = acc.len();
    for (j, &w) in weights.iter().enumerate() {
        let start = (first + j) * stride;
        let src = &data[start..start + n];
        for (a, &p) in acc.iter_mut().zip(src) {
            *a = a.wrapping_add(p as i32 * w);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn taps_sum_avx2(acc: &mut [i32], data: &[u8], stride: usize, first: usize, weights: &[i32]) {
    taps_sum_portable(acc, data, stride, first, weights)
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The horizontal pass over many rows at once, as Pillow computes it (each output pixel the
/// rounded fixed-point sum of its taps), laid out for vectorising: the rows are transposed so
/// that one tap multiplies a contiguous column of every row. `rows[i]` is an input row;
/// `write(i, xx, rgb)` stores output pixel `xx` of row `i`.
fn resample_rows(rows: &[&[u8]], in_width: usize, taps: &Taps, scratch: &mut Vec<u8>, acc: &mut Vec<i32>, mut write: impl FnMut(usize, usize, [u8; 3])) {
    let stride = rows.len() * 3;
    if stride == 0 {
        return;
    }
    scratch.resize(in_width * stride, 0);
    // Column x of the block is written contiguously (every row's pixel x in turn).
    let rows: Vec<&[u8]> = rows.iter().map(|r| &r[..in_width * 3]).collect();
    for (x, column) in scratch.chunks_exact_mut(stride).enumerate() {
        for (dst, r) in column.chunks_exact_mut(3).zip(&rows) {
            dst.copy_from_slice(&r[x * 3..x * 3 + 3]);
        }
    }
    acc.resize(stride, 0);
    for xx in 0..taps.first.len() {
        taps_sum(acc, scratch, stride, taps.first[xx], taps.weights(xx));
        for (i, c) in acc.chunks_exact(3).enumerate() {
            write(i, xx, [clip8(c[0]), clip8(c[1]), clip8(c[2])]);
        }
    }
}

/// A picture placed on a canvas of one fill colour (or not), read row by row: the rows above
/// and below are one shared fill row, so padding a wide picture costs no copy.
struct Canvas<'a> {
    src: RgbView<'a>,
    width: usize,
    height: usize,
    left: usize,
    top: usize,
    fill: [u8; 3],
}

impl<'a> Canvas<'a> {
    fn new(src: RgbView<'a>, aspect: Aspect, fill: [u8; 3]) -> Canvas<'a> {
        let (w, h) = (src.width as usize, src.height as usize);
        let side = w.max(h);
        match aspect {
            Aspect::Pad => Canvas { src, width: side, height: side, left: (side - w) / 2, top: (side - h) / 2, fill },
            Aspect::Resize => Canvas { src, width: w, height: h, left: 0, top: 0, fill },
        }
    }

    fn is_fill_row(&self, y: usize) -> bool {
        y < self.top || y >= self.top + self.src.height as usize
    }

    /// Row `y` of the canvas: borrowed when it is a picture row without side padding, else
    /// composed in `buf`.
    fn row<'b>(&self, y: usize, buf: &'b mut Vec<u8>) -> &'b [u8]
    where
        'a: 'b,
    {
        if !self.is_fill_row(y) && self.left == 0 && self.width == self.src.width as usize {
            return self.src.row(y - self.top);
        }
        buf.clear();
        for x in 0..self.width {
            let inside = !self.is_fill_row(y) && x >= self.left && x < self.left + self.src.width as usize;
            if inside {
                let sx = x - self.left;
                buf.extend_from_slice(&self.src.row(y - self.top)[sx * 3..sx * 3 + 3]);
            } else {
                buf.extend_from_slice(&self.fill);
            }
        }
        buf
    }
}

/// Pads (or not) and resizes pictures to the model's `size x size`, reusing its buffers and
/// the taps of the last picture size.
pub struct SquareResizer {
    width: u32,
    height: u32,
    taps: Option<((usize, usize), Taps, Taps)>,
    temp: Vec<u8>,
    row: Vec<u8>,
    canvas_rows: Vec<u8>,
    scratch: Vec<u8>,
    acc: Vec<i32>,
    out: Vec<u8>,
}

impl SquareResizer {
    pub fn new(size: u32) -> Self {
        Self::with_size(size, size)
    }

    /// A resizer to `width x height` (any output size, as `Image.resize((width, height))`).
    pub fn with_size(width: u32, height: u32) -> Self {
        SquareResizer { width, height, taps: None, temp: Vec::new(), row: Vec::new(), canvas_rows: Vec::new(), scratch: Vec::new(), acc: Vec::new(), out: Vec::new() }
    }

    /// `src` padded to a square of `fill` (for [`Aspect::Pad`]) and resized, as packed RGB24
    /// bytes; bit-exact with Pillow's `expand2square` then `resize(..., BICUBIC)`, in Pillow 13's
    /// pass order ([`vertical_pass_first`]).
    pub fn resize(&mut self, src: RgbView<'_>, aspect: Aspect, fill: [u8; 3]) -> Result<&[u8], String> {
        if src.width == 0 || src.height == 0 || self.width == 0 || self.height == 0 {
            return Err(format!("cannot resize a {}x{} picture to {}x{}", src.width, src.height, self.width, self.height));
        }
        let canvas = Canvas::new(src, aspect, fill);
        let (iw, ih) = (canvas.width, canvas.height);
        let (ow, oh) = (self.width as usize, self.height as usize);
        if !matches!(&self.taps, Some((dims, _, _)) if *dims == (iw, ih)) {
            self.taps = Some(((iw, ih), Taps::new(iw, ow), Taps::new(ih, oh)));
        }
        let (_, horizontal, vertical) = self.taps.as_ref().expect("set above");
        let (need_h, need_v) = (iw != ow, ih != oh);
        self.out.resize(ow * oh * 3, 0);
        let row_bytes = ow * 3;
        if need_h && need_v && vertical_pass_first(iw, ih, ow, oh) {
            // The vertical pass first, over the whole width, rounding to 8 bits; then the
            // horizontal pass over the `oh` rows it made.
            let in_bytes = iw * 3;
            let (y0, y1) = (vertical.first[0], vertical.first[oh - 1] + vertical.len[oh - 1]);
            let plain = canvas.left == 0 && canvas.top == 0 && canvas.width == src.width as usize && canvas.height == src.height as usize;
            // The canvas rows the pass reads, `stride` bytes apart, row `base` first.
            let (data, stride, base): (&[u8], usize, usize) = if plain {
                (src.data, src.stride, 0)
            } else {
                self.canvas_rows.clear();
                for y in y0..y1 {
                    self.canvas_rows.extend_from_slice(canvas.row(y, &mut self.row));
                }
                (&self.canvas_rows, in_bytes, y0)
            };
            self.temp.resize(oh * in_bytes, 0);
            self.acc.resize(in_bytes, 0);
            let acc = &mut self.acc[..in_bytes];
            for (yy, t) in self.temp.chunks_exact_mut(in_bytes).enumerate() {
                taps_sum(acc, data, stride, vertical.first[yy] - base, vertical.weights(yy));
                for (o, &a) in t.iter_mut().zip(acc.iter()) {
                    *o = clip8(a);
                }
            }
            let rows: Vec<&[u8]> = self.temp.chunks_exact(in_bytes).collect();
            let out = &mut self.out;
            for (b, block) in rows.chunks(ROW_BLOCK).enumerate() {
                resample_rows(block, iw, horizontal, &mut self.scratch, &mut self.acc, |i, xx, px| {
                    let at = (b * ROW_BLOCK + i) * row_bytes + xx * 3;
                    out[at..at + 3].copy_from_slice(&px);
                });
            }
            return Ok(&self.out);
        }
        // Rows of the canvas the vertical pass reads (all of them when it is skipped).
        let (y0, y1) = if need_v {
            (vertical.first[0], vertical.first[oh - 1] + vertical.len[oh - 1])
        } else {
            (0, ih)
        };
        // Horizontal pass (or a plain copy) into `temp`, rows y0..y1; fill rows share one result.
        self.temp.resize((y1 - y0) * row_bytes, 0);
        if need_h {
            let mut composed: Vec<Vec<u8>> = Vec::new();
            let mut picture_rows: Vec<usize> = Vec::new();
            let mut fill_rows: Vec<usize> = Vec::new();
            for y in y0..y1 {
                if canvas.is_fill_row(y) { fill_rows.push(y) } else { picture_rows.push(y) }
            }
            let needs_copy = canvas.left != 0 || canvas.width != canvas.src.width as usize;
            if needs_copy {
                composed = picture_rows.iter().map(|&y| canvas.row(y, &mut self.row).to_vec()).collect();
            }
            let mut inputs: Vec<&[u8]> = if needs_copy {
                composed.iter().map(|r| &r[..]).collect()
            } else {
                picture_rows.iter().map(|&y| canvas.src.row(y - canvas.top)).collect()
            };
            let fill_row;
            if !fill_rows.is_empty() {
                fill_row = vec![canvas.fill; iw].concat();
                inputs.push(&fill_row);
            }
            let temp = &mut self.temp;
            let n_picture = picture_rows.len();
            // Blocks of rows keep the transposed block in cache.
            for (b, block) in inputs.chunks(ROW_BLOCK).enumerate() {
              resample_rows(block, iw, horizontal, &mut self.scratch, &mut self.acc, |i, xx, px| {
                let i = b * ROW_BLOCK + i;
                if i < n_picture {
                    let at = (picture_rows[i] - y0) * row_bytes + xx * 3;
                    temp[at..at + 3].copy_from_slice(&px);
                } else {
                    for &y in &fill_rows {
                        let at = (y - y0) * row_bytes + xx * 3;
                        temp[at..at + 3].copy_from_slice(&px);
                    }
                }
              });
            }
        } else {
            for y in y0..y1 {
                let r = canvas.row(y, &mut self.row);
                self.temp[(y - y0) * row_bytes..(y - y0 + 1) * row_bytes].copy_from_slice(r);
            }
        }
        if need_v {
            // Pillow's ImagingResampleVertical_8bpc, one output row at a time.
            self.acc.resize(row_bytes, 0);
            let acc = &mut self.acc[..row_bytes];
            for (yy, out) in self.out.chunks_exact_mut(row_bytes).enumerate() {
                taps_sum(acc, &self.temp, row_bytes, vertical.first[yy] - y0, vertical.weights(yy));
                for (o, &a) in out.iter_mut().zip(acc.iter()) {
                    *o = clip8(a);
                }
            }
        } else {
            self.out.copy_from_slice(&self.temp);
        }
        Ok(&self.out)
    }
}

/// Whether Pillow 13 runs the vertical pass first for a `iw x ih` to `ow x oh` resize: when the
/// height shrinks by more than twice as many pixels as the width does (`ih - oh > 2 (iw - ow)`
/// with `oh < ih`; Pillow pull request 9549, "if height is scaled down significantly more than
/// width, resize vertically first"). Measured against the installed Pillow 13.0.0 on every
/// size class, the boundary `ih - oh = 2 (iw - ow)` included (horizontal first there).
pub fn vertical_pass_first(iw: usize, ih: usize, ow: usize, oh: usize) -> bool {
    oh < ih && (ih - oh) as i64 > 2 * (iw as i64 - ow as i64)
}

/// The pad colour for `mean`: `int(mean * 255)` per channel (PIL's `expand2square` fill).
pub fn fill_colour(mean: [f32; 3]) -> [u8; 3] {
    mean.map(|m| (m * 255.0).clamp(0.0, 255.0) as u8)
}

/// How a non-square picture becomes square.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aspect {
    /// Pad to a square with the mean colour first (HumanOmni training).
    Pad,
    /// Squash straight to S x S (HumanOmni evaluation).
    Resize,
}

impl std::str::FromStr for Aspect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pad" => Ok(Aspect::Pad),
            "resize" => Ok(Aspect::Resize),
            other => Err(format!("aspect must be \"pad\" or \"resize\", got {other:?}")),
        }
    }
}

/// The picture on a `side x side` canvas of `fill`, offset by `((side-w)/2, (side-h)/2)`
/// (integer division, as PIL's `expand2square`).
pub fn pad_to_square(img: &RgbImage, fill: [u8; 3]) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let side = w.max(h);
    let mut data = Vec::with_capacity(side * side * 3);
    for _ in 0..side * side {
        data.extend_from_slice(&fill);
    }
    let (x0, y0) = ((side - w) / 2, (side - h) / 2);
    for y in 0..h {
        let dst = ((y0 + y) * side + x0) * 3;
        data[dst..dst + w * 3].copy_from_slice(&img.data[y * w * 3..(y + 1) * w * 3]);
    }
    RgbImage { width: side as u32, height: side as u32, data }
}

/// Bicubic resize bit-exact with Pillow's `Image.resize((width, height), BICUBIC)`.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage, String> {
    let mut r = SquareResizer::with_size(width, height);
    let data = r.resize(img.view(), Aspect::Resize, [0; 3])?.to_vec();
    Ok(RgbImage { width, height, data })
}

/// Writes `(x/255 - mean[c]) / std[c]` of an RGB24 picture into `out` as CHW (3, H, W).
pub fn normalise_into(img: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    normalise_pixels(&img.data, mean, std, out)
}

/// [`normalise_into`] of packed RGB24 bytes (any H x W with `3 * H * W = out.len()`).
pub fn normalise_pixels(data: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let plane = data.len() / 3;
    assert_eq!(out.len(), 3 * plane, "output must hold 3 x H x W values");
    // One lookup table per channel: 256 entries replace a divide per value.
    let lut: Vec<[f32; 256]> = (0..3)
        .map(|c| {
            let mut t = [0f32; 256];
            for (v, e) in t.iter_mut().enumerate() {
                *e = (v as f32 / 255.0 - mean[c]) / std[c];
            }
            t
        })
        .collect();
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in data.chunks_exact(3).enumerate() {
        r[i] = lut[0][px[0] as usize];
        g[i] = lut[1][px[1] as usize];
        b[i] = lut[2][px[2] as usize];
    }
}

/// Pad (or not) and resize to `size x size` (RGB24).
pub fn pad_and_resize(img: &RgbImage, size: u32, aspect: Aspect, mean: [f32; 3]) -> Result<RgbImage, String> {
    let padded;
    let square = match aspect {
        Aspect::Pad if img.width != img.height => {
            padded = pad_to_square(img, fill_colour(mean));
            &padded
        }
        _ => img,
    };
    resize_bicubic(square, size, size)
}

/// Pad (or not), resize to `size x size` and normalise into `out` (3, size, size).
pub fn to_model_input(
    img: &RgbImage,
    size: u32,
    aspect: Aspect,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) -> Result<(), String> {
    let mut resizer = SquareResizer::new(size);
    let resized = resizer.resize(img.view(), aspect, fill_colour(mean))?;
    normalise_pixels(resized, mean, std, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, v: u8) -> RgbImage {
        RgbImage { width: w, height: h, data: vec![v; (w * h * 3) as usize] }
    }

    #[test]
    fn pad_centres_on_the_short_axis() {
        let p = pad_to_square(&solid(4, 2, 200), [127, 127, 127]);
        assert_eq!((p.width, p.height), (4, 4));
        let row = |y: usize| p.data[y * 12..y * 12 + 12].to_vec();
        assert_eq!(row(0), vec![127; 12]);
        assert_eq!(row(1), vec![200; 12]);
        assert_eq!(row(2), vec![200; 12]);
        assert_eq!(row(3), vec![127; 12]);
        let q = pad_to_square(&solid(1, 4, 9), [1, 2, 3]);
        // x0 = (4 - 1) / 2 = 1
        assert_eq!(&q.data[0..6], &[1, 2, 3, 9, 9, 9]);
    }

    #[test]
    fn solid_picture_stays_solid_and_normalises() {
        let mut out = vec![0f32; 3 * 8 * 8];
        to_model_input(&solid(30, 20, 255), 8, Aspect::Resize, [0.5; 3], [0.5; 3], &mut out)
            .unwrap();
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    /// Seeded noise pictures (a plain LCG: no dependency).
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
    fn in_place_canvas_equals_padding_then_resizing() {
        let mut resizer = SquareResizer::new(24);
        for (i, &(w, h)) in [(160, 90), (91, 40), (64, 64), (40, 91), (7, 3), (1, 50), (50, 1), (200, 199)]
            .iter()
            .enumerate()
        {
            let img = noise(w, h, i as u64);
            // A strided copy, as FFmpeg lays rows out.
            let stride = w as usize * 3 + 13;
            let mut strided = vec![0u8; stride * h as usize];
            for y in 0..h as usize {
                strided[y * stride..y * stride + w as usize * 3].copy_from_slice(&img.data[y * w as usize * 3..(y + 1) * w as usize * 3]);
            }
            let view = RgbView { width: w, height: h, stride, data: &strided };
            for aspect in [Aspect::Pad, Aspect::Resize] {
                let want = pad_and_resize(&img, 24, aspect, [0.5; 3]).unwrap();
                let got = resizer.resize(view, aspect, fill_colour([0.5; 3])).unwrap();
                assert_eq!(got, &want.data[..], "{w}x{h} {aspect:?}");
            }
        }
    }

    /// One pass of Pillow's resample along x, pixel by pixel: the slow reference.
    fn naive_pass_x(img: &RgbImage, ow: u32) -> RgbImage {
        let taps = Taps::new(img.width as usize, ow as usize);
        let mut data = Vec::with_capacity((ow * img.height * 3) as usize);
        for y in 0..img.height as usize {
            for xx in 0..ow as usize {
                for c in 0..3 {
                    let mut acc = 1i64 << (PRECISION_BITS - 1);
                    for (j, &w) in taps.weights(xx).iter().enumerate() {
                        acc += w as i64 * img.data[(y * img.width as usize + taps.first[xx] + j) * 3 + c] as i64;
                    }
                    data.push((acc >> PRECISION_BITS).clamp(0, 255) as u8);
                }
            }
        }
        RgbImage { width: ow, height: img.height, data }
    }

    fn transposed(img: &RgbImage) -> RgbImage {
        Orientation { transpose: true, ..Default::default() }.apply(img.view())
    }

    /// Pillow's two passes in the given order, a pass skipped when its size does not change.
    fn naive_resize(img: &RgbImage, ow: u32, oh: u32, vertical_first: bool) -> RgbImage {
        let h = |i: RgbImage| if i.width != ow { naive_pass_x(&i, ow) } else { i };
        let v = |i: RgbImage| if i.height != oh { transposed(&naive_pass_x(&transposed(&i), oh)) } else { i };
        if vertical_first { h(v(img.clone())) } else { v(h(img.clone())) }
    }

    #[test]
    fn pass_order_is_pillow_13s() {
        // (w, h, out w, out h): Pillow 13 runs the vertical pass first iff out h < h and
        // h - out h > 2 (w - out w), of the canvas (the padded square for Aspect::Pad); the
        // cases straddle that boundary (50x100 to 40x79 vertical first, to 40x80 not).
        let cases = [
            (20, 90, 24, 24), (7, 50, 30, 13), (1, 40, 5, 3), (33, 34, 40, 33), (16, 40, 48, 24),
            (50, 100, 40, 79), (50, 100, 40, 80), (160, 300, 150, 224), (40, 60, 39, 57), (12, 70, 5, 55),
            (90, 20, 24, 24), (50, 50, 24, 30), (10, 10, 30, 40), (16, 40, 30, 20), (40, 16, 40, 7),
        ];
        let mut order_mattered = false;
        for (i, &(w, h, ow, oh)) in cases.iter().enumerate() {
            let img = noise(w, h, 100 + i as u64);
            let stride = w as usize * 3 + 5;
            let mut strided = vec![0u8; stride * h as usize];
            for y in 0..h as usize {
                strided[y * stride..y * stride + w as usize * 3].copy_from_slice(&img.data[y * w as usize * 3..(y + 1) * w as usize * 3]);
            }
            let view = RgbView { width: w, height: h, stride, data: &strided };
            let mut resizer = SquareResizer::with_size(ow, oh);
            for aspect in [Aspect::Pad, Aspect::Resize] {
                let canvas = match aspect {
                    Aspect::Pad => pad_to_square(&img, [127; 3]),
                    Aspect::Resize => img.clone(),
                };
                let (cw, ch) = (canvas.width as i64, canvas.height as i64);
                let vertical_first = (oh as i64) < ch && ch - oh as i64 > 2 * (cw - ow as i64);
                let want = naive_resize(&canvas, ow, oh, vertical_first);
                let got = resizer.resize(view, aspect, [127; 3]).unwrap();
                assert_eq!(got, &want.data[..], "{w}x{h} -> {ow}x{oh} {aspect:?}");
                if vertical_first && ow != canvas.width {
                    order_mattered |= naive_resize(&canvas, ow, oh, false).data != want.data;
                }
            }
        }
        assert!(order_mattered, "no case where the pass order changes the result");
    }

    #[test]
    fn fill_is_int_of_mean_times_255() {
        let mut out = vec![0f32; 3 * 16 * 16];
        // A 1-pixel-high strip padded to 256x256 then shrunk 16x: the bicubic support of the
        // corner (rows 0-40) holds only fill.
        to_model_input(&solid(256, 1, 0), 16, Aspect::Pad, [0.5; 3], [1.0; 3], &mut out).unwrap();
        assert!((out[0] - (127.0 / 255.0 - 0.5)).abs() < 1e-6);
    }
}

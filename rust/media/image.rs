//! From a full-size RGB24 picture to a model-ready CHW float32 tensor.
//!
//! Order (as HumanOmni): the display matrix applied ([`Orientation`]); optional pad to a square
//! with the fill colour `int(mean*255)`, the picture centred on the short axis (PIL
//! `expand2square`); bicubic resize to S x S bit-exact with Pillow's `Image.resize(...,
//! BICUBIC)` (its `ImagingResample`: two passes, each rounding to 8 bits, in Pillow 13's order --
//! vertical first when the height shrinks by more than twice as many pixels as the width,
//! horizontal first otherwise; a = -0.5, support scaled on downsampling, coefficients normalised then rounded to
//! 22-bit fixed point); then `(x/255 - mean) / std` per channel.
//!
//! The passes are vectorised without changing that arithmetic: the horizontal pass transposes
//! blocks of rows into pairs of columns and the vertical pass interleaves pairs of rows, so that
//! one AVX2 `pmaddwd` multiplies two taps of 8 outputs; each 22-bit weight is split into 16-bit
//! halves (`w = hi * 2^11 + lo`) whose two sums recombine exactly in 32-bit integers.

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

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The taps of the horizontal pass regrouped over pairs of neighbouring input columns
/// `(2q, 2q + 1)`, the layout of [`transpose_pairs`], so that one `pmaddwd` multiplies two taps.
/// Output `xx` reads pairs `first[xx]..first[xx] + count[xx]`; a tap slot outside its input
/// range (the column before an odd `first`, the one after an odd end) has weight 0. Each
/// weight `w` is also split as `w = hi * 2^11 + lo` (`lo` in `0..2048`, `hi` within +-2^12):
/// both halves fit 16 bits, and the two sums recombine exactly in wrapping 32-bit arithmetic.
#[derive(Debug, Clone)]
struct PairTaps {
    kpairs: usize,
    first: Vec<usize>,
    count: Vec<usize>,
    /// `[w(2q), w(2q + 1)]` per pair slot, row `xx` at `xx * kpairs`.
    full: Vec<[i32; 2]>,
    /// The `hi` (resp. `lo`) halves of a pair packed as two i16: `w(2q)` low, `w(2q + 1)` high.
    hi: Vec<i32>,
    lo: Vec<i32>,
}

impl PairTaps {
    fn new(taps: &Taps) -> PairTaps {
        let out = taps.first.len();
        let kpairs = taps.ksize / 2 + 1;
        let mut p = PairTaps { kpairs, first: Vec::with_capacity(out), count: Vec::with_capacity(out), full: vec![[0; 2]; out * kpairs], hi: vec![0; out * kpairs], lo: vec![0; out * kpairs] };
        let pack = |a: i32, b: i32| ((a as u32 & 0xFFFF) | ((b as u32) << 16)) as i32;
        for xx in 0..out {
            let (first, w) = (taps.first[xx], taps.weights(xx));
            let lead = first % 2;
            let count = (lead + w.len()).div_ceil(2);
            p.first.push(first / 2);
            p.count.push(count);
            for k in 0..count {
                let slot = |s: usize| if s >= lead && s - lead < w.len() { w[s - lead] } else { 0 };
                let (a, b) = (slot(2 * k), slot(2 * k + 1));
                debug_assert!((-(1 << 23)..(1 << 23)).contains(&a) && (-(1 << 23)..(1 << 23)).contains(&b));
                let at = xx * kpairs + k;
                p.full[at] = [a, b];
                p.hi[at] = pack(a >> 11, b >> 11);
                p.lo[at] = pack(a & 0x7FF, b & 0x7FF);
            }
        }
        p
    }

    fn range(&self, xx: usize) -> std::ops::Range<usize> {
        xx * self.kpairs..xx * self.kpairs + self.count[xx]
    }
}

/// Transposes a block of rows into pairs of columns: byte `c` of pixel `x` of row `i` goes to
/// `scratch[(x / 2) * pstride + (i * 3 + c) * 2 + x % 2]`, so that lane `i * 3 + c` of a column
/// pair is two neighbouring 16-bit words apart from the next (a missing last column reads 0).
/// `pstride >= rows.len() * 6 + 2`: a pixel pair moves as one 8-byte word whose last two bytes
/// land on the slot of row `i + 1` (written after it) or on the spare bytes of the pair.
fn transpose_pairs(rows: &[&[u8]], in_width: usize, scratch: &mut [u8], pstride: usize) {
    let npairs = in_width.div_ceil(2);
    assert!(pstride >= rows.len() * 6 + 2 && scratch.len() >= npairs * pstride);
    let rows: Vec<&[u8]> = rows.iter().map(|r| &r[..in_width * 3]).collect();
    // Pairs whose 8-byte read stays inside the row (6q + 8 <= 3 * in_width) move as words.
    let fast = (3 * in_width).saturating_sub(8) / 6 + usize::from(3 * in_width >= 8);
    let fast = fast.min(npairs);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2; `fast` and `pstride` bound the reads and writes as
            // in the portable loop below.
            unsafe { transpose_pairs_avx2(&rows, scratch, pstride, fast) };
        } else {
            transpose_pairs_words(&rows, scratch, pstride, fast);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    transpose_pairs_words(&rows, scratch, pstride, fast);
    for q in fast..npairs {
        let x = 2 * q;
        for (i, r) in rows.iter().enumerate() {
            let at = q * pstride + i * 6;
            for c in 0..3 {
                scratch[at + 2 * c] = r[x * 3 + c];
                scratch[at + 2 * c + 1] = if x + 1 < in_width { r[x * 3 + 3 + c] } else { 0 };
            }
        }
    }
}

/// The pairs `0..fast` of [`transpose_pairs`], each pixel pair one 8-byte word.
#[inline(always)]
fn transpose_pairs_words(rows: &[&[u8]], scratch: &mut [u8], pstride: usize, fast: usize) {
    let out = scratch.as_mut_ptr();
    for q in 0..fast {
        for (i, r) in rows.iter().enumerate() {
            assert!(6 * q + 8 <= r.len() && q * pstride + i * 6 + 8 <= scratch.len());
            // SAFETY: both bounds asserted just above.
            unsafe {
                let v = u64::from_le(std::ptr::read_unaligned(r.as_ptr().add(6 * q) as *const u64));
                // bytes R0 G0 B0 R1 G1 B1 .. -> R0 R1 G0 G1 B0 B1 ..
                let b = |k: u32| (v >> (8 * k)) & 0xFF;
                let w = b(0) | b(3) << 8 | b(1) << 16 | b(4) << 24 | b(2) << 32 | b(5) << 40;
                std::ptr::write_unaligned(out.add(q * pstride + i * 6) as *mut u64, w.to_le());
            }
        }
    }
}

/// [`transpose_pairs_words`] with one `pshufb` per pixel pair.
///
/// # Safety
/// The CPU supports AVX2 (the bounds of the reads and writes are asserted inside).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_pairs_avx2(rows: &[&[u8]], scratch: &mut [u8], pstride: usize, fast: usize) {
    use std::arch::x86_64::*;
    if fast == 0 {
        return;
    }
    assert!(rows.iter().all(|r| 6 * (fast - 1) + 8 <= r.len()));
    assert!((fast - 1) * pstride + rows.len() * 6 + 2 <= scratch.len());
    let shuffle = _mm_setr_epi8(0, 3, 1, 4, 2, 5, 6, 7, -1, -1, -1, -1, -1, -1, -1, -1);
    let out = scratch.as_mut_ptr();
    for q in 0..fast {
        let column = out.add(q * pstride);
        for (i, r) in rows.iter().enumerate() {
            // Reads end at 6q + 8 <= r.len(), writes at q * pstride + 6i + 8 <= scratch.len()
            // (both asserted above).
            let v = _mm_loadl_epi64(r.as_ptr().add(6 * q) as *const __m128i);
            _mm_storel_epi64(column.add(i * 6) as *mut __m128i, _mm_shuffle_epi8(v, shuffle));
        }
    }
}

/// `dst[i] = clip8(2^21 + sum_k full[k][0] * a_k[i] + full[k][1] * b_k[i])` over the column
/// pairs `q0 + k` of [`transpose_pairs`]' layout (`a_k[i]`, `b_k[i]` the bytes at
/// `(q0 + k) * pstride + 2 * i` and `+ 1`), as Pillow's `ImagingResample*_8bpc` computes each
/// pixel (32-bit fixed-point sum, then `clip8`); vectorised with AVX2 where the CPU has it.
fn pair_taps_row(dst: &mut [u8], data: &[u8], pstride: usize, q0: usize, taps: &PairTaps, xx: usize) {
    let range = taps.range(xx);
    if !range.is_empty() {
        assert!((q0 + range.len() - 1) * pstride + 2 * dst.len() <= data.len(), "taps read past the block");
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); the reads are in bounds
            // (asserted above).
            return unsafe { pair_taps_row_avx2(dst, data, pstride, q0, &taps.hi[range.clone()], &taps.lo[range], &taps.full[taps.range(xx)]) };
        }
    }
    pair_taps_row_portable(dst, 0, data, pstride, q0, &taps.full[range])
}

/// The plain loop of [`pair_taps_row`] for lanes `lane0..lane0 + dst.len()`, 64 at a time.
fn pair_taps_row_portable(dst: &mut [u8], lane0: usize, data: &[u8], pstride: usize, q0: usize, full: &[[i32; 2]]) {
    let mut acc = [0i32; 64];
    for (c, out) in dst.chunks_mut(64).enumerate() {
        let acc = &mut acc[..out.len()];
        acc.fill(1i32 << (PRECISION_BITS - 1));
        for (k, w) in full.iter().enumerate() {
            let start = (q0 + k) * pstride + 2 * (lane0 + c * 64);
            for (a, p) in acc.iter_mut().zip(data[start..start + 2 * out.len()].chunks_exact(2)) {
                *a = a.wrapping_add(p[0] as i32 * w[0]).wrapping_add(p[1] as i32 * w[1]);
            }
        }
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
    }
}

/// [`pair_taps_row`] with AVX2: 32 lanes at a time, each pair of taps one `pmaddwd` on the
/// weights' high halves and one on their low halves (sums kept apart in registers, then
/// `(hi << 11) + lo`), saturated and packed to bytes (`packs`/`packus` saturate exactly as `clip8` clamps).
///
/// # Safety
/// The CPU supports AVX2, and `(q0 + hi.len() - 1) * pstride + 2 * dst.len() <= data.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pair_taps_row_avx2(dst: &mut [u8], data: &[u8], pstride: usize, q0: usize, hi: &[i32], lo: &[i32], full: &[[i32; 2]]) {
    use std::arch::x86_64::*;
    let n = dst.len();
    let half = _mm256_set1_epi32(1i32 << (PRECISION_BITS - 1));
    let zero = _mm256_setzero_si256();
    let base = data.as_ptr();
    let out = dst.as_mut_ptr();
    // 16 bytes (8 lanes' pairs) zero-extended to 16 words; every read is within
    // `data[(q0 + k) * pstride + 2 * i..][..64]` with `i + 32 <= n`.
    let words = |p: *const u8| _mm256_cvtepu8_epi16(_mm_loadu_si128(p as *const __m128i));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut i = 0;
    while i + 32 <= n {
        let (mut h0, mut h1, mut h2, mut h3) = (zero, zero, zero, zero);
        let (mut l0, mut l1, mut l2, mut l3) = (zero, zero, zero, zero);
        for (k, (&wh, &wl)) in hi.iter().zip(lo).enumerate() {
            let p = base.add((q0 + k) * pstride + 2 * i);
            let (wh, wl) = (_mm256_set1_epi32(wh), _mm256_set1_epi32(wl));
            let (v0, v1, v2, v3) = (words(p), words(p.add(16)), words(p.add(32)), words(p.add(48)));
            h0 = _mm256_add_epi32(h0, _mm256_madd_epi16(v0, wh));
            l0 = _mm256_add_epi32(l0, _mm256_madd_epi16(v0, wl));
            h1 = _mm256_add_epi32(h1, _mm256_madd_epi16(v1, wh));
            l1 = _mm256_add_epi32(l1, _mm256_madd_epi16(v1, wl));
            h2 = _mm256_add_epi32(h2, _mm256_madd_epi16(v2, wh));
            l2 = _mm256_add_epi32(l2, _mm256_madd_epi16(v2, wl));
            h3 = _mm256_add_epi32(h3, _mm256_madd_epi16(v3, wh));
            l3 = _mm256_add_epi32(l3, _mm256_madd_epi16(v3, wl));
        }
        const SHIFT: i32 = PRECISION_BITS as i32;
        let total = |h: __m256i, l: __m256i| {
            _mm256_srai_epi32::<SHIFT>(_mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32::<11>(h), l), half))
        };
        let (a0, a1, a2, a3) = (total(h0, l0), total(h1, l1), total(h2, l2), total(h3, l3));
        let bytes = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
        _mm256_storeu_si256(out.add(i) as *mut __m256i, _mm256_permutevar8x32_epi32(bytes, order));
        i += 32;
    }
    if i < n {
        pair_taps_row_portable(&mut dst[i..], i, data, pstride, q0, full);
    }
}

/// The horizontal pass over many rows at once, as Pillow computes it (each output pixel the
/// rounded fixed-point sum of its taps), laid out for vectorising: the rows are transposed into
/// column pairs ([`transpose_pairs`]) so that two taps multiply one contiguous run of every
/// row's pixels. `rows[i]` is an input row; the result is column-major:
/// `cols[xx * rows.len() * 3 + i * 3..][..3]` is output pixel `xx` of row `i` (`cols` holds one
/// spare byte at the end).
fn resample_rows(rows: &[&[u8]], in_width: usize, taps: &PairTaps, scratch: &mut Vec<u8>, cols: &mut Vec<u8>) {
    let n = rows.len() * 3;
    if n == 0 {
        return;
    }
    let pstride = 2 * n + 2;
    scratch.resize(in_width.div_ceil(2) * pstride, 0);
    transpose_pairs(rows, in_width, scratch, pstride);
    let out_width = taps.first.len();
    cols.resize(out_width * n + 1, 0);
    for (xx, col) in cols.chunks_exact_mut(n).enumerate().take(out_width) {
        pair_taps_row(col, scratch, pstride, taps.first[xx], taps, xx);
    }
}

/// Interleaves `n` rows (`row(r)`, `row_bytes` each) byte by byte in pairs: row `r` is slot
/// `r + offset`, and byte `b` of slot `s` goes to `pairs[(s / 2) * 2 * row_bytes + 2 * b + s % 2]`
/// (the bytes of a slot without a row are left as they are).
fn interleave_rows<'r>(row: impl Fn(usize) -> &'r [u8], n: usize, row_bytes: usize, offset: usize, pairs: &mut [u8]) {
    for (m, pair) in pairs.chunks_exact_mut(2 * row_bytes).enumerate() {
        // Slots 2m and 2m + 1 hold rows 2m - offset and 2m + 1 - offset.
        let (a, b) = ((2 * m).checked_sub(offset).filter(|&r| r < n), (2 * m + 1).checked_sub(offset).filter(|&r| r < n));
        match (a, b) {
            (Some(a), Some(b)) => {
                for ((d, &x), &y) in pair.chunks_exact_mut(2).zip(&row(a)[..row_bytes]).zip(&row(b)[..row_bytes]) {
                    d[0] = x;
                    d[1] = y;
                }
            }
            (Some(r), None) | (None, Some(r)) => {
                let e = usize::from(a.is_none());
                for (d, &v) in pair.chunks_exact_mut(2).zip(&row(r)[..row_bytes]) {
                    d[e] = v;
                }
            }
            (None, None) => {}
        }
    }
}

/// Pillow's `ImagingResampleVertical_8bpc`: output row `yy` of `out` (`row_bytes` each) from
/// canvas rows `rows` (`row(r)` is canvas row `rows.start + r`), through `pairs`: the rows are
/// interleaved in pairs (the layout [`pair_taps_row`] reads), the first pair starting at the even
/// row at or before `rows.start`.
fn vertical_pass<'r>(row: impl Fn(usize) -> &'r [u8], rows: std::ops::Range<usize>, row_bytes: usize, taps: &PairTaps, pairs: &mut Vec<u8>, out: &mut [u8]) {
    let even = rows.start & !1;
    pairs.clear();
    pairs.resize((rows.end - even).div_ceil(2) * 2 * row_bytes, 0);
    interleave_rows(row, rows.len(), row_bytes, rows.start - even, pairs);
    for (yy, o) in out.chunks_exact_mut(row_bytes).enumerate() {
        pair_taps_row(o, pairs, 2 * row_bytes, taps.first[yy] - even / 2, taps, yy);
    }
}

/// Writes rows `rows` of the column-major result of [`resample_rows`] (`n` bytes per column,
/// `out_width` columns) as row-major rows: row `i` goes to `dst[row_at(i)..][..out_width * 3]`.
fn scatter_columns(cols: &[u8], n: usize, rows: std::ops::Range<usize>, out_width: usize, dst: &mut [u8], row_at: impl Fn(usize) -> usize) {
    assert!(rows.end * 3 <= n && cols.len() > out_width * n && out_width > 0);
    for i in rows {
        let at = row_at(i);
        let row = &mut dst[at..at + out_width * 3];
        let d = row.as_mut_ptr();
        for xx in 0..out_width - 1 {
            // SAFETY: the read ends at xx * n + i * 3 + 4 <= (xx + 1) * n + 1 < cols.len(); the
            // write ends at xx * 3 + 4 <= out_width * 3 = row.len(). Its 4th byte is the first
            // of pixel xx + 1, written next.
            unsafe {
                let v = std::ptr::read_unaligned(cols.as_ptr().add(xx * n + i * 3) as *const u32);
                std::ptr::write_unaligned(d.add(xx * 3) as *mut u32, v);
            }
        }
        let xx = out_width - 1;
        row[xx * 3..xx * 3 + 3].copy_from_slice(&cols[xx * n + i * 3..xx * n + i * 3 + 3]);
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
        if self.is_fill_row(y) {
            for _ in 0..self.width {
                buf.extend_from_slice(&self.fill);
            }
            return buf;
        }
        let w = self.src.width as usize;
        for _ in 0..self.left {
            buf.extend_from_slice(&self.fill);
        }
        buf.extend_from_slice(self.src.row(y - self.top));
        for _ in self.left + w..self.width {
            buf.extend_from_slice(&self.fill);
        }
        buf
    }
}

/// Pads (or not) and resizes pictures to the model's `size x size`, reusing its buffers and
/// the taps of the last picture size.
pub struct SquareResizer {
    width: u32,
    height: u32,
    taps: Option<((usize, usize), PairTaps, Taps, PairTaps)>,
    temp: Vec<u8>,
    row: Vec<u8>,
    canvas_rows: Vec<u8>,
    scratch: Vec<u8>,
    cols: Vec<u8>,
    pairs: Vec<u8>,
    out: Vec<u8>,
}

impl SquareResizer {
    pub fn new(size: u32) -> Self {
        Self::with_size(size, size)
    }

    /// A resizer to `width x height` (any output size, as `Image.resize((width, height))`).
    pub fn with_size(width: u32, height: u32) -> Self {
        SquareResizer { width, height, taps: None, temp: Vec::new(), row: Vec::new(), canvas_rows: Vec::new(), scratch: Vec::new(), cols: Vec::new(), pairs: Vec::new(), out: Vec::new() }
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
        if !matches!(&self.taps, Some((dims, ..)) if *dims == (iw, ih)) {
            let vertical = Taps::new(ih, oh);
            let vertical_pairs = PairTaps::new(&vertical);
            self.taps = Some(((iw, ih), PairTaps::new(&Taps::new(iw, ow)), vertical, vertical_pairs));
        }
        let (_, horizontal, vertical, vertical_pairs) = self.taps.as_ref().expect("set above");
        let (need_h, need_v) = (iw != ow, ih != oh);
        self.out.resize(ow * oh * 3, 0);
        let row_bytes = ow * 3;
        if need_h && need_v && vertical_pass_first(iw, ih, ow, oh) {
            // The vertical pass first, over the whole width, rounding to 8 bits; then the
            // horizontal pass over the `oh` rows it made.
            let in_bytes = iw * 3;
            let (y0, y1) = (vertical.first[0], vertical.first[oh - 1] + vertical.len[oh - 1]);
            let plain = canvas.left == 0 && canvas.top == 0 && canvas.width == src.width as usize && canvas.height == src.height as usize;
            if !plain {
                self.canvas_rows.clear();
                for y in y0..y1 {
                    self.canvas_rows.extend_from_slice(canvas.row(y, &mut self.row));
                }
            }
            let packed = &self.canvas_rows;
            let row = |r: usize| if plain { src.row(y0 + r) } else { &packed[r * in_bytes..(r + 1) * in_bytes] };
            self.temp.resize(oh * in_bytes, 0);
            vertical_pass(row, y0..y1, in_bytes, vertical_pairs, &mut self.pairs, &mut self.temp);
            let rows: Vec<&[u8]> = self.temp.chunks_exact(in_bytes).collect();
            for (b, block) in rows.chunks(ROW_BLOCK).enumerate() {
                resample_rows(block, iw, horizontal, &mut self.scratch, &mut self.cols);
                scatter_columns(&self.cols, block.len() * 3, 0..block.len(), ow, &mut self.out, |i| (b * ROW_BLOCK + i) * row_bytes);
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
            let mut picture_rows: Vec<usize> = Vec::new();
            let mut fill_rows: Vec<usize> = Vec::new();
            for y in y0..y1 {
                if canvas.is_fill_row(y) { fill_rows.push(y) } else { picture_rows.push(y) }
            }
            let needs_copy = canvas.left != 0 || canvas.width != canvas.src.width as usize;
            if needs_copy {
                self.canvas_rows.clear();
                for &y in &picture_rows {
                    self.canvas_rows.extend_from_slice(canvas.row(y, &mut self.row));
                }
            }
            let mut inputs: Vec<&[u8]> = if needs_copy {
                self.canvas_rows.chunks_exact(iw * 3).collect()
            } else {
                picture_rows.iter().map(|&y| canvas.src.row(y - canvas.top)).collect()
            };
            let fill_row;
            if !fill_rows.is_empty() {
                fill_row = vec![canvas.fill; iw].concat();
                inputs.push(&fill_row);
            }
            let n_picture = picture_rows.len();
            // Blocks of rows keep the transposed block in cache; the fill row (last input, if
            // any) is resampled once and copied to every fill row.
            for (b, block) in inputs.chunks(ROW_BLOCK).enumerate() {
                resample_rows(block, iw, horizontal, &mut self.scratch, &mut self.cols);
                let first = b * ROW_BLOCK;
                let pictures = block.len().min(n_picture.saturating_sub(first));
                scatter_columns(&self.cols, block.len() * 3, 0..pictures, ow, &mut self.temp, |i| (picture_rows[first + i] - y0) * row_bytes);
                if pictures < block.len() {
                    self.row.resize(row_bytes, 0);
                    scatter_columns(&self.cols, block.len() * 3, pictures..pictures + 1, ow, &mut self.row, |_| 0);
                }
            }
            for &y in &fill_rows {
                self.temp[(y - y0) * row_bytes..(y - y0 + 1) * row_bytes].copy_from_slice(&self.row[..row_bytes]);
            }
        } else {
            for y in y0..y1 {
                let r = canvas.row(y, &mut self.row);
                self.temp[(y - y0) * row_bytes..(y - y0 + 1) * row_bytes].copy_from_slice(r);
            }
        }
        if need_v {
            let temp = &self.temp;
            vertical_pass(|r| &temp[r * row_bytes..(r + 1) * row_bytes], y0..y1, row_bytes, vertical_pairs, &mut self.pairs, &mut self.out);
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

    /// Every kernel path (the AVX2 one where the CPU has it, and the portable one always)
    /// against an i64 sum written from Pillow's formula, on noise with extreme weights
    /// included: one 8-bit pass over `rows` rows of `w` pixels to `ow` outputs.
    #[test]
    fn kernels_equal_the_plain_fixed_point_sum() {
        for (case, &(w, rows, ow)) in [(1280, 64, 224), (161, 7, 224), (97, 33, 40), (9, 1, 3), (2, 5, 7), (1, 3, 4), (600, 21, 599)].iter().enumerate() {
            let img = noise(w as u32, rows as u32, 7 + case as u64);
            let taps = Taps::new(w, ow);
            let want: Vec<Vec<u8>> = (0..ow)
                .map(|xx| {
                    (0..rows * 3)
                        .map(|lane| {
                            let (i, c) = (lane / 3, lane % 3);
                            let mut acc = 1i64 << (PRECISION_BITS - 1);
                            for (j, &k) in taps.weights(xx).iter().enumerate() {
                                acc += k as i64 * img.data[(i * w + taps.first[xx] + j) * 3 + c] as i64;
                            }
                            (acc >> PRECISION_BITS).clamp(0, 255) as u8
                        })
                        .collect()
                })
                .collect();
            // The horizontal pass: column pairs, both transposes and both kernels.
            let row_refs: Vec<&[u8]> = img.data.chunks_exact(w * 3).collect();
            let pairs = PairTaps::new(&taps);
            let pstride = rows * 6 + 2;
            let mut scratch = vec![0u8; w.div_ceil(2) * pstride];
            transpose_pairs(&row_refs, w, &mut scratch, pstride);
            let mut words = vec![0u8; scratch.len()];
            let fast = (3 * w).saturating_sub(8) / 6 + usize::from(3 * w >= 8);
            transpose_pairs_words(&row_refs, &mut words, pstride, fast.min(w.div_ceil(2)));
            for q in 0..fast.min(w.div_ceil(2)) {
                assert_eq!(words[q * pstride..q * pstride + rows * 6], scratch[q * pstride..q * pstride + rows * 6], "{w}x{rows} pair {q}");
            }
            for xx in 0..ow {
                let mut got = vec![0u8; rows * 3];
                pair_taps_row(&mut got, &scratch, pstride, pairs.first[xx], &pairs, xx);
                assert_eq!(got, want[xx], "pairs {w}x{rows} -> {ow}, output {xx}");
                pair_taps_row_portable(&mut got, 0, &scratch, pstride, pairs.first[xx], &pairs.full[pairs.range(xx)]);
                assert_eq!(got, want[xx], "portable pairs {w}x{rows} -> {ow}, output {xx}");
            }
        }
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

//! Whisper log-mel spectrogram, equal to `transformers.WhisperFeatureExtractor` (within 1e-4).
//!
//! Contract (16 kHz mono float32 input):
//! 1. pad with zeros or cut to 480000 samples (30 s);
//! 2. STFT with n_fft 400, hop 160, periodic Hann window, centred (200 samples of reflect
//!    padding each side) -> 3001 frames; power spectrum |X|^2 over 201 bins; the last frame is
//!    dropped -> 3000 frames;
//! 3. mel filters: Slaney mel scale, Slaney area normalisation, 0-8000 Hz, `n_mels` filters;
//! 4. `x = log10(max(mel, 1e-10))`, `x = max(x, x.max() - 8)`, `x = (x + 4) / 4`.
//!
//! Output is row-major `(n_mels, 3000)`. The windowed frames, the FFT and the power spectrum are
//! float64 (a pure tone's far bins lie 70 dB and more below its peak: a float32 FFT's round-off
//! there moves their log-mel by up to 2e-4, transformers' own float32 torch path included); the
//! mel projection, log10 and clamp are float32, the filter bank is built in f64. Measured against
//! a float64 oracle (transformers' numpy path): within 1e-5 on tones and noise.
//!
//! [`log_mel`] is the same computation for another padded length (Qwen2.5-Omni's feature
//! extractor pads to 300 s) that writes only the first frames, for signals much shorter than it.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_SAMPLES: usize = 480_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_FRAMES: usize = N_SAMPLES / HOP; // 3000 (the 3001st STFT frame is dropped)
const N_BINS: usize = N_FFT / 2 + 1;
/// Upper bound on `n_mels`: beyond this the filters of 201 FFT bins are mostly empty.
pub const MAX_MELS: usize = 512;

/// Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa / transformers.
fn hz_to_mel_slaney(hz: f64) -> f64 {
    let (min_log_hz, min_log_mel, logstep) = (1000.0, 15.0, 27.0 / 6.4f64.ln());
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() * logstep
    } else {
        3.0 * hz / 200.0
    }
}

fn mel_to_hz_slaney(mel: f64) -> f64 {
    let (min_log_hz, min_log_mel, logstep) = (1000.0, 15.0, 6.4f64.ln() / 27.0);
    if mel >= min_log_mel {
        min_log_hz * ((mel - min_log_mel) * logstep).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// One triangular filter: its first non-zero FFT bin and the weights from there on.
struct Filter {
    first_bin: usize,
    weights: Vec<f32>,
}

/// Slaney-normalised triangular mel filters over 0-8000 Hz (`mel_filter_bank(..., norm="slaney",
/// mel_scale="slaney")`), stored sparsely: each filter touches only a few of the 201 bins.
fn mel_filters(n_mels: usize) -> Vec<Filter> {
    let mel_min = hz_to_mel_slaney(0.0);
    let mel_max = hz_to_mel_slaney(SAMPLE_RATE as f64 / 2.0);
    let filter_hz: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz_slaney(mel_min + (mel_max - mel_min) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let fft_hz: Vec<f64> =
        (0..N_BINS).map(|k| k as f64 * (SAMPLE_RATE as f64 / 2.0) / (N_BINS - 1) as f64).collect();
    (0..n_mels)
        .map(|m| {
            let (lo, centre, hi) = (filter_hz[m], filter_hz[m + 1], filter_hz[m + 2]);
            let enorm = 2.0 / (hi - lo);
            let dense: Vec<f64> = fft_hz
                .iter()
                .map(|&f| {
                    let down = (f - lo) / (centre - lo);
                    let up = (hi - f) / (hi - centre);
                    down.min(up).max(0.0) * enorm
                })
                .collect();
            let first = dense.iter().position(|&w| w != 0.0).unwrap_or(0);
            let last = dense.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
            Filter { first_bin: first, weights: dense[first..last].iter().map(|&w| w as f32).collect() }
        })
        .collect()
}

/// Index into the signal zero-padded/cut to `n_samples` and reflect-padded by `N_FFT/2`.
#[inline]
fn reflect_index(j: isize, n_samples: usize) -> usize {
    let last = (n_samples - 1) as isize;
    let i = if j < 0 { -j } else if j > last { 2 * last - j } else { j };
    i as usize
}

/// What every call shares: the periodic Hann window and the planned 400-point real FFT.
struct StftPlan {
    window: Vec<f64>,
    /// 400-point complex FFT: two real frames at once (one as the real, one as the imaginary part).
    fft: Arc<dyn Fft<f64>>,
}

fn stft_plan() -> &'static StftPlan {
    static PLAN: OnceLock<StftPlan> = OnceLock::new();
    PLAN.get_or_init(|| StftPlan {
        window: (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos())
            .collect(),
        fft: FftPlanner::<f64>::new().plan_fft_forward(N_FFT),
    })
}

/// The filter bank for `n_mels`, built once per process and size.
fn cached_filters(n_mels: usize) -> Arc<Vec<Filter>> {
    static BANKS: Mutex<Vec<(usize, Arc<Vec<Filter>>)>> = Mutex::new(Vec::new());
    let mut banks = BANKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, bank)) = banks.iter().find(|(n, _)| *n == n_mels) {
        return bank.clone();
    }
    let bank = Arc::new(mel_filters(n_mels));
    banks.push((n_mels, bank.clone()));
    bank
}

/// `log10(x)` for `x >= 1e-10` (normal floats), within 1e-6 absolute (about one f32 ulp at
/// |log10 x| = 10), in plain arithmetic that the compiler vectorises (the libm call does not).
///
/// `x = 2^e * m` with `m` in `[sqrt(1/2), sqrt(2))`; `ln(m) = f - f^2/2 + f^3 P(f)` with
/// `f = m - 1` and `P` the degree-8 minimax polynomial of Cephes' `logf`; then
/// `log10(x) = (e ln 2 + ln m) log10(e)`.
#[inline(always)]
fn log10_fast(x: f32) -> f32 {
    const P: [f32; 9] = [
        7.037_683_6e-2, -1.151_461e-1, 1.167_699_9e-1, -1.242_014_1e-1, 1.424_932_3e-1,
        -1.666_805_8e-1, 2.000_071_4e-1, -2.499_999_4e-1, 3.333_333_1e-1,
    ];
    let bits = x.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127;
    let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // in [1, 2)
    let high = mantissa > std::f32::consts::SQRT_2;
    let m = if high { mantissa * 0.5 } else { mantissa };
    let e = (exponent + high as i32) as f32;
    let f = m - 1.0;
    let f2 = f * f;
    let mut p = P[0];
    for &c in &P[1..] {
        p = p * f + c;
    }
    let ln_m = f - 0.5 * f2 + f * f2 * p;
    // log10(2) = HI + LO with HI on 12 bits, so that e * HI is exact.
    const LOG10_2_HI: f32 = 0.301_025_39;
    const LOG10_2_LO: f32 = 4.605_039e-6;
    let log = e * LOG10_2_HI + (e * LOG10_2_LO + ln_m * std::f32::consts::LOG10_E);
    if x == f32::INFINITY { f32::INFINITY } else { log }
}

/// Frames per parallel work item. The mel projection runs across the frames of a chunk, as
/// 64-wide vector multiply-adds over a bin-major power matrix.
const CHUNK: usize = 64;
/// Frames whose spectra are computed one after the other, then read together bin by bin into
/// the bin-major power matrix: one 8-wide store per bin, no transpose.
const GROUP: usize = 8;

/// The `(n_mels, frames)` output, written by the chunks of pass 1 in parallel: chunk `c` writes
/// columns `c * CHUNK ..` of every row, so no two chunks touch the same element.
struct SharedOut {
    ptr: *mut f32,
    n_mels: usize,
    frames: usize,
}

// SAFETY: the chunks write disjoint elements (see the type's comment), and the buffer outlives
// pass 1.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Row `m`, columns `t0 .. t0 + values.len()`.
    #[inline(always)]
    fn write(&self, m: usize, t0: usize, values: &[f32]) {
        debug_assert!(m < self.n_mels && t0 + values.len() <= self.frames);
        // SAFETY: in bounds (checked above in debug builds; by construction of the chunks), and
        // no other chunk writes these columns.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(m * self.frames + t0), values.len());
        }
    }
}

/// What every chunk of one call reads: the signal (cut to `n_samples`), the span of its non-zero
/// samples (None: all silent), the padded length and the frames written, the mel filters, the
/// FFT plan and `log10(1e-10)`.
struct MelInputs<'a> {
    samples: &'a [f32],
    n_samples: usize,
    frames: usize,
    nonzero: Option<(usize, usize)>,
    filters: &'a [Filter],
    plan: &'a StftPlan,
    log_zero: f32,
}

thread_local! {
    /// Each thread's buffers of pass 1, made on its first chunk and kept for later calls.
    static SCRATCH: std::cell::RefCell<Option<ChunkScratch>> = const { std::cell::RefCell::new(None) };
}

/// Per-worker buffers of pass 1.
struct ChunkScratch {
    frame: Vec<f64>,
    frame_b: Vec<f64>,
    /// The spectra of one group: `GROUP / 2` pairs of frames, `N_FFT` bins each.
    spectra: Vec<Complex<f64>>,
    fft_scratch: Vec<Complex<f64>>,
    /// Bin-major power `(N_BINS, frames)` of the chunk.
    power: Vec<f32>,
    /// Log10 energies of one mel filter over the chunk's frames.
    mel: Vec<f32>,
}

impl ChunkScratch {
    fn new(plan: &StftPlan) -> Self {
        ChunkScratch {
            frame: vec![0f64; N_FFT],
            frame_b: vec![0f64; N_FFT],
            spectra: vec![Complex::default(); GROUP / 2 * N_FFT],
            fft_scratch: vec![Complex::default(); plan.fft.get_inplace_scratch_len()],
            power: vec![0f32; N_BINS * CHUNK],
            mel: vec![0f32; CHUNK],
        }
    }
}

/// The DFT of `z = x_t + i x_u`, frames `t` and `u` (when given; else zeros) windowed, into pair
/// slot `slot` of the group's spectra.
#[inline(always)]
fn spectrum_of_pair(
    samples: &[f32],
    n_samples: usize,
    t: usize,
    u: Option<usize>,
    plan: &StftPlan,
    scratch: &mut ChunkScratch,
    slot: usize,
) {
    let spectrum = &mut scratch.spectra[slot * N_FFT..][..N_FFT];
    match (inside(samples, n_samples, t), u.and_then(|u| inside(samples, n_samples, u))) {
        // Both windows lie inside the input: windowed straight into the FFT buffer, one pass.
        (Some(a), Some(b)) => {
            let finite = |x: f32| if x.is_finite() { x as f64 } else { 0.0 };
            for (((z, &w), &x), &y) in spectrum.iter_mut().zip(&plan.window).zip(a).zip(b) {
                *z = Complex::new(finite(x) * w, finite(y) * w);
            }
        }
        _ => {
            fill_frame(samples, n_samples, t, &plan.window, &mut scratch.frame);
            match u {
                Some(u) => fill_frame(samples, n_samples, u, &plan.window, &mut scratch.frame_b),
                None => scratch.frame_b.fill(0.0),
            }
            for ((z, &re), &im) in spectrum.iter_mut().zip(&scratch.frame).zip(&scratch.frame_b) {
                *z = Complex::new(re, im);
            }
        }
    }
    plan.fft.process_with_scratch(spectrum, &mut scratch.fft_scratch);
}

/// The power spectra of the group's `g` frames (pair slot `s` holds frames `2s` and `2s + 1`)
/// into columns `g0 .. g0 + g` of the bin-major `power[k * frames + f]`, one row of `GROUP`
/// values per bin. With `z = x_a + i x_b`: `X_a[k] = (Z[k] + conj Z[N-k]) / 2` and
/// `X_b[k] = (Z[k] - conj Z[N-k]) / 2i`, so `|X_a[k]|^2 = |Z[k] + conj Z[N-k]|^2 / 4` and
/// `|X_b[k]|^2 = |Z[k] - conj Z[N-k]|^2 / 4`. All in float64; the powers are stored as float32
/// (sums of positive terms follow: no cancellation is left to lose precision in).
#[inline(always)]
fn store_power(spectra: &[Complex<f64>], g: usize, power: &mut [f32], frames: usize, g0: usize) {
    let spectra = &spectra[..GROUP / 2 * N_FFT];
    for k in 0..N_BINS {
        let nk = (N_FFT - k) % N_FFT;
        let mut row = [0f32; GROUP];
        for (s, pair) in row.chunks_exact_mut(2).enumerate() {
            let (p, q) = (spectra[s * N_FFT + k], spectra[s * N_FFT + nk]);
            let (sum_re, sum_im) = (p.re + q.re, p.im - q.im);
            let (diff_re, diff_im) = (p.re - q.re, p.im + q.im);
            pair[0] = ((sum_re * sum_re + sum_im * sum_im) * 0.25) as f32;
            pair[1] = ((diff_re * diff_re + diff_im * diff_im) * 0.25) as f32;
        }
        power[k * frames + g0..][..g].copy_from_slice(&row[..g]);
    }
}

/// The largest value (NaN-free input), in 8 independent lanes so that it vectorises.
#[inline(always)]
fn max_of(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut blocks = values.chunks_exact(8);
    for block in &mut blocks {
        for (lane, &v) in lanes.iter_mut().zip(block) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    let rest = blocks.remainder().iter().copied();
    lanes.into_iter().chain(rest).fold(f32::NEG_INFINITY, f32::max)
}

/// The `N_FFT` samples of frame `t` when its window lies inside the input (no reflection, no
/// padding zeros), else `None`.
#[inline(always)]
fn inside(samples: &[f32], n_samples: usize, t: usize) -> Option<&[f32; N_FFT]> {
    let start = (t * HOP).checked_sub(N_FFT / 2)?;
    if start + N_FFT > n_samples.min(samples.len()) {
        return None;
    }
    samples[start..start + N_FFT].try_into().ok()
}

/// The windowed frame `t` of the signal zero-padded/cut to `n_samples` and reflect-padded,
/// written into `frame` (float64). Non-finite samples read as 0 (before the window).
#[inline(always)]
fn fill_frame(samples: &[f32], n_samples: usize, t: usize, window: &[f64], frame: &mut [f64]) {
    let finite = |x: f32| if x.is_finite() { x as f64 } else { 0.0 };
    let start = (t * HOP) as isize - (N_FFT / 2) as isize;
    if start >= 0 && start as usize + N_FFT <= n_samples {
        // Interior frame: no reflection; samples past the input are padding zeros.
        let start = start as usize;
        let have = samples.len().saturating_sub(start).min(N_FFT);
        let src = if have > 0 { &samples[start..start + have] } else { &[][..] };
        for ((x, &s), &w) in frame.iter_mut().zip(src).zip(window) {
            *x = finite(s) * w;
        }
        frame[have..].fill(0.0);
    } else {
        for (n, x) in frame.iter_mut().enumerate() {
            let i = reflect_index(start + n as isize, n_samples);
            *x = samples.get(i).copied().map_or(0.0, finite) * window[n];
        }
    }
}

/// Whether every sample of frame `t`'s window (after padding and reflection) lies outside the
/// non-zero span `[lo, hi]` of the signal, so that its spectrum is exactly zero.
fn frame_is_silent(t: usize, nonzero: Option<(usize, usize)>, n_samples: usize) -> bool {
    let Some((lo, hi)) = nonzero else { return true };
    let start = (t * HOP) as isize - (N_FFT / 2) as isize;
    if start >= 0 && start as usize + N_FFT <= n_samples {
        let start = start as usize;
        start + N_FFT - 1 < lo || start > hi
    } else {
        (0..N_FFT as isize).map(|n| reflect_index(start + n, n_samples)).all(|i| i < lo || i > hi)
    }
}

/// Whisper log-mel features of 16 kHz mono `samples` (any length; see the module contract).
///
/// Returns row-major `(n_mels, 3000)` float32. `n_mels` must be in `1..=512`.
///
/// Frames whose whole window is padding (or zeros) have power 0, hence the constant
/// `log10(1e-10)` before the clamp: they skip the FFT. The FFT plan and the filter bank are
/// built once per process; log10 runs vectorised over each chunk of frames.
pub fn whisper_log_mel(samples: &[f32], n_mels: usize) -> Result<Vec<f32>, String> {
    log_mel(samples, n_mels, N_SAMPLES, N_FRAMES)
}

/// The frames needed for the exact features of `len` samples padded to `n_samples`: those
/// whose window holds a sample of the signal (`ceil((len + 200) / 160)`), at most
/// `n_samples / 160`. Every later frame is silent, so [`log_mel`] with this many frames equals
/// the first columns of the full computation.
pub fn frames_touching(len: usize, n_samples: usize) -> usize {
    (len.min(n_samples) + N_FFT / 2).div_ceil(HOP).min(n_samples / HOP)
}

/// [`whisper_log_mel`] of `samples` zero-padded/cut to `n_samples` (a multiple of 160, at least
/// 400), writing only the first `frames` of its `n_samples / 160` frames: row-major
/// `(n_mels, frames)`. The clamp `max(x, x.max() - 8)` takes the maximum over the frames written
/// and `log10(1e-10)`; with `frames >= frames_touching(samples.len(), n_samples)` that is the
/// maximum over all frames, so the output equals the first `frames` columns of the full one.
pub fn log_mel(samples: &[f32], n_mels: usize, n_samples: usize, frames: usize) -> Result<Vec<f32>, String> {
    if n_mels == 0 || n_mels > MAX_MELS {
        return Err(format!("n_mels must be between 1 and {MAX_MELS}, got {n_mels}"));
    }
    if n_samples % HOP != 0 || n_samples < N_FFT {
        return Err(format!("n_samples must be a multiple of {HOP} and at least {N_FFT}, got {n_samples}"));
    }
    if frames > n_samples / HOP {
        return Err(format!("frames must be at most n_samples / {HOP} = {}, got {frames}", n_samples / HOP));
    }
    let samples = &samples[..samples.len().min(n_samples)];
    let is_signal = |x: &f32| *x != 0.0 && x.is_finite();
    let nonzero = samples
        .iter()
        .position(is_signal)
        .map(|lo| (lo, samples.iter().rposition(is_signal).expect("a non-zero sample exists")));
    let plan = stft_plan();
    let filters = cached_filters(n_mels);
    let log_zero = 1e-10f32.log10();
    let inputs = MelInputs { samples, n_samples, frames, nonzero, filters: &filters, plan, log_zero };
    // Every element is written below (pass 1 the loud chunks, pass 2 all), so the output starts
    // uninitialised: zeroing 1.5 MB first would cost as much as a short signal's whole work.
    let total = n_mels * frames;
    let mut out: Vec<MaybeUninit<f32>> = Vec::with_capacity(total);
    // SAFETY: `MaybeUninit` elements need no initialisation.
    unsafe { out.set_len(total) };
    let shared = SharedOut { ptr: out.as_mut_ptr().cast::<f32>(), n_mels, frames };

    // Pass 1: per chunk of frames, FFT power (bin-major), mel projection and log10, written into
    // the chunk's columns of the output; each chunk's largest value (None: all silent).
    // One chunk per task: the loud chunks are one run (the non-zero span), which rayon's halving
    // of the whole range would leave to one thread for a short signal.
    let chunk_max: Vec<Option<f32>> = (0..frames.div_ceil(CHUNK))
        .into_par_iter()
        .with_max_len(1)
        .map(|c| {
            SCRATCH.with_borrow_mut(|scratch| {
                let scratch = scratch.get_or_insert_with(|| ChunkScratch::new(plan));
                chunk_log_mel(&inputs, c, scratch, &shared)
            })
        })
        .collect();
    let max = chunk_max.iter().flatten().copied().fold(log_zero, f32::max);

    // Pass 2: clamp to max - 8 and scale, in place, row by row; silent chunks get the constant.
    let floor = max - 8.0;
    let scale = |v: f32| (v.max(floor) + 4.0) * 0.25; // exactly / 4
    let silent = scale(log_zero);
    out.par_chunks_mut(frames.max(1)).for_each(|row| {
        for (loud, dst) in chunk_max.iter().zip(row.chunks_mut(CHUNK)) {
            match loud {
                Some(_) => dst.iter_mut().for_each(|v| {
                    // SAFETY: pass 1 wrote every column of a loud chunk.
                    let x = unsafe { v.assume_init() };
                    v.write(scale(x));
                }),
                None => dst.fill(MaybeUninit::new(silent)),
            }
        }
    });
    // Every element is written now: reinterpret as `Vec<f32>` (same layout and allocation).
    let mut out = std::mem::ManuallyDrop::new(out);
    let (ptr, len, cap) = (out.as_mut_ptr().cast::<f32>(), out.len(), out.capacity());
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; all `len` elements are initialised.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, cap) })
}

/// The float64 FFTs alone of [`whisper_log_mel`] on `samples`: one 400-point complex FFT per
/// pair of the frames that touch the input (silent stretches inside it included; the full
/// computation skips all-zero windows, so on a signal with them this does more), spread over the
/// threads in chunks as the full computation spreads them, on the same windowed frames; no power,
/// mel projection, log or output. Its time is the floor
/// under the features' time that this FFT sets (`bench/media.py --profile`). Returns the number
/// of FFTs run.
pub fn fft_floor(samples: &[f32]) -> usize {
    let samples = &samples[..samples.len().min(N_SAMPLES)];
    let plan = stft_plan();
    let loud = frames_touching(samples.len(), N_SAMPLES);
    (0..loud.div_ceil(CHUNK))
        .into_par_iter()
        .with_max_len(1)
        .map(|c| {
            SCRATCH.with_borrow_mut(|scratch| {
                let scratch = scratch.get_or_insert_with(|| ChunkScratch::new(plan));
                let (t0, t1) = (c * CHUNK, ((c + 1) * CHUNK).min(loud));
                let mut ffts = 0;
                for t in (t0..t1).step_by(2) {
                    let partner = (t + 1 < t1).then_some(t + 1);
                    spectrum_of_pair(samples, N_SAMPLES, t, partner, plan, scratch, 0);
                    ffts += 1;
                }
                ffts
            })
        })
        .sum()
}

/// Pass 1 of [`whisper_log_mel`] for frames `c * CHUNK ..`: writes the chunk's columns and
/// returns their largest value, or writes nothing and returns `None` when every frame is silent.
/// The same arithmetic compiled three times, for AVX-512 or AVX2 (chosen at run time) and for
/// the baseline CPU; all three give the same bits (`tests::every_instruction_set_gives_the_same_bits`).
fn chunk_log_mel(inputs: &MelInputs, c: usize, scratch: &mut ChunkScratch, out: &SharedOut) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
        // SAFETY: the CPU supports AVX-512 F and VL, checked just above.
        return unsafe { chunk_log_mel_avx512(inputs, c, scratch, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { chunk_log_mel_avx2(inputs, c, scratch, out) };
    }
    chunk_log_mel_any(inputs, c, scratch, out)
}

/// [`chunk_log_mel_any`] with 16-wide vectors (float32; 8-wide float64), again without FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn chunk_log_mel_avx512(inputs: &MelInputs, c: usize, scratch: &mut ChunkScratch, out: &SharedOut) -> Option<f32> {
    chunk_log_mel_any(inputs, c, scratch, out)
}

/// [`chunk_log_mel_any`] with 8-wide vectors. Plain multiplies and adds (no FMA), so the result
/// is bit-identical to the baseline build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn chunk_log_mel_avx2(inputs: &MelInputs, c: usize, scratch: &mut ChunkScratch, out: &SharedOut) -> Option<f32> {
    chunk_log_mel_any(inputs, c, scratch, out)
}

#[inline(always)]
fn chunk_log_mel_any(inputs: &MelInputs, c: usize, scratch: &mut ChunkScratch, out: &SharedOut) -> Option<f32> {
    let MelInputs { samples, n_samples, frames: all_frames, nonzero, filters, plan, log_zero } = *inputs;
    let t0 = c * CHUNK;
    let frames = CHUNK.min(all_frames - t0);
    // The non-zero span is one stretch of samples, so the frames that see it are one range.
    let loud_first = (0..frames).find(|&f| !frame_is_silent(t0 + f, nonzero, n_samples));
    let Some(first) = loud_first else {
        return None; // pass 2 fills the chunk's columns
    };
    let end = (first..frames).find(|&f| frame_is_silent(t0 + f, nonzero, n_samples)).unwrap_or(frames);
    let power = &mut scratch.power[..N_BINS * frames];
    if first > 0 || end < frames {
        // Silent frames: exactly what the FFT of an all-zero window gives.
        for row in power.chunks_exact_mut(frames) {
            row[..first].fill(0.0);
            row[end..].fill(0.0);
        }
    }
    // Loud frames in groups: pairs through the FFT (an odd one out is paired with silence), then
    // the group's power columns into the bin-major matrix.
    for g0 in (first..end).step_by(GROUP) {
        let g = GROUP.min(end - g0);
        for (slot, f) in (g0..g0 + g).step_by(2).enumerate() {
            let partner = (f + 1 < g0 + g).then_some(t0 + f + 1);
            spectrum_of_pair(samples, n_samples, t0 + f, partner, plan, scratch, slot);
        }
        store_power(&scratch.spectra, g, &mut scratch.power[..N_BINS * frames], frames, g0);
    }
    // mel[m][f] = sum over the filter's bins k (ascending) of power[k][f] * w[m][k]; then log10,
    // written into row m of the output, one filter at a time.
    let power = &scratch.power[..N_BINS * frames];
    let mel = &mut scratch.mel[..frames];
    let mut max = f32::NEG_INFINITY;
    for (m, filt) in filters.iter().enumerate() {
        let row = |j: usize| &power[(filt.first_bin + j) * frames..][..frames];
        match filt.weights.split_first() {
            Some((&w, rest)) => {
                for (acc, &p) in mel.iter_mut().zip(row(0)) {
                    *acc = p * w;
                }
                for (j, &w) in rest.iter().enumerate() {
                    for (acc, &p) in mel.iter_mut().zip(row(j + 1)) {
                        *acc += p * w;
                    }
                }
            }
            None => mel.fill(0.0),
        }
        for v in mel.iter_mut() {
            *v = if *v <= 1e-10 { log_zero } else { log10_fast(*v) };
        }
        max = max.max(max_of(mel));
        out.write(m, t0, mel);
    }
    Some(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_constant() {
        let mel = whisper_log_mel(&[], 80).unwrap();
        assert_eq!(mel.len(), 80 * N_FRAMES);
        assert!(mel.iter().all(|&v| v == -1.5), "log10(1e-10) = -10 -> (-10 + 4) / 4");
    }

    #[test]
    fn filters_are_slaney_normalised_triangles() {
        let filters = mel_filters(128);
        assert_eq!(filters.len(), 128);
        for f in &filters {
            assert!(f.weights.iter().all(|&w| w >= 0.0));
        }
        // Centres rise with the mel index.
        assert!(filters.windows(2).all(|w| w[0].first_bin <= w[1].first_bin));
    }

    #[test]
    fn tone_peaks_in_its_band() {
        let tone: Vec<f32> = (0..SAMPLE_RATE)
            .map(|n| (2.0 * std::f32::consts::PI * 1000.0 * n as f32 / SAMPLE_RATE as f32).sin())
            .collect();
        let mel = whisper_log_mel(&tone, 80).unwrap();
        let column: Vec<f32> = (0..80).map(|m| mel[m * N_FRAMES + 50]).collect();
        let peak = column.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let filters = mel_filters(80);
        let bin_1k = 1000 * N_FFT / SAMPLE_RATE; // 25
        let f = &filters[peak];
        assert!(f.first_bin <= bin_1k && bin_1k < f.first_bin + f.weights.len());
    }

    #[test]
    fn log10_fast_is_within_1e_6_of_f64() {
        let mut worst = 0f64;
        let mut x = 1e-10f32;
        while x < 1e12 {
            let err = (log10_fast(x) as f64 - (x as f64).log10()).abs();
            worst = worst.max(err);
            x *= 1.000_37;
        }
        assert!(worst < 1e-6, "worst error {worst}");
        assert_eq!(log10_fast(1.0), 0.0);
        assert_eq!(log10_fast(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn silent_frames_are_exactly_those_with_an_all_zero_window() {
        let window = vec![1f64; N_FFT];
        let mut frame = vec![0f64; N_FFT];
        // One non-zero stretch [lo, hi] at the start, around frame edges, in the middle, at the
        // very end of the 30 s, and past it (cut away).
        let spans = [(0, 0), (0, 3), (5, 5), (199, 200), (200, 200), (201, 201), (359, 361),
                     (1000, 1500), (47_999, 48_000), (479_000, 479_999), (479_999, 479_999)];
        for &(lo, hi) in &spans {
            let mut signal = vec![0f32; hi + 1];
            signal[lo..=hi].fill(-1.0);
            let mut loud = Vec::new();
            for t in 0..N_FRAMES {
                fill_frame(&signal, N_SAMPLES, t, &window, &mut frame);
                let silent = frame.iter().all(|&x| x == 0.0);
                assert_eq!(frame_is_silent(t, Some((lo, hi)), N_SAMPLES), silent, "span {lo}..={hi}, frame {t}");
                if !silent {
                    loud.push(t);
                }
            }
            // The chunk pass relies on this: the frames that see the span are one range.
            assert!(loud.windows(2).all(|w| w[1] == w[0] + 1), "span {lo}..={hi}: loud frames {loud:?}");
        }
        assert!(frame_is_silent(0, None, N_SAMPLES));
    }

    #[test]
    fn short_output_equals_the_first_columns_of_the_full_one() {
        // A 300 s padded length, as Qwen2.5-Omni's extractor: the frames touching the signal
        // against every frame of the padded signal.
        let n_samples = 16_000 * 300;
        let all = n_samples / HOP;
        for len in [1usize, 159, 160, 161, 3_333, 16_000 * 2 + 7] {
            let x: Vec<f32> = (0..len).map(|n| ((n * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect();
            let frames = frames_touching(len, n_samples);
            assert!(frames >= len.div_ceil(HOP) && frames < all);
            let short = log_mel(&x, 16, n_samples, frames).unwrap();
            let full = log_mel(&x, 16, n_samples, all).unwrap();
            for m in 0..16 {
                assert_eq!(&short[m * frames..(m + 1) * frames], &full[m * all..m * all + frames], "len {len}, mel {m}");
                assert!(full[m * all + frames..(m + 1) * all].iter().all(|&v| v == full[(m + 1) * all - 1]));
            }
        }
        assert_eq!(frames_touching(10 * n_samples, n_samples), all);
        assert!(log_mel(&[0.0; 4], 8, 16_001, 1).is_err());
        assert!(log_mel(&[0.0; 4], 8, 1600, 11).is_err());
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        // A tone plus noise with a silent start and end, so that every kind of chunk occurs.
        let x: Vec<f32> = (0..100_000)
            .map(|n| if (5_000..90_000).contains(&n) {
                (n as f32 * 0.0731).sin() * 0.5 + ((n * 7919 % 1000) as f32 / 500.0 - 1.0) * 1e-3
            } else { 0.0 })
            .collect();
        let (n_mels, frames) = (128, N_FRAMES);
        let filters = cached_filters(n_mels);
        let nonzero = Some((5_000, 89_999));
        let inputs = MelInputs { samples: &x, n_samples: N_SAMPLES, frames, nonzero, filters: &filters,
                                 plan: stft_plan(), log_zero: 1e-10f32.log10() };
        type Variant = unsafe fn(&MelInputs, usize, &mut ChunkScratch, &SharedOut) -> Option<f32>;
        let mut variants: Vec<(&str, Variant)> = vec![("baseline", |i, c, s, o| chunk_log_mel_any(i, c, s, o))];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                variants.push(("avx2", chunk_log_mel_avx2));
            }
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                variants.push(("avx512", chunk_log_mel_avx512));
            }
        }
        let run = |f: Variant| {
            let mut out = vec![0f32; n_mels * frames];
            let shared = SharedOut { ptr: out.as_mut_ptr(), n_mels, frames };
            let mut scratch = ChunkScratch::new(stft_plan());
            // SAFETY: each variant runs only where the CPU has its instructions (checked above).
            let maxima: Vec<Option<u32>> = (0..frames.div_ceil(CHUNK))
                .map(|c| unsafe { f(&inputs, c, &mut scratch, &shared) }.map(f32::to_bits))
                .collect();
            (out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(), maxima)
        };
        let reference = run(variants[0].1);
        assert!(reference.1.iter().any(Option::is_some) && reference.1.iter().any(Option::is_none));
        for &(name, f) in &variants[1..] {
            assert!(run(f) == reference, "{name} differs from the baseline build");
        }
    }

    #[test]
    fn fft_floor_runs_one_fft_per_pair_of_frames_in_each_chunk() {
        // 30 s: 3000 frames in chunks of 64 (the last one 56) -> 46 * 32 + 28 FFTs.
        assert_eq!(fft_floor(&vec![0.1f32; N_SAMPLES]), 1500);
        // 3 s: the frames touching 48,000 samples, ceil(48,200 / 160) = 302 -> 4 * 32 + 23 (the last chunk: 46 frames).
        assert_eq!(fft_floor(&vec![0.1f32; 48_000]), 151);
        // Longer than 30 s: cut to 30 s, as whisper_log_mel does.
        assert_eq!(fft_floor(&vec![0.1f32; N_SAMPLES + 16_000]), 1500);
    }

    #[test]
    fn rejects_bad_n_mels() {
        assert!(whisper_log_mel(&[0.0; 10], 0).is_err());
        assert!(whisper_log_mel(&[0.0; 10], 100_000).is_err());
    }
}

/// A timing loop, not a test: how long the 1500 FFTs of a 30 s signal take alone against the
/// whole log-mel of 30/10/3 s and of silence (best of 40), for the account in docs/benchmarks.md.
/// `RAYON_NUM_THREADS=1 cargo test --release --lib mel::timing -- --ignored --nocapture`
#[cfg(test)]
mod timing {
    use super::*;
    fn best(mut f: impl FnMut()) -> std::time::Duration {
        (0..40).map(|_| { let t = std::time::Instant::now(); f(); t.elapsed() }).min().unwrap()
    }
    #[test]
    #[ignore = "a timing loop"]
    fn mel_timing() {
        let x: Vec<f32> = (0..480_000).map(|n| ((n * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1).collect();
        let plan = stft_plan();
        let mut buf = vec![Complex::<f64>::default(); N_FFT];
        let mut scratch = vec![Complex::<f64>::default(); plan.fft.get_inplace_scratch_len()];
        let fft = best(|| for _ in 0..1500 { plan.fft.process_with_scratch(&mut buf, &mut scratch); });
        let t30 = best(|| { log_mel(&x, 128, N_SAMPLES, N_FRAMES).unwrap(); });
        let t10 = best(|| { log_mel(&x[..160_000], 128, N_SAMPLES, N_FRAMES).unwrap(); });
        let t3 = best(|| { log_mel(&x[..48_000], 128, N_SAMPLES, N_FRAMES).unwrap(); });
        let t0 = best(|| { log_mel(&[], 128, N_SAMPLES, N_FRAMES).unwrap(); });
        println!("1500 ffts {fft:?} log_mel 30s {t30:?} 10s {t10:?} 3s {t3:?} silent {t0:?}");
    }
}

//! From a full-size RGB24 picture to a model-ready CHW float32 tensor.
//!
//! Order (as HumanOmni): optional pad to a square with the fill colour `int(mean*255)`, the
//! picture centred on the short axis (PIL `expand2square`); bicubic resize to S x S equal to
//! PIL's `Image.resize(..., BICUBIC)` (fast_image_resize's CatmullRom convolution, a = -0.5,
//! support scaled on downsampling, as PIL); then `(x/255 - mean) / std` per channel.

use fast_image_resize::images::{Image, ImageRef, TypedImage};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ImageView, PixelType, ResizeAlg, ResizeOptions, Resizer};

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

/// RGB24 bytes as fast_image_resize pixels.
fn as_pixels(bytes: &[u8]) -> &[U8x3] {
    // SAFETY: U8x3 is a repr(C) [u8; 3] (size 3, alignment 1), so the prefix is empty and every
    // 3 bytes are one pixel; a trailing partial pixel cannot occur for whole rows.
    let (prefix, pixels, _) = unsafe { bytes.align_to::<U8x3>() };
    debug_assert!(prefix.is_empty());
    pixels
}

/// A picture centred vertically on a taller canvas of one fill colour, read in place: the rows
/// above and below are one shared fill row, so padding costs no copy.
struct Canvas<'a> {
    src: RgbView<'a>,
    height: u32,
    top: u32,
    fill_row: Vec<U8x3>,
}

// SAFETY: every row handed out has exactly `width()` pixels.
unsafe impl ImageView for Canvas<'_> {
    type Pixel = U8x3;

    fn width(&self) -> u32 {
        self.src.width
    }

    fn height(&self) -> u32 {
        self.height
    }

    fn iter_rows(&self, start_row: u32) -> impl Iterator<Item = &[U8x3]> {
        (start_row..self.height).map(move |y| {
            if y >= self.top && y < self.top + self.src.height {
                as_pixels(self.src.row((y - self.top) as usize))
            } else {
                &self.fill_row[..]
            }
        })
    }
}

/// Pads (or not) and resizes pictures to the model's `size x size`, reusing its buffers.
pub struct SquareResizer {
    resizer: Resizer,
    dst: TypedImage<'static, U8x3>,
    options: ResizeOptions,
}

impl SquareResizer {
    pub fn new(size: u32) -> Self {
        SquareResizer {
            resizer: Resizer::new(),
            dst: TypedImage::new(size, size),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom)),
        }
    }

    /// `src` padded to a square of `fill` (for [`Aspect::Pad`]) and resized, as packed RGB24
    /// bytes; equal to [`pad_to_square`] then [`resize_bicubic`].
    pub fn resize(&mut self, src: RgbView<'_>, aspect: Aspect, fill: [u8; 3]) -> Result<&[u8], String> {
        let (w, h) = (src.width, src.height);
        let padded;
        let canvas = match aspect {
            Aspect::Pad if h > w => {
                // Tall pictures pad left and right: build the square (rare in practice).
                let tight = RgbImage {
                    width: w,
                    height: h,
                    data: (0..h as usize).flat_map(|y| src.row(y).iter().copied()).collect(),
                };
                padded = pad_to_square(&tight, fill);
                Canvas { src: padded.view(), height: h, top: 0, fill_row: Vec::new() }
            }
            Aspect::Pad => Canvas {
                src,
                height: w,
                top: (w - h) / 2,
                fill_row: vec![U8x3::new(fill); w as usize],
            },
            Aspect::Resize => Canvas { src, height: h, top: 0, fill_row: Vec::new() },
        };
        self.resizer
            .resize_typed(&canvas, &mut self.dst, &self.options)
            .map_err(|e| format!("resize failed: {e}"))?;
        // SAFETY: U8x3 is a repr(C) [u8; 3]; the pixels are plain bytes.
        let pixels = self.dst.pixels();
        Ok(unsafe { std::slice::from_raw_parts(pixels.as_ptr() as *const u8, pixels.len() * 3) })
    }
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

/// Bicubic resize equal to PIL BICUBIC (see the module docs).
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage, String> {
    let src = ImageRef::new(img.width, img.height, &img.data, PixelType::U8x3)
        .map_err(|e| format!("bad picture buffer: {e}"))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new().resize(&src, &mut dst, &options).map_err(|e| format!("resize failed: {e}"))?;
    Ok(RgbImage { width, height, data: dst.into_vec() })
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

    #[test]
    fn fill_is_int_of_mean_times_255() {
        let mut out = vec![0f32; 3 * 16 * 16];
        // A 1-pixel-high strip padded to 256x256 then shrunk 16x: the bicubic support of the
        // corner (rows 0-40) holds only fill.
        to_model_input(&solid(256, 1, 0), 16, Aspect::Pad, [0.5; 3], [1.0; 3], &mut out).unwrap();
        assert!((out[0] - (127.0 / 255.0 - 0.5)).abs() < 1e-6);
    }
}

//! From a full-size RGB24 picture to a model-ready CHW float32 tensor.
//!
//! Order (as HumanOmni): optional pad to a square with the fill colour `int(mean*255)`, the
//! picture centred on the short axis (PIL `expand2square`); bicubic resize to S x S equal to
//! PIL's `Image.resize(..., BICUBIC)` (fast_image_resize's CatmullRom convolution, a = -0.5,
//! support scaled on downsampling, as PIL); then `(x/255 - mean) / std` per channel.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// A packed RGB24 picture, rows without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
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
    let plane = img.width as usize * img.height as usize;
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
    for (i, px) in img.data.chunks_exact(3).enumerate() {
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
            let fill = mean.map(|m| (m * 255.0).clamp(0.0, 255.0) as u8);
            padded = pad_to_square(img, fill);
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
    let resized = pad_and_resize(img, size, aspect, mean)?;
    normalise_into(&resized, mean, std, out);
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

    #[test]
    fn fill_is_int_of_mean_times_255() {
        let mut out = vec![0f32; 3 * 16 * 16];
        // A 1-pixel-high strip padded to 256x256 then shrunk 16x: the bicubic support of the
        // corner (rows 0-40) holds only fill.
        to_model_input(&solid(256, 1, 0), 16, Aspect::Pad, [0.5; 3], [1.0; 3], &mut out).unwrap();
        assert!((out[0] - (127.0 / 255.0 - 0.5)).abs() < 1e-6);
    }
}

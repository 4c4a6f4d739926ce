//! HumanOmni "v1" uniform frame sampling.

/// Indices of `k` frames out of `n`: `seg = (n-1)/k`, frame i = `floor(seg*(i+0.5) + 1e-6 + 0.5)`.
///
/// HumanOmni rounds with `np.round(x + 1e-6)`, so exact halves round up (Python's `round`
/// would round them to even). With `n < k` frames repeat; `n == 0` gives no indices.
pub fn uniform_indices(n: usize, k: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let seg = (n as f64 - 1.0) / k as f64;
    (0..k)
        .map(|i| {
            let x = seg * (i as f64 + 0.5) + 1e-6;
            ((x + 0.5).floor() as usize).min(n - 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_up() {
        // n = 9, k = 8: seg = 1, x = i + 0.5 -> i + 1.
        assert_eq!(uniform_indices(9, 8), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn short_clips_repeat_frames() {
        assert_eq!(uniform_indices(3, 8), vec![0, 0, 1, 1, 1, 1, 2, 2]);
        assert_eq!(uniform_indices(1, 4), vec![0, 0, 0, 0]);
        assert!(uniform_indices(0, 8).is_empty());
    }

    #[test]
    fn typical_clip() {
        // seg = 99/8 = 12.375: 6.1875, 18.5625, 30.9375, 43.3125, 55.6875, 68.0625, 80.4375, 92.8125
        assert_eq!(uniform_indices(100, 8), vec![6, 19, 31, 43, 56, 68, 80, 93]);
    }
}

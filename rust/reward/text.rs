//! Texts as the caller holds them: UTF-8 bytes, or the fixed-width code units of a Python `str`
//! (Latin-1, UCS-2 or UCS-4, PEP 393), turned into UTF-8 where they are scored.
//!
//! A Python `str` that is not ASCII has no UTF-8 of its own: encoding it takes the GIL, runs on
//! one core and allocates a cache in the str. Reading its code units instead, the scorer's
//! worker threads encode each text into a buffer of their own, in parallel. The encoding is
//! Python's `str.encode("utf-8", "surrogatepass")`: a lone surrogate becomes three bytes, as the
//! scanners expect (see `scan`).

/// One text to score.
#[derive(Debug, Clone, Copy)]
pub enum Text<'a> {
    /// UTF-8 (lone surrogates as three bytes).
    Utf8(&'a [u8]),
    /// Code points U+0000..U+00FF, one byte each.
    Latin1(&'a [u8]),
    /// Code points U+0000..U+FFFF, one unit each (surrogates included).
    Ucs2(&'a [u16]),
    /// Code points U+0000..U+10FFFF, one unit each (surrogates included).
    Ucs4(&'a [u32]),
}

/// Texts whose UTF-8 a scorer can read, encoding into `buf` when they hold none of their own.
pub trait Utf8Source: Sync {
    /// The UTF-8 of the text: its own bytes, or `buf` holding them.
    fn utf8<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8];
}

impl<T: AsRef<[u8]> + Sync + ?Sized> Utf8Source for T {
    fn utf8<'b>(&'b self, _buf: &'b mut Vec<u8>) -> &'b [u8] {
        self.as_ref()
    }
}

impl Utf8Source for Text<'_> {
    fn utf8<'b>(&'b self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        match *self {
            Text::Utf8(b) => b,
            Text::Latin1(units) => encode(units, buf),
            Text::Ucs2(units) => encode(units, buf),
            Text::Ucs4(units) => encode(units, buf),
        }
    }
}

/// Code units that encode to UTF-8 one code point each.
trait Unit: Copy + Into<u32> {}
impl Unit for u8 {}
impl Unit for u16 {}
impl Unit for u32 {}

/// Units per block tested for ASCII at once (and then narrowed to bytes).
const BLOCK: usize = 32;

/// UTF-8 of `units` into `buf` (cleared first). Runs of ASCII go through 32 units at a time
/// (one OR-reduction, one narrowing store), so that mostly-ASCII text encodes at about the speed
/// its units are read; compiled for AVX2 when the CPU has it.
fn encode<'b, U: Unit>(units: &[U], buf: &'b mut Vec<u8>) -> &'b [u8] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { encode_avx2(units, buf) };
    }
    encode_any(units, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn encode_avx2<'b, U: Unit>(units: &[U], buf: &'b mut Vec<u8>) -> &'b [u8] {
    encode_any(units, buf)
}

#[inline(always)]
fn encode_any<'b, U: Unit>(units: &[U], buf: &'b mut Vec<u8>) -> &'b [u8] {
    buf.clear();
    buf.reserve(units.len() * 4);
    let mut blocks = units.chunks_exact(BLOCK);
    for block in &mut blocks {
        let block: &[U; BLOCK] = block.try_into().expect("a block");
        if block.iter().fold(0u32, |acc, &u| acc | u.into()) < 0x80 {
            let ascii: [u8; BLOCK] = std::array::from_fn(|i| Into::<u32>::into(block[i]) as u8);
            let len = buf.len();
            // SAFETY: `reserve` above left room for 4 bytes per unit, more than is written.
            unsafe {
                std::ptr::copy_nonoverlapping(ascii.as_ptr(), buf.as_mut_ptr().add(len), BLOCK);
                buf.set_len(len + BLOCK);
            }
        } else {
            block.iter().for_each(|&u| push_code_point(u.into(), buf));
        }
    }
    blocks.remainder().iter().for_each(|&u| push_code_point(u.into(), buf));
    buf
}

/// Appends the UTF-8 of one code point (a surrogate as its three-byte form).
#[inline(always)]
fn push_code_point(c: u32, buf: &mut Vec<u8>) {
    // Continuation byte holding bits `shift..shift + 6` of `c`.
    let cont = |shift: u32| 0x80 | ((c >> shift) & 0x3F) as u8;
    match c {
        0..=0x7F => buf.push(c as u8),
        0x80..=0x7FF => buf.extend_from_slice(&[0xC0 | (c >> 6) as u8, cont(0)]),
        0x800..=0xFFFF => buf.extend_from_slice(&[0xE0 | (c >> 12) as u8, cont(6), cont(0)]),
        _ => buf.extend_from_slice(&[0xF0 | (c >> 18) as u8, cont(12), cont(6), cont(0)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Python's `s.encode("utf-8", "surrogatepass")` gives, from Rust's own encoder (a
    /// surrogate, which a Rust `char` cannot hold, written out by hand).
    fn reference(code_points: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &c in code_points {
            match char::from_u32(c) {
                Some(ch) => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
                None => out.extend_from_slice(&[0xE0 | (c >> 12) as u8, 0x80 | ((c >> 6) & 0x3F) as u8, 0x80 | (c & 0x3F) as u8]),
            }
        }
        out
    }

    #[test]
    #[ignore = "a timing loop, not a test: cargo test --release --lib text -- --ignored --nocapture"]
    fn encode_speed() {
        // 100k texts of 1000 units, ASCII but for one character: GB/s of units read.
        let mut buf = Vec::new();
        let ascii: Vec<u32> = (0..1000u32).map(|i| 0x61 + i % 26).collect();
        let mut ucs4 = ascii.clone();
        ucs4[500] = 0x1F642;
        let ucs2: Vec<u16> = ascii.iter().map(|&c| c as u16).chain([0x2014]).collect();
        let latin1: Vec<u8> = ascii.iter().map(|&c| c as u8).chain([0xE9]).collect();
        let ascii8: Vec<u8> = ascii.iter().map(|&c| c as u8).collect();
        let cases: [(&str, Text, usize); 4] = [("latin1", Text::Latin1(&latin1), 1), ("ucs2", Text::Ucs2(&ucs2), 2),
            ("ucs4", Text::Ucs4(&ucs4), 4), ("utf8 copy", Text::Latin1(&ascii8), 1)];
        for (name, text, width) in cases {
            let t = std::time::Instant::now();
            let mut total = 0;
            for _ in 0..100_000 {
                total += text.utf8(&mut buf).len();
            }
            let s = t.elapsed().as_secs_f64();
            println!("{name:10} {:6.1} ms per 100k texts, {:5.1} GB/s read ({total} bytes out)", s * 1e3, 1e5 * 1000.0 * width as f64 / s / 1e9);
        }
    }

    #[test]
    fn encodes_as_python_surrogatepass() {
        let edges = [0u32, 0x41, 0x7F, 0x80, 0xE9, 0xFF, 0x100, 0x7FF, 0x800, 0x2014, 0xD800, 0xDBFF,
                     0xDC00, 0xDFFF, 0xE000, 0xFFFF, 0x10000, 0x1F642, 0x10FFFF];
        let mut buf = Vec::new();
        // Every edge at every offset of a block, among ASCII: the block path and the slow path.
        for &c in &edges {
            for at in 0..40 {
                let mut cps: Vec<u32> = (0..40).map(|i| 0x61 + (i % 26)).collect();
                cps[at] = c;
                let want = reference(&cps);
                assert_eq!(Text::Ucs4(&cps).utf8(&mut buf), &want[..], "U+{c:04X} at {at}");
                if c <= 0xFFFF {
                    let units: Vec<u16> = cps.iter().map(|&c| c as u16).collect();
                    assert_eq!(Text::Ucs2(&units).utf8(&mut buf), &want[..], "U+{c:04X} at {at}");
                }
                if c <= 0xFF {
                    let units: Vec<u8> = cps.iter().map(|&c| c as u8).collect();
                    assert_eq!(Text::Latin1(&units).utf8(&mut buf), &want[..], "U+{c:04X} at {at}");
                }
            }
        }
        assert_eq!(Text::Ucs2(&[]).utf8(&mut buf), b"");
        assert_eq!(Text::Utf8(b"caf\xc3\xa9").utf8(&mut buf), "café".as_bytes());
        assert_eq!("plain".utf8(&mut buf), b"plain");
    }
}

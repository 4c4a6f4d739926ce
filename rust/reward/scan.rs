//! Linear-time scanners that reproduce, byte for byte, what Python's `re` does with the three
//! patterns of R1-Omni's rewards, plus `str.strip()`.
//!
//! Texts are UTF-8 bytes, possibly holding lone surrogates encoded as three bytes (what Python's
//! `str.encode("utf-8", "surrogatepass")` gives), so any Python `str` can be scored. The tags and
//! `\n` are ASCII, and in such an encoding an ASCII byte never occurs inside a multi-byte
//! character, so a byte search finds exactly the character positions `re` finds.

use std::ops::Range;
use std::sync::LazyLock;

use memchr::memchr;
use memchr::memmem;

pub(crate) const THINK_OPEN: &[u8] = b"<think>";
pub(crate) const THINK_CLOSE: &[u8] = b"</think>";
pub(crate) const ANSWER_OPEN: &[u8] = b"<answer>";
pub(crate) const ANSWER_CLOSE: &[u8] = b"</answer>";

// Searchers built once: building one per call costs as much as scanning a short answer.
static FIND_THINK_OPEN: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(THINK_OPEN));
static FIND_THINK_CLOSE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(THINK_CLOSE));
static FIND_ANSWER_OPEN: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(ANSWER_OPEN));
static FIND_ANSWER_CLOSE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(ANSWER_CLOSE));

/// The prebuilt searcher for one of the four tags.
fn finder(tag: &[u8]) -> &'static memmem::Finder<'static> {
    match tag {
        THINK_OPEN => &FIND_THINK_OPEN,
        THINK_CLOSE => &FIND_THINK_CLOSE,
        ANSWER_OPEN => &FIND_ANSWER_OPEN,
        ANSWER_CLOSE => &FIND_ANSWER_CLOSE,
        _ => unreachable!("not a reward tag: {tag:?}"),
    }
}

/// Python's `str.isspace()`, which is also what `\s` matches in a `str` pattern: Unicode's
/// White_Space property plus the four ASCII information separators U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Length in bytes of the UTF-8 sequence that starts with `lead` (1 for a stray byte).
fn seq_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// The character encoded by `bytes` when they are exactly one valid UTF-8 character.
/// Surrogates (and any other invalid sequence) give `None`: they are never whitespace.
fn one_char(bytes: &[u8]) -> Option<char> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut it = s.chars();
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// Byte length of the Python-whitespace character at the start of `t`, or 0.
fn leading_space_len(t: &[u8]) -> usize {
    let Some(&lead) = t.first() else { return 0 };
    let n = seq_len(lead).min(t.len());
    match one_char(&t[..n]) {
        Some(c) if is_py_space(c) => n,
        _ => 0,
    }
}

/// Byte length of the Python-whitespace character at the end of `t`, or 0.
fn trailing_space_len(t: &[u8]) -> usize {
    // Walk back over at most three continuation bytes to the lead byte.
    let mut start = t.len();
    for _ in 0..4 {
        if start == 0 {
            return 0;
        }
        start -= 1;
        if t[start] & 0xC0 != 0x80 {
            break;
        }
    }
    match one_char(&t[start..]) {
        Some(c) if is_py_space(c) => t.len() - start,
        _ => 0,
    }
}

/// `range` shrunk so that `t[range]` equals Python's `t.strip()`.
pub fn strip_range(t: &[u8], mut range: Range<usize>) -> Range<usize> {
    loop {
        let n = leading_space_len(&t[range.clone()]);
        if n == 0 {
            break;
        }
        range.start += n;
    }
    loop {
        let n = trailing_space_len(&t[range.clone()]);
        if n == 0 {
            break;
        }
        range.end -= n;
    }
    range
}

/// Python's `t.strip()`.
pub fn py_strip(t: &[u8]) -> &[u8] {
    &t[strip_range(t, 0..t.len())]
}

/// Group 1 of `re.search(r"<answer>(.*?)</answer>", t)` — no DOTALL, so the answer may not
/// contain `\n`. `None` when there is no match.
///
/// Why it is exact: a match starting at a `<answer>` needs a `</answer>` before the next `\n`.
/// If the first `<answer>` of a line has none, no later `<answer>` of that line has one either,
/// so the search resumes on the next line: every byte is scanned a bounded number of times.
pub fn answer_single_line(t: &[u8]) -> Option<Range<usize>> {
    let (open, close) = (finder(ANSWER_OPEN), finder(ANSWER_CLOSE));
    let mut from = 0;
    while let Some(i) = open.find(&t[from..]) {
        let content = from + i + ANSWER_OPEN.len();
        let line_end = memchr(b'\n', &t[content..]).map_or(t.len(), |k| content + k);
        if let Some(j) = close.find(&t[content..line_end]) {
            return Some(content..content + j);
        }
        if line_end == t.len() {
            return None;
        }
        from = line_end + 1;
    }
    None
}

/// Group 1 of `re.search(r"<open>(.*?)<close>", t, re.DOTALL)`: the text between the first
/// `open` tag and the first `close` tag after it. `None` when there is no match.
pub fn tag_block(t: &[u8], open: &[u8], close: &[u8]) -> Option<Range<usize>> {
    let i = finder(open).find(t)?;
    let content = i + open.len();
    let j = finder(close).find(&t[content..])?;
    Some(content..content + j)
}

/// Groups of `re.fullmatch(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", t, re.DOTALL)`:
/// `(think, answer)` byte ranges, or `None` when the text is not well formed.
///
/// Why it is exact: the text must start with `<think>` and end with `</answer>`. Backtracking
/// would try each `</think>` in turn (lazy group 1) and accept the first one that is followed by
/// whitespace then `<answer>` with room for the final `</answer>`; `\s*` can only stop at the
/// end of the whitespace run, since `<` is not whitespace; group 2 is then everything up to the
/// final `</answer>`. Whitespace runs after distinct `</think>` tags are disjoint, so the scan is
/// linear.
pub fn well_formed(t: &[u8]) -> Option<(Range<usize>, Range<usize>)> {
    if !t.starts_with(THINK_OPEN) || !t.ends_with(ANSWER_CLOSE) {
        return None;
    }
    let end = t.len() - ANSWER_CLOSE.len();
    if end < THINK_OPEN.len() {
        return None;
    }
    for p in finder(THINK_CLOSE).find_iter(&t[THINK_OPEN.len()..end]) {
        let think_end = THINK_OPEN.len() + p;
        let mut q = think_end + THINK_CLOSE.len();
        loop {
            let n = leading_space_len(&t[q..end]);
            if n == 0 {
                break;
            }
            q += n;
        }
        if q + ANSWER_OPEN.len() > end {
            // Later `</think>` tags start after this whitespace run: they leave even less room.
            return None;
        }
        if t[q..].starts_with(ANSWER_OPEN) {
            return Some((THINK_OPEN.len()..think_end, q + ANSWER_OPEN.len()..end));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_matches_python_whitespace() {
        assert_eq!(py_strip(b" \t\x1c\x1fa b\n\x0b\x0c\r"), b"a b");
        assert_eq!(py_strip("\u{a0}\u{3000}x\u{2028}\u{85}".as_bytes()), b"x");
        // U+200B ZERO WIDTH SPACE and U+180E are not whitespace for Python.
        assert_eq!(py_strip("\u{200b}x".as_bytes()), "\u{200b}x".as_bytes());
        assert_eq!(py_strip("\u{180e}".as_bytes()), "\u{180e}".as_bytes());
        // A lone surrogate (surrogatepass encoding) is kept.
        assert_eq!(py_strip(b" \xed\xa0\x80 "), b"\xed\xa0\x80");
        assert_eq!(py_strip(b"   "), b"");
        assert_eq!(py_strip(b""), b"");
    }

    #[test]
    fn single_line_answer_skips_blocks_with_newlines() {
        let t = b"<answer>a\nb</answer> <answer>c</answer>";
        assert_eq!(answer_single_line(t).map(|r| &t[r]), Some(&b"c"[..]));
        let t = b"<answer><answer>x</answer>";
        assert_eq!(answer_single_line(t).map(|r| &t[r]), Some(&b"<answer>x"[..]));
        assert_eq!(answer_single_line(b"<answer>a\n</answer>"), None);
        assert_eq!(answer_single_line(b"<answer>a"), None);
    }

    #[test]
    fn well_formed_cases() {
        let ok = |t: &[u8]| well_formed(t).is_some();
        assert!(ok(b"<think></think><answer></answer>"));
        assert!(ok(b"<think>a\nb</think> \n\t<answer>x\ny</answer>"));
        assert!(ok(b"<think>a</think>b</think><answer>c</answer>"));
        assert!(!ok(b" <think></think><answer></answer>"));
        assert!(!ok(b"<think></think><answer></answer>\n"));
        assert!(!ok(b"<think></think>x<answer></answer>"));
        assert!(!ok(b"<think></answer>"));
        assert!(!ok(b"<think></think></answer>"));
        let t = b"<think>a</think>b</think><answer>c</answer></answer>";
        let (th, an) = well_formed(t).unwrap();
        assert_eq!((&t[th], &t[an]), (&b"a</think>b"[..], &b"c</answer>"[..]));
    }
}

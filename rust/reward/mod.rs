//! Verifiable rewards of the R1-Omni recipe: completion parsing, the format reward and the
//! accuracy reward in two modes, scored in parallel over a batch.
//!
//! Texts are bytes: UTF-8, where lone surrogates may appear encoded as three bytes (Python's
//! `"surrogatepass"`), so that every Python `str` is scored exactly as Python's `re` would.
//!
//! * format: 1.0 iff `re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", text,
//!   re.DOTALL)` matches, else 0.0.
//! * accuracy, mode r1omni: `gt = m.group(1).strip() if (m := re.search(r"<answer>(.*?)</answer>",
//!   solution)) else solution.strip()`; the student answer is the same expression on the
//!   completion; 1.0 iff `answer == gt`. Neither search uses DOTALL, as in R1-Omni: a block that
//!   spans lines is skipped, and without a single-line block the whole stripped text is compared.
//! * accuracy, mode robust: the answer text is group 1 of
//!   `re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)`, else the whole text; it names a
//!   label per [`LabelMatcher::canonical`]; 1.0 iff the completion names the solution's label.
//!   A solution that names no label is an error.
//!
//! Every batch entry catches panics ([`guarded`]): a bug surfaces as [`RewardError::Panic`].

mod labels;
mod scan;
mod text;

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rayon::prelude::*;

pub use labels::{is_trimmed, LabelMatcher, EXTRA_TRIM_PUNCTUATION};
pub use scan::{is_py_space, py_strip};
pub use text::{Text, Utf8Source};

/// Items handed to one rayon task at a time: scoring one completion takes well under a
/// microsecond, so smaller tasks would cost more in scheduling than in work.
const MIN_ITEMS_PER_TASK: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum RewardError {
    /// `completions` and `solutions` differ in length.
    LengthMismatch {
        completions: usize,
        solutions: usize,
    },
    /// Accuracy was asked for without solutions.
    MissingSolutions,
    /// A solution (robust mode) names no label of the set.
    UnknownSolution {
        index: usize,
        solution: String,
        labels: Vec<String>,
    },
    /// The label set itself is unusable.
    InvalidLabels(String),
    /// A bug: a panic inside the scorer, caught before it could cross the FFI boundary.
    Panic(String),
}

impl std::fmt::Display for RewardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LengthMismatch { completions, solutions } => write!(
                f,
                "got {completions} completions but {solutions} solutions: pass one solution per completion"
            ),
            Self::MissingSolutions => {
                write!(f, "the accuracy reward needs `solution`: one ground truth per completion")
            }
            Self::UnknownSolution { index, solution, labels } => write!(
                f,
                "solution[{index}] = {solution:?} names no label of the set {labels:?}: \
                 pass the label set of the dataset (labels=...)"
            ),
            Self::InvalidLabels(msg) => write!(f, "invalid label set: {msg}"),
            Self::Panic(msg) => write!(f, "internal error in the reward scorer (a bug, please report): {msg}"),
        }
    }
}

impl std::error::Error for RewardError {}

/// The accuracy reward's mode.
#[derive(Debug, Clone)]
pub enum Accuracy {
    /// R1-Omni's exact string match.
    R1Omni,
    /// Case- and punctuation-insensitive match onto a label set.
    Robust(LabelMatcher),
}

/// Format reward of one completion (see the module docs).
pub fn format_reward(text: &[u8]) -> f64 {
    if scan::is_well_formed(text) {
        1.0
    } else {
        0.0
    }
}

/// R1-Omni's answer text, as a byte range of `text`: group 1 of
/// `re.search(r"<answer>(.*?)</answer>", text)` stripped, else `text.strip()`.
pub fn r1omni_answer_range(text: &[u8]) -> Range<usize> {
    let found = scan::answer_single_line(text).unwrap_or(0..text.len());
    scan::strip_range(text, found)
}

/// R1-Omni's answer text (see [`r1omni_answer_range`]).
pub fn r1omni_answer(text: &[u8]) -> &[u8] {
    &text[r1omni_answer_range(text)]
}

/// Accuracy reward of one completion in mode r1omni (see the module docs).
pub fn accuracy_r1omni(completion: &[u8], solution: &[u8]) -> f64 {
    if r1omni_answer(completion) == r1omni_answer(solution) {
        1.0
    } else {
        0.0
    }
}

/// The parts of a completion, as byte ranges into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub think: Option<Range<usize>>,
    pub answer: Option<Range<usize>>,
    pub well_formed: bool,
}

/// Parses a completion. When it is well formed, `think` and `answer` are the two groups of the
/// format pattern `<think>(.*?)</think>\s*<answer>(.*?)</answer>` (full match, DOTALL);
/// otherwise each is group 1 of the first DOTALL search for its own tag pair, or `None`.
/// Both are stripped (Python's `str.strip()`).
pub fn parse_completion(text: &[u8]) -> Parsed {
    let (think, answer, well_formed) = match scan::well_formed(text) {
        Some((t, a)) => (Some(t), Some(a), true),
        None => (
            scan::tag_block(text, scan::THINK_OPEN, scan::THINK_CLOSE),
            scan::tag_block(text, scan::ANSWER_OPEN, scan::ANSWER_CLOSE),
            false,
        ),
    };
    let strip = |r: Range<usize>| scan::strip_range(text, r);
    Parsed {
        think: think.map(strip),
        answer: answer.map(strip),
        well_formed,
    }
}

/// Runs `f(0..n)` in parallel and collects the results in order, turning a panic in any item
/// into [`RewardError::Panic`] so that it never unwinds into the caller's runtime.
pub fn guarded<T, F>(n: usize, f: F) -> Result<Vec<T>, RewardError>
where
    T: Send,
    F: Fn(usize) -> Result<T, RewardError> + Sync + Send,
{
    guarded_with(n, || (), |_, i| f(i))
}

/// [`guarded`] where each worker thread has scratch state of its own, made by `init`.
pub fn guarded_with<T, S, I, F>(n: usize, init: I, f: F) -> Result<Vec<T>, RewardError>
where
    T: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize) -> Result<T, RewardError> + Sync + Send,
{
    catch_unwind(AssertUnwindSafe(|| {
        (0..n)
            .into_par_iter()
            .with_min_len(MIN_ITEMS_PER_TASK)
            .map_init(&init, &f)
            .collect()
    }))
    .unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        Err(RewardError::Panic(msg))
    })
}

/// Reward columns of one batch; a column not asked for is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub format: Option<Vec<f64>>,
    pub accuracy: Option<Vec<f64>>,
}

/// Scores a batch in parallel: the format column when `format` is set, the accuracy column
/// when `accuracy` is given (then `solutions` is required, one per completion). In robust mode
/// every solution must name a label; the first that does not is reported by index. A text
/// without UTF-8 of its own ([`Text`]) is encoded by the worker thread that scores it.
pub fn score_batch<S: Utf8Source>(
    completions: &[S],
    solutions: Option<&[S]>,
    format: bool,
    accuracy: Option<&Accuracy>,
) -> Result<Columns, RewardError> {
    let n = completions.len();
    let solutions = match (accuracy, solutions) {
        (None, _) => None,
        (Some(_), None) => return Err(RewardError::MissingSolutions),
        (Some(_), Some(s)) if s.len() != n => {
            return Err(RewardError::LengthMismatch {
                completions: n,
                solutions: s.len(),
            })
        }
        (Some(_), Some(s)) => Some(s),
    };
    // Per worker: the UTF-8 of the completion and of the solution being scored.
    let buffers = || (Vec::new(), Vec::new());
    let rows = guarded_with(n, buffers, |(text_buf, solution_buf), i| {
        let text = completions[i].utf8(text_buf);
        let fmt = if format { format_reward(text) } else { 0.0 };
        let acc = match (accuracy, solutions) {
            (Some(Accuracy::R1Omni), Some(s)) => accuracy_r1omni(text, s[i].utf8(solution_buf)),
            (Some(Accuracy::Robust(m)), Some(s)) => {
                m.accuracy(text, m.solution_label(s[i].utf8(solution_buf), i)?)
            }
            _ => 0.0,
        };
        Ok((fmt, acc))
    })?;
    let (fmt, acc): (Vec<f64>, Vec<f64>) = rows.into_iter().unzip();
    Ok(Columns {
        format: format.then_some(fmt),
        accuracy: accuracy.map(|_| acc),
    })
}

/// The answer a completion gives, as the accuracy reward reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prediction {
    /// Mode r1omni: the byte range of R1-Omni's answer text.
    Text(Range<usize>),
    /// Mode robust: the index of the label named.
    Label(usize),
    /// Mode robust: no label named.
    Unknown,
}

/// The answers of a batch, in parallel: accuracy is 1.0 exactly when a completion's prediction
/// equals its solution's (the same text in mode r1omni, the same label in mode robust).
pub fn predictions<S: AsRef<[u8]> + Sync>(
    texts: &[S],
    accuracy: &Accuracy,
) -> Result<Vec<Prediction>, RewardError> {
    guarded(texts.len(), |i| {
        let text = texts[i].as_ref();
        Ok(match accuracy {
            Accuracy::R1Omni => Prediction::Text(r1omni_answer_range(text)),
            Accuracy::Robust(m) => m
                .canonical(LabelMatcher::answer_text(text))
                .map_or(Prediction::Unknown, Prediction::Label),
        })
    })
}

/// Test hook: runs [`guarded`] over `n` items where item `panic_at` panics, to show that a
/// panic inside a batch comes back as [`RewardError::Panic`].
#[doc(hidden)]
pub fn panicking_batch_for_tests(n: usize, panic_at: usize) -> Result<Vec<f64>, RewardError> {
    guarded(n, |i| {
        if i == panic_at {
            panic!("deliberate panic at item {i} (test hook)");
        }
        Ok(i as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r1omni_quirks() {
        // Case-sensitive.
        assert_eq!(
            accuracy_r1omni(b"<answer>Happy</answer>", b"<answer>happy</answer>"),
            0.0
        );
        // A multi-line answer block is skipped: the whole stripped completion is compared.
        assert_eq!(
            accuracy_r1omni(b"<answer>\nhappy\n</answer>", b"<answer>happy</answer>"),
            0.0
        );
        assert_eq!(
            accuracy_r1omni(b"  happy \n", b"<answer>happy</answer>"),
            1.0
        );
        // Bare solution label.
        assert_eq!(
            accuracy_r1omni(b"<think>x</think><answer> sad </answer>", b"sad"),
            1.0
        );
        // The first single-line block wins.
        assert_eq!(
            accuracy_r1omni(b"<answer>sad</answer><answer>happy</answer>", b"happy"),
            0.0
        );
    }

    #[test]
    fn predictions_per_mode() {
        let t = ["<answer> Sad </answer>", "x <answer>\nfearful</answer>"];
        let p = predictions(&t, &Accuracy::R1Omni).unwrap();
        assert_eq!(p, vec![Prediction::Text(9..12), Prediction::Text(0..27)]);
        let m = LabelMatcher::new(
            vec!["sad".into(), "fear".into()],
            vec![("fearful".into(), "fear".into())],
        )
        .unwrap();
        assert_eq!(
            predictions(&t, &Accuracy::Robust(m)).unwrap(),
            vec![Prediction::Label(0), Prediction::Label(1)]
        );
        let m = LabelMatcher::new(vec!["sad".into()], vec![]).unwrap();
        assert_eq!(
            predictions(&["happy"], &Accuracy::Robust(m)).unwrap(),
            vec![Prediction::Unknown]
        );
    }

    #[test]
    fn parse_strips_groups() {
        let t = b"<think> a </think>\n<answer> happy </answer>";
        let p = parse_completion(t);
        assert!(p.well_formed);
        assert_eq!(&t[p.think.unwrap()], b"a");
        assert_eq!(&t[p.answer.unwrap()], b"happy");
        let p = parse_completion(b"no tags");
        assert_eq!(
            p,
            Parsed {
                think: None,
                answer: None,
                well_formed: false
            }
        );
    }

    #[test]
    fn batch_errors_and_columns() {
        let c = ["<think></think><answer>happy</answer>", "sad"];
        let s = ["<answer>happy</answer>", "happy"];
        let cols = score_batch(&c, Some(&s), true, Some(&Accuracy::R1Omni)).unwrap();
        assert_eq!(cols.format, Some(vec![1.0, 0.0]));
        assert_eq!(cols.accuracy, Some(vec![1.0, 0.0]));
        assert_eq!(
            score_batch(&c, None, true, Some(&Accuracy::R1Omni)),
            Err(RewardError::MissingSolutions)
        );
        assert!(matches!(
            score_batch(&c, Some(&s[..1]), false, Some(&Accuracy::R1Omni)),
            Err(RewardError::LengthMismatch {
                completions: 2,
                solutions: 1
            })
        ));
        let m = LabelMatcher::new(vec!["happy".into()], vec![]).unwrap();
        let bad = ["happy", "joy"];
        assert!(matches!(
            score_batch(&c, Some(&bad), false, Some(&Accuracy::Robust(m))),
            Err(RewardError::UnknownSolution { index: 1, .. })
        ));
    }

    #[test]
    fn panic_becomes_error() {
        let err = panicking_batch_for_tests(10_000, 7_777).unwrap_err();
        assert!(matches!(err, RewardError::Panic(ref m) if m.contains("item 7777")));
        assert_eq!(
            panicking_batch_for_tests(3, 99).unwrap(),
            vec![0.0, 1.0, 2.0]
        );
    }

    #[test]
    fn huge_inputs_are_linear() {
        // 10 MB of unclosed tags and newlines: quadratic scanning would take minutes.
        let t = "<answer><think></think>\n".repeat(420_000);
        assert_eq!(format_reward(t.as_bytes()), 0.0);
        assert_eq!(accuracy_r1omni(t.as_bytes(), b"x"), 0.0);
        let t = format!(
            "<think>{}</think> <answer>x</answer>",
            "</think>\t".repeat(1_000_000)
        );
        assert_eq!(format_reward(t.as_bytes()), 1.0);
        let t = format!(
            "<think></think>x{}</answer>",
            " \n<answer>".repeat(1_000_000)
        );
        assert_eq!(format_reward(t.as_bytes()), 0.0);
    }
}

//! The label matcher behind the robust accuracy mode.
//!
//! It holds no label table of its own: the caller passes the labels and the aliases (in the
//! package, `r1omni_fast.labels` is their single source).

use std::collections::HashMap;

use super::scan::{is_py_space, tag_block, ANSWER_CLOSE, ANSWER_OPEN};
use super::RewardError;

/// Non-ASCII punctuation trimmed from both ends of an answer, besides all of ASCII's
/// (`string.punctuation`) and Python whitespace.
pub const EXTRA_TRIM_PUNCTUATION: &str =
    "\u{201c}\u{201d}\u{2018}\u{2019}\u{ab}\u{bb}\u{2039}\u{203a}\u{201e}\u{201a}\u{2026}\u{3002}\u{ff0c}\u{3001}\u{ff01}\u{ff1f}\u{ff1a}\u{ff1b}\u{ff08}\u{ff09}\u{3010}\u{3011}\u{300a}\u{300b}\u{300c}\u{300d}\u{300e}\u{300f}\u{2013}\u{2014}\u{b7}\u{a1}\u{bf}";

/// Whether robust mode trims `c` from the ends of an answer.
pub fn is_trimmed(c: char) -> bool {
    is_py_space(c) || c.is_ascii_punctuation() || EXTRA_TRIM_PUNCTUATION.contains(c)
}

/// Maps free text onto an ordered label set.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    labels: Vec<String>,
    index: HashMap<String, usize>,
    alias_index: HashMap<String, usize>,
    /// Longest label or alias in bytes: lower-casing never turns a char into an empty string
    /// and a char is at most 4 bytes, so a word over 4x this long names nothing.
    longest_key: usize,
}

impl LabelMatcher {
    /// `labels` in order; `aliases` as (word, label) pairs. An alias whose label is not in the
    /// set is ignored (the same alias table serves every set).
    pub fn new(labels: Vec<String>, aliases: Vec<(String, String)>) -> Result<Self, RewardError> {
        if labels.is_empty() {
            return Err(RewardError::InvalidLabels("a label set needs at least one label".into()));
        }
        let mut index = HashMap::with_capacity(labels.len());
        for (i, label) in labels.iter().enumerate() {
            if index.insert(label.clone(), i).is_some() {
                return Err(RewardError::InvalidLabels(format!("duplicate label {label:?}")));
            }
        }
        let alias_index: HashMap<String, usize> = aliases
            .into_iter()
            .filter_map(|(word, target)| index.get(&target).map(|&i| (word, i)))
            .collect();
        let longest_key = index.keys().chain(alias_index.keys()).map(String::len).max().unwrap_or(0);
        Ok(Self { labels, index, alias_index, longest_key })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Index of the label that `word` names: `word` trimmed of whitespace and punctuation
    /// ([`is_trimmed`]) at both ends and lower-cased, then looked up among the labels, then
    /// among the aliases. Bytes that are not valid UTF-8 (lone surrogates) name no label.
    pub fn canonical(&self, word: &[u8]) -> Option<usize> {
        let word = std::str::from_utf8(word).ok()?.trim_matches(is_trimmed);
        if word.len() > 4 * self.longest_key {
            // Names nothing (see `longest_key`), and lower-casing a long text is costly.
            return None;
        }
        let key = word.to_lowercase();
        self.index.get(&key).or_else(|| self.alias_index.get(&key)).copied()
    }

    /// Robust answer text of `text`: group 1 of
    /// `re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)`, else the whole text.
    pub fn answer_text(text: &[u8]) -> &[u8] {
        tag_block(text, ANSWER_OPEN, ANSWER_CLOSE).map_or(text, |r| &text[r])
    }

    /// Label index of a solution (its robust answer text), or an error naming it.
    pub fn solution_label(&self, solution: &[u8], index: usize) -> Result<usize, RewardError> {
        self.canonical(Self::answer_text(solution)).ok_or_else(|| RewardError::UnknownSolution {
            index,
            solution: String::from_utf8_lossy(solution).chars().take(200).collect(),
            labels: self.labels.clone(),
        })
    }

    /// 1.0 iff the completion's robust answer names the solution's label, else 0.0.
    pub fn accuracy(&self, completion: &[u8], solution_label: usize) -> f64 {
        let named = self.canonical(Self::answer_text(completion));
        if named == Some(solution_label) {
            1.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dfew() -> LabelMatcher {
        let labels = ["happy", "surprise", "neutral", "angry", "disgust", "sad", "fear"];
        let aliases = [("fearful", "fear"), ("happiness", "happy"), ("calmness", "calm")];
        LabelMatcher::new(
            labels.iter().map(|s| s.to_string()).collect(),
            aliases.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        )
        .unwrap()
    }

    #[test]
    fn canonical_trims_lowercases_and_maps_aliases() {
        let m = dfew();
        assert_eq!(m.canonical(b" Happy! "), Some(0));
        assert_eq!(m.canonical("\u{201c}FEARFUL\u{201d}.".as_bytes()), Some(6));
        assert_eq!(m.canonical(b"happiness"), Some(0));
        // The alias's target is not in the set.
        assert_eq!(m.canonical(b"calmness"), None);
        assert_eq!(m.canonical(b"very happy"), None);
        assert_eq!(m.canonical("happy ".repeat(100).as_bytes()), None);
        // Lower-casing may shrink a word (KELVIN SIGN, 3 bytes -> 'k'): the length bound allows it.
        let k = LabelMatcher::new(vec!["kkk".into()], vec![]).unwrap();
        assert_eq!(k.canonical("\u{212a}\u{212a}\u{212a}".as_bytes()), Some(0));
        assert_eq!(m.canonical(b"\xed\xa0\x80happy"), None);
    }

    #[test]
    fn answer_text_allows_newlines() {
        assert_eq!(LabelMatcher::answer_text(b"<answer>\nsad\n</answer>"), b"\nsad\n");
        assert_eq!(LabelMatcher::answer_text(b"sad"), b"sad");
    }

    #[test]
    fn rejects_bad_label_sets() {
        assert!(LabelMatcher::new(vec![], vec![]).is_err());
        assert!(LabelMatcher::new(vec!["a".into(), "a".into()], vec![]).is_err());
    }
}

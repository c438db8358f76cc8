//! Word grammars for constrained CTC decoding.
//!
//! A [`WordGrammar`] is a cycle of word slots: each word must come from the
//! slot after the previous word's (wrapping around, so one stream holds any
//! number of sentences), and the first word of a stream may come from any
//! slot (a window can start mid-sentence). The GRID grammar is
//! `command colour preposition letter digit adverb`.

use crate::ctc::Constraint;

/// Why a grammar cannot be used with a model's vocabulary.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GrammarError {
    #[error("the model's vocabulary has no space class, so words cannot be separated")]
    NoSpace,
    #[error("the model's vocabulary cannot spell {word:?} (no class for {ch:?})")]
    Unspellable { word: String, ch: char },
    #[error("unknown grammar {0:?}: known grammars are `grid` and `lexicon:WORD WORD ...`")]
    Unknown(String),
    #[error("lexicon grammar {0:?} names no words; write `lexicon:alpha beta ...`")]
    EmptyLexicon(String),
}

/// The GRID corpus sentence grammar.
pub const GRID: [&[&str]; 6] = [
    &["bin", "lay", "place", "set"],
    &["blue", "green", "red", "white"],
    &["at", "by", "in", "with"],
    &[
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "x", "y", "z",
    ],
    &[
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ],
    &["again", "now", "please", "soon"],
];

/// A cyclic word-slot grammar over a model's class labels.
#[derive(Debug, Clone)]
pub struct WordGrammar {
    /// slots[s] = the words of slot s, spelled as class labels.
    slots: Vec<Vec<Vec<usize>>>,
    space: usize,
}

impl WordGrammar {
    /// A grammar from word lists, spelled in `vocabulary` (one class per character).
    pub fn new(slots: &[&[&str]], vocabulary: &[String]) -> Result<Self, GrammarError> {
        let space = vocabulary
            .iter()
            .position(|v| v == " ")
            .ok_or(GrammarError::NoSpace)?;
        let label = |ch: char| {
            vocabulary
                .iter()
                .position(|v| v.chars().eq(std::iter::once(ch)))
        };
        let slots = slots
            .iter()
            .map(|words| {
                words
                    .iter()
                    .map(|w| {
                        w.chars()
                            .map(|ch| {
                                label(ch).ok_or_else(|| GrammarError::Unspellable {
                                    word: w.to_string(),
                                    ch,
                                })
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { slots, space })
    }

    /// A grammar by name: `grid`, or `lexicon:WORDS` (words separated by
    /// spaces or commas, in any order, any number of times).
    pub fn named(name: &str, vocabulary: &[String]) -> Result<Self, GrammarError> {
        if let Some(words) = name.strip_prefix("lexicon:") {
            let words: Vec<String> = words
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect();
            if words.is_empty() {
                return Err(GrammarError::EmptyLexicon(name.to_string()));
            }
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            return Self::new(&[&words], vocabulary);
        }
        match name {
            "grid" => Self::new(&GRID, vocabulary),
            other => Err(GrammarError::Unknown(other.to_string())),
        }
    }

    /// The short name a transcript reports: `grid` or `lexicon`.
    pub fn kind(name: &str) -> &str {
        if name.starts_with("lexicon:") {
            "lexicon"
        } else {
            name
        }
    }

    /// Slots the word being spelled can still belong to, and that word so far;
    /// None when the prefix already breaks the grammar.
    fn state<'p>(&self, prefix: &'p [usize]) -> Option<(Vec<usize>, &'p [usize])> {
        let n = self.slots.len();
        let mut allowed: Vec<usize> = (0..n).collect();
        let mut words = prefix.split(|&l| l == self.space).peekable();
        while let Some(word) = words.next() {
            if words.peek().is_none() {
                return Some((allowed, word));
            }
            if word.is_empty() {
                return None; // a leading or double space
            }
            let fits: Vec<usize> = allowed
                .iter()
                .copied()
                .filter(|&s| self.slots[s].iter().any(|w| w == word))
                .collect();
            if fits.is_empty() {
                return None;
            }
            allowed = fits.into_iter().map(|s| (s + 1) % n).collect();
            allowed.sort_unstable();
            allowed.dedup();
        }
        Some((allowed, &[]))
    }
}

impl Constraint for WordGrammar {
    fn allows(&self, prefix: &[usize], label: usize) -> bool {
        let Some((slots, word)) = self.state(prefix) else {
            return false;
        };
        if label == self.space {
            return !word.is_empty()
                && slots
                    .iter()
                    .any(|&s| self.slots[s].iter().any(|w| w == word));
        }
        slots.iter().any(|&s| {
            self.slots[s]
                .iter()
                .any(|w| w.len() > word.len() && w.starts_with(word) && w[word.len()] == label)
        })
    }

    fn allowed(&self, prefix: &[usize], classes: usize) -> Option<Vec<bool>> {
        let mut out = vec![false; classes];
        let Some((slots, word)) = self.state(prefix) else {
            return Some(out);
        };
        for &s in &slots {
            for w in &self.slots[s] {
                if w.len() > word.len() && w.starts_with(word) {
                    if let Some(x) = out.get_mut(w[word.len()]) {
                        *x = true;
                    }
                } else if !word.is_empty()
                    && w.as_slice() == word
                    && let Some(x) = out.get_mut(self.space)
                {
                    *x = true;
                }
            }
        }
        Some(out)
    }

    fn separator(&self) -> Option<usize> {
        Some(self.space)
    }

    fn complete(&self, prefix: &[usize]) -> bool {
        match self.state(prefix) {
            Some((slots, word)) => {
                word.is_empty()
                    || slots
                        .iter()
                        .any(|&s| self.slots[s].iter().any(|w| w == word))
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vec<String> {
        " abcdefghijklmnopqrstuvwxyz"
            .chars()
            .map(String::from)
            .chain(["<blank>".into()])
            .collect()
    }

    fn labels(text: &str) -> Vec<usize> {
        text.chars()
            .map(|c| {
                if c == ' ' {
                    0
                } else {
                    c as usize - 'a' as usize + 1
                }
            })
            .collect()
    }

    #[test]
    fn follows_the_slots_in_order_and_wraps_around() {
        let g = WordGrammar::named("grid", &vocab()).unwrap();
        let ok = |prefix: &str, next: char| g.allows(&labels(prefix), labels(&next.to_string())[0]);
        assert!(ok("", 'b') && ok("bi", 'n') && ok("bin", ' '));
        assert!(ok("bin ", 'b'), "a colour after a command");
        assert!(!ok("bin ", 'a'), "no preposition straight after a command");
        assert!(!ok("bin blue", 'x'));
        assert!(
            ok("bin blue at f two now ", 'l'),
            "a new sentence after the adverb"
        );
        assert!(
            ok("", 'e') && ok("e", ' '),
            "a window may start mid-sentence, at the letter"
        );
        assert!(!ok("bin ", ' '), "no double space");
        assert!(g.complete(&labels("bin blue at f two now")));
        assert!(!g.complete(&labels("bin blu")));
    }

    #[test]
    fn needs_a_vocabulary_that_spells_the_words() {
        let digits: Vec<String> = "0123456789 ".chars().map(String::from).collect();
        assert!(matches!(
            WordGrammar::named("grid", &digits),
            Err(GrammarError::Unspellable { .. })
        ));
        let no_space: Vec<String> = "abc".chars().map(String::from).collect();
        assert_eq!(
            WordGrammar::named("grid", &no_space).unwrap_err(),
            GrammarError::NoSpace
        );
        assert!(matches!(
            WordGrammar::named("klingon", &vocab()),
            Err(GrammarError::Unknown(_))
        ));
    }

    #[test]
    fn a_lexicon_allows_its_words_in_any_order() {
        let g = WordGrammar::named("lexicon:Yes, no  stop", &vocab()).unwrap();
        let ok = |prefix: &str, next: char| g.allows(&labels(prefix), labels(&next.to_string())[0]);
        assert!(ok("", 'y') && ok("no ", 's') && ok("stop no yes ", 'n'));
        assert!(!ok("", 'b') && !ok("ye", 't'));
        assert!(g.complete(&labels("stop yes")));
        assert_eq!(WordGrammar::kind("lexicon:yes no"), "lexicon");
        assert!(matches!(
            WordGrammar::named("lexicon: ,", &vocab()),
            Err(GrammarError::EmptyLexicon(_))
        ));
    }

    #[test]
    fn allowed_lists_what_allows_allows() {
        let v = vocab();
        let g = WordGrammar::named("grid", &v).unwrap();
        for prefix in [
            "",
            "bi",
            "bin",
            "bin ",
            "bin blue at",
            "bin blue at f two now ",
            "bx",
        ] {
            let p = labels(prefix);
            let all = g.allowed(&p, v.len()).unwrap();
            for (k, &a) in all.iter().enumerate() {
                assert_eq!(a, g.allows(&p, k), "{prefix:?} then {:?}", v[k]);
            }
        }
    }

    /// Beam search (width 8) over `probs` in the synthetic 28-class
    /// vocabulary: the text and the decoding.
    fn beam_text(probs: &[f32], constraint: &dyn Constraint) -> (String, crate::ctc::Decoded) {
        let d = crate::ctc::beam_search(
            crate::ctc::Posteriors {
                probs,
                classes: 28,
                blank: 27,
            },
            8,
            1e-4,
            constraint,
        );
        let vocab = crate::synth::vocabulary();
        (d.labels.iter().map(|&l| vocab[l].clone()).collect(), d)
    }

    #[test]
    fn a_decode_that_starts_on_a_space_reads_it_as_silence() {
        // Measured on a joined stream (set green by p seven | again): bounded
        // re-decoding committed "seven" and cut in the gap, so the rest began
        // on frames the model gave to the space (0.96) and a little to the
        // word's last letter (0.03). A grammar refuses a leading space, and
        // the decode read that "n" as a word ("seven n again"; the GRID
        // grammar then lost the sentence after it).
        let vocab = crate::synth::vocabulary();
        let class = |c: char| vocab.iter().position(|v| v == &c.to_string()).unwrap();
        let mut probs = Vec::new();
        let mut frame = |spread: &[(usize, f32)]| {
            let mut row = vec![1e-6f32; 28];
            for &(k, p) in spread {
                row[k] = p;
            }
            probs.extend(row);
        };
        frame(&[(class(' '), 0.964), (class('n'), 0.032), (27, 0.003)]);
        frame(&[(class(' '), 0.996), (class('a'), 0.003)]);
        for c in "aggaa".chars() {
            frame(&[(class(c), 0.99)]);
        }
        for _ in 0..20 {
            frame(&[(27, 0.99)]);
        }
        for c in "iin".chars() {
            frame(&[(class(c), 0.99)]);
        }
        frame(&[(27, 0.99)]);
        let decode = |constraint: &dyn Constraint| beam_text(&probs, constraint).0;
        for grammar in ["grid", "lexicon:again n seven"] {
            let g = WordGrammar::named(grammar, &vocab).unwrap();
            assert_eq!(decode(&g), "again", "{grammar}");
        }
        // The open decode reads the space as a label, as before.
        assert_eq!(decode(&crate::ctc::Open), " again");
    }

    #[test]
    fn a_grammar_partial_that_ends_mid_word_keeps_what_came_before() {
        // A live stream's frames end anywhere, often inside a word: every
        // beam is then an unfinished word, and the grammar decode must give
        // the words before it, not nothing (nothing once made bounded
        // re-decoding drop the frames of three sentences).
        let mut probs = crate::synth::posteriors("bin blue at f two now bin gr", 4, 0.99);
        probs.truncate(probs.len() - 4 * 28); // no pause after "gr"
        let (text, d) = beam_text(
            &probs,
            &WordGrammar::named("grid", &crate::synth::vocabulary()).unwrap(),
        );
        assert_eq!(text.trim_end(), "bin blue at f two now bin");
        assert_eq!(d.labels.len(), d.frames.len());
    }
}

//! Which grammar a stream decodes under: the one its features chose, else
//! the configured default, else none (open characters). Grammars are built
//! once per name and vocabulary, and a bounded number is kept.

use std::collections::HashMap;
use std::sync::Arc;

use crate::grammar::{GrammarError, WordGrammar};

/// Grammars built and kept at most (each name and vocabulary once); past
/// it, the cache starts over (a stream's features can name any lexicon).
pub const MAX_CACHED_GRAMMARS: usize = 64;

/// A stream's constraint and its kind for transcripts (`grid`, `lexicon`).
pub(super) type Chosen = (Option<Arc<WordGrammar>>, Option<String>);

pub(super) struct Grammars {
    /// The grammar every stream decodes under unless it chose its own.
    default: Option<String>,
    /// Grammars built so far, by name and the vocabulary they are spelled in
    /// (a failure is kept too, so it is reported once).
    built: HashMap<(String, Vec<String>), Result<Arc<WordGrammar>, GrammarError>>,
    /// Grammars chosen for single streams (by their features), over the default.
    chosen: HashMap<String, String>,
}

impl Grammars {
    pub(super) fn new(default: Option<String>) -> Self {
        Self {
            default,
            built: HashMap::new(),
            chosen: HashMap::new(),
        }
    }

    /// `stream_id` decodes under `grammar` from now on, or under the
    /// default when None.
    pub(super) fn choose(&mut self, stream_id: &str, grammar: Option<&str>) {
        match grammar {
            Some(g) => {
                if self.chosen.get(stream_id).map(String::as_str) != Some(g) {
                    self.chosen.insert(stream_id.to_string(), g.to_string());
                }
            }
            None => {
                self.chosen.remove(stream_id);
            }
        }
    }

    /// The stream is over: its choice goes.
    pub(super) fn forget(&mut self, stream_id: &str) {
        self.chosen.remove(stream_id);
    }

    fn build(
        &mut self,
        name: &str,
        vocabulary: &[String],
    ) -> Result<Arc<WordGrammar>, GrammarError> {
        if self.built.len() >= MAX_CACHED_GRAMMARS
            && !self
                .built
                .contains_key(&(name.to_string(), vocabulary.to_vec()))
        {
            self.built.clear();
        }
        self.built
            .entry((name.to_string(), vocabulary.to_vec()))
            .or_insert_with(|| {
                let built = WordGrammar::named(name, vocabulary).map(Arc::new);
                if let Err(e) = &built {
                    tracing::warn!(grammar = name, error = %e, "grammar cannot be used with this model");
                }
                built
            })
            .clone()
    }

    /// The constraint `id` decodes under with this vocabulary. A grammar
    /// chosen for the stream that the vocabulary cannot spell falls back to
    /// the default; a default it cannot spell is an error.
    pub(super) fn constraint(
        &mut self,
        id: &str,
        vocabulary: &[String],
    ) -> Result<Chosen, GrammarError> {
        if let Some(name) = self.chosen.get(id).cloned()
            && let Ok(g) = self.build(&name, vocabulary)
        {
            return Ok((Some(g), Some(WordGrammar::kind(&name).to_string())));
        }
        match self.default.clone() {
            Some(name) => Ok((
                Some(self.build(&name, vocabulary)?),
                Some(WordGrammar::kind(&name).to_string()),
            )),
            None => Ok((None, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    #[test]
    fn a_chosen_grammar_wins_and_an_unspellable_one_falls_back() {
        let v = synth::vocabulary();
        let mut g = Grammars::new(None);
        assert!(g.constraint("a", &v).unwrap().0.is_none());
        g.choose("a", Some("grid"));
        assert_eq!(g.constraint("a", &v).unwrap().1.as_deref(), Some("grid"));
        g.choose("b", Some("lexicon:Ünïcode"));
        assert!(g.constraint("b", &v).unwrap().0.is_none());
        g.forget("a");
        assert!(g.constraint("a", &v).unwrap().0.is_none());
    }

    #[test]
    fn a_default_the_vocabulary_cannot_spell_is_an_error() {
        let mut g = Grammars::new(Some("lexicon:Ünïcode".into()));
        assert!(g.constraint("a", &synth::vocabulary()).is_err());
    }

    #[test]
    fn the_cache_is_bounded() {
        let v = synth::vocabulary();
        let mut g = Grammars::new(None);
        for i in 0..(MAX_CACHED_GRAMMARS * 2) {
            let name = format!("lexicon:word{}", "a".repeat(i % 26 + 1));
            g.choose("s", Some(&name));
            let _ = g.constraint("s", &v);
            g.choose("s", Some(&format!("{name} b{i}")));
            let _ = g.constraint("s", &v);
        }
        assert!(g.built.len() <= MAX_CACHED_GRAMMARS);
    }
}

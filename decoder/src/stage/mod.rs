//! The decode stage, free of transport: `logits` events in, transcripts out.
//!
//! Overlapping windows are stitched into one posterior stream per stream:
//! each new window takes over from the previous one at a word boundary both
//! agree on ([`crate::stitch`]). Frames before the newest window's start
//! plus the hop are settled (the next window cannot cut before its own
//! start); the partial transcript's `stable_prefix` is the words that end
//! before that point. After the stream's end event, exactly one `final` is
//! published.
//!
//! By concern:
//! * `grammars`: which grammar a stream decodes under (chosen by its
//!   features, or the default), grammars built once and a bounded number kept.
//! * `stream`: one stream's state: the stitched posterior and bounded
//!   re-decoding (settled words committed, their frames dropped).
//! * `transcript`: a transcript built from a stream's state.
//! * this module: the events, and exactly one final per stream.

mod grammars;
mod stream;
mod transcript;

use std::collections::HashMap;

use mouthmap_contracts::{
    ContractError, Event, LogitsEvent, StreamEnd, Transcript, TranscriptKind,
};

pub use grammars::MAX_CACHED_GRAMMARS;
pub use stream::MIN_FACE_SHARE;
pub use transcript::words;

use crate::ctc::{Constraint, Open};
use crate::grammar::GrammarError;
use grammars::Grammars;
use stream::StreamState;
use transcript::Search;

/// Decoding settings.
#[derive(Debug, Clone)]
pub struct DecodeSettings {
    /// Prefix beam width; 0 decodes greedily (and ignores any grammar).
    pub beam: usize,
    /// Classes under this probability at a frame are not tried by the beam.
    pub prune: f32,
    /// A word grammar to decode under (`grid`), or none for open characters.
    pub grammar: Option<String>,
    /// Bounded re-decoding: once a stream holds more frames than this, the
    /// settled words before a gap between words are committed and their
    /// frames dropped, so each window decodes at most about this many frames
    /// however long the stream runs. 0 keeps everything (re-decodes all).
    pub max_decode_frames: usize,
}

impl Default for DecodeSettings {
    fn default() -> Self {
        Self {
            beam: 8,
            prune: 1e-4,
            grammar: None,
            max_decode_frames: 250,
        }
    }
}

/// Why an event could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The event breaks the contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// A window whose vocabulary differs from the stream's earlier windows.
    #[error("stream {stream_id} changed vocabulary mid-stream (model {model} {version})")]
    VocabularyChanged {
        stream_id: String,
        model: String,
        version: String,
    },
    /// The configured grammar cannot be spelled in the model's vocabulary.
    #[error(transparent)]
    Grammar(#[from] GrammarError),
}

/// The stage.
pub struct Decoder {
    settings: DecodeSettings,
    streams: HashMap<String, StreamState>,
    grammars: Grammars,
}

impl Decoder {
    pub fn new(settings: DecodeSettings) -> Self {
        Self {
            grammars: Grammars::new(settings.grammar.clone()),
            settings,
            streams: HashMap::new(),
        }
    }

    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether a window of `stream_id` was decoded and its final is not out.
    pub fn is_open(&self, stream_id: &str) -> bool {
        self.streams.contains_key(stream_id)
    }

    /// Decodes `stream_id` under `grammar` (`grid`, `lexicon:WORDS`) from
    /// now on, or under the configured default when None. A grammar the
    /// model's vocabulary cannot spell is reported once and the default used.
    pub fn choose_grammar(&mut self, stream_id: &str, grammar: Option<&str>) {
        self.grammars.choose(stream_id, grammar);
    }

    fn search(&self) -> Search {
        Search {
            beam: self.settings.beam,
            prune: self.settings.prune,
        }
    }

    /// Handles one `logits` event under the stream's grammar (chosen for it,
    /// or the configured default); returns the transcripts it produced.
    pub fn handle(
        &mut self,
        event: &LogitsEvent,
        payload: &[u8],
    ) -> Result<Vec<Transcript>, DecodeError> {
        let id = event.stream_id().to_string();
        let vocabulary = match event {
            LogitsEvent::Window(w) => Some(w.vocabulary.clone()),
            _ => self.streams.get(&id).map(|s| s.vocabulary.clone()),
        };
        let (grammar, kind) = match &vocabulary {
            Some(v) => self.grammars.constraint(&id, v)?,
            None => (None, None),
        };
        let mut out = match &grammar {
            Some(g) => self.handle_with(event, payload, g.as_ref())?,
            None => self.handle_with(event, payload, &Open)?,
        };
        for t in &mut out {
            t.grammar = kind.clone();
        }
        if matches!(event, LogitsEvent::End(_)) {
            self.grammars.forget(&id);
        }
        Ok(out)
    }

    /// Closes these streams (those open among them) with a `final` marked
    /// `timed_out`, each under its own grammar: their end never came. The
    /// Kafka service judges idleness by event time
    /// (`mouthmap_bus::idle::IdleClock`) and calls this.
    pub fn close(&mut self, ids: &[String]) -> Vec<Transcript> {
        let mut out = Vec::new();
        for id in ids {
            let Some(vocabulary) = self.streams.get(id).map(|s| s.vocabulary.clone()) else {
                continue;
            };
            let (grammar, kind) = self
                .grammars
                .constraint(id, &vocabulary)
                .unwrap_or((None, None));
            let mut t = match &grammar {
                Some(g) => self.finish(id, None, g.as_ref()),
                None => self.finish(id, None, &Open),
            };
            self.grammars.forget(id);
            t.grammar = kind;
            out.push(t);
        }
        out
    }

    /// As [`handle`](Self::handle), decoding under `constraint`.
    pub fn handle_with(
        &mut self,
        event: &LogitsEvent,
        payload: &[u8],
        constraint: &dyn Constraint,
    ) -> Result<Vec<Transcript>, DecodeError> {
        match event {
            LogitsEvent::Start(s) => {
                self.streams.remove(&s.stream_id);
                Ok(Vec::new())
            }
            LogitsEvent::Window(w) => {
                w.validate(payload)?;
                let search = self.search();
                let max = self.settings.max_decode_frames;
                let state = self
                    .streams
                    .entry(w.stream_id.clone())
                    .or_insert_with(|| StreamState::new(w));
                state.add_window(w, payload)?;
                let (t, rest_confidence) = transcript::build(
                    state,
                    &w.stream_id,
                    TranscriptKind::Partial,
                    search,
                    constraint,
                );
                state.commit_settled(max, &t.words, rest_confidence);
                // A partial when the text changed or the window read further
                // (its `covered_ms` tells a reader nothing new was said up to
                // there); a redelivered window gives none.
                if state.last_text.as_deref() != Some(t.text.as_str())
                    || state.covered_until > state.published_until
                {
                    state.last_text = Some(t.text.clone());
                    state.published_until = state.covered_until;
                    Ok(vec![t])
                } else {
                    Ok(Vec::new())
                }
            }
            LogitsEvent::End(e) => Ok(vec![self.finish(&e.stream_id, Some(e), constraint)]),
        }
    }

    /// The stream's one final (empty for a stream with no window at all);
    /// the stream is gone afterwards. `end` is the stream's end event, none
    /// when it timed out; what ingest lost or never captured is carried over.
    fn finish(
        &mut self,
        id: &str,
        end: Option<&StreamEnd>,
        constraint: &dyn Constraint,
    ) -> Transcript {
        let mut t = match self.streams.remove(id) {
            Some(state) => {
                transcript::build(&state, id, TranscriptKind::Final, self.search(), constraint).0
            }
            None => Transcript::empty(id, TranscriptKind::Final),
        };
        t.stable_prefix = t.text.clone();
        t.timed_out = end.is_none();
        if let Some(end) = end {
            t.frames_lost = end.frames_lost;
            t.gaps = end.gaps.clone();
            t.cancelled = end.cancelled;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, end};

    const SENTENCES: [&str; 4] = [
        "bin blue at f two now",
        "lay green by x nine again",
        "place red in q one please",
        "set white with a zero soon",
    ];

    /// Runs a stream's windows and end through a decoder; returns every transcript.
    fn run(d: &mut Decoder, id: &str, text: &str) -> Vec<Transcript> {
        let probs = synth::posteriors(text, 12, 0.9);
        let mut out = Vec::new();
        for (ev, payload) in synth::windows(id, &probs, 25) {
            out.extend(d.handle(&ev, &payload).unwrap());
        }
        out.extend(d.handle(&end(id), &[]).unwrap());
        out
    }

    #[test]
    fn stitched_windows_spell_the_text_with_one_final_last() {
        let text = SENTENCES[..2].join(" | ");
        let mut d = Decoder::new(DecodeSettings::default());
        let out = run(&mut d, "s", &text);
        let last = out.last().unwrap();
        assert_eq!(last.kind, TranscriptKind::Final);
        assert_eq!(
            out.iter()
                .filter(|t| t.kind == TranscriptKind::Final)
                .count(),
            1
        );
        assert_eq!(last.text, SENTENCES[..2].join(" "));
        assert_eq!(last.stable_prefix, last.text);
        // Partials grow, and their stable prefix is never taken back.
        let mut stable = String::new();
        for t in &out {
            assert!(t.text.starts_with(&t.stable_prefix), "{t:?}");
            assert!(
                t.stable_prefix.starts_with(&stable),
                "{stable:?} then {:?}",
                t.stable_prefix
            );
            stable = t.stable_prefix.clone();
        }
        assert_eq!(d.active_streams(), 0);
    }

    #[test]
    fn the_final_names_what_ingest_lost_or_never_captured() {
        let mut d = Decoder::new(DecodeSettings::default());
        let probs = synth::posteriors(SENTENCES[0], 12, 0.9);
        for (ev, payload) in synth::windows("s", &probs, 25) {
            d.handle(&ev, &payload).unwrap();
        }
        let LogitsEvent::End(mut e) = end("s") else {
            unreachable!()
        };
        e.frames_lost = 5;
        e.gaps = vec![mouthmap_contracts::Gap {
            at_frame: 40,
            missing_ms: 2000,
        }];
        let f = d.handle(&LogitsEvent::End(e.clone()), &[]).unwrap();
        assert_eq!((f[0].frames_lost, &f[0].gaps), (5, &e.gaps));
        assert!(!f[0].timed_out);
    }

    #[test]
    fn bounded_re_decoding_keeps_the_text_of_a_long_stream() {
        // About 43 s of speech: twelve sentences.
        let text = SENTENCES.repeat(3).join(" | ");
        let mut all = Decoder::new(DecodeSettings {
            max_decode_frames: 0,
            ..DecodeSettings::default()
        });
        let mut bounded = Decoder::new(DecodeSettings {
            max_decode_frames: 250,
            ..DecodeSettings::default()
        });
        let a = run(&mut all, "s", &text);
        let probs = synth::posteriors(&text, 12, 0.9);
        let mut b = Vec::new();
        let mut most_frames = 0;
        for (ev, payload) in synth::windows("s", &probs, 25) {
            b.extend(bounded.handle(&ev, &payload).unwrap());
            most_frames = most_frames.max(bounded.streams["s"].frames.len());
        }
        b.extend(bounded.handle(&end("s"), &[]).unwrap());
        assert!(probs.len() / 28 > 1000, "{} frames", probs.len() / 28);
        assert!(most_frames <= 250 + 75, "held {most_frames} frames");
        let (fa, fb) = (a.last().unwrap(), b.last().unwrap());
        assert_eq!(fb.text, SENTENCES.repeat(3).join(" "));
        assert_eq!(fa.text, fb.text);
        assert_eq!(fa.words, fb.words, "word times survive the commits");
        assert!((fa.confidence - fb.confidence).abs() < 0.05);
    }

    #[test]
    fn a_missed_space_does_not_end_a_grammar_decode() {
        // Confident posteriors (everything else under the prune threshold)
        // that run two sentences together: the grammar puts the space in
        // and decodes on, instead of losing the rest of the stream.
        let text = "bin blue at f two nowlay green by x nine again";
        let probs = synth::posteriors(text, 12, 0.99999);
        let mut d = Decoder::new(DecodeSettings {
            grammar: Some("grid".into()),
            ..DecodeSettings::default()
        });
        let mut out = Vec::new();
        for (ev, payload) in synth::windows("j", &probs, 25) {
            out.extend(d.handle(&ev, &payload).unwrap());
        }
        out.extend(d.handle(&end("j"), &[]).unwrap());
        assert_eq!(
            out.last().unwrap().text,
            "bin blue at f two now lay green by x nine again"
        );
    }

    #[test]
    fn a_stream_can_choose_its_grammar() {
        // Posteriors that spell "nuw", not a GRID adverb: the grammar
        // chosen for stream g turns it into "now"; stream o decodes openly.
        let mut d = Decoder::new(DecodeSettings::default());
        d.choose_grammar("g", Some("grid"));
        let out = run(&mut d, "g", "bin blue at f two nuw");
        let last = out.last().unwrap();
        assert_eq!(last.grammar.as_deref(), Some("grid"));
        assert_eq!(last.text, SENTENCES[0]);
        let out = run(&mut d, "o", "bin blue at f two nuw");
        assert_eq!(out.last().unwrap().grammar, None);
        assert_eq!(out.last().unwrap().text, "bin blue at f two nuw");
        // A grammar the vocabulary cannot spell falls back to the default.
        d.choose_grammar("h", Some("lexicon:Ünïcode"));
        let out = run(&mut d, "h", SENTENCES[1]);
        assert_eq!(out.last().unwrap().grammar, None);
        assert_eq!(out.last().unwrap().text, SENTENCES[1]);
    }

    #[test]
    fn windows_without_a_face_read_no_words_and_the_final_says_why() {
        let probs = synth::posteriors(SENTENCES[0], 12, 0.9);
        let mut d = Decoder::new(DecodeSettings::default());
        let mut out = Vec::new();
        for (mut ev, payload) in synth::windows("nf", &probs, 25) {
            if let LogitsEvent::Window(w) = &mut ev {
                w.face_share = 0.1;
            }
            out.extend(d.handle(&ev, &payload).unwrap());
        }
        out.extend(d.handle(&end("nf"), &[]).unwrap());
        let last = out.last().unwrap();
        assert_eq!(last.kind, TranscriptKind::Final);
        assert_eq!(last.text, "", "letters read off what is not a face");
        assert!(last.no_face);
        // With faces, the same posteriors read the sentence.
        let out = run(&mut d, "f", SENTENCES[0]);
        assert_eq!(out.last().unwrap().text, SENTENCES[0]);
        assert!(!out.last().unwrap().no_face);
    }
}

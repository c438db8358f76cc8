//! The decode stage, free of transport: `logits` events in, transcripts out.
//!
//! Overlapping windows are stitched into one posterior stream per stream:
//! each new window takes over from the previous one at a word boundary both
//! agree on ([`crate::stitch`]). Frames before the newest window's start
//! plus the hop are settled (the next window cannot cut before its own
//! start); the partial transcript's `stable_prefix` is the words that end
//! before that point. After the stream's end event, exactly one `final` is
//! published.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use mouthmap_bus::contract::{
    FRAME_DURATION_NS, LogitsEvent, LogitsWindow, TimedWord, Transcript, TranscriptKind,
};

use crate::ctc::{self, Constraint, Decoded, Open, Posteriors};
use crate::grammar::{GrammarError, WordGrammar};
use crate::stitch::{self, Classes, WindowRows};

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
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Grammar(#[from] GrammarError),
}

struct StreamState {
    /// frame index -> probabilities, stitched
    frames: BTreeMap<u64, Vec<f32>>,
    /// The newest window (first label repaired), which the next one cuts into.
    last_window: Option<WindowRows>,
    /// Where the newest window's part of `frames` begins.
    last_cut: u64,
    vocabulary: Vec<String>,
    blank: usize,
    model_version: String,
    newest_ingest_us: i64,
    settled_until: u64,
    last_text: Option<String>,
    /// Words committed by bounded re-decoding; their frames are gone.
    committed: Vec<TimedWord>,
    /// (sum of ln confidence per frame, frames) of the committed part.
    committed_log_conf: (f64, u64),
    /// One past the newest frame seen.
    covered_until: u64,
    /// Frames before this were committed and dropped; later windows' copies are ignored.
    dropped_until: u64,
    last_seen: Instant,
}

/// The stage.
pub struct Decoder {
    settings: DecodeSettings,
    streams: HashMap<String, StreamState>,
    /// Grammars built so far, by name and the vocabulary they are spelled in
    /// (a failure is kept too, so it is reported once).
    grammars: HashMap<(String, Vec<String>), Result<Arc<WordGrammar>, GrammarError>>,
    /// Grammars chosen for single streams (by their features), over the default.
    chosen: HashMap<String, String>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

type Chosen = (Option<Arc<WordGrammar>>, Option<String>);

impl Decoder {
    pub fn new(settings: DecodeSettings) -> Self {
        Self {
            settings,
            streams: HashMap::new(),
            grammars: HashMap::new(),
            chosen: HashMap::new(),
        }
    }

    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Decodes `stream_id` under `grammar` (`grid`, `lexicon:WORDS`) from
    /// now on, or under the configured default when None. A grammar the
    /// model's vocabulary cannot spell is reported once and the default used.
    pub fn choose_grammar(&mut self, stream_id: &str, grammar: Option<&str>) {
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

    fn build(
        &mut self,
        name: &str,
        vocabulary: &[String],
    ) -> Result<Arc<WordGrammar>, GrammarError> {
        self.grammars
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

    /// The constraint a stream decodes under, and its name for transcripts.
    fn constraint(&mut self, id: &str, vocabulary: &[String]) -> Result<Chosen, DecodeError> {
        if let Some(name) = self.chosen.get(id).cloned()
            && let Ok(g) = self.build(&name, vocabulary)
        {
            return Ok((Some(g), Some(WordGrammar::kind(&name).to_string())));
        }
        match self.settings.grammar.clone() {
            Some(name) => Ok((
                Some(self.build(&name, vocabulary)?),
                Some(WordGrammar::kind(&name).to_string()),
            )),
            None => Ok((None, None)),
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
            Some(v) => self.constraint(&id, v)?,
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
            self.chosen.remove(&id);
        }
        Ok(out)
    }

    /// Closes streams whose end never came after `idle`, each with a `final`
    /// marked `timed_out`, each under its own grammar.
    pub fn expire_idle(&mut self, idle: std::time::Duration) -> Vec<Transcript> {
        let stale: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| s.last_seen.elapsed() >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in stale {
            let vocabulary = self.streams[&id].vocabulary.clone();
            let (grammar, kind) = self.constraint(&id, &vocabulary).unwrap_or((None, None));
            let t = match &grammar {
                Some(g) => self.finish(&id, true, g.as_ref()),
                None => self.finish(&id, true, &Open),
            };
            self.chosen.remove(&id);
            out.extend(t.map(|mut t| {
                t.grammar = kind;
                t
            }));
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
                w.validate(payload)
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                self.add_window(w, payload)?;
                let t = self
                    .transcript_parts(&w.stream_id, TranscriptKind::Partial, constraint)
                    .map(|(t, rest_confidence)| {
                        self.commit_settled(&w.stream_id, &t.words, rest_confidence);
                        t
                    });
                // A partial only when the text changed.
                let state = self.streams.get_mut(&w.stream_id).expect("just added");
                match t {
                    Some(t) if state.last_text.as_deref() != Some(t.text.as_str()) => {
                        state.last_text = Some(t.text.clone());
                        Ok(vec![t])
                    }
                    _ => Ok(Vec::new()),
                }
            }
            LogitsEvent::End(e) => Ok(self
                .finish(&e.stream_id, false, constraint)
                .into_iter()
                .collect()),
        }
    }

    fn finish(
        &mut self,
        id: &str,
        timed_out: bool,
        constraint: &dyn Constraint,
    ) -> Option<Transcript> {
        let mut t = match self.transcript(id, TranscriptKind::Final, constraint) {
            Some(t) => t,
            // An end with no window at all still gets its one final, empty.
            None => Transcript {
                stream_id: id.to_string(),
                kind: TranscriptKind::Final,
                text: String::new(),
                stable_prefix: String::new(),
                words: Vec::new(),
                confidence: 0.0,
                model_version: String::new(),
                latency_ms: 0.0,
                covered_ms: 0,
                timed_out,
                features: None,
                enriched: false,
                enrichment_error: None,
                grammar: None,
            },
        };
        t.stable_prefix = t.text.clone();
        t.timed_out = timed_out;
        self.streams.remove(id);
        Some(t)
    }

    fn add_window(&mut self, w: &LogitsWindow, payload: &[u8]) -> Result<(), DecodeError> {
        let classes = w.classes as usize;
        let state = self
            .streams
            .entry(w.stream_id.clone())
            .or_insert_with(|| StreamState {
                frames: BTreeMap::new(),
                last_window: None,
                last_cut: 0,
                vocabulary: w.vocabulary.clone(),
                blank: w.blank as usize,
                model_version: w.model_version.clone(),
                newest_ingest_us: 0,
                settled_until: 0,
                last_text: None,
                committed: Vec::new(),
                committed_log_conf: (0.0, 0),
                covered_until: 0,
                dropped_until: 0,
                last_seen: Instant::now(),
            });
        if state.vocabulary != w.vocabulary || state.blank != w.blank as usize {
            return Err(DecodeError::Malformed(format!(
                "stream {} changed vocabulary mid-stream (model {} {})",
                w.stream_id, w.model_name, w.model_version
            )));
        }
        let classes = Classes {
            count: classes,
            blank: state.blank,
            space: state.vocabulary.iter().position(|v| v == " "),
        };
        let prev_first = state.last_window.as_ref().map(|p| p.first);
        if prev_first.is_some_and(|p| w.first_frame <= p) {
            // A window already stitched (redelivered) or older: nothing new.
            state.last_seen = Instant::now();
            return Ok(());
        }
        let mut rows = WindowRows {
            first: w.first_frame,
            rows: payload[..w.valid_frames as usize * classes.count * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            classes: classes.count,
        };
        let word = if w.first_frame > 0 {
            stitch::repair_first_label(&mut rows, classes)
        } else {
            None
        };
        let floor = state
            .last_cut
            .max(state.dropped_until)
            .max(state.settled_until);
        let cut = match &state.last_window {
            Some(a) => stitch::choose_cut(a, state.last_cut, &rows, word, floor, classes),
            None => stitch::Cut {
                frame: w.first_frame,
                space_at: None,
            },
        };
        for f in cut.frame.max(state.dropped_until)..rows.end() {
            state.frames.insert(f, rows.row(f).to_vec());
        }
        if let Some(row) = cut
            .space_at
            .filter(|&f| f >= floor)
            .and_then(|f| state.frames.get_mut(&f))
        {
            stitch::make_space(row, classes);
        }
        if let Some(p) = prev_first {
            // The next window starts a hop later and cannot cut before that.
            let hop = w.first_frame - p;
            state.settled_until = state.settled_until.max(w.first_frame + hop);
        }
        state.last_cut = cut.frame;
        state.last_window = Some(rows);
        state.newest_ingest_us = state.newest_ingest_us.max(w.newest_ingest_us);
        state.covered_until = state
            .covered_until
            .max(w.first_frame + w.valid_frames as u64);
        state.model_version = w.model_version.clone();
        state.last_seen = Instant::now();
        Ok(())
    }

    fn transcript(
        &self,
        id: &str,
        kind: TranscriptKind,
        constraint: &dyn Constraint,
    ) -> Option<Transcript> {
        self.transcript_parts(id, kind, constraint).map(|(t, _)| t)
    }

    /// The transcript, and the confidence of the part decoded now (after
    /// the committed words).
    fn transcript_parts(
        &self,
        id: &str,
        kind: TranscriptKind,
        constraint: &dyn Constraint,
    ) -> Option<(Transcript, f32)> {
        let state = self.streams.get(id)?;
        let indexes: Vec<u64> = state.frames.keys().copied().collect();
        let classes = state.vocabulary.len();
        let probs: Vec<f32> = state
            .frames
            .values()
            .flat_map(|row| row.iter().copied())
            .collect();
        let post = Posteriors {
            probs: &probs,
            classes,
            blank: state.blank,
        };
        let decoded = if self.settings.beam == 0 {
            ctc::greedy(post)
        } else {
            ctc::beam_search(post, self.settings.beam, self.settings.prune, constraint)
        };
        let mut words_all = state.committed.clone();
        words_all.extend(words(&decoded, &state.vocabulary, &indexes));
        let text = words_all
            .iter()
            .map(|w| w.word.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let settled_ms = state.settled_until * FRAME_DURATION_NS / 1_000_000;
        let stable: Vec<&str> = words_all
            .iter()
            .enumerate()
            .take_while(|(i, w)| *i < state.committed.len() || w.end_ms + 80 <= settled_ms)
            .map(|(_, w)| w.word.as_str())
            .collect();
        let (log_sum, n) = state.committed_log_conf;
        let rest_frames = indexes.len() as f64;
        let confidence = if n == 0 {
            decoded.confidence
        } else {
            (((log_sum + (decoded.confidence.max(1e-9) as f64).ln() * rest_frames)
                / (n as f64 + rest_frames))
                .exp()) as f32
        };
        Some((
            Transcript {
                stream_id: id.to_string(),
                kind,
                stable_prefix: stable.join(" "),
                text,
                words: words_all,
                confidence,
                model_version: state.model_version.clone(),
                latency_ms: (now_us() - state.newest_ingest_us).max(0) as f64 / 1000.0,
                covered_ms: state.covered_until * FRAME_DURATION_NS / 1_000_000,
                timed_out: false,
                features: None,
                enriched: false,
                enrichment_error: None,
                grammar: None,
            },
            decoded.confidence,
        ))
    }

    /// Bounded re-decoding: past `max_decode_frames`, commits the settled
    /// words before the last settled gap between two words and drops their
    /// frames. `words` is the stream's transcript just decoded.
    fn commit_settled(&mut self, id: &str, words: &[TimedWord], rest_confidence: f32) {
        let max = self.settings.max_decode_frames;
        let Some(state) = self.streams.get_mut(id) else {
            return;
        };
        if max == 0 || state.frames.len() <= max {
            return;
        }
        let Some(&first) = state.frames.keys().next() else {
            return;
        };
        let frame = |ms: u64| ms * 1_000_000 / FRAME_DURATION_NS;
        let rest = &words[state.committed.len().min(words.len())..];
        let settled = state.settled_until;
        let mut cut = None;
        for k in 0..rest.len().saturating_sub(1) {
            let gap_end = frame(rest[k + 1].start_ms);
            if gap_end + 2 > settled {
                break;
            }
            cut = Some((k + 1, (frame(rest[k].end_ms) + gap_end) / 2));
        }
        let (n_commit, cut_frame) = match cut {
            Some(c) => c,
            // Nothing said in the settled part: drop it, but a margin.
            None if rest.first().is_none_or(|w| frame(w.start_ms) > settled) => (
                0,
                rest.first()
                    .map_or(settled, |w| frame(w.start_ms).min(settled))
                    .saturating_sub(10),
            ),
            None => return,
        };
        if cut_frame <= first {
            return;
        }
        state.committed.extend(rest[..n_commit].iter().cloned());
        let kept = state.frames.split_off(&cut_frame);
        let dropped = state.frames.len() as u64;
        state.frames = kept;
        state.committed_log_conf.0 += (rest_confidence.max(1e-9) as f64).ln() * dropped as f64;
        state.committed_log_conf.1 += dropped;
        state.dropped_until = cut_frame;
    }
}

/// Groups decoded characters into words with stream times. Characters whose
/// class is a space (or empty) separate words.
pub fn words(d: &Decoded, vocabulary: &[String], frame_index: &[u64]) -> Vec<TimedWord> {
    let ms = |f: u64| f * FRAME_DURATION_NS / 1_000_000;
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0u64;
    let mut end = 0u64;
    for (&label, &t) in d.labels.iter().zip(&d.frames) {
        let ch = vocabulary.get(label).map(String::as_str).unwrap_or("");
        let frame = frame_index.get(t).copied().unwrap_or(t as u64);
        if ch.trim().is_empty() {
            if !current.is_empty() {
                out.push(TimedWord {
                    word: std::mem::take(&mut current),
                    start_ms: ms(start),
                    end_ms: ms(end + 1),
                });
            }
            continue;
        }
        if current.is_empty() {
            start = frame;
        }
        current.push_str(ch);
        end = frame;
    }
    if !current.is_empty() {
        out.push(TimedWord {
            word: current,
            start_ms: ms(start),
            end_ms: ms(end + 1),
        });
    }
    out
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
    fn a_grammar_partial_that_ends_mid_word_keeps_what_came_before() {
        // A live stream's frames end anywhere, often inside a word: every
        // beam is then an unfinished word, and the grammar decode must give
        // the words before it, not nothing (nothing once made bounded
        // re-decoding drop the frames of three sentences).
        let mut probs = synth::posteriors("bin blue at f two now bin gr", 4, 0.99);
        probs.truncate(probs.len() - 4 * 28); // no pause after "gr"
        let d = ctc::beam_search(
            Posteriors {
                probs: &probs,
                classes: 28,
                blank: 27,
            },
            8,
            1e-4,
            &WordGrammar::named("grid", &synth::vocabulary()).unwrap(),
        );
        let text: String = d
            .labels
            .iter()
            .map(|&l| synth::vocabulary()[l].clone())
            .collect();
        assert_eq!(text.trim_end(), "bin blue at f two now bin");
        assert_eq!(d.labels.len(), d.frames.len());
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
}

//! The decode stage, free of transport: `logits` events in, transcripts out.
//!
//! Overlapping windows are stitched into one posterior stream per stream:
//! each frame is taken from the window where it sits nearest the centre.
//! Frames up to the centre of the newest window are settled (no later
//! window can be nearer their centre); the partial transcript's
//! `stable_prefix` is the words that end before that point. After the
//! stream's end event, exactly one `final` is published.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use mouthmap_bus::contract::{
    FRAME_DURATION_NS, LogitsEvent, LogitsWindow, TimedWord, Transcript, TranscriptKind,
};

use crate::ctc::{self, Constraint, Decoded, Open, Posteriors};
use crate::grammar::{GrammarError, WordGrammar};

/// Decoding settings.
#[derive(Debug, Clone)]
pub struct DecodeSettings {
    /// Prefix beam width; 0 decodes greedily (and ignores any grammar).
    pub beam: usize,
    /// Classes under this probability at a frame are not tried by the beam.
    pub prune: f32,
    /// A word grammar to decode under (`grid`), or none for open characters.
    pub grammar: Option<String>,
}

impl Default for DecodeSettings {
    fn default() -> Self {
        Self {
            beam: 8,
            prune: 1e-4,
            grammar: None,
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
    /// frame index -> (distance from its window's centre, probabilities)
    frames: BTreeMap<u64, (f32, Vec<f32>)>,
    vocabulary: Vec<String>,
    blank: usize,
    model_version: String,
    newest_ingest_us: i64,
    settled_until: u64,
    last_text: Option<String>,
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
                let t = self.transcript(&w.stream_id, TranscriptKind::Partial, constraint);
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
                vocabulary: w.vocabulary.clone(),
                blank: w.blank as usize,
                model_version: w.model_version.clone(),
                newest_ingest_us: 0,
                settled_until: 0,
                last_text: None,
                last_seen: Instant::now(),
            });
        if state.vocabulary != w.vocabulary || state.blank != w.blank as usize {
            return Err(DecodeError::Malformed(format!(
                "stream {} changed vocabulary mid-stream (model {} {})",
                w.stream_id, w.model_name, w.model_version
            )));
        }
        let probs: Vec<f32> = payload
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let centre = w.frames as f32 / 2.0;
        for j in 0..w.valid_frames as usize {
            let dist = (j as f32 + 0.5 - centre).abs();
            let row = probs[j * classes..(j + 1) * classes].to_vec();
            let f = w.first_frame + j as u64;
            match state.frames.get(&f) {
                Some((d, _)) if *d <= dist => {}
                _ => {
                    state.frames.insert(f, (dist, row));
                }
            }
        }
        state.settled_until = state
            .settled_until
            .max(w.first_frame + (w.frames / 2) as u64);
        state.newest_ingest_us = state.newest_ingest_us.max(w.newest_ingest_us);
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
        let state = self.streams.get(id)?;
        let indexes: Vec<u64> = state.frames.keys().copied().collect();
        let classes = state.vocabulary.len();
        let probs: Vec<f32> = state
            .frames
            .values()
            .flat_map(|(_, row)| row.iter().copied())
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
        let words = words(&decoded, &state.vocabulary, &indexes);
        let text = words
            .iter()
            .map(|w| w.word.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let settled_ms = state.settled_until * FRAME_DURATION_NS / 1_000_000;
        let stable: Vec<&str> = words
            .iter()
            .take_while(|w| w.end_ms + 80 <= settled_ms)
            .map(|w| w.word.as_str())
            .collect();
        Some(Transcript {
            stream_id: id.to_string(),
            kind,
            stable_prefix: stable.join(" "),
            text,
            words,
            confidence: decoded.confidence,
            model_version: state.model_version.clone(),
            latency_ms: (now_us() - state.newest_ingest_us).max(0) as f64 / 1000.0,
            timed_out: false,
            features: None,
            enriched: false,
            enrichment_error: None,
            grammar: None,
        })
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

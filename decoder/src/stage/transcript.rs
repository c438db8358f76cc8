//! Building a transcript from a stream's state: decode the posterior (greedy
//! or beam, under a constraint), put the committed words in front, time
//! every word, mark the stable prefix, and measure confidence and latency.

use mouthmap_contracts::clock::now_us;
use mouthmap_contracts::{FRAME_DURATION_NS, TimedWord, Transcript, TranscriptKind};

use super::stream::StreamState;
use crate::ctc::{self, Constraint, Decoded, Posteriors};

/// How the posterior is searched.
#[derive(Debug, Clone, Copy)]
pub(super) struct Search {
    /// Prefix beam width; 0 decodes greedily.
    pub beam: usize,
    /// Classes under this probability at a frame are not tried.
    pub prune: f32,
}

/// The stream's transcript of `kind`, and the confidence of the part
/// decoded now (after the committed words).
pub(super) fn build(
    state: &StreamState,
    id: &str,
    kind: TranscriptKind,
    search: Search,
    constraint: &dyn Constraint,
) -> (Transcript, f32) {
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
    let decoded = if search.beam == 0 {
        ctc::greedy(post)
    } else {
        ctc::beam_search(post, search.beam, search.prune, constraint)
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
    let mut t = Transcript::empty(id, kind);
    t.no_face = state.windows > 0 && state.faced_windows == 0;
    t.stable_prefix = stable.join(" ");
    t.text = text;
    t.words = words_all;
    t.confidence = confidence;
    t.model = state.model_name.clone();
    t.model_version = state.model_version.clone();
    t.version = state.served_version;
    t.latency_ms = (now_us() - state.newest_ingest_us).max(0) as f64 / 1000.0;
    t.covered_ms = state.covered_until * FRAME_DURATION_NS / 1_000_000;
    (t, decoded.confidence)
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

    #[test]
    fn characters_become_timed_words() {
        let vocabulary: Vec<String> = [" ", "a", "b"].iter().map(|s| s.to_string()).collect();
        // "ab a" at frames 0, 1, (space) 2, 3
        let d = Decoded {
            labels: vec![1, 2, 0, 1],
            frames: vec![0, 1, 2, 3],
            confidence: 1.0,
        };
        let w = words(&d, &vocabulary, &[10, 11, 12, 13]);
        assert_eq!(
            w,
            vec![
                TimedWord {
                    word: "ab".into(),
                    start_ms: 400,
                    end_ms: 480
                },
                TimedWord {
                    word: "a".into(),
                    start_ms: 520,
                    end_ms: 560
                },
            ]
        );
    }
}

//! The aggregates `mouthmap features serve` keeps, as pure functions of
//! transcripts, so a replay of the `transcripts` topic rebuilds exactly what
//! the live run built.
//!
//! - `stream_activity` is a function of the stream's latest transcript.
//! - `speaker_activity` is a function of the set of the speaker's finished
//!   streams, each stream one [`Contribution`] (a replayed final replaces
//!   itself, so at-least-once delivery does not count a stream twice).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::online::Row;
use crate::value::Value;

/// What the aggregates need of one transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptFacts {
    pub stream_id: String,
    pub speaker_id: Option<String>,
    pub is_final: bool,
    pub words: u64,
    pub confidence: f64,
    /// From the first word's start to the last word's end.
    pub spoken_ms: u64,
    /// When the transcript was published (its Kafka timestamp), Unix ms.
    pub timestamp_ms: i64,
}

fn per_minute(words: u64, ms: u64) -> f64 {
    if ms == 0 {
        0.0
    } else {
        words as f64 * 60_000.0 / ms as f64
    }
}

/// The stream's `stream_activity` row after this transcript.
pub fn stream_activity(f: &TranscriptFacts) -> Row {
    let mut row = BTreeMap::new();
    row.insert("words".into(), Value::Int(f.words as i64));
    row.insert("confidence".into(), Value::Float(f.confidence));
    row.insert(
        "words_per_minute".into(),
        Value::Float(per_minute(f.words, f.spoken_ms)),
    );
    row.insert("finished".into(), Value::Bool(f.is_final));
    row.insert("last_seen_ms".into(), Value::Int(f.timestamp_ms));
    row
}

/// One finished stream's part in its speaker's aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub words: u64,
    pub confidence: f64,
    pub spoken_ms: u64,
    pub last_seen_ms: i64,
}

impl From<&TranscriptFacts> for Contribution {
    fn from(f: &TranscriptFacts) -> Self {
        Self {
            words: f.words,
            confidence: f.confidence,
            spoken_ms: f.spoken_ms,
            last_seen_ms: f.timestamp_ms,
        }
    }
}

/// The speaker's `speaker_activity` row from all its streams' contributions.
/// The mean confidence is over streams; words per minute over all speech.
pub fn speaker_activity<'a>(parts: impl IntoIterator<Item = &'a Contribution>) -> Row {
    let (mut streams, mut words, mut conf, mut ms, mut last) = (0u64, 0u64, 0.0f64, 0u64, i64::MIN);
    for p in parts {
        streams += 1;
        words += p.words;
        conf += p.confidence;
        ms += p.spoken_ms;
        last = last.max(p.last_seen_ms);
    }
    let mut row = BTreeMap::new();
    row.insert("streams_seen".into(), Value::Int(streams as i64));
    row.insert("words".into(), Value::Int(words as i64));
    row.insert(
        "mean_confidence".into(),
        Value::Float(if streams == 0 {
            0.0
        } else {
            conf / streams as f64
        }),
    );
    row.insert(
        "words_per_minute".into(),
        Value::Float(per_minute(words, ms)),
    );
    row.insert(
        "last_seen_ms".into(),
        Value::Int(if streams == 0 { 0 } else { last }),
    );
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn facts(words: u64, conf: f64, ms: u64, ts: i64) -> TranscriptFacts {
        TranscriptFacts {
            stream_id: "a".into(),
            speaker_id: Some("s1".into()),
            is_final: true,
            words,
            confidence: conf,
            spoken_ms: ms,
            timestamp_ms: ts,
        }
    }

    #[test]
    fn rows_follow_the_declarations() {
        let r = Registry::builtin();
        r.view("stream_activity")
            .unwrap()
            .check(&stream_activity(&facts(6, 0.9, 2000, 5)))
            .unwrap();
        r.view("speaker_activity")
            .unwrap()
            .check(&speaker_activity(&[Contribution::from(&facts(
                6, 0.9, 2000, 5,
            ))]))
            .unwrap();
    }

    #[test]
    fn speaker_totals_are_over_streams_and_order_free() {
        let a = Contribution::from(&facts(6, 0.8, 2000, 10));
        let b = Contribution::from(&facts(12, 0.6, 4000, 30));
        let row = speaker_activity(&[a, b]);
        assert_eq!(row["streams_seen"], Value::Int(2));
        assert_eq!(row["words"], Value::Int(18));
        assert_eq!(row["words_per_minute"], Value::Float(180.0));
        assert_eq!(row["last_seen_ms"], Value::Int(30));
        let Value::Float(m) = row["mean_confidence"] else {
            panic!()
        };
        assert!((m - 0.7).abs() < 1e-12);
        assert_eq!(row, speaker_activity(&[b, a]));
    }
}

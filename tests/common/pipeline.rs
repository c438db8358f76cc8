//! The pipeline's services as processes on their own topics, and the checks
//! their transcripts must pass.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use mouthmap_bus::kafka::InMessage;
use mouthmap_contracts::{Transcript, TranscriptKind, headers};

use super::{Proc, face_model, mouthmap, unique};

/// Validation clips (never trained on, see model/split.json) and their sentences.
pub const CLIPS: [(&str, &str); 2] = [
    ("bbie8n", "bin blue in e eight now"),
    ("bras6n", "bin red at s six now"),
];

pub fn model() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/mouthmap-lipnet-grid-s1/1/model.onnx")
}

pub fn word_errors(a: &str, b: &str) -> usize {
    let (a, b): (Vec<&str>, Vec<&str>) = (
        a.split_whitespace().collect(),
        b.split_whitespace().collect(),
    );
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, y) in b.iter().enumerate() {
            cur.push(
                (prev[j + 1] + 1)
                    .min(cur[j] + 1)
                    .min(prev[j] + usize::from(x != y)),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A stream's transcripts, as its messages carry them (JSON, schema and
/// trace headers checked).
pub fn transcripts_for(msgs: &[InMessage], id: &str) -> Vec<Transcript> {
    msgs.iter()
        .filter(|m| m.key_str() == Some(id))
        .map(|m| {
            assert_eq!(m.header(headers::SCHEMA), Some("transcripts/v1"));
            assert!(m.header("traceparent").is_some());
            serde_json::from_slice(&m.payload).expect("transcripts are JSON")
        })
        .collect()
}

/// Partials, then exactly one final, which comes last. Returns the final.
pub fn one_final(ours: &[Transcript], what: &str) -> Transcript {
    assert!(
        ours.iter().any(|t| t.kind == TranscriptKind::Partial),
        "{what}: partials"
    );
    let finals: Vec<&Transcript> = ours
        .iter()
        .filter(|t| t.kind == TranscriptKind::Final)
        .collect();
    assert_eq!(finals.len(), 1, "{what}: exactly one final");
    assert_eq!(
        ours.last().unwrap().kind,
        TranscriptKind::Final,
        "{what}: the final comes last"
    );
    finals[0].clone()
}

/// One stream's transcripts: JSON with schema and trace headers, partials,
/// then exactly one final (last), within one word of `sentence`. Returns the final.
pub fn check_stream(msgs: &[InMessage], id: &str, clip: &str, sentence: &str) -> Transcript {
    let f = one_final(&transcripts_for(msgs, id), clip);
    assert!(
        word_errors(&f.text, sentence) <= 1,
        "{clip}: {:?} vs {sentence:?}",
        f.text
    );
    f
}

/// A pipeline's own topics.
pub struct Topics {
    pub frames: String,
    pub mouths: String,
    pub logits: String,
    pub transcripts: String,
    pub dlq: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self::new()
    }
}

impl Topics {
    pub fn new() -> Self {
        Self {
            frames: unique("frames"),
            mouths: unique("mouths"),
            logits: unique("logits"),
            transcripts: unique("transcripts"),
            dlq: unique("dlq"),
        }
    }

    /// Creates all five topics (3 partitions) before any service runs.
    pub async fn create(&self, brokers: &str) {
        let settings = mouthmap_bus::kafka::KafkaSettings::new(brokers, "t");
        mouthmap_bus::kafka::ensure_topics(
            &settings,
            &[
                &self.frames,
                &self.mouths,
                &self.logits,
                &self.transcripts,
                &self.dlq,
            ],
            3,
            1,
        )
        .await
        .unwrap();
    }

    pub fn command(&self, brokers: &str) -> Command {
        let mut c = mouthmap(brokers, &self.frames);
        c.env("MOUTHMAP_MOUTHS_TOPIC", &self.mouths)
            .env("MOUTHMAP_LOGITS_TOPIC", &self.logits)
            .env("MOUTHMAP_TRANSCRIPTS_TOPIC", &self.transcripts)
            .env("MOUTHMAP_DEAD_LETTER_TOPIC", &self.dlq)
            .env("MOUTHMAP_FACE_MODEL", face_model());
        c
    }

    /// The three consuming stages on these topics, with the reference model:
    /// preprocess, infer, decode.
    pub fn stages(&self, brokers: &str) -> [Proc; 3] {
        let model = model().display().to_string();
        [
            self.service(brokers, "preprocess", &[]),
            self.service(brokers, "infer", &["--model", &model]),
            self.service(brokers, "decode", &[]),
        ]
    }

    pub fn service(&self, brokers: &str, role: &str, extra: &[&str]) -> Proc {
        Proc::spawn(
            role,
            self.command(brokers)
                .arg(role)
                .args(["--metrics-listen", "127.0.0.1:0", "--group"])
                .arg(unique(role))
                .args(extra),
        )
    }
}

pub fn finals_for(msgs: &[InMessage], key: &str) -> usize {
    msgs.iter()
        .filter(|m| m.key_str() == Some(key) && m.header(headers::EVENT) == Some("final"))
        .count()
}

//! The `transcripts` topic (decode -> users): plain JSON, no envelope.

use serde::{Deserialize, Serialize};

use crate::event::no_payload;
use crate::{ContractError, Event, Gap, TopicKind};

/// A word with its time span in the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedWord {
    pub word: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Partial or final?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptKind {
    Partial,
    Final,
}

/// One message on the `transcripts` topic: plain JSON, no envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub stream_id: String,
    pub kind: TranscriptKind,
    pub text: String,
    /// Prefix of `text` that later partials will not change.
    pub stable_prefix: String,
    pub words: Vec<TimedWord>,
    pub confidence: f32,
    /// The model that read the stream: its name (a repository model's
    /// directory, or the file's `model_name` metadata) ...
    #[serde(default)]
    pub model: String,
    /// ... the version string in its metadata ...
    pub model_version: String,
    /// ... and the repository version that served it (0: a model from a
    /// file, outside any repository).
    #[serde(default)]
    pub version: u64,
    /// From the ingest of the newest frame covered to this publication.
    pub latency_ms: f64,
    /// The transcript covers the stream up to here (ms from its first frame).
    #[serde(default)]
    pub covered_ms: u64,
    /// Set on a `final` sent because the stream's end never came.
    #[serde(default)]
    pub timed_out: bool,
    /// Online features of the stream and its speaker (feature store):
    /// `{view: {field: value}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<serde_json::Value>,
    /// True when `features` is what the feature store holds now; false when
    /// the lookup failed or missed its deadline (see `enrichment_error`).
    #[serde(default)]
    pub enriched: bool,
    /// Why the transcript is not enriched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment_error: Option<String>,
    /// The word grammar the text was decoded under (`grid`, `lexicon`), or
    /// none for open character decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// No face was found in the stream so far: there was nothing to read,
    /// and the text is empty for that reason.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_face: bool,
    /// On a `final`: frames ingest captured but could not deliver (the
    /// stream's end says how many).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frames_lost: u64,
    /// On a `final`: spans of the stream never captured (a publisher that
    /// dropped and came back, an ingest restart), as the stream's end lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
    /// Finals only: the stream's client went away before its end (see
    /// `StreamEnd::cancelled`); the text covers what arrived.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Transcript {
    /// An empty transcript of `kind` for `stream_id`, to fill in.
    pub fn empty(stream_id: &str, kind: TranscriptKind) -> Self {
        Self {
            stream_id: stream_id.to_string(),
            kind,
            text: String::new(),
            stable_prefix: String::new(),
            words: Vec::new(),
            confidence: 0.0,
            model: String::new(),
            model_version: String::new(),
            version: 0,
            latency_ms: 0.0,
            covered_ms: 0,
            timed_out: false,
            features: None,
            enriched: false,
            enrichment_error: None,
            grammar: None,
            no_face: false,
            frames_lost: 0,
            gaps: Vec::new(),
            cancelled: false,
        }
    }
}

impl Event for Transcript {
    const TOPIC: TopicKind = TopicKind::Transcripts;

    fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn name(&self) -> &'static str {
        match self.kind {
            TranscriptKind::Partial => "partial",
            TranscriptKind::Final => "final",
        }
    }

    fn check(&self, payload: &[u8]) -> Result<(), ContractError> {
        no_payload(payload)
    }

    /// Plain JSON, for downstream users.
    fn encode(&self, payload: &[u8]) -> Vec<u8> {
        debug_assert!(payload.is_empty(), "transcripts carry no payload");
        serde_json::to_vec(self).expect("transcripts serialise")
    }

    fn parse(value: &[u8]) -> Result<(Self, &[u8]), ContractError> {
        let t =
            serde_json::from_slice(value).map_err(|e| ContractError::BadMetadata(e.to_string()))?;
        Ok((t, &[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;

    #[test]
    fn transcripts_are_plain_json() {
        let mut t = Transcript::empty("cam-1", TranscriptKind::Final);
        t.text = "bin blue".into();
        let bytes = t.encode(&[]);
        assert_eq!(bytes[0], b'{');
        let (back, _) =
            decode::<Transcript>(&bytes, Some(b"cam-1"), Some("transcripts/v1")).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.name(), "final");
        assert!(matches!(
            decode::<Transcript>(b"not json", None, None),
            Err(ContractError::BadMetadata(_))
        ));
    }
}

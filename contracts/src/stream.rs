//! What every topic shares: stream ids and the start and end of a stream.
//!
//! Each stream is framed by explicit [`StreamStart`] and [`StreamEnd`]
//! events; frames carry a running index and a presentation timestamp, so a
//! consumer can tell a gap (a missing index) from an end (an end event).

use serde::{Deserialize, Serialize};

use crate::ContractError;

/// Checks that a stream id is safe as a Kafka key, a Redis key part and a path
/// component: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, not only dots (so
/// never `.` or `..`).
pub fn validate_stream_id(id: &str) -> Result<(), ContractError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !id.bytes().all(|b| b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ContractError::BadStreamId(id.chars().take(160).collect()))
    }
}

/// What kind of source a stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    File,
    Rtmp,
    Rtsp,
    Http,
    Camera,
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The source reached its end (a file's end, a publisher that finished).
    Eos,
    /// Stopped on request (API call, shutdown); everything captured was sent.
    Stopped,
    /// The source failed and retries were exhausted; see `error`.
    Error,
    /// No data arrived for the configured idle time.
    Timeout,
}

/// First event of every stream on every topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStart {
    pub stream_id: String,
    /// The source, with credentials and query strings removed.
    pub source: String,
    pub source_kind: SourceKind,
    /// Frames per second of the stream (always [`FPS`](crate::FPS)).
    pub fps: u32,
    /// Wall-clock time the stream was started, milliseconds since the Unix epoch.
    pub started_at_ms: i64,
}

/// Last event of every stream on every topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEnd {
    pub stream_id: String,
    pub reason: EndReason,
    /// Human-readable cause when `reason` is `error` or `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Frames published for the stream (indexes `0..frames`, minus gaps).
    pub frames: u64,
    /// Chunk messages published for the stream.
    pub chunks: u64,
    pub ended_at_ms: i64,
}

impl StreamEnd {
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn start(id: &str) -> StreamStart {
        StreamStart {
            stream_id: id.into(),
            source: "clip.mp4".into(),
            source_kind: SourceKind::File,
            fps: crate::FPS,
            started_at_ms: 1,
        }
    }

    pub(crate) fn end(id: &str) -> StreamEnd {
        StreamEnd {
            stream_id: id.into(),
            reason: EndReason::Eos,
            error: None,
            frames: 0,
            chunks: 0,
            ended_at_ms: 2,
        }
    }

    #[test]
    fn stream_ids_are_path_safe() {
        assert!(validate_stream_id("cam-01_a.b").is_ok());
        assert!(validate_stream_id("a..b").is_ok());
        for bad in ["", "a b", "a/b", ".", "..", "...", &"x".repeat(129)] {
            assert!(validate_stream_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ends_serialise_their_reason() {
        let end = StreamEnd {
            stream_id: "s".into(),
            reason: EndReason::Error,
            error: Some("boom".into()),
            frames: 0,
            chunks: 0,
            ended_at_ms: 5,
        };
        let json = serde_json::to_value(&end).unwrap();
        assert_eq!(json["reason"], "error");
        assert_eq!(json["error"], "boom");
    }
}

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
    /// Frames captured but never delivered: their messages failed after
    /// every retry (counted by ingest, `mouthmap_frames_lost_total`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frames_lost: u64,
    /// Spans of the source that were never captured: a live source that
    /// dropped and came back, an ingest that was restarted. At most
    /// [`MAX_GAPS`]; later ones are added to the last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
    /// The client that sent the stream went away before its end (a gRPC
    /// caller that cancelled or disconnected): what arrived was processed,
    /// and the stream's final says so. Absent (false) in older messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// Gaps a stream's end lists at most.
pub const MAX_GAPS: usize = 1000;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A span of a stream that was never captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Index of the first frame captured after the gap.
    pub at_frame: u64,
    /// Wall-clock time between the last frame before the gap and the first
    /// after it, less one frame's time: how long nothing was captured.
    pub missing_ms: u64,
}

/// Adds a gap to `gaps`, merging into the last once [`MAX_GAPS`] are listed.
pub fn push_gap(gaps: &mut Vec<Gap>, gap: Gap) {
    let full = gaps.len() >= MAX_GAPS;
    match gaps.last_mut() {
        Some(last) if full => last.missing_ms += gap.missing_ms,
        _ => gaps.push(gap),
    }
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
            frames_lost: 0,
            gaps: Vec::new(),
            cancelled: false,
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
            frames_lost: 0,
            gaps: Vec::new(),
            cancelled: false,
        };
        let json = serde_json::to_value(&end).unwrap();
        assert_eq!(json["reason"], "error");
        assert_eq!(json["error"], "boom");
        assert!(
            json.get("gaps").is_none()
                && json.get("frames_lost").is_none()
                && json.get("cancelled").is_none()
        );
    }

    #[test]
    fn gaps_are_bounded() {
        let mut gaps = Vec::new();
        for i in 0..MAX_GAPS as u64 + 5 {
            push_gap(
                &mut gaps,
                Gap {
                    at_frame: i,
                    missing_ms: 10,
                },
            );
        }
        assert_eq!(gaps.len(), MAX_GAPS);
        assert_eq!(gaps.last().unwrap().missing_ms, 60);
    }
}

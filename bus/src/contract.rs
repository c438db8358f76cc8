//! Versioned message contracts (see `docs/contracts.md`).
//!
//! Every message on a MouthMap topic is keyed by its stream id, so all of a
//! stream's messages land on one partition and keep their order. Binary topics
//! (`frames`, `mouths`, `logits`) carry an [envelope](encode_envelope): a
//! small JSON metadata document followed by the raw payload (pixels or
//! tensors). `transcripts` carries plain JSON for downstream users.
//!
//! Each stream is framed by explicit [`StreamStart`] and [`StreamEnd`] events;
//! frames carry a running index and a presentation timestamp, so a consumer
//! can tell a gap (a missing index) from an end (an end event).

use serde::{Deserialize, Serialize};

/// Version of the contracts in this module. Bumped on any breaking change;
/// it travels in the [`headers::SCHEMA`] header and in every envelope.
pub const SCHEMA_VERSION: u16 = 1;

/// Magic bytes that open every envelope.
pub const ENVELOPE_MAGIC: &[u8; 4] = b"MMAP";

/// Size of the fixed envelope prefix: magic (4), version (2), metadata length (4).
pub const ENVELOPE_PREFIX_LEN: usize = 10;

/// Hard ceiling for one encoded message; stages size their chunks well below it.
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Frames per second of every stream after ingest.
pub const FPS: u32 = 25;

/// Nanoseconds between two frames at [`FPS`].
pub const FRAME_DURATION_NS: u64 = 1_000_000_000 / FPS as u64;

/// Kafka header names.
pub mod headers {
    /// `<topic-kind>/v<version>`, for example `frames/v1`.
    pub const SCHEMA: &str = "mm-schema";
    /// Event type inside the message: `start`, `chunk`, `end`, ...
    pub const EVENT: &str = "mm-event";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state (optional).
    pub const TRACESTATE: &str = "tracestate";
    /// Dead letters: why the message could not be processed.
    pub const DLQ_REASON: &str = "mm-dlq-reason";
    /// Dead letters: the stage that rejected the message.
    pub const DLQ_STAGE: &str = "mm-dlq-stage";
    /// Dead letters: where the message was read from.
    pub const DLQ_TOPIC: &str = "mm-dlq-topic";
    /// Dead letters: its partition.
    pub const DLQ_PARTITION: &str = "mm-dlq-partition";
    /// Dead letters: its offset.
    pub const DLQ_OFFSET: &str = "mm-dlq-offset";
}

/// The logical topics of the pipeline. Their Kafka names are settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    Frames,
    Mouths,
    Logits,
    Transcripts,
}

impl TopicKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Frames => "frames",
            TopicKind::Mouths => "mouths",
            TopicKind::Logits => "logits",
            TopicKind::Transcripts => "transcripts",
        }
    }

    /// Value of the [`headers::SCHEMA`] header for this topic.
    pub fn schema_header(self) -> String {
        format!("{}/v{}", self.as_str(), SCHEMA_VERSION)
    }
}

/// Why a message does not follow the contract.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error("message is {0} bytes, shorter than the 10-byte envelope prefix")]
    Truncated(usize),
    #[error("message does not start with the MMAP envelope magic")]
    BadMagic,
    #[error(
        "envelope version {found} is not supported (this build reads version {SCHEMA_VERSION})"
    )]
    UnsupportedVersion { found: u16 },
    #[error("envelope says its metadata is {declared} bytes but only {available} follow")]
    MetadataOverrun { declared: usize, available: usize },
    #[error("metadata is not valid JSON for this topic: {0}")]
    BadMetadata(String),
    #[error("payload is {actual} bytes but the metadata describes {expected}")]
    PayloadSize { expected: usize, actual: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("schema header {found:?} does not match the expected {expected:?}")]
    SchemaMismatch { expected: String, found: String },
}

/// Encodes metadata and payload into one envelope:
/// `MMAP` | version u16 BE | metadata length u32 BE | metadata JSON | payload.
pub fn encode_envelope<M: Serialize>(meta: &M, payload: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(meta).expect("contract types always serialise");
    let mut out = Vec::with_capacity(ENVELOPE_PREFIX_LEN + json.len() + payload.len());
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    out
}

/// Splits an envelope into its parsed metadata and its payload.
pub fn decode_envelope<'a, M: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(M, &'a [u8]), ContractError> {
    if bytes.len() < ENVELOPE_PREFIX_LEN {
        return Err(ContractError::Truncated(bytes.len()));
    }
    if &bytes[..4] != ENVELOPE_MAGIC {
        return Err(ContractError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != SCHEMA_VERSION {
        return Err(ContractError::UnsupportedVersion { found: version });
    }
    let len = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    let rest = &bytes[ENVELOPE_PREFIX_LEN..];
    if len > rest.len() {
        return Err(ContractError::MetadataOverrun {
            declared: len,
            available: rest.len(),
        });
    }
    let meta = serde_json::from_slice(&rest[..len])
        .map_err(|e| ContractError::BadMetadata(e.to_string()))?;
    Ok((meta, &rest[len..]))
}

/// Checks that a stream id is safe as a Kafka key, a Redis key part and a path
/// component: 1 to 128 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_stream_id(id: &str) -> Result<(), ContractError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ContractError::Invalid(format!(
            "stream id {id:?} must be 1 to 128 characters of letters, digits, '.', '_' or '-'"
        )))
    }
}

/// Layout of the pixels in a frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Planar YUV 4:2:0: a full-size Y (luma) plane, then U and V at half
    /// width and height. The Y plane alone is the grayscale image.
    I420,
    /// One byte of luma per pixel.
    Gray8,
    /// A baseline JPEG (YCbCr) per frame; the chunk lists each one's size.
    Jpeg,
}

impl PixelFormat {
    /// Bytes of one raw `width` x `height` frame, tightly packed (no row
    /// padding); None for a compressed format, whose sizes the chunk lists.
    pub fn frame_bytes(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::I420 => Some(w * h + 2 * (w.div_ceil(2) * h.div_ceil(2))),
            PixelFormat::Gray8 => Some(w * h),
            PixelFormat::Jpeg => None,
        }
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
    /// Frames per second of the stream (always [`FPS`]).
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

/// One frame's place in a chunk payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameInfo {
    /// Running frame number within the stream, from 0, one per 1/25 s.
    pub index: u64,
    /// Presentation timestamp relative to the stream's first frame, in ns.
    pub pts_ns: u64,
    /// Wall-clock time ingest received the frame, microseconds since the epoch;
    /// the start point of end-to-end latency measurements.
    pub ingest_us: i64,
}

/// A few consecutive frames of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameChunk {
    pub stream_id: String,
    /// Chunk number within the stream, from 0 and without gaps.
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// The frames, in order; the payload holds their pixels back to back,
    /// each `format.frame_bytes(width, height)` long (raw formats) or
    /// `sizes[i]` long (jpeg).
    pub frames: Vec<FrameInfo>,
    /// Each frame's bytes in the payload, for a compressed format (jpeg);
    /// empty for raw formats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<u32>,
    /// True on the first chunk after the source reconnected: frames between
    /// the previous chunk and this one were not captured.
    #[serde(default)]
    pub discontinuity: bool,
}

impl FrameChunk {
    /// Where each frame lies in the payload (once [`validate`](Self::validate)d).
    pub fn frame_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut at = 0;
        (0..self.frames.len())
            .map(|i| {
                let n = match self.format.frame_bytes(self.width, self.height) {
                    Some(n) => n,
                    None => self.sizes.get(i).copied().unwrap_or(0) as usize,
                };
                at += n;
                at - n..at
            })
            .collect()
    }

    /// Checks the metadata against the payload it came with.
    pub fn validate(&self, payload: &[u8]) -> Result<(), ContractError> {
        validate_stream_id(&self.stream_id)?;
        if self.frames.is_empty() {
            return Err(ContractError::Invalid("chunk holds no frames".into()));
        }
        if self.width == 0 || self.height == 0 {
            return Err(ContractError::Invalid(format!(
                "frame size {}x{} is empty",
                self.width, self.height
            )));
        }
        if self.frames.windows(2).any(|w| w[1].index <= w[0].index) {
            return Err(ContractError::Invalid(
                "frame indexes in a chunk must increase".into(),
            ));
        }
        match self.format.frame_bytes(self.width, self.height) {
            Some(_) if !self.sizes.is_empty() => {
                return Err(ContractError::Invalid(format!(
                    "{:?} frames are all one size: `sizes` is only for jpeg",
                    self.format
                )));
            }
            None if self.sizes.len() != self.frames.len() || self.sizes.contains(&0) => {
                return Err(ContractError::Invalid(format!(
                    "a jpeg chunk of {} frames needs {} non-zero `sizes`, has {:?}",
                    self.frames.len(),
                    self.frames.len(),
                    self.sizes
                )));
            }
            _ => {}
        }
        let expected = self.frame_ranges().last().map_or(0, |r| r.end);
        if payload.len() != expected {
            return Err(ContractError::PayloadSize {
                expected,
                actual: payload.len(),
            });
        }
        Ok(())
    }
}

/// Events on the `frames` topic (an envelope; chunks carry pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FrameEvent {
    Start(StreamStart),
    Chunk(FrameChunk),
    End(StreamEnd),
}

impl FrameEvent {
    pub fn stream_id(&self) -> &str {
        match self {
            FrameEvent::Start(s) => &s.stream_id,
            FrameEvent::Chunk(c) => &c.stream_id,
            FrameEvent::End(e) => &e.stream_id,
        }
    }

    /// Value of the [`headers::EVENT`] header.
    pub fn name(&self) -> &'static str {
        match self {
            FrameEvent::Start(_) => "start",
            FrameEvent::Chunk(_) => "chunk",
            FrameEvent::End(_) => "end",
        }
    }

    /// Parses and checks a `frames` message value.
    pub fn decode(bytes: &[u8]) -> Result<(FrameEvent, &[u8]), ContractError> {
        let (event, payload): (FrameEvent, &[u8]) = decode_envelope(bytes)?;
        match &event {
            FrameEvent::Chunk(c) => c.validate(payload)?,
            other => {
                validate_stream_id(other.stream_id())?;
                if !payload.is_empty() {
                    return Err(ContractError::PayloadSize {
                        expected: 0,
                        actual: payload.len(),
                    });
                }
            }
        }
        Ok((event, payload))
    }
}

/// Per-frame crop quality, published with each mouth crop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CropQuality {
    /// Score of the face detection behind this crop's box (0 when none).
    pub face_score: f32,
    /// False when no face was found and an earlier box was held (or none
    /// was ever found and a default box was used).
    pub face_found: bool,
    /// True when the face detector ran on this frame; false on tracked frames.
    pub detected: bool,
    /// Mouth box width in source pixels.
    pub box_width: f32,
    /// Mean luma of the crop, 0..255.
    pub brightness: f32,
    /// Variance of the Laplacian of the crop (higher is sharper).
    pub sharpness: f32,
}

/// A stream's crop quality so far (carried by the `mouths` end event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamQuality {
    pub frames: u64,
    /// Share of frames with a face, 0..1.
    pub face_share: f32,
    pub mean_brightness: f32,
    pub mean_sharpness: f32,
    pub mean_box_width: f32,
    /// True when the face has been missing longer than the allowed gap
    /// (or was never found).
    pub no_face: bool,
}

/// A few consecutive mouth crops of one stream (topic `mouths`).
/// Payload: `frames.len()` crops of `width` x `height` Gray8, back to back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MouthChunk {
    pub stream_id: String,
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub frames: Vec<FrameInfo>,
    pub quality: Vec<CropQuality>,
    /// The stream currently has no face (see [`StreamQuality::no_face`]).
    #[serde(default)]
    pub no_face: bool,
    #[serde(default)]
    pub discontinuity: bool,
}

impl MouthChunk {
    /// Checks the metadata against the payload it came with.
    pub fn validate(&self, payload: &[u8]) -> Result<(), ContractError> {
        validate_stream_id(&self.stream_id)?;
        if self.frames.is_empty() || self.frames.len() != self.quality.len() {
            return Err(ContractError::Invalid(format!(
                "chunk has {} frames and {} quality records",
                self.frames.len(),
                self.quality.len()
            )));
        }
        let expected = (self.width * self.height) as usize * self.frames.len();
        if payload.len() != expected {
            return Err(ContractError::PayloadSize {
                expected,
                actual: payload.len(),
            });
        }
        Ok(())
    }
}

/// The end of a stream on `mouths`: the stream's end plus its crop quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MouthEnd {
    #[serde(flatten)]
    pub end: StreamEnd,
    pub quality: StreamQuality,
}

/// Events on the `mouths` topic (an envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MouthEvent {
    Start(StreamStart),
    Chunk(MouthChunk),
    End(MouthEnd),
}

impl MouthEvent {
    pub fn stream_id(&self) -> &str {
        match self {
            MouthEvent::Start(s) => &s.stream_id,
            MouthEvent::Chunk(c) => &c.stream_id,
            MouthEvent::End(e) => &e.end.stream_id,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            MouthEvent::Start(_) => "start",
            MouthEvent::Chunk(_) => "chunk",
            MouthEvent::End(_) => "end",
        }
    }

    /// Parses and checks a `mouths` message value.
    pub fn decode(bytes: &[u8]) -> Result<(MouthEvent, &[u8]), ContractError> {
        let (event, payload): (MouthEvent, &[u8]) = decode_envelope(bytes)?;
        match &event {
            MouthEvent::Chunk(c) => c.validate(payload)?,
            other => validate_stream_id(other.stream_id())?,
        }
        Ok((event, payload))
    }
}

/// One window's per-frame CTC probabilities (topic `logits`).
/// Payload: `frames` x `classes` little-endian f32, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitsWindow {
    pub stream_id: String,
    /// Index of the window's first frame in the stream.
    pub first_frame: u64,
    /// Frames in the window (the model's window length, usually 75).
    pub frames: u32,
    /// Frames of the window that are real (fewer than `frames` only when the
    /// whole stream is shorter than a window; the rest is padding).
    pub valid_frames: u32,
    pub classes: u32,
    /// The classes in index order (from the model's metadata), so the
    /// decoder needs nothing but the message.
    pub vocabulary: Vec<String>,
    /// Index of the CTC blank class.
    pub blank: u32,
    pub model_name: String,
    pub model_version: String,
    /// Ingest wall-clock time of the newest frame in the window (µs since epoch).
    pub newest_ingest_us: i64,
}

impl LogitsWindow {
    /// Checks the metadata against the payload it came with.
    pub fn validate(&self, payload: &[u8]) -> Result<(), ContractError> {
        validate_stream_id(&self.stream_id)?;
        if self.vocabulary.len() != self.classes as usize || self.blank >= self.classes {
            return Err(ContractError::Invalid(format!(
                "{} classes, a vocabulary of {} and blank {}",
                self.classes,
                self.vocabulary.len(),
                self.blank
            )));
        }
        if self.frames == 0
            || self.classes < 2
            || self.valid_frames == 0
            || self.valid_frames > self.frames
        {
            return Err(ContractError::Invalid(format!(
                "window of {} frames ({} valid) and {} classes is not usable",
                self.frames, self.valid_frames, self.classes
            )));
        }
        let expected = (self.frames * self.classes) as usize * 4;
        if payload.len() != expected {
            return Err(ContractError::PayloadSize {
                expected,
                actual: payload.len(),
            });
        }
        Ok(())
    }
}

/// Events on the `logits` topic (an envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogitsEvent {
    Start(StreamStart),
    Window(LogitsWindow),
    End(StreamEnd),
}

impl LogitsEvent {
    pub fn stream_id(&self) -> &str {
        match self {
            LogitsEvent::Start(s) => &s.stream_id,
            LogitsEvent::Window(w) => &w.stream_id,
            LogitsEvent::End(e) => &e.stream_id,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            LogitsEvent::Start(_) => "start",
            LogitsEvent::Window(_) => "window",
            LogitsEvent::End(_) => "end",
        }
    }

    /// Parses and checks a `logits` message value.
    pub fn decode(bytes: &[u8]) -> Result<(LogitsEvent, &[u8]), ContractError> {
        let (event, payload): (LogitsEvent, &[u8]) = decode_envelope(bytes)?;
        match &event {
            LogitsEvent::Window(w) => w.validate(payload)?,
            other => validate_stream_id(other.stream_id())?,
        }
        Ok((event, payload))
    }
}

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
    pub model_version: String,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(frames: usize) -> FrameChunk {
        FrameChunk {
            stream_id: "s-1".into(),
            seq: 3,
            width: 4,
            height: 2,
            format: PixelFormat::I420,
            frames: (0..frames as u64)
                .map(|i| FrameInfo {
                    index: 10 + i,
                    pts_ns: (10 + i) * FRAME_DURATION_NS,
                    ingest_us: 1,
                })
                .collect(),
            sizes: Vec::new(),
            discontinuity: false,
        }
    }

    #[test]
    fn envelope_round_trips() {
        let c = chunk(2);
        let payload = vec![7u8; c.frame_ranges()[1].end];
        let bytes = encode_envelope(&FrameEvent::Chunk(c.clone()), &payload);
        let (event, body) = FrameEvent::decode(&bytes).unwrap();
        assert_eq!(event, FrameEvent::Chunk(c));
        assert_eq!(body, &payload[..]);
    }

    #[test]
    fn i420_size_counts_half_size_chroma_rounded_up() {
        assert_eq!(PixelFormat::I420.frame_bytes(360, 288), Some(155_520));
        assert_eq!(PixelFormat::I420.frame_bytes(3, 3), Some(9 + 2 * 4));
        assert_eq!(PixelFormat::Gray8.frame_bytes(140, 46), Some(6_440));
        assert_eq!(PixelFormat::Jpeg.frame_bytes(360, 288), None);
    }

    #[test]
    fn jpeg_chunks_list_each_frames_size() {
        let mut c = chunk(3);
        c.format = PixelFormat::Jpeg;
        c.sizes = vec![5, 7, 2];
        c.validate(&[0; 14]).unwrap();
        assert_eq!(c.frame_ranges(), vec![0..5, 5..12, 12..14]);
        assert_eq!(
            c.validate(&[0; 13]).unwrap_err(),
            ContractError::PayloadSize {
                expected: 14,
                actual: 13
            }
        );
        c.sizes = vec![5, 7];
        assert!(matches!(
            c.validate(&[0; 12]),
            Err(ContractError::Invalid(_))
        ));
        c.sizes = vec![5, 0, 9];
        assert!(matches!(
            c.validate(&[0; 14]),
            Err(ContractError::Invalid(_))
        ));
        // A raw chunk has no sizes.
        let mut raw = chunk(1);
        raw.sizes = vec![24];
        assert!(matches!(
            raw.validate(&[0; 24]),
            Err(ContractError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_what_is_not_an_envelope() {
        assert_eq!(
            FrameEvent::decode(b"hello").unwrap_err(),
            ContractError::Truncated(5)
        );
        assert_eq!(
            FrameEvent::decode(b"{\"event\":\"start\"}").unwrap_err(),
            ContractError::BadMagic
        );
        let mut bytes = encode_envelope(&FrameEvent::Chunk(chunk(1)), &[0; 17]);
        bytes[5] = 9;
        assert!(matches!(
            FrameEvent::decode(&bytes).unwrap_err(),
            ContractError::UnsupportedVersion { found: 9 }
        ));
        let mut bytes = encode_envelope(&FrameEvent::Chunk(chunk(1)), &[]);
        bytes[9] = 255;
        assert!(matches!(
            FrameEvent::decode(&bytes).unwrap_err(),
            ContractError::MetadataOverrun { .. }
        ));
    }

    #[test]
    fn rejects_payload_that_disagrees_with_metadata() {
        let c = chunk(2);
        let one = c.frame_ranges()[0].len();
        let bytes = encode_envelope(&FrameEvent::Chunk(c.clone()), &vec![0; one]);
        assert_eq!(
            FrameEvent::decode(&bytes).unwrap_err(),
            ContractError::PayloadSize {
                expected: one * 2,
                actual: one
            }
        );
    }

    #[test]
    fn rejects_unknown_event_and_bad_ids() {
        let bytes = encode_envelope(&serde_json::json!({"event": "nope"}), &[]);
        assert!(matches!(
            FrameEvent::decode(&bytes).unwrap_err(),
            ContractError::BadMetadata(_)
        ));
        assert!(validate_stream_id("cam-01_a.b").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(validate_stream_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events_serialise_with_a_type_tag() {
        let end = FrameEvent::End(StreamEnd {
            stream_id: "s".into(),
            reason: EndReason::Error,
            error: Some("boom".into()),
            frames: 0,
            chunks: 0,
            ended_at_ms: 5,
        });
        let json = serde_json::to_value(&end).unwrap();
        assert_eq!(json["event"], "end");
        assert_eq!(json["reason"], "error");
        assert_eq!(TopicKind::Frames.schema_header(), "frames/v1");
    }
}

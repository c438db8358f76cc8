//! MouthMap's versioned message contracts (see `docs/contracts.md`): pure
//! data and its codec, no I/O, no transport.
//!
//! Every message on a MouthMap topic is keyed by its stream id, so all of a
//! stream's messages land on one partition and keep their order. Each topic
//! has one event type, and every event type implements [`Event`]: its topic,
//! its stream id, its name (the `mm-event` header) and the checks of its
//! payload. [`decode`] is the one way in, for every consuming stage: the
//! schema header, the key, the envelope, the stream id and the payload are
//! checked there and nowhere else. [`Event::encode`] is the one way out.
//!
//! Layout, one file per topic:
//!
//! * [`envelope`]: the binary envelope of `frames`, `mouths` and `logits`
//!   (a small JSON metadata document followed by the raw payload).
//! * [`event`]: the [`Event`] trait and [`decode`].
//! * [`stream`]: what every topic shares: stream ids, [`StreamStart`],
//!   [`StreamEnd`].
//! * [`frames`], [`mouths`], [`logits`], [`transcripts`]: each topic's events.
//! * [`error`]: [`ContractError`], what a message that breaks the contract
//!   broke.

pub mod clock;
pub mod envelope;
pub mod error;
pub mod event;
pub mod frames;
pub mod logits;
pub mod mouths;
pub mod stream;
pub mod transcripts;

pub use envelope::{ENVELOPE_MAGIC, ENVELOPE_PREFIX_LEN, decode_envelope, encode_envelope};
pub use error::ContractError;
pub use event::{Event, decode};
pub use frames::{FrameChunk, FrameEvent, FrameInfo, PixelFormat};
pub use logits::{LogitsEvent, LogitsWindow};
pub use mouths::{CropQuality, MouthChunk, MouthEnd, MouthEvent, StreamQuality};
pub use stream::{
    EndReason, Gap, MAX_GAPS, SourceKind, StreamEnd, StreamStart, push_gap, validate_stream_id,
};
pub use transcripts::{TimedWord, Transcript, TranscriptKind};

use serde::{Deserialize, Serialize};

/// Version of the contracts in this crate. Bumped on any breaking change;
/// it travels in the [`headers::SCHEMA`] header and in every envelope.
pub const SCHEMA_VERSION: u16 = 1;

/// Hard ceiling for one encoded message; stages size their chunks well below it.
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Frames per second of every stream after ingest.
pub const FPS: u32 = 25;

/// Nanoseconds between two frames at [`FPS`].
pub const FRAME_DURATION_NS: u64 = 1_000_000_000 / FPS as u64;

/// Upper bounds on the size fields of a message, checked before any of them
/// is multiplied or used to allocate: a message is at most
/// [`MAX_MESSAGE_BYTES`], so no honest field comes near these.
pub mod limits {
    /// Width or height of a frame or a crop, in pixels (8K is 7680).
    pub const MAX_SIDE: u32 = 8192;
    /// Frames in one chunk or one window.
    pub const MAX_FRAMES: u32 = 4096;
    /// Classes of a model's output.
    pub const MAX_CLASSES: u32 = 4096;
}

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

/// `a * b * c` as a byte count, or an error naming `what` when it overflows.
pub(crate) fn bytes_of(what: &str, factors: &[u64]) -> Result<usize, ContractError> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ContractError::Oversized {
            what: what.to_string(),
        })
}

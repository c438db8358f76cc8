//! The feature store: online features per stream and speaker, on Redis,
//! modelled on what Feast does well.
//!
//! Layout:
//! - [`registry`]: the declarations (`features.toml`): entities, feature
//!   views with typed fields, a TTL and the stage that writes them. Every
//!   write and read is checked against them.
//! - [`value`]: typed values, as stored in Redis and shown in JSON.
//! - [`online`]: the Redis online store: one hash per view and entity key,
//!   expiring with the view's TTL; pipelined reads (one round trip per
//!   lookup); a lazy connection that survives Redis going away.
//! - [`cache`]: a bounded-age read cache for readers on the hot path.
//! - [`enrich`]: a stream's and its speaker's features within a deadline,
//!   and the decoding they ask for (what the decoder puts in transcripts).
//! - [`writer`]: a non-blocking, coalescing writer for stages that write as
//!   they go (the preprocessor's stream quality).
//! - [`aggregate`]: the speaker and stream aggregates as pure functions of
//!   transcripts, so a replay of the topic (the offline source) rebuilds them.
//! - [`service`]: `mouthmap features serve`, the Kafka edge keeping the
//!   aggregates from the `transcripts` topic.

pub mod aggregate;
pub mod cache;
pub mod enrich;
pub mod online;
pub mod registry;
#[cfg(feature = "service")]
pub mod service;
pub mod value;
pub mod writer;

use std::time::Duration;

pub use online::{OnlineStore, Row, StoreSettings};
pub use registry::Registry;
pub use value::{FieldType, Value};

/// What went wrong with a feature read or write.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("feature declarations: {0}")]
    Declarations(String),
    #[error("unknown entity {entity:?}; declared entities: {known}")]
    UnknownEntity { entity: String, known: String },
    #[error("unknown feature view {view:?}; declared views: {known}")]
    UnknownView { view: String, known: String },
    #[error("{view} has no field {field:?}; declared fields: {known}")]
    UnknownField {
        view: String,
        field: String,
        known: String,
    },
    #[error("{view}.{field} is declared {expected}, not {found}")]
    WrongType {
        view: String,
        field: String,
        expected: FieldType,
        found: FieldType,
    },
    #[error(
        "stored {key} field {field:?} = {text:?} is not a {expected}; rewrite it with `mouthmap features set`"
    )]
    BadStored {
        key: String,
        field: String,
        expected: FieldType,
        text: String,
    },
    #[error("entity key {0:?} is not usable: 1 to 256 characters, no control characters or `*`")]
    BadKey(String),
    /// Redis is down or did not answer: passing, retry later.
    #[error(
        "feature store unavailable: {0} (is Redis up there? set --redis-url or MOUTHMAP_REDIS_URL)"
    )]
    Unavailable(String),
    /// The lookup took longer than the reader may wait.
    #[error("feature lookup took longer than its {0:?} deadline")]
    Deadline(Duration),
}

impl FeatureError {
    /// True for failures that pass (Redis down, slow): retry, do not give up.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Deadline(_))
    }

    /// True when the input is at fault (a key or a value that the
    /// declarations refuse), not the store: skip that input, go on.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::BadKey(_)
                | Self::WrongType { .. }
                | Self::UnknownField { .. }
                | Self::BadStored { .. }
        )
    }
}

//! What a message that breaks the contract broke.

use crate::SCHEMA_VERSION;

/// Why a message does not follow the contract. A consuming stage sends such
/// a message to the dead-letter topic with this text as the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
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
    #[error("schema header {found:?} does not match the expected {expected:?}")]
    SchemaMismatch { expected: String, found: String },
    #[error("message key {key:?} differs from its stream id {stream_id:?}")]
    KeyMismatch { key: String, stream_id: String },
    #[error(
        "stream id {0:?} must be 1 to 128 characters of letters, digits, '.', '_' or '-', and not only dots"
    )]
    BadStreamId(String),
    #[error("{field} is {value}, over the limit of {max}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("the {what} described by the metadata does not fit in memory")]
    Oversized { what: String },
    #[error(
        "the message is {size} bytes, over the {limit}-byte limit of every topic: no producer of this pipeline writes one"
    )]
    MessageTooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
}

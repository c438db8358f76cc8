//! Typed errors of a consuming stage: what went wrong ([`ErrorKind`], the
//! `kind` label of `mouthmap_errors_total`) and what the consume loop does
//! about it ([`Policy`]), carried together by [`HandleError`].

use mouthmap_contracts::ContractError;

/// What went wrong: the `kind` label of `mouthmap_errors_total`. One
/// variant per cause, so a dashboard or an alert can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A message that breaks the contract (envelope, schema header, key,
    /// sizes): dead-lettered.
    Contract,
    /// A message that follows the contract but cannot be used (a JPEG that
    /// does not decode, frames too small, a vocabulary changed mid-stream).
    Content,
    /// The face detector failed.
    Detector,
    /// The lip-reading model failed.
    Model,
    /// A grammar that the model's vocabulary cannot spell.
    Grammar,
    /// A feature-store write was dropped.
    FeatureWrite,
    /// A feature-store lookup failed or missed its deadline.
    FeatureLookup,
    /// A video source failed (ingest).
    Source,
    /// Reading from Kafka failed.
    Consume,
    /// Producing to Kafka failed.
    Produce,
    /// A dependency (Redis, the broker) did not answer; retried.
    Unavailable,
    /// The handler panicked on the message (a bug): dead-lettered, so one
    /// message cannot stop the stage for good.
    Panic,
}

impl ErrorKind {
    /// Every kind, in the order of the declaration.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Contract,
        ErrorKind::Content,
        ErrorKind::Detector,
        ErrorKind::Model,
        ErrorKind::Grammar,
        ErrorKind::FeatureWrite,
        ErrorKind::FeatureLookup,
        ErrorKind::Source,
        ErrorKind::Consume,
        ErrorKind::Produce,
        ErrorKind::Unavailable,
        ErrorKind::Panic,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Contract => "contract",
            ErrorKind::Content => "content",
            ErrorKind::Detector => "detector",
            ErrorKind::Model => "model",
            ErrorKind::Grammar => "grammar",
            ErrorKind::FeatureWrite => "feature_write",
            ErrorKind::FeatureLookup => "feature_lookup",
            ErrorKind::Source => "source",
            ErrorKind::Consume => "consume",
            ErrorKind::Produce => "produce",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Panic => "panic",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the consume loop does with a message whose handling failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The message itself is bad: it goes to the dead-letter topic with the
    /// error as its reason, and the loop moves on.
    DeadLetter,
    /// A passing failure (a dependency down): the same message is handled
    /// again after a backoff; its offset is not stored.
    Retry,
    /// The stage cannot go on at all (its model broke): the loop stops, and
    /// the offset is not stored, so a restarted stage handles it again.
    Stop,
}

/// Why one message could not be handled, and what to do about it: the
/// source error as itself, its [`ErrorKind`] and its [`Policy`].
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct HandleError {
    kind: ErrorKind,
    policy: Policy,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl HandleError {
    pub fn new(
        kind: ErrorKind,
        policy: Policy,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            kind,
            policy,
            source: source.into(),
        }
    }

    /// The message is bad: dead-letter it.
    pub fn dead_letter(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::new(kind, Policy::DeadLetter, source)
    }

    /// A passing failure: handle the message again later.
    pub fn retry(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::new(kind, Policy::Retry, source)
    }

    /// The stage cannot go on.
    pub fn fatal(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::new(kind, Policy::Stop, source)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The source error, to downcast.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }
}

impl From<ContractError> for HandleError {
    fn from(e: ContractError) -> Self {
        Self::dead_letter(ErrorKind::Contract, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contract_error_is_carried_as_itself_and_dead_lettered() {
        let e: HandleError = ContractError::BadMagic.into();
        assert_eq!(e.kind(), ErrorKind::Contract);
        assert_eq!(e.policy(), Policy::DeadLetter);
        assert_eq!(
            e.source_error().downcast_ref::<ContractError>(),
            Some(&ContractError::BadMagic)
        );
        assert_eq!(e.to_string(), ContractError::BadMagic.to_string());
    }

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), ErrorKind::ALL.len());
    }
}

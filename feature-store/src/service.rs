//! The Kafka edge of `mouthmap features serve`: `transcripts` in, the
//! `stream_activity` and `speaker_activity` views out to Redis.
//!
//! Redis down is a passing failure (retried): the message is handled again
//! after a backoff and its offset is not stored, so no transcript is
//! skipped. A message that is not a transcript, or whose stream or speaker
//! id cannot be a feature key, goes to the dead-letter topic; the service
//! goes on. [`rebuild`] recomputes the views from the start of the topic.

use std::collections::BTreeMap;

use std::time::Duration;

use mouthmap_bus::kafka::{Handler, Incoming, KafkaSettings, ReplayError, replay};
use mouthmap_bus::{ErrorKind, HandleError, InMessage, OutMessage};
use mouthmap_contracts::{ContractError, Transcript, TranscriptKind};

use crate::FeatureError;
use crate::aggregate::{self, Contribution, TranscriptFacts};
use crate::online::OnlineStore;

pub const STREAM_ACTIVITY: &str = "stream_activity";
pub const SPEAKER_ACTIVITY: &str = "speaker_activity";

/// The facts the aggregates need from one transcript. The speaker is the
/// one the decoder put in the transcript's features (so a replay sees the
/// speaker the live run saw); `timestamp_ms` is the message's.
pub fn facts(t: &Transcript, timestamp_ms: Option<i64>) -> TranscriptFacts {
    let speaker_id = t
        .features
        .as_ref()
        .and_then(|f| f.get("stream_settings"))
        .and_then(|s| s.get("speaker_id"))
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let spoken_ms = match (t.words.first(), t.words.last()) {
        (Some(a), Some(b)) => b.end_ms.saturating_sub(a.start_ms),
        _ => 0,
    };
    TranscriptFacts {
        stream_id: t.stream_id.clone(),
        speaker_id,
        is_final: t.kind == TranscriptKind::Final,
        words: t.words.len() as u64,
        confidence: t.confidence as f64,
        spoken_ms,
        timestamp_ms: timestamp_ms.unwrap_or(0),
    }
}

/// Applies one transcript to the aggregates in the store.
pub async fn apply(store: &OnlineStore, f: &TranscriptFacts) -> Result<(), FeatureError> {
    store
        .write(
            STREAM_ACTIVITY,
            &f.stream_id,
            &aggregate::stream_activity(f),
        )
        .await?;
    if let (true, Some(speaker)) = (f.is_final, &f.speaker_id) {
        let part = serde_json::to_string(&Contribution::from(f)).expect("contributions serialise");
        let all = store
            .contribute(SPEAKER_ACTIVITY, speaker, &f.stream_id, &part)
            .await?;
        let parts: BTreeMap<String, Contribution> = all
            .into_iter()
            .filter_map(|(stream, json)| serde_json::from_str(&json).ok().map(|c| (stream, c)))
            .collect();
        store
            .write(
                SPEAKER_ACTIVITY,
                speaker,
                &aggregate::speaker_activity(parts.values()),
            )
            .await?;
    }
    Ok(())
}

/// [`Handler`] for the consume loop.
pub struct FeaturesHandler {
    pub store: OnlineStore,
}

impl From<FeatureError> for HandleError {
    fn from(e: FeatureError) -> Self {
        if e.is_transient() {
            HandleError::retry(ErrorKind::Unavailable, e)
        } else if e.is_bad_input() {
            HandleError::dead_letter(ErrorKind::Content, e)
        } else {
            HandleError::fatal(ErrorKind::FeatureWrite, e)
        }
    }
}

impl Handler for FeaturesHandler {
    type Input = Transcript;

    async fn handle(
        &mut self,
        input: Incoming<'_, Transcript>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        let t = input.event;
        let span =
            tracing::info_span!("features.transcript", stream_id = %t.stream_id, kind = ?t.kind);
        mouthmap_bus::telemetry::continue_trace(&span, &input.msg.headers);
        apply(&self.store, &facts(t, input.msg.timestamp_ms)).await?;
        Ok(Vec::new())
    }
}

/// What a [`rebuild`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Keys of the aggregate views cleared first.
    pub cleared: u64,
    /// Transcripts applied.
    pub applied: u64,
    /// Messages that were not transcripts, or whose ids cannot be keys.
    pub skipped: u64,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Store(#[from] FeatureError),
    #[error("reading the topic: {0}")]
    Topic(#[from] ReplayError<FeatureError>),
}

/// Clears the aggregate views, then applies every transcript on `topic`
/// from its beginning to the end it had when the rebuild started (the
/// offline source of the views: a replay gives what the live run gave).
pub async fn rebuild(
    store: &OnlineStore,
    kafka: &KafkaSettings,
    topic: &str,
    idle: Duration,
) -> Result<Rebuilt, RebuildError> {
    let mut done = Rebuilt::default();
    for view in [STREAM_ACTIVITY, SPEAKER_ACTIVITY] {
        done.cleared += store.clear_view(view).await?;
    }
    let (mut applied, mut skipped) = (0u64, 0u64);
    replay(kafka, topic, idle, async |msg: InMessage| {
        let t = match msg.decode::<Transcript>() {
            Ok((t, _)) => t,
            Err(e) => {
                skipped += 1;
                log_skip(&msg, &e);
                return Ok(());
            }
        };
        match apply(store, &facts(&t, msg.timestamp_ms)).await {
            Ok(()) => applied += 1,
            Err(e) if e.is_bad_input() => {
                skipped += 1;
                tracing::warn!(partition = msg.partition, offset = msg.offset, error = %e, "skipped");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    })
    .await?;
    done.applied = applied;
    done.skipped = skipped;
    Ok(done)
}

fn log_skip(msg: &InMessage, e: &ContractError) {
    tracing::warn!(partition = msg.partition, offset = msg.offset, error = %e, "skipped: not a transcript");
}

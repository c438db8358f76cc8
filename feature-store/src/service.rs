//! The Kafka edge of `mouthmap features serve`: `transcripts` in, the
//! `stream_activity` and `speaker_activity` views out to Redis.
//!
//! Redis down is a passing failure ([`HandleError::Retryable`]): the message
//! is handled again after a backoff and its offset is not stored, so no
//! transcript is skipped. A message that is not a transcript goes to the
//! dead-letter topic.

use std::collections::BTreeMap;

use mouthmap_bus::contract::{Transcript, TranscriptKind};
use mouthmap_bus::kafka::{HandleError, Handler, InMessage, OutMessage};

use crate::FeatureError;
use crate::aggregate::{self, Contribution, TranscriptFacts};
use crate::online::OnlineStore;

pub const STREAM_ACTIVITY: &str = "stream_activity";
pub const SPEAKER_ACTIVITY: &str = "speaker_activity";

/// The facts the aggregates need from one `transcripts` message. The
/// speaker is the one the decoder put in the transcript's features (so a
/// replay sees the speaker the live run saw).
pub fn facts(msg: &InMessage) -> Result<(Transcript, TranscriptFacts), String> {
    let t: Transcript = serde_json::from_slice(&msg.payload)
        .map_err(|e| format!("not a transcript JSON message: {e}"))?;
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
    let f = TranscriptFacts {
        stream_id: t.stream_id.clone(),
        speaker_id,
        is_final: t.kind == TranscriptKind::Final,
        words: t.words.len() as u64,
        confidence: t.confidence as f64,
        spoken_ms,
        timestamp_ms: msg.timestamp_ms.unwrap_or(0),
    };
    Ok((t, f))
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

impl Handler for FeaturesHandler {
    async fn handle(&mut self, msg: &InMessage) -> Result<Vec<OutMessage>, HandleError> {
        let (t, f) = facts(msg).map_err(HandleError::Malformed)?;
        let span =
            tracing::info_span!("features.transcript", stream_id = %t.stream_id, kind = ?t.kind);
        mouthmap_bus::telemetry::continue_trace(&span, &msg.headers);
        match apply(&self.store, &f).await {
            Ok(()) => Ok(Vec::new()),
            Err(e) if e.is_transient() => Err(HandleError::Retryable(e.to_string())),
            Err(e) => Err(HandleError::Fatal(e.to_string())),
        }
    }
}

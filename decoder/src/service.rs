//! The Kafka edge of the decode service: `logits` in, `transcripts` out (JSON).
//!
//! With a feature store, every transcript carries the stream's and its
//! speaker's features, and a stream whose features name a grammar or a
//! vocabulary is decoded under it. The lookup has a deadline: past it, or
//! with Redis down, the transcript goes out on time with `enriched: false`
//! and the reason, decoded under the grammar the stream had last.

use std::collections::HashMap;
use std::time::Duration;

use mouthmap_bus::idle::IdleClock;
use mouthmap_bus::kafka::{Handler, Incoming};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::{ErrorKind, HandleError, OutMessage, telemetry};
use mouthmap_contracts::{Event, LogitsEvent, Transcript};
use mouthmap_feature_store::enrich::{Enricher, Enrichment};

use crate::stage::{DecodeError, Decoder};

/// [`Handler`] for the consume loop.
pub struct DecodeHandler {
    pub stage: Decoder,
    pub transcripts_topic: String,
    pub metrics: StageMetrics,
    /// A stream whose partition's event time moved this far past its own
    /// newest (see [`IdleClock`]) is closed with a timed-out final.
    pub idle_timeout: Duration,
    /// Event time per partition and per open stream.
    pub clock: IdleClock,
    /// The feature store, when one is configured.
    pub enricher: Option<Enricher>,
    /// Where each open stream's first message came from: its input is held
    /// back from there until its final is out.
    pub open: HashMap<String, (String, i32, i64)>,
    /// Finals already on the transcripts topic when the service started
    /// (stream id -> the final's timestamp, Unix ms; see
    /// [`published_finals`]): a stream this replica rebuilds after a
    /// restart, whose final went out before the restart stored its offset,
    /// does not get a second one.
    pub published_finals: HashMap<String, i64>,
}

/// Finals among the newest `per_partition` messages of each partition of
/// the transcripts topic: stream id -> the newest final's timestamp (Unix ms).
pub async fn published_finals(
    settings: &mouthmap_bus::kafka::KafkaSettings,
    topic: &str,
    per_partition: i64,
) -> Result<HashMap<String, i64>, mouthmap_bus::kafka::ReplayError<std::convert::Infallible>> {
    let mut finals = HashMap::new();
    mouthmap_bus::kafka::read_tail(
        settings,
        topic,
        per_partition,
        Duration::from_secs(10),
        |m| {
            if m.header(mouthmap_contracts::headers::EVENT) == Some("final")
                && let (Some(key), Some(ts)) = (m.key_str(), m.timestamp_ms)
            {
                let newest = finals.entry(key.to_string()).or_insert(ts);
                *newest = (*newest).max(ts);
            }
        },
    )
    .await?;
    Ok(finals)
}

/// The outcome of one lookup, as transcripts carry it.
type Lookup = Result<Enrichment, String>;

impl From<DecodeError> for HandleError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Contract(c) => c.into(),
            e @ DecodeError::VocabularyChanged { .. } => {
                HandleError::dead_letter(ErrorKind::Content, e)
            }
            // The configured grammar cannot be spelled by this model's
            // vocabulary: this window cannot be decoded, other models' can.
            e @ DecodeError::Grammar(_) => HandleError::dead_letter(ErrorKind::Grammar, e),
        }
    }
}

impl DecodeHandler {
    fn message(&self, t: &Transcript, span: &tracing::Span) -> OutMessage {
        self.metrics.observe_transcript_latency(
            t.name(),
            Duration::from_secs_f64(t.latency_ms.max(0.0) / 1000.0),
        );
        // The version as infer's metrics name it: the repository version,
        // or the metadata's for a model served from a file.
        let version = if t.version == 0 {
            t.model_version.clone()
        } else {
            t.version.to_string()
        };
        self.metrics.model_transcript(&t.model, &version, t.name());
        OutMessage::event(&self.transcripts_topic, t, &[]).headers(telemetry::inject(span))
    }

    /// Looks the stream up (if there is a store) and lets its features pick
    /// its grammar. A failed lookup leaves the grammar as it was.
    async fn lookup(&mut self, stream_id: &str) -> Option<Lookup> {
        let enricher = self.enricher.as_mut()?;
        let started = std::time::Instant::now();
        let found = enricher.lookup(stream_id).await.map_err(|e| e.to_string());
        self.metrics.observe_lookup(started.elapsed());
        match &found {
            Ok(e) => self.stage.choose_grammar(stream_id, e.grammar.as_deref()),
            Err(reason) => {
                self.metrics.error(ErrorKind::FeatureLookup);
                tracing::debug!(stream_id, %reason, "transcript not enriched");
            }
        }
        Some(found)
    }

    fn attach(t: &mut Transcript, lookup: &Option<Lookup>) {
        match lookup {
            None => {
                t.enriched = false;
                t.enrichment_error = Some("no feature store configured (--redis-url)".into());
            }
            Some(Ok(e)) => {
                t.enriched = true;
                t.features = Some(serde_json::Value::Object(e.features.clone()));
            }
            Some(Err(reason)) => {
                t.enriched = false;
                t.enrichment_error = Some(reason.clone());
            }
        }
    }
}

impl Handler for DecodeHandler {
    type Input = LogitsEvent;

    /// An open stream's input is held back from its first message until its
    /// final is out: the posterior a final needs lives in memory, so a
    /// restarted (or newly assigned) replica reads the stream's windows
    /// again and rebuilds it.
    fn oldest_held(&self, topic: &str, partition: i32) -> Option<i64> {
        self.open
            .values()
            .filter(|(t, p, _)| t == topic && *p == partition)
            .map(|(_, _, o)| *o)
            .min()
    }

    async fn handle(
        &mut self,
        input: Incoming<'_, LogitsEvent>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        let event = input.event;
        let span = tracing::info_span!(
            "decode.window",
            stream_id = event.stream_id(),
            event = event.name()
        );
        telemetry::continue_trace(&span, &input.msg.headers);
        let lookup = match event {
            LogitsEvent::Start(_) => None,
            _ => self.lookup(event.stream_id()).await,
        };
        let m = input.msg;
        match event {
            LogitsEvent::End(e) => self.clock.forget(&e.stream_id),
            _ => {
                self.open
                    .entry(event.stream_id().to_string())
                    .or_insert_with(|| (m.topic.clone(), m.partition, m.offset));
                let event_ms = match event {
                    LogitsEvent::Window(w) => w.newest_ingest_us / 1000,
                    LogitsEvent::Start(s) => s.started_at_ms,
                    LogitsEvent::End(_) => unreachable!(),
                };
                self.clock
                    .saw(event.stream_id(), &m.topic, m.partition, event_ms);
            }
        }
        let mut out = tokio::task::block_in_place(|| self.stage.handle(event, input.payload))?;
        if let LogitsEvent::End(end) = event {
            self.open.remove(&end.stream_id);
            // Its final went out after this end was sent: before a restart.
            if self
                .published_finals
                .remove(&end.stream_id)
                .is_some_and(|at| at >= end.ended_at_ms)
            {
                tracing::info!(stream_id = %end.stream_id,
                    "the stream's final is on the topic already (sent before a restart); not sent again");
                out.retain(|t| t.kind != mouthmap_contracts::TranscriptKind::Final);
            }
        }
        for t in &mut out {
            Self::attach(t, &lookup);
        }
        self.metrics.set_active(self.stage.active_streams() as i64);
        Ok(out.iter().map(|t| self.message(t, &span)).collect())
    }

    async fn on_tick(&mut self) -> Result<Vec<OutMessage>, HandleError> {
        let idle = self.clock.idle(self.idle_timeout);
        for id in &idle {
            self.clock.forget(id);
            // A stream that never sent a window has no final to send, and
            // holds its input back no more either.
            self.open.remove(id);
        }
        let mut expired = self.stage.close(&idle);
        let span = tracing::info_span!("decode.expire", streams = expired.len());
        for t in &mut expired {
            self.open.remove(&t.stream_id);
            tracing::warn!(stream_id = %t.stream_id, "no end event within the idle timeout; final sent as timed out");
            let id = t.stream_id.clone();
            let lookup = self.lookup(&id).await;
            self.stage.choose_grammar(&id, None);
            Self::attach(t, &lookup);
        }
        Ok(expired.iter().map(|t| self.message(t, &span)).collect())
    }
}

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
use mouthmap_contracts::{Event, LogitsEvent, Transcript, clock};
use mouthmap_feature_store::enrich::{Enricher, Enrichment};

use crate::stage::{DecodeError, Decoder};

/// Shadow windows (`infer --shadow`: the same frames read by a candidate
/// version that does not speak to users), decoded apart from the streams'
/// own: their transcripts go to `topic`, and each stream's shadow final is
/// compared with its live final (the word error rate of the shadow's text
/// against the live text, per shadow version:
/// `mouthmap_shadow_word_error_rate`).
pub struct Shadow {
    pub stage: Decoder,
    pub topic: String,
    /// Finals of one side waiting for the other's: stream id -> final.
    live: HashMap<String, Transcript>,
    shadow: HashMap<String, Transcript>,
}

impl Shadow {
    pub fn new(stage: Decoder, topic: impl Into<String>) -> Self {
        Self {
            stage,
            topic: topic.into(),
            live: HashMap::new(),
            shadow: HashMap::new(),
        }
    }

    /// Pairs a stream's live and shadow finals; reports each pair once.
    fn pair(&mut self, metrics: &StageMetrics) {
        let ready: Vec<String> = self
            .live
            .keys()
            .filter(|id| self.shadow.contains_key(*id))
            .cloned()
            .collect();
        for id in ready {
            let (Some(live), Some(shadow)) = (self.live.remove(&id), self.shadow.remove(&id))
            else {
                continue;
            };
            let wer = word_error_rate(&shadow.text, &live.text);
            let version = if shadow.version == 0 {
                shadow.model_version.clone()
            } else {
                shadow.version.to_string()
            };
            tracing::info!(stream_id = %id, shadow = %shadow.text, live = %live.text, wer, model = %shadow.model, %version, "shadow final compared with the live final");
            metrics.observe_shadow(&shadow.model, &version, wer);
        }
        // A side whose other never comes (no shadow for that stream) is not kept for ever.
        if self.live.len() > 10_000 {
            self.live.clear();
        }
        if self.shadow.len() > 10_000 {
            self.shadow.clear();
        }
    }
}

/// Word error rate of `hypothesis` against `reference` (word edit distance
/// over the reference's length; 0 when both are empty).
pub fn word_error_rate(hypothesis: &str, reference: &str) -> f64 {
    let h: Vec<&str> = hypothesis.split_whitespace().collect();
    let r: Vec<&str> = reference.split_whitespace().collect();
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(rw != hw))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    match (prev[h.len()], r.len()) {
        (0, _) => 0.0,
        (e, 0) => e as f64,
        (e, n) => e as f64 / n as f64,
    }
}

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
    /// Finals already sent: those on the transcripts topic when the
    /// service started ([`published_finals`]) and those it sent since. A
    /// stream this replica rebuilds after a restart, whose final went out
    /// before the restart stored its offset, and an end delivered twice
    /// (at-least-once), get no second final.
    pub published_finals: SentFinals,
    /// Shadow windows' decoding (None: shadow windows are passed over).
    pub shadow: Option<Shadow>,
}

/// How long a sent final is remembered against a redelivered end.
const FINALS_KEPT_MS: i64 = 3_600_000;

/// Streams whose final was sent: stream id -> when (Unix ms).
#[derive(Debug, Default)]
pub struct SentFinals(HashMap<String, i64>);

impl From<HashMap<String, i64>> for SentFinals {
    fn from(m: HashMap<String, i64>) -> Self {
        Self(m)
    }
}

impl SentFinals {
    /// Whether the stream's final went out after the end at `ended_at_ms`
    /// was sent: this end (or a copy of it) was answered already. A stream
    /// id used again later ends later than its old final and is not.
    pub fn answered(&self, stream_id: &str, ended_at_ms: i64) -> bool {
        self.0.get(stream_id).is_some_and(|at| *at >= ended_at_ms)
    }

    /// Notes a final sent at `at_ms`, and forgets finals older than an
    /// hour (redeliveries come within a rebalance, not hours later).
    pub fn sent(&mut self, stream_id: &str, at_ms: i64) {
        self.0.insert(stream_id.to_string(), at_ms);
        if self.0.len().is_multiple_of(1024) {
            self.0.retain(|_, t| at_ms - *t < FINALS_KEPT_MS);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
    /// its grammar. A failed lookup leaves the grammar as it was. A final's
    /// lookup (`fresh`) reads past the cache: the final keeps the features
    /// as they stand at the stream's end.
    async fn lookup(&mut self, stream_id: &str, fresh: bool) -> Option<Lookup> {
        let enricher = self.enricher.as_mut()?;
        let started = std::time::Instant::now();
        let found = if fresh {
            enricher.lookup_fresh(stream_id).await
        } else {
            enricher.lookup(stream_id).await
        };
        let found = found.map_err(|e| e.to_string());
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
        // A shadow window never reaches the stream's own posterior.
        if let LogitsEvent::Window(w) = event
            && w.shadow
        {
            let Some(shadow) = self.shadow.as_mut() else {
                return Ok(Vec::new());
            };
            let out = tokio::task::block_in_place(|| shadow.stage.handle(event, input.payload))?;
            return Ok(out
                .iter()
                .map(|t| OutMessage::event(&shadow.topic, t, &[]).headers(telemetry::inject(&span)))
                .collect());
        }
        let lookup = match event {
            LogitsEvent::Start(_) => None,
            LogitsEvent::End(_) => self.lookup(event.stream_id(), true).await,
            _ => self.lookup(event.stream_id(), false).await,
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
        // The shadow sees the stream's start and end too (its end: only
        // when it read a window of the stream).
        let mut shadow_out = Vec::new();
        if let Some(shadow) = self.shadow.as_mut() {
            let relevant = match event {
                LogitsEvent::Start(_) => true,
                LogitsEvent::End(e) => shadow.stage.is_open(&e.stream_id),
                LogitsEvent::Window(_) => false,
            };
            if relevant {
                let got =
                    tokio::task::block_in_place(|| shadow.stage.handle(event, input.payload))?;
                for t in got {
                    shadow_out.push(
                        OutMessage::event(&shadow.topic, &t, &[]).headers(telemetry::inject(&span)),
                    );
                    if t.kind == mouthmap_contracts::TranscriptKind::Final {
                        shadow.shadow.insert(t.stream_id.clone(), t);
                    }
                }
                if let Some(f) = out
                    .iter()
                    .find(|t| t.kind == mouthmap_contracts::TranscriptKind::Final)
                    .filter(|f| shadow.shadow.contains_key(&f.stream_id))
                {
                    shadow.live.insert(f.stream_id.clone(), f.clone());
                }
                shadow.pair(&self.metrics);
            }
        }
        if let LogitsEvent::End(end) = event {
            self.open.remove(&end.stream_id);
            // Its final went out after this end was sent: before a
            // restart, or this end is a copy delivered again.
            if self
                .published_finals
                .answered(&end.stream_id, end.ended_at_ms)
            {
                tracing::info!(stream_id = %end.stream_id,
                    "the stream's final is on the topic already (sent before a restart, or this end came twice); not sent again");
                out.retain(|t| t.kind != mouthmap_contracts::TranscriptKind::Final);
            }
        }
        for t in &out {
            if t.kind == mouthmap_contracts::TranscriptKind::Final {
                self.published_finals.sent(&t.stream_id, clock::now_ms());
            }
        }
        for t in &mut out {
            Self::attach(t, &lookup);
        }
        self.metrics.set_active(self.stage.active_streams() as i64);
        let mut messages: Vec<OutMessage> = out.iter().map(|t| self.message(t, &span)).collect();
        messages.extend(shadow_out);
        Ok(messages)
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
        if let Some(shadow) = self.shadow.as_mut() {
            // Their shadow finals are not compared: a timed-out stream's
            // text is not the one users saw in full.
            shadow.stage.close(&idle);
        }
        let span = tracing::info_span!("decode.expire", streams = expired.len());
        for t in &mut expired {
            self.open.remove(&t.stream_id);
            tracing::warn!(stream_id = %t.stream_id, "no end event within the idle timeout; final sent as timed out");
            let id = t.stream_id.clone();
            let lookup = self.lookup(&id, true).await;
            self.stage.choose_grammar(&id, None);
            Self::attach(t, &lookup);
            // Its end, should it still come, gets no second final.
            self.published_finals.sent(&id, clock::now_ms());
        }
        Ok(expired.iter().map(|t| self.message(t, &span)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{SentFinals, word_error_rate};

    #[test]
    fn an_end_answered_by_a_final_gets_no_second_one_but_a_later_stream_of_that_id_does() {
        let mut f = SentFinals::from(std::collections::HashMap::from([(
            "before".to_string(),
            500,
        )]));
        // A final on the topic from before a restart answers its end.
        assert!(f.answered("before", 400));
        assert!(!f.answered("other", 400));
        // A final sent here answers the same end delivered again, however often.
        f.sent("s", 1_000);
        assert!(f.answered("s", 990));
        assert!(f.answered("s", 990));
        // The id used again by a stream that ended after that final.
        assert!(!f.answered("s", 1_500));
        // Finals an hour old are forgotten as new ones come.
        for i in 0..2048 {
            f.sent(&format!("n{i}"), 1_000 + 3_600_000 + i);
        }
        assert!(!f.answered("s", 990));
        assert!(f.answered("n2047", 0));
        assert!(f.len() <= 2049);
    }

    #[test]
    fn word_error_rate_counts_edits_over_the_reference() {
        assert_eq!(
            word_error_rate("bin blue at f two now", "bin blue at f two now"),
            0.0
        );
        assert!(
            (word_error_rate("bin blue f two now", "bin blue at f two now") - 1.0 / 6.0).abs()
                < 1e-9
        );
        assert!((word_error_rate("set red", "bin blue at f two now") - 1.0).abs() < 1e-9);
        assert_eq!(word_error_rate("", ""), 0.0);
        assert_eq!(word_error_rate("a b", ""), 2.0);
    }
}

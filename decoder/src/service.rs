//! The Kafka edge of the decode service: `logits` in, `transcripts` out (JSON).

use std::time::Duration;

use mouthmap_bus::contract::{LogitsEvent, TopicKind, Transcript, TranscriptKind, headers};
use mouthmap_bus::kafka::{HandleError, Handler, InMessage, OutMessage};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::telemetry;

use crate::stage::{DecodeError, Decoder};

/// [`Handler`] for the consume loop.
pub struct DecodeHandler {
    pub stage: Decoder,
    pub transcripts_topic: String,
    pub metrics: StageMetrics,
    /// A stream with no message for this long is closed with a timed-out final.
    pub idle_timeout: Duration,
}

impl DecodeHandler {
    fn message(&self, t: &Transcript, span: &tracing::Span) -> OutMessage {
        let event = match t.kind {
            TranscriptKind::Partial => "partial",
            TranscriptKind::Final => "final",
        };
        OutMessage::new(
            &self.transcripts_topic,
            &t.stream_id,
            serde_json::to_vec(t).expect("transcripts serialise"),
        )
        .header(headers::SCHEMA, TopicKind::Transcripts.schema_header())
        .header(headers::EVENT, event)
        .headers(telemetry::inject(span))
    }
}

impl Handler for DecodeHandler {
    async fn handle(&mut self, msg: &InMessage) -> Result<Vec<OutMessage>, HandleError> {
        let (event, payload) =
            LogitsEvent::decode(&msg.payload).map_err(|e| HandleError::Malformed(e.to_string()))?;
        let span = tracing::info_span!(
            "decode.window",
            stream_id = event.stream_id(),
            event = event.name()
        );
        telemetry::continue_trace(&span, &msg.headers);
        let started = std::time::Instant::now();
        let out = tokio::task::block_in_place(|| self.stage.handle(&event, payload)).map_err(
            |e| match e {
                DecodeError::Malformed(m) => HandleError::Malformed(m),
                DecodeError::Grammar(g) => HandleError::Fatal(g.to_string()),
            },
        )?;
        self.metrics.observe(started.elapsed());
        self.metrics.set_active(self.stage.active_streams() as i64);
        Ok(out.iter().map(|t| self.message(t, &span)).collect())
    }

    async fn on_tick(&mut self) -> Result<Vec<OutMessage>, HandleError> {
        let expired = self.stage.expire_idle(self.idle_timeout);
        let span = tracing::info_span!("decode.expire", streams = expired.len());
        for t in &expired {
            tracing::warn!(stream_id = %t.stream_id, "no end event within the idle timeout; final sent as timed out");
        }
        Ok(expired.iter().map(|t| self.message(t, &span)).collect())
    }
}

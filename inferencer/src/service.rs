//! The Kafka edge of the infer service: `mouths` in, `logits` out.

use mouthmap_bus::contract::{MouthEvent, TopicKind, encode_envelope, headers};
use mouthmap_bus::kafka::{HandleError, Handler, InMessage, OutMessage};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::telemetry;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::stage::{InferError, Inferencer, Produced};

/// [`Handler`] for the consume loop.
pub struct InferHandler {
    pub stage: Inferencer,
    pub logits_topic: String,
    pub metrics: StageMetrics,
}

fn pairs(headers: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| k == headers::TRACEPARENT || k == headers::TRACESTATE)
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn as_bytes(tag: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    tag.iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect()
}

impl InferHandler {
    fn map_err(e: InferError) -> HandleError {
        match e {
            InferError::Malformed(m) => HandleError::Malformed(m),
            InferError::Model(m) => HandleError::Fatal(m.to_string()),
        }
    }

    /// Turns stage output into messages; each continues the trace of the
    /// input that completed it. Every batch run gets a span linking the
    /// chunks whose frames it carried.
    fn publish(&mut self, out: Vec<Produced>) -> Vec<OutMessage> {
        for batch in self.stage.take_batches() {
            let span = tracing::info_span!(
                "infer.batch",
                windows = batch.windows,
                ms = batch.elapsed.as_secs_f64() * 1000.0
            );
            for tag in &batch.tags {
                let cx = telemetry::extract(&as_bytes(tag));
                use opentelemetry::trace::TraceContextExt;
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    span.add_link(sc);
                }
            }
            self.metrics.observe_batch(batch.elapsed, batch.windows);
        }
        self.metrics.set_active(self.stage.active_streams() as i64);
        out.into_iter()
            .map(|p| {
                let span = tracing::info_span!(
                    "infer.window",
                    stream_id = p.event.stream_id(),
                    event = p.event.name()
                );
                telemetry::continue_trace(&span, &as_bytes(&p.tag));
                OutMessage::new(
                    &self.logits_topic,
                    p.event.stream_id(),
                    encode_envelope(&p.event, &p.payload),
                )
                .header(headers::SCHEMA, TopicKind::Logits.schema_header())
                .header(headers::EVENT, p.event.name())
                .headers(telemetry::inject(&span))
            })
            .collect()
    }
}

impl Handler for InferHandler {
    async fn handle(&mut self, msg: &InMessage) -> Result<Vec<OutMessage>, HandleError> {
        tokio::task::block_in_place(|| {
            let (event, payload) = MouthEvent::decode(&msg.payload)
                .map_err(|e| HandleError::Malformed(e.to_string()))?;
            let out = self
                .stage
                .handle(&event, payload, &pairs(&msg.headers))
                .map_err(Self::map_err)?;
            Ok(self.publish(out))
        })
    }

    /// Windows waiting in the batch queue hold back their inputs' offsets.
    fn holding(&self) -> bool {
        self.stage.queued() > 0
    }

    async fn on_tick(&mut self) -> Result<Vec<OutMessage>, HandleError> {
        tokio::task::block_in_place(|| {
            let out = self.stage.tick().map_err(Self::map_err)?;
            Ok(self.publish(out))
        })
    }
}

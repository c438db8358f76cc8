//! The Kafka edge of the infer service: `mouths` in, `logits` out.

use mouthmap_bus::kafka::{Handler, Incoming};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::{ErrorKind, HandleError, OutMessage, telemetry};
use mouthmap_contracts::{Event, MouthEvent, headers};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::stage::{InferError, Inferencer, Produced};

/// [`Handler`] for the consume loop.
pub struct InferHandler {
    pub stage: Inferencer,
    pub logits_topic: String,
    pub metrics: StageMetrics,
    /// A stream with no event for this long has its buffer dropped.
    pub idle_timeout: std::time::Duration,
}

impl From<InferError> for HandleError {
    fn from(e: InferError) -> Self {
        match e {
            InferError::Contract(c) => c.into(),
            e @ InferError::CropSize { .. } => HandleError::dead_letter(ErrorKind::Content, e),
            e @ InferError::Model(_) => HandleError::fatal(ErrorKind::Model, e),
        }
    }
}

/// The trace context of a message, as the stage's tags carry it.
fn trace_tag(headers: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
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
                OutMessage::event(&self.logits_topic, &p.event, &p.payload)
                    .headers(telemetry::inject(&span))
            })
            .collect()
    }
}

impl Handler for InferHandler {
    type Input = MouthEvent;

    async fn handle(
        &mut self,
        input: Incoming<'_, MouthEvent>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        tokio::task::block_in_place(|| {
            let out =
                self.stage
                    .handle(input.event, input.payload, &trace_tag(&input.msg.headers))?;
            Ok(self.publish(out))
        })
    }

    /// While windows wait in the batch queue, every input offset is held
    /// back: a window is made of several chunks' frames, and the per-stream
    /// buffers do not yet say which (so nothing is committed that a restart
    /// would need to rebuild it).
    fn oldest_held(&self, _topic: &str, _partition: i32) -> Option<i64> {
        (self.stage.queued() > 0).then_some(i64::MIN)
    }

    async fn on_tick(&mut self) -> Result<Vec<OutMessage>, HandleError> {
        for id in self.stage.expire_idle(self.idle_timeout) {
            tracing::warn!(stream_id = %id, "no event within the idle timeout; stream buffer dropped");
        }
        tokio::task::block_in_place(|| {
            let out = self.stage.tick()?;
            Ok(self.publish(out))
        })
    }
}

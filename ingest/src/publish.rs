//! The Kafka edge of ingest: events from stream threads to the `frames` topic.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use mouthmap_bus::kafka::Producer;
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::telemetry;
use mouthmap_bus::{ErrorKind, OutMessage};
use mouthmap_contracts::{Event, FrameEvent};
use tokio::sync::mpsc;
use tracing::Instrument;

/// One event on its way to Kafka, with the span that traces it.
pub struct Outgoing {
    pub event: FrameEvent,
    pub payload: Vec<u8>,
    pub span: tracing::Span,
    pub created: Instant,
}

/// What the publisher did, for the process summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishStats {
    pub delivered: u64,
    pub failed: u64,
}

/// Produces every event in arrival order and waits for all acknowledgements.
/// Returns once the channel is closed and everything was acknowledged.
pub async fn publish_loop(
    mut rx: mpsc::Receiver<Outgoing>,
    producer: Producer,
    topic: String,
    metrics: StageMetrics,
) -> PublishStats {
    let mut stats = PublishStats::default();
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            next = rx.recv(), if open => {
                let Some(out) = next else { open = false; continue };
                let msg = OutMessage::event(&topic, &out.event, &out.payload)
                    .headers(telemetry::inject(&out.span));
                let (stream_id, event) = (out.event.stream_id().to_string(), out.event.name());
                match producer.send(msg) {
                    Ok(delivery) => {
                        let span = out.span.clone();
                        pending.push(async move {
                            let result = delivery.await;
                            (result, stream_id, event, out.created)
                        }.instrument(span));
                    }
                    Err(e) => {
                        stats.failed += 1;
                        metrics.error(ErrorKind::Produce);
                        tracing::error!(%stream_id, event, error = %e, "could not enqueue message; it is lost");
                    }
                }
            }
            Some((result, stream_id, event, created)) = pending.next(), if !pending.is_empty() => {
                match result {
                    Ok(_) => {
                        stats.delivered += 1;
                        metrics.sent();
                        metrics.observe(created.elapsed());
                    }
                    Err(e) => {
                        stats.failed += 1;
                        metrics.error(ErrorKind::Produce);
                        tracing::error!(%stream_id, event, error = %e, "delivery failed after retries; message lost");
                    }
                }
            }
        }
    }
    stats
}

//! The Kafka edge of ingest: events from stream threads to the `frames` topic.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use mouthmap_bus::kafka::{BusError, Producer};
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
    /// Frames in the messages that failed.
    pub frames_lost: u64,
}

/// Messages enqueued to the producer but not yet acknowledged, at most.
/// Past it the publisher stops taking events, the channel from the stream
/// threads fills, and capture waits: backpressure, not loss.
pub const MAX_PENDING: usize = 256;

/// Frames in an event (a chunk's; none in a start or an end).
fn frames_of(event: &FrameEvent) -> u64 {
    match event {
        FrameEvent::Chunk(c) => c.frames.len() as u64,
        _ => 0,
    }
}

/// Produces every event in arrival order and waits for all acknowledgements.
/// Returns once the channel is closed and everything was acknowledged. A
/// full producer queue (the broker away) is waited out; a delivery that
/// fails after every retry (librdkafka retries for `message.timeout.ms`, two
/// minutes: a broker restart is survived) counts its frames as lost.
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
            next = rx.recv(), if open && pending.len() < MAX_PENDING => {
                let Some(out) = next else { open = false; continue };
                let mut msg = OutMessage::event(&topic, &out.event, &out.payload)
                    .headers(telemetry::inject(&out.span));
                let (stream_id, event) = (out.event.stream_id().to_string(), out.event.name());
                let frames = frames_of(&out.event);
                let delivery = loop {
                    match producer.send(msg) {
                        Ok(delivery) => break Some(delivery),
                        Err(BusError::QueueFull(m)) => {
                            msg = *m;
                            // Acknowledgements make room; until then, wait.
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        Err(e) => {
                            stats.failed += 1;
                            stats.frames_lost += frames;
                            metrics.error(ErrorKind::Produce);
                            metrics.frames_lost(frames);
                            tracing::error!(%stream_id, event, frames, error = %e, "could not enqueue message; its frames are lost");
                            break None;
                        }
                    }
                };
                if let Some(delivery) = delivery {
                    let span = out.span.clone();
                    pending.push(async move {
                        let result = delivery.await;
                        (result, stream_id, event, frames, out.created)
                    }.instrument(span));
                }
            }
            Some((result, stream_id, event, frames, created)) = pending.next(), if !pending.is_empty() => {
                match result {
                    Ok(_) => {
                        stats.delivered += 1;
                        metrics.sent();
                        metrics.observe(created.elapsed());
                    }
                    Err(e) => {
                        stats.failed += 1;
                        stats.frames_lost += frames;
                        metrics.error(ErrorKind::Produce);
                        metrics.frames_lost(frames);
                        tracing::error!(%stream_id, event, frames, error = %e, "delivery failed after every retry; its frames are lost");
                    }
                }
            }
        }
    }
    stats
}

//! The Kafka edge of ingest: events from stream threads to the `frames` topic
//! (or, with the mouth crop chained into ingest, their crops to `mouths`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use mouthmap_bus::kafka::{BusError, Delivered, Producer, REDELIVER_AFTER, REDELIVER_FOR};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::telemetry;
use mouthmap_bus::{ErrorKind, OutMessage};
use mouthmap_contracts::{Event, FrameEvent, MouthEvent, StreamEnd};
use tokio::sync::mpsc;
use tracing::Instrument;

/// What the publisher needs to know of an event beyond [`Event`].
pub trait Publishable: Event + Send + 'static {
    /// Frames the event carries (a chunk's; none in a start or an end).
    fn frames(&self) -> u64;
    /// The stream's end, when the event is one (the publisher fills in the
    /// frames that were lost before it).
    fn end_mut(&mut self) -> Option<&mut StreamEnd>;
}

impl Publishable for FrameEvent {
    fn frames(&self) -> u64 {
        match self {
            FrameEvent::Chunk(c) => c.frames.len() as u64,
            _ => 0,
        }
    }

    fn end_mut(&mut self) -> Option<&mut StreamEnd> {
        match self {
            FrameEvent::End(end) => Some(end),
            _ => None,
        }
    }
}

impl Publishable for MouthEvent {
    fn frames(&self) -> u64 {
        match self {
            MouthEvent::Chunk(c) => c.frames.len() as u64,
            _ => 0,
        }
    }

    fn end_mut(&mut self) -> Option<&mut StreamEnd> {
        match self {
            MouthEvent::End(e) => Some(&mut e.end),
            _ => None,
        }
    }
}

/// One event on its way to Kafka, with the span that traces it.
pub struct Outgoing<E = FrameEvent> {
    pub event: E,
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

impl InFlight {
    fn new<E: Publishable>(topic: &str, out: Outgoing<E>) -> Self {
        Self {
            msg: OutMessage::event(topic, &out.event, &out.payload)
                .headers(telemetry::inject(&out.span)),
            stream_id: out.event.stream_id().to_string(),
            event: out.event.name(),
            frames: out.event.frames(),
            created: out.created,
            span: out.span,
        }
    }
}

/// One message on its way, with what the publisher reports about it.
struct InFlight {
    msg: OutMessage,
    stream_id: String,
    event: &'static str,
    frames: u64,
    created: Instant,
    span: tracing::Span,
}

type Pending = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Result<Delivered, BusError>, InFlight)> + Send>,
>;

/// Enqueues `f` to the producer; a full queue is waited out. Err: the
/// message could not even be enqueued.
async fn enqueue(producer: &Producer, f: InFlight) -> Result<Pending, (BusError, InFlight)> {
    loop {
        match producer.send(&f.msg) {
            Ok(delivery) => {
                let span = f.span.clone();
                return Ok(Box::pin(
                    async move { (delivery.await, f) }.instrument(span),
                ));
            }
            Err(BusError::QueueFull) => {
                // Acknowledgements make room; until then, wait.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err((e, f)),
        }
    }
}

/// Produces every event in arrival order and waits for all acknowledgements.
/// Returns once the channel is closed and everything was acknowledged or
/// given up. A full producer queue is waited out; a failed delivery is sent
/// again, once everything before it is settled, in order, by a renewed
/// producer, nothing new taken meanwhile, for [`REDELIVER_FOR`], so a broker
/// restart is ridden out; a message that still fails counts its frames as
/// lost (`mouthmap_frames_lost_total`). A message delivered after one that
/// failed stays before it on the topic (downstream skips frames it already
/// has, so at worst those frames are missed, and counted nowhere: rare).
/// A stream's end waits until everything before it is settled, and carries
/// the frames of that stream that were lost (`frames_lost`).
pub async fn publish_loop<E: Publishable>(
    mut rx: mpsc::Receiver<Outgoing<E>>,
    mut producer: Producer,
    topic: String,
    metrics: StageMetrics,
) -> PublishStats {
    let mut stats = PublishStats::default();
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut retry: VecDeque<InFlight> = VecDeque::new();
    let mut retry_at = tokio::time::Instant::now();
    let mut open = true;
    // A stream's end, waiting for what came before it to settle.
    let mut held_end: Option<Outgoing<E>> = None;
    let mut lost_by_stream: HashMap<String, u64> = HashMap::new();
    let lose = |stats: &mut PublishStats,
                lost: &mut HashMap<String, u64>,
                f: &InFlight,
                e: &BusError| {
        stats.failed += 1;
        stats.frames_lost += f.frames;
        *lost.entry(f.stream_id.clone()).or_default() += f.frames;
        metrics.error(ErrorKind::Produce);
        metrics.frames_lost(f.frames);
        tracing::error!(stream_id = %f.stream_id, event = f.event, frames = f.frames, error = %e,
            "delivery failed for good; its frames are lost");
    };
    while open || !pending.is_empty() || !retry.is_empty() || held_end.is_some() {
        if pending.is_empty()
            && retry.is_empty()
            && let Some(mut out) = held_end.take()
        {
            if let Some(end) = out.event.end_mut() {
                end.frames_lost = lost_by_stream.remove(&end.stream_id).unwrap_or(0);
            }
            match enqueue(&producer, InFlight::new(&topic, out)).await {
                Ok(p) => pending.push_back(p),
                Err((e, f)) => lose(&mut stats, &mut lost_by_stream, &f, &e),
            }
            continue;
        }
        tokio::select! {
            next = rx.recv(), if open && held_end.is_none() && retry.is_empty() && pending.len() < MAX_PENDING => {
                let Some(out) = next else { open = false; continue };
                let mut out = out;
                if out.event.end_mut().is_some() {
                    held_end = Some(out);
                    continue;
                }
                match enqueue(&producer, InFlight::new(&topic, out)).await {
                    Ok(p) => pending.push_back(p),
                    Err((e, f)) => lose(&mut stats, &mut lost_by_stream, &f, &e),
                }
            }
            Some((result, f)) = pending.next(), if !pending.is_empty() => {
                match result {
                    Ok(_) => {
                        stats.delivered += 1;
                        metrics.sent();
                        metrics.observe(f.created.elapsed());
                    }
                    Err(e) if f.created.elapsed() < REDELIVER_FOR => {
                        tracing::warn!(stream_id = %f.stream_id, event = f.event, error = %e,
                            "delivery failed; sending it again");
                        metrics.error(ErrorKind::Produce);
                        retry.push_back(f);
                        retry_at = tokio::time::Instant::now() + REDELIVER_AFTER;
                    }
                    Err(e) => lose(&mut stats, &mut lost_by_stream, &f, &e),
                }
            }
            _ = tokio::time::sleep_until(retry_at), if !retry.is_empty() && pending.is_empty() => {
                // A broker that restarted may have forgotten this producer's
                // identity and refuse it for good: send again as a new one.
                match producer.renewed() {
                    Ok(p) => producer = p,
                    Err(e) => tracing::warn!(error = %e, "cannot renew the producer; retrying with the old one"),
                }
                while let Some(f) = retry.pop_front() {
                    match enqueue(&producer, f).await {
                        Ok(p) => pending.push_back(p),
                        Err((e, f)) => lose(&mut stats, &mut lost_by_stream, &f, &e),
                    }
                }
            }
        }
    }
    stats
}

//! What the gateway knows of the streams, read from the topics: each
//! stream's latest transcript and mouth crop, kept per stream and fanned out
//! to whoever watches (a web page's event feed, an upload waiting for its
//! final, a gRPC call).
//!
//! Every replica reads all of `transcripts` and `mouths` (its own consumer
//! group, from the newest message), so any replica can answer for any
//! stream. A watcher that falls behind the fan-out loses intermediate
//! events, never the state: [`Hub::view`] always has the latest transcript,
//! and a final is kept after the stream ends.

use mouthmap_contracts::clock::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mouthmap_bus::kafka::{InMessage, KafkaSettings, StartAt, consumer};
use mouthmap_contracts::{Event, MouthEvent, Transcript, TranscriptKind};
use rdkafka::consumer::Consumer;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Streams kept at most; the oldest ended ones go first.
const MAX_STREAMS: usize = 1000;
/// An ended stream is forgotten this long after its final.
const KEEP_ENDED: Duration = Duration::from_secs(600);
/// Events the fan-out holds for a slow watcher before it skips ahead.
const FANOUT: usize = 1024;

/// Something that happened to a stream.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// Its first mouth crops came (preprocess started it).
    Started { stream_id: String },
    /// A partial or the final.
    Transcript(Arc<Transcript>),
    /// A new mouth crop (at most [`Hub::crop_every`] apart per stream).
    Mouth {
        stream_id: String,
        frame: u64,
        face: bool,
    },
}

impl HubEvent {
    pub fn stream_id(&self) -> &str {
        match self {
            HubEvent::Started { stream_id } | HubEvent::Mouth { stream_id, .. } => stream_id,
            HubEvent::Transcript(t) => &t.stream_id,
        }
    }
}

/// The latest mouth crop of a stream: Gray8 pixels.
#[derive(Debug, Clone)]
pub struct Crop {
    pub frame: u64,
    pub width: u32,
    pub height: u32,
    pub pixels: Arc<Vec<u8>>,
}

impl Crop {
    /// The crop as a PNG image.
    pub fn png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        // A crop is its own size in bytes: writing into a Vec cannot fail.
        let mut writer = encoder.write_header().expect("PNG header into memory");
        writer
            .write_image_data(&self.pixels)
            .expect("PNG data into memory");
        writer.finish().expect("PNG end into memory");
        out
    }
}

/// One stream as the gateway shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    pub id: String,
    /// When the gateway first saw it, ms since the epoch.
    pub first_seen_ms: i64,
    /// Its newest event, ms since the epoch.
    pub last_seen_ms: i64,
    /// Mouth crops seen (frames through preprocess).
    pub frames: u64,
    /// Frames in which a face was found.
    pub frames_with_face: u64,
    /// No final yet.
    pub live: bool,
    /// Its latest partial, or its final.
    pub transcript: Option<Transcript>,
    #[serde(skip)]
    pub crop: Option<Crop>,
    #[serde(skip)]
    crop_sent: Option<Instant>,
    #[serde(skip)]
    ended_at: Option<Instant>,
}

impl StreamView {
    fn new(id: &str) -> Self {
        let now = now_ms();
        Self {
            id: id.to_string(),
            first_seen_ms: now,
            last_seen_ms: now,
            frames: 0,
            frames_with_face: 0,
            live: true,
            transcript: None,
            crop: None,
            crop_sent: None,
            ended_at: None,
        }
    }
}

struct Inner {
    streams: Mutex<HashMap<String, StreamView>>,
    events: broadcast::Sender<HubEvent>,
    crop_every: Duration,
    /// Both topic readers have their partitions.
    ready: watch::Sender<(bool, bool)>,
}

/// The streams the gateway knows. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(Duration::from_millis(200))
    }
}

impl Hub {
    /// A hub that passes on a stream's mouth crop at most every `crop_every`.
    pub fn new(crop_every: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                streams: Mutex::new(HashMap::new()),
                events: broadcast::channel(FANOUT).0,
                crop_every,
                ready: watch::channel((false, false)).0,
            }),
        }
    }

    /// Every event from now on (filter by [`HubEvent::stream_id`]).
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
    }

    /// One stream now.
    pub fn view(&self, id: &str) -> Option<StreamView> {
        self.lock().get(id).cloned()
    }

    /// Every stream known, newest first.
    pub fn list(&self) -> Vec<StreamView> {
        let mut all: Vec<StreamView> = self.lock().values().cloned().collect();
        all.sort_by_key(|v| std::cmp::Reverse(v.last_seen_ms));
        all
    }

    /// Waits until both topic readers hold their partitions (events before
    /// that are not seen).
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|(a, b)| *a && *b).await;
    }

    pub fn is_ready(&self) -> bool {
        let (a, b) = *self.inner.ready.borrow();
        a && b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StreamView>> {
        self.inner.streams.lock().expect("hub lock")
    }

    fn publish(&self, event: HubEvent) {
        // No watcher is not an error.
        let _ = self.inner.events.send(event);
    }

    /// Takes a transcript read from the topic.
    pub fn on_transcript(&self, t: Transcript) {
        let t = Arc::new(t);
        {
            let mut streams = self.lock();
            prune(&mut streams);
            let view = streams
                .entry(t.stream_id.clone())
                .or_insert_with(|| StreamView::new(&t.stream_id));
            view.last_seen_ms = now_ms();
            if t.kind == TranscriptKind::Final {
                view.live = false;
                view.ended_at = Some(Instant::now());
            } else if !view.live {
                // A partial after the final (a redelivery): the final stands.
                return;
            }
            view.transcript = Some((*t).clone());
        }
        self.publish(HubEvent::Transcript(t));
    }

    /// Takes a `mouths` event read from the topic.
    pub fn on_mouths(&self, event: &MouthEvent, payload: &[u8]) {
        let id = event.stream_id().to_string();
        let mut out = None;
        {
            let mut streams = self.lock();
            prune(&mut streams);
            let fresh = !streams.contains_key(&id);
            let view = streams
                .entry(id.clone())
                .or_insert_with(|| StreamView::new(&id));
            view.last_seen_ms = now_ms();
            match event {
                MouthEvent::Start(_) => {
                    // A stream id used again starts afresh.
                    if !view.live {
                        *view = StreamView::new(&id);
                    }
                    out = Some(HubEvent::Started {
                        stream_id: id.clone(),
                    });
                }
                MouthEvent::Chunk(c) => {
                    let n = c.frames.len();
                    view.frames += n as u64;
                    view.frames_with_face +=
                        c.quality.iter().filter(|q| q.face_found).count() as u64;
                    let due = view
                        .crop_sent
                        .is_none_or(|t| t.elapsed() >= self.inner.crop_every);
                    let side = (c.width * c.height) as usize;
                    if n > 0 && payload.len() >= side * n {
                        let last = n - 1;
                        view.crop = Some(Crop {
                            frame: c.frames[last].index,
                            width: c.width,
                            height: c.height,
                            pixels: Arc::new(payload[last * side..(last + 1) * side].to_vec()),
                        });
                        if due {
                            view.crop_sent = Some(Instant::now());
                            out = Some(HubEvent::Mouth {
                                stream_id: id.clone(),
                                frame: c.frames[last].index,
                                face: c.quality[last].face_found,
                            });
                        }
                    }
                    if fresh {
                        out.get_or_insert(HubEvent::Started {
                            stream_id: id.clone(),
                        });
                    }
                }
                MouthEvent::End(_) => {}
            }
        }
        if let Some(e) = out {
            self.publish(e);
        }
    }

    /// Reads `transcripts` and `mouths` until `shutdown` fires. Returns
    /// when both readers stopped.
    pub async fn run(
        &self,
        kafka: &KafkaSettings,
        transcripts_topic: &str,
        mouths_topic: &str,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), mouthmap_bus::kafka::BusError> {
        let group = format!("mouthmap-gateway-{}-{}", std::process::id(), now_ms());
        let transcripts = consumer(
            kafka,
            &format!("{group}-transcripts"),
            &[transcripts_topic],
            StartAt::Latest,
        )?;
        let mouths = consumer(
            kafka,
            &format!("{group}-mouths"),
            &[mouths_topic],
            StartAt::Latest,
        )?;
        let a = read(self.clone(), transcripts, shutdown.clone(), true);
        let b = read(self.clone(), mouths, shutdown, false);
        tokio::join!(a, b);
        Ok(())
    }

    fn set_ready(&self, transcripts: bool) {
        self.inner
            .ready
            .send_modify(|(a, b)| if transcripts { *a = true } else { *b = true });
    }
}

/// Drops ended streams kept past [`KEEP_ENDED`], and the oldest ended ones
/// over [`MAX_STREAMS`].
fn prune(streams: &mut HashMap<String, StreamView>) {
    streams.retain(|_, v| v.ended_at.is_none_or(|t| t.elapsed() < KEEP_ENDED));
    if streams.len() < MAX_STREAMS {
        return;
    }
    let mut ended: Vec<(i64, String)> = streams
        .values()
        .filter(|v| !v.live)
        .map(|v| (v.last_seen_ms, v.id.clone()))
        .collect();
    ended.sort();
    for (_, id) in ended.into_iter().take(streams.len() + 1 - MAX_STREAMS) {
        streams.remove(&id);
    }
}

async fn read(
    hub: Hub,
    consumer: mouthmap_bus::kafka::BusConsumer,
    mut shutdown: watch::Receiver<bool>,
    transcripts: bool,
) {
    let what = if transcripts { "transcripts" } else { "mouths" };
    let mut assigned = false;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        let received = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            _ = poll.tick(), if !assigned => {
                if consumer.assignment().is_ok_and(|a| a.count() > 0) {
                    assigned = true;
                    tracing::info!(topic = what, "gateway reading");
                    hub.set_ready(transcripts);
                }
                continue;
            }
            r = consumer.recv() => r.map(|m| InMessage::from_borrowed(&m)),
        };
        let m = match received {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic = what, error = %e, "consume failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if transcripts {
            match m.decode::<Transcript>() {
                Ok((t, _)) => hub.on_transcript(t),
                Err(e) => tracing::debug!(error = %e, "unreadable transcript skipped"),
            }
        } else {
            match m.decode::<MouthEvent>() {
                Ok((e, payload)) => hub.on_mouths(&e, payload),
                Err(e) => tracing::debug!(error = %e, "unreadable mouths message skipped"),
            }
        }
    }
    consumer.unsubscribe();
}

#[cfg(test)]
mod tests {
    use super::*;
    use mouthmap_contracts::{CropQuality, FrameInfo, MouthChunk};

    fn transcript(id: &str, kind: TranscriptKind, text: &str) -> Transcript {
        let mut t = Transcript::empty(id, kind);
        t.text = text.into();
        t
    }

    fn chunk(id: &str, first: u64, n: usize, face: bool) -> (MouthEvent, Vec<u8>) {
        let frames = (0..n as u64)
            .map(|i| FrameInfo {
                index: first + i,
                pts_ns: (first + i) * 40_000_000,
                ingest_us: 0,
            })
            .collect();
        let quality = (0..n)
            .map(|_| CropQuality {
                face_score: 0.9,
                face_found: face,
                detected: true,
                box_width: 50.0,
                brightness: 0.5,
                sharpness: 0.5,
            })
            .collect();
        let c = MouthChunk {
            stream_id: id.into(),
            seq: first / n as u64,
            width: 4,
            height: 2,
            frames,
            quality,
            no_face: !face,
            discontinuity: false,
        };
        let payload = (0..8 * n).map(|i| i as u8).collect();
        (MouthEvent::Chunk(c), payload)
    }

    #[test]
    fn the_final_stands_and_later_partials_are_ignored() {
        let hub = Hub::default();
        let mut rx = hub.subscribe();
        hub.on_transcript(transcript("s", TranscriptKind::Partial, "bin"));
        hub.on_transcript(transcript("s", TranscriptKind::Final, "bin blue"));
        hub.on_transcript(transcript("s", TranscriptKind::Partial, "bin"));
        let v = hub.view("s").unwrap();
        assert!(!v.live);
        assert_eq!(v.transcript.unwrap().text, "bin blue");
        let mut seen = Vec::new();
        while let Ok(HubEvent::Transcript(t)) = rx.try_recv() {
            seen.push(t.text.clone());
        }
        assert_eq!(seen, ["bin", "bin blue"]);
    }

    #[test]
    fn crops_are_kept_always_and_passed_on_at_most_every_interval() {
        let hub = Hub::new(Duration::from_secs(3600));
        let mut rx = hub.subscribe();
        for k in 0..3 {
            let (e, p) = chunk("s", k * 3, 3, true);
            hub.on_mouths(&e, &p);
        }
        let v = hub.view("s").unwrap();
        assert_eq!(v.frames, 9);
        assert_eq!(v.frames_with_face, 9);
        let crop = v.crop.unwrap();
        assert_eq!(crop.frame, 8);
        assert_eq!(crop.pixels.len(), 8);
        assert_eq!(&crop.pixels[..], &[16, 17, 18, 19, 20, 21, 22, 23]);
        let png = crop.png();
        assert_eq!(&png[1..4], b"PNG");
        let mut mouths = 0;
        while let Ok(e) = rx.try_recv() {
            mouths += matches!(e, HubEvent::Mouth { .. }) as usize;
        }
        assert_eq!(mouths, 1, "one crop event per interval");
    }

    #[test]
    fn ended_streams_are_pruned_oldest_first_past_the_limit() {
        let hub = Hub::default();
        for i in 0..MAX_STREAMS + 10 {
            hub.on_transcript(transcript(&format!("s{i}"), TranscriptKind::Final, "x"));
        }
        assert!(hub.list().len() <= MAX_STREAMS);
        assert!(hub.view(&format!("s{}", MAX_STREAMS + 9)).is_some());
    }
}

//! Video into the pipeline: an uploaded file goes through ingest's own
//! stream code (GStreamer decode, 25 fps, JPEG frames) and a gRPC caller's
//! frames through ingest's chunker; both onto the `frames` topic through
//! ingest's publisher, exactly as a live stream does.
//!
//! Admission: at most `max_streams` uploads and gRPC calls at once per
//! replica; one more is refused at once ([`Saturated`], HTTP 429 with
//! `Retry-After`, gRPC `RESOURCE_EXHAUSTED`) instead of queueing behind the
//! pipeline.

use mouthmap_contracts::clock::{now_ms, now_us};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mouthmap_bus::metrics::StageMetrics;
use mouthmap_contracts::{
    EndReason, FPS, FrameEvent, PixelFormat, SourceKind, StreamEnd, StreamStart,
};
use mouthmap_ingest::chunker::{ChunkPolicy, Chunker, FrameTooLarge, RawFrame};
use mouthmap_ingest::manager::{StartError, StartOptions, StreamManager, StreamStatus};
use mouthmap_ingest::publish::Outgoing;
use mouthmap_ingest::source::Source;
use mouthmap_ingest::stream::{StopMode, StreamSettings};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// The pipeline is full: try again later.
#[derive(Debug, thiserror::Error, Clone, Copy)]
#[error(
    "the gateway runs {running} uploads and gRPC streams, its limit (--max-streams); retry in {} s or use another replica",
    retry_after.as_secs()
)]
pub struct Saturated {
    pub running: usize,
    pub retry_after: Duration,
}

/// A place among the streams running; released when dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

/// Starts uploads and gRPC streams. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    manager: StreamManager,
    out: mpsc::Sender<Outgoing>,
    permits: Arc<Semaphore>,
    max_streams: usize,
    chunk: ChunkPolicy,
    spool: Arc<PathBuf>,
}

impl Intake {
    /// `out` feeds ingest's publisher; `settings` are ingest's stream
    /// settings (JPEG frames, chunk sizes); `spool` holds uploads while they
    /// are read.
    pub fn new(
        settings: StreamSettings,
        out: mpsc::Sender<Outgoing>,
        metrics: StageMetrics,
        max_streams: usize,
        spool: PathBuf,
    ) -> Self {
        let max_streams = max_streams.max(1);
        Self {
            // Uploads are admitted here first, so the manager never refuses one for its own limit.
            manager: StreamManager::new(settings, out.clone(), metrics, max_streams),
            out,
            permits: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            chunk: settings.chunk,
            spool: Arc::new(spool),
        }
    }

    /// A place for one more stream, or why not.
    pub fn admit(&self) -> Result<Admission, Saturated> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admission { _permit: permit }),
            Err(_) => Err(Saturated {
                running: self.max_streams,
                retry_after: Duration::from_secs(5),
            }),
        }
    }

    /// Streams running now.
    pub fn running(&self) -> usize {
        self.max_streams - self.permits.available_permits()
    }

    /// Where uploads are written while they are read.
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// Starts ingesting a file as stream `id`, as fast as it decodes.
    pub fn start_file(&self, id: &str, path: &Path) -> Result<(), StartError> {
        let source =
            Source::parse(&path.to_string_lossy()).map_err(|e| StartError::BadId(e.to_string()))?;
        self.manager.start(
            Some(id.to_string()),
            source,
            StartOptions {
                realtime: Some(false),
                ..StartOptions::default()
            },
        )?;
        Ok(())
    }

    /// A file stream's status (its end once it ended).
    pub fn status(&self, id: &str) -> Option<StreamStatus> {
        self.manager.get(id)
    }

    /// Stops a file stream (a caller that went away).
    pub fn stop(&self, id: &str) {
        self.manager.stop(id, StopMode::Now);
    }

    /// Waits until every file stream ended and was handed to the publisher.
    pub async fn shutdown(&self) {
        self.manager.shutdown(StopMode::Now).await;
    }

    /// A sink for a gRPC caller's frames as stream `id`.
    pub fn frames(&self, id: &str, peer: &str) -> FrameSink {
        FrameSink {
            id: id.to_string(),
            source: format!("grpc://{peer}"),
            out: self.out.clone(),
            chunker: Chunker::new(id, self.chunk),
            clock: Resampler::default(),
            last: None,
            shape: None,
            started: false,
            frames: 0,
            first_frame_at: None,
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame {index} is not a JPEG image: {reason}")]
    NotJpeg { index: u64, reason: String },
    #[error(
        "frame {index} is {width}x{height}, the stream's frames are {first_width}x{first_height}: keep one size per stream"
    )]
    SizeChanged {
        index: u64,
        width: u32,
        height: u32,
        first_width: u32,
        first_height: u32,
    },
    #[error("frame {index} is {width}x{height}: at most 8192x8192")]
    TooBig { index: u64, width: u32, height: u32 },
    #[error(transparent)]
    TooLarge(#[from] FrameTooLarge),
    #[error(
        "frame {index}'s timestamp {pts_us} µs is not after the previous one's {previous_us} µs: timestamps must increase"
    )]
    TimeBackwards {
        index: u64,
        pts_us: i64,
        previous_us: i64,
    },
    #[error("the gateway is shutting down")]
    Closed,
}

/// The width and height a JPEG's header declares.
pub fn jpeg_size(jpeg: &[u8]) -> Result<(u32, u32), String> {
    let mut decoder = zune_jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg));
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let info = decoder.info().ok_or("no image information")?;
    Ok((u32::from(info.width), u32::from(info.height)))
}

/// Frames at any rate in, 25 fps out: each output slot (every 40 ms of
/// presentation time) takes the newest frame at or before it, so a faster
/// source drops frames and a slower one repeats them (as ingest's
/// GStreamer `videorate` does). A pause over a second is a gap, not a run
/// of repeated frames.
#[derive(Debug, Default)]
pub struct Resampler {
    /// The next output slot.
    slot: u64,
    /// Presentation time of the first frame, µs.
    origin: Option<i64>,
}

/// Repeats of one frame at most before a pause counts as a gap.
const MAX_REPEAT: u64 = FPS as u64;

impl Resampler {
    /// Output slots the previous frame (shown until `pts_us`) fills before a
    /// frame at `pts_us` takes over, and whether slots were skipped (a gap).
    pub fn advance(&mut self, pts_us: i64) -> (std::ops::Range<u64>, bool) {
        let origin = *self.origin.get_or_insert(pts_us);
        let t = (pts_us - origin).max(0) as u64;
        let slot_us = 1_000_000 / u64::from(FPS);
        // Slots strictly before t belong to the previous frame.
        let until = t.div_ceil(slot_us);
        let from = self.slot;
        if until <= from {
            return (from..from, false);
        }
        if until - from > MAX_REPEAT {
            // A pause: one repeat, then a gap up to this frame's slot.
            self.slot = until;
            return (from..from + 1, true);
        }
        self.slot = until;
        (from..until, false)
    }

    /// The slot the last frame (at `pts_us`) fills at the end of the
    /// stream, if it starts at or after that slot's time (a frame inside a
    /// slot already filled adds none).
    pub fn last(&mut self, pts_us: i64) -> Option<u64> {
        let origin = self.origin?;
        let t = (pts_us - origin).max(0) as u64;
        let slot_us = 1_000_000 / u64::from(FPS);
        (t >= self.slot * slot_us).then(|| {
            self.slot += 1;
            self.slot - 1
        })
    }
}

/// A gRPC caller's frames on their way to the `frames` topic.
pub struct FrameSink {
    id: String,
    source: String,
    out: mpsc::Sender<Outgoing>,
    chunker: Chunker,
    clock: Resampler,
    /// The newest frame, not yet placed in an output slot: (JPEG, pts µs).
    last: Option<(Vec<u8>, i64)>,
    shape: Option<(u32, u32)>,
    started: bool,
    /// Frames taken from the caller.
    frames: u64,
    /// Wall-clock time the first frame came, for pacing.
    first_frame_at: Option<Instant>,
}

impl FrameSink {
    /// Frames taken so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// How long to wait before taking a frame at `pts_us`, so frames flow
    /// at the pace of their timestamps (flow control slows a faster
    /// caller: nothing is buffered here).
    pub fn wait_for(&self, pts_us: i64) -> Duration {
        match (self.first_frame_at, self.clock.origin) {
            (Some(at), Some(origin)) => {
                Duration::from_micros((pts_us - origin).max(0) as u64).saturating_sub(at.elapsed())
            }
            _ => Duration::ZERO,
        }
    }

    async fn send(
        &self,
        event: FrameEvent,
        payload: Vec<u8>,
        span: tracing::Span,
    ) -> Result<(), FrameError> {
        self.out
            .send(Outgoing {
                event,
                payload,
                span,
                created: Instant::now(),
            })
            .await
            .map_err(|_| FrameError::Closed)
    }

    async fn start(&mut self) -> Result<(), FrameError> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let start = StreamStart {
            stream_id: self.id.clone(),
            source: self.source.clone(),
            source_kind: SourceKind::Camera,
            fps: FPS,
            started_at_ms: now_ms(),
        };
        tracing::info!(stream_id = %self.id, source = %self.source, "gRPC stream started");
        let span = tracing::info_span!("gateway.stream_start", stream_id = %self.id);
        self.send(FrameEvent::Start(start), Vec::new(), span).await
    }

    /// Places the newest frame held in `slots` and sends the chunks completed.
    async fn place(&mut self, slots: std::ops::Range<u64>, gap: bool) -> Result<(), FrameError> {
        let Some((jpeg, _)) = &self.last else {
            return Ok(());
        };
        let (width, height) = self.shape.expect("a frame implies a shape");
        let jpeg = jpeg.clone();
        let mut ready = Vec::new();
        for slot in slots {
            ready.extend(self.chunker.push(RawFrame {
                index: slot,
                pts_ns: slot * 1_000_000_000 / u64::from(FPS),
                ingest_us: now_us(),
                width,
                height,
                format: PixelFormat::Jpeg,
                data: jpeg.clone(),
            })?);
        }
        if gap {
            self.chunker.mark_discontinuity();
        }
        for (chunk, payload) in ready {
            let span = tracing::info_span!("gateway.chunk", stream_id = %self.id, seq = chunk.seq);
            self.send(FrameEvent::Chunk(chunk), payload, span).await?;
        }
        Ok(())
    }

    /// Takes one frame (JPEG bytes, presentation time in µs).
    pub async fn push(&mut self, jpeg: Vec<u8>, pts_us: i64) -> Result<(), FrameError> {
        let index = self.frames;
        let (width, height) =
            jpeg_size(&jpeg).map_err(|reason| FrameError::NotJpeg { index, reason })?;
        if width > 8192 || height > 8192 || width == 0 || height == 0 {
            return Err(FrameError::TooBig {
                index,
                width,
                height,
            });
        }
        if let Some((w, h)) = self.shape
            && (w, h) != (width, height)
        {
            return Err(FrameError::SizeChanged {
                index,
                width,
                height,
                first_width: w,
                first_height: h,
            });
        }
        if let Some((_, previous_us)) = &self.last
            && pts_us <= *previous_us
        {
            return Err(FrameError::TimeBackwards {
                index,
                pts_us,
                previous_us: *previous_us,
            });
        }
        self.shape = Some((width, height));
        self.start().await?;
        self.first_frame_at.get_or_insert_with(Instant::now);
        let (slots, gap) = self.clock.advance(pts_us);
        self.place(slots, gap).await?;
        self.last = Some((jpeg, pts_us));
        self.frames += 1;
        Ok(())
    }

    /// Ends the stream: the last frame placed, the last chunk and the end
    /// event sent (`cancelled`: the caller went away before its end).
    pub async fn end(mut self, cancelled: bool) -> Result<(), FrameError> {
        self.start().await?;
        if let Some(slot) = self
            .last
            .as_ref()
            .and_then(|(_, pts)| self.clock.last(*pts))
        {
            self.place(slot..slot + 1, false).await?;
        }
        if let Some((chunk, payload)) = self.chunker.flush() {
            let span = tracing::info_span!("gateway.chunk", stream_id = %self.id, seq = chunk.seq);
            self.send(FrameEvent::Chunk(chunk), payload, span).await?;
        }
        let end = StreamEnd {
            stream_id: self.id.clone(),
            reason: if cancelled {
                EndReason::Stopped
            } else {
                EndReason::Eos
            },
            error: None,
            frames: self.clock.slot,
            chunks: self.chunker.chunks(),
            ended_at_ms: now_ms(),
            frames_lost: 0,
            gaps: Vec::new(),
            cancelled,
        };
        tracing::info!(stream_id = %self.id, frames = self.frames, cancelled, "gRPC stream ended");
        let span = tracing::info_span!("gateway.stream_end", stream_id = %self.id);
        self.send(FrameEvent::End(end), Vec::new(), span).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output slots per frame for frames at `pts` (µs), then the end.
    fn slots(pts: &[i64]) -> Vec<Vec<u64>> {
        let mut r = Resampler::default();
        let mut out: Vec<Vec<u64>> = Vec::new();
        for &p in pts {
            let (s, _) = r.advance(p);
            if let Some(prev) = out.last_mut() {
                prev.extend(s);
            }
            out.push(Vec::new());
        }
        out.last_mut().unwrap().extend(r.last(*pts.last().unwrap()));
        out
    }

    #[test]
    fn twenty_five_fps_in_is_one_slot_per_frame() {
        let pts: Vec<i64> = (0..5).map(|i| i * 40_000).collect();
        assert_eq!(
            slots(&pts),
            vec![vec![0], vec![1], vec![2], vec![3], vec![4]]
        );
    }

    #[test]
    fn fifty_fps_in_drops_every_other_frame() {
        let pts: Vec<i64> = (0..6).map(|i| i * 20_000).collect();
        let s = slots(&pts);
        let total: usize = s.iter().map(Vec::len).sum();
        assert_eq!(total, 3, "{s:?}");
    }

    #[test]
    fn twelve_and_a_half_fps_in_repeats_every_frame() {
        let pts: Vec<i64> = (0..4).map(|i| i * 80_000).collect();
        assert_eq!(
            slots(&pts),
            vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6]]
        );
    }

    #[test]
    fn a_long_pause_is_a_gap_not_a_run_of_repeats() {
        let mut r = Resampler::default();
        r.advance(0);
        let (s, gap) = r.advance(5_000_000);
        assert_eq!(s, 0..1);
        assert!(gap);
        assert_eq!(r.last(5_000_000), Some(125));
    }

    #[test]
    fn jpeg_size_reads_the_header_and_refuses_other_bytes() {
        assert!(jpeg_size(b"GIF89a not a jpeg").is_err());
        assert!(jpeg_size(&[]).is_err());
    }
}

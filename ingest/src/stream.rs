//! One stream's life: start event, frames in chunks, retries, end event.
//!
//! [`run_stream`] runs on its own OS thread (GStreamer's appsink pulls block)
//! and hands every event to an [`Emitter`]; it knows nothing of Kafka.

use mouthmap_contracts::clock::{now_ms, now_us};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mouthmap_contracts::{
    EndReason, FPS, FRAME_DURATION_NS, FrameEvent, Gap, PixelFormat, StreamEnd, StreamStart,
    push_gap,
};

use crate::capture::{Capture, CaptureError, CaptureSettings, Polled};
use crate::chunker::{ChunkPolicy, Chunker, RawFrame};
use crate::source::Source;

/// JPEG quality of `Jpeg` frames unless set.
pub const DEFAULT_JPEG_QUALITY: u8 = 95;

/// Settings of every stream an ingest process runs.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub capture: CaptureSettings,
    pub chunk: ChunkPolicy,
    /// What frames are published as: `I420` (colour), `Gray8` (the luma
    /// plane alone, two thirds of the bytes; the face detector then sees a
    /// grey image and the mouth crops are the same grey pixels) or `Jpeg`
    /// (compressed by the capture, at `jpeg_quality`).
    pub pixel_format: PixelFormat,
    /// Quality (1-100) of `Jpeg` frames.
    pub jpeg_quality: u8,
    /// A live source that shows no frame this long after opening has failed.
    pub connect_timeout: Duration,
    /// A live source that stops sending frames this long has dropped.
    pub stall_timeout: Duration,
    /// Reconnection attempts for a live source before it is ended with an error.
    pub retries: u32,
    /// First reconnection delay; doubles with each attempt.
    pub retry_backoff: Duration,
    /// When asked to drain, end after this long without a new frame.
    pub drain_quiet: Duration,
    /// The stream's end is announced by a stop request (an RTMP publisher's
    /// `on_publish_done`): the source ending before that is a drop (a
    /// restarted RTMP server), reconnected like any failure, not an end.
    pub published: bool,
    /// Go on with a stream an earlier ingest process carried, from where it
    /// left off on the topic, without a new start event.
    pub resume: Option<ResumePoint>,
}

/// Where a stream left off on the frames topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Number of the next chunk.
    pub next_seq: u64,
    /// Index of the next frame.
    pub next_index: u64,
    /// When the last frame published was captured, µs since the epoch.
    pub last_frame_us: i64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            capture: CaptureSettings::default(),
            chunk: ChunkPolicy::default(),
            pixel_format: PixelFormat::I420,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(10),
            retries: 3,
            retry_backoff: Duration::from_secs(1),
            drain_quiet: Duration::from_millis(1500),
            published: false,
            resume: None,
        }
    }
}

/// How a stop request ends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Keep reading until the source ends or goes quiet, then end with `reason`.
    /// Used when an RTMP publisher finishes: what it sent still arrives.
    Drain(EndReason),
    /// End now; frames already decoded are still published.
    Now,
}

/// Shared between a stream's thread and whoever controls it.
#[derive(Debug, Default)]
pub struct StreamControl {
    stop: Mutex<Option<StopMode>>,
    frames: AtomicU64,
    /// Set when the source is known to be back: a reconnection waiting
    /// out its backoff tries at once.
    source_back: AtomicBool,
}

impl StreamControl {
    /// The source is back (its publisher published again): reconnect now.
    pub fn source_back(&self) {
        self.source_back.store(true, Ordering::Relaxed);
    }

    pub fn request_stop(&self, mode: StopMode) {
        let mut stop = self.stop.lock().expect("stop lock");
        // A hard stop wins over a drain, never the other way round.
        if *stop != Some(StopMode::Now) {
            *stop = Some(mode);
        }
    }

    pub(crate) fn stop_mode(&self) -> Option<StopMode> {
        *self.stop.lock().expect("stop lock")
    }

    /// Frames captured so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

/// Where a stream's events go. `emit` returns false when nobody listens
/// any more, which stops the stream.
pub trait Emitter: Send {
    fn emit(&mut self, event: FrameEvent, payload: Vec<u8>, span: tracing::Span) -> bool;
    /// Called once the pipeline is playing (an RTMP pull is connecting).
    fn playing(&mut self) {}
}

/// Runs a stream to its end and returns the end event it emitted.
pub fn run_stream(
    stream_id: &str,
    source: &Source,
    settings: &StreamSettings,
    control: &Arc<StreamControl>,
    emitter: &mut dyn Emitter,
) -> StreamEnd {
    let start = StreamStart {
        stream_id: stream_id.to_string(),
        source: source.redacted(),
        source_kind: source.kind,
        fps: FPS,
        started_at_ms: now_ms(),
    };
    let span = tracing::info_span!("ingest.stream_start", stream_id);
    let resume = settings.resume;
    let listening = match resume {
        Some(at) => {
            tracing::info!(stream_id, source = %start.source, next_seq = at.next_seq,
                next_index = at.next_index, "stream resumed where it left off");
            true
        }
        None => {
            tracing::info!(stream_id, source = %start.source, "stream started");
            emitter.emit(FrameEvent::Start(start), Vec::new(), span)
        }
    };
    let mut run = Run {
        stream_id,
        settings,
        control,
        chunker: Chunker::new(stream_id, settings.chunk)
            .starting_at(resume.map_or(0, |r| r.next_seq)),
        next_index: resume.map_or(0, |r| r.next_index),
        last_frame_us: None,
        // What came between the last frame published and the first now is a gap.
        gap_from_us: resume.map(|r| r.last_frame_us),
        gaps: Vec::new(),
        listening,
    };
    let (reason, error) = run.capture_loop(source, emitter);
    if let Some((chunk, payload)) = run.chunker.flush() {
        run.emit_chunk(emitter, chunk, payload);
    }
    let end = StreamEnd {
        stream_id: stream_id.to_string(),
        reason,
        error,
        frames: run.next_index,
        chunks: run.chunker.chunks(),
        ended_at_ms: now_ms(),
        // Counted by the publisher, which fills it in before sending the end.
        frames_lost: 0,
        gaps: run.gaps,
        cancelled: false,
    };
    match &end.error {
        Some(e) => {
            tracing::error!(stream_id, reason = ?end.reason, frames = end.frames, error = %e, "stream ended with an error")
        }
        None => {
            tracing::info!(stream_id, reason = ?end.reason, frames = end.frames, "stream ended")
        }
    }
    let span = tracing::info_span!("ingest.stream_end", stream_id);
    emitter.emit(FrameEvent::End(end.clone()), Vec::new(), span);
    end
}

struct Run<'a> {
    stream_id: &'a str,
    settings: &'a StreamSettings,
    control: &'a Arc<StreamControl>,
    chunker: Chunker,
    next_index: u64,
    /// When the last frame was captured, µs since the epoch.
    last_frame_us: Option<i64>,
    /// Set when the source failed after frames came: the last frame's time.
    gap_from_us: Option<i64>,
    gaps: Vec<Gap>,
    listening: bool,
}

enum Attempt {
    Ended(EndReason),
    Failed(String),
}

impl Run<'_> {
    fn emit_chunk(
        &mut self,
        emitter: &mut dyn Emitter,
        chunk: mouthmap_contracts::FrameChunk,
        payload: Vec<u8>,
    ) {
        let span = tracing::info_span!(
            "ingest.chunk",
            stream_id = self.stream_id,
            seq = chunk.seq,
            first_frame = chunk.frames[0].index,
            frames = chunk.frames.len()
        );
        self.listening &= emitter.emit(FrameEvent::Chunk(chunk), payload, span);
    }

    /// Opens the source (again after failures of live sources) until it ends.
    fn capture_loop(
        &mut self,
        source: &Source,
        emitter: &mut dyn Emitter,
    ) -> (EndReason, Option<String>) {
        let mut failures = 0u32;
        loop {
            let frames_before = self.next_index;
            let capture_settings = CaptureSettings {
                jpeg_quality: (self.settings.pixel_format == PixelFormat::Jpeg)
                    .then_some(self.settings.jpeg_quality),
                ..self.settings.capture
            };
            let outcome = match Capture::open(source, capture_settings) {
                Ok(capture) => {
                    emitter.playing();
                    self.attempt(capture, source, emitter)
                }
                Err(e) => Attempt::Failed(e.to_string()),
            };
            let error = match outcome {
                Attempt::Ended(reason) => return (reason, None),
                Attempt::Failed(e) => e,
            };
            if self.next_index > frames_before {
                failures = 0; // it worked for a while: a fresh drop
            }
            if let Some(StopMode::Drain(reason)) = self.control.stop_mode() {
                // The publisher finished as its source went: a normal end.
                return (reason, None);
            }
            if self.gap_from_us.is_none() {
                self.gap_from_us = self.last_frame_us;
            }
            let stopping = self.control.stop_mode().is_some() || !self.listening;
            if !source.is_live() || stopping || failures >= self.settings.retries {
                let error = if source.is_live() && failures > 0 {
                    format!("{error} (gave up after {failures} reconnection attempts)")
                } else {
                    error
                };
                return (EndReason::Error, Some(error));
            }
            let delay = self.settings.retry_backoff * 2u32.saturating_pow(failures);
            failures += 1;
            tracing::warn!(stream_id = self.stream_id, %error, attempt = failures,
                ?delay, "source failed; reconnecting");
            if let Some(flushed) = self.chunker.flush() {
                self.emit_chunk(emitter, flushed.0, flushed.1);
            }
            self.chunker.mark_discontinuity();
            let until = Instant::now() + delay;
            while Instant::now() < until && !self.control.source_back.swap(false, Ordering::Relaxed)
            {
                match self.control.stop_mode() {
                    Some(StopMode::Drain(reason)) => return (reason, None),
                    Some(StopMode::Now) => return (EndReason::Error, Some(error)),
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn attempt(
        &mut self,
        mut capture: Capture,
        source: &Source,
        emitter: &mut dyn Emitter,
    ) -> Attempt {
        let opened = Instant::now();
        let mut last_frame: Option<Instant> = None;
        let mut drain_since: Option<Instant> = None;
        loop {
            if !self.listening {
                return Attempt::Ended(EndReason::Stopped);
            }
            match self.control.stop_mode() {
                Some(StopMode::Now) => return Attempt::Ended(EndReason::Stopped),
                Some(StopMode::Drain(reason)) => {
                    let since = *drain_since.get_or_insert_with(Instant::now);
                    let quiet_from = last_frame.map_or(since, |t| t.max(since));
                    if quiet_from.elapsed() >= self.settings.drain_quiet {
                        return Attempt::Ended(reason);
                    }
                }
                None => {}
            }
            match capture.poll(Duration::from_millis(50)) {
                Ok(Polled::Frame(mut f)) => {
                    last_frame = Some(Instant::now());
                    let captured_us = now_us();
                    if let Some(since) = self.gap_from_us.take() {
                        let frame = Duration::from_nanos(FRAME_DURATION_NS);
                        let missing =
                            Duration::from_micros(captured_us.saturating_sub(since).max(0) as u64)
                                .saturating_sub(frame);
                        tracing::warn!(
                            stream_id = self.stream_id,
                            at_frame = self.next_index,
                            missing_ms = missing.as_millis() as u64,
                            "the source is back after a gap"
                        );
                        push_gap(
                            &mut self.gaps,
                            Gap {
                                at_frame: self.next_index,
                                missing_ms: missing.as_millis() as u64,
                            },
                        );
                    }
                    self.last_frame_us = Some(captured_us);
                    // I420's first plane is the grey image: Gray8 keeps it
                    // alone. JPEG frames come compressed from the capture.
                    let format = match (self.settings.pixel_format, f.format) {
                        (PixelFormat::Gray8, PixelFormat::I420) => {
                            f.data.truncate(f.width as usize * f.height as usize);
                            PixelFormat::Gray8
                        }
                        (_, captured) => captured,
                    };
                    let frame = RawFrame {
                        index: self.next_index,
                        pts_ns: f.pts_ns,
                        ingest_us: captured_us,
                        width: f.width,
                        height: f.height,
                        format,
                        data: f.data,
                    };
                    self.next_index += 1;
                    self.control
                        .frames
                        .store(self.next_index, Ordering::Relaxed);
                    match self.chunker.push(frame) {
                        Ok(chunks) => {
                            for (c, p) in chunks {
                                self.emit_chunk(emitter, c, p);
                            }
                        }
                        Err(e) => return Attempt::Failed(e.to_string()),
                    }
                }
                Ok(Polled::Eos) => {
                    if self.settings.published && self.control.stop_mode().is_none() {
                        return Attempt::Failed(format!(
                            "{}: the server ended the stream before its publisher finished",
                            source.redacted()
                        ));
                    }
                    let reason = match self.control.stop_mode() {
                        Some(StopMode::Drain(r)) => r,
                        Some(StopMode::Now) => EndReason::Stopped,
                        None => EndReason::Eos,
                    };
                    if self.next_index == 0 && self.control.stop_mode().is_none() {
                        return Attempt::Failed(format!(
                            "{}: the source ended without a single video frame",
                            source.redacted()
                        ));
                    }
                    if !source.is_live()
                        && self.control.stop_mode().is_none()
                        && let Some(why) = capture.cut_short()
                    {
                        return Attempt::Failed(why);
                    }
                    return Attempt::Ended(reason);
                }
                Ok(Polled::Idle) => {
                    if !source.is_live() || drain_since.is_some() {
                        continue;
                    }
                    match last_frame {
                        None if opened.elapsed() >= self.settings.connect_timeout => {
                            return Attempt::Failed(format!(
                                "{}: no video within {} of opening",
                                source.redacted(),
                                humantime::format_duration(self.settings.connect_timeout)
                            ));
                        }
                        Some(t) if t.elapsed() >= self.settings.stall_timeout => {
                            return Attempt::Failed(format!(
                                "{}: no frame for {}",
                                source.redacted(),
                                humantime::format_duration(self.settings.stall_timeout)
                            ));
                        }
                        _ => {}
                    }
                }
                Err(CaptureError::NoVideo(name)) => {
                    return Attempt::Failed(format!("{name}: the source has no video stream"));
                }
                Err(e) => return Attempt::Failed(e.to_string()),
            }
        }
    }
}

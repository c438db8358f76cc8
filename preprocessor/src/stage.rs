//! The preprocess stage, free of transport: `frames` events in, `mouths`
//! events out, one tracker per stream. The Kafka service and the offline
//! `mouthmap crops` command both run exactly this.

use std::borrow::Cow;
use std::collections::HashMap;

use mouthmap_contracts::{
    ContractError, FrameChunk, FrameEvent, MouthChunk, MouthEnd, MouthEvent, PixelFormat,
    StreamQuality,
};

use crate::detector::{Detector, DetectorError};
use crate::tracker::{FrameCrop, MouthTracker, TrackerSettings};

/// Why an event could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The event breaks the contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// Frames too large to decode safely.
    #[error(
        "frames of {width}x{height} are over the {max}-pixel limit (ingest scales frames down with --max-width)"
    )]
    TooLarge { width: u32, height: u32, max: u64 },
    /// A chunk whose frames would take too much memory decoded.
    #[error(
        "a chunk of {frames} frames of {width}x{height} decodes to {bytes} bytes, over the {max}-byte limit (ingest publishes a few frames per chunk)"
    )]
    ChunkTooLarge {
        frames: usize,
        width: u32,
        height: u32,
        bytes: u64,
        max: u64,
    },
    /// Frames too small for a face.
    #[error("frames of {width}x{height} are too small to find a face in (at least 32x32)")]
    TooSmall { width: u32, height: u32 },
    /// A JPEG frame that does not decode.
    #[error("frame {frame} of chunk {seq}: {source}")]
    Jpeg {
        frame: u64,
        seq: u64,
        source: crate::jpeg::JpegError,
    },
    /// The face detector failed.
    #[error(transparent)]
    Detector(#[from] DetectorError),
}

#[derive(Default)]
struct QualityTotals {
    frames: u64,
    faces: u64,
    brightness: f64,
    sharpness: f64,
    box_width: f64,
    no_face: bool,
}

impl QualityTotals {
    fn add(&mut self, c: &FrameCrop) {
        self.frames += 1;
        self.faces += c.quality.face_found as u64;
        self.brightness += c.quality.brightness as f64;
        self.sharpness += c.quality.sharpness as f64;
        self.box_width += c.quality.box_width as f64;
        self.no_face = c.no_face;
    }

    fn summary(&self) -> StreamQuality {
        let n = self.frames.max(1) as f64;
        StreamQuality {
            frames: self.frames,
            face_share: (self.faces as f64 / n) as f32,
            mean_brightness: (self.brightness / n) as f32,
            mean_sharpness: (self.sharpness / n) as f32,
            mean_box_width: (self.box_width / n) as f32,
            no_face: self.no_face || self.frames == 0,
        }
    }
}

struct StreamState {
    tracker: MouthTracker,
    seq: u64,
    totals: QualityTotals,
    /// When the stream's last event came.
    last_seen: std::time::Instant,
}

impl StreamState {
    fn new(settings: TrackerSettings) -> Self {
        Self {
            tracker: MouthTracker::new(settings),
            seq: 0,
            totals: QualityTotals::default(),
            last_seen: std::time::Instant::now(),
        }
    }
}

/// Pixels of one frame at most (3840x2160): bigger frames are refused
/// before anything is decoded or allocated for them.
pub const MAX_FRAME_PIXELS: u64 = 3840 * 2160;

/// Bytes a chunk's frames may take once decoded (all of a chunk's frames
/// are decoded before any is used): 64 MB, forty times a default chunk of
/// three 640x480 frames.
pub const MAX_CHUNK_DECODED_BYTES: u64 = 64 << 20;

/// The stage: a detector shared by all streams, a tracker per stream.
pub struct Preprocessor {
    detector: Detector,
    settings: TrackerSettings,
    streams: HashMap<String, StreamState>,
}

impl Preprocessor {
    pub fn new(detector: Detector, settings: TrackerSettings) -> Self {
        Self {
            detector,
            settings,
            streams: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &TrackerSettings {
        &self.settings
    }

    /// Streams in progress.
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Drops the state of streams with no event for `idle` (an end that
    /// never came), so per-stream state cannot grow without bound; returns
    /// their ids.
    pub fn expire_idle(&mut self, idle: std::time::Duration) -> Vec<String> {
        let stale: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| s.last_seen.elapsed() >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.streams.remove(id);
        }
        stale
    }

    /// The stream's quality so far (None for a stream not open).
    pub fn stream_quality(&self, stream_id: &str) -> Option<StreamQuality> {
        self.streams.get(stream_id).map(|s| s.totals.summary())
    }

    /// Processes one `frames` event.
    pub fn handle(
        &mut self,
        event: &FrameEvent,
        payload: &[u8],
    ) -> Result<Vec<(MouthEvent, Vec<u8>)>, StageError> {
        self.handle_observed(event, payload, &mut |_| {})
    }

    /// As [`handle`](Self::handle), showing every frame's crop, box and face
    /// to `observe` (for previews and checks).
    pub fn handle_observed(
        &mut self,
        event: &FrameEvent,
        payload: &[u8],
        observe: &mut dyn FnMut(&FrameCrop),
    ) -> Result<Vec<(MouthEvent, Vec<u8>)>, StageError> {
        match event {
            FrameEvent::Start(start) => {
                // A restarted stream starts over.
                self.streams
                    .insert(start.stream_id.clone(), StreamState::new(self.settings));
                Ok(vec![(MouthEvent::Start(start.clone()), Vec::new())])
            }
            FrameEvent::Chunk(chunk) => {
                let out = self.chunk(chunk, payload, observe)?;
                Ok(vec![out])
            }
            FrameEvent::End(end) => {
                let quality = self
                    .streams
                    .remove(&end.stream_id)
                    .map(|s| s.totals.summary())
                    .unwrap_or_else(|| QualityTotals::default().summary());
                Ok(vec![(
                    MouthEvent::End(MouthEnd {
                        end: end.clone(),
                        quality,
                    }),
                    Vec::new(),
                )])
            }
        }
    }

    fn chunk(
        &mut self,
        chunk: &FrameChunk,
        payload: &[u8],
        observe: &mut dyn FnMut(&FrameCrop),
    ) -> Result<(MouthEvent, Vec<u8>), StageError> {
        chunk.validate(payload)?;
        let (w, h) = (chunk.width, chunk.height);
        if w < 32 || h < 32 {
            return Err(StageError::TooSmall {
                width: w,
                height: h,
            });
        }
        if w as u64 * h as u64 > MAX_FRAME_PIXELS {
            return Err(StageError::TooLarge {
                width: w,
                height: h,
                max: MAX_FRAME_PIXELS,
            });
        }
        let decoded = chunk.frames.len() as u64 * w as u64 * h as u64 * 3 / 2;
        if chunk.format == PixelFormat::Jpeg && decoded > MAX_CHUNK_DECODED_BYTES {
            return Err(StageError::ChunkTooLarge {
                frames: chunk.frames.len(),
                width: w,
                height: h,
                bytes: decoded,
                max: MAX_CHUNK_DECODED_BYTES,
            });
        }
        let frames = frames_i420(chunk, payload)?;
        let (cw, ch) = (self.settings.crop_width, self.settings.crop_height);
        let mut crops = Vec::with_capacity((cw * ch) as usize * chunk.frames.len());
        let mut quality = Vec::with_capacity(chunk.frames.len());
        let mut no_face = false;
        let settings = self.settings;
        let state = self
            .streams
            .entry(chunk.stream_id.clone())
            .or_insert_with(|| StreamState::new(settings));
        state.last_seen = std::time::Instant::now();
        for c in state
            .tracker
            .process_chunk(&mut self.detector, &frames, w, h)?
        {
            observe(&c);
            state.totals.add(&c);
            no_face = c.no_face;
            crops.extend_from_slice(&c.crop);
            quality.push(c.quality);
        }
        let out = MouthChunk {
            stream_id: chunk.stream_id.clone(),
            seq: state.seq,
            width: cw,
            height: ch,
            frames: chunk.frames.clone(),
            quality,
            no_face,
            discontinuity: chunk.discontinuity,
        };
        state.seq += 1;
        Ok((MouthEvent::Chunk(out), crops))
    }
}

/// A checked chunk's frames as I420, the layout the detector and the
/// tracker read: raw I420 frames as they are, Gray8 frames with neutral
/// chroma added, JPEG frames decoded. All of a chunk's frames are decoded
/// before any is used, so a broken one dead-letters its chunk without
/// touching the stream's state.
pub fn frames_i420<'a>(
    chunk: &FrameChunk,
    payload: &'a [u8],
) -> Result<Vec<Cow<'a, [u8]>>, StageError> {
    let (w, h) = (chunk.width, chunk.height);
    let i420 = PixelFormat::I420
        .frame_bytes(w, h)
        .expect("I420 is a raw format");
    chunk
        .frame_ranges()
        .into_iter()
        .zip(&chunk.frames)
        .map(|(r, info)| {
            let frame = &payload[r];
            match chunk.format {
                PixelFormat::I420 => Ok(Cow::Borrowed(frame)),
                PixelFormat::Gray8 => {
                    let mut padded = Vec::with_capacity(i420);
                    padded.extend_from_slice(frame);
                    padded.resize(i420, 128);
                    Ok(Cow::Owned(padded))
                }
                PixelFormat::Jpeg => {
                    let mut out = Vec::new();
                    crate::jpeg::decode_i420(frame, w, h, &mut out).map_err(|source| {
                        StageError::Jpeg {
                            frame: info.index,
                            seq: chunk.seq,
                            source,
                        }
                    })?;
                    Ok(Cow::Owned(out))
                }
            }
        })
        .collect()
}

//! The infer stage, free of transport: `mouths` events in, `logits` events
//! out. A buffer per stream forms 75-frame windows every `hop` frames; ready
//! windows from all streams wait in one queue and run as a batch when the
//! queue holds `max_batch` windows or its oldest has waited `max_delay`
//! (Triton's dynamic batching).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mouthmap_contracts::{
    ContractError, FrameInfo, LogitsEvent, LogitsWindow, MouthChunk, MouthEvent,
};

use crate::model::{Model, ModelError};

/// Windowing and batching settings.
#[derive(Debug, Clone, Copy)]
pub struct InferSettings {
    /// Frames between the starts of two windows (a short hop gives earlier
    /// partial transcripts for more compute).
    pub hop: usize,
    /// Windows per model run at most.
    pub max_batch: usize,
    /// How long a ready window may wait for others to fill a batch.
    pub max_delay: Duration,
    /// Before a stream's first whole window: a window every `early` frames
    /// over the frames received so far, padded to the window's length with
    /// the newest frame (a still mouth), so a new stream's first words do
    /// not wait for a whole window (3 s at 25 fps). Each is marked with the
    /// same first frame and more valid frames than the last; the decoder
    /// replaces it with the next. 0: none.
    pub early: usize,
    /// How a model that comes with a front end and a back end
    /// ([`crate::split`]) reads a stream.
    pub front_end: FrontEnd,
}

/// How a model with a front end and a back end of its own reads a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrontEnd {
    /// Each frame's front end once, cached per stream; each window runs
    /// only the back end. A window's first and last `context_frames` frames
    /// (which the whole graph reads against the window's edges) are computed
    /// from the window's own crops, so every window's probabilities are the
    /// whole graph's.
    #[default]
    Once,
    /// The whole graph on each window, as for a model that comes as one
    /// graph: each frame's front end is computed once per window it is in.
    PerWindow,
}

impl Default for InferSettings {
    fn default() -> Self {
        Self {
            hop: 25,
            max_batch: 16,
            max_delay: Duration::from_millis(20),
            early: 25,
            front_end: FrontEnd::Once,
        }
    }
}

/// Why an event could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The event breaks the contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// Crops of another size than the model takes.
    #[error(
        "crops are {width}x{height} but the model {model} takes {model_width}x{model_height}: set the preprocessor's --crop-size"
    )]
    CropSize {
        width: u32,
        height: u32,
        model: String,
        model_width: usize,
        model_height: usize,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Models served together must read the same windows.
    #[error(
        "the model {model} reads {frames} frames of {width}x{height}, the first served model {first_frames} frames of {first_width}x{first_height}: models served together must read the same windows"
    )]
    Geometry {
        model: String,
        frames: usize,
        width: usize,
        height: usize,
        first_frames: usize,
        first_width: usize,
        first_height: usize,
    },
}

/// A model version the stage serves: its name and repository version (the
/// file's metadata name and version 0 when it came from a file).
pub struct Served {
    pub name: String,
    pub version: u64,
    pub model: Model,
    /// Gone from the repository: no new stream is given to it; the
    /// streams it reads finish on it.
    pub retired: bool,
}

impl Served {
    /// A model from a file, outside any repository.
    pub fn file(model: Model) -> Self {
        Self {
            name: model.info().name.clone(),
            version: 0,
            model,
            retired: false,
        }
    }

    /// The version as metrics and transcripts name it: the repository
    /// version, or the metadata's version for a model from a file.
    pub fn version_label(&self) -> String {
        if self.version == 0 {
            self.model.info().version.clone()
        } else {
            self.version.to_string()
        }
    }
}

/// A window waiting for its batch.
#[derive(Debug, Clone)]
pub struct PendingWindow {
    pub stream_id: String,
    /// Index of the served model that reads it.
    pub model: usize,
    /// A copy read by the shadow version ([`Inferencer::set_shadow`]).
    pub shadow: bool,
    pub first_frame: u64,
    pub valid: usize,
    /// Share of the valid frames with a face.
    pub face_share: f32,
    pub newest_ingest_us: i64,
    pub crops: Vec<u8>,
    /// The window's front-end features (`frames * feature_size`), computed
    /// once per frame by the front end of `model`, which then runs only its
    /// back end; None: the model reads `crops`.
    pub features: Option<Vec<f32>>,
    pub queued: Instant,
    /// Whatever the caller attached (trace context, for the batch span's links).
    pub tag: Vec<(String, String)>,
}

#[derive(Default)]
struct StreamBuffer {
    /// The served model that reads this stream, for its whole life.
    model: usize,
    crops: VecDeque<u8>,
    frames: VecDeque<FrameInfo>,
    /// Whether each buffered frame's crop came from a face.
    faces: VecDeque<bool>,
    /// Frames dropped from the front of the buffer so far.
    dropped: u64,
    /// Stream-relative position (count of frames received) of the next window's start.
    next_start: u64,
    received: u64,
    /// The last window queued ends at this received-frame count.
    covered: u64,
    /// The newest frame index received: frames at or before it again (a
    /// preprocessor that restarted and re-read its input) are duplicates.
    last_index: Option<u64>,
    /// Front-end features of the frames from stream position `feat_from`
    /// to `feat_final` (exclusive), each computed from its real neighbours
    /// ([`FrontEnd::Once`]): `feature_size` values a frame.
    feats: VecDeque<f32>,
    feat_from: u64,
    feat_final: u64,
}

/// The sizes the front-end path works with.
#[derive(Debug, Clone, Copy)]
struct Dims {
    frames: usize,
    frame_px: usize,
    context: usize,
    /// Features a frame.
    fsize: usize,
}

impl Dims {
    /// Those of `model` when it computes each frame once under `front_end`.
    fn of(front_end: FrontEnd, model: &Model) -> Option<Self> {
        let fb = model.front_back().filter(|_| front_end == FrontEnd::Once)?;
        let i = model.info();
        Some(Self {
            frames: i.frames,
            frame_px: i.height * i.width,
            context: fb.context(),
            fsize: fb.feature_size(),
        })
    }
}

/// What fills a window past its valid frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pad {
    /// Black frames (a stream's end window).
    Zeros,
    /// The newest frame again, a still mouth (an early window).
    Newest,
}

impl StreamBuffer {
    /// Runs the front end over the frames whose features are not cached
    /// yet (with up to `context` frames before them as their left
    /// neighbours) and caches those of every frame whose `context` right
    /// neighbours have arrived. Returns the features of the newest frames,
    /// not cached: they see the end of what has arrived as a window's end,
    /// so they are the last frames of a window that ends at the newest frame.
    fn advance(&mut self, model: &mut Model, d: Dims) -> Result<Vec<f32>, ModelError> {
        let Dims {
            frame_px,
            context,
            fsize,
            ..
        } = d;
        let start = self.feat_final.max(self.dropped);
        if start > self.feat_final {
            // Frames between were never needed (a hop longer than a window).
            self.feats.clear();
            self.feat_from = start;
            self.feat_final = start;
        }
        let final_end = self.received.saturating_sub(context as u64);
        if final_end <= start {
            return Ok(Vec::new());
        }
        let from = start - (context as u64).min(start - self.dropped);
        let offset = (from - self.dropped) as usize;
        let input: Vec<u8> = self.crops.range(offset * frame_px..).copied().collect();
        let out = model.frame_features(&input)?;
        let at = |p: u64| ((p - from) as usize) * fsize;
        self.feats.extend(&out[at(start)..at(final_end)]);
        self.feat_final = final_end;
        Ok(out[at(final_end)..].to_vec())
    }

    /// The front-end features of `window` (its crops, `frames` frames from
    /// stream position `start`, of which `valid` are the stream's and the
    /// rest padding), exactly as the whole graph computes them on the
    /// window: the frames whose neighbours within `context` are all inside
    /// the window and real come from the cache; the window's first
    /// `context` frames (they see the window's edge, not the frames before)
    /// and its last ones (the window's end, or padding) are computed here
    /// from the window's own crops, or taken from `newest` (what
    /// [`StreamBuffer::advance`] returned) when the window ends at the newest
    /// frame.
    fn window_features(
        &self,
        model: &mut Model,
        newest: &[f32],
        w: &PendingWindow,
        start: u64,
        d: Dims,
    ) -> Result<Vec<f32>, ModelError> {
        let Dims {
            frames,
            frame_px,
            context,
            fsize,
        } = d;
        let (window, valid) = (&w.crops[..], w.valid);
        let c = context as u64;
        let lo = if start == 0 { 0 } else { start + c };
        let hi = self
            .feat_final
            .min((start + valid as u64).saturating_sub(c));
        if hi <= lo || lo < self.feat_from || frames < 2 * context {
            // Nothing to reuse: the front end over the whole window.
            return model.frame_features(window);
        }
        let mut out = Vec::with_capacity(frames * fsize);
        if start > 0 {
            let left = model.frame_features(&window[..2 * context * frame_px])?;
            out.extend_from_slice(&left[..context * fsize]);
        }
        let i = ((lo - self.feat_from) as usize) * fsize;
        out.extend(self.feats.range(i..i + ((hi - lo) as usize) * fsize));
        let end = start + frames as u64;
        if valid == frames
            && end == self.received
            && hi == self.feat_final
            && newest.len() == ((end - hi) as usize) * fsize
        {
            out.extend_from_slice(newest);
            return Ok(out);
        }
        let tail_from = (hi - c - start) as usize;
        if valid + 2 * context < frames {
            // Padded (an early window, a short stream's end): one frame over
            // and over from `valid` on. The frames up to the first whose
            // neighbours are all padding, that one's feature (a still mouth)
            // for every frame up to the window's last `context`, and those
            // (the padding seen against the window's end).
            let last = valid + context;
            let run = model
                .frame_features(&window[tail_from * frame_px..(last + context + 1) * frame_px])?;
            let taken = &run[context * fsize..(last - tail_from + 1) * fsize];
            out.extend_from_slice(taken);
            let still = &taken[taken.len() - fsize..];
            for _ in last + 1..frames - context {
                out.extend_from_slice(still);
            }
            let edge = model.frame_features(&window[(frames - 2 * context) * frame_px..])?;
            out.extend_from_slice(&edge[context * fsize..]);
        } else {
            let tail = model.frame_features(&window[tail_from * frame_px..])?;
            out.extend_from_slice(&tail[context * fsize..]);
        }
        debug_assert_eq!(out.len(), frames * fsize);
        Ok(out)
    }

    /// Computes `window`'s features (from stream position `start`), running
    /// the front end over the newest frames first unless `newest` already
    /// holds what that gave for this chunk.
    fn attach_features(
        &mut self,
        model: &mut Model,
        window: &mut PendingWindow,
        start: u64,
        d: Dims,
        newest: &mut Option<Vec<f32>>,
    ) -> Result<(), ModelError> {
        if newest.is_none() {
            *newest = Some(self.advance(model, d)?);
        }
        let features = self.window_features(
            model,
            newest.as_deref().unwrap_or_default(),
            window,
            start,
            d,
        )?;
        window.features = Some(features);
        Ok(())
    }

    /// Drops buffered frames (and their features) before stream position `keep_from`.
    fn drop_before(&mut self, keep_from: u64, frame_px: usize, fsize: usize) {
        let drop = (keep_from - self.dropped) as usize;
        self.crops.drain(..drop * frame_px);
        self.frames.drain(..drop);
        self.faces.drain(..drop);
        self.dropped = keep_from;
        let feat_drop = keep_from
            .min(self.feat_final)
            .saturating_sub(self.feat_from);
        self.feats.drain(..feat_drop as usize * fsize);
        self.feat_from += feat_drop;
    }

    /// A window over the buffered frames from `offset` to the newest (at
    /// most `frames` of them), padded to `frames` frames of `frame_px` bytes.
    fn tail_window(
        &self,
        stream_id: &str,
        offset: usize,
        frames: usize,
        frame_px: usize,
        pad: Pad,
        tag: &[(String, String)],
    ) -> PendingWindow {
        let mut crops: Vec<u8> = Vec::with_capacity(frames * frame_px);
        crops.extend(self.crops.range(offset * frame_px..));
        let valid = crops.len() / frame_px.max(1);
        match pad {
            Pad::Zeros => crops.resize(frames * frame_px, 0),
            Pad::Newest => {
                let newest = crops[(valid - 1) * frame_px..valid * frame_px].to_vec();
                while crops.len() < frames * frame_px {
                    crops.extend_from_slice(&newest);
                }
            }
        }
        let window_frames: Vec<&FrameInfo> = self.frames.range(offset..).collect();
        let faces = self.faces.range(offset..).filter(|&&f| f).count();
        PendingWindow {
            stream_id: stream_id.to_string(),
            model: self.model,
            shadow: false,
            first_frame: window_frames[0].index,
            valid,
            face_share: faces as f32 / valid.max(1) as f32,
            newest_ingest_us: window_frames.iter().map(|f| f.ingest_us).max().unwrap_or(0),
            crops,
            features: None,
            queued: Instant::now(),
            tag: tag.to_vec(),
        }
    }
}

/// One batch the model ran: the windows it carried, for tracing.
#[derive(Debug, Clone)]
pub struct BatchReport {
    /// The model that ran it: its name and version (see [`Served::version_label`]).
    pub model: String,
    pub version: String,
    /// The repository version that ran it (0: a model from a file).
    pub served_version: u64,
    /// The run failed (its windows went to the default version).
    pub failed: bool,
    pub windows: usize,
    pub elapsed: Duration,
    pub tags: Vec<Vec<(String, String)>>,
}

/// Versions served together must read the same windows.
fn same_windows(first: &Served, other: &Served) -> Result<(), InferError> {
    let (f, i) = (first.model.info(), other.model.info());
    if (i.frames, i.width, i.height) != (f.frames, f.width, f.height) {
        return Err(InferError::Geometry {
            model: format!("{}:{}", other.name, other.version),
            frames: i.frames,
            width: i.width,
            height: i.height,
            first_frames: f.frames,
            first_width: f.width,
            first_height: f.height,
        });
    }
    Ok(())
}

/// The stage.
pub struct Inferencer {
    /// Every version served; streams read the one they were assigned
    /// ([`Inferencer::assign`]), the first by default.
    models: Vec<Served>,
    settings: InferSettings,
    streams: HashMap<String, StreamBuffer>,
    queue: VecDeque<PendingWindow>,
    batches: Vec<BatchReport>,
    /// The model (name, version label) whose run failed last.
    failed: Option<(String, String)>,
    /// The version that also reads every window, in the shadow.
    shadow: Option<usize>,
}

/// One event out, with the tag of the input that caused it.
#[derive(Debug, Clone)]
pub struct Produced {
    pub event: LogitsEvent,
    pub payload: Vec<u8>,
    pub tag: Vec<(String, String)>,
}

type Out = Vec<Produced>;

fn produced(event: LogitsEvent, tag: &[(String, String)]) -> Produced {
    Produced {
        event,
        payload: Vec::new(),
        tag: tag.to_vec(),
    }
}

impl Inferencer {
    /// One model, from a file.
    pub fn new(model: Model, settings: InferSettings) -> Self {
        Self::with(vec![Served::file(model)], settings)
    }

    fn with(models: Vec<Served>, settings: InferSettings) -> Self {
        Self {
            models,
            settings,
            streams: HashMap::new(),
            queue: VecDeque::new(),
            batches: Vec::new(),
            failed: None,
            shadow: None,
        }
    }

    /// Several model versions at once (the first is the default); they must
    /// read the same windows (frames, height, width).
    pub fn serving(models: Vec<Served>, settings: InferSettings) -> Result<Self, InferError> {
        let Some(first) = models.first() else {
            return Err(InferError::Model(ModelError::Run(
                "no model to serve".into(),
            )));
        };
        for m in &models[1..] {
            same_windows(first, m)?;
        }
        Ok(Self::with(models, settings))
    }

    /// The default model (the first served).
    pub fn model(&self) -> &Model {
        &self.models[0].model
    }

    /// Every served version.
    pub fn served(&self) -> &[Served] {
        &self.models
    }

    /// Serves one more version (hot reload); returns its index. It must read
    /// the same windows as the others.
    pub fn add(&mut self, served: Served) -> Result<usize, InferError> {
        same_windows(&self.models[0], &served)?;
        self.models.push(served);
        Ok(self.models.len() - 1)
    }

    /// No new stream goes to version `index` (it left the repository);
    /// the streams it reads finish on it. The default version (0) is never
    /// retired.
    pub fn retire(&mut self, index: usize) {
        if index > 0
            && let Some(m) = self.models.get_mut(index)
        {
            m.retired = true;
        }
    }

    /// Version `index` also reads every window of every stream it does not
    /// read itself, in the shadow: its windows are marked `shadow` and the
    /// decoder keeps them apart (None: no shadow).
    pub fn set_shadow(&mut self, index: Option<usize>) {
        self.shadow = index.filter(|&i| i < self.models.len());
    }

    /// Queues `w`, and its shadow copy when a shadow version is set.
    fn enqueue(&mut self, w: PendingWindow) {
        if let Some(s) = self.shadow
            && s != w.model
        {
            let mut copy = w.clone();
            copy.model = s;
            copy.shadow = true;
            // Features are the reading model's own: the shadow reads crops.
            copy.features = None;
            self.queue.push_back(w);
            self.queue.push_back(copy);
        } else {
            self.queue.push_back(w);
        }
    }

    /// The served model that reads `stream_id`, if the stage knows the stream.
    pub fn model_of(&self, stream_id: &str) -> Option<usize> {
        self.streams.get(stream_id).map(|b| b.model)
    }

    /// Makes the served model `index` read `stream_id` from now on (before
    /// its first frames: a stream never changes model mid-way, so a stream
    /// that already has a buffer keeps its model). Returns the stream's model.
    pub fn assign(&mut self, stream_id: &str, index: usize) -> usize {
        let index = index.min(self.models.len() - 1);
        self.streams
            .entry(stream_id.to_string())
            .or_insert_with(|| StreamBuffer {
                model: index,
                ..StreamBuffer::default()
            })
            .model
    }

    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Windows waiting for their batch.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The model (name, version label) whose run failed, once.
    pub fn take_failed(&mut self) -> Option<(String, String)> {
        self.failed.take()
    }

    /// Batches run since the last call (for spans and metrics).
    pub fn take_batches(&mut self) -> Vec<BatchReport> {
        std::mem::take(&mut self.batches)
    }

    /// Handles one `mouths` event; `tag` travels with any window it completes.
    pub fn handle(
        &mut self,
        event: &MouthEvent,
        payload: &[u8],
        tag: &[(String, String)],
    ) -> Result<Out, InferError> {
        match event {
            MouthEvent::Start(s) => {
                // A fresh buffer, reading the model it was assigned.
                let model = self.model_of(&s.stream_id).unwrap_or(0);
                self.streams.insert(
                    s.stream_id.clone(),
                    StreamBuffer {
                        model,
                        ..StreamBuffer::default()
                    },
                );
                Ok(vec![produced(LogitsEvent::Start(s.clone()), tag)])
            }
            MouthEvent::Chunk(c) => {
                self.push(c, payload, tag)?;
                if self.queue.len() >= self.settings.max_batch || self.settings.max_delay.is_zero()
                {
                    self.flush()
                } else {
                    Ok(Vec::new())
                }
            }
            MouthEvent::End(e) => {
                let id = &e.end.stream_id;
                self.finish(id, tag)?;
                // Everything of this stream goes out before its end.
                let mut out = self.flush()?;
                self.streams.remove(id);
                out.push(produced(LogitsEvent::End(e.end.clone()), tag));
                Ok(out)
            }
        }
    }

    /// The oldest frame index of `stream_id` that the stage still needs: the
    /// front of its buffer, or the first frame of a window of it still
    /// queued. None when it holds nothing of the stream. Input older than
    /// this can be committed: a restart rebuilds the stream from here.
    pub fn oldest_needed(&self, stream_id: &str) -> Option<u64> {
        let buffered = self
            .streams
            .get(stream_id)
            .and_then(|b| b.frames.front().map(|f| f.index));
        let queued = self
            .queue
            .iter()
            .filter(|w| w.stream_id == stream_id)
            .map(|w| w.first_frame)
            .min();
        match (buffered, queued) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops the buffers of these streams (those there): an end that never
    /// came (a crashed publisher, a lost message), so per-stream state cannot
    /// grow without bound; returns their ids. Windows already queued still
    /// run. The Kafka service judges idleness by event time
    /// (`mouthmap_bus::idle::IdleClock`) and calls this.
    pub fn drop_streams(&mut self, ids: &[String]) -> Vec<String> {
        ids.iter()
            .filter(|id| self.streams.remove(id.as_str()).is_some())
            .cloned()
            .collect()
    }

    /// Runs the queue if its oldest window has waited `max_delay`.
    pub fn tick(&mut self) -> Result<Out, InferError> {
        match self.queue.front() {
            Some(w) if w.queued.elapsed() >= self.settings.max_delay => self.flush(),
            _ => Ok(Vec::new()),
        }
    }

    /// Bytes of one window (every served model reads the same windows).
    fn window_bytes(&self) -> usize {
        let i = self.models[0].model.info();
        i.frames * i.height * i.width
    }

    fn push(
        &mut self,
        c: &MouthChunk,
        payload: &[u8],
        tag: &[(String, String)],
    ) -> Result<(), InferError> {
        let model = self.model_of(&c.stream_id).unwrap_or(0);
        let info = self.models[model].model.info();
        if (c.width as usize, c.height as usize) != (info.width, info.height) {
            return Err(InferError::CropSize {
                width: c.width,
                height: c.height,
                model: info.name.clone(),
                model_width: info.width,
                model_height: info.height,
            });
        }
        c.validate(payload)?;
        let (frames, hop, frame_px) = (
            info.frames,
            self.settings.hop.max(1),
            info.width * info.height,
        );
        let wb = self.window_bytes();
        let buf = self.streams.entry(c.stream_id.clone()).or_default();
        let model = buf.model;
        let reader = &mut self.models[model].model;
        // Set when each frame's front end is computed once.
        let once = Dims::of(self.settings.front_end, reader);
        let fsize = once.map_or(0, |d| d.fsize);
        // At-least-once upstream: frames already received are skipped, so a
        // redelivered chunk cannot repeat frames inside a window.
        let skip = c
            .frames
            .iter()
            .take_while(|f| buf.last_index.is_some_and(|last| f.index <= last))
            .count();
        if skip == c.frames.len() {
            return Ok(());
        }
        buf.last_index = c.frames.last().map(|f| f.index);
        buf.crops.extend(&payload[skip * frame_px..]);
        buf.frames.extend(c.frames[skip..].iter().cloned());
        buf.faces
            .extend(c.quality[skip..].iter().map(|q| q.face_found));
        buf.received += (c.frames.len() - skip) as u64;
        let mut made = Vec::new();
        let early = self.settings.early as u64;
        // Before the first whole window (nothing dropped, no window started),
        // an early window is due at each multiple of `early` past the last.
        if early > 0
            && buf.dropped == 0
            && buf.next_start == 0
            && buf.received < frames as u64
            && buf.received >= (buf.covered / early + 1) * early
        {
            // Every frame so far, the newest repeated.
            let mut window = buf.tail_window(&c.stream_id, 0, frames, frame_px, Pad::Newest, tag);
            if let Some(d) = once {
                buf.attach_features(reader, &mut window, 0, d, &mut None)?;
            }
            made.push(window);
            buf.covered = buf.received;
        }
        // The newest frames' features, once a window is due.
        let mut newest = None;
        while buf.next_start + frames as u64 <= buf.received {
            let offset = (buf.next_start - buf.dropped) as usize;
            let crops: Vec<u8> = buf
                .crops
                .range(offset * frame_px..offset * frame_px + wb)
                .copied()
                .collect();
            let window_frames: Vec<&FrameInfo> =
                buf.frames.range(offset..offset + frames).collect();
            let faces = buf
                .faces
                .range(offset..offset + frames)
                .filter(|&&f| f)
                .count();
            let mut window = PendingWindow {
                stream_id: c.stream_id.clone(),
                model,
                shadow: false,
                first_frame: window_frames[0].index,
                valid: frames,
                face_share: faces as f32 / frames as f32,
                newest_ingest_us: window_frames.iter().map(|f| f.ingest_us).max().unwrap_or(0),
                crops,
                features: None,
                queued: Instant::now(),
                tag: tag.to_vec(),
            };
            if let Some(d) = once {
                let start = buf.next_start;
                buf.attach_features(reader, &mut window, start, d, &mut newest)?;
            }
            buf.covered = buf.next_start + frames as u64;
            buf.next_start += hop as u64;
            // Keep what later windows can still use, and at least the last
            // window's worth, for an end-aligned window when the stream ends,
            // and the left neighbours of the frames whose features are not
            // final.
            let mut keep_from = buf
                .next_start
                .min(buf.received.saturating_sub(frames as u64));
            if let Some(d) = once {
                keep_from = keep_from.min(buf.feat_final.saturating_sub(d.context as u64));
            }
            buf.drop_before(keep_from.max(buf.dropped), frame_px, fsize);
            made.push(window);
        }
        for w in made {
            self.enqueue(w);
        }
        Ok(())
    }

    /// At a stream's end: one last window, aligned to the end, when frames
    /// are left that no window covered (or the stream was shorter than one).
    fn finish(&mut self, id: &str, tag: &[(String, String)]) -> Result<(), InferError> {
        let info = self.models[0].model.info();
        let (frames, frame_px) = (info.frames, info.width * info.height);
        let Some(buf) = self.streams.get_mut(id) else {
            return Ok(());
        };
        if buf.received == 0 || buf.covered >= buf.received {
            return Ok(());
        }
        let start = buf.received.saturating_sub(frames as u64).max(buf.dropped);
        let offset = (start - buf.dropped) as usize;
        let mut window = buf.tail_window(id, offset, frames, frame_px, Pad::Zeros, tag);
        let reader = &mut self.models[buf.model].model;
        if let Some(d) = Dims::of(self.settings.front_end, reader) {
            buf.attach_features(reader, &mut window, start, d, &mut None)?;
        }
        buf.covered = buf.received;
        self.enqueue(window);
        Ok(())
    }

    /// Runs every queued window, `max_batch` at a time, each model's
    /// windows in batches of their own (a stream's windows stay in order).
    pub fn flush(&mut self) -> Result<Out, InferError> {
        let mut out = Vec::new();
        while let Some(front) = self.queue.front() {
            let model = front.model;
            let max = self.settings.max_batch.max(1);
            let mut batch: Vec<PendingWindow> = Vec::with_capacity(max);
            let mut rest = VecDeque::with_capacity(self.queue.len());
            for w in self.queue.drain(..) {
                if w.model == model && batch.len() < max {
                    batch.push(w);
                } else {
                    rest.push_back(w);
                }
            }
            self.queue = rest;
            let n = batch.len();
            let window_bytes = self.window_bytes();
            let served = &mut self.models[model];
            let started = Instant::now();
            let probs = match read_batch(&mut served.model, &batch, window_bytes) {
                Ok(p) => p,
                // A version other than the default failed: its windows are
                // read by the default version instead (nothing is lost; a
                // shadow's are dropped, no user reads them), and the failure
                // counts against it (metrics, the rollback guard).
                Err(e) if model != 0 => {
                    tracing::warn!(model = %served.name, version = served.version, windows = n, error = %e,
                        "model run failed; the default version reads these windows");
                    self.batches.push(BatchReport {
                        model: served.name.clone(),
                        version: served.version_label(),
                        served_version: served.version,
                        failed: true,
                        windows: n,
                        elapsed: started.elapsed(),
                        tags: Vec::new(),
                    });
                    for mut w in batch.into_iter().rev().filter(|w| !w.shadow) {
                        w.model = 0;
                        w.features = None;
                        self.queue.push_front(w);
                    }
                    continue;
                }
                Err(e) => {
                    self.failed = Some((served.name.clone(), served.version_label()));
                    return Err(e.into());
                }
            };
            self.batches.push(BatchReport {
                model: served.name.clone(),
                version: served.version_label(),
                served_version: served.version,
                failed: false,
                windows: n,
                elapsed: started.elapsed(),
                tags: batch.iter().map(|w| w.tag.clone()).collect(),
            });
            let info = served.model.info();
            let per = info.frames * info.classes();
            for (i, w) in batch.into_iter().enumerate() {
                let bytes: Vec<u8> = probs[i * per..(i + 1) * per]
                    .iter()
                    .flat_map(|p| p.to_le_bytes())
                    .collect();
                out.push(Produced {
                    event: LogitsEvent::Window(LogitsWindow {
                        stream_id: w.stream_id,
                        first_frame: w.first_frame,
                        frames: info.frames as u32,
                        valid_frames: w.valid as u32,
                        classes: info.classes() as u32,
                        vocabulary: info.vocabulary.clone(),
                        blank: info.blank as u32,
                        model_name: served.name.clone(),
                        model_version: info.version.clone(),
                        served_version: served.version,
                        shadow: w.shadow,
                        newest_ingest_us: w.newest_ingest_us,
                        face_share: w.face_share,
                    }),
                    payload: bytes,
                    tag: w.tag,
                });
            }
        }
        Ok(out)
    }
}

/// Runs one batch of windows on `model`: the back end alone over the
/// windows' features when it has them (a window without, a shadow's copy or
/// one moved from a failed version, gets its features from its crops), else
/// the whole graph over the crops.
fn read_batch(
    model: &mut Model,
    batch: &[PendingWindow],
    window_bytes: usize,
) -> Result<Vec<f32>, ModelError> {
    if model.front_back().is_some() && batch.iter().any(|w| w.features.is_some()) {
        let mut input = Vec::new();
        for w in batch {
            match &w.features {
                Some(f) => input.extend_from_slice(f),
                None => input.extend(model.frame_features(&w.crops)?),
            }
        }
        return model.run_features(&input, batch.len());
    }
    let mut input = Vec::with_capacity(batch.len() * window_bytes);
    for w in batch {
        input.extend_from_slice(&w.crops);
    }
    model.run(&input, batch.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Device;
    use mouthmap_contracts::{
        CropQuality, EndReason, MouthEnd, SourceKind, StreamEnd, StreamQuality, StreamStart,
    };
    use std::path::Path;

    const PX: usize = 46 * 140;

    fn model() -> Model {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models/tiny-contract.onnx");
        Model::load(&p, Device::Cpu, 1).unwrap()
    }

    /// Frame i shows column band i % 28, so the tiny model's best class at a
    /// window position tells which frame sat there.
    fn chunk(id: &str, first: u64, n: usize, seq: u64) -> (MouthEvent, Vec<u8>) {
        let mut payload = vec![0u8; n * PX];
        for j in 0..n {
            let band = ((first as usize + j) % 28) * 5;
            for y in 0..46 {
                for x in band..band + 5 {
                    payload[j * PX + y * 140 + x] = 255;
                }
            }
        }
        let q = CropQuality {
            face_score: 1.0,
            face_found: true,
            detected: true,
            box_width: 60.0,
            brightness: 100.0,
            sharpness: 1.0,
        };
        let ev = MouthEvent::Chunk(MouthChunk {
            stream_id: id.into(),
            seq,
            width: 140,
            height: 46,
            frames: (0..n as u64)
                .map(|j| FrameInfo {
                    index: first + j,
                    pts_ns: 0,
                    ingest_us: (first + j) as i64,
                })
                .collect(),
            quality: vec![q; n],
            no_face: false,
            discontinuity: false,
        });
        (ev, payload)
    }

    fn start(id: &str) -> MouthEvent {
        MouthEvent::Start(StreamStart {
            stream_id: id.into(),
            source: "t".into(),
            source_kind: SourceKind::File,
            fps: 25,
            started_at_ms: 0,
        })
    }

    fn end(id: &str, frames: u64) -> MouthEvent {
        MouthEvent::End(MouthEnd {
            end: StreamEnd {
                stream_id: id.into(),
                reason: EndReason::Eos,
                error: None,
                frames,
                chunks: 0,
                ended_at_ms: 0,
                frames_lost: 0,
                gaps: Vec::new(),
                cancelled: false,
            },
            quality: StreamQuality::default(),
        })
    }

    /// Feeds `frames` frames in chunks of 3 and the end; returns the windows
    /// as (first frame, valid frames) and checks each position's content.
    fn run(inf: &mut Inferencer, id: &str, frames: u64) -> Vec<(u64, u32)> {
        let mut out = inf.handle(&start(id), &[], &[]).unwrap();
        let mut f = 0;
        let mut seq = 0;
        while f < frames {
            let n = 3.min(frames - f) as usize;
            let (ev, p) = chunk(id, f, n, seq);
            out.extend(inf.handle(&ev, &p, &[]).unwrap());
            f += n as u64;
            seq += 1;
        }
        out.extend(inf.handle(&end(id, frames), &[], &[]).unwrap());
        assert!(matches!(
            out.first().map(|p| &p.event),
            Some(LogitsEvent::Start(_))
        ));
        assert!(matches!(
            out.last().map(|p| &p.event),
            Some(LogitsEvent::End(_))
        ));
        let mut windows = Vec::new();
        for Produced {
            event: ev,
            payload: bytes,
            ..
        } in &out[1..out.len() - 1]
        {
            let LogitsEvent::Window(w) = ev else {
                panic!("windows between start and end")
            };
            w.validate(bytes).unwrap();
            let probs: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            for j in 0..w.valid_frames as usize {
                let row = &probs[j * 28..(j + 1) * 28];
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0;
                assert_eq!(
                    best as u64,
                    (w.first_frame + j as u64) % 28,
                    "window at {} position {j}",
                    w.first_frame
                );
            }
            assert_eq!(
                w.newest_ingest_us,
                (w.first_frame + w.valid_frames as u64 - 1) as i64
            );
            windows.push((w.first_frame, w.valid_frames));
        }
        windows
    }

    #[test]
    fn each_stream_is_read_by_the_version_it_was_assigned_in_batches_of_its_own() {
        let served = |version| Served {
            name: "lipnet".into(),
            version,
            model: model(),
            retired: false,
        };
        let settings = InferSettings {
            hop: 25,
            max_batch: 16,
            max_delay: Duration::from_secs(60),
            early: 0,
            front_end: FrontEnd::Once,
        };
        let mut inf = Inferencer::serving(vec![served(1), served(2)], settings).unwrap();
        assert_eq!(inf.assign("b", 1), 1);
        // The start keeps the assignment; a later assignment changes nothing.
        inf.handle(&start("b"), &[], &[]).unwrap();
        assert_eq!(inf.assign("b", 0), 1);
        inf.handle(&start("a"), &[], &[]).unwrap();
        for (id, seq) in [("a", 0), ("b", 0), ("a", 1), ("b", 1)] {
            let (ev, p) = chunk(id, seq * 75, 75, seq);
            assert!(inf.handle(&ev, &p, &[]).unwrap().is_empty());
        }
        let out = inf.flush().unwrap();
        let read_by: Vec<(String, u64)> = out
            .iter()
            .filter_map(|p| match &p.event {
                LogitsEvent::Window(w) => Some((w.stream_id.clone(), w.served_version)),
                _ => None,
            })
            .collect();
        assert_eq!(
            read_by,
            [("a", 1); 4]
                .into_iter()
                .chain([("b", 2); 4])
                .map(|(id, v)| (id.to_string(), v))
                .collect::<Vec<_>>()
        );
        let batches: Vec<(String, usize)> = inf
            .take_batches()
            .into_iter()
            .map(|b| (b.version, b.windows))
            .collect();
        assert_eq!(batches, [("1".to_string(), 4), ("2".to_string(), 4)]);
    }

    #[test]
    fn windows_slide_by_the_hop_and_the_last_one_meets_the_end() {
        let settings = InferSettings {
            hop: 25,
            max_batch: 4,
            max_delay: Duration::ZERO,
            early: 0,
            front_end: FrontEnd::Once,
        };
        let mut inf = Inferencer::new(model(), settings);
        assert_eq!(run(&mut inf, "a", 100), [(0, 75), (25, 75)]);
        assert_eq!(
            run(&mut inf, "b", 90),
            [(0, 75), (15, 75)],
            "end-aligned last window"
        );
        assert_eq!(
            run(&mut inf, "c", 40),
            [(0, 40)],
            "a short stream is one padded window"
        );
        assert_eq!(run(&mut inf, "d", 75), [(0, 75)]);
        assert_eq!(inf.active_streams(), 0);
    }

    #[test]
    fn windows_wait_for_a_full_batch_or_the_deadline() {
        let settings = InferSettings {
            hop: 75,
            max_batch: 3,
            max_delay: Duration::from_millis(1500),
            early: 0,
            front_end: FrontEnd::Once,
        };
        let mut inf = Inferencer::new(model(), settings);
        for id in ["a", "b", "c"] {
            inf.handle(&start(id), &[], &[]).unwrap();
        }
        // Two streams complete a window: held for the batch.
        for id in ["a", "b"] {
            let (ev, p) = chunk(id, 0, 75, 0);
            assert!(inf.handle(&ev, &p, &[]).unwrap().is_empty());
        }
        assert!(inf.tick().unwrap().is_empty(), "deadline not reached");
        // The third fills the batch: all three run together.
        let (ev, p) = chunk("c", 0, 75, 0);
        assert_eq!(inf.handle(&ev, &p, &[]).unwrap().len(), 3);
        assert_eq!(
            inf.take_batches()
                .iter()
                .map(|b| b.windows)
                .collect::<Vec<_>>(),
            [3]
        );
        // A lone window goes out once it has waited max_delay.
        let (ev, p) = chunk("a", 75, 75, 1);
        assert!(inf.handle(&ev, &p, &[]).unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(1600));
        assert_eq!(inf.tick().unwrap().len(), 1);
    }

    #[test]
    fn crops_of_the_wrong_size_are_malformed() {
        let mut inf = Inferencer::new(model(), InferSettings::default());
        let (MouthEvent::Chunk(mut c), p) = chunk("a", 0, 1, 0) else {
            unreachable!()
        };
        c.width = 100;
        let err = inf.handle(&MouthEvent::Chunk(c), &p, &[]).unwrap_err();
        assert!(
            matches!(err, InferError::CropSize { width: 100, .. })
                && err.to_string().contains("crops are 100x46"),
            "{err}"
        );
    }

    #[test]
    fn a_stream_dropped_as_idle_frees_its_buffer() {
        let mut inf = Inferencer::new(model(), InferSettings::default());
        let (ev, p) = chunk("lost", 0, 3, 0);
        inf.handle(&start("lost"), &[], &[]).unwrap();
        inf.handle(&ev, &p, &[]).unwrap();
        assert_eq!(inf.active_streams(), 1);
        assert!(inf.drop_streams(&["other".to_string()]).is_empty());
        assert_eq!(
            inf.drop_streams(&["lost".to_string()]),
            vec!["lost".to_string()]
        );
        assert_eq!(inf.active_streams(), 0);
    }

    #[test]
    fn a_new_stream_gets_early_windows_until_its_first_whole_one() {
        let settings = InferSettings {
            max_delay: Duration::ZERO,
            ..InferSettings::default()
        };
        let mut inf = Inferencer::new(model(), settings);
        // Chunks of 3: early windows at 27 and 51 frames (each from frame 0,
        // the later one longer), then whole windows every hop; the end is
        // covered, so no end window.
        assert_eq!(
            run(&mut inf, "s", 100),
            vec![(0, 27), (0, 51), (0, 75), (25, 75)]
        );
        // A stream shorter than an early window gets only its end window.
        assert_eq!(run(&mut inf, "short", 10), vec![(0, 10)]);
        // None when switched off.
        let mut off = Inferencer::new(
            model(),
            InferSettings {
                early: 0,
                ..settings
            },
        );
        assert_eq!(run(&mut off, "s", 100), vec![(0, 75), (25, 75)]);
    }

    #[test]
    fn redelivered_frames_are_not_buffered_twice() {
        let mut once = Inferencer::new(model(), InferSettings::default());
        let mut twice = Inferencer::new(model(), InferSettings::default());
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (first, seq) in [(0u64, 0u64), (30, 1), (60, 2)] {
            let (ev, p) = chunk("s", first, 30, seq);
            a.extend(once.handle(&ev, &p, &[]).unwrap());
            b.extend(twice.handle(&ev, &p, &[]).unwrap());
            // The same chunk again, and one overlapping it by half.
            b.extend(twice.handle(&ev, &p, &[]).unwrap());
            if first > 0 {
                let (half, hp) = chunk("s", first - 15, 30, seq);
                b.extend(twice.handle(&half, &hp, &[]).unwrap());
            }
        }
        let firsts = |out: &[Produced]| -> Vec<u64> {
            out.iter()
                .filter_map(|p| match &p.event {
                    LogitsEvent::Window(w) => Some(w.first_frame),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(firsts(&a), firsts(&b));
        assert_eq!(
            a.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(),
            b.iter().map(|p| p.payload.clone()).collect::<Vec<_>>()
        );
    }

    /// The committed model comes with its front end and back end: computing
    /// each frame once gives exactly the windows the whole graph gives
    /// (early windows, whole windows at each hop, a hop longer than a
    /// window, the end window, a stream shorter than a window).
    #[test]
    fn computing_each_frame_once_gives_the_whole_graphs_windows() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/mouthmap-lipnet-grid-s1/2/model.onnx");
        let load = || Model::load(&path, Device::Cpu, 1).unwrap();
        assert!(
            load().front_back().is_some(),
            "front.onnx and back.onnx beside it"
        );
        let mut state = 12345u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect()
        };
        // Chunks of 5 end where windows end (their newest frames are the
        // front end's run over what arrived); chunks of 7 do not.
        for (frames, hop, early, size) in [
            (190u64, 25, 15, 5u64),
            (190, 25, 15, 7),
            (50, 25, 15, 5),
            (150, 10, 0, 5),
            (200, 80, 0, 7),
        ] {
            let stream = noise(frames as usize * PX);
            let mut outs = Vec::new();
            for front_end in [FrontEnd::Once, FrontEnd::PerWindow] {
                let settings = InferSettings {
                    hop,
                    max_batch: 4,
                    max_delay: Duration::ZERO,
                    early,
                    front_end,
                };
                let mut inf = Inferencer::new(load(), settings);
                let mut out = inf.handle(&start("s"), &[], &[]).unwrap();
                let (mut f, mut seq) = (0u64, 0u64);
                while f < frames {
                    let n = size.min(frames - f) as usize;
                    let (ev, _) = chunk("s", f, n, seq);
                    let payload = &stream[f as usize * PX..(f as usize + n) * PX];
                    out.extend(inf.handle(&ev, payload, &[]).unwrap());
                    (f, seq) = (f + n as u64, seq + 1);
                }
                out.extend(inf.handle(&end("s", frames), &[], &[]).unwrap());
                let windows: Vec<(u64, u32, Vec<f32>)> = out
                    .iter()
                    .filter_map(|p| match &p.event {
                        LogitsEvent::Window(w) => Some((
                            w.first_frame,
                            w.valid_frames,
                            p.payload
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                                .collect(),
                        )),
                        _ => None,
                    })
                    .collect();
                outs.push(windows);
            }
            let (once, whole) = (&outs[0], &outs[1]);
            assert!(!whole.is_empty());
            assert_eq!(
                once.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>(),
                whole.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>(),
                "{frames} frames, hop {hop}, chunks of {size}"
            );
            for (a, b) in once.iter().zip(whole) {
                let worst =
                    a.2.iter()
                        .zip(&b.2)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0f32, f32::max);
                assert!(
                    worst < 1e-4,
                    "{frames} frames, hop {hop}, chunks of {size}: window at {} ({} valid) differs by {worst}",
                    a.0,
                    a.1
                );
            }
        }
    }
}

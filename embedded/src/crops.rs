//! Mouth crops of video files, for training, and contact-sheet previews.
//!
//! Each clip is decoded by ingest's capture pipeline into frames exactly as
//! ingest publishes them (by default JPEG at the serving quality), and
//! cropped by the preprocess stage, which decodes them as the service does:
//! training sees exactly what serving sees. The frame format is recorded in
//! every clip's record and in the report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mouthmap_contracts::{EndReason, FrameEvent, MouthEvent, PixelFormat, StreamQuality};
use mouthmap_ingest::source::{Source, SourceError};
use mouthmap_ingest::stream::{Emitter, StreamControl, StreamSettings, run_stream};
use mouthmap_preprocessor::detector::{Detector, DetectorError, DetectorSettings, Face};
use mouthmap_preprocessor::export::{SheetFrame, contact_sheet, write_npy};
use mouthmap_preprocessor::geometry::MouthBox;
use mouthmap_preprocessor::stage::{Preprocessor, StageError, frames_i420};
use mouthmap_preprocessor::tracker::TrackerSettings;
use serde::Serialize;

/// How clips are decoded and cropped.
#[derive(Debug, Clone)]
pub struct CropSettings {
    /// YuNet's ONNX file.
    pub face_model: PathBuf,
    pub detector: DetectorSettings,
    pub tracker: TrackerSettings,
    /// Frames as ingest would publish them (format and JPEG quality).
    pub stream: StreamSettings,
}

impl CropSettings {
    pub fn detector(&self) -> Result<Detector, DetectorError> {
        Detector::load(&self.face_model, self.detector)
    }

    pub fn stage(&self) -> Result<Preprocessor, DetectorError> {
        Ok(Preprocessor::new(self.detector()?, self.tracker))
    }

    /// The frame format crops are cut from: `jpeg q95`, `i420`, `gray8`.
    pub fn frame_format(&self) -> String {
        match self.stream.pixel_format {
            PixelFormat::Jpeg => format!("jpeg q{}", self.stream.jpeg_quality),
            PixelFormat::I420 => "i420".into(),
            PixelFormat::Gray8 => "gray8".into(),
        }
    }
}

/// Why cropping failed.
#[derive(Debug, thiserror::Error)]
pub enum CropError {
    #[error("{video}: {source}")]
    Source { video: String, source: SourceError },
    #[error("{video}: {source}")]
    Stage { video: String, source: StageError },
    #[error("{video}: {reason}")]
    Stream { video: String, reason: String },
    #[error(transparent)]
    Detector(#[from] DetectorError),
    #[error(
        "{first} and {second} would both write {stem}.npy: crop them into different --out folders"
    )]
    SameStem {
        first: String,
        second: String,
        stem: String,
    },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("the clip has no frame {frame} ({frames} frames)")]
    NoFrame { frame: u64, frames: usize },
}

/// The frame a preview shows: I420 pixels, width, height, face, mouth box.
pub struct Shown {
    pub frame: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub face: Option<Face>,
    pub mouth_box: MouthBox,
}

/// Per-frame record in CLIP.json.
#[derive(Serialize)]
pub struct FrameRecord {
    pub index: u64,
    pub face_found: bool,
    pub detected: bool,
    pub face_score: f32,
    pub brightness: f32,
    pub sharpness: f32,
    pub mouth_box: MouthBox,
    /// With a checker: whether the box held both mouth corners of this frame's face.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corners_inside: Option<bool>,
}

/// CLIP.json.
#[derive(Serialize)]
pub struct ClipRecord {
    pub video: String,
    /// What the crops were cut from (`jpeg q95`, `i420`, `gray8`).
    pub frame_format: String,
    pub frames: usize,
    pub crop_width: u32,
    pub crop_height: u32,
    pub quality: StreamQuality,
    pub per_frame: Vec<FrameRecord>,
}

/// One clip cropped.
pub struct ClipResult {
    pub record: ClipRecord,
    /// The crops, Gray8, back to back.
    pub crops: Vec<u8>,
    /// The frame asked for, when one was.
    pub shown: Option<Shown>,
    /// Every crop apart, when a frame was asked for (for the strip).
    pub all_crops: Vec<Vec<u8>>,
}

/// Feeds a stream's frame events through the stage, keeping what it made.
struct Collector<'a> {
    stage: &'a mut Preprocessor,
    checker: Option<&'a mut Detector>,
    crops: Vec<u8>,
    records: Vec<FrameRecord>,
    quality: Option<StreamQuality>,
    /// For previews: frame index wanted, and what was seen there.
    want: Option<u64>,
    shown: Option<Shown>,
    all_crops: Vec<Vec<u8>>,
    error: Option<StageError>,
}

impl Collector<'_> {
    fn take(&mut self, event: &FrameEvent, payload: &[u8]) -> Result<(), StageError> {
        // The frames as the stage sees them, for the checker and the preview.
        let (frames, chunk_frames, dims) = match event {
            FrameEvent::Chunk(c) if self.checker.is_some() || self.want.is_some() => {
                c.validate(payload)?;
                (
                    frames_i420(c, payload)?,
                    c.frames.clone(),
                    (c.width as usize, c.height as usize),
                )
            }
            FrameEvent::Chunk(c) => (Vec::new(), c.frames.clone(), (0, 0)),
            _ => (Vec::new(), Vec::new(), (0, 0)),
        };
        // With a checker, find each frame's true mouth corners first.
        let mut truth: Vec<Option<Face>> = Vec::new();
        if let Some(det) = self.checker.as_deref_mut() {
            for f in &frames {
                truth.push(det.detect_i420(f, dims.0, dims.1)?.into_iter().next());
            }
        }
        let mut frame_no = 0usize;
        let records = &mut self.records;
        let want = self.want;
        let shown = &mut self.shown;
        let all_crops = &mut self.all_crops;
        let out = self.stage.handle_observed(event, payload, &mut |c| {
            let info = &chunk_frames[frame_no];
            let corners_inside = truth.get(frame_no).map(|t| match t {
                Some(f) => {
                    c.mouth_box.contains(f.mouth_left()) && c.mouth_box.contains(f.mouth_right())
                }
                None => !c.quality.face_found,
            });
            records.push(FrameRecord {
                index: info.index,
                face_found: c.quality.face_found,
                detected: c.quality.detected,
                face_score: c.quality.face_score,
                brightness: c.quality.brightness,
                sharpness: c.quality.sharpness,
                mouth_box: c.mouth_box,
                corners_inside,
            });
            if want == Some(info.index) {
                *shown = Some(Shown {
                    frame: frames[frame_no].to_vec(),
                    width: dims.0,
                    height: dims.1,
                    face: c.face.clone(),
                    mouth_box: c.mouth_box,
                });
            }
            if want.is_some() {
                all_crops.push(c.crop.clone());
            }
            frame_no += 1;
        })?;
        for (ev, bytes) in out {
            match ev {
                MouthEvent::Chunk(_) => self.crops.extend_from_slice(&bytes),
                MouthEvent::End(e) => self.quality = Some(e.quality),
                MouthEvent::Start(_) => {}
            }
        }
        Ok(())
    }
}

impl Emitter for Collector<'_> {
    fn emit(&mut self, event: FrameEvent, payload: Vec<u8>, _span: tracing::Span) -> bool {
        match self.take(&event, &payload) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

/// Crops one clip with `stage` (and checks every frame's box against
/// `checker`'s detection, when given); `want` keeps that frame and every
/// crop for a preview.
pub fn crop_clip(
    video: &Path,
    settings: &CropSettings,
    stage: &mut Preprocessor,
    checker: Option<&mut Detector>,
    want: Option<u64>,
) -> Result<ClipResult, CropError> {
    let name = video.display().to_string();
    let source = Source::parse(&video.to_string_lossy()).map_err(|source| CropError::Source {
        video: name.clone(),
        source,
    })?;
    let (cw, ch) = (stage.settings().crop_width, stage.settings().crop_height);
    let mut collector = Collector {
        stage,
        checker,
        crops: Vec::new(),
        records: Vec::new(),
        quality: None,
        want,
        shown: None,
        all_crops: Vec::new(),
        error: None,
    };
    let id = source.default_stream_id();
    let end = run_stream(
        &id,
        &source,
        &settings.stream,
        &Arc::new(StreamControl::default()),
        &mut collector,
    );
    if let Some(source) = collector.error {
        return Err(CropError::Stage {
            video: name,
            source,
        });
    }
    if end.reason != EndReason::Eos {
        return Err(CropError::Stream {
            video: name,
            reason: end.error.unwrap_or_else(|| format!("{:?}", end.reason)),
        });
    }
    let frames = collector.records.len();
    Ok(ClipResult {
        record: ClipRecord {
            video: name,
            frame_format: settings.frame_format(),
            frames,
            crop_width: cw,
            crop_height: ch,
            quality: collector.quality.unwrap_or_default(),
            per_frame: collector.records,
        },
        crops: collector.crops,
        shown: collector.shown,
        all_crops: collector.all_crops,
    })
}

/// report.json: the clips of one export summed up.
#[derive(Serialize, Default, Debug)]
pub struct Report {
    /// What the crops were cut from (`jpeg q95`, `i420`, `gray8`).
    pub frame_format: String,
    /// Frames per chunk at most (the detector runs on each chunk's last).
    pub frames_per_chunk: usize,
    /// The detector on every Nth frame (and each chunk's last).
    pub detect_every: u32,
    pub clips: usize,
    pub failed: Vec<String>,
    pub frames: u64,
    pub frames_with_face: u64,
    pub face_share: f64,
    pub detector_frames: u64,
    /// With a check: frames whose box held both detected mouth corners, of those with a face.
    pub corners_checked: u64,
    pub corners_inside: u64,
    pub clips_under_99pct_face: Vec<String>,
}

impl Report {
    fn add(&mut self, stem: &str, r: &ClipRecord) {
        self.clips += 1;
        self.frames += r.frames as u64;
        let with_face = r.per_frame.iter().filter(|f| f.face_found).count() as u64;
        self.frames_with_face += with_face;
        self.detector_frames += r.per_frame.iter().filter(|f| f.detected).count() as u64;
        for f in r.per_frame.iter().filter(|f| f.face_found) {
            if let Some(inside) = f.corners_inside {
                self.corners_checked += 1;
                self.corners_inside += inside as u64;
            }
        }
        if (with_face as f64) < 0.99 * r.frames as f64 {
            self.clips_under_99pct_face.push(stem.to_string());
        }
    }
}

/// What happened to one clip of an export, for progress reports.
pub enum ClipOutcome<'a> {
    Written {
        video: &'a Path,
    },
    Failed {
        video: &'a Path,
        error: &'a CropError,
    },
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<(), CropError> {
    std::fs::write(&path, bytes).map_err(|e| CropError::Write {
        path,
        reason: e.to_string(),
    })
}

/// Crops every video into `out` (`STEM.npy`: uint8 `[frames, height,
/// width]`; `STEM.json`: the [`ClipRecord`]; `report.json`: the
/// [`Report`]) with `jobs` clips at once, checking every frame's box
/// against the detector when `check`. A clip that fails is reported and
/// named in the report; the others go on.
pub fn export(
    videos: &[PathBuf],
    out: &Path,
    settings: &CropSettings,
    jobs: usize,
    check: bool,
    progress: &(dyn Fn(ClipOutcome<'_>) + Sync),
) -> Result<Report, CropError> {
    let mut names: HashMap<String, &PathBuf> = HashMap::new();
    for v in videos {
        let stem = v
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(first) = names.insert(stem.clone(), v) {
            return Err(CropError::SameStem {
                first: first.display().to_string(),
                second: v.display().to_string(),
                stem,
            });
        }
    }
    std::fs::create_dir_all(out).map_err(|e| CropError::Write {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Fail early on a bad face model, before spawning workers.
    settings.detector()?;
    let jobs = jobs.clamp(1, videos.len().max(1));
    let next = AtomicUsize::new(0);
    let report = Mutex::new(Report {
        frame_format: settings.frame_format(),
        frames_per_chunk: settings.stream.chunk.frames_per_chunk,
        detect_every: settings.tracker.detect_every,
        ..Report::default()
    });
    std::thread::scope(|scope| -> Result<(), CropError> {
        let mut workers = Vec::new();
        for _ in 0..jobs {
            workers.push(scope.spawn(|| -> Result<(), CropError> {
                let mut stage = settings.stage()?;
                let mut checker = if check {
                    Some(settings.detector()?)
                } else {
                    None
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(video) = videos.get(i) else {
                        return Ok(());
                    };
                    let stem = video
                        .file_stem()
                        .map_or_else(|| format!("clip{i}"), |s| s.to_string_lossy().into_owned());
                    let written = crop_clip(video, settings, &mut stage, checker.as_mut(), None)
                        .and_then(|r| {
                            let (cw, ch) =
                                (r.record.crop_width as usize, r.record.crop_height as usize);
                            let npy = out.join(format!("{stem}.npy"));
                            write_npy(&npy, &[r.record.frames, ch, cw], &r.crops).map_err(|e| {
                                CropError::Write {
                                    path: npy,
                                    reason: e.to_string(),
                                }
                            })?;
                            let json = serde_json::to_vec(&r.record).expect("records serialise");
                            write(out.join(format!("{stem}.json")), &json)?;
                            Ok(r)
                        });
                    match written {
                        Ok(r) => {
                            report.lock().expect("report lock").add(&stem, &r.record);
                            progress(ClipOutcome::Written { video });
                        }
                        Err(error) => {
                            progress(ClipOutcome::Failed {
                                video,
                                error: &error,
                            });
                            let mut rep = report.lock().expect("report lock");
                            rep.failed.push(video.display().to_string());
                        }
                    }
                }
            }));
        }
        for w in workers {
            w.join().expect("crop worker panicked")?;
        }
        Ok(())
    })?;
    let mut report = report.into_inner().expect("report lock");
    report.face_share = report.frames_with_face as f64 / report.frames.max(1) as f64;
    let json = serde_json::to_vec_pretty(&report).expect("reports serialise");
    write(out.join("report.json"), &json)?;
    Ok(report)
}

/// A contact sheet of `video` to `png`: frame `frame` with its face box,
/// landmarks and mouth box, above a strip of 15 of the clip's crops.
pub fn preview(
    video: &Path,
    settings: &CropSettings,
    frame: u64,
    png: &Path,
) -> Result<(), CropError> {
    let mut stage = settings.stage()?;
    let result = crop_clip(video, settings, &mut stage, None, Some(frame))?;
    let shown = result.shown.ok_or(CropError::NoFrame {
        frame,
        frames: result.record.frames,
    })?;
    let step = result.all_crops.len().div_ceil(15).max(1);
    let strip: Vec<Vec<u8>> = result.all_crops.iter().step_by(step).cloned().collect();
    let (cw, ch) = (
        result.record.crop_width as usize,
        result.record.crop_height as usize,
    );
    let sheet = contact_sheet(
        &SheetFrame {
            frame: &shown.frame,
            width: shown.width,
            height: shown.height,
            face: shown.face.as_ref(),
            mouth_box: shown.mouth_box,
        },
        &strip,
        cw,
        ch,
        5,
    );
    sheet.save_png(png).map_err(|reason| CropError::Write {
        path: png.to_path_buf(),
        reason,
    })
}

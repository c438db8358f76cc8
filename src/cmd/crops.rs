//! `mouthmap crops`: mouth crops of video files for training, and previews,
//! through the same ingest and preprocess code as the services.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mouthmap_bus::contract::{EndReason, FrameEvent, MouthEvent, StreamQuality};
use mouthmap_ingest::source::Source;
use mouthmap_ingest::stream::{Emitter, StreamControl, StreamSettings, run_stream};
use mouthmap_preprocessor::detector::{Detector, Face};
use mouthmap_preprocessor::export::{SheetFrame, contact_sheet, write_npy};
use mouthmap_preprocessor::geometry::MouthBox;
use mouthmap_preprocessor::stage::Preprocessor;
use serde::Serialize;

use super::preprocess::CropArgs;

pub const LONG_ABOUT: &str = "\
Write mouth crops of video files, for training, or a contact sheet to look at.

Clips are decoded by ingest's GStreamer pipeline and cropped by the preprocess
stage: exactly the code the services run, so training sees what serving sees.

  mouthmap crops clips/*.mp4 --out crops/
      per clip: CLIP.npy (uint8 [frames, height, width]) and CLIP.json (per-frame
      quality, mouth boxes and the stream summary); report.json sums them up.
  mouthmap crops --preview sheet.png clip.mp4
      the frame with its face box (green), landmarks (red) and mouth box
      (yellow) above a strip of the crops.";

#[derive(Args, Debug)]
pub struct CropsArgs {
    /// Video files.
    #[arg(value_name = "VIDEO", required = true)]
    videos: Vec<PathBuf>,

    /// Folder for the .npy and .json files (created if missing).
    #[arg(long, value_name = "DIR", required_unless_present = "preview")]
    out: Option<PathBuf>,

    /// Write a contact sheet of the (one) VIDEO to this PNG instead.
    #[arg(long, value_name = "PNG", conflicts_with = "out")]
    preview: Option<PathBuf>,

    /// Frame shown on the contact sheet (default 37, the middle of a 3-second clip).
    #[arg(long, value_name = "INDEX")]
    preview_frame: Option<u64>,

    /// Clips processed at once (default: the number of cores).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,

    /// Also run the detector on every frame and check that the mouth box used
    /// contains both detected mouth corners (slower; for measuring).
    #[arg(long)]
    check: bool,

    #[command(flatten)]
    crop: CropArgs,
}

/// The frame a preview shows: I420 pixels, width, height, face, mouth box.
struct Shown {
    frame: Vec<u8>,
    width: usize,
    height: usize,
    face: Option<Face>,
    mouth_box: MouthBox,
}

/// Per-frame record in CLIP.json.
#[derive(Serialize)]
struct FrameRecord {
    index: u64,
    face_found: bool,
    detected: bool,
    face_score: f32,
    brightness: f32,
    sharpness: f32,
    mouth_box: MouthBox,
    /// With --check: whether the box held both mouth corners of this frame's face.
    #[serde(skip_serializing_if = "Option::is_none")]
    corners_inside: Option<bool>,
}

#[derive(Serialize)]
struct ClipRecord {
    video: String,
    frames: usize,
    crop_width: u32,
    crop_height: u32,
    quality: StreamQuality,
    per_frame: Vec<FrameRecord>,
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
    error: Option<String>,
}

impl Emitter for Collector<'_> {
    fn emit(&mut self, event: FrameEvent, payload: Vec<u8>, _span: tracing::Span) -> bool {
        // With --check, find each frame's true mouth corners first.
        let mut truth: Vec<Option<Face>> = Vec::new();
        if let (Some(det), FrameEvent::Chunk(c)) = (self.checker.as_deref_mut(), &event) {
            for r in c.frame_ranges() {
                match det.detect_i420(&payload[r], c.width as usize, c.height as usize) {
                    Ok(faces) => truth.push(faces.into_iter().next()),
                    Err(e) => {
                        self.error = Some(e.to_string());
                        return false;
                    }
                }
            }
        }
        let mut frame_no = 0usize;
        let (chunk_frames, ranges, dims) = match &event {
            FrameEvent::Chunk(c) => (
                c.frames.clone(),
                c.frame_ranges(),
                (c.width as usize, c.height as usize),
            ),
            _ => (Vec::new(), Vec::new(), (0, 0)),
        };
        let records = &mut self.records;
        let want = self.want;
        let shown = &mut self.shown;
        let all_crops = &mut self.all_crops;
        let result = self.stage.handle_observed(&event, &payload, &mut |c| {
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
                let frame = payload[ranges[frame_no].clone()].to_vec();
                *shown = Some(Shown {
                    frame,
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
        });
        match result {
            Ok(out) => {
                for (ev, bytes) in out {
                    match ev {
                        MouthEvent::Chunk(_) => self.crops.extend_from_slice(&bytes),
                        MouthEvent::End(e) => self.quality = Some(e.quality),
                        MouthEvent::Start(_) => {}
                    }
                }
                true
            }
            Err(e) => {
                self.error = Some(e.to_string());
                false
            }
        }
    }
}

struct ClipResult {
    record: ClipRecord,
    crops: Vec<u8>,
    shown: Option<Shown>,
    all_crops: Vec<Vec<u8>>,
}

fn crop_clip(
    video: &Path,
    stage: &mut Preprocessor,
    checker: Option<&mut Detector>,
    want: Option<u64>,
) -> anyhow::Result<ClipResult> {
    let source = Source::parse(&video.to_string_lossy())?;
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
        &StreamSettings::default(),
        &Arc::new(StreamControl::default()),
        &mut collector,
    );
    if let Some(e) = collector.error {
        bail!("{}: {e}", video.display());
    }
    if end.reason != EndReason::Eos {
        bail!(
            "{}: {}",
            video.display(),
            end.error.unwrap_or_else(|| format!("{:?}", end.reason))
        );
    }
    let frames = collector.records.len();
    Ok(ClipResult {
        record: ClipRecord {
            video: video.display().to_string(),
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

#[derive(Serialize, Default)]
struct Report {
    clips: usize,
    failed: Vec<String>,
    frames: u64,
    frames_with_face: u64,
    face_share: f64,
    detector_frames: u64,
    /// With --check: frames whose box held both detected mouth corners, of those with a face.
    corners_checked: u64,
    corners_inside: u64,
    clips_under_99pct_face: Vec<String>,
}

fn preview(args: &CropsArgs, png: &Path) -> anyhow::Result<ExitCode> {
    if args.videos.len() != 1 {
        bail!("--preview takes exactly one VIDEO");
    }
    let mut stage = args.crop.stage()?;
    let frame = args.preview_frame.unwrap_or(37);
    let result = crop_clip(&args.videos[0], &mut stage, None, Some(frame))?;
    let shown = result.shown.with_context(|| {
        format!(
            "the clip has no frame {frame} ({} frames)",
            result.record.frames
        )
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
    sheet.save_png(png).map_err(anyhow::Error::msg)?;
    println!("{}", png.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: CropsArgs) -> anyhow::Result<ExitCode> {
    tokio::task::block_in_place(|| run_blocking(args))
}

fn run_blocking(args: CropsArgs) -> anyhow::Result<ExitCode> {
    mouthmap_ingest::capture::init()?;
    if let Some(png) = &args.preview {
        return preview(&args, png);
    }
    let out = args
        .out
        .clone()
        .expect("clap requires --out without --preview");
    let mut names: std::collections::HashMap<String, &PathBuf> = std::collections::HashMap::new();
    for v in &args.videos {
        let stem = v
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(first) = names.insert(stem.clone(), v) {
            bail!(
                "{} and {} would both write {stem}.npy: crop them into different --out folders",
                first.display(),
                v.display()
            );
        }
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, args.videos.len().max(1));
    // Fail early on a bad model, before spawning workers.
    args.crop.detector()?;
    let bar = ProgressBar::new(args.videos.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} clips ({per_sec}, eta {eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let next = AtomicUsize::new(0);
    let report = Mutex::new(Report::default());
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut workers = Vec::new();
        for _ in 0..jobs {
            workers.push(scope.spawn(|| -> anyhow::Result<()> {
                let mut stage = args.crop.stage()?;
                let mut checker = if args.check {
                    Some(args.crop.detector()?)
                } else {
                    None
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(video) = args.videos.get(i) else {
                        return Ok(());
                    };
                    let stem = video
                        .file_stem()
                        .map_or_else(|| format!("clip{i}"), |s| s.to_string_lossy().into_owned());
                    match crop_clip(video, &mut stage, checker.as_mut(), None) {
                        Ok(r) => {
                            let (cw, ch) =
                                (r.record.crop_width as usize, r.record.crop_height as usize);
                            write_npy(
                                &out.join(format!("{stem}.npy")),
                                &[r.record.frames, ch, cw],
                                &r.crops,
                            )?;
                            std::fs::write(
                                out.join(format!("{stem}.json")),
                                serde_json::to_vec(&r.record)?,
                            )?;
                            let mut rep = report.lock().expect("report lock");
                            rep.clips += 1;
                            rep.frames += r.record.frames as u64;
                            let with_face =
                                r.record.per_frame.iter().filter(|f| f.face_found).count() as u64;
                            rep.frames_with_face += with_face;
                            rep.detector_frames +=
                                r.record.per_frame.iter().filter(|f| f.detected).count() as u64;
                            for f in r.record.per_frame.iter().filter(|f| f.face_found) {
                                if let Some(inside) = f.corners_inside {
                                    rep.corners_checked += 1;
                                    rep.corners_inside += inside as u64;
                                }
                            }
                            if (with_face as f64) < 0.99 * r.record.frames as f64 {
                                rep.clips_under_99pct_face.push(stem.clone());
                            }
                        }
                        Err(e) => {
                            bar.println(format!("error: {e:#}"));
                            report
                                .lock()
                                .expect("report lock")
                                .failed
                                .push(video.display().to_string());
                        }
                    }
                    bar.inc(1);
                }
            }));
        }
        for w in workers {
            w.join().expect("crop worker panicked")?;
        }
        Ok(())
    })?;
    bar.finish();
    let mut report = report.into_inner().expect("report lock");
    report.face_share = report.frames_with_face as f64 / report.frames.max(1) as f64;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    println!(
        "{} clips, {} frames, face on {:.2}% of frames, detector ran on {} frames{}{}",
        report.clips,
        report.frames,
        100.0 * report.face_share,
        report.detector_frames,
        if args.check {
            format!(
                ", mouth corners inside the box on {}/{} frames with a face",
                report.corners_inside, report.corners_checked
            )
        } else {
            String::new()
        },
        if report.failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed", report.failed.len())
        }
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

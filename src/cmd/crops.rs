//! `mouthmap crops`: mouth crops of video files for training, and previews
//! (the work is `mouthmap_embedded::crops`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mouthmap_embedded::crops::{self, ClipOutcome, CropSettings};

use super::FrameFormatArgs;
use super::preprocess::CropArgs;

pub const LONG_ABOUT: &str = "\
Write mouth crops of video files, for training, or a contact sheet to look at.

Clips are decoded by ingest's GStreamer pipeline into frames exactly as ingest
publishes them (JPEG at quality 95 by default, see --pixel-format) and cropped
by the preprocess stage: the code the services run, so training sees what
serving sees. The frame format is recorded in every CLIP.json and report.json.

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

    /// Frames as ingest publishes them (the same flags and defaults as `mouthmap ingest`).
    #[command(flatten)]
    frames: FrameFormatArgs,

    #[command(flatten)]
    crop: CropArgs,
}

pub async fn run(args: CropsArgs) -> anyhow::Result<ExitCode> {
    tokio::task::block_in_place(|| run_blocking(args))
}

fn run_blocking(args: CropsArgs) -> anyhow::Result<ExitCode> {
    mouthmap_ingest::capture::init()?;
    let settings = CropSettings {
        face_model: args.crop.face_model.clone(),
        detector: args.crop.detector_settings(),
        tracker: args.crop.tracker(),
        stream: args.frames.in_process_settings(),
    };
    if let Some(png) = &args.preview {
        if args.videos.len() != 1 {
            bail!("--preview takes exactly one VIDEO");
        }
        crops::preview(
            &args.videos[0],
            &settings,
            args.preview_frame.unwrap_or(37),
            png,
        )?;
        println!("{}", png.display());
        return Ok(ExitCode::SUCCESS);
    }
    let out = args
        .out
        .clone()
        .expect("clap requires --out without --preview");
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bar = ProgressBar::new(args.videos.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} clips ({per_sec}, eta {eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let report = crops::export(
        &args.videos,
        &out,
        &settings,
        jobs,
        args.check,
        &|outcome| {
            if let ClipOutcome::Failed { error, .. } = outcome {
                bar.println(format!("error: {error}"));
            }
            bar.inc(1);
        },
    )?;
    bar.finish();
    println!(
        "{} clips, {} frames ({}), face on {:.2}% of frames, detector ran on {} frames{}{}",
        report.clips,
        report.frames,
        report.frame_format,
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

//! `mouthmap transcribe`: the whole pipeline in one process, no broker
//! (the work is `mouthmap_embedded::transcribe`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use mouthmap_contracts::{Transcript, TranscriptKind};
use mouthmap_embedded::transcribe::{Stages, transcribe};
use mouthmap_inferencer::stage::{InferSettings, Inferencer};
use mouthmap_ingest::source::Source;

use super::FrameFormatArgs;
use super::decode::DecoderArgs;
use super::infer::ModelArgs;
use super::preprocess::CropArgs;

pub const LONG_ABOUT: &str = "\
Transcribe a video from the lips alone, in one process: ingest, preprocess,
infer and decode run the same stage code as the services, over in-memory
hand-offs, with no broker and no Redis. Partial transcripts are printed as
they form, then the final one.

  mouthmap transcribe clip.mp4
  mouthmap transcribe --json rtmp://127.0.0.1/live/cam-1     # JSON lines; the last is \"kind\": \"final\"";

#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// A video file or URI (as for `mouthmap ingest`).
    #[arg(value_name = "SOURCE")]
    source: String,

    /// Print JSON lines (every transcript message) instead of text.
    #[arg(long)]
    json: bool,

    /// Pace a file in real time, as a live stream would arrive.
    #[arg(long)]
    realtime: bool,

    /// Frames as ingest would publish them (as `mouthmap ingest`).
    #[command(flatten)]
    frames: FrameFormatArgs,

    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    decoder: DecoderArgs,

    #[command(flatten)]
    crop: CropArgs,
}

fn print(t: &Transcript, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, t)?;
        writeln!(out)?;
    } else {
        let why = if t.no_face {
            " (no face found in the video: nothing to read)"
        } else {
            ""
        };
        match t.kind {
            TranscriptKind::Partial => writeln!(out, "partial: {}{why}", t.text)?,
            TranscriptKind::Final => writeln!(out, "final: {}{why}", t.text)?,
        }
    }
    out.flush()
}

pub async fn run(args: TranscribeArgs) -> anyhow::Result<ExitCode> {
    tokio::task::block_in_place(|| run_blocking(args))
}

fn run_blocking(args: TranscribeArgs) -> anyhow::Result<ExitCode> {
    mouthmap_ingest::capture::init()?;
    let source =
        Source::parse(&args.source).with_context(|| format!("source {:?}", args.source))?;
    // The version --model names (a repository model keeps its name and
    // version in the transcript).
    let served = args.model.load_served(false)?;
    let info = served[0].model.info().clone();
    let mut crop = args.crop.clone();
    crop.crop_size = (info.width as u32, info.height as u32);
    let stages = Stages {
        preprocess: crop.stage()?,
        infer: Inferencer::serving(
            served,
            InferSettings {
                hop: args.model.hop,
                max_batch: 16,
                max_delay: std::time::Duration::ZERO,
                early: args.model.early,
                front_end: args.model.front_end.into(),
            },
        )?,
        decode: args.decoder.stage(),
    };
    tracing::info!(model = %info.name, version = %info.version, "transcribing");
    let mut settings = args.frames.in_process_settings();
    settings.capture.realtime = args.realtime;
    let json = args.json;
    transcribe(&source, &settings, stages, &mut |t| print(t, json))?;
    Ok(ExitCode::SUCCESS)
}

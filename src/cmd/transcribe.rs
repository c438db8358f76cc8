//! `mouthmap transcribe`: the whole pipeline in one process, no broker.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use mouthmap_bus::contract::{EndReason, FrameEvent, Transcript, TranscriptKind};
use mouthmap_decoder::stage::{DecodeSettings, Decoder};
use mouthmap_inferencer::model::{Device, Model};
use mouthmap_inferencer::stage::{InferSettings, Inferencer};
use mouthmap_ingest::source::Source;
use mouthmap_ingest::stream::{Emitter, StreamControl, StreamSettings, run_stream};
use mouthmap_preprocessor::stage::Preprocessor;

use super::FrameFormatArgs;
use super::preprocess::CropArgs;

pub const LONG_ABOUT: &str = "\
Transcribe a video from the lips alone, in one process: ingest, preprocess,
infer and decode run the same stage code as the services, over in-memory
hand-offs, with no broker and no Redis. Partial transcripts are printed as
they form, then the final one.

  mouthmap transcribe clip.mp4
  mouthmap transcribe --json rtmp://127.0.0.1/live/cam-1     # JSON lines; the last is \"kind\": \"final\"";

/// The default model: `models/mouthmap-lipnet-grid-s1.onnx` in the working
/// directory or beside an ancestor of the executable (the repository).
pub fn default_model() -> PathBuf {
    let rel = std::path::Path::new("models/mouthmap-lipnet-grid-s1.onnx");
    let mut candidates = vec![rel.to_path_buf()];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|a| a.join(rel)));
    }
    candidates
        .into_iter()
        .find(|c| c.exists())
        .unwrap_or_else(|| rel.to_path_buf())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::Cuda,
        }
    }
}

/// The model and how it runs (shared by `transcribe` and `infer`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// Lip-reading model (ONNX, MouthMap contract). Default: the committed reference model.
    #[arg(long, env = "MOUTHMAP_MODEL")]
    pub model: Option<PathBuf>,

    /// Where the model runs; cuda needs the onnxruntime-gpu library (no silent fallback to cpu).
    #[arg(long, env = "MOUTHMAP_DEVICE", value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,

    /// ONNX Runtime threads for the model.
    #[arg(long, env = "MOUTHMAP_MODEL_THREADS", default_value_t = 2)]
    pub model_threads: usize,

    /// Frames between window starts (75-frame windows; shorter hops give earlier partials).
    #[arg(long, env = "MOUTHMAP_HOP", default_value_t = 25)]
    pub hop: usize,

    /// CTC prefix beam width (0 = greedy decoding).
    #[arg(long, env = "MOUTHMAP_BEAM", default_value_t = 8)]
    pub beam: usize,

    /// Decode under a word grammar (`grid`: command colour preposition letter digit adverb).
    #[arg(long, env = "MOUTHMAP_GRAMMAR")]
    pub grammar: Option<String>,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<Model> {
        let path = self.model.clone().unwrap_or_else(default_model);
        Ok(Model::load(&path, self.device.into(), self.model_threads)?)
    }
}

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

    /// Bounded re-decoding: past this many frames, settled words are committed
    /// (0 re-decodes the whole stream each window); as `mouthmap decode`.
    #[arg(long, env = "MOUTHMAP_MAX_DECODE_FRAMES", default_value_t = 250)]
    max_decode_frames: usize,

    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    crop: CropArgs,
}

struct Chain {
    pre: Preprocessor,
    infer: Inferencer,
    decode: Decoder,
    json: bool,
    finals: Vec<Transcript>,
    error: Option<String>,
}

impl Chain {
    fn print(&mut self, t: Transcript) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut out, &t)?;
            writeln!(out)?;
        } else {
            match t.kind {
                TranscriptKind::Partial => writeln!(out, "partial: {}", t.text)?,
                TranscriptKind::Final => writeln!(out, "final: {}", t.text)?,
            }
        }
        out.flush()?;
        if t.kind == TranscriptKind::Final {
            self.finals.push(t);
        }
        Ok(())
    }

    fn feed(&mut self, event: FrameEvent, payload: &[u8]) -> anyhow::Result<()> {
        for (mouth, crops) in self.pre.handle(&event, payload)? {
            for out in self.infer.handle(&mouth, &crops, &[])? {
                for t in self.decode.handle(&out.event, &out.payload)? {
                    self.print(t)?;
                }
            }
        }
        Ok(())
    }
}

impl Emitter for Chain {
    fn emit(&mut self, event: FrameEvent, payload: Vec<u8>, _span: tracing::Span) -> bool {
        match self.feed(event, &payload) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                false
            }
        }
    }
}

pub async fn run(args: TranscribeArgs) -> anyhow::Result<ExitCode> {
    tokio::task::block_in_place(|| run_blocking(args))
}

fn run_blocking(args: TranscribeArgs) -> anyhow::Result<ExitCode> {
    mouthmap_ingest::capture::init()?;
    let source =
        Source::parse(&args.source).with_context(|| format!("source {:?}", args.source))?;
    let model = args.model.load()?;
    let info = model.info().clone();
    let mut crop = args.crop.clone();
    crop.crop_size = (info.width as u32, info.height as u32);
    let mut chain = Chain {
        pre: crop.stage()?,
        infer: Inferencer::new(
            model,
            InferSettings {
                hop: args.model.hop,
                max_batch: 16,
                max_delay: std::time::Duration::ZERO,
            },
        ),
        decode: Decoder::new(DecodeSettings {
            beam: args.model.beam,
            grammar: args.model.grammar.clone(),
            max_decode_frames: args.max_decode_frames,
            ..DecodeSettings::default()
        }),
        json: args.json,
        finals: Vec::new(),
        error: None,
    };
    tracing::info!(model = %info.name, version = %info.version, "transcribing");
    let mut settings = StreamSettings::default();
    settings.capture.realtime = args.realtime;
    settings.pixel_format = args.frames.pixel_format.into();
    settings.jpeg_quality = args.frames.jpeg_quality;
    let id = source.default_stream_id();
    let end = run_stream(
        &id,
        &source,
        &settings,
        &Arc::new(StreamControl::default()),
        &mut chain,
    );
    if let Some(e) = chain.error {
        bail!("{e}");
    }
    if end.reason == EndReason::Error {
        bail!(
            "{}",
            end.error.unwrap_or_else(|| "the source failed".into())
        );
    }
    if chain.finals.len() != 1 {
        bail!("expected one final transcript, got {}", chain.finals.len());
    }
    Ok(ExitCode::SUCCESS)
}

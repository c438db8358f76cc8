//! `mouthmap preprocess`: frames in, mouth crops out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_preprocessor::detector::{Detector, DetectorSettings};
use mouthmap_preprocessor::geometry::BoxParams;
use mouthmap_preprocessor::service::PreprocessHandler;
use mouthmap_preprocessor::stage::Preprocessor;
use mouthmap_preprocessor::tracker::TrackerSettings;

use mouthmap_feature_store::writer::FeatureWriter;

use super::{KafkaArgs, ServiceWiring, StageFeatureArgs, StreamStateArgs, run_service};

/// Where the mouth box is on frames the detector skipped.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxesBetween {
    /// On the line between the detections on either side.
    Interpolate,
    /// The last detection's box.
    Hold,
}

/// Face detection and cropping settings (shared by `preprocess` and `crops`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Face and mouth")]
pub struct CropArgs {
    /// YuNet face detector (ONNX). Upstream: OpenCV model zoo, models/face_detection_yunet.
    #[arg(
        long,
        env = "MOUTHMAP_FACE_MODEL",
        default_value = "../shared/models/yunet/face_detection_yunet_2026may.onnx"
    )]
    pub face_model: PathBuf,

    /// Faces scoring under this are ignored (0..1).
    #[arg(long, env = "MOUTHMAP_FACE_SCORE", default_value_t = 0.6)]
    pub face_score: f32,

    /// Run the face detector on every Nth frame (1: every frame). With
    /// --boxes-between interpolate (the default) it also runs on each chunk's
    /// last frame, so with ingest's chunks of 6 frames the default 6 detects
    /// on a sixth of the frames: the reference model reads those crops as
    /// well as crops detected on every third or every frame (streaming word
    /// error 17.0% / 11.0% GRID against 17.7% / 13.0% every third, measured
    /// the same day), for a sixth of the detector, the crop's largest cost
    /// (preprocessor/README.md).
    #[arg(
        long,
        env = "MOUTHMAP_DETECT_EVERY",
        default_value_t = mouthmap_preprocessor::tracker::TrackerSettings::default().detect_every,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub detect_every: u32,

    /// The face detector reads frames at 1/N of their width and height
    /// (1 or 2; 2: each pixel the mean of four, about a quarter of the
    /// detector's cost). Boxes and landmarks come back in the frame's pixels.
    #[arg(
        long,
        env = "MOUTHMAP_DETECT_SCALE",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=2)
    )]
    pub detect_scale: u8,

    /// The mouth box on frames between detections: `interpolate` (on the line
    /// between the detections on either side, within a chunk, so no frame
    /// waits for a later one) or `hold` (the last detection's box, with a new
    /// detection when the face region changes, see --recheck-threshold; the
    /// reference model reads held boxes detected every 5th frame 6.7 points
    /// worse).
    #[arg(
        long,
        env = "MOUTHMAP_BOXES_BETWEEN",
        value_enum,
        default_value_t = BoxesBetween::Interpolate
    )]
    pub boxes_between: BoxesBetween,

    /// Between detections, detect anyway when the face region changed by more than this (mean, 0..255).
    #[arg(long, env = "MOUTHMAP_RECHECK_THRESHOLD", default_value_t = 8.0)]
    pub recheck_threshold: f32,

    /// Weight of a new detection in the smoothed mouth box (1 = no smoothing).
    #[arg(long, env = "MOUTHMAP_BOX_SMOOTHING", default_value_t = 0.6)]
    pub box_smoothing: f32,

    /// Frames a lost face's box is held before the stream is flagged as having no face.
    #[arg(long, env = "MOUTHMAP_MAX_FACE_GAP", default_value_t = 25)]
    pub max_face_gap: u32,

    /// Mouth box width as a multiple of the distance between the eyes.
    #[arg(long, env = "MOUTHMAP_MOUTH_WIDTH", default_value_t = 1.3)]
    pub mouth_width: f32,

    /// Mouth box height as a fraction of its width.
    #[arg(long, env = "MOUTHMAP_MOUTH_ASPECT", default_value_t = 0.5)]
    pub mouth_aspect: f32,

    /// Crop width and height in pixels (the model's frame size).
    #[arg(long, env = "MOUTHMAP_CROP_SIZE", value_parser = crop_size, default_value = "140x46")]
    pub crop_size: (u32, u32),

    /// Detect near the face found last only: in a region that adds this many
    /// times the face's size on every side, on the detector's 32-pixel grid
    /// (the whole frame when no face is there); 0 (the default): always the
    /// whole frame. 0.5 moves landmarks 0.3 pixels on average and costs the
    /// reference model 0.3 points of streaming word error on GRID, whose
    /// frames the face fills (a quarter less to detect on); a small face in a
    /// large frame saves far more (preprocessor/README.md).
    #[arg(
        long,
        env = "MOUTHMAP_DETECT_REGION",
        default_value_t = 0.0,
        value_name = "MARGIN"
    )]
    pub detect_region: f32,

    /// ONNX Runtime threads for the face detector.
    #[arg(long, env = "MOUTHMAP_DETECTOR_THREADS", default_value_t = 1)]
    pub detector_threads: usize,
}

fn crop_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or("write the size as WIDTHxHEIGHT, e.g. 140x46")?;
    let parse = |v: &str| v.trim().parse::<u32>().map_err(|e| format!("{v:?}: {e}"));
    let (w, h) = (parse(w)?, parse(h)?);
    if w == 0 || h == 0 {
        return Err("crop size must not be empty".into());
    }
    Ok((w, h))
}

impl CropArgs {
    pub fn tracker(&self) -> TrackerSettings {
        TrackerSettings {
            detect_every: self.detect_every,
            recheck_threshold: self.recheck_threshold,
            smoothing: self.box_smoothing.clamp(0.01, 1.0),
            interpolate: self.boxes_between == BoxesBetween::Interpolate,
            max_gap: self.max_face_gap,
            region_margin: (self.detect_region > 0.0).then_some(self.detect_region),
            box_params: BoxParams {
                width_scale: self.mouth_width,
                aspect: self.mouth_aspect,
                ..BoxParams::default()
            },
            crop_width: self.crop_size.0,
            crop_height: self.crop_size.1,
        }
    }

    pub fn detector_settings(&self) -> DetectorSettings {
        DetectorSettings {
            score_threshold: self.face_score,
            threads: self.detector_threads,
            downscale: self.detect_scale as usize,
            ..DetectorSettings::default()
        }
    }

    pub fn detector(&self) -> anyhow::Result<Detector> {
        Ok(Detector::load(&self.face_model, self.detector_settings())?)
    }

    pub fn stage(&self) -> anyhow::Result<Preprocessor> {
        Ok(Preprocessor::new(self.detector()?, self.tracker()))
    }
}

#[derive(Args, Debug)]
pub struct PreprocessArgs {
    /// Consumer group; every replica in the group shares the streams.
    #[arg(
        long,
        env = "MOUTHMAP_PREPROCESS_GROUP",
        default_value = "mouthmap-preprocess"
    )]
    group: String,

    /// Where GET /metrics is served.
    #[arg(
        long,
        env = "MOUTHMAP_PREPROCESS_METRICS",
        default_value = "127.0.0.1:9101"
    )]
    metrics_listen: SocketAddr,

    #[command(flatten)]
    crop: CropArgs,

    #[command(flatten)]
    features: StageFeatureArgs,

    #[command(flatten)]
    state: StreamStateArgs,

    #[command(flatten)]
    kafka: KafkaArgs,
}

pub async fn run(args: PreprocessArgs) -> anyhow::Result<ExitCode> {
    let metrics = StageMetrics::new("preprocess");
    let mut handler = PreprocessHandler {
        stage: args.crop.stage()?,
        mouths_topic: args.kafka.mouths_topic.clone(),
        metrics: metrics.clone(),
        features: args
            .features
            .store()?
            .map(|s| FeatureWriter::spawn(s, 1024).0),
        idle_timeout: args.state.stream_idle_timeout,
    };
    let wiring = ServiceWiring {
        stage: "preprocess",
        kafka: &args.kafka,
        group: &args.group,
        input_topic: &args.kafka.frames_topic,
        output_topic: &args.kafka.mouths_topic,
        metrics_listen: args.metrics_listen,
        tick: Duration::from_secs(1),
    };
    run_service(wiring, &mut handler, &metrics).await
}

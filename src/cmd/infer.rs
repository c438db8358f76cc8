//! `mouthmap infer`: mouth crops in, per-window CTC probabilities out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_inferencer::model::{Device, Model};
use mouthmap_inferencer::repository::Repository;
use mouthmap_inferencer::routing::{Guard, GuardSettings};
use mouthmap_inferencer::service::{InferHandler, ModelRouter, Reloader};
use mouthmap_inferencer::stage::{FrontEnd, InferSettings, Inferencer, Served};

use super::{KafkaArgs, ServiceWiring, StageFeatureArgs, StreamStateArgs, duration, run_service};

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

/// Where the model repository is (shared by `infer`, `transcribe` and `models`).
#[derive(Args, Debug, Clone)]
pub struct RepositoryArgs {
    /// The model repository: NAME/VERSION/model.onnx, Triton's layout (docs/models.md).
    /// Default: models/ in the checkout.
    #[arg(long, global = true, env = "MOUTHMAP_MODELS_DIR", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
}

impl RepositoryArgs {
    pub fn dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(mouthmap_onnx::default_models_dir)
    }

    pub fn open(&self) -> anyhow::Result<Repository> {
        Ok(Repository::open(&self.dir())?)
    }

    /// The ONNX file `model` names: a path (it ends in .onnx, holds a '/',
    /// or is a file), else NAME or NAME:VERSION in the repository; with no
    /// name, the reference model's latest version.
    pub fn model_file(&self, model: Option<&str>) -> anyhow::Result<PathBuf> {
        let spec = model.unwrap_or(mouthmap_onnx::DEFAULT_MODEL_NAME);
        if spec.ends_with(".onnx") || spec.contains('/') || Path::new(spec).is_file() {
            return Ok(PathBuf::from(spec));
        }
        Ok(self.open()?.resolve(spec)?.model())
    }
}

/// The model and how it runs (shared by `infer` and `transcribe`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// The lip-reading model: NAME or NAME:VERSION in the model repository
    /// (latest version when none is named), or the path of an .onnx file
    /// (MouthMap contract). Default: mouthmap-lipnet-grid-s1, the committed
    /// reference model.
    #[arg(long, env = "MOUTHMAP_MODEL", value_name = "NAME[:VERSION]|FILE")]
    pub model: Option<String>,

    #[command(flatten)]
    pub repository: RepositoryArgs,

    /// Where the model runs; cuda needs the onnxruntime-gpu library (no silent fallback to cpu).
    #[arg(long, env = "MOUTHMAP_DEVICE", value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,

    /// ONNX Runtime threads for the model. One is the most windows per core
    /// (two cost 25% more CPU per window and gained no latency under load on a
    /// 2-core box that runs the other stages too: docs/benchmarks.md); more
    /// shorten a window's own run on a machine with cores to spare.
    #[arg(long, env = "MOUTHMAP_MODEL_THREADS", default_value_t = 1)]
    pub model_threads: usize,

    /// Frames between window starts (75-frame windows; shorter hops give earlier partials).
    #[arg(long, env = "MOUTHMAP_HOP", default_value_t = 25)]
    pub hop: usize,

    /// Before a stream's first whole window, a window every N frames over what
    /// has arrived (padded with the newest frame), so its first words show
    /// within N frames instead of a whole window; each is replaced by the next.
    /// 0: none.
    #[arg(
        long = "early-windows",
        env = "MOUTHMAP_EARLY_WINDOWS",
        default_value_t = 15,
        value_name = "N"
    )]
    pub early: usize,

    /// How a model whose version folder also holds its front end and back
    /// end (front.onnx, back.onnx beside model.onnx) reads a stream. once:
    /// each frame's front end once per stream and only the back end per
    /// window, with the same output (1.8x less CPU a frame at hop 25, 2.4x at
    /// hop 10: docs/benchmarks.md); per-window: the whole graph on every
    /// window, as a model that comes as one graph is always read.
    #[arg(long, env = "MOUTHMAP_FRONT_END", value_enum, default_value_t = FrontEndArg::Once)]
    pub front_end: FrontEndArg,
}

/// `--front-end`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEndArg {
    Once,
    PerWindow,
}

impl From<FrontEndArg> for FrontEnd {
    fn from(f: FrontEndArg) -> Self {
        match f {
            FrontEndArg::Once => FrontEnd::Once,
            FrontEndArg::PerWindow => FrontEnd::PerWindow,
        }
    }
}

impl ModelArgs {
    /// The versions to serve, the one --model names first (it reads every
    /// stream nothing else routes). A file is served alone; a repository
    /// model with `all_versions` brings its other versions that pass the
    /// contract check (one that fails is refused, logged, and the others
    /// serve).
    pub fn load_served(&self, all_versions: bool) -> anyhow::Result<Vec<Served>> {
        let spec = self
            .model
            .as_deref()
            .unwrap_or(mouthmap_onnx::DEFAULT_MODEL_NAME);
        let path = self.repository.model_file(Some(spec))?;
        let load = |p: &Path| Model::load(p, self.device.into(), self.model_threads);
        if spec.ends_with(".onnx") || spec.contains('/') || Path::new(spec).is_file() {
            return Ok(vec![Served::file(load(&path)?)]);
        }
        let repository = self.repository.open()?;
        let named = repository.resolve(spec)?;
        let mut served = vec![Served {
            name: named.name.clone(),
            version: named.version,
            model: load(&named.model())?,
            retired: false,
        }];
        if all_versions {
            for v in repository.versions(&named.name)? {
                if v.version == named.version {
                    continue;
                }
                match load(&v.model()) {
                    Ok(model) => served.push(Served {
                        name: v.name.clone(),
                        version: v.version,
                        model,
                        retired: false,
                    }),
                    Err(e) => {
                        tracing::error!(model = %v.name, version = v.version, error = %e, "model version refused; the others serve")
                    }
                }
            }
        }
        Ok(served)
    }
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Consumer group; every replica in the group shares the streams.
    #[arg(long, env = "MOUTHMAP_INFER_GROUP", default_value = "mouthmap-infer")]
    group: String,

    /// Where GET /metrics is served (port 0: any free port).
    #[arg(long, env = "MOUTHMAP_INFER_METRICS", default_value = "127.0.0.1:9102")]
    metrics_listen: SocketAddr,

    /// Windows per model run at most (dynamic batching across streams).
    #[arg(long, env = "MOUTHMAP_MAX_BATCH", default_value_t = 16)]
    max_batch: usize,

    /// How long a ready window may wait for a fuller batch. Default: 0 on the
    /// CPU (each window runs as soon as it forms: on a CPU a batch costs
    /// nearly its windows' sum, so waiting only adds latency; see
    /// docs/benchmarks.md), 20ms on CUDA.
    #[arg(long, env = "MOUTHMAP_MAX_QUEUE_DELAY", value_parser = duration)]
    max_queue_delay: Option<Duration>,

    #[command(flatten)]
    model: ModelArgs,

    /// Serve only the version --model names (default: every version of that
    /// model in the repository, so routes and stream features can pick one;
    /// the named version reads streams nothing else routes).
    #[arg(long, env = "MOUTHMAP_ONLY_NAMED_VERSION")]
    only_named_version: bool,

    /// A version of the served model that also reads every window of every
    /// stream, in the shadow: its windows are marked `shadow`, decoded
    /// apart (`decode --shadow-topic`) and compared with what users read;
    /// no user sees them.
    #[arg(long, env = "MOUTHMAP_SHADOW_VERSION", value_name = "VERSION")]
    shadow: Option<u64>,

    /// How often the model repository is looked at for versions added or
    /// removed while serving (0s: never; the versions loaded at startup serve).
    #[arg(long, env = "MOUTHMAP_RELOAD_EVERY", value_parser = duration, default_value = "5s")]
    reload_every: Duration,

    /// The automatic rollback guard: when a route's canary is slower than the
    /// live version (p95 time per window over the last windows of each) by
    /// more than --guard-latency-margin, its share goes to 0% (false: off).
    #[arg(long, env = "MOUTHMAP_ROLLBACK_GUARD", default_value_t = true, action = clap::ArgAction::Set)]
    rollback_guard: bool,

    /// How much slower than the live version a canary may be, as a share
    /// (0.5: half as slow again).
    #[arg(long, env = "MOUTHMAP_GUARD_LATENCY_MARGIN", default_value_t = 0.5)]
    guard_latency_margin: f64,

    /// The share of windows whose run failed by which a canary may exceed
    /// the live version (0.05: 5 points; a failed window is read by the
    /// version infer was started with instead).
    #[arg(long, env = "MOUTHMAP_GUARD_ERROR_MARGIN", default_value_t = 0.05)]
    guard_error_margin: f64,

    /// Windows of each version the guard needs before it judges.
    #[arg(long, env = "MOUTHMAP_GUARD_MIN_WINDOWS", default_value_t = 30)]
    guard_min_windows: usize,

    /// Routing reads (a stream's `model` feature, the model's route) longer
    /// than this are given up: the default version reads the stream.
    #[arg(long, env = "MOUTHMAP_ROUTING_DEADLINE", value_parser = duration, default_value = "200ms")]
    routing_deadline: Duration,

    #[command(flatten)]
    features: StageFeatureArgs,

    #[command(flatten)]
    state: StreamStateArgs,

    #[command(flatten)]
    kafka: KafkaArgs,
}

pub async fn run(args: InferArgs) -> anyhow::Result<ExitCode> {
    let metrics = StageMetrics::new("infer");
    let served = args.model.load_served(!args.only_named_version)?;
    for s in &served {
        let i = s.model.info();
        tracing::info!(model = %s.name, version = s.version, model_version = %i.version, path = %s.model.path().display(), "model loaded");
        metrics.model_served(&s.name, &s.version_label());
    }
    let max_delay = args.max_queue_delay.unwrap_or(match args.model.device {
        DeviceArg::Cpu => Duration::ZERO,
        DeviceArg::Cuda => Duration::from_millis(20),
    });
    let settings = InferSettings {
        hop: args.model.hop.max(1),
        max_batch: args.max_batch.max(1),
        max_delay,
        early: args.model.early,
        front_end: args.model.front_end.into(),
    };
    let mut stage = Inferencer::serving(served, settings)?;
    if let Some(v) = args.shadow {
        let served = stage.served();
        let index = served
            .iter()
            .position(|s| s.version == v)
            .with_context(|| {
                format!(
                    "--shadow {v}: no such version of {} is served (served: {})",
                    served[0].name,
                    served
                        .iter()
                        .map(|s| s.version.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        tracing::info!(model = %served[index].name, version = v, "shadow version: reads every window, seen by no user");
        stage.set_shadow(Some(index));
    }
    // A model from the repository, all its versions served: versions added
    // or removed while running are picked up (hot reload), and routing reads
    // the feature store. One model from a file: neither.
    let from_repository = stage.served()[0].version > 0;
    let reloader = (from_repository && !args.only_named_version).then(|| {
        args.model.repository.open().map(|repository| {
            Reloader::new(
                repository,
                stage.served()[0].name.clone(),
                args.model.device.into(),
                args.model.model_threads,
                args.reload_every,
            )
        })
    });
    let reloader = reloader.transpose()?;
    let store = if stage.served().len() > 1 || reloader.is_some() {
        args.features.store()?
    } else {
        None
    };
    let mut router = ModelRouter::new(store, args.routing_deadline);
    router.guard = args.rollback_guard.then(|| {
        Guard::new(GuardSettings {
            latency_margin: args.guard_latency_margin.max(0.0),
            min_windows: args.guard_min_windows.max(1),
            error_margin: args.guard_error_margin.max(0.0),
            ..GuardSettings::default()
        })
    });
    let mut handler = InferHandler {
        stage,
        logits_topic: args.kafka.logits_topic.clone(),
        metrics: metrics.clone(),
        idle_timeout: args.state.stream_idle_timeout,
        clock: Default::default(),
        inputs: Default::default(),
        router,
        reloader,
    };
    let wiring = ServiceWiring {
        stage: "infer",
        kafka: &args.kafka,
        group: &args.group,
        input_topic: &args.kafka.mouths_topic,
        output_topic: &args.kafka.logits_topic,
        metrics_listen: args.metrics_listen,
        // With no delay windows run as they form; the tick only serves a wait.
        tick: if max_delay.is_zero() {
            Duration::from_millis(100)
        } else {
            (max_delay / 2).max(Duration::from_millis(2))
        },
    };
    run_service(wiring, &mut handler, &metrics).await
}

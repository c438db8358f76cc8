//! `mouthmap`: one binary, one subcommand per pipeline role. Each role runs
//! as its own process and scales on its own (Kafka consumer groups).

mod cmd;
mod config;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use mouthmap_bus::telemetry::{self, LogFormat};

const ABOUT: &str = "MouthMap: real-time lip reading, from video to transcripts, on Kafka.";

const LONG_ABOUT: &str = "\
MouthMap: real-time lip reading, from video to transcripts, on Kafka.

The pipeline is a chain of services joined by Kafka topics:
  ingest -> frames -> preprocess -> mouths -> infer -> logits -> decode -> transcripts

Every setting can be given as a flag, as an environment variable (shown in
each command's --help), or in a TOML file named with --config; flags win over
the environment, which wins over the file.

Traces are exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set
(for example http://localhost:4318, Jaeger's OTLP port).";

#[derive(Parser, Debug)]
#[command(name = "mouthmap", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// TOML file of settings (keys are flag names; see README "Configuration").
    #[arg(long, global = true, env = "MOUTHMAP_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// Log filter in RUST_LOG syntax, e.g. `info` or `mouthmap_ingest=debug,info`
    /// (default: info,ort=warn; warn for `crops` and `transcribe`, whose output is for people).
    #[arg(long, global = true, env = "MOUTHMAP_LOG")]
    log: Option<String>,

    /// Log line format on stderr.
    #[arg(long, global = true, env = "MOUTHMAP_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read video (file, RTMP, RTSP, HTTP, camera) and publish 25 fps frame chunks to the `frames` topic.
    #[command(long_about = cmd::ingest::LONG_ABOUT)]
    Ingest(Box<cmd::ingest::IngestArgs>),
    /// Find the face and crop the mouth: `frames` in, `mouths` out (a consumer-group service).
    Preprocess(cmd::preprocess::PreprocessArgs),
    /// Run the model over sliding windows: `mouths` in, `logits` out (a consumer-group service).
    Infer(cmd::infer::InferArgs),
    /// Stitch windows and decode text: `logits` in, `transcripts` out (a consumer-group service).
    Decode(cmd::decode::DecodeArgs),
    /// Mouth crops of video files for training (.npy), or a contact sheet (--preview).
    #[command(long_about = cmd::crops::LONG_ABOUT)]
    Crops(cmd::crops::CropsArgs),
    /// Transcribe a video in one process (ingest, preprocess, infer, decode; no broker).
    #[command(long_about = cmd::transcribe::LONG_ABOUT)]
    Transcribe(cmd::transcribe::TranscribeArgs),
    /// The front doors: a live web view, an HTTP upload API and a gRPC streaming API on the topics.
    #[command(long_about = cmd::gateway::LONG_ABOUT)]
    Gateway(cmd::gateway::GatewayArgs),
    /// Feature store: set and read stream and speaker features, keep aggregates from transcripts.
    #[command(long_about = cmd::features::LONG_ABOUT)]
    Features(cmd::features::FeaturesArgs),
    /// The model repository: list, show and validate model versions; export one to Triton.
    #[command(long_about = cmd::models::LONG_ABOUT)]
    Models(cmd::models::ModelsArgs),
    /// Manage the pipeline's Kafka topics.
    Topics(cmd::topics::TopicsArgs),
    /// Print a topic's messages as JSON lines (metadata decoded, payload sizes only).
    Tail(cmd::tail::TailArgs),
}

fn parse() -> anyhow::Result<Cli> {
    let args: Vec<String> = std::env::args().collect();
    // `--help` names each setting's environment variable but never prints
    // its value: MOUTHMAP_KAFKA_OPTIONS and MOUTHMAP_REDIS_URL can hold
    // passwords, MOUTHMAP_API_TOKEN is one.
    let mut command = hide_env_values(Cli::command());
    if let Some(path) = config::config_path(&args) {
        let table = config::load(&path)?;
        command = config::apply(command, &table, &path)?;
    }
    let matches = command.get_matches_from(args);
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

fn hide_env_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| a.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

/// glibc gives threads that allocate at once heaps (arenas) of their own,
/// up to 8 per core, and each keeps what it once held. A service runs many
/// threads that come and go (GStreamer's per stream, librdkafka's, ONNX
/// Runtime's), so its resident memory crept up for half an hour in the
/// soak (docs/reliability.md). Two arenas keep it flat on the few cores a
/// service gets. `MALLOC_ARENA_MAX` in the environment wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called first
        // thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let service = match &cli.command {
        Command::Ingest(_) => "mouthmap-ingest",
        Command::Preprocess(_) => "mouthmap-preprocess",
        Command::Crops(_) => "mouthmap-crops",
        Command::Infer(_) => "mouthmap-infer",
        Command::Decode(_) => "mouthmap-decode",
        Command::Transcribe(_) => "mouthmap-transcribe",
        Command::Topics(_) => "mouthmap-topics",
        Command::Features(_) => "mouthmap-features",
        Command::Gateway(_) => "mouthmap-gateway",
        Command::Tail(_) => "mouthmap-tail",
        Command::Models(_) => "mouthmap-models",
    };
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    let filter = cli.log.clone().unwrap_or_else(|| match cli.command {
        Command::Crops(_) | Command::Transcribe(_) | Command::Models(_) => "warn".into(),
        _ => "info,ort=warn".into(),
    });
    let guard = match telemetry::init(service, &filter, format) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Ingest(args) => cmd::ingest::run(*args).await,
            Command::Preprocess(args) => cmd::preprocess::run(args).await,
            Command::Crops(args) => cmd::crops::run(args).await,
            Command::Infer(args) => cmd::infer::run(args).await,
            Command::Decode(args) => cmd::decode::run(args).await,
            Command::Transcribe(args) => cmd::transcribe::run(args).await,
            Command::Topics(args) => cmd::topics::run(args).await,
            Command::Features(args) => cmd::features::run(args).await,
            Command::Gateway(args) => cmd::gateway::run(args).await,
            Command::Tail(args) => cmd::tail::run(args).await,
            Command::Models(args) => cmd::models::run(args).await,
        }
    });
    drop(runtime);
    drop(guard); // flushes spans after the runtime is gone
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

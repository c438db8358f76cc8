//! One file per command, plus the settings they share.

pub mod crops;
pub mod decode;
pub mod features;
pub mod gateway;
pub mod infer;
pub mod ingest;
pub mod models;
pub mod preprocess;
pub mod tail;
pub mod topics;
pub mod transcribe;

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use mouthmap_bus::kafka::KafkaSettings;
use mouthmap_contracts::PixelFormat;
use mouthmap_ingest::chunker::ChunkPolicy;
use mouthmap_ingest::stream::DEFAULT_JPEG_QUALITY;
use tokio::sync::watch;

/// How ingest publishes frames (`--pixel-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PixelFormatArg {
    /// Colour, planar YUV 4:2:0 (1.5 bytes per pixel).
    I420,
    /// The luma plane alone (1 byte per pixel): the face detector sees a grey
    /// image, the mouth crops are the same pixels.
    Gray8,
    /// A JPEG per frame (`--jpeg-quality`), decoded by the preprocessor.
    Jpeg,
}

/// How frames leave ingest, shared by `ingest`, `transcribe`, `crops` and
/// `gateway`.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Capture")]
pub struct FrameFormatArgs {
    /// What frames are published as: jpeg (one JPEG per frame, see
    /// --jpeg-quality: about a third of raw I420's compressed bytes, and on
    /// this project's benchmark machine twice the streams), i420 (colour,
    /// raw) or gray8 (the luma plane alone). See ingest/README.md.
    #[arg(long, env = "MOUTHMAP_PIXEL_FORMAT", value_enum, default_value_t = PixelFormatArg::Jpeg)]
    pub pixel_format: PixelFormatArg,

    /// JPEG quality (1-100) with --pixel-format jpeg.
    #[arg(
        long,
        env = "MOUTHMAP_JPEG_QUALITY",
        default_value_t = DEFAULT_JPEG_QUALITY,
        value_parser = clap::value_parser!(u8).range(1..=100)
    )]
    pub jpeg_quality: u8,

    /// Frames per message at most (each frame is 40 ms of latency). The
    /// crop's detector runs at least on each chunk's last frame (see
    /// --detect-every), so chunks of 6 let it run on a sixth of the frames:
    /// against chunks of 3, on this project's benchmark machine, ingest
    /// --crop used 29% less CPU at 8 streams and 12 streams kept up instead
    /// of 8, at no measured cost in accuracy (docs/benchmarks.md).
    #[arg(
        long,
        env = "MOUTHMAP_FRAMES_PER_CHUNK",
        default_value_t = ChunkPolicy::default().frames_per_chunk as u32,
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub frames_per_chunk: u32,
}

impl FrameFormatArgs {
    /// Chunks of --frames-per-chunk frames, under `max_payload_bytes`.
    pub fn chunk_policy(&self, max_payload_bytes: usize) -> ChunkPolicy {
        ChunkPolicy {
            frames_per_chunk: self.frames_per_chunk as usize,
            max_payload_bytes,
        }
    }

    /// Ingest's stream settings with these frame formats and chunks.
    pub fn stream_settings(&self) -> mouthmap_ingest::stream::StreamSettings {
        mouthmap_ingest::stream::StreamSettings {
            pixel_format: self.pixel_format.into(),
            jpeg_quality: self.jpeg_quality,
            chunk: self.chunk_policy(ChunkPolicy::MAX_PAYLOAD_BYTES),
            ..Default::default()
        }
    }

    /// The same for frames that stay in this process (`transcribe`,
    /// `crops`): chunked as `ingest --crop` chunks them.
    pub fn in_process_settings(&self) -> mouthmap_ingest::stream::StreamSettings {
        mouthmap_ingest::stream::StreamSettings {
            chunk: self.chunk_policy(ChunkPolicy::IN_PROCESS_PAYLOAD_BYTES),
            ..self.stream_settings()
        }
    }
}

impl From<PixelFormatArg> for PixelFormat {
    fn from(a: PixelFormatArg) -> Self {
        match a {
            PixelFormatArg::I420 => PixelFormat::I420,
            PixelFormatArg::Gray8 => PixelFormat::Gray8,
            PixelFormatArg::Jpeg => PixelFormat::Jpeg,
        }
    }
}

/// The API token and the `Host` names an HTTP API answers to, shared by
/// `ingest` and `gateway` (the same setting opens both).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "API")]
pub struct ApiAuthArgs {
    /// Token the API requires (Authorization: Bearer TOKEN).
    /// `scripts/stack` generates one into .stack/secrets/api-token.
    #[arg(long, env = "MOUTHMAP_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Read the API token from this file (mode 0600) instead.
    #[arg(
        long,
        env = "MOUTHMAP_API_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "api_token"
    )]
    pub api_token_file: Option<std::path::PathBuf>,

    /// Host names the API answers to (repeatable), besides localhost and the
    /// listen address; other `Host` headers are refused (DNS rebinding).
    #[arg(
        long = "api-host",
        env = "MOUTHMAP_API_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub api_hosts: Vec<String>,
}

impl ApiAuthArgs {
    /// The token, from the flag or the file; none when neither is set.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        secret(
            self.api_token.as_deref(),
            self.api_token_file.as_deref(),
            "API token",
        )
    }
}

/// A secret given as a value or as a file to read (trimmed); empty is none.
pub fn secret(
    value: Option<&str>,
    file: Option<&std::path::Path>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    let text = match (value, file) {
        (Some(v), _) => v.to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the {what} from {}", path.display()))?,
        (None, None) => return Ok(None),
    };
    let text = text.trim().to_string();
    Ok((!text.is_empty()).then_some(text))
}

/// Kafka settings shared by every command.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaArgs {
    /// Bootstrap brokers, host:port[,host:port...].
    #[arg(long, env = "MOUTHMAP_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Extra librdkafka setting KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(
        long = "kafka-option",
        env = "MOUTHMAP_KAFKA_OPTIONS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub kafka_options: Vec<String>,

    /// Topic of frame chunks (ingest -> preprocess).
    #[arg(long, env = "MOUTHMAP_FRAMES_TOPIC", default_value = "frames")]
    pub frames_topic: String,

    /// Topic of mouth crops (preprocess -> infer).
    #[arg(long, env = "MOUTHMAP_MOUTHS_TOPIC", default_value = "mouths")]
    pub mouths_topic: String,

    /// Topic of per-window CTC probabilities (infer -> decode).
    #[arg(long, env = "MOUTHMAP_LOGITS_TOPIC", default_value = "logits")]
    pub logits_topic: String,

    /// Topic of transcripts (decode -> users), JSON.
    #[arg(
        long,
        env = "MOUTHMAP_TRANSCRIPTS_TOPIC",
        default_value = "transcripts"
    )]
    pub transcripts_topic: String,

    /// Topic for messages no stage could parse, with the reason in a header.
    #[arg(
        long,
        env = "MOUTHMAP_DEAD_LETTER_TOPIC",
        default_value = "dead-letters"
    )]
    pub dead_letter_topic: String,

    /// Partitions of topics this process creates (existing topics are kept as they are).
    #[arg(long, env = "MOUTHMAP_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,

    /// Replication factor of topics this process creates.
    #[arg(long, env = "MOUTHMAP_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,

    /// This replica's stable identity in its consumer groups (static membership,
    /// KIP-345): restarted under the same id, it takes its partitions back at once,
    /// also on brokers that never evict a dead member (Tansu 0.6). Give each
    /// replica its own and keep it across restarts (e.g. a StatefulSet's pod name).
    #[arg(long, env = "MOUTHMAP_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,

    /// Create missing topics at startup (turn off where topics are managed elsewhere).
    #[arg(long, env = "MOUTHMAP_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_topics: bool,
}

impl KafkaArgs {
    pub fn settings(&self, client_id: &str) -> anyhow::Result<KafkaSettings> {
        let mut s = KafkaSettings::new(&self.brokers, client_id);
        s.instance_id = self.instance_id.clone().filter(|i| !i.is_empty());
        for opt in &self.kafka_options {
            let (k, v) = opt
                .split_once('=')
                .with_context(|| format!("--kafka-option {opt:?} is not KEY=VALUE"))?;
            s.options.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(s)
    }

    pub fn all_topics(&self) -> [&str; 5] {
        [
            &self.frames_topic,
            &self.mouths_topic,
            &self.logits_topic,
            &self.transcripts_topic,
            &self.dead_letter_topic,
        ]
    }

    /// Creates the pipeline's topics if asked to.
    pub async fn prepare_topics(&self, settings: &KafkaSettings) -> anyhow::Result<()> {
        if self.create_topics {
            mouthmap_bus::kafka::ensure_topics(
                settings,
                &self.all_topics(),
                self.partitions,
                self.replication_factor,
            )
            .await
            .with_context(|| {
                format!(
                    "creating topics on {} (is the broker up? `scripts/stack up` starts one)",
                    self.brokers
                )
            })?;
        }
        Ok(())
    }
}

/// Where the feature store is, shared by the commands that read or write it.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Feature store")]
pub struct FeatureStoreArgs {
    /// Redis holding the online features.
    #[arg(
        long,
        env = "MOUTHMAP_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub redis_url: String,

    /// Feature declarations, TOML (default: the shipped feature-store/features.toml).
    #[arg(long, env = "MOUTHMAP_FEATURES_FILE", value_name = "FILE")]
    pub features_file: Option<std::path::PathBuf>,

    /// Prefix of the store's Redis keys (deployments sharing one Redis use different ones).
    #[arg(long, env = "MOUTHMAP_FEATURES_PREFIX", default_value = "mm:fs")]
    pub features_prefix: String,
}

/// Whether a pipeline stage uses the feature store, and where it is.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Feature store")]
pub struct StageFeatureArgs {
    /// Use the feature store (false: run without Redis; transcripts then say `enriched: false`).
    #[arg(long = "feature-store", env = "MOUTHMAP_FEATURE_STORE", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,

    #[command(flatten)]
    pub store: FeatureStoreArgs,
}

impl StageFeatureArgs {
    pub fn store(&self) -> anyhow::Result<Option<mouthmap_feature_store::OnlineStore>> {
        if self.enabled {
            Ok(Some(self.store.store()?))
        } else {
            Ok(None)
        }
    }
}

impl FeatureStoreArgs {
    pub fn store(&self) -> anyhow::Result<mouthmap_feature_store::OnlineStore> {
        use mouthmap_feature_store::{OnlineStore, Registry, StoreSettings};
        let registry = match &self.features_file {
            Some(path) => Registry::load(path)?,
            None => Registry::builtin(),
        };
        let mut settings = StoreSettings::new(&self.redis_url);
        settings.prefix = self.features_prefix.clone();
        Ok(OnlineStore::new(settings, std::sync::Arc::new(registry))?)
    }
}

/// How long a stage keeps a stream's state without news (shared by
/// `preprocess` and `infer`; `decode` closes such streams with a timed-out
/// final after its own `--idle-timeout`).
#[derive(Args, Debug, Clone)]
pub struct StreamStateArgs {
    /// A stream with no event for this long (its end never came) has its
    /// state dropped, so per-stream memory cannot grow without bound.
    #[arg(long, env = "MOUTHMAP_STREAM_IDLE_TIMEOUT", value_parser = duration, default_value = "2m")]
    pub stream_idle_timeout: Duration,
}

/// Where a consuming service reads, and where it serves metrics.
pub struct ServiceWiring<'a> {
    pub stage: &'a str,
    pub kafka: &'a KafkaArgs,
    pub group: &'a str,
    pub input_topic: &'a str,
    pub output_topic: &'a str,
    pub metrics_listen: std::net::SocketAddr,
    pub tick: Duration,
}

/// Runs a consuming stage: creates topics, serves /metrics, and drives
/// `handler` in the at-least-once loop until SIGTERM or Ctrl-C.
pub async fn run_service<H: mouthmap_bus::kafka::Handler>(
    w: ServiceWiring<'_>,
    handler: &mut H,
    metrics: &mouthmap_bus::metrics::StageMetrics,
) -> anyhow::Result<std::process::ExitCode> {
    use mouthmap_bus::kafka::{Producer, StageSettings, StartAt, consumer, run_stage};
    let mut kafka = w.kafka.settings(&format!("mouthmap-{}", w.stage))?;
    w.kafka.prepare_topics(&kafka).await?;
    let producer = Producer::new(&kafka)?;
    let mut input = consumer(&kafka, w.group, &[w.input_topic], StartAt::Earliest)?;
    let shutdown = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(w.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot serve metrics on {} (set --metrics-listen)",
                w.metrics_listen
            )
        })?;
    let metrics_addr = listener.local_addr()?;
    let metrics_task = tokio::spawn(mouthmap_bus::metrics::serve(listener, shutdown.clone()));
    let settings = StageSettings {
        stage: w.stage.into(),
        dead_letter_topic: w.kafka.dead_letter_topic.clone(),
        tick: w.tick,
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(10),
    };
    tracing::info!(stage = w.stage, group = w.group, input = w.input_topic, output = w.output_topic,
        metrics = %metrics_addr, "service running");
    loop {
        match run_stage(
            &input,
            &producer,
            handler,
            &settings,
            metrics,
            shutdown.clone(),
        )
        .await
        {
            // A group stuck in a rebalance: join it again as a new member.
            // Without static membership, whose stale identity is what kept
            // the group waiting (on Tansu 0.6 after a broker restart); the
            // old identity's partitions come back when the broker drops it.
            Err(mouthmap_bus::kafka::BusError::RebalanceStuck { waited }) => {
                tracing::warn!(stage = w.stage, group = w.group, ?waited, instance_id = ?kafka.instance_id,
                    "no partitions since joining or the last rebalance: the group is stuck; \
                     leaving it, and joining again without static membership once the broker \
                     can drop the silent members (the session timeout)");
                // The old member falls silent first: a join it still had in
                // flight must not keep it in the group as a live leader.
                drop(input);
                let mut stop = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(kafka.session_timeout() + Duration::from_secs(2)) => {}
                    _ = stop.changed() => break,
                }
                kafka.instance_id = None;
                input = consumer(&kafka, w.group, &[w.input_topic], StartAt::Earliest)?;
            }
            other => {
                other.with_context(|| format!("{} stopped", w.stage))?;
                break;
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    metrics_task.abort();
    Ok(std::process::ExitCode::SUCCESS)
}

/// Parses durations like `300ms`, `15s`, `2m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 300ms, 15s or 2m)"))
}

/// A watch that turns true on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        let _ = tx.send(true);
    });
    rx
}

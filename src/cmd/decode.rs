//! `mouthmap decode`: per-window probabilities in, transcripts out.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_decoder::service::{DecodeHandler, Shadow, published_finals};
use mouthmap_decoder::stage::{DecodeSettings, Decoder};

use mouthmap_feature_store::enrich::Enricher;

use super::{KafkaArgs, ServiceWiring, StageFeatureArgs, duration, run_service};

/// How posteriors become text (shared by `decode` and `transcribe`).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Decoding")]
pub struct DecoderArgs {
    /// CTC prefix beam width (0 = greedy decoding).
    #[arg(long, env = "MOUTHMAP_BEAM", default_value_t = 8)]
    pub beam: usize,

    /// Decode under a word grammar by default (`grid`: command colour preposition
    /// letter digit adverb; `lexicon:WORD WORD ...`). With a feature store, a
    /// stream's own `grammar` or `vocabulary` feature wins over this.
    #[arg(long, env = "MOUTHMAP_GRAMMAR")]
    pub grammar: Option<String>,

    /// Bounded re-decoding: past this many frames, settled words are committed
    /// and their frames dropped, so a window's decoding cost stays flat
    /// however long the stream runs (0 re-decodes the whole stream each time).
    #[arg(long, env = "MOUTHMAP_MAX_DECODE_FRAMES", default_value_t = 250)]
    pub max_decode_frames: usize,
}

impl DecoderArgs {
    /// The decode stage with these settings.
    pub fn stage(&self) -> Decoder {
        Decoder::new(DecodeSettings {
            beam: self.beam,
            grammar: self.grammar.clone(),
            max_decode_frames: self.max_decode_frames,
            ..DecodeSettings::default()
        })
    }
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// Consumer group; every replica in the group shares the streams.
    #[arg(long, env = "MOUTHMAP_DECODE_GROUP", default_value = "mouthmap-decode")]
    group: String,

    /// Where GET /metrics is served (port 0: any free port).
    #[arg(
        long,
        env = "MOUTHMAP_DECODE_METRICS",
        default_value = "127.0.0.1:9103"
    )]
    metrics_listen: SocketAddr,

    #[command(flatten)]
    decoder: DecoderArgs,

    /// Close a stream whose end event never came, with a final transcript
    /// marked timed out, once the other streams of its partition are this
    /// far ahead of it in event time (a frame's ingest time), or after ten
    /// times this without a message where nothing moves at all. A backlog
    /// upstream delays every stream alike and closes none.
    #[arg(long, env = "MOUTHMAP_IDLE_TIMEOUT", value_parser = duration, default_value = "30s")]
    idle_timeout: Duration,

    /// A feature lookup longer than this is given up: the transcript goes
    /// out on time, `enriched: false`.
    #[arg(long, env = "MOUTHMAP_FEATURES_DEADLINE", value_parser = duration, default_value = "30ms")]
    features_deadline: Duration,

    /// Features read from Redis are reused for this long (0s: read every time).
    #[arg(long, env = "MOUTHMAP_FEATURES_CACHE", value_parser = duration, default_value = "1s")]
    features_cache: Duration,

    #[command(flatten)]
    features: StageFeatureArgs,

    /// Decode shadow windows (`infer --shadow`) apart from the streams' own
    /// and send their transcripts to this topic; each stream's shadow final
    /// is compared with its live final (`mouthmap_shadow_word_error_rate`).
    /// Unset: shadow windows are passed over.
    #[arg(long, env = "MOUTHMAP_SHADOW_TOPIC")]
    shadow_topic: Option<String>,

    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Newest messages of each transcripts partition searched for finals
/// already sent, at startup.
const FINALS_LOOKBACK: i64 = 2000;

pub async fn run(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let metrics = StageMetrics::new("decode");
    let store = args.features.store()?;
    if let Some(s) = &store
        && let Err(e) = s.ping().await
    {
        tracing::warn!(error = %e, "feature store unreachable at startup; transcripts say enriched: false until it answers");
    }
    // Finals sent before a restart whose offsets were not stored yet: the
    // streams are read again, their finals not sent twice.
    let settings = args.kafka.settings("mouthmap-decode")?;
    let published_finals = match published_finals(
        &settings,
        &args.kafka.transcripts_topic,
        FINALS_LOOKBACK,
    )
    .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the finals already sent; a stream rebuilt after a restart may get its final twice");
            Default::default()
        }
    };
    if let Some(topic) = &args.shadow_topic
        && args.kafka.create_topics
    {
        mouthmap_bus::kafka::ensure_topics(
            &settings,
            &[topic],
            args.kafka.partitions,
            args.kafka.replication_factor,
        )
        .await?;
    }
    let mut handler = DecodeHandler {
        stage: args.decoder.stage(),
        transcripts_topic: args.kafka.transcripts_topic.clone(),
        metrics: metrics.clone(),
        idle_timeout: args.idle_timeout,
        enricher: store.map(|s| Enricher::new(s, args.features_cache, args.features_deadline)),
        open: Default::default(),
        clock: Default::default(),
        published_finals: published_finals.into(),
        shadow: args
            .shadow_topic
            .as_ref()
            .map(|topic| Shadow::new(args.decoder.stage(), topic)),
    };
    let wiring = ServiceWiring {
        stage: "decode",
        kafka: &args.kafka,
        group: &args.group,
        input_topic: &args.kafka.logits_topic,
        output_topic: &args.kafka.transcripts_topic,
        metrics_listen: args.metrics_listen,
        tick: Duration::from_secs(1),
    };
    run_service(wiring, &mut handler, &metrics).await
}

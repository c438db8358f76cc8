//! `mouthmap gateway`: the web view, the HTTP upload API and the gRPC
//! streaming API, on the same topics as every stage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use mouthmap_bus::kafka::Producer;
use mouthmap_gateway::service::{self, GatewaySettings};
use mouthmap_gateway::upload::Limits;

use super::{ApiAuthArgs, FeatureStoreArgs, FrameFormatArgs, KafkaArgs, duration, shutdown_signal};

pub const LONG_ABOUT: &str = "\
The front doors of the pipeline, for people and applications:

  http://127.0.0.1:8080/             the web view: live streams, the mouth the model
                                     sees, the transcript as it forms; start a stream
                                     from a URL or upload a file
  POST /v1/transcriptions            a video file in, its transcript out (JSON), or
                                     ?stream=true: every partial, then the final (NDJSON)
  GET  /v1/streams/{id}/events       Server-Sent Events of one stream
  gRPC 127.0.0.1:8081                mouthmap.v1.Transcriber/Transcribe: JPEG frames in,
                                     partials and a final out (proto/mouthmap.proto)

Everything goes through the topics: an upload is ingested by ingest's own
code onto `frames` and read back from `transcripts`, exactly as a live stream.
Every door needs the API token (the same setting as ingest's API); without
one the gateway listens on loopback only. See docs/api.md.

Examples:
  mouthmap gateway --api-token-file .stack/secrets/api-token --ingest-url http://127.0.0.1:8088
  curl -H \"authorization: Bearer $(cat .stack/secrets/api-token)\" \\
       -F file=@clip.mp4 http://127.0.0.1:8080/v1/transcriptions";

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address of the HTTP door (web view, upload API, event feeds).
    #[arg(
        long,
        env = "MOUTHMAP_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,

    /// Address of the gRPC door.
    #[arg(
        long,
        env = "MOUTHMAP_GATEWAY_GRPC_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    grpc_listen: SocketAddr,

    #[command(flatten)]
    auth: ApiAuthArgs,

    /// Ingest's API, for starting streams from URLs on the page and listing them.
    #[arg(long, env = "MOUTHMAP_INGEST_URL", value_name = "URL")]
    ingest_url: Option<String>,

    /// Uploads and gRPC streams this replica runs at once; one more gets
    /// 429 (HTTP) or RESOURCE_EXHAUSTED (gRPC).
    #[arg(long, env = "MOUTHMAP_GATEWAY_MAX_STREAMS", default_value_t = 16)]
    max_streams: usize,

    /// Bytes an upload may have at most (413 beyond).
    #[arg(long, env = "MOUTHMAP_MAX_UPLOAD_BYTES", default_value_t = 200 * 1024 * 1024)]
    max_upload_bytes: u64,

    /// How long after a video was read its final may take (504 / DEADLINE_EXCEEDED beyond).
    #[arg(long, env = "MOUTHMAP_FINAL_WAIT", value_parser = duration, default_value = "60s")]
    final_wait: Duration,

    /// Folder uploads are written to while they are ingested (default: the system's temporary folder).
    #[arg(long, env = "MOUTHMAP_UPLOAD_SPOOL", value_name = "DIR")]
    spool: Option<PathBuf>,

    /// Scale uploaded videos wider or taller than this down, keeping the aspect ratio.
    #[arg(long, env = "MOUTHMAP_MAX_WIDTH", default_value_t = 640)]
    max_width: u32,

    #[command(flatten)]
    frames: FrameFormatArgs,

    /// Let callers choose a grammar (`?grammar=grid`, StreamConfig.grammar):
    /// written as the stream's feature in the feature store.
    #[arg(long = "feature-store", env = "MOUTHMAP_FEATURE_STORE", default_value_t = true, action = clap::ArgAction::Set)]
    feature_store: bool,

    #[command(flatten)]
    store: FeatureStoreArgs,

    #[command(flatten)]
    kafka: KafkaArgs,
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let token = args.auth.token()?;
    service::check_listen(token.as_deref(), &[args.listen, args.grpc_listen])?;
    mouthmap_ingest::capture::init()?;
    let mut streams = args.frames.stream_settings();
    streams.capture.max_width = args.max_width;
    let kafka = args.kafka.settings("mouthmap-gateway")?;
    args.kafka.prepare_topics(&kafka).await?;
    let producer = Producer::new(&kafka)?;
    let settings = GatewaySettings {
        http: args.listen,
        grpc: args.grpc_listen,
        token: token.clone(),
        hosts: args.auth.api_hosts.clone(),
        kafka,
        frames_topic: args.kafka.frames_topic.clone(),
        mouths_topic: args.kafka.mouths_topic.clone(),
        transcripts_topic: args.kafka.transcripts_topic.clone(),
        streams,
        max_streams: args.max_streams,
        uploads: Limits {
            max_bytes: args.max_upload_bytes,
            final_wait: args.final_wait,
        },
        spool: args
            .spool
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("mouthmap-uploads")),
        ingest: args.ingest_url.clone().map(|u| (u, token)),
        features: if args.feature_store {
            Some(args.store.store()?)
        } else {
            None
        },
    };
    service::run(settings, producer.clone(), shutdown_signal()).await?;
    producer.flush(Duration::from_secs(30))?;
    Ok(ExitCode::SUCCESS)
}

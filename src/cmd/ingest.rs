//! `mouthmap ingest`: video in, frame chunks on the `frames` topic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use mouthmap_bus::kafka::Producer;
use mouthmap_ingest::api::{MAX_SETTLE, PLAY_WAIT, RtmpSettings};
use mouthmap_ingest::capture::CaptureSettings;
use mouthmap_ingest::chunker::ChunkPolicy;
use mouthmap_ingest::policy::SourcePolicy;
use mouthmap_ingest::service::{self, ApiSettings, IngestSettings};
use mouthmap_ingest::source::Source;
use mouthmap_ingest::stream::StreamSettings;

use mouthmap_bus::metrics::StageMetrics;
use mouthmap_contracts::PixelFormat;
use mouthmap_contracts::{Event, MouthEvent};
use mouthmap_feature_store::writer::FeatureWriter;
use mouthmap_ingest::publish::{Outgoing, publish_loop};
use mouthmap_preprocessor::stage::Preprocessor;
use tokio::sync::mpsc;

use super::preprocess::CropArgs;
use super::{
    ApiAuthArgs, FrameFormatArgs, KafkaArgs, PixelFormatArg, StageFeatureArgs, duration, secret,
    shutdown_signal,
};

pub const LONG_ABOUT: &str = "\
Read video and publish it as 25 fps frame chunks to the `frames` topic.

With SOURCEs, ingests them and exits when all have ended (exit status 1 if any
failed). Without SOURCEs (or with --serve), runs the HTTP API on --listen and
ingests whatever it is asked to, including every RTMP publish that nginx-rtmp
announces through its on_publish callback. The API needs a token
(--api-token or --api-token-file); nginx's callbacks carry a separate secret
(--rtmp-callback-secret) in a header that nginx adds when it forwards them:
render deploy/nginx/nginx-rtmp.conf.template as scripts/stack does. API
callers may name files only under --media-root, no cameras, and no network
source on an internal address (see docs/security.md).

SOURCE is a file path, file://, rtmp(s)://, rtsp(s)://, http(s)://, or a camera
(v4l2:///dev/video0 or /dev/video0), optionally prefixed with a stream id:
`cam-1=rtsp://10.0.0.5/stream`. The default id is the file's stem or the URL's
last segment. Frames are converted to I420 and 25 fps, scaled down to
--max-width, and published a few at a time (see docs/contracts.md).

With --crop, the mouth crop (preprocess) runs in this process on the raw
frames and its crops go to the `mouths` topic: one process and one broker hop
less, for a box with few cores; each stage as its own service (the default)
scales on its own.

Examples:
  mouthmap ingest clip.mp4                      # as fast as it decodes
  mouthmap ingest --realtime clip.mp4           # paced like a live stream
  mouthmap ingest --api-token-file .stack/secrets/api-token    # API on 127.0.0.1:8088
  curl -XPOST localhost:8088/v1/streams -d '{\"source\":\"rtsp://cam.example/1\"}' \\
       -H \"authorization: Bearer $(cat .stack/secrets/api-token)\" -H 'content-type: application/json'";

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Sources to ingest now: [ID=]PATH-OR-URI.
    #[arg(value_name = "SOURCE")]
    sources: Vec<String>,

    /// Keep serving the API after the SOURCEs ended (the default without SOURCEs).
    #[arg(long, env = "MOUTHMAP_INGEST_SERVE")]
    serve: bool,

    /// Address of the HTTP API (default 127.0.0.1:8088 when serving; with SOURCEs and no --serve, no API unless set).
    #[arg(long, env = "MOUTHMAP_INGEST_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,

    #[command(flatten)]
    auth: ApiAuthArgs,

    /// Files under this folder may be ingested through the API (by path
    /// relative to it); without it the API refuses every file source.
    #[arg(
        long,
        env = "MOUTHMAP_MEDIA_ROOT",
        value_name = "DIR",
        help_heading = "API"
    )]
    media_root: Option<PathBuf>,

    /// Let API callers open cameras (v4l2://).
    #[arg(long, env = "MOUTHMAP_ALLOW_DEVICES", help_heading = "API")]
    allow_devices: bool,

    /// Let API callers name network sources on loopback, private and
    /// link-local addresses (refused by default: the server would reach its
    /// own network for them).
    #[arg(long, env = "MOUTHMAP_ALLOW_PRIVATE_SOURCES", help_heading = "API")]
    allow_private_sources: bool,

    /// Streams this process runs at once at most (one thread each); more are refused.
    #[arg(
        long,
        env = "MOUTHMAP_MAX_STREAMS",
        default_value_t = 64,
        help_heading = "API"
    )]
    max_streams: usize,

    /// Pace file sources in real time (live sources always are).
    #[arg(long, env = "MOUTHMAP_REALTIME", help_heading = "Capture")]
    realtime: bool,

    /// Scale frames wider or taller than this down, keeping the aspect ratio (0 = never).
    #[arg(
        long,
        env = "MOUTHMAP_MAX_WIDTH",
        default_value_t = 640,
        help_heading = "Capture"
    )]
    max_width: u32,

    /// Threads each stream's video decoder uses (libav's decoders; 0: one
    /// per core, libav's own default). One costs the least CPU when many
    /// streams share a few cores: 16 chained real-time GRID streams took
    /// about 10% less of ingest's CPU than with libav's default on 2 cores
    /// (ingest/README.md). Raise it for a few large sources (4K) that one
    /// core cannot decode in real time.
    #[arg(
        long,
        env = "MOUTHMAP_DECODER_THREADS",
        default_value_t = 1,
        value_name = "N",
        help_heading = "Capture"
    )]
    decoder_threads: u32,

    #[command(flatten)]
    frames: FrameFormatArgs,

    /// Chain the mouth crop into this process (as Flink and Arroyo chain
    /// operators): publish mouth crops to the `mouths` topic directly, the
    /// frames handed over raw in memory (no JPEG, no `frames` topic, no
    /// preprocess service). For a box with few cores: it saves the frames'
    /// encoding, decoding and broker hop (docs/benchmarks.md). Without it (the
    /// default) preprocess is a service of its own that scales on its own.
    /// A chained ingest that restarts starts its streams again (resuming reads
    /// the `frames` topic).
    #[arg(
        long,
        env = "MOUTHMAP_INGEST_CROP",
        help_heading = "Chained mouth crop"
    )]
    crop: bool,

    /// Threads that crop with --crop, each for the streams hashed to it.
    #[arg(
        long,
        env = "MOUTHMAP_CROP_THREADS",
        default_value_t = 2,
        value_name = "N",
        help_heading = "Chained mouth crop"
    )]
    crop_threads: usize,

    #[command(flatten)]
    crop_args: CropArgs,

    #[command(flatten)]
    crop_features: StageFeatureArgs,

    /// Payload bytes per message at most (Kafka's default limit is 1 MB).
    /// With --crop, frame chunks never leave the process: they hold up to
    /// four times 600 kB of raw frames instead.
    #[arg(
        long,
        env = "MOUTHMAP_MAX_CHUNK_BYTES",
        default_value_t = ChunkPolicy::MAX_PAYLOAD_BYTES,
        help_heading = "Capture"
    )]
    max_chunk_bytes: usize,

    /// A live source without a first frame this long after opening has failed.
    #[arg(long, env = "MOUTHMAP_CONNECT_TIMEOUT", value_parser = duration, default_value = "15s", help_heading = "Live sources")]
    connect_timeout: Duration,

    /// A live source without a frame this long has dropped.
    #[arg(long, env = "MOUTHMAP_STALL_TIMEOUT", value_parser = duration, default_value = "10s", help_heading = "Live sources")]
    stall_timeout: Duration,

    /// Reconnection attempts before a dropped live source is ended with an error.
    #[arg(
        long,
        env = "MOUTHMAP_RETRIES",
        default_value_t = 3,
        help_heading = "Live sources"
    )]
    retries: u32,

    /// First reconnection delay; doubles with each attempt.
    #[arg(long, env = "MOUTHMAP_RETRY_BACKOFF", value_parser = duration, default_value = "1s", help_heading = "Live sources")]
    retry_backoff: Duration,

    /// After a publisher finished, end the stream once no frame came for this long.
    #[arg(long, env = "MOUTHMAP_DRAIN_QUIET", value_parser = duration, default_value = "1500ms", help_heading = "Live sources")]
    drain_quiet: Duration,

    /// RTMP server that ingest pulls published streams from.
    #[arg(
        long,
        env = "MOUTHMAP_RTMP_URL",
        default_value = "rtmp://127.0.0.1:1935",
        help_heading = "RTMP"
    )]
    rtmp_url: String,

    /// The nginx-rtmp application accepted in on_publish.
    #[arg(
        long,
        env = "MOUTHMAP_RTMP_APP",
        default_value = "live",
        help_heading = "RTMP"
    )]
    rtmp_app: String,

    /// Publish keys (repeatable); when set, publishers must add ?key=KEY to their URL.
    #[arg(
        long = "rtmp-publish-key",
        env = "MOUTHMAP_RTMP_PUBLISH_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        help_heading = "RTMP"
    )]
    rtmp_publish_keys: Vec<String>,

    /// Secret nginx sends with its on_publish callbacks (X-Mouthmap-Callback-Secret
    /// header, added by the rendered nginx configuration); callbacks are refused without it.
    #[arg(
        long,
        env = "MOUTHMAP_RTMP_CALLBACK_SECRET",
        hide_env_values = true,
        help_heading = "RTMP"
    )]
    rtmp_callback_secret: Option<String>,

    /// Read the callback secret from this file instead.
    #[arg(
        long,
        env = "MOUTHMAP_RTMP_CALLBACK_SECRET_FILE",
        value_name = "FILE",
        conflicts_with = "rtmp_callback_secret",
        help_heading = "RTMP"
    )]
    rtmp_callback_secret_file: Option<PathBuf>,

    /// Wait after nginx reports ingest's pull of a publish playing before
    /// letting the publisher send (nginx joins the player to the stream
    /// just after the report); at most 2s.
    #[arg(long, env = "MOUTHMAP_RTMP_SETTLE", value_parser = duration, default_value = "300ms", help_heading = "RTMP")]
    rtmp_settle: Duration,

    #[command(flatten)]
    kafka: KafkaArgs,
}

/// The mouth crop chained into ingest: `stages.len()` threads run the
/// preprocess stage, each over the streams hashed to it (so a stream's
/// frames stay in order, as the service would read them off the topic), and
/// hand their events to one publisher on the `mouths` topic. A chunk the
/// stage refuses is logged and counted (there is no dead-letter topic in
/// between); the stream goes on.
fn crop_chain(
    stages: Vec<Preprocessor>,
    producer: Producer,
    topic: String,
    features: Option<FeatureWriter>,
) -> service::Chain {
    Box::new(
        move |mut frames: mpsc::Receiver<Outgoing>, metrics: StageMetrics| {
            let (tx, mouths) = mpsc::channel::<Outgoing<MouthEvent>>(64);
            let crop_metrics = StageMetrics::new("preprocess");
            let runtime = tokio::runtime::Handle::current();
            let mut lanes = Vec::new();
            for (i, stage) in stages.into_iter().enumerate() {
                let (lane_tx, lane_rx) = std::sync::mpsc::sync_channel::<Outgoing>(16);
                let (tx, features, metrics) = (tx.clone(), features.clone(), crop_metrics.clone());
                let runtime = runtime.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("crop-{i}"))
                    .spawn(move || crop_lane(stage, lane_rx, tx, features, metrics, runtime));
                match spawned {
                    Ok(_) => lanes.push(lane_tx),
                    Err(e) => tracing::error!(error = %e, "cannot start a mouth crop thread"),
                }
            }
            drop(tx);
            // Deals each stream's events to its lane; closing the lanes ends them.
            std::thread::Builder::new()
                .name("crop-deal".into())
                .spawn(move || {
                    while let Some(input) = frames.blocking_recv() {
                        if lanes.is_empty() {
                            return;
                        }
                        let lane = lane_of(input.event.stream_id(), lanes.len());
                        if lanes[lane].send(input).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| tracing::error!(error = %e, "cannot start the mouth crop's dealer"))
                .ok();
            tokio::spawn(publish_loop(mouths, producer, topic, metrics))
        },
    )
}

/// The lane (of `lanes`) that crops `stream_id`: the same for all its events.
fn lane_of(stream_id: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stream_id.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

/// One crop thread: its streams' frame events in, their mouth events out.
fn crop_lane(
    mut stage: Preprocessor,
    frames: std::sync::mpsc::Receiver<Outgoing>,
    tx: mpsc::Sender<Outgoing<MouthEvent>>,
    features: Option<FeatureWriter>,
    metrics: StageMetrics,
    runtime: tokio::runtime::Handle,
) {
    for input in frames {
        let made = {
            let _entered = input.span.enter();
            stage.handle(&input.event, &input.payload)
        };
        match made {
            Ok(made) => {
                if let Some(writer) = &features {
                    let ends = mouthmap_preprocessor::service::offer_quality(
                        &stage, writer, &made, &metrics,
                    );
                    if !ends.is_empty() {
                        runtime.block_on(mouthmap_preprocessor::service::quality_stored(
                            ends, &metrics,
                        ));
                    }
                }
                for (event, payload) in made {
                    let out = Outgoing {
                        event,
                        payload,
                        span: input.span.clone(),
                        created: input.created,
                    };
                    if tx.blocking_send(out).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                // Counted under the kind the preprocess service gives it
                // (it displays as the stage's error).
                let e = mouthmap_bus::HandleError::from(e);
                metrics.error(e.kind());
                tracing::error!(stream_id = input.event.stream_id(), error = %e,
                    "the chained mouth crop refused a chunk; its frames are skipped");
            }
        }
    }
}

/// Splits `ID=SOURCE`; an `=` inside a URI or path (after `:` or `/`) is not a prefix.
fn split_source(text: &str) -> (Option<String>, &str) {
    match text.split_once('=') {
        Some((id, rest)) if !id.is_empty() && !id.contains([':', '/']) => {
            (Some(id.to_string()), rest)
        }
        _ => (None, text),
    }
}

pub async fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let mut sources = Vec::new();
    for text in &args.sources {
        let (id, location) = split_source(text);
        let source = Source::parse(location).with_context(|| format!("source {text:?}"))?;
        sources.push((id, source));
    }
    mouthmap_ingest::capture::init()?;
    let serving = args.serve || sources.is_empty();
    let listen = args
        .listen
        .or_else(|| serving.then(|| "127.0.0.1:8088".parse().expect("valid address")));
    let token = args.auth.token()?;
    let callback_secret = secret(
        args.rtmp_callback_secret.as_deref(),
        args.rtmp_callback_secret_file.as_deref(),
        "callback secret",
    )?;
    if args.rtmp_settle > MAX_SETTLE {
        anyhow::bail!(
            "--rtmp-settle {:?} is over {MAX_SETTLE:?}: it is part of the {PLAY_WAIT:?} in which on_publish must answer nginx (which refuses a publish whose callback takes over its netcall_timeout); use at most {MAX_SETTLE:?} (default 300ms)",
            args.rtmp_settle
        );
    }
    let settings = IngestSettings {
        streams: StreamSettings {
            capture: CaptureSettings {
                realtime: args.realtime,
                max_width: args.max_width,
                jpeg_quality: None,
                decoder_threads: args.decoder_threads,
            },
            // Chained, frame chunks stay in this process: only the mouths'
            // chunks meet the broker's message limit.
            chunk: args.frames.chunk_policy(if args.crop {
                ChunkPolicy::IN_PROCESS_PAYLOAD_BYTES
            } else {
                args.max_chunk_bytes
            }),
            // Chained, frames stay in memory: nothing to gain from JPEG.
            pixel_format: match (args.crop, args.frames.pixel_format) {
                (true, PixelFormatArg::Jpeg) => PixelFormat::I420,
                (_, f) => f.into(),
            },
            jpeg_quality: args.frames.jpeg_quality,
            connect_timeout: args.connect_timeout,
            stall_timeout: args.stall_timeout,
            retries: args.retries,
            retry_backoff: args.retry_backoff,
            drain_quiet: args.drain_quiet,
            // Set per stream: RTMP publishes announce their end.
            published: false,
            resume: None,
        },
        topic: args.kafka.frames_topic.clone(),
        sources,
        api: listen.map(|listen| ApiSettings {
            listen,
            token: token.clone(),
            callback_secret: callback_secret.clone(),
            hosts: args.auth.api_hosts.clone(),
            policy: SourcePolicy {
                media_root: args.media_root.clone(),
                allow_devices: args.allow_devices,
                allow_private_networks: args.allow_private_sources,
            },
            rtmp: RtmpSettings {
                base_url: args.rtmp_url.clone(),
                app: args.rtmp_app.clone(),
                publish_keys: args.rtmp_publish_keys.clone(),
                settle: args.rtmp_settle,
            },
        }),
        exit_when_done: !serving,
        max_streams: args.max_streams,
    };
    let kafka = args.kafka.settings("mouthmap-ingest")?;
    args.kafka.prepare_topics(&kafka).await?;
    let producer = Producer::new(&kafka)?;
    let chain = if args.crop {
        let features = args
            .crop_features
            .store()?
            .map(|s| FeatureWriter::spawn(s, 1024).0);
        let stages = (0..args.crop_threads.max(1))
            .map(|_| args.crop_args.stage())
            .collect::<anyhow::Result<Vec<_>>>()?;
        Some(crop_chain(
            stages,
            producer.clone(),
            args.kafka.mouths_topic.clone(),
            features,
        ))
    } else {
        None
    };
    let summary = service::run_with(settings, producer.clone(), shutdown_signal(), chain).await?;
    producer.flush(Duration::from_secs(30))?;
    let failed: Vec<_> = summary.ended.iter().filter(|e| e.error.is_some()).collect();
    tracing::info!(
        delivered = summary.publish.delivered,
        lost = summary.publish.failed,
        frames_lost = summary.publish.frames_lost,
        streams = summary.ended.len(),
        failed = failed.len(),
        "ingest finished"
    );
    if summary.publish.failed > 0 {
        anyhow::bail!(
            "{} messages could not be delivered to Kafka",
            summary.publish.failed
        );
    }
    if !failed.is_empty() {
        for e in &failed {
            eprintln!(
                "stream {}: {}",
                e.stream_id,
                e.error.as_deref().unwrap_or("failed")
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::split_source;

    #[test]
    fn id_prefix_only_before_any_uri_or_path() {
        assert_eq!(
            split_source("cam-1=rtsp://h/s"),
            (Some("cam-1".into()), "rtsp://h/s")
        );
        assert_eq!(
            split_source("rtmp://h/live/x?key=1"),
            (None, "rtmp://h/live/x?key=1")
        );
        assert_eq!(split_source("/tmp/a=b.mp4"), (None, "/tmp/a=b.mp4"));
        assert_eq!(split_source("clip.mp4"), (None, "clip.mp4"));
    }
}

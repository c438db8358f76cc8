//! The `ingest` service: streams from the command line and from the API,
//! published to the `frames` topic until they end or shutdown is asked.

use std::net::SocketAddr;
use std::sync::Arc;

use mouthmap_bus::kafka::Producer;
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_contracts::StreamEnd;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{self, ApiState, RtmpSettings};
use crate::manager::{StartError, StartOptions, StreamManager};
use crate::policy::SourcePolicy;
use crate::publish::{Outgoing, PublishStats, publish_loop};
use crate::source::Source;
use crate::stream::{StopMode, StreamSettings};

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the API would listen on {0} without a token: set --api-token or --api-token-file (scripts/stack generates one in .stack/secrets/api-token)"
    )]
    OpenWithoutToken(SocketAddr),
    #[error("cannot start stream: {0}")]
    Start(#[from] StartError),
}

/// The API's settings.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// Required: the service refuses to serve the API without one.
    pub token: Option<String>,
    /// The secret nginx sends with its callbacks (none: callbacks refused).
    pub callback_secret: Option<String>,
    /// `Host` names the API answers to besides loopback ones.
    pub hosts: Vec<String>,
    /// What sources API callers may start.
    pub policy: SourcePolicy,
    pub rtmp: RtmpSettings,
}

/// Everything the service needs.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub streams: StreamSettings,
    pub topic: String,
    /// Streams to start at once: (stream id, source).
    pub sources: Vec<(Option<String>, Source)>,
    /// The HTTP API, if any.
    pub api: Option<ApiSettings>,
    /// Exit when the command-line streams have ended (no API serving).
    pub exit_when_done: bool,
    /// Streams run at once at most.
    pub max_streams: usize,
}

/// What happened, for the exit status.
#[derive(Debug)]
pub struct Summary {
    pub ended: Vec<StreamEnd>,
    pub publish: PublishStats,
}

/// Takes the stream threads' events in place of the `frames` publisher: a
/// stage chained into ingest (the mouth crop, `ingest --crop`), which
/// publishes what it makes of them and returns the publisher's figures once
/// the channel closed and all was settled.
pub type Chain =
    Box<dyn FnOnce(mpsc::Receiver<Outgoing>, StageMetrics) -> JoinHandle<PublishStats> + Send>;

/// Runs until the command-line streams end (with `exit_when_done`) or
/// `shutdown` fires; then stops every stream and waits until all that was
/// captured is acknowledged by the broker.
pub async fn run(
    settings: IngestSettings,
    producer: Producer,
    shutdown: watch::Receiver<bool>,
) -> Result<Summary, ServiceError> {
    run_with(settings, producer, shutdown, None).await
}

/// [`run`], the events going to `chain` instead of the `frames` topic when
/// one is given. A chained ingest does not resume a stream from the topic
/// after a restart (that reads the `frames` topic): the stream starts again.
pub async fn run_with(
    settings: IngestSettings,
    producer: Producer,
    mut shutdown: watch::Receiver<bool>,
    chain: Option<Chain>,
) -> Result<Summary, ServiceError> {
    let metrics = StageMetrics::new("ingest");
    let (tx, rx) = mpsc::channel(64);
    let chained = chain.is_some();
    let publisher = match chain {
        Some(chain) => chain(rx, metrics.clone()),
        None => tokio::spawn(publish_loop(
            rx,
            producer.clone(),
            settings.topic.clone(),
            metrics.clone(),
        )),
    };
    let manager = StreamManager::new(settings.streams, tx, metrics, settings.max_streams);

    let (api_stop_tx, api_stop_rx) = watch::channel(false);
    let mut api_task = None;
    if let Some(api) = &settings.api {
        let Some(token) = api.token.clone().filter(|t| !t.is_empty()) else {
            return Err(ServiceError::OpenWithoutToken(api.listen));
        };
        let listener = tokio::net::TcpListener::bind(api.listen)
            .await
            .map_err(|source| ServiceError::Listen {
                addr: api.listen,
                source,
            })?;
        tracing::info!(addr = %api.listen, callbacks = api.callback_secret.is_some(),
            media_root = ?api.policy.media_root, "ingest API listening");
        let state = Arc::new(ApiState {
            manager: manager.clone(),
            guard: Arc::new(mouthmap_bus::guard::Guard {
                token: Some(token),
                hosts: api.hosts.clone(),
                listen: listener.local_addr().unwrap_or(api.listen),
            }),
            callback_secret: api.callback_secret.clone().filter(|s| !s.is_empty()),
            policy: api.policy.clone(),
            rtmp: api.rtmp.clone(),
            resume_from: (!chained).then(|| api::ResumeFrom {
                kafka: producer.settings().clone(),
                topic: settings.topic.clone(),
            }),
            plays: Default::default(),
        });
        let mut stop = api_stop_rx.clone();
        api_task = Some(tokio::spawn(async move {
            let served = axum::serve(listener, api::router(state))
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "API server failed");
            }
        }));
    }

    // The caller created the topics on the broker before this: ready.
    mouthmap_bus::health::ready(serde_json::json!({ "stage": "ingest", "topic": settings.topic }));
    let mut ids = Vec::new();
    for (id, source) in settings.sources {
        let (status, _) = manager.start(id, source, StartOptions::default())?;
        ids.push(status.id);
    }

    if settings.exit_when_done {
        tokio::select! {
            _ = manager.wait_idle() => {}
            _ = shutdown.wait_for(|s| *s) => tracing::info!("shutdown requested; stopping streams"),
        }
    } else {
        let _ = shutdown.wait_for(|s| *s).await;
        tracing::info!("shutdown requested; stopping streams");
    }
    let _ = api_stop_tx.send(true);
    manager.shutdown(StopMode::Now).await;
    if let Some(t) = api_task {
        let _ = t.await;
    }
    let publish = publisher.await.unwrap_or_default();
    let (_, ended) = manager.list();
    let ended = ended
        .into_iter()
        .filter(|s| ids.contains(&s.id))
        .filter_map(|s| s.end)
        .collect();
    Ok(Summary { ended, publish })
}

//! `mouthmap gateway`: the topic readers, ingest's publisher, the HTTP
//! door and the gRPC door in one process, until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mouthmap_bus::guard::Guard;
use mouthmap_bus::kafka::{KafkaSettings, Producer};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_ingest::publish::publish_loop;
use mouthmap_ingest::stream::StreamSettings;
use tokio::sync::{mpsc, watch};

use crate::grpc::{TranscriberService, proto};
use crate::http::{App, IngestApi};
use crate::hub::Hub;
use crate::intake::Intake;
use crate::upload;

/// Bytes a gRPC call may send ahead of the pace of its timestamps (HTTP/2
/// flow control holds the rest on the caller's side).
pub const GRPC_STREAM_WINDOW: u32 = 256 * 1024;

/// Everything the gateway needs.
#[derive(Clone)]
pub struct GatewaySettings {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The API token; required unless both doors listen on loopback.
    pub token: Option<String>,
    /// `Host` names the HTTP door answers to besides loopback ones.
    pub hosts: Vec<String>,
    pub kafka: KafkaSettings,
    pub frames_topic: String,
    pub mouths_topic: String,
    pub transcripts_topic: String,
    /// Ingest's stream settings for uploads (frame format, chunk sizes).
    pub streams: StreamSettings,
    /// Uploads and gRPC streams at once at most.
    pub max_streams: usize,
    pub uploads: upload::Limits,
    pub spool: PathBuf,
    pub ingest: Option<(String, Option<String>)>,
    pub features: Option<mouthmap_feature_store::online::OnlineStore>,
}

/// Errors that stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "the gateway would listen on {0} without a token: set --api-token or --api-token-file, or listen on a loopback address"
    )]
    OpenWithoutToken(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the topics: {0}")]
    Bus(#[from] mouthmap_bus::kafka::BusError),
    #[error("gRPC server: {0}")]
    Grpc(String),
}

/// Refuses to listen beyond loopback without a token.
pub fn check_listen(token: Option<&str>, addrs: &[SocketAddr]) -> Result<(), GatewayError> {
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(addr) if token.is_none_or(str::is_empty) => Err(GatewayError::OpenWithoutToken(*addr)),
        _ => Ok(()),
    }
}

/// Runs the gateway until `shutdown` fires.
pub async fn run(
    settings: GatewaySettings,
    producer: Producer,
    shutdown: watch::Receiver<bool>,
) -> Result<(), GatewayError> {
    let token = settings.token.clone().filter(|t| !t.is_empty());
    check_listen(token.as_deref(), &[settings.http, settings.grpc])?;
    let http_listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: settings.http,
            source,
        })?;
    let grpc_listener = tokio::net::TcpListener::bind(settings.grpc)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: settings.grpc,
            source,
        })?;
    let http_addr = http_listener.local_addr().unwrap_or(settings.http);
    let grpc_addr = grpc_listener.local_addr().unwrap_or(settings.grpc);

    let metrics = StageMetrics::new("gateway");
    let (tx, rx) = mpsc::channel(64);
    let publisher = tokio::spawn(publish_loop(
        rx,
        producer.clone(),
        settings.frames_topic.clone(),
        metrics.clone(),
    ));
    let intake = Intake::new(
        settings.streams,
        tx,
        metrics,
        settings.max_streams,
        settings.spool.clone(),
    );
    let hub = Hub::default();
    let hub_task = {
        let hub = hub.clone();
        let kafka = settings.kafka.clone();
        let (t, m) = (
            settings.transcripts_topic.clone(),
            settings.mouths_topic.clone(),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move { hub.run(&kafka, &t, &m, stop).await })
    };
    let guard = Arc::new(Guard {
        token: token.clone(),
        hosts: settings.hosts.clone(),
        listen: http_addr,
    });
    let app = Arc::new(App {
        hub: hub.clone(),
        intake: intake.clone(),
        guard: guard.clone(),
        uploads: settings.uploads,
        ingest: settings.ingest.clone().map(|(url, token)| IngestApi {
            url: url.trim_end_matches('/').to_string(),
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }),
        features: settings.features.clone(),
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| GatewayError::Grpc(e.to_string()))?;
    let transcriber = TranscriberService {
        hub: hub.clone(),
        intake: intake.clone(),
        guard,
        features: settings.features.clone(),
        final_wait: settings.uploads.final_wait,
    };

    let mut stop_http = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(http_listener, crate::http::router(app))
            .with_graceful_shutdown(async move {
                let _ = stop_http.wait_for(|s| *s).await;
            })
            .await
    });
    let mut stop_grpc = shutdown.clone();
    let grpc = tokio::spawn(async move {
        tonic::transport::Server::builder()
            // What a caller may have sent ahead of the pace of its
            // timestamps: about a second of JPEG frames at 640x480.
            .initial_stream_window_size(GRPC_STREAM_WINDOW)
            .initial_connection_window_size(4 * GRPC_STREAM_WINDOW)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(transcriber.into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                async move {
                    let _ = stop_grpc.wait_for(|s| *s).await;
                },
            )
            .await
    });
    tracing::info!(http = %http_addr, grpc = %grpc_addr, auth = token.is_some(), "gateway listening");

    // Ready once both topic readers hold their partitions: an upload
    // started before then could miss its transcripts.
    let mut stop_wait = shutdown.clone();
    tokio::select! {
        _ = hub.wait_ready() => {
            health
                .set_serving::<proto::transcriber_server::TranscriberServer<TranscriberService>>()
                .await;
            mouthmap_bus::health::ready(serde_json::json!({
                "stage": "gateway", "http": http_addr.to_string(), "grpc": grpc_addr.to_string()
            }));
            tracing::info!("gateway ready");
        }
        _ = stop_wait.wait_for(|s| *s) => {}
    }

    let mut stop = shutdown.clone();
    let _ = stop.wait_for(|s| *s).await;
    tracing::info!("gateway stopping");
    intake.shutdown().await;
    drop(intake);
    if let Ok(Err(e)) = http.await {
        tracing::warn!(error = %e, "HTTP server failed");
    }
    if let Ok(Err(e)) = grpc.await {
        tracing::warn!(error = %e, "gRPC server failed");
    }
    let _ = hub_task.await;
    let _ = publisher.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_means_loopback_only() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        assert!(check_listen(None, &[lo]).is_ok());
        assert!(check_listen(Some(""), &[lo, any]).is_err());
        let e = check_listen(None, &[lo, any]).unwrap_err().to_string();
        assert!(
            e.contains("0.0.0.0:8081") && e.contains("--api-token"),
            "{e}"
        );
        assert!(check_listen(Some("t"), &[lo, any]).is_ok());
    }
}

//! Ingest's HTTP API: start, stop and list streams, and nginx-rtmp's
//! `on_publish` / `on_publish_done` callbacks.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /healthz` | 200 when the process is up (no token needed) |
//! | `GET /metrics` | Prometheus metrics |
//! | `GET /v1/streams` | running and recently ended streams |
//! | `POST /v1/streams` | start `{"source": URI-or-path, "id"?: ..., "realtime"?: bool}` |
//! | `GET /v1/streams/{id}` | one stream |
//! | `DELETE /v1/streams/{id}[?drain=true]` | stop now (or drain until the source goes quiet) |
//! | `POST /v1/rtmp/on_publish` | nginx-rtmp: a publisher started; pull it before answering |
//! | `POST /v1/rtmp/on_publish_done` | nginx-rtmp: the publisher finished; drain the stream |
//!
//! When a token is set, every call but `/healthz` needs it, as
//! `Authorization: Bearer TOKEN` or `?token=TOKEN` (nginx callbacks).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mouthmap_contracts::EndReason;
use serde::Deserialize;
use serde_json::json;

use crate::manager::{StartError, StreamManager};
use crate::source::Source;
use crate::stream::StopMode;

/// How RTMP publishes map to pulls.
#[derive(Debug, Clone)]
pub struct RtmpSettings {
    /// Base URL ingest pulls from, `rtmp://HOST:PORT`.
    pub base_url: String,
    /// The only nginx-rtmp application accepted.
    pub app: String,
    /// When not empty, a publisher must pass one of these as `?key=`.
    pub publish_keys: Vec<String>,
    /// Extra wait after the pull started, before allowing the publisher.
    pub settle: Duration,
}

/// Shared API state.
pub struct ApiState {
    pub manager: StreamManager,
    pub token: Option<String>,
    pub rtmp: RtmpSettings,
}

/// The API router.
pub fn router(state: Arc<ApiState>) -> Router {
    let protected = Router::new()
        .route("/v1/streams", get(list).post(start))
        .route("/v1/streams/{id}", get(one).delete(stop))
        .route("/v1/rtmp/on_publish", post(on_publish))
        .route("/v1/rtmp/on_publish_done", post(on_publish_done))
        .merge(mouthmap_bus::metrics::router())
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn auth(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query = req.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
        let given = bearer.map(str::to_string).or(query);
        if !given.is_some_and(|g| same_secret(&g, token)) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send Authorization: Bearer TOKEN (or ?token=TOKEN)",
            );
        }
    }
    next.run(req).await
}

async fn list(State(state): State<Arc<ApiState>>) -> Response {
    let (active, ended) = state.manager.list();
    Json(json!({ "active": active, "ended": ended })).into_response()
}

async fn one(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    match state.manager.get(&id) {
        Some(s) => Json(s).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no stream {id:?}")),
    }
}

#[derive(Deserialize)]
struct StartRequest {
    source: String,
    id: Option<String>,
    realtime: Option<bool>,
}

fn start_error(e: StartError) -> Response {
    let status = match e {
        StartError::BadId(_) => StatusCode::BAD_REQUEST,
        StartError::Duplicate(_) => StatusCode::CONFLICT,
        StartError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

async fn start(State(state): State<Arc<ApiState>>, Json(req): Json<StartRequest>) -> Response {
    let source = match Source::parse(&req.source) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.manager.start(req.id, source, req.realtime) {
        Ok((status, _)) => (StatusCode::CREATED, Json(status)).into_response(),
        Err(e) => start_error(e),
    }
}

#[derive(Deserialize)]
struct StopQuery {
    #[serde(default)]
    drain: bool,
}

async fn stop(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Response {
    let mode = if q.drain {
        StopMode::Drain(EndReason::Stopped)
    } else {
        StopMode::Now
    };
    if state.manager.stop(&id, mode) {
        (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "stopping": true })),
        )
            .into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no running stream {id:?}"))
    }
}

async fn on_publish(
    State(state): State<Arc<ApiState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    let app = form.get("app").map(String::as_str).unwrap_or_default();
    if app != state.rtmp.app {
        tracing::warn!(app, name, "publish refused: unknown application");
        return error(
            StatusCode::FORBIDDEN,
            format!("application {app:?} is not served"),
        );
    }
    if !state.rtmp.publish_keys.is_empty() {
        let key = form.get("key").map(String::as_str).unwrap_or_default();
        if !state.rtmp.publish_keys.iter().any(|k| same_secret(k, key)) {
            tracing::warn!(
                name,
                addr = form.get("addr").map(String::as_str),
                "publish refused: wrong or missing key"
            );
            return error(StatusCode::FORBIDDEN, "wrong or missing publish key");
        }
    }
    let uri = format!(
        "{}/{}/{}",
        state.rtmp.base_url.trim_end_matches('/'),
        app,
        name
    );
    let source = match Source::parse(&uri) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.manager.start(Some(name.to_string()), source, None) {
        Ok((_, ready)) => {
            // Pull before the publisher starts sending, so no frame is missed.
            let _ = tokio::time::timeout(Duration::from_secs(5), ready).await;
            tokio::time::sleep(state.rtmp.settle).await;
            tracing::info!(stream_id = name, "RTMP publish accepted; pulling");
            (StatusCode::OK, "ok").into_response()
        }
        Err(e) => {
            tracing::warn!(stream_id = name, error = %e, "publish refused");
            start_error(e)
        }
    }
}

async fn on_publish_done(
    State(state): State<Arc<ApiState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    if state.manager.stop(name, StopMode::Drain(EndReason::Eos)) {
        tracing::info!(stream_id = name, "RTMP publisher finished; draining");
    }
    (StatusCode::OK, "ok").into_response()
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secret_comparison() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "x"));
    }
}

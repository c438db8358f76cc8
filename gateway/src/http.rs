//! The HTTP door: the web view, the upload API and the event feeds.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /` | the web view (`/app.js`, `/app.css`; no token needed to load it) |
//! | `GET /healthz`, `GET /readyz` | the process serves; it reads the topics |
//! | `GET /metrics` | Prometheus metrics |
//! | `GET /v1/streams` | streams seen on the topics (and ingest's, with `--ingest-url`) |
//! | `POST /v1/streams` | start a stream from a URL: `{"source": URL, "id"?: ...}`, passed to ingest's API |
//! | `GET /v1/streams/{id}` | one stream: its latest transcript, frames, face share |
//! | `GET /v1/streams/{id}/mouth.png` | its latest mouth crop |
//! | `GET /v1/streams/{id}/events` | Server-Sent Events: `snapshot`, `started`, `partial`, `final`, `mouth` |
//! | `POST /v1/transcriptions` | a video file (multipart field `file`, or the raw body) in, its final transcript out; `?stream=true`: every partial, then the final, as NDJSON |
//!
//! Every `/v1` call and `/metrics` need the token (`Authorization: Bearer
//! TOKEN`, or `?token=` where a browser cannot set headers), unless the
//! gateway runs without one on a loopback address. Requests for another
//! `Host` and browsers' cross-origin requests are refused.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mouthmap_bus::guard::{self, Guard, error};
use mouthmap_contracts::{Transcript, TranscriptKind};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::hub::{Hub, HubEvent};
use crate::intake::{Intake, Saturated};
use crate::upload::{self, Upload, UploadError};

/// The web view, compiled in: no build step, no external asset.
const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");

/// What the handlers share.
pub struct App {
    pub hub: Hub,
    pub intake: Intake,
    pub guard: Arc<Guard>,
    pub uploads: upload::Limits,
    /// Ingest's API, for starting streams from URLs and listing its streams.
    pub ingest: Option<IngestApi>,
    /// Where a stream's decoding features (its grammar) are written.
    pub features: Option<mouthmap_feature_store::online::OnlineStore>,
}

/// Ingest's HTTP API and its token.
#[derive(Clone)]
pub struct IngestApi {
    pub url: String,
    pub token: Option<String>,
    pub client: reqwest::Client,
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    let protected = Router::new()
        .route("/v1/streams", get(list).post(start))
        .route("/v1/streams/{id}", get(one))
        .route("/v1/streams/{id}/mouth.png", get(mouth))
        .route("/v1/streams/{id}/events", get(events))
        .route("/v1/transcriptions", post(transcribe))
        .merge(mouthmap_bus::metrics::router())
        // Matched routes only: an unknown path is a 404, not a 401.
        .route_layer(middleware::from_fn_with_state(
            app.guard.clone(),
            guard::require_token,
        ));
    Router::new()
        .route(
            "/",
            get(|| async { static_file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { static_file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { static_file("text/css; charset=utf-8", APP_CSS) }),
        )
        .merge(mouthmap_bus::health::router())
        .merge(protected)
        .layer(middleware::from_fn_with_state(
            app.guard.clone(),
            guard::same_origin,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(app)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data: blob:; style-src 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

fn saturated(s: Saturated) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, s.to_string());
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(s.retry_after.as_secs()),
    );
    r
}

async fn list(State(app): State<Arc<App>>) -> Response {
    let mut body = json!({ "streams": app.hub.list() });
    if let Some(ingest) = &app.ingest {
        let mut req = ingest.client.get(format!("{}/v1/streams", ingest.url));
        if let Some(t) = &ingest.token {
            req = req.bearer_auth(t);
        }
        body["ingest"] = match req.send().await {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(serde_json::Value::Null),
            Ok(r) => json!({ "error": format!("ingest's API answered {}", r.status()) }),
            Err(e) => json!({ "error": format!("ingest's API did not answer: {e}") }),
        };
    }
    Json(body).into_response()
}

async fn start(State(app): State<Arc<App>>, Json(body): Json<serde_json::Value>) -> Response {
    let Some(ingest) = &app.ingest else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "starting streams from URLs goes through ingest's API: start the gateway with --ingest-url",
        );
    };
    let mut req = ingest
        .client
        .post(format!("{}/v1/streams", ingest.url))
        .json(&body);
    if let Some(t) = &ingest.token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let value = r
                .json::<serde_json::Value>()
                .await
                .unwrap_or(serde_json::Value::Null);
            (status, Json(value)).into_response()
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("ingest's API did not answer: {e}"),
        ),
    }
}

async fn one(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.hub.view(&id) {
        Some(v) => {
            let crop = v.crop.as_ref().map(|c| c.frame);
            let mut body = serde_json::to_value(&v).unwrap_or_default();
            body["crop_frame"] = json!(crop);
            Json(body).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("no stream {id:?} seen by this gateway"),
        ),
    }
}

async fn mouth(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.hub.view(&id).and_then(|v| v.crop) {
        Some(crop) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            crop.png(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no mouth crop of stream {id:?} yet"),
        ),
    }
}

/// One hub event as a Server-Sent Event, if it belongs to `id`.
fn sse_event(id: &str, e: &HubEvent) -> Option<Event> {
    if e.stream_id() != id {
        return None;
    }
    Some(match e {
        HubEvent::Started { .. } => Event::default().event("started").data("{}"),
        HubEvent::Transcript(t) => Event::default()
            .event(match t.kind {
                TranscriptKind::Partial => "partial",
                TranscriptKind::Final => "final",
            })
            .json_data(&**t)
            .ok()?,
        HubEvent::Mouth { frame, face, .. } => Event::default()
            .event("mouth")
            .data(json!({ "frame": frame, "face": face }).to_string()),
    })
}

/// The `snapshot` event: the stream as the hub holds it now, and the frame
/// of its latest crop.
fn snapshot(hub: &Hub, id: &str) -> Event {
    let view = hub.view(id);
    let crop_frame = view.as_ref().and_then(|v| v.crop.as_ref().map(|c| c.frame));
    let snap = json!({ "stream": view, "crop_frame": crop_frame });
    Event::default().event("snapshot").data(snap.to_string())
}

async fn events(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let mut rx = app.hub.subscribe();
    let (tx, out) = mpsc::channel::<Result<Event, Infallible>>(64);
    let first = snapshot(&app.hub, &id);
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            let e = match rx.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Behind the fan-out: the stream's state, then on.
                    if tx.send(Ok(snapshot(&app.hub, &id))).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Some(event) = sse_event(&id, &e) else {
                continue;
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(out))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize, Default)]
struct TranscribeQuery {
    /// NDJSON of every partial, then the final.
    #[serde(default)]
    stream: bool,
    /// `grid`: decode under the GRID grammar.
    grammar: Option<String>,
    /// The stream's id (default `upload-` and random hex).
    id: Option<String>,
}

fn upload_error(e: UploadError) -> Response {
    let status = match &e {
        UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        UploadError::NotVideo { .. } | UploadError::Empty => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        UploadError::NoFileField | UploadError::Multipart(_) | UploadError::BadId(_) => {
            StatusCode::BAD_REQUEST
        }
        UploadError::Undecodable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        UploadError::NoFinal { .. } => StatusCode::GATEWAY_TIMEOUT,
        UploadError::Grammar(_) => StatusCode::BAD_REQUEST,
        UploadError::Spool(_) | UploadError::Start(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

async fn transcribe(
    State(app): State<Arc<App>>,
    Query(q): Query<TranscribeQuery>,
    req: Request,
) -> Response {
    let admission = match app.intake.admit() {
        Ok(a) => a,
        Err(s) => return saturated(s),
    };
    let id = match upload::stream_id(q.id.as_deref()) {
        Ok(id) => id,
        Err(e) => return upload_error(e),
    };
    // The file, whole, before anything starts: a refused upload starts nothing.
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let file = if multipart {
        match Multipart::from_request(req, &()).await {
            Ok(m) => upload::save_multipart(m, app.intake.spool(), &app.uploads).await,
            Err(e) => Err(UploadError::Multipart(e.body_text())),
        }
    } else {
        upload::save_body(req.into_body(), app.intake.spool(), &app.uploads).await
    };
    let file = match file {
        Ok(f) => f,
        Err(e) => return upload_error(e),
    };
    if let Some(g) = &q.grammar
        && let Err(e) = upload::set_grammar(app.features.as_ref(), &id, g).await
    {
        return upload_error(e);
    }
    let upload = match Upload::start(&app.hub, &app.intake, &id, file, admission) {
        Ok(u) => u,
        Err(e) => return upload_error(e),
    };
    if !q.stream {
        return match upload.final_transcript(&app.uploads).await {
            Ok(t) => with_stream_id(Json(t).into_response(), &id),
            Err(e) => with_stream_id(upload_error(e), &id),
        };
    }
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, Infallible>>(16);
    let app2 = app.clone();
    tokio::spawn(async move {
        let sent = upload
            .each_transcript(&app2.uploads, |t: &Transcript| {
                let mut line = serde_json::to_vec(t).unwrap_or_default();
                line.push(b'\n');
                let tx = tx.clone();
                async move { tx.send(Ok(bytes::Bytes::from(line))).await.is_ok() }
            })
            .await;
        if let Err(e) = sent {
            let line = format!("{}\n", json!({ "error": e.to_string() }));
            let _ = tx.send(Ok(bytes::Bytes::from(line))).await;
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    let r = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    with_stream_id(r, &id)
}

fn with_stream_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert("x-mouthmap-stream-id", v);
    }
    r
}

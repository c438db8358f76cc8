//! Ingest's HTTP API: start, stop and list streams, and nginx-rtmp's
//! `on_publish` / `on_publish_done` callbacks.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /healthz` | 200 when the process is up (no token needed) |
//! | `GET /readyz` | 200 once the broker took the topics and the API listens, else 503 and why (no token needed) |
//! | `GET /metrics` | Prometheus metrics |
//! | `GET /v1/streams` | running and recently ended streams |
//! | `POST /v1/streams` | start `{"source": URI-or-path, "id"?: ..., "realtime"?: bool}` |
//! | `GET /v1/streams/{id}` | one stream |
//! | `DELETE /v1/streams/{id}[?drain=true]` | stop now (or drain until the source goes quiet) |
//! | `POST /v1/rtmp/on_publish` | nginx-rtmp: a publisher started; pull it, and answer once the pull plays |
//! | `POST /v1/rtmp/on_play` | nginx-rtmp: a player (ingest's own pull) started playing |
//! | `POST /v1/rtmp/on_publish_done` | nginx-rtmp: the publisher finished; drain the stream |
//! | `POST /v1/rtmp/on_update` | nginx-rtmp, every few seconds per publisher: resume one no ingest pulls (after a restart) |
//!
//! Every call but `/healthz`, `/readyz` and the callbacks needs the API token, as
//! `Authorization: Bearer TOKEN` (or `?token=TOKEN`). The callbacks need the
//! separate callback secret in the `X-Mouthmap-Callback-Secret` header,
//! which nginx adds when it forwards them (never in a URL, so never in a
//! log). Every call must name an allowed `Host` (DNS rebinding), and a
//! browser's cross-origin request (`Origin` of another host,
//! `Sec-Fetch-Site: cross-site`) is refused, form POSTs included. Sources
//! started through the API pass the [`SourcePolicy`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mouthmap_bus::guard::{self, Guard, error, same_secret};
use mouthmap_contracts::EndReason;
use serde::Deserialize;
use serde_json::json;

use crate::manager::{StartError, StartOptions, StreamManager};
use crate::policy::SourcePolicy;
use crate::resume;
use crate::source::Source;
use crate::stream::StopMode;

/// The header nginx adds to the callbacks it forwards.
pub const CALLBACK_SECRET_HEADER: &str = "x-mouthmap-callback-secret";

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
    /// The token (always set here: the service refuses to serve without
    /// one), the `Host` names the API answers to and its address.
    pub guard: Arc<Guard>,
    /// The nginx callbacks' secret; without one the callbacks are refused.
    pub callback_secret: Option<String>,
    /// What sources callers may start.
    pub policy: SourcePolicy,
    pub rtmp: RtmpSettings,
    /// Where streams an earlier ingest process carried are read back from,
    /// to resume them (`on_update`); none: they start again as new streams.
    pub resume_from: Option<ResumeFrom>,
    /// The pulls `on_publish` waits to see playing.
    pub plays: Plays,
}

/// How long `on_publish` takes at most before it lets the publisher send:
/// the pull's pipeline built and connected, its `play` reported by nginx's
/// `on_play`, then `--rtmp-settle`. nginx-rtmp refuses a publish whose
/// callback is not answered within its `netcall_timeout` (10 s by default,
/// set so in deploy/nginx/nginx-rtmp.conf.template): this stays well under.
pub const PLAY_WAIT: Duration = Duration::from_secs(6);

/// The most `--rtmp-settle` may be: it is part of [`PLAY_WAIT`].
pub const MAX_SETTLE: Duration = Duration::from_secs(2);

/// The pulls `on_publish` started and waits to see playing: nginx-rtmp
/// sends a live stream only to the players already there, so a pull that
/// joins after the publisher started loses the stream's first seconds (seen
/// on a loaded machine: a 3 s stream read as its last two words).
#[derive(Debug, Default)]
pub struct Plays {
    waiting: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// nginx reported a play at least once: its configuration has `on_play`.
    reported: AtomicBool,
    /// A wait ran out before nginx had ever reported a play.
    never_reported: AtomicBool,
    /// Told whenever a wait ends (played, forgotten): wakes the publishes
    /// of the same name waiting in [`Plays::settled`].
    ended: tokio::sync::Notify,
}

impl Plays {
    /// Registers a pull about to start for `name`; its play is then waited
    /// with [`Plays::wait`]. None when waiting is pointless: a wait already
    /// ran out and nginx never reported a play (its configuration lacks
    /// `on_play`). Publishes that come together before that all wait.
    pub fn expect(&self, name: &str) -> Option<Arc<tokio::sync::Notify>> {
        if !self.reported() && self.never_reported.load(Ordering::Relaxed) {
            return None;
        }
        let notify = Arc::new(tokio::sync::Notify::new());
        // A second publish of a name already waited for is refused as a
        // duplicate: it does not take the first one's place.
        self.waiting
            .lock()
            .expect("plays lock")
            .entry(name.to_string())
            .or_insert_with(|| notify.clone());
        Some(notify)
    }

    /// nginx says `name` is played: wakes the `on_publish` waiting for it.
    /// False when none waits (a player that is not a pull just started).
    pub fn played(&self, name: &str) -> bool {
        self.reported.store(true, Ordering::Relaxed);
        let removed = self.waiting.lock().expect("plays lock").remove(name);
        match removed {
            Some(notify) => {
                notify.notify_one();
                self.ended.notify_waiters();
                true
            }
            None => false,
        }
    }

    /// Waits until `name`'s pull plays, at most until `until`. True when
    /// the play was seen.
    pub async fn wait(&self, name: &str, notify: &tokio::sync::Notify, until: Instant) -> bool {
        let seen = tokio::time::timeout_at(until.into(), notify.notified())
            .await
            .is_ok();
        self.forget(name, notify);
        if !seen && !self.reported() {
            self.never_reported.store(true, Ordering::Relaxed);
        }
        seen
    }

    /// Whether an `on_publish` of `name` waits for its pull to play.
    pub fn pending(&self, name: &str) -> bool {
        self.waiting.lock().expect("plays lock").contains_key(name)
    }

    /// Waits until no `on_publish` of `name` waits for its pull to play, at
    /// most until `until`. True when none waits any more.
    pub async fn settled(&self, name: &str, until: Instant) -> bool {
        loop {
            // Registered before the check, so an end between the two is not missed.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if !self.pending(name) {
                return true;
            }
            if tokio::time::timeout_at(until.into(), ended).await.is_err() {
                return !self.pending(name);
            }
        }
    }

    /// Forgets the wait `notify` of `name` (one that ended, or whose pull
    /// did not start), and only that one.
    pub fn forget(&self, name: &str, notify: &tokio::sync::Notify) {
        let mut waiting = self.waiting.lock().expect("plays lock");
        if waiting
            .get(name)
            .is_some_and(|n| std::ptr::eq(Arc::as_ptr(n), notify))
        {
            waiting.remove(name);
            drop(waiting);
            self.ended.notify_waiters();
        }
    }

    /// Whether nginx ever reported a play.
    pub fn reported(&self) -> bool {
        self.reported.load(Ordering::Relaxed)
    }
}

/// The frames topic and how to reach it.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    pub kafka: mouthmap_bus::kafka::KafkaSettings,
    pub topic: String,
}

/// The API router.
pub fn router(state: Arc<ApiState>) -> Router {
    let protected = Router::new()
        .route("/v1/streams", get(list).post(start))
        .route("/v1/streams/{id}", get(one).delete(stop))
        .merge(mouthmap_bus::metrics::router())
        .layer(middleware::from_fn_with_state(
            state.guard.clone(),
            guard::require_token,
        ));
    let callbacks = Router::new()
        .route("/v1/rtmp/on_publish", post(on_publish))
        .route("/v1/rtmp/on_play", post(on_play))
        .route("/v1/rtmp/on_publish_done", post(on_publish_done))
        .route("/v1/rtmp/on_update", post(on_update))
        .layer(middleware::from_fn_with_state(state.clone(), callback_auth));
    Router::new()
        .merge(mouthmap_bus::health::router())
        .merge(protected)
        .merge(callbacks)
        .layer(middleware::from_fn_with_state(
            state.guard.clone(),
            guard::same_origin,
        ))
        .with_state(state)
}

async fn callback_auth(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(secret) = &state.callback_secret else {
        return error(
            StatusCode::FORBIDDEN,
            "RTMP callbacks are off: start ingest with --rtmp-callback-secret and render nginx's configuration with it",
        );
    };
    let given = req
        .headers()
        .get(CALLBACK_SECRET_HEADER)
        .and_then(|v| v.to_str().ok());
    if !given.is_some_and(|g| same_secret(g, secret)) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong callback secret");
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
        StartError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
        StartError::ShuttingDown | StartError::Spawn(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

async fn start(State(state): State<Arc<ApiState>>, Json(req): Json<StartRequest>) -> Response {
    let policy = state.policy.clone();
    let text = req.source.clone();
    // The policy may resolve a host name: off the async runtime.
    let checked = tokio::task::spawn_blocking(move || policy.check(&text)).await;
    let source = match checked {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "source check failed"),
    };
    match state.manager.start(
        req.id,
        source,
        StartOptions {
            realtime: req.realtime,
            ..StartOptions::default()
        },
    ) {
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

/// nginx-rtmp's form, each field's first value: nginx puts its own fields
/// first and appends the publisher's URL arguments after them, so a
/// publisher's `?name=` or `?app=` cannot override them.
fn first_values(form: Vec<(String, String)>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form {
        out.entry(k).or_insert(v);
    }
    out
}

/// Checks a publish that nginx-rtmp reports (its name, application and
/// key) and returns the stream id and the source to pull, or the refusal.
fn admit(
    state: &ApiState,
    form: &HashMap<String, String>,
) -> Result<(String, Source), (StatusCode, String)> {
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    let app = form.get("app").map(String::as_str).unwrap_or_default();
    if let Err(e) = mouthmap_contracts::validate_stream_id(name) {
        tracing::warn!(error = %e, "publish refused: bad stream name");
        return Err((StatusCode::BAD_REQUEST, e.to_string()));
    }
    if app != state.rtmp.app {
        tracing::warn!(app, name, "publish refused: unknown application");
        return Err((
            StatusCode::FORBIDDEN,
            format!("application {app:?} is not served"),
        ));
    }
    if !state.rtmp.publish_keys.is_empty() {
        let key = form.get("key").map(String::as_str).unwrap_or_default();
        if !state.rtmp.publish_keys.iter().any(|k| same_secret(k, key)) {
            tracing::warn!(
                name,
                addr = form.get("addr").map(String::as_str),
                "publish refused: wrong or missing key"
            );
            return Err((StatusCode::FORBIDDEN, "wrong or missing publish key".into()));
        }
    }
    let uri = format!(
        "{}/{}/{}",
        state.rtmp.base_url.trim_end_matches('/'),
        app,
        name
    );
    match Source::parse(&uri) {
        Ok(source) => Ok((name.to_string(), source)),
        Err(e) => Err((StatusCode::BAD_REQUEST, e.to_string())),
    }
}

async fn on_publish(
    State(state): State<Arc<ApiState>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let form = first_values(form);
    let (name, source) = match admit(&state, &form) {
        Ok(admitted) => admitted,
        Err((status, why)) => return error(status, why),
    };
    let name = name.as_str();
    let started = Instant::now();
    // Settle included, the answer comes within PLAY_WAIT.
    let until = started + PLAY_WAIT.saturating_sub(state.rtmp.settle);
    if state.plays.pending(name) {
        // The same name's publish is being let in (a publisher that
        // reconnected at once, or a second one): this one is answered only
        // once that one's pull plays, so neither sends before the pull is
        // there; nginx then refuses whichever comes second as already
        // publishing.
        state.plays.settled(name, until).await;
        tokio::time::sleep(state.rtmp.settle).await;
    }
    if state.manager.published_again(name) {
        // Its publisher dropped (a restarted nginx) and is back: the running
        // stream's pull reconnects to it and reports the gap.
        tracing::info!(
            stream_id = name,
            "RTMP publisher is back; the stream goes on"
        );
        return (StatusCode::OK, "ok").into_response();
    }
    let options = StartOptions {
        published: true,
        ..StartOptions::default()
    };
    let play = state.plays.expect(name);
    match state.manager.start(Some(name.to_string()), source, options) {
        Ok((_, ready)) => {
            // Pull before the publisher starts sending, so no frame is
            // missed: the pipeline playing, then nginx's word that the pull
            // plays the stream.
            let _ = tokio::time::timeout_at(until.into(), ready).await;
            let pipeline_ms = started.elapsed().as_millis() as u64;
            let played = match &play {
                Some(notify) => state.plays.wait(name, notify, until).await,
                None => false,
            };
            tokio::time::sleep(state.rtmp.settle).await;
            if played {
                tracing::info!(
                    stream_id = name,
                    pipeline_ms,
                    playing_ms = started.elapsed().as_millis() as u64,
                    "RTMP publish accepted; its pull plays"
                );
            } else if play.is_some() && state.plays.reported() {
                tracing::warn!(
                    stream_id = name,
                    wait = ?PLAY_WAIT,
                    "RTMP publish accepted before its pull played (a loaded machine?): the stream's first frames may be lost"
                );
            } else {
                tracing::warn!(
                    stream_id = name,
                    "RTMP publish accepted without knowing whether its pull plays: nginx reports no plays (add `on_play` to its configuration, as deploy/nginx/nginx-rtmp.conf.template has it); a stream's first frames may be lost"
                );
            }
            (StatusCode::OK, "ok").into_response()
        }
        Err(e) => {
            if let Some(notify) = &play {
                state.plays.forget(name, notify);
            }
            tracing::warn!(stream_id = name, error = %e, "publish refused");
            start_error(e)
        }
    }
}

/// nginx-rtmp: a player asks to play `name` (nginx joins it to the stream
/// once this is answered, hence `--rtmp-settle` after it). Only ingest's
/// own pulls may play (nginx allows play from loopback alone), so every
/// play is answered 200; one an `on_publish` waits for lets its publisher
/// in.
async fn on_play(
    State(state): State<Arc<ApiState>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let form = first_values(form);
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    if state.plays.played(name) {
        tracing::debug!(stream_id = name, "the pull plays");
    }
    (StatusCode::OK, "ok").into_response()
}

/// nginx-rtmp reports every publisher (and player) again each
/// `notify_update_timeout`. A publisher this process does not carry is one
/// an earlier ingest process did (it was restarted, or killed): its stream
/// goes on from where it left off on the topic, the time away a gap. A
/// non-2xx answer makes nginx drop the publisher, so anything short of a
/// refusal answers 200.
async fn on_update(
    State(state): State<Arc<ApiState>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let form = first_values(form);
    let ok = || (StatusCode::OK, "ok").into_response();
    if form.get("call").map(String::as_str) != Some("update_publish") {
        return ok();
    }
    let (name, source) = match admit(&state, &form) {
        Ok(admitted) => admitted,
        Err((status, why)) => return error(status, why),
    };
    if state.manager.get(&name).is_some_and(|s| s.end.is_none()) {
        return ok();
    }
    let Some(from) = &state.resume_from else {
        return ok();
    };
    let resume = match resume::find(&from.kafka, &from.topic, &name).await {
        Ok(point) => point,
        Err(e) => {
            // Tried again at the next update.
            tracing::warn!(stream_id = name, error = %e, "cannot resume the stream yet");
            return ok();
        }
    };
    let options = StartOptions {
        published: true,
        resume,
        ..StartOptions::default()
    };
    match state.manager.start(Some(name.clone()), source, options) {
        Ok(_) => {
            tracing::warn!(
                stream_id = name,
                resumed = resume.is_some(),
                "a publisher no ingest pulled; pulling it again"
            );
            ok()
        }
        Err(StartError::Duplicate(_)) => ok(),
        Err(e) => {
            tracing::warn!(stream_id = name, error = %e, "cannot take the publisher back");
            start_error(e)
        }
    }
}

async fn on_publish_done(
    State(state): State<Arc<ApiState>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let form = first_values(form);
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    if state.manager.stop(name, StopMode::Drain(EndReason::Eos)) {
        tracing::info!(stream_id = name, "RTMP publisher finished; draining");
    }
    (StatusCode::OK, "ok").into_response()
}

#[cfg(test)]
mod tests {
    use super::{Plays, first_values};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_publish_waits_for_its_pull_to_play() {
        let plays = Plays::default();
        let notify = plays.expect("cam-1").expect("waits at first");
        // The play may be reported before the wait begins.
        assert!(plays.played("cam-1"));
        let until = Instant::now() + Duration::from_secs(5);
        assert!(plays.wait("cam-1", &notify, until).await);
        assert!(!plays.played("cam-1"), "no one waits any more");
        // A pull that never plays: given up at the deadline.
        let notify = plays.expect("cam-2").unwrap();
        let started = Instant::now();
        let until = started + Duration::from_millis(100);
        assert!(!plays.wait("cam-2", &notify, until).await);
        assert!(started.elapsed() >= Duration::from_millis(100));
        // nginx reports plays here: every publish still waits.
        assert!(plays.expect("cam-3").is_some());
        // A duplicate publish of cam-3 neither takes nor ends its wait.
        let dup = plays.expect("cam-3").unwrap();
        plays.forget("cam-3", &dup);
        assert!(plays.pending("cam-3"), "a second publish waits for it");
        assert!(plays.played("cam-3"), "the first publish still waits");
        assert!(!plays.pending("cam-3"), "its play lets the second in too");
        // A wait that runs out lets a second publish in as well.
        let notify = plays.expect("cam-4").unwrap();
        assert!(plays.pending("cam-4"));
        assert!(!plays.wait("cam-4", &notify, Instant::now()).await);
        assert!(!plays.pending("cam-4"));
    }

    #[tokio::test]
    async fn a_second_publish_is_let_in_when_the_first_one_s_wait_ends() {
        let plays = std::sync::Arc::new(Plays::default());
        let notify = plays.expect("cam-1").unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        // Nothing waits for cam-2: at once.
        assert!(plays.settled("cam-2", until).await);
        let second = tokio::spawn({
            let plays = plays.clone();
            async move {
                let t = Instant::now();
                (plays.settled("cam-1", until).await, t.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "let in while the first still waits");
        assert!(plays.played("cam-1"));
        let (settled, waited) = second.await.unwrap();
        assert!(settled);
        assert!(
            waited < Duration::from_secs(1),
            "woken by the play, not the deadline"
        );
        assert!(plays.wait("cam-1", &notify, until).await);
        // A first publish that gives up (its pull did not start) lets it in too.
        let notify = plays.expect("cam-3").unwrap();
        let second = tokio::spawn({
            let plays = plays.clone();
            async move {
                plays
                    .settled("cam-3", Instant::now() + Duration::from_secs(5))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        plays.forget("cam-3", &notify);
        assert!(second.await.unwrap());
        // One that never ends: the deadline answers.
        let _held = plays.expect("cam-4").unwrap();
        let started = Instant::now();
        assert!(
            !plays
                .settled("cam-4", started + Duration::from_millis(100))
                .await
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn an_nginx_without_on_play_makes_one_publish_wait_not_every_one() {
        let plays = Plays::default();
        let notify = plays.expect("cam-1").expect("waits at first");
        // Publishes that come together at first all wait.
        assert!(plays.expect("cam-1b").is_some());
        let until = Instant::now() + Duration::from_millis(50);
        assert!(!plays.wait("cam-1", &notify, until).await);
        assert!(plays.expect("cam-2").is_none(), "no play was ever reported");
        // Once nginx reports one (its configuration fixed and reloaded),
        // publishes wait again.
        assert!(!plays.played("someone-else"));
        assert!(plays.expect("cam-3").is_some());
    }
    use mouthmap_bus::guard::{host_of, same_secret};

    #[test]
    fn hosts_of_headers_and_origins() {
        assert_eq!(host_of("127.0.0.1:8088"), "127.0.0.1");
        assert_eq!(host_of("http://evil.example:80"), "evil.example");
        assert_eq!(host_of("[::1]:8088"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn nginx_fields_win_over_the_publishers_arguments() {
        let f = first_values(vec![
            ("app".into(), "live".into()),
            ("name".into(), "cam-1".into()),
            ("key".into(), "k".into()),
            ("name".into(), "other".into()),
            ("app".into(), "admin".into()),
        ]);
        assert_eq!(f["name"], "cam-1");
        assert_eq!(f["app"], "live");
    }

    #[test]
    fn secret_comparison() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "x"));
    }
}

//! Liveness and readiness, as Kubernetes probes expect them: `GET /healthz`
//! answers 200 while the process serves at all; `GET /readyz` answers 200
//! once the service can do its work (its model loaded, the broker reachable,
//! its consumer group joined) and 503 with the reason otherwise. One service
//! per process, so the state is the process's.

use std::sync::{Mutex, OnceLock};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router, routing::get};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Status {
    ready: bool,
    detail: Value,
}

fn state() -> &'static Mutex<Status> {
    static S: OnceLock<Mutex<Status>> = OnceLock::new();
    S.get_or_init(|| {
        Mutex::new(Status {
            ready: false,
            detail: json!({ "reason": "starting" }),
        })
    })
}

/// The service can work; `detail` says what was checked (partitions, ...).
pub fn ready(detail: Value) {
    *state().lock().expect("health lock") = Status {
        ready: true,
        detail,
    };
}

/// The service cannot work now, and why.
pub fn not_ready(reason: impl Into<String>) {
    *state().lock().expect("health lock") = Status {
        ready: false,
        detail: json!({ "reason": reason.into() }),
    };
}

/// Whether the service said it is ready.
pub fn is_ready() -> bool {
    state().lock().expect("health lock").ready
}

/// `GET /healthz` and `GET /readyz`, to merge into a service's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async {
                let s = state().lock().expect("health lock").clone();
                let code = if s.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (code, Json(json!({ "ready": s.ready, "detail": s.detail }))).into_response()
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_what_the_service_says() {
        not_ready("broker unreachable");
        assert!(!is_ready());
        ready(json!({ "partitions": 3 }));
        assert!(is_ready());
    }
}

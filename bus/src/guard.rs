//! Who may call an HTTP API: the bearer token and the same-origin checks
//! that ingest's API and the gateway share.
//!
//! * [`Guard::token_ok`]: `Authorization: Bearer TOKEN` or `?token=TOKEN`
//!   (browsers' `EventSource` cannot set headers), compared in constant time.
//! * [`Guard::foreign`]: a `Host` this API does not answer to (DNS
//!   rebinding) or a browser's cross-origin request (a page elsewhere
//!   posting a form here) is refused.
//!
//! [`require_token`] and [`same_origin`] are the axum middlewares.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The checks' settings.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The API token; `None` only where the caller decided an API may run
    /// without one (the gateway on a loopback address).
    pub token: Option<String>,
    /// `Host` names the API answers to besides loopback ones (and, on a
    /// wildcard listen address, IP literals).
    pub hosts: Vec<String>,
    /// The address the API listens on.
    pub listen: SocketAddr,
}

/// A JSON error body `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Compares in time independent of where the strings differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The host part of a `Host` header or an origin (`scheme://host[:port]`).
pub fn host_of(text: &str) -> &str {
    let text = text.split_once("://").map_or(text, |(_, rest)| rest);
    let text = text.split('/').next().unwrap_or_default();
    if let Some(v6) = text.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    text.rsplit_once(':').map_or(text, |(h, _)| h)
}

/// The token a request carries, from its `Authorization: Bearer` header or
/// its `token` query parameter.
pub fn given_token(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = || {
        uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        })
    };
    bearer.map(str::to_string).or_else(query)
}

impl Guard {
    /// Whether `given` is the token (always, when the API has none).
    pub fn token_ok(&self, given: Option<&str>) -> bool {
        match &self.token {
            None => true,
            Some(token) => given.is_some_and(|g| same_secret(g, token)),
        }
    }

    /// Whether `host` (from a `Host` header or an `Origin`) names this API.
    pub fn allowed_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host))
            || host == self.listen.ip().to_string()
        {
            return true;
        }
        // On a wildcard address, any IP literal (no DNS name: rebinding).
        self.listen.ip().is_unspecified() && host.parse::<std::net::IpAddr>().is_ok()
    }

    /// Why a request must be refused for where it comes from, if it must.
    pub fn foreign(&self, req: &Request) -> Option<Response> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let host = header("host").or_else(|| req.uri().host());
        if !host.is_some_and(|h| self.allowed_host(host_of(h))) {
            return Some(error(
                StatusCode::MISDIRECTED_REQUEST,
                "this API does not answer to that Host (--api-host names the ones it does)",
            ));
        }
        let cross_site = header("sec-fetch-site").is_some_and(|v| v == "cross-site");
        let foreign_origin =
            header("origin").is_some_and(|o| o == "null" || !self.allowed_host(host_of(o)));
        (cross_site || foreign_origin)
            .then(|| error(StatusCode::FORBIDDEN, "cross-origin requests are refused"))
    }
}

/// Middleware: 401 unless the request carries the token.
pub async fn require_token(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let given = given_token(req.headers(), req.uri());
    if !guard.token_ok(given.as_deref()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer TOKEN",
        );
    }
    next.run(req).await
}

/// Middleware: refuses requests for another `Host` and browsers'
/// cross-origin requests.
pub async fn same_origin(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match guard.foreign(&req) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str) -> Guard {
        Guard {
            token: Some("secret".into()),
            hosts: vec!["mouthmap.example".into()],
            listen: listen.parse().unwrap(),
        }
    }

    #[test]
    fn host_of_strips_scheme_port_and_brackets() {
        assert_eq!(host_of("localhost:8080"), "localhost");
        assert_eq!(host_of("http://a.example:80/x"), "a.example");
        assert_eq!(host_of("[::1]:8080"), "::1");
    }

    #[test]
    fn hosts_allowed_are_loopback_named_or_ip_literals_on_a_wildcard() {
        let g = guard("127.0.0.1:8080");
        assert!(g.allowed_host("localhost"));
        assert!(g.allowed_host("MOUTHMAP.example"));
        assert!(!g.allowed_host("evil.example"));
        assert!(!g.allowed_host("10.0.0.5"));
        assert!(guard("0.0.0.0:8080").allowed_host("10.0.0.5"));
        assert!(!guard("0.0.0.0:8080").allowed_host("rebind.evil.example"));
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let g = guard("127.0.0.1:8080");
        let mut headers = HeaderMap::new();
        let uri: Uri = "/v1/x?token=secret".parse().unwrap();
        assert_eq!(given_token(&headers, &uri).as_deref(), Some("secret"));
        headers.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(given_token(&headers, &uri).as_deref(), Some("nope"));
        assert!(!g.token_ok(Some("nope")));
        assert!(g.token_ok(Some("secret")));
        assert!(!g.token_ok(None));
        assert!(Guard { token: None, ..g }.token_ok(None));
    }
}

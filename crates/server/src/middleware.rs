//! Request middleware: refusing cross-site writes, and request metrics.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};

use crate::AppState;
use crate::error::ApiError;

/// What every request passes: a write from another site is refused, and every request is counted and
/// timed by route pattern (never by concrete path, which holds ids). One middleware rather than two, as
/// each costs allocations on every request.
pub async fn screen(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = if is_cross_site_write(&state, &request) {
        ApiError::CrossSite.into_response()
    } else {
        next.run(request).await
    };
    let (requests, duration) = request_metrics(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        method,
        response.status(),
    );
    requests.increment(1);
    duration.record(started.elapsed().as_secs_f64());
    response
}

/// State-changing requests must come from Confide's own pages or from non-browser clients: a browser
/// says where a request comes from, and anything from another site is refused. With SameSite cookies
/// and JSON-only API bodies this is the CSRF defence of the API; forms add a token of their own.
fn is_cross_site_write(state: &AppState, request: &Request) -> bool {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let headers = request.headers();
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let own = state.config.public_url.trim_end_matches('/');
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let same_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        == Some(host);
    origin != own && !same_host
}

/// The request counter and timer of one route, method and status.
type RouteMetrics = (Counter, Histogram);
/// Route → (method, status) → its metrics.
type FoundMetrics = HashMap<String, HashMap<(&'static str, StatusCode), RouteMetrics>>;

/// The recorder finds a metric by its labels, which costs allocations and hashing on every request;
/// each combination is found there once and kept.
fn request_metrics(route: &str, method: &'static str, status: StatusCode) -> RouteMetrics {
    static FOUND: LazyLock<Mutex<FoundMetrics>> = LazyLock::new(Mutex::default);
    let mut found = FOUND.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = found.get(route).and_then(|m| m.get(&(method, status))) {
        return known.clone();
    }
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    let metrics = (
        metrics::counter!("confide_http_requests_total", &labels),
        metrics::histogram!("confide_http_request_duration_seconds", &labels),
    );
    found
        .entry(route.to_owned())
        .or_default()
        .insert((method, status), metrics.clone());
    metrics
}

/// A method's label; any method HTTP does not define counts as one, so that clients cannot make up
/// new series without end.
fn method_label(method: &Method) -> &'static str {
    const DEFINED: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    DEFINED
        .iter()
        .find(|(defined, _)| defined == method)
        .map_or("other", |(_, label)| label)
}

//! Request middleware: refusing cross-site writes, and request metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// State-changing requests must come from Confide's own pages or from non-browser clients: a browser
/// says where a request comes from, and anything from another site is refused. With SameSite cookies
/// and JSON-only API bodies this is the CSRF defence of the API; forms add a token of their own.
pub async fn refuse_cross_site(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return ApiError::CrossSite.into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let own = state.config.public_url.trim_end_matches('/');
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let same_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            == Some(host);
        if origin != own && !same_host {
            return ApiError::CrossSite.into_response();
        }
    }
    next.run(request).await
}

/// Counts requests and times them, by route pattern (never by concrete path, which holds ids).
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("confide_http_requests_total", &labels).increment(1);
    metrics::histogram!("confide_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

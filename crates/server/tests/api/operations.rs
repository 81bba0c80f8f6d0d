//! Health, metrics, the OpenAPI document and cross-site refusal.

use reqwest::StatusCode;
use serde_json::json;

use crate::cross_user::ENDPOINTS;
use crate::helpers::TestApp;

#[tokio::test]
async fn health_and_metrics_answer() {
    let app = TestApp::spawn().await;
    let client = app.anonymous();
    assert_eq!(
        client.get("/healthz").await,
        (StatusCode::OK, serde_json::Value::String("ok".into()))
    );
    client.get("/api/v1/practices").await;
    let (status, body) = client.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(text.contains("confide_http_requests_total"), "{text}");
    assert!(
        text.contains("route=\"/api/v1/practices\""),
        "metrics are labelled by route pattern"
    );
    // The SFU's own figures are there too, the delay histogram's buckets rising to its count.
    for name in [
        "confide_sfu_datagrams_received_total 0",
        "confide_sfu_recorder_dropped_frames_total 0",
        "# TYPE confide_sfu_forward_delay_seconds histogram",
        "confide_sfu_forward_delay_seconds_bucket{le=\"0.002\"} 0",
        "confide_sfu_forward_delay_seconds_bucket{le=\"+Inf\"} 0",
        "confide_sfu_forward_delay_seconds_count 0",
    ] {
        assert!(text.lines().any(|l| l == name), "{name} in {text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let app = TestApp::spawn().await;
    let (status, spec) = app.anonymous().get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = spec["paths"].as_object().unwrap();
    for endpoint in ENDPOINTS {
        let operation = &paths
            .get(endpoint.path)
            .unwrap_or_else(|| panic!("{} is not documented", endpoint.path))[endpoint.method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} is not documented",
            endpoint.method,
            endpoint.path
        );
    }
    for extra in [
        "/api/v1/auth/signup",
        "/api/v1/auth/login",
        "/api/v1/auth/logout",
        "/api/v1/auth/totp/setup",
        "/api/v1/auth/totp/confirm",
        "/api/v1/auth/password-reset",
        "/api/v1/auth/password-reset/confirm",
        "/api/v1/invites/accept",
        "/api/v1/auth/logout-everywhere",
    ] {
        assert!(paths.contains_key(extra), "{extra} is not documented");
    }
    app.stop().await;
}

#[tokio::test]
async fn writes_from_another_site_are_refused() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous()
        .http
        .post(app.url("/api/v1/auth/password-reset"))
        .header("origin", "https://evil.example")
        .json(&json!({"email": "a@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = app
        .anonymous()
        .http
        .post(app.url("/api/v1/auth/password-reset"))
        .header("origin", app.running.url())
        .json(&json!({"email": "a@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    app.stop().await;
}

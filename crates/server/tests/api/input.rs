//! Bad input gets a clear 4xx in the API's error shape, never a 500.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an API error: {body}"))
}

#[tokio::test]
async fn signup_input_is_checked_field_by_field() {
    let app = TestApp::spawn().await;
    let client = app.anonymous();
    let ok = json!({"name": "Ann Lee", "email": "ann@example.org", "password": "violet-otter-sails-at-dawn", "date_of_birth": "1980-01-01"});
    let cases = [
        ("email", json!("not-an-email"), "invalid_email"),
        ("name", json!("  "), "invalid_name"),
        ("date_of_birth", json!("1980-13-01"), "invalid_date_of_birth"),
        ("date_of_birth", json!("01/01/1980"), "invalid_date_of_birth"),
        ("date_of_birth", json!("2999-01-01"), "invalid_date_of_birth"),
        ("password", json!("short"), "weak_password"),
        ("password", json!("password1234"), "weak_password"),
        ("password", json!("x".repeat(300)), "weak_password"),
        ("email", json!(42), "invalid_body"),
    ];
    for (field, value, expected) in cases {
        let mut body = ok.clone();
        body[field] = value.clone();
        let (status, answer) = client.post("/api/v1/auth/signup", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {answer}");
        assert_eq!(code(&answer), expected, "{field}={value}");
    }
    let mut extra = ok.clone();
    extra["is_admin"] = json!(true);
    let (status, answer) = client.post("/api/v1/auth/signup", extra).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "invalid_body"));
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("is_admin"),
        "{answer}"
    );
    let mut missing = ok.clone();
    missing.as_object_mut().unwrap().remove("email");
    let (status, answer) = client.post("/api/v1/auth/signup", missing).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "invalid_body"));
    app.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies_are_refused_clearly() {
    let app = TestApp::spawn().await;
    let client = app.anonymous();
    let (status, body) = client
        .post_raw("/api/v1/auth/login", "application/json", "{\"email\": ")
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "malformed_json"));
    let (status, body) = client.post_raw("/api/v1/auth/login", "text/plain", "{}").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let huge = format!("{{\"email\": \"{}\", \"password\": \"x\"}}", "a".repeat(200_000));
    let (status, body) = client
        .post_raw("/api/v1/auth/login", "application/json", huge)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (status, body) = client
        .post_raw("/api/v1/auth/login", "application/json", "[1, 2]")
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_body"));
    let (status, body) = client
        .post_raw("/api/v1/auth/login", "application/json", "\u{0}\u{1}garbage")
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "malformed_json"));
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_methods_and_malformed_ids_get_json_errors() {
    let app = TestApp::spawn().await;
    let ann = app
        .login(
            &app.user(confide_domain::identity::Role::Patient, None, false)
                .await,
        )
        .await;
    let (status, body) = ann.get("/api/v1/nothing-here").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = ann.get("/api/v1/patients/not-a-uuid/record").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = ann.post("/api/v1/me", json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (status, body) = ann.get("/api/v1/practices?q=x&unexpected=1").await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_query"));
    let (status, body) = ann.get(&format!("/api/v1/practices?q={}", "x".repeat(201))).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_query"));
    let (status, body) = ann
        .post("/api/v1/registrations", json!({"practice_id": "nope"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_body"));
    app.stop().await;
}

#[tokio::test]
async fn practices_need_real_time_zones() {
    let app = TestApp::spawn().await;
    let admin = app
        .login(
            &app.user(confide_domain::identity::Role::PlatformAdmin, None, true)
                .await,
        )
        .await;
    let bad = json!({"name": "Mars Clinic", "address": "Olympus Mons", "time_zone": "Mars/Olympus"});
    let (status, body) = admin.post("/api/v1/practices", bad).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_time_zone")
    );
    let good = json!({"name": "Riverside", "address": "1 River Road", "time_zone": "Europe/London"});
    let (status, body) = admin.post("/api/v1/practices", good).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, found) = app.anonymous().get("/api/v1/practices?q=RIVER").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found[0]["id"], body["id"]);
    app.stop().await;
}

#[tokio::test]
async fn notes_are_bounded() {
    let app = TestApp::spawn().await;
    let practice = app.practice("North").await;
    let gp = app
        .login(
            &app.user(confide_domain::identity::Role::Clinician, Some(practice), true)
                .await,
        )
        .await;
    let ann_user = app
        .user(confide_domain::identity::Role::Patient, None, false)
        .await;
    let ann = app.login(&ann_user).await;
    crate::helpers::register(&ann, &gp, practice).await;
    let path = format!("/api/v1/patients/{}/notes", ann_user.id);
    let (status, body) = gp.post(&path, json!({"body": "   "})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_note"));
    app.stop().await;
}

mod arbitrary_input {
    use proptest::prelude::*;
    use reqwest::StatusCode;

    use crate::cross_user::ENDPOINTS;
    use crate::helpers::TestApp;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("email".to_owned()),
                        Just("practice_id".to_owned()),
                        Just("body".to_owned()),
                        ".{0,8}".prop_map(String::from)
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 16, ..ProptestConfig::default() })]

        /// Whatever a client sends, logged in or not, the answer is never a server error.
        #[test]
        fn no_input_makes_the_server_fail(
            bodies in prop::collection::vec(json_value(), ENDPOINTS.len()),
            raw in prop::collection::vec(any::<u8>(), 0..200),
            id in "[a-zA-Z0-9%._~-]{0,40}",
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let app = TestApp::spawn().await;
                let practice = app.practice("North").await;
                let gp = app.login(&app.user(confide_domain::identity::Role::Clinician, Some(practice), true).await).await;
                let ann = app.login(&app.user(confide_domain::identity::Role::Patient, None, false).await).await;
                for client in [&gp, &ann, &app.anonymous()] {
                    for (endpoint, body) in ENDPOINTS.iter().zip(&bodies) {
                        let path = endpoint.path.replace("{id}", if id.is_empty() { "x" } else { &id });
                        let (status, answer) = if endpoint.method == "GET" {
                            client.get(&path).await
                        } else {
                            client.post(&path, body.clone()).await
                        };
                        assert!(!status.is_server_error(), "{} {path} with {body}: {status} {answer}", endpoint.method);
                        if endpoint.method == "POST" {
                            let (status, answer) = client.post_raw(&path, "application/json", raw.clone()).await;
                            assert!(!status.is_server_error(), "{path} with raw bytes: {status} {answer}");
                        }
                    }
                }
                assert_ne!(app.anonymous().get("/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
                app.stop().await;
            });
        }
    }
}

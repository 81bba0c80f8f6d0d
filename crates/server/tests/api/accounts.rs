//! Sign-up, login, second factor, sessions, password reset and invitations.

use std::time::Duration;

use confide_domain::identity::Role;
use confide_server::auth;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp};

fn signup_body(email: &str) -> serde_json::Value {
    json!({"name": "Ann Lee", "email": email, "password": PASSWORD, "date_of_birth": "1980-02-29"})
}

#[tokio::test]
async fn a_patient_signs_up_and_is_logged_in() {
    let app = TestApp::spawn().await;
    let ann = app.anonymous();
    let response = ann
        .http
        .post(app.url("/api/v1/auth/signup"))
        .json(&signup_body("Ann@Example.org"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"),
        "{cookie}"
    );
    let (status, me) = ann.get("/api/v1/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "ann@example.org");
    assert_eq!(me["role"], "patient");
    assert_eq!(me["mfa_enrolment_required"], false);

    let (status, body) = app
        .anonymous()
        .post("/api/v1/auth/signup", signup_body("ann@example.org"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "email_taken");
    app.stop().await;
}

#[tokio::test]
async fn sessions_are_secure_cookies_behind_https() {
    let app = TestApp::spawn_with(None, |c| c.public_url = "https://confide.example".into()).await;
    let response = app
        .anonymous()
        .http
        .post(app.url("/api/v1/auth/signup"))
        .json(&signup_body("ann@example.org"))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_account_look_the_same() {
    let app = TestApp::spawn().await;
    let ann = app.user(Role::Patient, None, false).await;
    let client = app.anonymous();
    let wrong = client
        .post(
            "/api/v1/auth/login",
            json!({"email": ann.email, "password": "not-the-password-1"}),
        )
        .await;
    let unknown = client
        .post(
            "/api/v1/auth/login",
            json!({"email": "nobody@example.org", "password": "x"}),
        )
        .await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.1["error"]["code"], "invalid_credentials");
    app.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_for_fifteen_minutes() {
    let app = TestApp::spawn().await;
    let ann = app.user(Role::Patient, None, false).await;
    let client = app.anonymous();
    for _ in 0..5 {
        let (status, _) = client
            .post(
                "/api/v1/auth/login",
                json!({"email": ann.email, "password": "wrong-wrong-wrong"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": ann.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("15 minute"));
    for _ in 0..5 {
        client
            .post(
                "/api/v1/auth/login",
                json!({"email": "ghost@example.org", "password": "wrong"}),
            )
            .await;
    }
    let (status, _) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": "ghost@example.org", "password": "x"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "no enumeration: unknown accounts are throttled too"
    );

    app.clock.advance(Duration::from_secs(15 * 60));
    let (status, _) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": ann.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn staff_must_enrol_a_second_factor_before_seeing_anything() {
    let app = TestApp::spawn().await;
    let practice = app.practice("Riverside").await;
    let gp = app.user(Role::Clinician, Some(practice), false).await;
    let client = app.anonymous();
    let (status, me) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": gp.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["mfa_enrolment_required"], true);
    let queue = format!("/api/v1/practices/{practice}/registration-requests");
    assert_eq!(client.get(&queue).await.0, StatusCode::NOT_FOUND);

    let (status, setup) = client.post("/api/v1/auth/totp/setup", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert!(
        setup["otpauth_url"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let (status, _) = client
        .post("/api/v1/auth/totp/confirm", json!({"code": "000000"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let code = auth::totp_code(&secret, app.now_secs()).unwrap();
    let (status, codes) = client
        .post("/api/v1/auth/totp/confirm", json!({"code": code}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let recovery: Vec<String> = serde_json::from_value(codes["recovery_codes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    assert_eq!(client.get(&queue).await.0, StatusCode::OK);

    let fresh = app.anonymous();
    let (status, body) = fresh
        .post(
            "/api/v1/auth/login",
            json!({"email": gp.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("mfa_required"))
    );
    let with_recovery = json!({"email": gp.email, "password": PASSWORD, "totp": recovery[0].to_uppercase()});
    assert_eq!(
        fresh.post("/api/v1/auth/login", with_recovery.clone()).await.0,
        StatusCode::OK
    );
    let (status, body) = app.anonymous().post("/api/v1/auth/login", with_recovery).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_mfa_code"))
    );
    app.stop().await;
}

#[tokio::test]
async fn login_gives_a_new_session_and_logout_ends_it_everywhere() {
    let app = TestApp::spawn().await;
    let ann = app.user(Role::Patient, None, false).await;
    let laptop = app.login(&ann).await;
    let phone = app.login(&ann).await;
    assert_eq!(laptop.get("/api/v1/me").await.0, StatusCode::OK);
    assert_eq!(
        phone.post("/api/v1/auth/logout", json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(phone.get("/api/v1/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(laptop.get("/api/v1/me").await.0, StatusCode::OK);

    let tablet = app.login(&ann).await;
    assert_eq!(
        tablet.post("/api/v1/auth/logout-everywhere", json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(laptop.get("/api/v1/me").await.0, StatusCode::UNAUTHORIZED);

    let again = app.login(&ann).await;
    app.clock.advance(Duration::from_secs(12 * 3600 + 1));
    assert_eq!(
        again.get("/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED,
        "sessions expire on the server"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_password_is_reset_by_an_emailed_single_use_link() {
    let app = TestApp::spawn().await;
    let ann = app.user(Role::Patient, None, false).await;
    let old_session = app.login(&ann).await;
    let client = app.anonymous();
    assert_eq!(
        client
            .post(
                "/api/v1/auth/password-reset",
                json!({"email": "nobody@example.org"})
            )
            .await
            .0,
        StatusCode::ACCEPTED
    );
    assert!(app.outbox().is_empty());
    assert_eq!(
        client
            .post("/api/v1/auth/password-reset", json!({"email": ann.email}))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let token = app.emailed_token(&ann.email);

    let new_password = "amber-falcon-drifts-over-hills";
    let weak = json!({"token": token, "password": "password1234"});
    let (status, body) = client.post("/api/v1/auth/password-reset/confirm", weak).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("weak_password"))
    );
    let confirm = json!({"token": token, "password": new_password});
    assert_eq!(
        client
            .post("/api/v1/auth/password-reset/confirm", confirm.clone())
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        client
            .post("/api/v1/auth/password-reset/confirm", confirm)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(old_session.get("/api/v1/me").await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": ann.email, "password": new_password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_practice_admin_invites_staff_by_email() {
    let app = TestApp::spawn().await;
    let practice = app.practice("Riverside").await;
    let admin = app
        .login(&app.user(Role::PracticeAdmin, Some(practice), true).await)
        .await;
    let invite = json!({"email": "new.gp@example.org", "name": "Dr New", "role": "clinician"});
    let (status, body) = admin
        .post(&format!("/api/v1/practices/{practice}/invites"), invite)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let token = app.emailed_token("new.gp@example.org");
    let client = app.anonymous();
    let weak = json!({"token": token, "password": "password1234"});
    let (status, _) = client.post("/api/v1/invites/accept", weak).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a refused password leaves the invitation usable"
    );
    let (status, me) = client
        .post(
            "/api/v1/invites/accept",
            json!({"token": token, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{me}");
    assert_eq!(me["role"], "clinician");
    assert_eq!(me["practice_id"], practice.to_string());
    let (status, me) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": "new.gp@example.org", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["mfa_enrolment_required"], true);

    let patient_role = json!({"email": "p@example.org", "name": "P", "role": "patient"});
    let (status, body) = admin
        .post(&format!("/api/v1/practices/{practice}/invites"), patient_role)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_role"))
    );
    app.stop().await;
}

#[tokio::test]
async fn an_authenticator_code_works_only_once() {
    let app = TestApp::spawn().await;
    let practice = app.practice("Riverside").await;
    let gp = app.user(Role::Clinician, Some(practice), true).await;
    let code = auth::totp_code(gp.totp_secret.as_ref().unwrap(), app.now_secs()).unwrap();
    let login = json!({"email": gp.email, "password": PASSWORD, "totp": code});
    assert_eq!(
        app.anonymous().post("/api/v1/auth/login", login.clone()).await.0,
        StatusCode::OK
    );
    let (status, body) = app.anonymous().post("/api/v1/auth/login", login).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_mfa_code"))
    );
    app.stop().await;
}

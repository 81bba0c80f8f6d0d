//! The start page, and pages about one's account: signing up, logging in and out, the second factor,
//! password reset and staff invitations.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::csrf::{CsrfForm, CsrfToken};
use super::{
    Layout, NoticeQuery, PageError, PageQuery, Problem, Viewer, needs_mfa_enrolment, problem,
    redirect_setting_cookie,
};
use crate::AppState;
use crate::api;
use crate::api::auth::{LoginRequest, SignupRequest};
use crate::auth::Session;
use crate::gate::RequestId;

#[derive(Template, WebTemplate)]
#[template(path = "landing.html")]
pub struct LandingPage {
    layout: Layout,
    logged_in: bool,
}

pub async fn landing(viewer: Viewer, csrf: CsrfToken) -> LandingPage {
    LandingPage {
        layout: Layout::new(viewer.session(), &csrf),
        logged_in: viewer.session().is_some(),
    }
}

/// A form with no fields but its CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SignupForm {
    name: String,
    email: String,
    password: String,
    date_of_birth: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "signup.html")]
struct SignupPage {
    layout: Layout,
    name: String,
    email: String,
    date_of_birth: String,
    error: Problem,
}

pub async fn signup_form(viewer: Viewer, csrf: CsrfToken) -> Response {
    if viewer.session().is_some() {
        return Redirect::to("/home").into_response();
    }
    SignupPage {
        layout: Layout::new(None, &csrf),
        name: String::new(),
        email: String::new(),
        date_of_birth: String::new(),
        error: Problem::none(),
    }
    .into_response()
}

pub async fn signup(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<SignupForm>,
) -> Result<Response, PageError> {
    let req = SignupRequest {
        name: form.name.clone(),
        email: form.email.clone(),
        password: form.password,
        date_of_birth: form.date_of_birth.clone(),
    };
    match api::auth::signup(&state, &viewer.0, req, &request).await {
        Ok(logged_in) => Ok(redirect_setting_cookie("/home", &logged_in.cookie)),
        Err(e) => {
            let (status, error) = problem(e)?;
            let page = SignupPage {
                layout: Layout::new(viewer.session(), &csrf),
                name: form.name,
                email: form.email,
                date_of_birth: form.date_of_birth,
                error,
            };
            Ok((status, page).into_response())
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    email: String,
    password: String,
    code: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    error: Problem,
}

pub async fn login_form(
    viewer: Viewer,
    csrf: CsrfToken,
    PageQuery(notice): PageQuery<NoticeQuery>,
) -> Response {
    if viewer.session().is_some() {
        return Redirect::to("/home").into_response();
    }
    LoginPage {
        layout: Layout::new(None, &csrf).with_notice(&notice),
        email: String::new(),
        error: Problem::none(),
    }
    .into_response()
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Result<Response, PageError> {
    let req = LoginRequest {
        email: form.email.clone(),
        password: form.password,
        totp: Some(form.code).filter(|c| !c.trim().is_empty()),
    };
    match api::auth::login(&state, &viewer.0, req, peer.ip(), &request).await {
        Ok(logged_in) => {
            let to = if logged_in.me.mfa_enrolment_required {
                "/mfa/setup"
            } else {
                "/home"
            };
            Ok(redirect_setting_cookie(to, &logged_in.cookie))
        }
        Err(e) => {
            let (status, error) = problem(e)?;
            let page = LoginPage {
                layout: Layout::new(viewer.session(), &csrf),
                email: form.email,
                error,
            };
            Ok((status, page).into_response())
        }
    }
}

/// Sends the browser to `to` while the service's answer clears the session cookie.
fn redirect_clearing_session(state: &AppState, to: &'static str) -> Response {
    let mut response = api::auth::clear_cookie(state, StatusCode::SEE_OTHER);
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

pub async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, PageError> {
    api::auth::logout(&state, &viewer.0).await?;
    Ok(redirect_clearing_session(&state, "/login?notice=logged_out"))
}

pub async fn logout_everywhere(
    State(state): State<AppState>,
    viewer: Viewer,
    request: RequestId,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, PageError> {
    api::auth::logout_everywhere(&state, viewer.require()?, &request).await?;
    Ok(redirect_clearing_session(
        &state,
        "/login?notice=logged_out_everywhere",
    ))
}

/// A secret waiting to be confirmed, as the person copies it into their app.
struct PendingTotp {
    secret: String,
    otpauth_url: String,
}

impl PendingTotp {
    fn new(secret: &str, otpauth_url: String) -> PendingTotp {
        let chars: Vec<char> = secret.chars().collect();
        let grouped: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
        PendingTotp {
            secret: grouped.join(" "),
            otpauth_url,
        }
    }

    /// The secret stored for this session's account and not yet confirmed, if any.
    fn of(session: &Session) -> Option<PendingTotp> {
        let account = session.account();
        let secret = account.totp_secret.as_deref().filter(|_| !account.totp_enabled)?;
        let url = crate::auth::totp_url(secret, &account.email)?;
        Some(PendingTotp::new(secret, url))
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "mfa_setup.html")]
struct MfaSetupPage {
    layout: Layout,
    /// Staff may do nothing else until this is done.
    required: bool,
    /// Already set up: there is nothing to do.
    enabled: bool,
    pending: Option<PendingTotp>,
    error: Problem,
}

pub async fn mfa_form(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
) -> Result<Response, PageError> {
    let session = viewer.require()?;
    let enabled = session.account().totp_enabled;
    let setup = if enabled {
        None
    } else {
        Some(api::auth::totp_setup(&state, session).await)
    };
    let (status, pending, error) = match setup {
        None => (StatusCode::OK, None, Problem::none()),
        Some(Ok(setup)) => (
            StatusCode::OK,
            Some(PendingTotp::new(&setup.secret, setup.otpauth_url)),
            Problem::none(),
        ),
        Some(Err(e)) => {
            let (status, error) = problem(e)?;
            (status, None, error)
        }
    };
    let page = MfaSetupPage {
        layout: Layout::new(Some(session), &csrf),
        required: needs_mfa_enrolment(session),
        enabled,
        pending,
        error,
    };
    Ok((status, page).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CodeForm {
    code: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    layout: Layout,
    codes: Vec<String>,
}

pub async fn mfa_confirm(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<CodeForm>,
) -> Result<Response, PageError> {
    let session = viewer.require()?;
    match api::auth::totp_confirm(&state, session, &form.code, &request).await {
        Ok(codes) => Ok(RecoveryCodesPage {
            layout: Layout::new(Some(session), &csrf),
            codes: codes.recovery_codes,
        }
        .into_response()),
        Err(e) => {
            let (status, error) = problem(e)?;
            let page = MfaSetupPage {
                layout: Layout::new(Some(session), &csrf),
                required: needs_mfa_enrolment(session),
                enabled: session.account().totp_enabled,
                pending: PendingTotp::of(session),
                error,
            };
            Ok((status, page).into_response())
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TokenQuery {
    token: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_request.html")]
struct ResetRequestPage {
    layout: Layout,
    sent: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_confirm.html")]
struct ResetConfirmPage {
    layout: Layout,
    token: String,
    error: Problem,
}

pub async fn reset_form(
    viewer: Viewer,
    csrf: CsrfToken,
    PageQuery(query): PageQuery<TokenQuery>,
) -> Response {
    let layout = Layout::new(viewer.session(), &csrf);
    if query.token.is_empty() {
        ResetRequestPage { layout, sent: false }.into_response()
    } else {
        ResetConfirmPage {
            layout,
            token: query.token,
            error: Problem::none(),
        }
        .into_response()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResetForm {
    email: String,
    token: String,
    password: String,
}

pub async fn reset(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<ResetForm>,
) -> Result<Response, PageError> {
    let layout = Layout::new(viewer.session(), &csrf);
    if form.token.is_empty() {
        api::auth::request_password_reset(&state, &form.email, &request).await?;
        return Ok(ResetRequestPage { layout, sent: true }.into_response());
    }
    let result = api::auth::confirm_password_reset(&state, &form.token, &form.password, &request).await;
    match result {
        Ok(()) => Ok(redirect_clearing_session(
            &state,
            "/login?notice=password_changed",
        )),
        Err(e) => {
            let (status, error) = problem(e)?;
            let page = ResetConfirmPage {
                layout,
                token: form.token,
                error,
            };
            Ok((status, page).into_response())
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "invite.html")]
pub struct InvitePage {
    layout: Layout,
    token: String,
    error: Problem,
}

pub async fn invite_form(
    viewer: Viewer,
    csrf: CsrfToken,
    PageQuery(query): PageQuery<TokenQuery>,
) -> Result<InvitePage, PageError> {
    if query.token.is_empty() {
        return Err(PageError::NotFound);
    }
    Ok(InvitePage {
        layout: Layout::new(viewer.session(), &csrf),
        token: query.token,
        error: Problem::none(),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InviteForm {
    token: String,
    password: String,
}

pub async fn invite(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<InviteForm>,
) -> Result<Response, PageError> {
    let result = api::auth::accept_invite(&state, &form.token, &form.password, &request).await;
    match result {
        Ok(_) => Ok(Redirect::to("/login?notice=invite_accepted").into_response()),
        Err(e) => {
            let (status, error) = problem(e)?;
            let page = InvitePage {
                layout: Layout::new(viewer.session(), &csrf),
                token: form.token,
                error,
            };
            Ok((status, page).into_response())
        }
    }
}

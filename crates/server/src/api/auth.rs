//! Sign-up, login with a second factor, logout, password reset and staff invitations.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confide_domain::UserId;
use confide_domain::audit::{AuditEvent, Outcome};
use confide_domain::identity::{DateOfBirth, Email, PersonName, Role};
use confide_domain::password::NewPassword;
use confide_store::{Account, NewUser, OneTimeToken, TokenPurpose};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{self, Caller, Session};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::gate::RequestId;

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct Me {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub role: String,
    pub practice_id: Option<Uuid>,
    /// Staff must set up an authenticator app before anything else; until then the gate refuses them.
    pub mfa_enrolment_required: bool,
    pub mfa_enabled: bool,
}

impl Me {
    pub fn of(account: &Account, mfa_verified: bool) -> Me {
        Me {
            id: account.id.as_uuid(),
            name: account.name.clone(),
            email: account.email.clone(),
            role: account.role.as_str().to_owned(),
            practice_id: account.practice.map(|p| p.as_uuid()),
            mfa_enrolment_required: account.role.requires_mfa() && !mfa_verified,
            mfa_enabled: account.totp_enabled,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    pub name: String,
    pub email: String,
    pub password: String,
    /// YYYY-MM-DD
    pub date_of_birth: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// The 6-digit code from the authenticator app, or a recovery code.
    pub totp: Option<String>,
}

/// A new session: the cookie that carries it, and who it is for.
pub struct LoggedIn {
    pub cookie: String,
    pub me: Me,
}

impl IntoResponse for LoggedIn {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&self.cookie) {
            headers.insert(header::SET_COOKIE, v);
        }
        (headers, axum::Json(self.me)).into_response()
    }
}

/// Creates a session for `account`, replacing the caller's current one.
pub async fn start_session(
    state: &AppState,
    account: &Account,
    mfa_verified: bool,
    previous: &Caller,
) -> Result<LoggedIn, ApiError> {
    if let Some(old) = &previous.0 {
        state.store.delete_session(&old.token_hash).await?;
    }
    let (token, hash) = auth::new_token();
    let now = state.clock.now_ms();
    let ttl = state.config.session_ttl;
    state
        .store
        .create_session(&hash, account.id, mfa_verified, now, now + ttl.as_millis() as i64)
        .await?;
    Ok(LoggedIn {
        cookie: auth::session_cookie(&token, ttl.as_secs(), state.config.secure_cookies()),
        me: Me::of(account, mfa_verified),
    })
}

pub async fn signup(
    state: &AppState,
    caller: &Caller,
    req: SignupRequest,
    request: &RequestId,
) -> Result<LoggedIn, ApiError> {
    let name = PersonName::parse(&req.name)?;
    let email = Email::parse(&req.email)?;
    let today = state.clock.now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let dob = DateOfBirth::parse(&req.date_of_birth, today)?;
    let password = NewPassword::parse(&req.password, &[name.as_str(), email.as_str()])?;
    let hash = auth::hash_password(&password);
    let account = state
        .store
        .create_user(NewUser {
            id: UserId::from_uuid(Uuid::now_v7()),
            email: &email,
            name: &name,
            role: Role::Patient,
            practice: None,
            password_hash: Some(hash),
            date_of_birth: Some(dob.to_string()),
            at_ms: state.clock.now_ms(),
        })
        .await?;
    let event = AuditEvent {
        subject_patient: Some(account.id),
        ..state.account_event(
            account.id,
            Role::Patient,
            "account.signup",
            Outcome::Allowed,
            "self_signup",
            request,
        )
    };
    state.record(event).await?;
    start_session(state, &account, false, caller).await
}

#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, description = "Signed up and logged in", body = Me),
              (status = 400, body = ErrorBody), (status = 409, description = "Email taken", body = ErrorBody)))]
pub async fn signup_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<(StatusCode, LoggedIn), ApiError> {
    Ok((StatusCode::CREATED, signup(&state, &caller, req, &request).await?))
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        message: "Email or password is incorrect.".into(),
    }
}

pub async fn login(
    state: &AppState,
    caller: &Caller,
    req: LoginRequest,
    ip: std::net::IpAddr,
    request: &RequestId,
) -> Result<LoggedIn, ApiError> {
    let now = state.clock.now_ms();
    if let Some(minutes) = state.throttle.blocked_for(&req.email, ip, now) {
        let event = AuditEvent {
            resource: format!("login:{}", req.email.trim().to_lowercase()),
            ..state.event(None, "login", Outcome::Denied, "throttled", request)
        };
        state.record(event).await?;
        return Err(ApiError::TooManyRequests {
            message: format!("Too many failed logins. Try again in {minutes} minute(s)."),
        });
    }
    let account = match Email::parse(&req.email) {
        Ok(email) => state.store.account_by_email(&email).await?,
        Err(_) => None,
    };
    let stored_hash = account.as_ref().and_then(|a| a.password_hash.as_deref());
    let password_ok = {
        let password = req.password.clone();
        let stored = stored_hash.map(str::to_owned);
        tokio::task::spawn_blocking(move || auth::verify_password(&password, stored.as_deref()))
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
    };
    let fail = |account: Option<&Account>, reason: &str| {
        state.throttle.record_failure(&req.email, ip, now);
        AuditEvent {
            actor: account.map(|a| a.id),
            actor_role: account.map(|a| a.role),
            resource: format!("login:{}", req.email.trim().to_lowercase()),
            ..state.event(None, "login", Outcome::Denied, reason, request)
        }
    };
    let account = match account {
        Some(a) if password_ok && !a.disabled => a,
        Some(a) if password_ok => {
            state.record(fail(Some(&a), "account_disabled")).await?;
            return Err(invalid_credentials());
        }
        other => {
            let reason = if other.is_some() {
                "wrong_password"
            } else {
                "unknown_account"
            };
            state.record(fail(other.as_ref(), reason)).await?;
            return Err(invalid_credentials());
        }
    };
    let mfa_verified = if account.totp_enabled {
        let Some(code) = req.totp.as_deref().filter(|c| !c.trim().is_empty()) else {
            return Err(ApiError::Unauthorized {
                code: "mfa_required",
                message: "Enter the code from your authenticator app, or a recovery code.".into(),
            });
        };
        let secret = account.totp_secret.as_deref().unwrap_or_default();
        let by_app = match auth::totp_step(secret, code, (now / 1000) as u64) {
            Some(step) => state.store.consume_totp_step(account.id, step as i64).await?,
            None => false,
        };
        let by_recovery = !by_app
            && state
                .store
                .consume_recovery_code(
                    account.id,
                    &auth::token_hash(&auth::normalize_recovery_code(code)),
                    now,
                )
                .await?;
        if !(by_app || by_recovery) {
            state.record(fail(Some(&account), "wrong_second_factor")).await?;
            return Err(ApiError::Unauthorized {
                code: "invalid_mfa_code",
                message: "That code is not valid. Check your authenticator app's time and try again.".into(),
            });
        }
        true
    } else {
        false
    };
    state.throttle.clear_account(&req.email);
    let reason = match (mfa_verified, account.role.requires_mfa()) {
        (true, _) => "password_and_second_factor",
        (false, true) => "password_mfa_enrolment_pending",
        (false, false) => "password",
    };
    let event = state.account_event(
        account.id,
        account.role,
        "login",
        Outcome::Allowed,
        reason,
        request,
    );
    state.record(event).await?;
    start_session(state, &account, mfa_verified, caller).await
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "Logged in; the session cookie is set", body = Me),
              (status = 401, description = "Wrong email or password (`invalid_credentials`), second factor needed (`mfa_required`) or wrong (`invalid_mfa_code`)", body = ErrorBody),
              (status = 429, description = "Too many failed attempts", body = ErrorBody)))]
pub async fn login_handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    request: RequestId,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<LoggedIn, ApiError> {
    login(&state, &caller, req, peer.ip(), &request).await
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "This session ended")))]
pub async fn logout_handler(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    logout(&state, &caller).await?;
    Ok(clear_cookie(&state, StatusCode::NO_CONTENT))
}

/// Ends the caller's session, if any.
pub async fn logout(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    if let Some(session) = &caller.0 {
        state.store.delete_session(&session.token_hash).await?;
    }
    Ok(())
}

pub fn clear_cookie(state: &AppState, status: StatusCode) -> Response {
    let cookie = auth::clear_session_cookie(state.config.secure_cookies());
    let mut response = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

pub async fn logout_everywhere(
    state: &AppState,
    session: &Session,
    request: &RequestId,
) -> Result<(), ApiError> {
    state.store.delete_user_sessions(session.account().id).await?;
    let event = AuditEvent {
        resource: format!("user:{}", session.account().id),
        ..state.event(
            Some(session),
            "logout.everywhere",
            Outcome::Allowed,
            "self",
            request,
        )
    };
    state.record(event).await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/auth/logout-everywhere", tag = "auth",
    responses((status = 204, description = "Every session of this account ended"), (status = 401, body = ErrorBody)))]
pub async fn logout_everywhere_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
) -> Result<Response, ApiError> {
    logout_everywhere(&state, caller.session()?, &request).await?;
    Ok(clear_cookie(&state, StatusCode::NO_CONTENT))
}

#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me_handler(caller: Caller) -> Result<axum::Json<Me>, ApiError> {
    let session = caller.session()?;
    Ok(axum::Json(Me::of(session.account(), session.record.mfa_verified)))
}

#[derive(Serialize, ToSchema)]
pub struct TotpSetup {
    /// Base32; type it into an authenticator app, or use `otpauth_url`.
    pub secret: String,
    pub otpauth_url: String,
}

pub async fn totp_setup(state: &AppState, session: &Session) -> Result<TotpSetup, ApiError> {
    let account = session.account();
    if account.totp_enabled {
        return Err(ApiError::bad_request(
            "mfa_already_enabled",
            "An authenticator app is already set up for this account.",
        ));
    }
    // A secret shown but not yet confirmed is shown again: the person may already have added it to their app.
    let secret = match state.store.account(account.id).await?.and_then(|a| a.totp_secret) {
        Some(pending) => pending,
        None => {
            let fresh = auth::new_totp_secret();
            state.store.set_pending_totp_secret(account.id, &fresh).await?;
            fresh
        }
    };
    let otpauth_url = auth::totp_url(&secret, &account.email)
        .ok_or_else(|| ApiError::Unavailable("TOTP secret could not be used".into()))?;
    Ok(TotpSetup { secret, otpauth_url })
}

#[utoipa::path(post, path = "/api/v1/auth/totp/setup", tag = "auth",
    responses((status = 200, description = "A new secret to confirm with a code", body = TotpSetup),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn totp_setup_handler(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<TotpSetup>, ApiError> {
    Ok(axum::Json(totp_setup(&state, caller.session()?).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Each works once in place of a code from the app. They are shown only now.
    pub recovery_codes: Vec<String>,
}

pub async fn totp_confirm(
    state: &AppState,
    session: &Session,
    code: &str,
    request: &RequestId,
) -> Result<RecoveryCodes, ApiError> {
    let account = state
        .store
        .account(session.account().id)
        .await?
        .ok_or_else(ApiError::login_required)?;
    let Some(secret) = account.totp_secret.as_deref().filter(|_| !account.totp_enabled) else {
        return Err(ApiError::bad_request(
            "no_pending_mfa",
            "Start setting up an authenticator app first.",
        ));
    };
    let step = auth::totp_step(secret, code, (state.clock.now_ms() / 1000) as u64);
    if step.is_none() {
        return Err(ApiError::bad_request(
            "invalid_mfa_code",
            "That code is not valid. Check your app's time.",
        ));
    }
    let codes = auth::new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| auth::token_hash(c)).collect();
    state.store.enable_totp(account.id, secret, &hashes).await?;
    if let Some(step) = step {
        state.store.consume_totp_step(account.id, step as i64).await?;
    }
    state.store.mark_session_mfa_verified(&session.token_hash).await?;
    let event = AuditEvent {
        resource: format!("user:{}", account.id),
        ..state.event(Some(session), "mfa.enable", Outcome::Allowed, "self", request)
    };
    state.record(event).await?;
    Ok(RecoveryCodes {
        recovery_codes: codes,
    })
}

#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "auth", request_body = TotpConfirm,
    responses((status = 200, description = "Second factor on; this session counts as verified", body = RecoveryCodes),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn totp_confirm_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiJson(req): ApiJson<TotpConfirm>,
) -> Result<axum::Json<RecoveryCodes>, ApiError> {
    Ok(axum::Json(
        totp_confirm(&state, caller.session()?, &req.code, &request).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    pub email: String,
}

const RESET_TTL_MS: i64 = 60 * 60 * 1000;

/// Emails a reset link if the account exists; the answer is the same either way.
pub async fn request_password_reset(
    state: &AppState,
    email: &str,
    request: &RequestId,
) -> Result<(), ApiError> {
    let Ok(email) = Email::parse(email) else {
        return Ok(());
    };
    let Some(account) = state
        .store
        .account_by_email(&email)
        .await?
        .filter(|a| !a.disabled)
    else {
        return Ok(());
    };
    let (token, hash) = auth::new_token();
    let now = state.clock.now_ms();
    state
        .store
        .create_token(&OneTimeToken {
            token_hash: hash,
            purpose: TokenPurpose::PasswordReset,
            user: Some(account.id),
            email: None,
            name: None,
            role: None,
            practice: None,
            created_at_ms: now,
            expires_at_ms: now + RESET_TTL_MS,
        })
        .await?;
    let link = format!(
        "{}/reset-password?token={token}",
        state.config.public_url.trim_end_matches('/')
    );
    let body = format!(
        "Hello {},\n\nSomeone asked to reset the password of your Confide account. If it was you, open this link \
         within an hour:\n\n{link}\n\nIf it was not you, ignore this email: your password stays as it is.\n",
        account.name
    );
    // A failure is logged, not answered: a different answer for existing accounts would tell who has one.
    let sent = state
        .mailer
        .send(&account.email, "Reset your Confide password", body)
        .await;
    if let Err(e) = &sent {
        tracing::error!(error = %e, user = %account.id, "could not email a password reset link");
    }
    let reason = if sent.is_ok() { "emailed" } else { "email_failed" };
    let event = state.account_event(
        account.id,
        account.role,
        "password.reset.request",
        Outcome::Allowed,
        reason,
        request,
    );
    state.record(event).await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "auth", request_body = PasswordResetRequest,
    responses((status = 202, description = "If the account exists, a reset link was emailed")))]
pub async fn password_reset_handler(
    State(state): State<AppState>,
    request: RequestId,
    ApiJson(req): ApiJson<PasswordResetRequest>,
) -> Result<StatusCode, ApiError> {
    request_password_reset(&state, &req.email, &request).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirm {
    pub token: String,
    pub password: String,
}

fn invalid_token() -> ApiError {
    ApiError::bad_request(
        "invalid_token",
        "This link is not valid any more. Ask for a new one.",
    )
}

/// The token of an emailed link: found live (right purpose, not expired, not used), not yet spent. It is
/// spent only once what it is for has passed its checks, so that a refused password keeps the link usable.
struct LinkToken {
    hash: String,
    found: OneTimeToken,
}

impl LinkToken {
    async fn find(state: &AppState, token: &str, purpose: TokenPurpose) -> Result<LinkToken, ApiError> {
        let hash = auth::token_hash(token.trim());
        let found = state
            .store
            .token(&hash, purpose, state.clock.now_ms())
            .await?
            .ok_or_else(invalid_token)?;
        Ok(LinkToken { hash, found })
    }

    /// Fails if another request spent it in the meantime.
    async fn spend(&self, state: &AppState) -> Result<(), ApiError> {
        match state
            .store
            .spend_token(&self.hash, self.found.purpose, state.clock.now_ms())
            .await?
        {
            true => Ok(()),
            false => Err(invalid_token()),
        }
    }
}

/// Sets a new password from an emailed token and ends every session of the account. The password is
/// checked before the token is spent, so a refused password does not cost the person their link.
pub async fn confirm_password_reset(
    state: &AppState,
    token: &str,
    password: &str,
    request: &RequestId,
) -> Result<(), ApiError> {
    let link = LinkToken::find(state, token, TokenPurpose::PasswordReset).await?;
    let user = link.found.user.ok_or_else(invalid_token)?;
    let account = state.store.account(user).await?.ok_or_else(invalid_token)?;
    let password = NewPassword::parse(password, &[&account.name, &account.email])?;
    link.spend(state).await?;
    state
        .store
        .set_password_hash(user, &auth::hash_password(&password))
        .await?;
    state.store.delete_user_sessions(user).await?;
    let event = state.account_event(
        user,
        account.role,
        "password.reset",
        Outcome::Allowed,
        "emailed_token",
        request,
    );
    state.record(event).await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "auth", request_body = PasswordResetConfirm,
    responses((status = 204, description = "Password changed; every session ended"), (status = 400, body = ErrorBody)))]
pub async fn password_reset_confirm_handler(
    State(state): State<AppState>,
    request: RequestId,
    ApiJson(req): ApiJson<PasswordResetConfirm>,
) -> Result<StatusCode, ApiError> {
    confirm_password_reset(&state, &req.token, &req.password, &request).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteAccept {
    pub token: String,
    pub password: String,
}

/// Creates the staff account an invitation names. It must set up a second factor at first login. The
/// password is checked before the invitation is spent.
pub async fn accept_invite(
    state: &AppState,
    token: &str,
    password: &str,
    request: &RequestId,
) -> Result<Me, ApiError> {
    let link = LinkToken::find(state, token, TokenPurpose::StaffInvite).await?;
    let (Some(email), Some(name), Some(role)) =
        (link.found.email.clone(), link.found.name.clone(), link.found.role)
    else {
        return Err(invalid_token());
    };
    let email = Email::parse(&email)?;
    let name = PersonName::parse(&name)?;
    let password = NewPassword::parse(password, &[name.as_str(), email.as_str()])?;
    link.spend(state).await?;
    let now = state.clock.now_ms();
    let account = state
        .store
        .create_user(NewUser {
            id: UserId::from_uuid(Uuid::now_v7()),
            email: &email,
            name: &name,
            role,
            practice: link.found.practice,
            password_hash: Some(auth::hash_password(&password)),
            date_of_birth: None,
            at_ms: now,
        })
        .await?;
    let event = state.account_event(
        account.id,
        role,
        "account.invite.accept",
        Outcome::Allowed,
        "invited",
        request,
    );
    state.record(event).await?;
    Ok(Me::of(&account, false))
}

#[utoipa::path(post, path = "/api/v1/invites/accept", tag = "auth", request_body = InviteAccept,
    responses((status = 201, description = "Account created; log in and set up an authenticator app", body = Me),
              (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn accept_invite_handler(
    State(state): State<AppState>,
    request: RequestId,
    ApiJson(req): ApiJson<InviteAccept>,
) -> Result<(StatusCode, axum::Json<Me>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(accept_invite(&state, &req.token, &req.password, &request).await?),
    ))
}

//! The page a guest's link opens. It says who invited them to what, in no more words than they need to
//! decide: the practice and the clinician, and the name and role they were invited under. Nothing about
//! the patient is shown before the call, so a link that reached the wrong person tells them nothing of
//! anyone's health. It asks whether the guest may be recorded; sending the answer spends the link,
//! opens the guest's session and takes them to the call.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use confide_domain::audit::Outcome;
use confide_domain::consultation::ConsentDecision;
use serde::Deserialize;

use super::csrf::{CsrfForm, CsrfToken};
use super::{Layout, PageError, PagePath};
use crate::AppState;
use crate::api::consultation_records;
use crate::api::guests::{self, InCall};
use crate::auth::token_hash;
use crate::error::ApiError;
use crate::gate::RequestId;

#[derive(Template, WebTemplate)]
#[template(path = "guest_join.html")]
struct JoinPage {
    layout: Layout,
    token: String,
    practice: String,
    clinician: String,
    name: String,
    role: String,
}

pub async fn join_form(
    State(state): State<AppState>,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(token): PagePath<String>,
) -> Result<Response, PageError> {
    let link = guests::open_link(&state, &token, &request)
        .await?
        .ok_or(PageError::NotFound)?;
    let event = guests::guest_event(
        &state,
        link.guest,
        "consultation.guest_link_opened",
        Outcome::Allowed,
        "link_valid",
        &link.consultation,
        &request,
    );
    state.record(event).await?;
    let page = JoinPage {
        layout: Layout::new(None, &csrf),
        token,
        practice: link.practice_name,
        clinician: link.clinician_name,
        name: link.name,
        role: link.role,
    };
    Ok(page.into_response())
}

#[derive(Deserialize, Default)]
pub struct JoinForm {
    #[serde(default)]
    consent: String,
}

pub async fn join(
    State(state): State<AppState>,
    request: RequestId,
    PagePath(token): PagePath<String>,
    CsrfForm(form): CsrfForm<JoinForm>,
) -> Result<Response, PageError> {
    let decision = match form.consent.as_str() {
        "given" => ConsentDecision::Given,
        "withdrawn" => ConsentDecision::Withdrawn,
        _ => {
            return Err(PageError::BadRequest(
                "Choose whether you may be recorded.".to_owned(),
            ));
        }
    };
    let (session_token, appointment) = guests::redeem(&state, &token, &request)
        .await?
        .ok_or(PageError::NotFound)?;
    let guest = state
        .store
        .guest_session(&token_hash(&session_token), state.clock.now())
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| PageError::Unavailable("the guest session just opened is gone".into()))?;
    consultation_records::record_consent(
        &state,
        &InCall::Guest(guest),
        appointment.as_uuid(),
        decision,
        &request,
    )
    .await?;
    let cookie = guests::guest_cookie(&session_token, state.config.secure_cookies());
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&format!("/guest/appointments/{appointment}/call")),
    )
        .into_response())
}

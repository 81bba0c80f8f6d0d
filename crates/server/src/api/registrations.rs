//! A patient asks a practice to register them; the practice's staff accept or decline.

use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::policy::actions::{DecideRegistration, ListRegistrations, RequestRegistration};
use confide_domain::policy::{Action, NewRegistration};
use confide_domain::{PracticeId, RegistrationId};
use confide_store::Registration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::api::patients::patient_ref;
use crate::auth::{Caller, Session};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::gate::RequestId;

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct RegistrationView {
    pub id: Uuid,
    pub practice_id: Uuid,
    pub practice_name: String,
    /// pending, accepted, declined, withdrawn or ended.
    pub status: String,
    /// Milliseconds since the Unix epoch.
    pub requested_at: i64,
    pub decided_at: Option<i64>,
}

impl From<Registration> for RegistrationView {
    fn from(r: Registration) -> Self {
        RegistrationView {
            id: r.id.as_uuid(),
            practice_id: r.practice.as_uuid(),
            practice_name: r.practice_name,
            status: r.status.as_str().to_owned(),
            requested_at: r.requested_at_ms,
            decided_at: r.decided_at_ms,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    pub practice_id: Uuid,
}

pub async fn request(
    state: &AppState,
    session: &Session,
    practice: Uuid,
    request: &RequestId,
) -> Result<RegistrationView, ApiError> {
    let practice = PracticeId::from_uuid(practice);
    if state.store.practice(practice).await?.is_none() {
        return Err(state
            .not_found(
                session,
                Action::RequestRegistration,
                format!("practice:{practice}"),
                request,
            )
            .await);
    }
    let on = NewRegistration {
        patient: session.account().id,
        practice,
    };
    let grant = state
        .authorize::<RequestRegistration>(session, on, request)
        .await?;
    let id = RegistrationId::from_uuid(Uuid::now_v7());
    Ok(state
        .store
        .request_registration(&grant, id, state.clock.now_ms())
        .await?
        .into())
}

#[utoipa::path(post, path = "/api/v1/registrations", tag = "registrations", request_body = RegistrationRequest,
    responses((status = 201, description = "Requested; the practice decides", body = RegistrationView),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Already registered or asked", body = ErrorBody)))]
pub async fn request_handler(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestId,
    ApiJson(req): ApiJson<RegistrationRequest>,
) -> Result<(StatusCode, axum::Json<RegistrationView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(request(&state, caller.session()?, req.practice_id, &request_id).await?),
    ))
}

pub async fn mine(
    state: &AppState,
    session: &Session,
    request: &RequestId,
) -> Result<Vec<RegistrationView>, ApiError> {
    let on = patient_ref(
        state,
        session,
        session.account().id.as_uuid(),
        Action::ListRegistrations,
        request,
    )
    .await?;
    let grant = state.authorize::<ListRegistrations>(session, on, request).await?;
    Ok(state
        .store
        .patient_registrations(&grant)
        .await?
        .into_iter()
        .map(RegistrationView::from)
        .collect())
}

#[utoipa::path(get, path = "/api/v1/registrations", tag = "registrations",
    responses((status = 200, description = "The caller's own requests and registrations, newest first", body = Vec<RegistrationView>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mine_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
) -> Result<axum::Json<Vec<RegistrationView>>, ApiError> {
    Ok(axum::Json(mine(&state, caller.session()?, &request).await?))
}

pub async fn decide(
    state: &AppState,
    session: &Session,
    id: Uuid,
    accept: bool,
    request: &RequestId,
) -> Result<RegistrationView, ApiError> {
    let id = RegistrationId::from_uuid(id);
    let Some(on) = state.store.registration_ref(id).await? else {
        return Err(state
            .not_found(
                session,
                Action::DecideRegistration,
                format!("registration:{id}"),
                request,
            )
            .await);
    };
    let grant = state
        .authorize::<DecideRegistration>(session, on, request)
        .await?;
    let decided = state
        .store
        .decide_registration(&grant, accept, state.clock.now_ms())
        .await?;
    notify_patient(state, &decided).await;
    Ok(decided.into())
}

/// Tells the patient by email. The decision stands even if the email cannot be sent now.
async fn notify_patient(state: &AppState, r: &Registration) {
    let Ok(Some(patient)) = state.store.account(r.patient).await else {
        return;
    };
    let (subject, body) = if r.status == confide_domain::registration::RegistrationStatus::Accepted {
        (
            format!("You are registered with {}", r.practice_name),
            format!(
                "Hello {},\n\n{} accepted your registration. Its clinicians can now see your record.\n",
                patient.name, r.practice_name
            ),
        )
    } else {
        (
            format!("{} could not register you", r.practice_name),
            format!(
                "Hello {},\n\n{} declined your registration request. You can ask another practice.\n",
                patient.name, r.practice_name
            ),
        )
    };
    if let Err(e) = state.mailer.send(&patient.email, &subject, body).await {
        tracing::error!(error = %e, registration = %r.id, "could not email the registration decision");
    }
}

#[utoipa::path(post, path = "/api/v1/registrations/{id}/accept", tag = "registrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = RegistrationView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Already decided", body = ErrorBody)))]
pub async fn accept_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<RegistrationView>, ApiError> {
    Ok(axum::Json(
        decide(&state, caller.session()?, id, true, &request).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/registrations/{id}/decline", tag = "registrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = RegistrationView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Already decided", body = ErrorBody)))]
pub async fn decline_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<RegistrationView>, ApiError> {
    Ok(axum::Json(
        decide(&state, caller.session()?, id, false, &request).await?,
    ))
}

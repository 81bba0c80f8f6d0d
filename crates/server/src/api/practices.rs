//! Practices: the public directory, creating practices, inviting staff, and the staff's views of their
//! practice's registration queue and patients.

use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::PracticeId;
use confide_domain::audit::{AuditEvent, Outcome};
use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::policy::actions::{ListPracticePatients, ManagePracticeStaff, ViewRegistrationQueue};
use confide_domain::policy::{Action, PracticeRef, Principal, Resource, decide};
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_store::{NewPractice, OneTimeToken, Practice, TokenPurpose};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{self, Caller, Session};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::gate::RequestId;

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct PracticeView {
    pub id: Uuid,
    pub name: String,
    pub address: String,
    pub time_zone: String,
}

impl From<Practice> for PracticeView {
    fn from(p: Practice) -> Self {
        PracticeView {
            id: p.id.as_uuid(),
            name: p.name,
            address: p.address,
            time_zone: p.time_zone,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Part of a practice's name or address; empty lists them all.
    #[serde(default)]
    pub q: String,
}

pub async fn search(state: &AppState, q: &str) -> Result<Vec<PracticeView>, ApiError> {
    if q.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "Search text must be at most 200 characters.",
        ));
    }
    Ok(state
        .store
        .search_practices(q, 50)
        .await?
        .into_iter()
        .map(PracticeView::from)
        .collect())
}

#[utoipa::path(get, path = "/api/v1/practices", tag = "practices", params(SearchQuery),
    responses((status = 200, description = "Up to 50 practices, by name", body = Vec<PracticeView>), (status = 400, body = ErrorBody)))]
pub async fn search_handler(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<axum::Json<Vec<PracticeView>>, ApiError> {
    Ok(axum::Json(search(&state, &query.q).await?))
}

#[utoipa::path(get, path = "/api/v1/practices/{id}", tag = "practices", params(("id" = Uuid, Path)),
    responses((status = 200, body = PracticeView), (status = 404, body = ErrorBody)))]
pub async fn get_handler(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<PracticeView>, ApiError> {
    Ok(axum::Json(get(&state, PracticeId::from_uuid(id)).await?))
}

/// One practice from the public directory.
pub async fn get(state: &AppState, id: PracticeId) -> Result<PracticeView, ApiError> {
    Ok(state.store.practice(id).await?.ok_or(ApiError::NotFound)?.into())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPracticeRequest {
    pub name: String,
    pub address: String,
    /// An IANA time zone, such as Europe/London.
    pub time_zone: String,
}

/// Records a decision that is not about patient data (the platform), and answers 404 on a denial.
async fn gate_platform(state: &AppState, session: &Session, request: &RequestId) -> Result<(), ApiError> {
    let principal: Principal = session.principal();
    let decision = decide(
        &principal,
        Action::ManagePlatform,
        &Resource::Platform,
        &session.context(),
    );
    let event = AuditEvent {
        resource: "platform".to_owned(),
        ..state.event(
            Some(session),
            Action::ManagePlatform.as_str(),
            if decision.is_allowed() {
                Outcome::Allowed
            } else {
                Outcome::Denied
            },
            decision.reason().as_str(),
            request,
        )
    };
    state.record(event).await?;
    if decision.is_allowed() {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

pub async fn create(
    state: &AppState,
    session: &Session,
    req: NewPracticeRequest,
    request: &RequestId,
) -> Result<PracticeView, ApiError> {
    gate_platform(state, session, request).await?;
    let name = PracticeName::parse(&req.name)?;
    let address = Address::parse(&req.address)?;
    let time_zone = TimeZoneName::parse(&req.time_zone)?;
    let practice = state
        .store
        .create_practice(NewPractice {
            id: PracticeId::from_uuid(Uuid::now_v7()),
            name: &name,
            address: &address,
            time_zone: &time_zone,
            at_ms: state.clock.now_ms(),
        })
        .await?;
    Ok(practice.into())
}

#[utoipa::path(post, path = "/api/v1/practices", tag = "practices", request_body = NewPracticeRequest,
    responses((status = 201, body = PracticeView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, description = "Not a platform admin", body = ErrorBody)))]
pub async fn create_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiJson(req): ApiJson<NewPracticeRequest>,
) -> Result<(StatusCode, axum::Json<PracticeView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(create(&state, caller.session()?, req, &request).await?),
    ))
}

/// The practice, if it exists; an unknown one is recorded and answered as a denial would be.
async fn practice_ref(
    state: &AppState,
    session: &Session,
    id: Uuid,
    action: Action,
    request: &RequestId,
) -> Result<PracticeRef, ApiError> {
    let practice = PracticeId::from_uuid(id);
    match state.store.practice(practice).await? {
        Some(_) => Ok(PracticeRef { practice }),
        None => Err(state
            .not_found(session, action, format!("practice:{practice}"), request)
            .await),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub email: String,
    pub name: String,
    /// `clinician` or `practice_admin`.
    pub role: String,
}

const INVITE_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

pub async fn invite(
    state: &AppState,
    session: &Session,
    practice: Uuid,
    req: InviteRequest,
    request: &RequestId,
) -> Result<(), ApiError> {
    let on = practice_ref(state, session, practice, Action::ManagePracticeStaff, request).await?;
    let grant = state
        .authorize::<ManagePracticeStaff>(session, on, request)
        .await?;
    let email = Email::parse(&req.email)?;
    let name = PersonName::parse(&req.name)?;
    let role: Role = req
        .role
        .parse()
        .map_err(|e: confide_domain::identity::UnknownRole| {
            ApiError::bad_request("invalid_role", e.to_string())
        })?;
    if !role.belongs_to_practice() {
        return Err(ApiError::bad_request(
            "invalid_role",
            "Invite a clinician or a practice_admin.",
        ));
    }
    if state.store.account_by_email(&email).await?.is_some() {
        return Err(ApiError::Conflict(confide_store::Conflict::EmailTaken));
    }
    let (token, hash) = auth::new_token();
    let now = state.clock.now_ms();
    state
        .store
        .create_token(&OneTimeToken {
            token_hash: hash,
            purpose: TokenPurpose::StaffInvite,
            user: None,
            email: Some(email.as_str().to_owned()),
            name: Some(name.as_str().to_owned()),
            role: Some(role),
            practice: Some(grant.practice()),
            created_at_ms: now,
            expires_at_ms: now + INVITE_TTL_MS,
        })
        .await?;
    let practice_name = state
        .store
        .practice(grant.practice())
        .await?
        .map(|p| p.name)
        .unwrap_or_default();
    let link = format!(
        "{}/invite?token={token}",
        state.config.public_url.trim_end_matches('/')
    );
    let body = format!(
        "Hello {name},\n\n{} invited you to join {practice_name} on Confide as {}. Open this link within a week \
         to choose a password:\n\n{link}\n\nAt your first login you will set up an authenticator app.\n",
        session.account().name,
        role.as_str().replace('_', " "),
    );
    state
        .mailer
        .send(email.as_str(), "Your invitation to Confide", body)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

#[utoipa::path(post, path = "/api/v1/practices/{id}/invites", tag = "practices", params(("id" = Uuid, Path)),
    request_body = InviteRequest,
    responses((status = 202, description = "Invitation emailed"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn invite_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<StatusCode, ApiError> {
    invite(&state, caller.session()?, id, req, &request).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct QueueEntryView {
    pub registration_id: Uuid,
    pub patient_id: Uuid,
    pub name: String,
    pub email: String,
    pub date_of_birth: String,
    /// Milliseconds since the Unix epoch.
    pub requested_at: i64,
}

pub async fn queue(
    state: &AppState,
    session: &Session,
    practice: Uuid,
    request: &RequestId,
) -> Result<Vec<QueueEntryView>, ApiError> {
    let on = practice_ref(state, session, practice, Action::ViewRegistrationQueue, request).await?;
    let grant = state
        .authorize::<ViewRegistrationQueue>(session, on, request)
        .await?;
    Ok(state
        .store
        .registration_queue(&grant)
        .await?
        .into_iter()
        .map(|e| QueueEntryView {
            registration_id: e.registration.as_uuid(),
            patient_id: e.patient.as_uuid(),
            name: e.name,
            email: e.email,
            date_of_birth: e.date_of_birth,
            requested_at: e.requested_at_ms,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/practices/{id}/registration-requests", tag = "practices", params(("id" = Uuid, Path)),
    responses((status = 200, description = "Pending requests, oldest first", body = Vec<QueueEntryView>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn queue_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Vec<QueueEntryView>>, ApiError> {
    Ok(axum::Json(queue(&state, caller.session()?, id, &request).await?))
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct PatientSummaryView {
    pub id: Uuid,
    pub name: String,
    pub date_of_birth: String,
}

pub async fn patients(
    state: &AppState,
    session: &Session,
    practice: Uuid,
    request: &RequestId,
) -> Result<Vec<PatientSummaryView>, ApiError> {
    let on = practice_ref(state, session, practice, Action::ListPracticePatients, request).await?;
    let grant = state
        .authorize::<ListPracticePatients>(session, on, request)
        .await?;
    Ok(state
        .store
        .practice_patients(&grant)
        .await?
        .into_iter()
        .map(|p| PatientSummaryView {
            id: p.id.as_uuid(),
            name: p.name,
            date_of_birth: p.date_of_birth,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/practices/{id}/patients", tag = "practices", params(("id" = Uuid, Path)),
    responses((status = 200, description = "Patients registered at the practice", body = Vec<PatientSummaryView>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn patients_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Vec<PatientSummaryView>>, ApiError> {
    Ok(axum::Json(
        patients(&state, caller.session()?, id, &request).await?,
    ))
}

//! A patient's own data: profile, clinical record, and who accessed it.

use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::UserId;
use confide_domain::ids::NoteId;
use confide_domain::policy::actions::{ReadAccessLog, ReadProfile, ReadRecord, WriteRecord};
use confide_domain::policy::{Action, Grant, GuardedAction, PatientRef};
use confide_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Session};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::gate::RequestId;

/// The patient, if one exists with this id; an unknown id is recorded and answered as a denial would be.
pub async fn patient_ref(
    state: &AppState,
    session: &Session,
    id: Uuid,
    action: Action,
    request: &RequestId,
) -> Result<PatientRef, ApiError> {
    patient_ref_in(&state.store, state, session, id, action, request).await
}

/// [`patient_ref`], read through `store` (a snapshot, say).
async fn patient_ref_in(
    store: &Store,
    state: &AppState,
    session: &Session,
    id: Uuid,
    action: Action,
    request: &RequestId,
) -> Result<PatientRef, ApiError> {
    let patient = UserId::from_uuid(id);
    let found = store.patient_ref(patient).await?;
    state
        .found(found, session, action, || format!("patient:{patient}"), request)
        .await
}

/// Reads the patient's data that `A` allows: the gate decides on the same state of the database as `read`
/// reads from, and what was read is answered once the decision is audited.
async fn read_patient<A: GuardedAction<On = PatientRef>, T>(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
    read: impl AsyncFnOnce(&Store, Grant<A>) -> Result<T, StoreError>,
) -> Result<T, ApiError> {
    let store = state.store.snapshot()?;
    let on = patient_ref_in(&store, state, session, id, A::ACTION, request).await?;
    state
        .read_authorized::<A, T>(session, on, request, async move |grant| {
            let read = read(&store, grant).await;
            drop(store);
            Ok(read?)
        })
        .await
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ProfileView {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub date_of_birth: String,
    pub registered_practice_id: Option<Uuid>,
    pub registered_practice_name: Option<String>,
}

pub async fn profile(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<ProfileView, ApiError> {
    let p = read_patient::<ReadProfile, _>(state, session, id, request, async |store, grant| {
        store.patient_profile(&grant).await
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(ProfileView {
        id: p.id.as_uuid(),
        name: p.name,
        email: p.email,
        date_of_birth: p.date_of_birth,
        registered_practice_id: p.registered_at.map(|x| x.as_uuid()),
        registered_practice_name: p.registered_practice_name,
    })
}

#[utoipa::path(get, path = "/api/v1/patients/{id}", tag = "patients", params(("id" = Uuid, Path)),
    responses((status = 200, body = ProfileView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn profile_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<ProfileView>, ApiError> {
    Ok(axum::Json(
        profile(&state, caller.session()?, id, &request).await?,
    ))
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct NoteView {
    pub id: Uuid,
    pub author_id: Uuid,
    pub author_name: String,
    pub body: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl From<confide_store::Note> for NoteView {
    fn from(n: confide_store::Note) -> Self {
        NoteView {
            id: n.id.as_uuid(),
            author_id: n.author.as_uuid(),
            author_name: n.author_name,
            body: n.body,
            created_at: n.created_at_ms,
        }
    }
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct RecordView {
    pub patient_id: Uuid,
    pub notes: Vec<NoteView>,
}

pub async fn record(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<RecordView, ApiError> {
    let notes = read_patient::<ReadRecord, _>(state, session, id, request, async |store, grant| {
        store.patient_notes(&grant).await
    })
    .await?;
    Ok(RecordView {
        patient_id: id,
        notes: notes.into_iter().map(NoteView::from).collect(),
    })
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/record", tag = "patients", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The clinical record", body = RecordView),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn record_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<RecordView>, ApiError> {
    Ok(axum::Json(record(&state, caller.session()?, id, &request).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    pub body: String,
}

pub const NOTE_MAX_CHARS: usize = 20_000;

pub async fn add_note(
    state: &AppState,
    session: &Session,
    id: Uuid,
    body: &str,
    request: &RequestId,
) -> Result<NoteView, ApiError> {
    let body = body.trim();
    if body.is_empty() || body.chars().count() > NOTE_MAX_CHARS {
        return Err(ApiError::bad_request(
            "invalid_note",
            format!("A note must be 1 to {NOTE_MAX_CHARS} characters."),
        ));
    }
    let on = patient_ref(state, session, id, Action::WriteRecord, request).await?;
    let grant = state.authorize::<WriteRecord>(session, on, request).await?;
    let note = state
        .store
        .add_note(
            &grant,
            NoteId::from_uuid(Uuid::now_v7()),
            body,
            state.clock.now_ms(),
        )
        .await?;
    Ok(note.into())
}

#[utoipa::path(post, path = "/api/v1/patients/{id}/notes", tag = "patients", params(("id" = Uuid, Path)), request_body = NewNote,
    responses((status = 201, body = NoteView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn add_note_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<NewNote>,
) -> Result<(StatusCode, axum::Json<NoteView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(add_note(&state, caller.session()?, id, &req.body, &request).await?),
    ))
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct AccessView {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor_id: Option<Uuid>,
    pub actor_name: Option<String>,
    pub actor_role: Option<String>,
    /// What they did, e.g. `patient.record.read`.
    pub action: String,
    /// `allowed`, or `denied` for an attempt the gate refused.
    pub outcome: String,
    /// Why: the gate's reason, or for `recording.break_glass.opened` the clinician's own words.
    pub reason: String,
}

pub async fn access_log(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<Vec<AccessView>, ApiError> {
    let on = patient_ref(state, session, id, Action::ReadAccessLog, request).await?;
    let grant = state.authorize::<ReadAccessLog>(session, on, request).await?;
    Ok(state
        .store
        .access_log(&grant, 500)
        .await?
        .into_iter()
        .map(|e| AccessView {
            at: e.at_ms,
            actor_id: e.actor.map(|a| a.as_uuid()),
            actor_name: e.actor_name,
            actor_role: e.actor_role.map(|r| r.as_str().to_owned()),
            action: e.action,
            outcome: e.outcome.as_str().to_owned(),
            reason: e.reason,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/patients/{id}/access-log", tag = "patients", params(("id" = Uuid, Path)),
    responses((status = 200, description = "Who else accessed this patient's data, newest first (at most 500)", body = Vec<AccessView>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn access_log_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Vec<AccessView>>, ApiError> {
    Ok(axum::Json(
        access_log(&state, caller.session()?, id, &request).await?,
    ))
}

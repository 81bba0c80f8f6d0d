//! Signaling for a consultation's video call: join with an SDP offer, switch between audio only and
//! video, leave. Only the consultation's patient and clinician, and the guests its clinician invited, get
//! past the gate; for everyone else, and for an appointment whose consultation has not started, the
//! answer is the same 404. A guest may not switch the call's mode.

use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::audit::{AuditEvent, Outcome};
use confide_domain::consultation::{ConsentDecision, ConsultationError, ConsultationMode};
use confide_domain::policy::actions::JoinConsultation;
use confide_domain::policy::{Actor, CallGrant, ConsultationGrant, GuardedAction};
use confide_store::CallFacts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::api::guests::{InCall, call_grant, guest_event};
use crate::calls::CallError;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::gate::RequestId;

/// What the caller's browser sends.
#[derive(Deserialize, Serialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallMode {
    Video,
    AudioOnly,
}

impl From<CallMode> for ConsultationMode {
    fn from(mode: CallMode) -> Self {
        match mode {
            CallMode::Video => ConsultationMode::Video,
            CallMode::AudioOnly => ConsultationMode::AudioOnly,
        }
    }
}

#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The browser's SDP offer, with its ICE candidates gathered: an audio line and, for video, a video
    /// line, each send-and-receive (the other side's media comes back on them).
    pub sdp: String,
    /// The mode the browser is in: `video` or `audio_only`.
    pub mode: CallMode,
    /// The caller's answer to being recorded, asked before joining: `given` or `withdrawn`. Absent
    /// keeps the decision on record; with none on record, the caller is not recorded.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "given")]
    pub consent: Option<ConsentDecision>,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct CallAnswer {
    /// The SFU's SDP answer.
    pub sdp: String,
}

/// The gate's grant to be in the call of the appointment's consultation. An appointment that does not
/// exist, or whose consultation has not started, is recorded and answered as a denial is.
async fn join_grant(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    request: &RequestId,
) -> Result<CallGrant<JoinConsultation>, ApiError> {
    call_grant::<JoinConsultation>(state, who, id, request).await
}

/// The consultation's call as someone in it may see it, for the call page: the gate is asked as for
/// joining, so nobody else gets this far.
pub async fn facts(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    request: &RequestId,
) -> Result<CallFacts, ApiError> {
    let grant = join_grant(state, who, id, request).await?;
    state
        .store
        .consultation_call(&grant)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Records what the call did, beside the gate's record of it being allowed.
async fn record_step(
    state: &AppState,
    who: &InCall,
    grant: &CallGrant<JoinConsultation>,
    action: &str,
    detail: &str,
    request: &RequestId,
) -> Result<(), ApiError> {
    let c = grant.consultation();
    let event = match grant.actor() {
        Actor::Guest(guest) => guest_event(state, guest, action, Outcome::Allowed, detail, c, request),
        Actor::User(_) => AuditEvent {
            resource: format!("consultation:{}", c.id),
            subject_patient: Some(c.patient.patient),
            ..state.event(who.session(), action, Outcome::Allowed, detail, request)
        },
    };
    state.record(event).await?;
    Ok(())
}

/// Joining and switching mode are one offer/answer exchange; they differ in what the call does with it.
#[derive(Clone, Copy)]
enum Step {
    Join,
    SwitchMode,
}

async fn negotiate(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    req: CallRequest,
    request: &RequestId,
    step: Step,
) -> Result<CallAnswer, ApiError> {
    let grant = join_grant(state, who, id, request).await?;
    // The domain's rule: the call's mode is the patient's and the clinician's to choose.
    if let (Step::SwitchMode, Actor::Guest(_)) = (step, grant.actor()) {
        return Err(ApiError::InvalidState(
            ConsultationError::GuestMayNotSwitch.to_string(),
        ));
    }
    if let Some(decision) = req.consent {
        crate::api::consultation_records::record_consent(state, who, id, decision, request).await?;
    }
    let mode = ConsultationMode::from(req.mode);
    let now_ms = state.clock.now_ms();
    let (answer, action) = match step {
        Step::Join => (
            join_call(state, &grant, req.sdp, mode, now_ms, request).await?,
            "consultation.joined",
        ),
        Step::SwitchMode => (
            state
                .calls
                .switch_mode(&state.store, &grant, req.sdp, mode, now_ms)
                .await?,
            "consultation.mode_switched",
        ),
    };
    record_step(state, who, &grant, action, mode.as_str(), request).await?;
    Ok(CallAnswer { sdp: answer.sdp })
}

/// Joins the call on the gate's grant. A guest revoked after the gate let them in is refused here, and
/// that refusal is audited too, so the log does not end at the gate's yes for a join that never happened.
pub async fn join_call(
    state: &AppState,
    grant: &CallGrant<JoinConsultation>,
    offer: String,
    mode: ConsultationMode,
    at_ms: i64,
    request: &RequestId,
) -> Result<crate::calls::Answer, ApiError> {
    let joined = state.calls.join(&state.store, grant, offer, mode, at_ms).await;
    if let (Err(CallError::GuestRevoked), Actor::Guest(guest)) = (&joined, grant.actor()) {
        let event = guest_event(
            state,
            guest,
            JoinConsultation::ACTION.as_str(),
            Outcome::Denied,
            "guest_revoked",
            grant.consultation(),
            request,
        );
        state.record(event).await?;
    }
    Ok(joined?)
}

pub async fn join(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    req: CallRequest,
    request: &RequestId,
) -> Result<CallAnswer, ApiError> {
    negotiate(state, who, id, req, request, Step::Join).await
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/call", tag = "calls", params(("id" = Uuid, Path)),
    request_body = CallRequest,
    responses((status = 200, description = "In the call; joining again replaces the caller's connection", body = CallAnswer),
              (status = 400, description = "Not a usable offer", body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, description = "Not the caller's consultation, or not started", body = ErrorBody),
              (status = 409, description = "The consultation has ended", body = ErrorBody)))]
pub async fn join_handler(
    State(state): State<AppState>,
    who: InCall,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CallRequest>,
) -> Result<axum::Json<CallAnswer>, ApiError> {
    Ok(axum::Json(join(&state, &who, id, req, &request).await?))
}

pub async fn switch_mode(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    req: CallRequest,
    request: &RequestId,
) -> Result<CallAnswer, ApiError> {
    negotiate(state, who, id, req, request, Step::SwitchMode).await
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/call/mode", tag = "calls", params(("id" = Uuid, Path)),
    request_body = CallRequest,
    responses((status = 200, description = "Renegotiated; a change of mode starts a new recording segment", body = CallAnswer),
              (status = 400, description = "Not a usable offer", body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "Not in the call, the consultation has ended, or the caller is a guest (guests may not switch the mode)", body = ErrorBody)))]
pub async fn mode_handler(
    State(state): State<AppState>,
    who: InCall,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CallRequest>,
) -> Result<axum::Json<CallAnswer>, ApiError> {
    Ok(axum::Json(switch_mode(&state, &who, id, req, &request).await?))
}

pub async fn leave(state: &AppState, who: &InCall, id: Uuid, request: &RequestId) -> Result<(), ApiError> {
    let grant = join_grant(state, who, id, request).await?;
    state.calls.leave(&grant).await?;
    record_step(state, who, &grant, "consultation.left", "left", request).await
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/call/leave", tag = "calls", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Out of the call (also when not in it)"), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn leave_handler(
    State(state): State<AppState>,
    who: InCall,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    leave(&state, &who, id, &request).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! Recordings after the call: the caller's list, one recording, its media with HTTP ranges (the
//! recording's own copy, with everyone's tracks, and each participant's, which a browser plays whole),
//! playback tickets, break-glass, and the practice's retention and replay settings. Everything goes through the
//! gate; a recording the caller may not see answers 404, exactly like one that does not exist.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confide_domain::audit::{AuditEvent, Outcome};
use confide_domain::identity::Role;
use confide_domain::policy::actions::{
    BreakGlassRecording, ListClinicianRecordings, ListRecordings, ManageReplay, ManageRetention,
    PlayRecording, ReadRecording,
};
use confide_domain::policy::{Action, Grant, PracticeRef, RecordingRef};
use confide_domain::{PracticeId, RecordingId};
use confide_store::{RecordingCopy, RecordingStatus, RecordingSummary};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Session};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::gate::RequestId;
use crate::recordings::{BREAK_GLASS_MS, OpenCopy, RecordingError};

/// The shortest break-glass reason accepted: a sentence, not a shrug.
pub const MIN_REASON_CHARS: usize = 20;
const MAX_REASON_CHARS: usize = 1000;

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ParticipantView {
    pub id: Uuid,
    pub name: String,
    /// `patient` or `clinician`.
    pub role: &'static str,
    /// Where this participant's own copy is (their audio and video only), once it is ready; absent for
    /// one who never joined the call.
    pub media_url: Option<String>,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct RecordingView {
    pub id: Uuid,
    pub consultation_id: Uuid,
    pub appointment_id: Uuid,
    pub practice_id: Uuid,
    /// Milliseconds since the Unix epoch.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// Of the playback copy, once it is made.
    pub duration_ms: Option<i64>,
    /// `recording`, `processing`, `ready`, `failed` or `expired`.
    pub status: &'static str,
    pub participants: Vec<ParticipantView>,
    /// The modes the call was in: `video`, `audio_only`.
    pub modes: Vec<&'static str>,
    /// Where the recording's own copy is, once it is ready: every participant's tracks in one file, for
    /// export and desktop players (a browser plays only its first audio track).
    pub media_url: Option<String>,
}

impl From<RecordingSummary> for RecordingView {
    fn from(r: RecordingSummary) -> Self {
        let modes = r.modes().into_iter().map(|m| m.as_str()).collect();
        let ready = r.status == RecordingStatus::Ready;
        let media = |participant: confide_domain::UserId| {
            let copy = r.copies.iter().find(|c| c.participant == participant.as_uuid());
            copy.filter(|_| ready)
                .map(|c| participant_media_path(r.id, c.participant))
        };
        RecordingView {
            id: r.id.as_uuid(),
            consultation_id: r.consultation.as_uuid(),
            appointment_id: r.appointment.as_uuid(),
            practice_id: r.practice.as_uuid(),
            started_at: r.started_at_ms,
            ended_at: r.ended_at_ms,
            duration_ms: r.duration_ms,
            status: r.status.as_str(),
            participants: vec![
                ParticipantView {
                    id: r.patient.as_uuid(),
                    name: r.patient_name,
                    role: "patient",
                    media_url: media(r.patient),
                },
                ParticipantView {
                    id: r.clinician.as_uuid(),
                    name: r.clinician_name,
                    role: "clinician",
                    media_url: media(r.clinician),
                },
            ],
            modes,
            media_url: ready.then(|| media_path(r.id)),
        }
    }
}

pub fn media_path(id: RecordingId) -> String {
    format!("/api/v1/recordings/{id}/media")
}

pub fn participant_media_path(id: RecordingId, participant: Uuid) -> String {
    format!("/api/v1/recordings/{id}/media/{participant}")
}

/// The caller's recordings: a patient's own, a clinician's of the consultations they ran.
pub async fn list(
    state: &AppState,
    session: &Session,
    request: &RequestId,
) -> Result<Vec<RecordingView>, ApiError> {
    let me = session.account().id;
    let found = if session.account().role == Role::Clinician {
        let on = state.store.clinician_ref(me).await?;
        let on = state
            .found(
                on,
                session,
                Action::ListClinicianRecordings,
                || format!("clinician:{me}"),
                request,
            )
            .await?;
        let grant = state
            .authorize::<ListClinicianRecordings>(session, on, request)
            .await?;
        state.store.clinician_recording_list(&grant).await?
    } else {
        let on = state.store.patient_ref(me).await?;
        let on = state
            .found(
                on,
                session,
                Action::ListRecordings,
                || format!("patient:{me}"),
                request,
            )
            .await?;
        let grant = state.authorize::<ListRecordings>(session, on, request).await?;
        state.store.patient_recording_list(&grant).await?
    };
    Ok(found.into_iter().map(RecordingView::from).collect())
}

#[utoipa::path(get, path = "/api/v1/recordings", tag = "recordings",
    responses((status = 200, description = "The caller's recordings, newest first: a patient's own, a clinician's of \
        the consultations they ran", body = Vec<RecordingView>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
) -> Result<axum::Json<Vec<RecordingView>>, ApiError> {
    Ok(axum::Json(list(&state, caller.session()?, &request).await?))
}

/// The recording, if it exists; an unknown id is recorded and answered as a denial would be.
pub async fn recording_ref(
    state: &AppState,
    session: &Session,
    id: Uuid,
    action: Action,
    request: &RequestId,
) -> Result<RecordingRef, ApiError> {
    let recording = RecordingId::from_uuid(id);
    let found = state
        .store
        .recording_ref(recording, session.account().id, state.clock.now_ms())
        .await?;
    state
        .found(
            found,
            session,
            action,
            || format!("recording:{recording}"),
            request,
        )
        .await
}

pub async fn get(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<RecordingView, ApiError> {
    let on = recording_ref(state, session, id, Action::ReadRecording, request).await?;
    let grant = state.authorize::<ReadRecording>(session, on, request).await?;
    let found = state.store.recording(&grant).await?.ok_or(ApiError::NotFound)?;
    Ok(found.into())
}

#[utoipa::path(get, path = "/api/v1/recordings/{id}", tag = "recordings", params(("id" = Uuid, Path)),
    responses((status = 200, body = RecordingView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<RecordingView>, ApiError> {
    Ok(axum::Json(get(&state, caller.session()?, id, &request).await?))
}

/// What a grant to play a recording can open: its keys and copies. Refused while replay is off (for the
/// practice or everywhere) and while there is no copy.
struct Playable {
    wrapped: String,
    sealed: String,
    object: String,
    len: i64,
    copies: Vec<RecordingCopy>,
}

async fn playable(state: &AppState, grant: &Grant<PlayRecording>) -> Result<Playable, ApiError> {
    let facts = state
        .store
        .recording_playback(grant)
        .await?
        .ok_or(ApiError::NotFound)?;
    // An erased recording has nothing left to play: it is gone, as if it never had media.
    if facts.status == RecordingStatus::Expired {
        return Err(ApiError::NotFound);
    }
    if !state.config.replay_enabled || !facts.practice_replay_enabled {
        return Err(ApiError::ReplayDisabled);
    }
    let (Some(wrapped), Some(sealed), Some(object), Some(len)) =
        (facts.wrapped_key, facts.playback_key, facts.object, facts.len)
    else {
        return Err(ApiError::RecordingNotPlayable(facts.status.as_str()));
    };
    if facts.status != RecordingStatus::Ready {
        return Err(ApiError::RecordingNotPlayable(facts.status.as_str()));
    }
    Ok(Playable {
        wrapped,
        sealed,
        object,
        len,
        copies: facts.copies,
    })
}

/// Opens the recording's own copy, or `participant`'s; a participant without a copy is not found.
fn open(
    state: &AppState,
    grant: &Grant<PlayRecording>,
    playable: &Playable,
    participant: Option<Uuid>,
) -> Result<OpenCopy, ApiError> {
    let (object, len) = match participant {
        None => (&playable.object, playable.len),
        Some(participant) => playable
            .copies
            .iter()
            .find(|c| c.participant == participant)
            .map(|c| (&c.object, c.len))
            .ok_or(ApiError::NotFound)?,
    };
    state
        .recordings
        .open_copy(
            grant.recording().id,
            &playable.wrapped,
            &playable.sealed,
            object,
            u64::try_from(len).map_err(|_| ApiError::Unavailable("stored length".into()))?,
        )
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// The gate's grant to play the recording: asked, and audited, once per play session.
async fn play_grant(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<Grant<PlayRecording>, ApiError> {
    let on = recording_ref(state, session, id, Action::PlayRecording, request).await?;
    state.authorize::<PlayRecording>(session, on, request).await
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct PlaybackTicket {
    /// The recording's own copy (everyone's tracks) with the ticket: range requests to it, and to the
    /// participants' URLs, are one play session, audited once.
    pub media_url: String,
    /// Each participant's own copy with the ticket, to play side by side: a browser plays only the first
    /// audio track of a file.
    pub participants: Vec<ParticipantMedia>,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ParticipantMedia {
    pub participant_id: Uuid,
    /// Their audio and video, with the ticket.
    pub media_url: String,
    /// Where this copy's 0 is, in ms after the start of the recording's own copy: play it this much later
    /// to keep the participants in step.
    pub offset_ms: i64,
    pub duration_ms: i64,
}

/// Opens a play session: the gate is asked and the access audited here, once; the ticket then carries
/// the grant to the media's range requests.
pub async fn playback(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<PlaybackTicket, ApiError> {
    let grant = play_grant(state, session, id, request).await?;
    let playable = playable(state, &grant).await?;
    open(state, &grant, &playable, None)?;
    let now = state.clock.now_ms();
    // A colleague's ticket lasts no longer than the glass they broke.
    let until = (grant.reason() == confide_domain::policy::Reason::BreakGlass).then(|| now + BREAK_GLASS_MS);
    let recording = grant.recording().id;
    let (token, expires_at) = state.recordings.issue_ticket(grant, now, until);
    let participants = playable
        .copies
        .iter()
        .map(|c| ParticipantMedia {
            participant_id: c.participant,
            media_url: format!(
                "{}?ticket={token}",
                participant_media_path(recording, c.participant)
            ),
            offset_ms: c.offset_ms,
            duration_ms: c.duration_ms,
        })
        .collect();
    Ok(PlaybackTicket {
        media_url: format!("{}?ticket={token}", media_path(recording)),
        participants,
        expires_at,
    })
}

#[utoipa::path(post, path = "/api/v1/recordings/{id}/playback", tag = "recordings", params(("id" = Uuid, Path)),
    responses((status = 200, description = "A play session: fetch `media_url` with ranges", body = PlaybackTicket),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Replay is turned off, or the recording has no playback copy (yet)", body = ErrorBody)))]
pub async fn playback_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<PlaybackTicket>, ApiError> {
    Ok(axum::Json(
        playback(&state, caller.session()?, id, &request).await?,
    ))
}

#[derive(Deserialize, IntoParams, Default)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct MediaQuery {
    /// A ticket from `POST /api/v1/recordings/{id}/playback`; without one, each request is its own
    /// audited access.
    pub ticket: Option<String>,
}

/// What a `Range` header asks for, against a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// Parses a single byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`); several ranges are answered with
/// the whole file, anything else that is not a byte range we can serve is unsatisfiable.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeAsk {
    let Some(value) = header else {
        return RangeAsk::Whole;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Unsatisfiable;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Unsatisfiable;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => match number(last) {
            Some(n) if n > 0 && len > 0 => (len.saturating_sub(n), len - 1),
            _ => return RangeAsk::Unsatisfiable,
        },
        (false, true) => match number(first) {
            Some(s) if len > 0 => (s, len - 1),
            _ => return RangeAsk::Unsatisfiable,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(s), Some(e)) if s <= e && len > 0 => (s, e.min(len - 1)),
            _ => return RangeAsk::Unsatisfiable,
        },
        (true, true) => return RangeAsk::Unsatisfiable,
    };
    if start >= len {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part { start, end }
}

/// Serves the recording's own copy, or `participant`'s, with ranges.
pub async fn media(
    state: &AppState,
    session: &Session,
    id: Uuid,
    participant: Option<Uuid>,
    ticket: Option<&str>,
    headers: &HeaderMap,
    request: &RequestId,
) -> Result<Response, ApiError> {
    let recording = RecordingId::from_uuid(id);
    let ticketed = ticket.and_then(|t| {
        state
            .recordings
            .ticket(t, session.account().id, recording, state.clock.now_ms())
    });
    let grant = match ticketed {
        Some(grant) => grant,
        None => Arc::new(play_grant(state, session, id, request).await?),
    };
    let copy = open(state, &grant, &playable(state, &grant).await?, participant)?;
    let len = copy.len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, len) {
        RangeAsk::Whole => (StatusCode::OK, 0, len),
        RangeAsk::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        RangeAsk::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [
                    (header::CONTENT_RANGE, format!("bytes */{len}")),
                    (header::ACCEPT_RANGES, "bytes".to_owned()),
                ],
            )
                .into_response());
        }
    };
    // The first block is read before answering, so a copy that does not open is an error, not a
    // truncated 200.
    let first_end = (start + crate::recordings::BLOCK).min(end);
    let head = copy
        .read(start..first_end)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let rest = Arc::new(copy).stream(first_end..end);
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, RecordingError>(bytes::Bytes::from(head)) }),
        rest,
    );
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{len}", end - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).map_err(|e| ApiError::Unavailable(e.to_string()))?,
        );
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/recordings/{id}/media", tag = "recordings",
    params(("id" = Uuid, Path), MediaQuery),
    responses((status = 200, description = "The recording's own WebM (VP8 + Opus): every participant's audio and \
        video as tracks of their own, for export and desktop players", content_type = "video/webm"),
              (status = 206, description = "The range asked for, with `Content-Range`", content_type = "video/webm"),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Replay is turned off, or the recording has no playback copy (yet)", body = ErrorBody),
              (status = 416, description = "The range is outside the file or not a byte range")))]
pub async fn media_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<MediaQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    media(
        &state,
        caller.session()?,
        id,
        None,
        query.ticket.as_deref(),
        &headers,
        &request,
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/recordings/{id}/media/{participant}", tag = "recordings",
    params(("id" = Uuid, Path), ("participant" = Uuid, Path, description = "A participant's id, as \
        `participants[].id` gives it"), MediaQuery),
    responses((status = 200, description = "The participant's own WebM (VP8 + Opus): their audio and video only, \
        which a browser plays whole", content_type = "video/webm"),
              (status = 206, description = "The range asked for, with `Content-Range`", content_type = "video/webm"),
              (status = 401, body = ErrorBody),
              (status = 404, description = "No such recording for the caller, or no copy of this participant", body = ErrorBody),
              (status = 409, description = "Replay is turned off, or the recording has no playback copy (yet)", body = ErrorBody),
              (status = 416, description = "The range is outside the file or not a byte range")))]
pub async fn participant_media_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath((id, participant)): ApiPath<(Uuid, Uuid)>,
    ApiQuery(query): ApiQuery<MediaQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    media(
        &state,
        caller.session()?,
        id,
        Some(participant),
        query.ticket.as_deref(),
        &headers,
        &request,
    )
    .await
}

#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    /// Why the recording must be opened now, in the clinician's words (at least 20 characters); the
    /// patient sees it.
    pub reason: String,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct BreakGlassGrant {
    pub recording_id: Uuid,
    /// Until when (ms since the Unix epoch) the recording may be opened.
    pub expires_at: i64,
}

/// A clinician of the practice who was not in the call opens the recording for an hour, with a reason
/// that is audited and shown to the patient.
pub async fn break_glass(
    state: &AppState,
    session: &Session,
    id: Uuid,
    reason: &str,
    request: &RequestId,
) -> Result<BreakGlassGrant, ApiError> {
    let on = recording_ref(state, session, id, Action::BreakGlassRecording, request).await?;
    let grant = state
        .authorize::<BreakGlassRecording>(session, on, request)
        .await?;
    let reason = reason.trim();
    let chars = reason.chars().count();
    if !(MIN_REASON_CHARS..=MAX_REASON_CHARS).contains(&chars) {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("give the reason in {MIN_REASON_CHARS} to {MAX_REASON_CHARS} characters"),
        ));
    }
    let now = state.clock.now_ms();
    let expires_at = now + BREAK_GLASS_MS;
    state
        .store
        .open_break_glass(&grant, &Uuid::now_v7().to_string(), reason, now, expires_at)
        .await?;
    let event = AuditEvent {
        resource: format!("recording:{}", on.id),
        subject_patient: Some(on.patient.patient),
        ..state.event(
            Some(session),
            "recording.break_glass.opened",
            Outcome::Allowed,
            reason,
            request,
        )
    };
    state.record(event).await?;
    Ok(BreakGlassGrant {
        recording_id: id,
        expires_at,
    })
}

#[utoipa::path(post, path = "/api/v1/recordings/{id}/break-glass", tag = "recordings", params(("id" = Uuid, Path)),
    request_body = BreakGlassRequest,
    responses((status = 200, description = "The recording may be opened until `expires_at`", body = BreakGlassGrant),
              (status = 400, description = "No reason, or too short", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn break_glass_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BreakGlassRequest>,
) -> Result<axum::Json<BreakGlassGrant>, ApiError> {
    Ok(axum::Json(
        break_glass(&state, caller.session()?, id, &body.reason, &request).await?,
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
    let found = state
        .store
        .practice(practice)
        .await?
        .map(|_| PracticeRef { practice });
    state
        .found(found, session, action, || format!("practice:{practice}"), request)
        .await
}

#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Days a recording is kept after its consultation started; `null` keeps them until a limit is set.
    pub days: Option<i64>,
}

pub async fn set_retention(
    state: &AppState,
    session: &Session,
    id: Uuid,
    days: Option<i64>,
    request: &RequestId,
) -> Result<Retention, ApiError> {
    let on = practice_ref(state, session, id, Action::ManageRetention, request).await?;
    let grant: Grant<ManageRetention> = state.authorize(session, on, request).await?;
    if days.is_some_and(|d| !(1..=36_500).contains(&d)) {
        return Err(ApiError::bad_request(
            "invalid_retention",
            "retention is between 1 and 36500 days",
        ));
    }
    state.store.set_recording_retention(&grant, days).await?;
    Ok(Retention { days })
}

#[utoipa::path(put, path = "/api/v1/practices/{id}/recording-retention", tag = "recordings", params(("id" = Uuid, Path)),
    request_body = Retention,
    responses((status = 200, body = Retention), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn retention_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Retention>,
) -> Result<axum::Json<Retention>, ApiError> {
    Ok(axum::Json(
        set_retention(&state, caller.session()?, id, body.days, &request).await?,
    ))
}

#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Whether the practice's recordings may be played back. Calls and recording go on either way.
    pub enabled: bool,
}

pub async fn set_replay(
    state: &AppState,
    session: &Session,
    id: Uuid,
    enabled: bool,
    request: &RequestId,
) -> Result<Replay, ApiError> {
    let on = practice_ref(state, session, id, Action::ManageReplay, request).await?;
    let grant: Grant<ManageReplay> = state.authorize(session, on, request).await?;
    state.store.set_replay_enabled(&grant, enabled).await?;
    Ok(Replay { enabled })
}

#[utoipa::path(put, path = "/api/v1/practices/{id}/replay", tag = "recordings", params(("id" = Uuid, Path)),
    request_body = Replay,
    responses((status = 200, body = Replay), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn replay_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Replay>,
) -> Result<axum::Json<Replay>, ApiError> {
    Ok(axum::Json(
        set_replay(&state, caller.session()?, id, body.enabled, &request).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsk::*;
        assert_eq!(parse_range(None, 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=90-"), 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-10"), 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-500"), 100), Part { start: 0, end: 99 });
        assert_eq!(
            parse_range(Some("bytes=50-500"), 100),
            Part { start: 50, end: 99 }
        );
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Whole);
        for bad in [
            "bytes=100-",
            "bytes=9-3",
            "bytes=-0",
            "bytes=x-y",
            "items=0-1",
            "bytes=-",
            "bytes=5",
        ] {
            assert_eq!(parse_range(Some(bad), 100), Unsatisfiable, "{bad}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }
}

//! Free slots, booking, and an appointment's life: cancel, reschedule, check in, start, complete.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use confide_domain::audit::Outcome;
use confide_domain::consultation::Consultation;
use confide_domain::ids::{ConsultationId, RecordingId};
use confide_domain::policy::actions::{
    BookAppointment, CancelAppointment, CheckIn, ListAppointments, ReadAppointment, ReadTriageSummary,
    RescheduleAppointment, RunConsultation, ViewFreeSlots,
};
use confide_domain::policy::{Action, AppointmentRef, PatientAtPractice};
use confide_domain::practice::TimeZoneName;
use confide_domain::scheduling::{AppointmentStatus, ConsultationKind, Slot, free_slots};
use confide_domain::{AppointmentId, PracticeId, Timestamp, UserId};
use confide_store::{Appointment, ClinicianSummary, Conflict, JobKind, NewAppointment, NewJob, StoreError};
use futures_util::Stream;
use jiff::SignedDuration;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::api::availability::{practice_zone, rfc3339};
use crate::api::patients::patient_ref;
use crate::auth::{Caller, Session};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::gate::RequestId;

/// How far ahead patients can look and book.
pub const MAX_DAYS_AHEAD: i64 = 28;
/// How many alternatives a refused booking suggests.
const SUGGESTIONS: usize = 5;
const MAX_REASON_CHARS: usize = 1000;
const MAX_MESSAGE_CHARS: usize = 1000;

/// A change to an appointment's status, for the waiting room's live page.
#[derive(Clone, Copy, Debug)]
pub struct StatusChange {
    pub appointment: AppointmentId,
    pub status: AppointmentStatus,
}

#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct SlotView {
    pub clinician_id: Uuid,
    pub clinician_name: String,
    /// RFC 3339, UTC.
    pub start: String,
    pub end: String,
    /// The start in the time zone asked for, with its offset.
    pub local_start: String,
    /// video, audio or either.
    pub kinds: String,
}

fn slot_view(slot: &Slot, clinician: &ClinicianSummary, viewer: &TimeZone) -> SlotView {
    SlotView {
        clinician_id: clinician.id.as_uuid(),
        clinician_name: clinician.name.clone(),
        start: slot.start.to_string(),
        end: slot.end.to_string(),
        local_start: slot
            .start
            .to_zoned(viewer.clone())
            .strftime("%Y-%m-%dT%H:%M%:z")
            .to_string(),
        kinds: slot.kinds.as_str().to_owned(),
    }
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct AppointmentView {
    pub id: Uuid,
    pub practice_id: Uuid,
    pub practice_name: String,
    /// The practice's time zone.
    pub time_zone: String,
    pub clinician_id: Uuid,
    pub clinician_name: String,
    pub patient_id: Uuid,
    pub patient_name: String,
    pub start: String,
    pub end: String,
    /// The start in the practice's time zone, with its offset.
    pub local_start: String,
    /// video or audio.
    pub kind: String,
    pub reason: String,
    /// booked, checked_in, in_consultation, completed, cancelled or no_show.
    pub status: String,
    /// Raised by every change; the calendar invite's SEQUENCE.
    pub sequence: i64,
    pub checked_in_at: Option<String>,
    pub cancel_message: Option<String>,
    /// The symptom checker's summary the patient chose to share when booking: shown to the patient and to
    /// the appointment's own clinician only; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triage_summary: Option<crate::api::triage::TriageSummaryView>,
}

impl From<Appointment> for AppointmentView {
    fn from(a: Appointment) -> Self {
        let local_start = TimeZone::get(&a.time_zone)
            .ok()
            .and_then(|tz| {
                Timestamp::from_millisecond(a.start_ms)
                    .ok()
                    .map(|t| t.to_zoned(tz).strftime("%Y-%m-%dT%H:%M%:z").to_string())
            })
            .unwrap_or_default();
        AppointmentView {
            id: a.id.as_uuid(),
            practice_id: a.practice.as_uuid(),
            practice_name: a.practice_name,
            time_zone: a.time_zone,
            clinician_id: a.clinician.as_uuid(),
            clinician_name: a.clinician_name,
            patient_id: a.patient.as_uuid(),
            patient_name: a.patient_name,
            start: rfc3339(a.start_ms),
            end: rfc3339(a.end_ms),
            local_start,
            kind: a.kind.as_str().to_owned(),
            reason: a.reason,
            status: a.status.as_str().to_owned(),
            sequence: a.sequence,
            checked_in_at: a.checked_in_at_ms.map(rfc3339),
            cancel_message: a.cancel_message,
            triage_summary: None,
        }
    }
}

/// A clinician's free slots starting in `[from, until)`.
async fn clinician_free_slots(
    state: &AppState,
    clinician: UserId,
    tz: &TimeZone,
    from: Timestamp,
    until: Timestamp,
    include_booked: bool,
) -> Result<Vec<Slot>, ApiError> {
    let (rules, exceptions) = state.store.availability(clinician).await?;
    let rules: Vec<_> = rules.into_iter().map(|r| r.rule).collect();
    let exceptions: Vec<_> = exceptions.into_iter().map(|e| e.exception).collect();
    let booked = if include_booked {
        Vec::new()
    } else {
        state
            .store
            .booked_times(
                clinician,
                from.as_millisecond(),
                until.as_millisecond() + 86_400_000,
            )
            .await?
    };
    Ok(free_slots(tz, &rules, &exceptions, &booked, from, until))
}

fn parse_time(field: &'static str, raw: &str) -> Result<Timestamp, ApiError> {
    raw.trim().parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_time",
            format!("{field}: {raw:?} is not a time: use RFC 3339, such as 2026-12-01T09:30:00Z"),
        )
    })
}

fn parse_kind(raw: &str) -> Result<ConsultationKind, ApiError> {
    raw.parse().map_err(|e: confide_domain::scheduling::UnknownKind| {
        ApiError::bad_request("invalid_kind", e.to_string())
    })
}

fn viewer_zone(raw: Option<&str>, practice: &TimeZone) -> Result<TimeZone, ApiError> {
    match raw {
        None => Ok(practice.clone()),
        Some(name) => {
            let name = TimeZoneName::parse(name)?;
            TimeZone::get(name.as_str())
                .map_err(|e| ApiError::bad_request("invalid_time_zone", e.to_string()))
        }
    }
}

#[derive(Deserialize, IntoParams, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct SlotsQuery {
    /// First day to show, YYYY-MM-DD in the practice's zone; today if absent.
    pub from: Option<String>,
    /// How many days to show, 1 to 28; 7 if absent.
    pub days: Option<i64>,
    /// Only slots offering this kind: video or audio.
    pub kind: Option<String>,
    /// The IANA time zone to show local times in; the practice's if absent.
    pub tz: Option<String>,
    /// Only this clinician's slots.
    pub clinician_id: Option<Uuid>,
}

/// Free slots at the patient's own practice, soonest first.
pub async fn slots(
    state: &AppState,
    session: &Session,
    practice: Uuid,
    query: &SlotsQuery,
    request: &RequestId,
) -> Result<Vec<SlotView>, ApiError> {
    let days = query.days.unwrap_or(7);
    if !(1..=MAX_DAYS_AHEAD).contains(&days) {
        return Err(ApiError::bad_request(
            "invalid_days",
            format!("days must be between 1 and {MAX_DAYS_AHEAD}"),
        ));
    }
    let kind = query.kind.as_deref().map(parse_kind).transpose()?;
    let from_date = query
        .from
        .as_deref()
        .map(|d| {
            d.trim().parse::<jiff::civil::Date>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_date",
                    format!("from: {d:?} is not a date: use YYYY-MM-DD"),
                )
            })
        })
        .transpose()?;
    let practice_id = PracticeId::from_uuid(practice);
    if state.store.practice(practice_id).await?.is_none() {
        return Err(state
            .not_found(
                session,
                Action::ViewFreeSlots,
                format!("practice:{practice_id}"),
                request,
            )
            .await);
    }
    let patient = patient_ref(
        state,
        session,
        session.account().id.as_uuid(),
        Action::ViewFreeSlots,
        request,
    )
    .await?;
    let on = PatientAtPractice {
        patient,
        practice: practice_id,
    };
    state.authorize::<ViewFreeSlots>(session, on, request).await?;
    let tz = practice_zone(state, practice_id).await?;
    let viewer = viewer_zone(query.tz.as_deref(), &tz)?;
    let now = state.clock.now();
    let from = match from_date {
        Some(d) => d
            .to_zoned(tz.clone())
            .map_err(|e| ApiError::bad_request("invalid_date", e.to_string()))?
            .timestamp()
            .max(now),
        None => now,
    };
    let until = from
        .checked_add(SignedDuration::from_hours(24 * days))
        .map_err(|e| ApiError::bad_request("invalid_date", e.to_string()))?;
    let mut out = Vec::new();
    for clinician in state.store.practice_clinicians(practice_id).await? {
        if query.clinician_id.is_some_and(|c| c != clinician.id.as_uuid()) {
            continue;
        }
        for slot in clinician_free_slots(state, clinician.id, &tz, from, until, false).await? {
            if kind.is_none_or(|k| slot.kinds.offers(k)) {
                out.push((slot.start, slot_view(&slot, &clinician, &viewer)));
            }
        }
    }
    out.sort_by(|a, b| (a.0, &a.1.clinician_name).cmp(&(b.0, &b.1.clinician_name)));
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

#[utoipa::path(get, path = "/api/v1/practices/{id}/slots", tag = "appointments", params(("id" = Uuid, Path), SlotsQuery),
    responses((status = 200, description = "Free slots at the caller's own practice", body = Vec<SlotView>),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn slots_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<SlotsQuery>,
) -> Result<axum::Json<Vec<SlotView>>, ApiError> {
    Ok(axum::Json(
        slots(&state, caller.session()?, id, &query, &request).await?,
    ))
}

/// The emails a booking at `start_ms` needs: a confirmation now, reminders a day and an hour before.
fn booking_jobs(id: AppointmentId, first: JobKind, now_ms: i64, start_ms: i64) -> Vec<NewJob> {
    let job = |kind: JobKind, run_at_ms: i64| NewJob {
        id: format!("appointment-{id}-{}-{}", kind.as_str(), Uuid::now_v7().simple()),
        kind,
        run_at_ms,
    };
    let mut jobs = vec![job(first, now_ms)];
    for (kind, before) in [
        (JobKind::Reminder24h, 24 * 3_600_000),
        (JobKind::Reminder1h, 3_600_000),
    ] {
        if start_ms - before > now_ms {
            jobs.push(job(kind, start_ms - before));
        }
    }
    jobs
}

/// Checks that `start` begins a free slot of the clinician offering `kind` (if given), and returns it; otherwise
/// says why not, with alternatives when the time was taken.
async fn bookable_slot(
    state: &AppState,
    clinician: &ClinicianSummary,
    tz: &TimeZone,
    start: Timestamp,
    kind: Option<ConsultationKind>,
    viewer: &TimeZone,
) -> Result<Slot, ApiError> {
    let now = state.clock.now();
    if start < now {
        return Err(ApiError::bad_request(
            "in_the_past",
            "that time has already passed",
        ));
    }
    let day = SignedDuration::from_hours(24);
    let (from, until) = (
        start.checked_sub(day).unwrap_or(start),
        start.checked_add(day).unwrap_or(start),
    );
    let free = clinician_free_slots(state, clinician.id, tz, from, until, false).await?;
    if let Some(slot) = free.iter().find(|s| s.start == start) {
        if let Some(kind) = kind
            && !slot.kinds.offers(kind)
        {
            return Err(ApiError::bad_request(
                "kind_not_offered",
                format!("this slot offers {} consultations only", slot.kinds.as_str()),
            ));
        }
        return Ok(*slot);
    }
    let offered = clinician_free_slots(state, clinician.id, tz, from, until, true).await?;
    if offered.iter().any(|s| s.start == start) {
        return Err(slot_taken(state, clinician, tz, viewer).await);
    }
    Err(ApiError::bad_request(
        "outside_availability",
        "the clinician has no slot starting at that time: choose one of the free slots",
    ))
}

async fn slot_taken(
    state: &AppState,
    clinician: &ClinicianSummary,
    tz: &TimeZone,
    viewer: &TimeZone,
) -> ApiError {
    let now = state.clock.now();
    // Most refusals have alternatives the same day: look further only when the nearer window has too few,
    // so that a burst of refusals under contention stays cheap.
    let mut free = Vec::new();
    for days in [1, 7, MAX_DAYS_AHEAD] {
        let until = now
            .checked_add(SignedDuration::from_hours(24 * days))
            .unwrap_or(now);
        free = clinician_free_slots(state, clinician.id, tz, now, until, false)
            .await
            .unwrap_or_default();
        if free.len() >= SUGGESTIONS {
            break;
        }
    }
    let next: Vec<SlotView> = free
        .iter()
        .take(SUGGESTIONS)
        .map(|s| slot_view(s, clinician, viewer))
        .collect();
    ApiError::SlotTaken {
        next_free: serde_json::to_value(next).unwrap_or_default(),
    }
}

#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    pub clinician_id: Uuid,
    /// The slot's start, RFC 3339.
    pub start: String,
    /// video or audio.
    pub kind: String,
    /// Optional, for the clinician: what it is about (up to 1000 characters).
    #[serde(default)]
    pub reason: String,
    /// The patient's IANA time zone, for the alternatives offered if the slot was just taken.
    pub tz: Option<String>,
    /// One of the patient's own finished symptom checks, to share its summary with the clinician.
    #[serde(default)]
    pub triage_session_id: Option<Uuid>,
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.chars().count() > max {
        return Err(ApiError::bad_request(
            "text_too_long",
            format!("{field} can be at most {max} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(ApiError::bad_request(
            "invalid_text",
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

pub async fn book(
    state: &AppState,
    session: &Session,
    req: &BookRequest,
    request: &RequestId,
) -> Result<AppointmentView, ApiError> {
    let start = parse_time("start", &req.start)?;
    let kind = parse_kind(&req.kind)?;
    check_text("reason", &req.reason, MAX_REASON_CHARS)?;
    let clinician = UserId::from_uuid(req.clinician_id);
    let Some(clinician_ref) = state.store.clinician_ref(clinician).await? else {
        return Err(state
            .not_found(
                session,
                Action::BookAppointment,
                format!("clinician:{clinician}"),
                request,
            )
            .await);
    };
    let patient = patient_ref(
        state,
        session,
        session.account().id.as_uuid(),
        Action::BookAppointment,
        request,
    )
    .await?;
    let on = PatientAtPractice {
        patient,
        practice: clinician_ref.practice,
    };
    let grant = state.authorize::<BookAppointment>(session, on, request).await?;
    let shared = match req.triage_session_id {
        Some(id) => Some(crate::api::triage::summary_to_share(state, session, id, request).await?),
        None => None,
    };
    let shared_json = shared
        .as_ref()
        .map(|(_, summary)| serde_json::to_string(summary).expect("a summary serialises"));
    let tz = practice_zone(state, clinician_ref.practice).await?;
    let viewer = viewer_zone(req.tz.as_deref(), &tz)?;
    let summary = state
        .store
        .practice_clinicians(clinician_ref.practice)
        .await?
        .into_iter()
        .find(|c| c.id == clinician)
        .ok_or(ApiError::NotFound)?;
    let slot = bookable_slot(state, &summary, &tz, start, Some(kind), &viewer).await?;
    let id = AppointmentId::from_uuid(Uuid::now_v7());
    let now_ms = state.clock.now_ms();
    let (start_ms, end_ms) = (slot.start.as_millisecond(), slot.end.as_millisecond());
    let jobs = booking_jobs(id, JobKind::Booked, now_ms, start_ms);
    let triage = shared
        .as_ref()
        .zip(shared_json.as_deref())
        .map(|((grant, _), summary)| confide_store::SharedTriage { grant, summary });
    let booked = state
        .store
        .book_appointment_sharing(
            &grant,
            NewAppointment {
                id,
                clinician,
                start_ms,
                end_ms,
                kind,
                reason: req.reason.trim(),
                at_ms: now_ms,
                jobs: &jobs,
            },
            triage,
        )
        .await;
    let appointment = match booked {
        Err(StoreError::Conflict(Conflict::SlotTaken)) => {
            return Err(slot_taken(state, &summary, &tz, &viewer).await);
        }
        other => other?,
    };
    record_change(state, session, &appointment, "appointment.booked", request).await?;
    state.kick_jobs();
    let mut view = AppointmentView::from(appointment);
    view.triage_summary = shared.map(|(_, summary)| summary);
    Ok(view)
}

/// Records a change that happened, beside the gate's record of it being allowed.
async fn record_change(
    state: &AppState,
    session: &Session,
    appointment: &Appointment,
    action: &str,
    request: &RequestId,
) -> Result<(), ApiError> {
    let event = confide_domain::audit::AuditEvent {
        resource: format!("appointment:{}", appointment.id),
        subject_patient: Some(appointment.patient),
        ..state.event(
            Some(session),
            action,
            Outcome::Allowed,
            appointment.status.as_str(),
            request,
        )
    };
    state.record(event).await?;
    let _ = state.status_changes.send(StatusChange {
        appointment: appointment.id,
        status: appointment.status,
    });
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/appointments", tag = "appointments", request_body = BookRequest,
    responses((status = 201, body = AppointmentView),
              (status = 400, description = "Invalid, in the past, outside availability, or kind not offered", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Just taken: `next_free_slots` lists alternatives", body = ErrorBody)))]
pub async fn book_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiJson(req): ApiJson<BookRequest>,
) -> Result<(StatusCode, axum::Json<AppointmentView>), ApiError> {
    let view = book(&state, caller.session()?, &req, &request).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

pub async fn mine(
    state: &AppState,
    session: &Session,
    request: &RequestId,
) -> Result<Vec<AppointmentView>, ApiError> {
    let on = patient_ref(
        state,
        session,
        session.account().id.as_uuid(),
        Action::ListAppointments,
        request,
    )
    .await?;
    let grant = state.authorize::<ListAppointments>(session, on, request).await?;
    Ok(state
        .store
        .patient_appointments(&grant)
        .await?
        .into_iter()
        .map(AppointmentView::from)
        .collect())
}

#[utoipa::path(get, path = "/api/v1/appointments", tag = "appointments",
    responses((status = 200, description = "The caller's own appointments, soonest first", body = Vec<AppointmentView>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mine_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
) -> Result<axum::Json<Vec<AppointmentView>>, ApiError> {
    Ok(axum::Json(mine(&state, caller.session()?, &request).await?))
}

/// The appointment, if it exists; an unknown id is recorded and answered as a denial would be.
pub async fn appointment_ref(
    state: &AppState,
    session: &Session,
    id: Uuid,
    action: Action,
    request: &RequestId,
) -> Result<AppointmentRef, ApiError> {
    let id = AppointmentId::from_uuid(id);
    let found = state.store.appointment_ref(id).await?;
    state
        .found(found, session, action, || format!("appointment:{id}"), request)
        .await
}

pub async fn get(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<AppointmentView, ApiError> {
    let on = appointment_ref(state, session, id, Action::ReadAppointment, request).await?;
    let grant = state.authorize::<ReadAppointment>(session, on, request).await?;
    let mut view: AppointmentView = state
        .store
        .appointment(&grant)
        .await?
        .ok_or(ApiError::NotFound)?
        .into();
    view.triage_summary = triage_summary(state, session, on, request).await?;
    Ok(view)
}

/// The summary shared with the appointment, when there is one and the gate lets the caller read it; a
/// colleague who may read the appointment still does not see it.
async fn triage_summary(
    state: &AppState,
    session: &Session,
    on: AppointmentRef,
    request: &RequestId,
) -> Result<Option<crate::api::triage::TriageSummaryView>, ApiError> {
    if !state.store.appointment_has_triage(on.id).await? {
        return Ok(None);
    }
    let grant = match state.authorize::<ReadTriageSummary>(session, on, request).await {
        Ok(grant) => grant,
        Err(ApiError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(stored) = state.store.appointment_triage(&grant).await? else {
        return Ok(None);
    };
    serde_json::from_str(&stored.summary)
        .map(Some)
        .map_err(|e| ApiError::Unavailable(format!("shared triage summary of appointment {}: {e}", on.id)))
}

#[utoipa::path(get, path = "/api/v1/appointments/{id}", tag = "appointments", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppointmentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<AppointmentView>, ApiError> {
    Ok(axum::Json(get(&state, caller.session()?, id, &request).await?))
}

#[derive(Deserialize, ToSchema, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// For the patient, when the practice cancels (up to 1000 characters).
    pub message: Option<String>,
}

pub async fn cancel(
    state: &AppState,
    session: &Session,
    id: Uuid,
    message: Option<&str>,
    request: &RequestId,
) -> Result<AppointmentView, ApiError> {
    let message = message.map(str::trim).filter(|m| !m.is_empty());
    if let Some(m) = message {
        check_text("message", m, MAX_MESSAGE_CHARS)?;
    }
    let on = appointment_ref(state, session, id, Action::CancelAppointment, request).await?;
    let grant = state.authorize::<CancelAppointment>(session, on, request).await?;
    let now_ms = state.clock.now_ms();
    // Patients keep to the practice's cutoff; the practice itself may cancel at any time.
    let earliest_start = match session.account().role {
        confide_domain::identity::Role::Patient => {
            Some(now_ms + state.store.booking_cutoff_minutes(on.practice).await? * 60_000)
        }
        _ => None,
    };
    let jobs = [NewJob {
        id: format!("appointment-{}-cancelled-{}", on.id, Uuid::now_v7().simple()),
        kind: JobKind::Cancelled,
        run_at_ms: now_ms,
    }];
    let cancelled = state
        .store
        .cancel_appointment(&grant, message, now_ms, earliest_start, &jobs)
        .await?;
    record_change(state, session, &cancelled, "appointment.cancelled", request).await?;
    state.kick_jobs();
    Ok(cancelled.into())
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/cancel", tag = "appointments", params(("id" = Uuid, Path)),
    request_body = CancelRequest,
    responses((status = 200, body = AppointmentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Past the cutoff, or already finished or cancelled", body = ErrorBody)))]
pub async fn cancel_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CancelRequest>,
) -> Result<axum::Json<AppointmentView>, ApiError> {
    Ok(axum::Json(
        cancel(&state, caller.session()?, id, body.message.as_deref(), &request).await?,
    ))
}

#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// The new slot's start, RFC 3339, with the same clinician.
    pub start: String,
    /// video or audio; unchanged if absent.
    pub kind: Option<String>,
    /// The patient's IANA time zone, for the alternatives offered if the slot was just taken.
    pub tz: Option<String>,
}

pub async fn reschedule(
    state: &AppState,
    session: &Session,
    id: Uuid,
    req: &RescheduleRequest,
    request: &RequestId,
) -> Result<AppointmentView, ApiError> {
    let start = parse_time("start", &req.start)?;
    let kind = req.kind.as_deref().map(parse_kind).transpose()?;
    let on = appointment_ref(state, session, id, Action::RescheduleAppointment, request).await?;
    let grant = state
        .authorize::<RescheduleAppointment>(session, on, request)
        .await?;
    let tz = practice_zone(state, on.practice).await?;
    let viewer = viewer_zone(req.tz.as_deref(), &tz)?;
    let clinician = state
        .store
        .practice_clinicians(on.practice)
        .await?
        .into_iter()
        .find(|c| c.id == on.clinician)
        .ok_or(ApiError::Conflict(Conflict::NotBookable))?;
    let slot = bookable_slot(state, &clinician, &tz, start, kind, &viewer).await?;
    let now_ms = state.clock.now_ms();
    let cutoff = state.store.booking_cutoff_minutes(on.practice).await?;
    let (start_ms, end_ms) = (slot.start.as_millisecond(), slot.end.as_millisecond());
    let jobs = booking_jobs(on.id, JobKind::Rescheduled, now_ms, start_ms);
    let moved = state
        .store
        .reschedule_appointment(
            &grant,
            confide_store::NewTime {
                start_ms,
                end_ms,
                kind,
                offers: slot.kinds,
            },
            now_ms,
            now_ms + cutoff * 60_000,
            &jobs,
        )
        .await;
    let moved = match moved {
        Err(StoreError::Conflict(Conflict::SlotTaken)) => {
            return Err(slot_taken(state, &clinician, &tz, &viewer).await);
        }
        other => other?,
    };
    record_change(state, session, &moved, "appointment.rescheduled", request).await?;
    state.kick_jobs();
    Ok(moved.into())
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/reschedule", tag = "appointments", params(("id" = Uuid, Path)),
    request_body = RescheduleRequest,
    responses((status = 200, body = AppointmentView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "Taken (with alternatives), past the cutoff, or not booked", body = ErrorBody)))]
pub async fn reschedule_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RescheduleRequest>,
) -> Result<axum::Json<AppointmentView>, ApiError> {
    Ok(axum::Json(
        reschedule(&state, caller.session()?, id, &req, &request).await?,
    ))
}

pub async fn check_in(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<AppointmentView, ApiError> {
    let on = appointment_ref(state, session, id, Action::CheckIn, request).await?;
    let grant = state.authorize::<CheckIn>(session, on, request).await?;
    let done = state.store.check_in(&grant, state.clock.now_ms()).await?;
    record_change(state, session, &done, "appointment.checked_in", request).await?;
    Ok(done.into())
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/check-in", tag = "appointments", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppointmentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Too early, too late, or not booked", body = ErrorBody)))]
pub async fn check_in_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<AppointmentView>, ApiError> {
    Ok(axum::Json(
        check_in(&state, caller.session()?, id, &request).await?,
    ))
}

/// The clinician moves their appointment on: start, complete, or record that the patient did not come.
pub async fn run(
    state: &AppState,
    session: &Session,
    id: Uuid,
    to: AppointmentStatus,
    request: &RequestId,
) -> Result<AppointmentView, ApiError> {
    let on = appointment_ref(state, session, id, Action::RunConsultation, request).await?;
    let grant = state.authorize::<RunConsultation>(session, on, request).await?;
    let done = if to == AppointmentStatus::InConsultation {
        // The recording is made here, with the consultation, and bound to this appointment's people.
        let kind = state.store.appointment_kind(&grant).await?;
        let consultation = Consultation::start(
            ConsultationId::from_uuid(Uuid::now_v7()),
            RecordingId::from_uuid(Uuid::now_v7()),
            &grant,
            kind.into(),
            state.clock.now(),
        );
        state
            .store
            .start_consultation(&grant, &consultation, state.clock.now_ms())
            .await?
    } else {
        let done = state
            .store
            .run_consultation(&grant, to, state.clock.now_ms())
            .await?;
        if let Some(consultation) = state.store.consultation_ref(on.id).await? {
            // The consultation is over whatever happens here; a room left open takes no new segments.
            if let Err(e) = state.calls.close(consultation.id).await {
                tracing::error!(error = %e, consultation = %consultation.id, "closing the call failed");
            }
        }
        done
    };
    let action = match to {
        AppointmentStatus::InConsultation => "appointment.started",
        AppointmentStatus::Completed => "appointment.completed",
        _ => "appointment.no_show",
    };
    record_change(state, session, &done, action, request).await?;
    Ok(done.into())
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/start", tag = "appointments", params(("id" = Uuid, Path)),
    responses((status = 200, description = "Now in consultation", body = AppointmentView), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "The patient has not checked in", body = ErrorBody)))]
pub async fn start_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<AppointmentView>, ApiError> {
    Ok(axum::Json(
        run(
            &state,
            caller.session()?,
            id,
            AppointmentStatus::InConsultation,
            &request,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/complete", tag = "appointments", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppointmentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn complete_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<AppointmentView>, ApiError> {
    Ok(axum::Json(
        run(
            &state,
            caller.session()?,
            id,
            AppointmentStatus::Completed,
            &request,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/no-show", tag = "appointments", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppointmentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn no_show_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<AppointmentView>, ApiError> {
    Ok(axum::Json(
        run(&state, caller.session()?, id, AppointmentStatus::NoShow, &request).await?,
    ))
}

/// A stream of the appointment's status: the current one first, then each change, for the waiting room.
pub async fn events(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + use<>, ApiError> {
    let on = appointment_ref(state, session, id, Action::ReadAppointment, request).await?;
    let grant = state.authorize::<ReadAppointment>(session, on, request).await?;
    let mut changes = state.status_changes.subscribe();
    let current = state.store.appointment(&grant).await?.ok_or(ApiError::NotFound)?;
    let appointment = current.id;
    let first = Event::default().event("status").data(current.status.as_str());
    let rest = async_stream_of(move |tx| async move {
        loop {
            match changes.recv().await {
                Ok(change) if change.appointment == appointment => {
                    let event = Event::default().event("status").data(change.status.as_str());
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(futures_util::StreamExt::chain(
        futures_util::stream::iter([Ok(first)]),
        rest,
    ))
}

/// A stream fed by a task, which ends when the client goes away.
fn async_stream_of<F, Fut>(producer: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

#[utoipa::path(get, path = "/api/v1/appointments/{id}/events", tag = "appointments", params(("id" = Uuid, Path)),
    responses((status = 200, description = "Server-sent events: `status` with the current status, then each change", content_type = "text/event-stream", body = String),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn events_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = events(&state, caller.session()?, id, &request).await?;
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

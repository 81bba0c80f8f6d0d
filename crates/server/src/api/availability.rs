//! Clinicians' weekly availability and its exceptions, their day's schedule and waiting room, and the
//! practice's cutoff for patients' changes.

use axum::extract::State;
use axum::http::StatusCode;
use confide_domain::UserId;
use confide_domain::ids::AvailabilityId;
use confide_domain::policy::actions::{ManageAvailability, ManagePracticeStaff, ViewSchedule};
use confide_domain::policy::{Action, ClinicianRef, Grant, PracticeRef};
use confide_domain::scheduling::{
    AvailabilityError, AvailabilityException, AvailabilityRule, ExceptionKind, KindsOffered, MinuteOfDay,
    SlotLength, weekday_from_number,
};
use confide_domain::{PracticeId, Timestamp};
use confide_store::{ScheduleEntry, StoredException, StoredRule};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Session};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::gate::RequestId;

impl From<AvailabilityError> for ApiError {
    fn from(e: AvailabilityError) -> Self {
        let code = match e {
            AvailabilityError::Overlaps { .. } => "availability_overlaps",
            AvailabilityError::SlotLength(_) => "invalid_slot_length",
            _ => "invalid_availability",
        };
        ApiError::bad_request(code, e.to_string())
    }
}

/// The clinician, if one exists with this id; otherwise recorded and answered as a denial.
pub async fn clinician_ref(
    state: &AppState,
    session: &Session,
    id: Uuid,
    action: Action,
    request: &RequestId,
) -> Result<ClinicianRef, ApiError> {
    let clinician = UserId::from_uuid(id);
    let found = state.store.clinician_ref(clinician).await?;
    state
        .found(
            found,
            session,
            action,
            || format!("clinician:{clinician}"),
            request,
        )
        .await
}

/// The gate's answer to changing or reading `clinician`'s availability.
async fn manage(
    state: &AppState,
    session: &Session,
    clinician: Uuid,
    request: &RequestId,
) -> Result<Grant<ManageAvailability>, ApiError> {
    let on = clinician_ref(state, session, clinician, Action::ManageAvailability, request).await?;
    state.authorize::<ManageAvailability>(session, on, request).await
}

/// The practice's time zone: availability is kept in it.
pub async fn practice_zone(state: &AppState, practice: PracticeId) -> Result<TimeZone, ApiError> {
    let p = state.store.practice(practice).await?.ok_or(ApiError::NotFound)?;
    TimeZone::get(&p.time_zone).map_err(|e| ApiError::Unavailable(format!("time zone {}: {e}", p.time_zone)))
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct RuleView {
    pub id: Uuid,
    /// 1 is Monday, 7 is Sunday.
    pub weekday: i64,
    /// Local time of day, HH:MM.
    pub start: String,
    pub end: String,
    pub slot_minutes: i64,
    /// video, audio or either.
    pub kinds: String,
    pub valid_from: String,
    pub valid_until: Option<String>,
}

impl From<StoredRule> for RuleView {
    fn from(r: StoredRule) -> Self {
        RuleView {
            id: r.id.as_uuid(),
            weekday: r.rule.weekday_number(),
            start: r.rule.start.to_string(),
            end: r.rule.end.to_string(),
            slot_minutes: r.rule.slot.minutes(),
            kinds: r.rule.kinds.as_str().to_owned(),
            valid_from: r.rule.valid_from.to_string(),
            valid_until: r.rule.valid_until.map(|d| d.to_string()),
        }
    }
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ExceptionView {
    pub id: Uuid,
    pub date: String,
    pub start: String,
    pub end: String,
    /// blocked or extra.
    pub kind: String,
    pub slot_minutes: Option<i64>,
    pub kinds: Option<String>,
    pub note: String,
}

impl From<StoredException> for ExceptionView {
    fn from(e: StoredException) -> Self {
        let (kind, slot, kinds) = match e.exception.kind {
            ExceptionKind::Blocked => ("blocked", None, None),
            ExceptionKind::Extra { slot, kinds } => {
                ("extra", Some(slot.minutes()), Some(kinds.as_str().to_owned()))
            }
        };
        ExceptionView {
            id: e.id.as_uuid(),
            date: e.exception.date.to_string(),
            start: e.exception.start.to_string(),
            end: e.exception.end.to_string(),
            kind: kind.to_owned(),
            slot_minutes: slot,
            kinds,
            note: e.note,
        }
    }
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct AvailabilityView {
    pub clinician_id: Uuid,
    /// The practice's IANA time zone, in which every time here is given.
    pub time_zone: String,
    pub rules: Vec<RuleView>,
    pub exceptions: Vec<ExceptionView>,
}

pub async fn availability(
    state: &AppState,
    session: &Session,
    clinician: Uuid,
    request: &RequestId,
) -> Result<AvailabilityView, ApiError> {
    let grant = manage(state, session, clinician, request).await?;
    let practice = state
        .store
        .practice(grant.on().practice)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (rules, exceptions) = state.store.availability(grant.on().clinician).await?;
    Ok(AvailabilityView {
        clinician_id: clinician,
        time_zone: practice.time_zone,
        rules: rules.into_iter().map(RuleView::from).collect(),
        exceptions: exceptions.into_iter().map(ExceptionView::from).collect(),
    })
}

#[utoipa::path(get, path = "/api/v1/clinicians/{id}/availability", tag = "scheduling", params(("id" = Uuid, Path)),
    responses((status = 200, body = AvailabilityView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn availability_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<AvailabilityView>, ApiError> {
    Ok(axum::Json(
        availability(&state, caller.session()?, id, &request).await?,
    ))
}

#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// 1 is Monday, 7 is Sunday.
    pub weekday: i64,
    /// Local time of day in the practice's zone, HH:MM on a five-minute mark.
    pub start: String,
    /// HH:MM; 24:00 ends the day.
    pub end: String,
    /// 10, 15, 20 or 30.
    pub slot_minutes: i64,
    /// video, audio or either.
    pub kinds: String,
    /// YYYY-MM-DD; today in the practice's zone if absent.
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
}

fn parse_date(field: &'static str, raw: &str) -> Result<Date, ApiError> {
    raw.trim().parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_date",
            format!("{field}: {raw:?} is not a date: use YYYY-MM-DD"),
        )
    })
}

fn parse_minute(raw: &str) -> Result<MinuteOfDay, ApiError> {
    Ok(raw.parse::<MinuteOfDay>()?)
}

pub async fn add_rule(
    state: &AppState,
    session: &Session,
    clinician: Uuid,
    new: NewRule,
    request: &RequestId,
) -> Result<RuleView, ApiError> {
    let weekday = weekday_from_number(new.weekday)?;
    let (start, end) = (parse_minute(&new.start)?, parse_minute(&new.end)?);
    let slot = SlotLength::try_from(new.slot_minutes)?;
    let kinds: KindsOffered = new.kinds.parse()?;
    let valid_until = new
        .valid_until
        .as_deref()
        .map(|d| parse_date("valid_until", d))
        .transpose()?;
    let explicit_from = new
        .valid_from
        .as_deref()
        .map(|d| parse_date("valid_from", d))
        .transpose()?;
    let grant = manage(state, session, clinician, request).await?;
    let tz = practice_zone(state, grant.on().practice).await?;
    let valid_from = explicit_from.unwrap_or_else(|| state.clock.now().to_zoned(tz).date());
    let rule = AvailabilityRule::new(weekday, start, end, slot, kinds, valid_from, valid_until)?;
    let id = AvailabilityId::from_uuid(Uuid::now_v7());
    let stored = state
        .store
        .add_availability_rule(&grant, id, &rule, state.clock.now_ms())
        .await
        .map_err(|e| match e {
            confide_store::StoreError::Invalid(message) => {
                ApiError::bad_request("availability_overlaps", message)
            }
            other => other.into(),
        })?;
    Ok(stored.into())
}

#[utoipa::path(post, path = "/api/v1/clinicians/{id}/availability/rules", tag = "scheduling", params(("id" = Uuid, Path)),
    request_body = NewRule,
    responses((status = 201, body = RuleView), (status = 400, description = "Invalid, or overlaps an existing rule", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_rule_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(new): ApiJson<NewRule>,
) -> Result<(StatusCode, axum::Json<RuleView>), ApiError> {
    let rule = add_rule(&state, caller.session()?, id, new, &request).await?;
    Ok((StatusCode::CREATED, axum::Json(rule)))
}

pub async fn remove_rule(
    state: &AppState,
    session: &Session,
    clinician: Uuid,
    rule: Uuid,
    request: &RequestId,
) -> Result<(), ApiError> {
    let grant = manage(state, session, clinician, request).await?;
    let found = state
        .store
        .remove_availability_rule(&grant, AvailabilityId::from_uuid(rule))
        .await?;
    found.then_some(()).ok_or(ApiError::NotFound)
}

#[utoipa::path(delete, path = "/api/v1/clinicians/{id}/availability/rules/{rule_id}", tag = "scheduling",
    params(("id" = Uuid, Path), ("rule_id" = Uuid, Path)),
    responses((status = 204, description = "Removed; booked appointments stay"), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn remove_rule_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath((id, rule)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    remove_rule(&state, caller.session()?, id, rule, &request).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewException {
    /// YYYY-MM-DD in the practice's zone.
    pub date: String,
    /// blocked (leave, a closed afternoon) or extra (an added session).
    pub kind: String,
    /// HH:MM; the whole day if both start and end are absent (blocked only).
    pub start: Option<String>,
    pub end: Option<String>,
    /// For extra sessions: 10, 15, 20 or 30.
    pub slot_minutes: Option<i64>,
    /// For extra sessions: video, audio or either.
    pub kinds: Option<String>,
    #[serde(default)]
    pub note: String,
}

pub async fn add_exception(
    state: &AppState,
    session: &Session,
    clinician: Uuid,
    new: NewException,
    request: &RequestId,
) -> Result<ExceptionView, ApiError> {
    let date = parse_date("date", &new.date)?;
    let (start, end) = match (new.start.as_deref(), new.end.as_deref()) {
        (Some(s), Some(e)) => (parse_minute(s)?, parse_minute(e)?),
        (None, None) if new.kind == "blocked" => (MinuteOfDay::MIDNIGHT, MinuteOfDay::END_OF_DAY),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_availability",
                "give both start and end (only a blocked day may omit both)",
            ));
        }
    };
    let kind = match new.kind.as_str() {
        "blocked" => ExceptionKind::Blocked,
        "extra" => {
            let slot = new.slot_minutes.ok_or_else(|| {
                ApiError::bad_request("invalid_availability", "an extra session needs slot_minutes")
            })?;
            ExceptionKind::Extra {
                slot: SlotLength::try_from(slot)?,
                kinds: new.kinds.as_deref().unwrap_or("either").parse()?,
            }
        }
        other => {
            return Err(ApiError::bad_request(
                "invalid_availability",
                format!("kind must be blocked or extra, not {other:?}"),
            ));
        }
    };
    if new.note.chars().count() > 500 {
        return Err(ApiError::bad_request(
            "invalid_note",
            "a note can be at most 500 characters",
        ));
    }
    let exception = AvailabilityException::new(date, start, end, kind)?;
    let grant = manage(state, session, clinician, request).await?;
    let id = AvailabilityId::from_uuid(Uuid::now_v7());
    Ok(state
        .store
        .add_availability_exception(&grant, id, &exception, new.note.trim(), state.clock.now_ms())
        .await?
        .into())
}

#[utoipa::path(post, path = "/api/v1/clinicians/{id}/availability/exceptions", tag = "scheduling",
    params(("id" = Uuid, Path)), request_body = NewException,
    responses((status = 201, body = ExceptionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn add_exception_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(new): ApiJson<NewException>,
) -> Result<(StatusCode, axum::Json<ExceptionView>), ApiError> {
    let view = add_exception(&state, caller.session()?, id, new, &request).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

pub async fn remove_exception(
    state: &AppState,
    session: &Session,
    clinician: Uuid,
    exception: Uuid,
    request: &RequestId,
) -> Result<(), ApiError> {
    let grant = manage(state, session, clinician, request).await?;
    let found = state
        .store
        .remove_availability_exception(&grant, AvailabilityId::from_uuid(exception))
        .await?;
    found.then_some(()).ok_or(ApiError::NotFound)
}

#[utoipa::path(delete, path = "/api/v1/clinicians/{id}/availability/exceptions/{exception_id}", tag = "scheduling",
    params(("id" = Uuid, Path), ("exception_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_exception_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath((id, exception)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    remove_exception(&state, caller.session()?, id, exception, &request).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ScheduleItem {
    pub appointment_id: Uuid,
    pub patient_id: Uuid,
    pub patient_name: String,
    pub start: String,
    pub end: String,
    /// HH:MM in the practice's zone.
    pub local_start: String,
    /// video or audio.
    pub kind: String,
    pub status: String,
    /// Minutes since the patient checked in, while they wait.
    pub waiting_minutes: Option<i64>,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct DayView {
    pub clinician_id: Uuid,
    pub date: String,
    pub time_zone: String,
    /// The day's appointments, cancelled ones included, by start.
    pub appointments: Vec<ScheduleItem>,
    /// Patients in the waiting room, longest waiting first.
    pub queue: Vec<ScheduleItem>,
}

#[derive(Deserialize, IntoParams, Debug)]
#[serde(deny_unknown_fields)]
pub struct DayQuery {
    /// YYYY-MM-DD in the practice's zone; today if absent.
    pub date: Option<String>,
}

pub(crate) fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub(crate) fn local_hhmm(ms: i64, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned(tz.clone()).strftime("%H:%M").to_string())
        .unwrap_or_default()
}

fn schedule_item(e: ScheduleEntry, tz: &TimeZone, now_ms: i64) -> ScheduleItem {
    let waiting = (e.status == confide_domain::scheduling::AppointmentStatus::CheckedIn)
        .then(|| e.checked_in_at_ms.map(|at| (now_ms - at).max(0) / 60_000))
        .flatten();
    ScheduleItem {
        appointment_id: e.id.as_uuid(),
        patient_id: e.patient.as_uuid(),
        patient_name: e.patient_name,
        start: rfc3339(e.start_ms),
        end: rfc3339(e.end_ms),
        local_start: local_hhmm(e.start_ms, tz),
        kind: e.kind.as_str().to_owned(),
        status: e.status.as_str().to_owned(),
        waiting_minutes: waiting,
    }
}

pub async fn day(
    state: &AppState,
    session: &Session,
    clinician: Uuid,
    date: Option<&str>,
    request: &RequestId,
) -> Result<DayView, ApiError> {
    let explicit = date.map(|d| parse_date("date", d)).transpose()?;
    let on = clinician_ref(state, session, clinician, Action::ViewSchedule, request).await?;
    let grant = state.authorize::<ViewSchedule>(session, on, request).await?;
    let tz = practice_zone(state, grant.on().practice).await?;
    let now_ms = state.clock.now_ms();
    let date = explicit.unwrap_or_else(|| state.clock.now().to_zoned(tz.clone()).date());
    let bound = |d: Date| {
        d.to_zoned(tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| ApiError::bad_request("invalid_date", e.to_string()))
    };
    let next = date
        .tomorrow()
        .map_err(|e| ApiError::bad_request("invalid_date", e.to_string()))?;
    let entries = state.store.schedule(&grant, bound(date)?, bound(next)?).await?;
    let appointments: Vec<ScheduleItem> = entries
        .into_iter()
        .map(|e| schedule_item(e, &tz, now_ms))
        .collect();
    let mut queue: Vec<ScheduleItem> = appointments
        .iter()
        .filter(|a| a.status == "checked_in")
        .cloned()
        .collect();
    queue.sort_by_key(|a| std::cmp::Reverse(a.waiting_minutes));
    Ok(DayView {
        clinician_id: clinician,
        date: date.to_string(),
        time_zone: tz.iana_name().unwrap_or("UTC").to_owned(),
        appointments,
        queue,
    })
}

#[utoipa::path(get, path = "/api/v1/clinicians/{id}/schedule", tag = "scheduling", params(("id" = Uuid, Path), DayQuery),
    responses((status = 200, description = "The day's appointments and waiting room, without clinical content", body = DayView),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn day_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DayQuery>,
) -> Result<axum::Json<DayView>, ApiError> {
    Ok(axum::Json(
        day(&state, caller.session()?, id, query.date.as_deref(), &request).await?,
    ))
}

#[derive(Deserialize, Serialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct BookingCutoff {
    /// Minutes before an appointment after which patients can no longer cancel or move it (0 to 10080).
    pub minutes: i64,
}

pub async fn set_cutoff(
    state: &AppState,
    session: &Session,
    practice: Uuid,
    minutes: i64,
    request: &RequestId,
) -> Result<BookingCutoff, ApiError> {
    if !(0..=7 * 24 * 60).contains(&minutes) {
        return Err(ApiError::bad_request(
            "invalid_cutoff",
            "the cutoff must be between 0 and 10080 minutes (a week)",
        ));
    }
    let practice = PracticeId::from_uuid(practice);
    if state.store.practice(practice).await?.is_none() {
        return Err(state
            .not_found(
                session,
                Action::ManagePracticeStaff,
                format!("practice:{practice}"),
                request,
            )
            .await);
    }
    let grant = state
        .authorize::<ManagePracticeStaff>(session, PracticeRef { practice }, request)
        .await?;
    state.store.set_booking_cutoff_minutes(&grant, minutes).await?;
    Ok(BookingCutoff { minutes })
}

#[utoipa::path(put, path = "/api/v1/practices/{id}/booking-cutoff", tag = "scheduling", params(("id" = Uuid, Path)),
    request_body = BookingCutoff,
    responses((status = 200, body = BookingCutoff), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn set_cutoff_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BookingCutoff>,
) -> Result<axum::Json<BookingCutoff>, ApiError> {
    Ok(axum::Json(
        set_cutoff(&state, caller.session()?, id, body.minutes, &request).await?,
    ))
}

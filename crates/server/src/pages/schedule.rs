//! Practice staff's scheduling pages: a clinician's day with its waiting room, and their weekly
//! availability with its exceptions.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use confide_domain::identity::Role;
use confide_domain::scheduling::AppointmentStatus;
use confide_domain::{AppointmentId, PracticeId};
use jiff::civil::Date;
use serde::Deserialize;
use uuid::Uuid;

use super::csrf::{CsrfForm, CsrfToken};
use super::{
    Layout, NoticeQuery, PageError, PagePath, PageQuery, Problem, SignedIn, appointment_status_label,
    kind_label, long_date, non_empty, problem,
};
use crate::AppState;
use crate::api;
use crate::api::availability::{DayView, ExceptionView, NewException, NewRule, RuleView, ScheduleItem};
use crate::api::triage::TriageSummaryView;
use crate::auth::Session;
use crate::error::ApiError;
use crate::gate::RequestId;

/// The caller's practice: these pages are for clinicians and practice admins; anyone else gets the
/// not-found page.
fn staff_practice(session: &Session) -> Result<PracticeId, PageError> {
    let account = session.account();
    match account.role {
        Role::Clinician | Role::PracticeAdmin => account.practice.ok_or(PageError::NotFound),
        Role::Patient | Role::PlatformAdmin => Err(PageError::NotFound),
    }
}

/// The clinician a page is about: the one asked for, else the caller if they are one.
fn chosen_clinician(session: &Session, asked: &str) -> Result<Option<Uuid>, PageError> {
    match non_empty(asked) {
        Some(raw) => Uuid::parse_str(&raw).map(Some).map_err(|_| PageError::NotFound),
        None => {
            let account = session.account();
            Ok((account.role == Role::Clinician).then(|| account.id.as_uuid()))
        }
    }
}

struct ClinicianLink {
    id: Uuid,
    name: String,
    current: bool,
}

/// The practice's clinicians (public information), with `current` marked.
async fn clinician_links(
    state: &AppState,
    practice: PracticeId,
    current: Option<Uuid>,
) -> Result<Vec<ClinicianLink>, PageError> {
    Ok(state
        .store
        .practice_clinicians(practice)
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|c| ClinicianLink {
            current: Some(c.id.as_uuid()) == current,
            id: c.id.as_uuid(),
            name: c.name,
        })
        .collect())
}

fn clinician_name(links: &[ClinicianLink], id: Uuid) -> String {
    links
        .iter()
        .find(|c| c.id == id)
        .map_or_else(|| "Clinician".to_owned(), |c| c.name.clone())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DayQuery {
    date: String,
    clinician: String,
}

/// `/schedule` for the day and clinician a form named, when they can be read, with `notice`.
fn schedule_url(date: &str, clinician: &str, notice: Option<&str>) -> String {
    let mut query = Vec::new();
    if let Ok(date) = date.trim().parse::<Date>() {
        query.push(format!("date={date}"));
    }
    if let Ok(clinician) = Uuid::parse_str(clinician.trim()) {
        query.push(format!("clinician={clinician}"));
    }
    query.extend(notice.map(|n| format!("notice={n}")));
    if query.is_empty() {
        "/schedule".to_owned()
    } else {
        format!("/schedule?{}", query.join("&"))
    }
}

fn waited(minutes: i64) -> String {
    match minutes {
        ..=0 => "less than a minute".to_owned(),
        1 => "1 minute".to_owned(),
        n => format!("{n} minutes"),
    }
}

struct ScheduleRow {
    id: Uuid,
    time: String,
    patient: String,
    kind: &'static str,
    status: &'static str,
    waiting: Option<String>,
    /// Only the appointment's own clinician runs it.
    can_start: bool,
    can_complete: bool,
    can_record_no_show: bool,
    can_cancel: bool,
    /// The patient shared their symptom check with this appointment (shown to its own clinician only).
    symptom_check: bool,
}

fn schedule_row(item: ScheduleItem, own: bool) -> ScheduleRow {
    let status = item.status.as_str();
    ScheduleRow {
        can_start: own && status == "checked_in",
        can_complete: own && status == "in_consultation",
        can_record_no_show: own && matches!(status, "booked" | "checked_in"),
        can_cancel: matches!(status, "booked" | "checked_in"),
        id: item.appointment_id,
        time: item.local_start,
        patient: item.patient_name,
        kind: kind_label(&item.kind),
        status: appointment_status_label(status),
        waiting: item.waiting_minutes.map(waited),
        symptom_check: false,
    }
}

struct DayPanel {
    clinician_id: Uuid,
    clinician: String,
    /// YYYY-MM-DD, sent back with each form.
    date: String,
    heading: String,
    previous: String,
    next: String,
    zone: String,
    appointments: Vec<ScheduleRow>,
    queue: Vec<ScheduleRow>,
}

fn day_panel(view: DayView, clinician: String, own: bool) -> DayPanel {
    let date = view.date.parse::<Date>().ok();
    let link = |d: Option<Date>| {
        let d = d.map(|d| d.to_string()).unwrap_or_default();
        schedule_url(&d, &view.clinician_id.to_string(), None)
    };
    DayPanel {
        clinician_id: view.clinician_id,
        clinician,
        heading: date.map_or_else(|| view.date.clone(), |d| d.strftime("%A %-d %B %Y").to_string()),
        previous: link(date.and_then(|d| d.yesterday().ok())),
        next: link(date.and_then(|d| d.tomorrow().ok())),
        zone: view.time_zone,
        appointments: view
            .appointments
            .into_iter()
            .map(|a| schedule_row(a, own))
            .collect(),
        queue: view.queue.into_iter().map(|a| schedule_row(a, own)).collect(),
        date: view.date,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "schedule.html")]
struct SchedulePage {
    layout: Layout,
    practice: String,
    clinicians: Vec<ClinicianLink>,
    day: Option<DayPanel>,
    /// Where waiting-room.js reloads the page from, so that waiting times stay current; only on a
    /// plain view, never over a problem being shown.
    refresh: Option<String>,
    error: Problem,
}

async fn schedule_page(
    state: &AppState,
    session: &Session,
    layout: Layout,
    query: DayQuery,
    request: &RequestId,
    (status, error): (StatusCode, Problem),
) -> Result<Response, PageError> {
    let practice_id = staff_practice(session)?;
    let practice = api::practices::get(state, practice_id).await?;
    let clinician = chosen_clinician(session, &query.clinician)?;
    let clinicians = clinician_links(state, practice_id, clinician).await?;
    let date = non_empty(&query.date);
    let (status, error, day) = match clinician {
        None => (status, error, None),
        Some(id) => match api::availability::day(state, session, id, date.as_deref(), request).await {
            Ok(view) => {
                let own = id == session.account().id.as_uuid();
                (
                    status,
                    error,
                    Some(day_panel(view, clinician_name(&clinicians, id), own)),
                )
            }
            Err(e) => {
                let (status, error) = problem(e)?;
                (status, error, None)
            }
        },
    };
    let mut day = day;
    if let Some(panel) = day
        .as_mut()
        .filter(|d| d.clinician_id == session.account().id.as_uuid())
    {
        for row in panel.appointments.iter_mut() {
            row.symptom_check = state
                .store
                .appointment_has_triage(AppointmentId::from_uuid(row.id))
                .await
                .map_err(ApiError::from)?;
        }
    }
    let refresh = day
        .as_ref()
        .filter(|_| error.message().is_none())
        .map(|d| schedule_url(&d.date, &d.clinician_id.to_string(), None));
    let page = SchedulePage {
        layout,
        practice: practice.name,
        clinicians,
        day,
        refresh,
        error,
    };
    Ok((status, page).into_response())
}

pub async fn day(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PageQuery(query): PageQuery<DayQuery>,
    PageQuery(notice): PageQuery<NoticeQuery>,
) -> Result<Response, PageError> {
    let layout = Layout::new(Some(&session), &csrf).with_notice(&notice);
    let shown = (StatusCode::OK, Problem::none());
    schedule_page(&state, &session, layout, query, &request, shown).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ActionForm {
    /// start, complete, no_show or cancel: the value of the button pressed.
    action: String,
    /// For the patient, when cancelling.
    message: String,
    /// The day and clinician shown, to return to.
    date: String,
    clinician: String,
}

/// Moves an appointment on from the schedule: start, complete, no show, or cancel.
pub async fn act(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
    CsrfForm(form): CsrfForm<ActionForm>,
) -> Result<Response, PageError> {
    staff_practice(&session)?;
    let run_to = match form.action.as_str() {
        "start" => Some((AppointmentStatus::InConsultation, "started")),
        "complete" => Some((AppointmentStatus::Completed, "completed")),
        "no_show" => Some((AppointmentStatus::NoShow, "no_show")),
        "cancel" => None,
        _ => {
            return Err(PageError::BadRequest(
                "Choose what to do with the appointment.".to_owned(),
            ));
        }
    };
    let (result, notice) = match run_to {
        Some((to, notice)) => (
            api::appointments::run(&state, &session, id, to, &request).await,
            notice,
        ),
        None => (
            api::appointments::cancel(&state, &session, id, Some(&form.message), &request).await,
            "cancelled",
        ),
    };
    match result {
        Ok(_) => Ok(Redirect::to(&schedule_url(&form.date, &form.clinician, Some(notice))).into_response()),
        Err(e) => {
            let shown = problem(e)?;
            let query = DayQuery {
                date: form.date,
                clinician: form.clinician,
            };
            let layout = Layout::new(Some(&session), &csrf);
            schedule_page(&state, &session, layout, query, &request, shown).await
        }
    }
}

const WEEKDAYS: [(&str, &str); 7] = [
    ("1", "Monday"),
    ("2", "Tuesday"),
    ("3", "Wednesday"),
    ("4", "Thursday"),
    ("5", "Friday"),
    ("6", "Saturday"),
    ("7", "Sunday"),
];
const SLOT_LENGTHS: [(&str, &str); 4] = [
    ("10", "10 minutes"),
    ("15", "15 minutes"),
    ("20", "20 minutes"),
    ("30", "30 minutes"),
];
const KINDS: [(&str, &str); 3] = [
    ("either", "Video or audio"),
    ("video", "Video only"),
    ("audio", "Audio only"),
];
const DAY_CHANGES: [(&str, &str); 2] = [
    ("blocked", "Not available (leave, a closed afternoon)"),
    ("extra", "An extra session"),
];

struct Choice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

fn choices(options: &[(&'static str, &'static str)], current: &str) -> Vec<Choice> {
    options
        .iter()
        .map(|&(value, label)| Choice {
            value,
            label,
            selected: value == current.trim(),
        })
        .collect()
}

fn label_of(options: &[(&'static str, &'static str)], value: &str) -> &'static str {
    options
        .iter()
        .find(|(v, _)| *v == value)
        .map_or("Unknown", |(_, label)| label)
}

struct RuleRow {
    id: Uuid,
    weekday: &'static str,
    start: String,
    end: String,
    slot_minutes: i64,
    kinds: &'static str,
    valid_from: String,
    valid_until: Option<String>,
}

impl From<RuleView> for RuleRow {
    fn from(r: RuleView) -> Self {
        RuleRow {
            id: r.id,
            weekday: label_of(&WEEKDAYS, &r.weekday.to_string()),
            start: r.start,
            end: r.end,
            slot_minutes: r.slot_minutes,
            kinds: kind_label(&r.kinds),
            valid_from: long_date(&r.valid_from),
            valid_until: r.valid_until.as_deref().map(long_date),
        }
    }
}

struct ExceptionRow {
    id: Uuid,
    date: String,
    what: String,
    hours: String,
    note: String,
}

impl From<ExceptionView> for ExceptionRow {
    fn from(e: ExceptionView) -> Self {
        let what = match (e.kind.as_str(), e.slot_minutes, e.kinds.as_deref()) {
            ("extra", Some(minutes), Some(kinds)) => {
                format!("Extra session: {minutes}-minute slots, {}", kind_label(kinds))
            }
            ("extra", ..) => "Extra session".to_owned(),
            _ => "Not available".to_owned(),
        };
        let hours = if e.start == "00:00" && e.end == "24:00" {
            "All day".to_owned()
        } else {
            format!("{} to {}", e.start, e.end)
        };
        ExceptionRow {
            id: e.id,
            date: long_date(&e.date),
            what,
            hours,
            note: e.note,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub struct RuleForm {
    clinician: String,
    weekday: String,
    start: String,
    end: String,
    slot_minutes: String,
    kinds: String,
    valid_from: String,
    valid_until: String,
}

impl Default for RuleForm {
    /// What a new form suggests: a morning session of 15-minute slots.
    fn default() -> Self {
        RuleForm {
            clinician: String::new(),
            weekday: "1".to_owned(),
            start: "09:00".to_owned(),
            end: "12:00".to_owned(),
            slot_minutes: "15".to_owned(),
            kinds: "either".to_owned(),
            valid_from: String::new(),
            valid_until: String::new(),
        }
    }
}

/// The add-a-session form, as entered.
struct RuleFields {
    weekdays: Vec<Choice>,
    start: String,
    end: String,
    slot_lengths: Vec<Choice>,
    kinds: Vec<Choice>,
    valid_from: String,
    valid_until: String,
}

impl From<RuleForm> for RuleFields {
    fn from(f: RuleForm) -> Self {
        RuleFields {
            weekdays: choices(&WEEKDAYS, &f.weekday),
            start: f.start,
            end: f.end,
            slot_lengths: choices(&SLOT_LENGTHS, &f.slot_minutes),
            kinds: choices(&KINDS, &f.kinds),
            valid_from: f.valid_from,
            valid_until: f.valid_until,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub struct ExceptionForm {
    clinician: String,
    date: String,
    kind: String,
    start: String,
    end: String,
    slot_minutes: String,
    kinds: String,
    note: String,
}

impl Default for ExceptionForm {
    /// What a new form suggests: a whole day off.
    fn default() -> Self {
        ExceptionForm {
            clinician: String::new(),
            date: String::new(),
            kind: "blocked".to_owned(),
            start: String::new(),
            end: String::new(),
            slot_minutes: "15".to_owned(),
            kinds: "either".to_owned(),
            note: String::new(),
        }
    }
}

/// The change-a-day form, as entered.
struct ExceptionFields {
    date: String,
    day_changes: Vec<Choice>,
    start: String,
    end: String,
    slot_lengths: Vec<Choice>,
    kinds: Vec<Choice>,
    note: String,
}

impl From<ExceptionForm> for ExceptionFields {
    fn from(f: ExceptionForm) -> Self {
        ExceptionFields {
            date: f.date,
            day_changes: choices(&DAY_CHANGES, &f.kind),
            start: f.start,
            end: f.end,
            slot_lengths: choices(&SLOT_LENGTHS, &f.slot_minutes),
            kinds: choices(&KINDS, &f.kinds),
            note: f.note,
        }
    }
}

/// What the availability page's forms show: fresh suggestions, or what was entered when it was refused.
struct Entered {
    rule: RuleFields,
    exception: ExceptionFields,
    cutoff: String,
}

impl Default for Entered {
    fn default() -> Self {
        Entered {
            rule: RuleForm::default().into(),
            exception: ExceptionForm::default().into(),
            cutoff: String::new(),
        }
    }
}

struct AvailabilityPanel {
    clinician_id: Uuid,
    clinician: String,
    zone: String,
    rules: Vec<RuleRow>,
    exceptions: Vec<ExceptionRow>,
}

#[derive(Template, WebTemplate)]
#[template(path = "availability.html")]
struct AvailabilityPage {
    layout: Layout,
    practice: String,
    /// Practice admins choose whose availability to manage; clinicians manage their own.
    clinicians: Option<Vec<ClinicianLink>>,
    panel: Option<AvailabilityPanel>,
    rule: RuleFields,
    exception: ExceptionFields,
    /// Practice admins only: the practice's booking cutoff form, with what was entered.
    cutoff: Option<String>,
    error: Problem,
}

async fn availability_page(
    state: &AppState,
    session: &Session,
    layout: Layout,
    asked: &str,
    request: &RequestId,
    entered: Entered,
    (status, error): (StatusCode, Problem),
) -> Result<Response, PageError> {
    let practice_id = staff_practice(session)?;
    let practice = api::practices::get(state, practice_id).await?;
    let admin = session.account().role == Role::PracticeAdmin;
    let clinician = chosen_clinician(session, asked)?;
    let links = clinician_links(state, practice_id, clinician).await?;
    let (status, error, panel) = match clinician {
        None => (status, error, None),
        Some(id) => match api::availability::availability(state, session, id, request).await {
            Ok(view) => {
                let panel = AvailabilityPanel {
                    clinician_id: id,
                    clinician: clinician_name(&links, id),
                    zone: view.time_zone,
                    rules: view.rules.into_iter().map(RuleRow::from).collect(),
                    exceptions: view.exceptions.into_iter().map(ExceptionRow::from).collect(),
                };
                (status, error, Some(panel))
            }
            Err(e) => {
                let (status, error) = problem(e)?;
                (status, error, None)
            }
        },
    };
    let page = AvailabilityPage {
        layout,
        practice: practice.name,
        clinicians: admin.then_some(links),
        panel,
        rule: entered.rule,
        exception: entered.exception,
        cutoff: admin.then_some(entered.cutoff),
        error,
    };
    Ok((status, page).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AvailabilityQuery {
    clinician: String,
}

pub async fn availability(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PageQuery(query): PageQuery<AvailabilityQuery>,
    PageQuery(notice): PageQuery<NoticeQuery>,
) -> Result<Response, PageError> {
    let layout = Layout::new(Some(&session), &csrf).with_notice(&notice);
    let shown = (StatusCode::OK, Problem::none());
    availability_page(
        &state,
        &session,
        layout,
        &query.clinician,
        &request,
        Entered::default(),
        shown,
    )
    .await
}

/// `/availability` for `clinician` (when one was named), with `notice`.
fn availability_url(clinician: Option<Uuid>, notice: &str) -> String {
    match clinician {
        Some(c) => format!("/availability?clinician={c}&notice={notice}"),
        None => format!("/availability?notice={notice}"),
    }
}

/// The clinician a form is about; a form that names none cannot have come from the page.
fn form_clinician(raw: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(raw.trim()).map_err(|_| PageError::NotFound)
}

/// After a change to availability: back to the page with `notice`, or with the problem and what was
/// entered.
async fn after_change(
    (state, session, csrf, request): (&AppState, &Session, &CsrfToken, &RequestId),
    clinician: Uuid,
    result: Result<(), ApiError>,
    notice: &str,
    entered: Entered,
) -> Result<Response, PageError> {
    match result {
        Ok(()) => Ok(Redirect::to(&availability_url(Some(clinician), notice)).into_response()),
        Err(e) => {
            let shown = problem(e)?;
            let layout = Layout::new(Some(session), csrf);
            let asked = clinician.to_string();
            availability_page(state, session, layout, &asked, request, entered, shown).await
        }
    }
}

pub async fn add_rule(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<RuleForm>,
) -> Result<Response, PageError> {
    staff_practice(&session)?;
    let clinician = form_clinician(&form.clinician)?;
    // Unreadable numbers become ones the service refuses, with its explanation.
    let rule = NewRule {
        weekday: form.weekday.trim().parse().unwrap_or(0),
        start: form.start.trim().to_owned(),
        end: form.end.trim().to_owned(),
        slot_minutes: form.slot_minutes.trim().parse().unwrap_or(0),
        kinds: form.kinds.trim().to_owned(),
        valid_from: non_empty(&form.valid_from),
        valid_until: non_empty(&form.valid_until),
    };
    let result = api::availability::add_rule(&state, &session, clinician, rule, &request)
        .await
        .map(drop);
    let entered = Entered {
        rule: form.into(),
        ..Entered::default()
    };
    let context = (&state, &session, &csrf, &request);
    after_change(context, clinician, result, "rule_added", entered).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RemoveForm {
    clinician: String,
    id: String,
}

pub async fn remove_rule(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<RemoveForm>,
) -> Result<Response, PageError> {
    staff_practice(&session)?;
    let clinician = form_clinician(&form.clinician)?;
    let rule = Uuid::parse_str(form.id.trim()).map_err(|_| PageError::NotFound)?;
    let result = api::availability::remove_rule(&state, &session, clinician, rule, &request).await;
    let context = (&state, &session, &csrf, &request);
    after_change(context, clinician, result, "rule_removed", Entered::default()).await
}

pub async fn add_exception(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<ExceptionForm>,
) -> Result<Response, PageError> {
    staff_practice(&session)?;
    let clinician = form_clinician(&form.clinician)?;
    let extra = form.kind.trim() == "extra";
    let change = NewException {
        date: form.date.trim().to_owned(),
        kind: form.kind.trim().to_owned(),
        start: non_empty(&form.start),
        end: non_empty(&form.end),
        // Slot length and kinds are for extra sessions; a blocked time offers no slots.
        slot_minutes: extra.then(|| form.slot_minutes.trim().parse().unwrap_or(0)),
        kinds: non_empty(&form.kinds).filter(|_| extra),
        note: form.note.trim().to_owned(),
    };
    let result = api::availability::add_exception(&state, &session, clinician, change, &request)
        .await
        .map(drop);
    let entered = Entered {
        exception: form.into(),
        ..Entered::default()
    };
    let context = (&state, &session, &csrf, &request);
    after_change(context, clinician, result, "exception_added", entered).await
}

pub async fn remove_exception(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<RemoveForm>,
) -> Result<Response, PageError> {
    staff_practice(&session)?;
    let clinician = form_clinician(&form.clinician)?;
    let exception = Uuid::parse_str(form.id.trim()).map_err(|_| PageError::NotFound)?;
    let result = api::availability::remove_exception(&state, &session, clinician, exception, &request).await;
    let context = (&state, &session, &csrf, &request);
    after_change(
        context,
        clinician,
        result,
        "exception_removed",
        Entered::default(),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CutoffForm {
    minutes: String,
    /// The clinician whose availability was shown, to return to.
    clinician: String,
}

pub async fn set_cutoff(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<CutoffForm>,
) -> Result<Response, PageError> {
    let practice = staff_practice(&session)?;
    let shown = match form.minutes.trim().parse::<i64>() {
        Ok(minutes) => {
            match api::availability::set_cutoff(&state, &session, practice.as_uuid(), minutes, &request).await
            {
                Ok(_) => {
                    let clinician = Uuid::parse_str(form.clinician.trim()).ok();
                    return Ok(Redirect::to(&availability_url(clinician, "cutoff_saved")).into_response());
                }
                Err(e) => problem(e)?,
            }
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            Problem {
                message: Some("Enter the cutoff as a whole number of minutes, such as 120.".to_owned()),
                field: Some("minutes"),
            },
        ),
    };
    let entered = Entered {
        cutoff: form.minutes,
        ..Entered::default()
    };
    let layout = Layout::new(Some(&session), &csrf);
    availability_page(
        &state,
        &session,
        layout,
        &form.clinician,
        &request,
        entered,
        shown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_links_keep_only_what_can_be_read() {
        let id = Uuid::nil();
        assert_eq!(
            schedule_url("2026-07-06", &id.to_string(), Some("started")),
            format!("/schedule?date=2026-07-06&clinician={id}&notice=started")
        );
        assert_eq!(
            schedule_url("\r\nLocation: x", "evil", Some("started")),
            "/schedule?notice=started"
        );
        assert_eq!(schedule_url("", "", None), "/schedule");
    }

    #[test]
    fn waiting_times_read_naturally() {
        assert_eq!(waited(0), "less than a minute");
        assert_eq!(waited(1), "1 minute");
        assert_eq!(waited(12), "12 minutes");
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "symptom_check.html")]
struct SymptomCheckPage {
    layout: Layout,
    patient: String,
    time: String,
    back: String,
    summary: TriageSummaryView,
}

/// The symptom check a patient shared with an appointment, for that appointment's own clinician (and the
/// patient); anyone else, and an appointment without one, gets the same 404.
pub async fn symptom_check(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
) -> Result<Response, PageError> {
    let appointment = api::appointments::get(&state, &session, id, &request).await?;
    let summary = appointment.triage_summary.ok_or(PageError::NotFound)?;
    // `local_start` is RFC 3339 in the practice's zone: its date and hh:mm are the appointment's own.
    let date = appointment.local_start.get(..10).unwrap_or_default();
    let time = appointment.local_start.get(11..16).unwrap_or_default();
    let page = SymptomCheckPage {
        layout: Layout::new(Some(&session), &csrf),
        patient: appointment.patient_name,
        time: format!("{}, {time}", long_date(date)),
        back: schedule_url(date, &appointment.clinician_id.to_string(), None),
        summary,
    };
    Ok(page.into_response())
}

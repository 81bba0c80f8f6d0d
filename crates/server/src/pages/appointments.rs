//! A patient's appointments: booking a free slot, each appointment's page with its live waiting room,
//! and moving or cancelling it.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use confide_domain::identity::Role;
use confide_domain::{PracticeId, Timestamp};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde::Deserialize;
use uuid::Uuid;

use super::account::NoFields;
use super::csrf::{CsrfForm, CsrfToken};
use super::{
    Layout, NoticeQuery, PageError, PagePath, PageQuery, Problem, SignedIn, When, appointment_status_label,
    kind_label, local_when, non_empty, problem,
};
use crate::AppState;
use crate::api;
use crate::api::appointments::{AppointmentView, BookRequest, RescheduleRequest, SlotView, SlotsQuery};
use crate::auth::Session;
use crate::error::ApiError;
use crate::gate::RequestId;

/// How many days one page of free slots covers.
const DAYS_SHOWN: i64 = 7;

/// What the waiting room says in each status. waiting-room.js shows the same texts, read from the page.
const LIVE_TEXTS: [(&str, &str); 6] = [
    ("booked", "Booked"),
    (
        "checked_in",
        "You are in the waiting room. Your clinician will start the consultation.",
    ),
    (
        "in_consultation",
        "Your clinician is ready: the consultation has started.",
    ),
    ("completed", "The consultation is complete."),
    ("cancelled", "This appointment was cancelled."),
    ("no_show", "This appointment was recorded as missed."),
];

fn live_text(status: &str) -> &'static str {
    LIVE_TEXTS
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("Unknown", |(_, text)| text)
}

/// The patient's own id: these pages are for patients, and anyone else gets the not-found page.
fn own_patient_id(session: &Session) -> Result<Uuid, PageError> {
    let account = session.account();
    if account.role == Role::Patient {
        Ok(account.id.as_uuid())
    } else {
        Err(PageError::NotFound)
    }
}

/// A query-string value, percent-encoded.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?notice=` for a moment of an appointment's life.
fn appointment_url(id: Uuid, notice: &str) -> String {
    format!("/appointments/{id}?notice={notice}")
}

struct AppointmentRow {
    id: Uuid,
    when: When,
    clinician: String,
    kind: &'static str,
    status: &'static str,
}

impl From<&AppointmentView> for AppointmentRow {
    fn from(a: &AppointmentView) -> Self {
        AppointmentRow {
            id: a.id,
            when: local_when(&a.start, &a.time_zone),
            clinician: a.clinician_name.clone(),
            kind: kind_label(&a.kind),
            status: appointment_status_label(&a.status),
        }
    }
}

/// Whether the appointment is still ahead: not finished, and not over.
fn is_upcoming(a: &AppointmentView, now: Timestamp) -> bool {
    let live = matches!(a.status.as_str(), "booked" | "checked_in" | "in_consultation");
    live && a.end.parse::<Timestamp>().is_ok_and(|end| end > now)
}

#[derive(Template, WebTemplate)]
#[template(path = "appointments.html")]
pub struct ListPage {
    layout: Layout,
    /// The practice the patient can book with, if they are registered.
    practice: Option<String>,
    /// Soonest first.
    upcoming: Vec<AppointmentRow>,
    /// Most recent first.
    past: Vec<AppointmentRow>,
}

pub async fn list(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PageQuery(notice): PageQuery<NoticeQuery>,
) -> Result<ListPage, PageError> {
    let id = own_patient_id(&session)?;
    let profile = api::patients::profile(&state, &session, id, &request).await?;
    let now = state.clock.now();
    let (upcoming, past): (Vec<_>, Vec<_>) = api::appointments::mine(&state, &session, &request)
        .await?
        .into_iter()
        .partition(|a| is_upcoming(a, now));
    Ok(ListPage {
        layout: Layout::new(Some(&session), &csrf).with_notice(&notice),
        practice: profile.registered_practice_name,
        upcoming: upcoming.iter().map(AppointmentRow::from).collect(),
        past: past.iter().rev().map(AppointmentRow::from).collect(),
    })
}

/// A free slot as the service describes it, whether listed or suggested after a refusal.
#[derive(Deserialize)]
struct FreeSlot {
    clinician_id: Uuid,
    clinician_name: String,
    start: String,
    /// In the zone the patient asked for, with its offset.
    local_start: String,
    kinds: String,
}

impl From<SlotView> for FreeSlot {
    fn from(s: SlotView) -> Self {
        FreeSlot {
            clinician_id: s.clinician_id,
            clinician_name: s.clinician_name,
            start: s.start,
            local_start: s.local_start,
            kinds: s.kinds,
        }
    }
}

struct KindChoice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

/// The kinds a slot offers, with `preferred` chosen when it is one of them.
fn kind_choices(kinds: &str, preferred: Option<&str>) -> Vec<KindChoice> {
    let offered: &[&'static str] = match kinds {
        "either" => &["video", "audio"],
        "video" => &["video"],
        "audio" => &["audio"],
        _ => &[],
    };
    let chosen = preferred
        .filter(|p| offered.contains(p))
        .or(offered.first().copied());
    offered
        .iter()
        .map(|&value| KindChoice {
            value,
            label: kind_label(value),
            selected: Some(value) == chosen,
        })
        .collect()
}

struct SlotRow {
    /// Unique on the page, for the ids of the slot's fields.
    key: String,
    clinician_id: Uuid,
    clinician: String,
    /// RFC 3339, what the form sends.
    start: String,
    /// HH:MM in the zone shown.
    time: String,
    /// "Monday 5 January", for the button's full name.
    day: String,
    kinds: Vec<KindChoice>,
}

struct SlotDay {
    heading: String,
    slots: Vec<SlotRow>,
}

fn slot_row(key: String, slot: FreeSlot, preferred: Option<&str>) -> Option<(Date, SlotRow)> {
    // A civil date-time ignores the offset: the local date and time are what people choose by.
    let local: DateTime = slot.local_start.parse().ok()?;
    let row = SlotRow {
        key,
        clinician_id: slot.clinician_id,
        clinician: slot.clinician_name,
        start: slot.start,
        time: local.strftime("%H:%M").to_string(),
        day: local.strftime("%A %-d %B").to_string(),
        kinds: kind_choices(&slot.kinds, preferred),
    };
    Some((local.date(), row))
}

/// Slots, soonest first, grouped by their local day.
fn group_by_day(slots: Vec<FreeSlot>, preferred: Option<&str>) -> Vec<SlotDay> {
    let mut days: Vec<(Date, SlotDay)> = Vec::new();
    for (n, slot) in slots.into_iter().enumerate() {
        let Some((date, row)) = slot_row(format!("s{n}"), slot, preferred) else {
            continue;
        };
        match days.last_mut() {
            Some((last, day)) if *last == date => day.slots.push(row),
            _ => days.push((
                date,
                SlotDay {
                    heading: row.day.clone(),
                    slots: vec![row],
                },
            )),
        }
    }
    days.into_iter().map(|(_, day)| day).collect()
}

/// A list of free slots to choose from, a week at a time, each slot a form of its own.
#[derive(Default)]
struct SlotPicker {
    /// Where each slot's form posts.
    action: String,
    /// Booking asks for a reason and names the clinician; moving keeps both.
    booking: bool,
    /// The time zone asked for, sent back with each form; empty for the practice's.
    tz: String,
    /// The zone the times are in.
    zone: String,
    /// The first day shown, YYYY-MM-DD.
    from: String,
    earlier: Option<String>,
    later: String,
    days: Vec<SlotDay>,
    /// Other free times, after the one chosen was taken.
    alternatives: Vec<SlotRow>,
    /// The symptom check whose summary the patient chose to share with the booking; empty for none.
    triage: String,
}

/// The first day to show: the one asked for, but never before today.
fn first_day(from: &str, today: Date) -> Date {
    from.trim()
        .parse::<Date>()
        .ok()
        .filter(|d| *d > today)
        .unwrap_or(today)
}

impl SlotPicker {
    /// The week starting at `first`, with links to the weeks around it at `page` plus `filters` (a
    /// query string of other parameters, starting with `&`).
    fn week(first: Date, today: Date, page: &str, filters: &str) -> SlotPicker {
        let link = |d: Date| format!("{page}?from={d}{filters}");
        let shift = |days: i64| first.checked_add(jiff::Span::new().days(days)).ok();
        SlotPicker {
            from: first.to_string(),
            earlier: (first > today).then(|| link(shift(-DAYS_SHOWN).map_or(today, |d| d.max(today)))),
            later: link(shift(DAYS_SHOWN).unwrap_or(first)),
            ..SlotPicker::default()
        }
    }

    fn with_alternatives(mut self, alternatives: Vec<FreeSlot>, preferred: Option<&str>) -> SlotPicker {
        self.alternatives = alternatives
            .into_iter()
            .enumerate()
            .filter_map(|(n, slot)| slot_row(format!("a{n}"), slot, preferred))
            .map(|(_, row)| row)
            .collect();
        self
    }
}

/// A refused booking or move: its problem, and the free times suggested instead when it was taken.
fn refusal(e: ApiError) -> Result<(StatusCode, Problem, Vec<FreeSlot>), PageError> {
    let alternatives = match &e {
        ApiError::SlotTaken { next_free } => {
            serde_json::from_value::<Vec<FreeSlot>>(next_free.clone()).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let (status, error) = problem(e)?;
    Ok((status, error, alternatives))
}

/// Today's date in the practice's time zone `zone`.
fn practice_today(state: &AppState, zone: &str) -> Result<Date, PageError> {
    let tz = TimeZone::get(zone).map_err(|e| PageError::Unavailable(format!("time zone {zone}: {e}")))?;
    Ok(state.clock.now().to_zoned(tz).date())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BookQuery {
    from: String,
    kind: String,
    tz: String,
    clinician_id: String,
    /// From a symptom check's result: which one, and whether the patient ticked to share it.
    triage: String,
    share: String,
}

struct ClinicianChoice {
    id: Uuid,
    name: String,
    selected: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "appointments_book.html")]
struct BookPage {
    layout: Layout,
    /// None when the patient is registered nowhere: they are told to register first.
    practice: Option<String>,
    kind: String,
    tz: String,
    clinicians: Vec<ClinicianChoice>,
    picker: SlotPicker,
    error: Problem,
}

/// The booking page for `query`, with `error` (and its status) and `alternatives` after a refusal.
async fn book_page(
    state: &AppState,
    session: &Session,
    layout: Layout,
    query: BookQuery,
    request: &RequestId,
    (status, error, alternatives): (StatusCode, Problem, Vec<FreeSlot>),
) -> Result<Response, PageError> {
    let id = own_patient_id(session)?;
    let profile = api::patients::profile(state, session, id, request).await?;
    let Some(practice_id) = profile.registered_practice_id else {
        let page = BookPage {
            layout,
            practice: None,
            kind: query.kind,
            tz: query.tz,
            clinicians: Vec::new(),
            picker: SlotPicker::default(),
            error,
        };
        return Ok((status, page).into_response());
    };
    let practice = api::practices::get(state, PracticeId::from_uuid(practice_id)).await?;
    let clinician = match non_empty(&query.clinician_id) {
        Some(raw) => Some(Uuid::parse_str(&raw).map_err(|_| PageError::NotFound)?),
        None => None,
    };
    let clinicians = state
        .store
        .practice_clinicians(PracticeId::from_uuid(practice_id))
        .await
        .map_err(ApiError::from)?
        .into_iter()
        .map(|c| ClinicianChoice {
            selected: Some(c.id.as_uuid()) == clinician,
            id: c.id.as_uuid(),
            name: c.name,
        })
        .collect();
    let today = practice_today(state, &practice.time_zone)?;
    let triage = match non_empty(&query.triage).filter(|_| query.share == "yes") {
        Some(raw) => Uuid::parse_str(&raw)
            .map_err(|_| PageError::NotFound)?
            .to_string(),
        None => String::new(),
    };
    let mut filters = format!(
        "&kind={}&tz={}&clinician_id={}",
        encode(&query.kind),
        encode(&query.tz),
        clinician.map(|c| c.to_string()).unwrap_or_default()
    );
    if !triage.is_empty() {
        filters.push_str(&format!("&triage={triage}&share=yes"));
    }
    let preferred = non_empty(&query.kind);
    let mut picker = SlotPicker::week(
        first_day(&query.from, today),
        today,
        "/appointments/book",
        &filters,
    )
    .with_alternatives(alternatives, preferred.as_deref());
    picker.action = "/appointments/book".to_owned();
    picker.booking = true;
    picker.triage = triage;
    picker.tz = query.tz.clone();
    picker.zone = non_empty(&query.tz).unwrap_or_else(|| practice.time_zone.clone());
    let slots = SlotsQuery {
        from: non_empty(&query.from),
        days: Some(DAYS_SHOWN),
        kind: preferred.clone(),
        tz: non_empty(&query.tz),
        clinician_id: clinician,
    };
    let (status, error) = match api::appointments::slots(state, session, practice_id, &slots, request).await {
        Ok(found) => {
            let found = found.into_iter().map(FreeSlot::from).collect();
            picker.days = group_by_day(found, preferred.as_deref());
            (status, error)
        }
        Err(e) => problem(e)?,
    };
    let page = BookPage {
        layout,
        practice: Some(practice.name),
        kind: query.kind,
        tz: query.tz,
        clinicians,
        picker,
        error,
    };
    Ok((status, page).into_response())
}

pub async fn book_form(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PageQuery(query): PageQuery<BookQuery>,
) -> Result<Response, PageError> {
    let layout = Layout::new(Some(&session), &csrf);
    let shown = (StatusCode::OK, Problem::none(), Vec::new());
    book_page(&state, &session, layout, query, &request, shown).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BookForm {
    clinician_id: String,
    start: String,
    kind: String,
    reason: String,
    tz: String,
    /// The first day of the list the slot was chosen from, to show it again if booking fails.
    from: String,
    /// A symptom check to share with the clinician; empty for none.
    triage_session_id: String,
}

pub async fn book(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<BookForm>,
) -> Result<Response, PageError> {
    own_patient_id(&session)?;
    let clinician_id = Uuid::parse_str(form.clinician_id.trim()).map_err(|_| PageError::NotFound)?;
    let triage_session_id = match non_empty(&form.triage_session_id) {
        Some(raw) => Some(Uuid::parse_str(&raw).map_err(|_| PageError::NotFound)?),
        None => None,
    };
    let booking = BookRequest {
        clinician_id,
        start: form.start,
        kind: form.kind,
        reason: form.reason,
        tz: non_empty(&form.tz),
        triage_session_id,
    };
    match api::appointments::book(&state, &session, &booking, &request).await {
        Ok(booked) => Ok(Redirect::to(&appointment_url(booked.id, "booked")).into_response()),
        Err(e) => {
            let query = BookQuery {
                from: form.from,
                tz: form.tz,
                share: if triage_session_id.is_some() {
                    "yes".to_owned()
                } else {
                    String::new()
                },
                triage: form.triage_session_id,
                ..BookQuery::default()
            };
            let layout = Layout::new(Some(&session), &csrf);
            book_page(&state, &session, layout, query, &request, refusal(e)?).await
        }
    }
}

struct LiveText {
    status: &'static str,
    text: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "appointments_detail.html")]
struct DetailPage {
    layout: Layout,
    id: Uuid,
    practice: String,
    clinician: String,
    when: When,
    kind: &'static str,
    reason: String,
    status: String,
    live: &'static str,
    live_texts: Vec<LiveText>,
    cancel_message: Option<String>,
    /// Check in, and move: only before the consultation.
    booked: bool,
    /// Cancel: until the consultation starts.
    cancellable: bool,
    error: Problem,
}

fn detail_page(layout: Layout, a: AppointmentView, (status, error): (StatusCode, Problem)) -> Response {
    let page = DetailPage {
        layout,
        id: a.id,
        when: local_when(&a.start, &a.time_zone),
        practice: a.practice_name,
        clinician: a.clinician_name,
        kind: kind_label(&a.kind),
        reason: a.reason,
        live: live_text(&a.status),
        live_texts: LIVE_TEXTS
            .iter()
            .map(|&(status, text)| LiveText { status, text })
            .collect(),
        cancel_message: a.cancel_message,
        booked: a.status == "booked",
        cancellable: matches!(a.status.as_str(), "booked" | "checked_in"),
        status: a.status,
        error,
    };
    (status, page).into_response()
}

pub async fn detail(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
    PageQuery(notice): PageQuery<NoticeQuery>,
) -> Result<Response, PageError> {
    own_patient_id(&session)?;
    let appointment = api::appointments::get(&state, &session, id, &request).await?;
    let layout = Layout::new(Some(&session), &csrf).with_notice(&notice);
    Ok(detail_page(
        layout,
        appointment,
        (StatusCode::OK, Problem::none()),
    ))
}

/// After a change: to the appointment's page with `notice`, or back to it with the problem.
async fn after_change(
    state: &AppState,
    session: &Session,
    csrf: &CsrfToken,
    request: &RequestId,
    id: Uuid,
    result: Result<AppointmentView, ApiError>,
    notice: &str,
) -> Result<Response, PageError> {
    match result {
        Ok(_) => Ok(Redirect::to(&appointment_url(id, notice)).into_response()),
        Err(e) => {
            let shown = problem(e)?;
            let appointment = api::appointments::get(state, session, id, request).await?;
            Ok(detail_page(Layout::new(Some(session), csrf), appointment, shown))
        }
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, PageError> {
    own_patient_id(&session)?;
    let result = api::appointments::cancel(&state, &session, id, None, &request).await;
    after_change(&state, &session, &csrf, &request, id, result, "cancelled").await
}

pub async fn check_in(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
    CsrfForm(NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, PageError> {
    own_patient_id(&session)?;
    let result = api::appointments::check_in(&state, &session, id, &request).await;
    after_change(&state, &session, &csrf, &request, id, result, "checked_in").await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RescheduleQuery {
    from: String,
    tz: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "appointments_reschedule.html")]
struct ReschedulePage {
    layout: Layout,
    id: Uuid,
    clinician: String,
    when: When,
    /// Only a booked appointment can move.
    movable: bool,
    tz: String,
    picker: SlotPicker,
    error: Problem,
}

/// The page for moving appointment `id` to another of its clinician's free slots.
async fn reschedule_page(
    state: &AppState,
    session: &Session,
    layout: Layout,
    id: Uuid,
    query: RescheduleQuery,
    request: &RequestId,
    (status, error, alternatives): (StatusCode, Problem, Vec<FreeSlot>),
) -> Result<Response, PageError> {
    own_patient_id(session)?;
    let a = api::appointments::get(state, session, id, request).await?;
    let today = practice_today(state, &a.time_zone)?;
    let page_path = format!("/appointments/{id}/reschedule");
    let mut picker = SlotPicker::week(
        first_day(&query.from, today),
        today,
        &page_path,
        &format!("&tz={}", encode(&query.tz)),
    )
    .with_alternatives(alternatives, Some(&a.kind));
    picker.action = page_path;
    picker.tz = query.tz.clone();
    picker.zone = non_empty(&query.tz).unwrap_or_else(|| a.time_zone.clone());
    let movable = a.status == "booked";
    let (status, error) = if movable {
        let slots = SlotsQuery {
            from: non_empty(&query.from),
            days: Some(DAYS_SHOWN),
            kind: None,
            tz: non_empty(&query.tz),
            clinician_id: Some(a.clinician_id),
        };
        match api::appointments::slots(state, session, a.practice_id, &slots, request).await {
            Ok(found) => {
                let found = found.into_iter().map(FreeSlot::from).collect();
                picker.days = group_by_day(found, Some(&a.kind));
                (status, error)
            }
            Err(e) => problem(e)?,
        }
    } else {
        (status, error)
    };
    let page = ReschedulePage {
        layout,
        id,
        when: local_when(&a.start, &a.time_zone),
        clinician: a.clinician_name,
        movable,
        tz: query.tz,
        picker,
        error,
    };
    Ok((status, page).into_response())
}

pub async fn reschedule_form(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
    PageQuery(query): PageQuery<RescheduleQuery>,
) -> Result<Response, PageError> {
    let layout = Layout::new(Some(&session), &csrf);
    let shown = (StatusCode::OK, Problem::none(), Vec::new());
    reschedule_page(&state, &session, layout, id, query, &request, shown).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RescheduleForm {
    start: String,
    kind: String,
    tz: String,
    from: String,
}

pub async fn reschedule(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
    CsrfForm(form): CsrfForm<RescheduleForm>,
) -> Result<Response, PageError> {
    own_patient_id(&session)?;
    let change = RescheduleRequest {
        start: form.start,
        kind: non_empty(&form.kind),
        tz: non_empty(&form.tz),
    };
    match api::appointments::reschedule(&state, &session, id, &change, &request).await {
        Ok(_) => Ok(Redirect::to(&appointment_url(id, "rescheduled")).into_response()),
        Err(e) => {
            let query = RescheduleQuery {
                from: form.from,
                tz: form.tz,
            };
            let layout = Layout::new(Some(&session), &csrf);
            reschedule_page(&state, &session, layout, id, query, &request, refusal(e)?).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(local_start: &str, kinds: &str) -> FreeSlot {
        FreeSlot {
            clinician_id: Uuid::nil(),
            clinician_name: "Dr Grey".to_owned(),
            start: "2026-07-06T08:30:00Z".to_owned(),
            local_start: local_start.to_owned(),
            kinds: kinds.to_owned(),
        }
    }

    #[test]
    fn slots_are_grouped_by_their_local_day() {
        let days = group_by_day(
            vec![
                slot("2026-07-06T09:30+01:00", "either"),
                slot("2026-07-06T09:45+01:00", "audio"),
                slot("2026-07-07T00:15-05:00", "video"),
            ],
            Some("audio"),
        );
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].heading, "Monday 6 July");
        assert_eq!(days[0].slots[0].time, "09:30");
        assert_eq!(days[1].slots[0].time, "00:15");
        let chosen: Vec<_> = days[0].slots[0]
            .kinds
            .iter()
            .map(|k| (k.value, k.selected))
            .collect();
        assert_eq!(chosen, [("video", false), ("audio", true)]);
        assert!(days[1].slots[0].kinds[0].selected, "the only kind offered");
    }

    #[test]
    fn the_week_never_starts_before_today() {
        let today: Date = "2026-07-06".parse().unwrap();
        assert_eq!(first_day("2020-01-01", today), today);
        assert_eq!(first_day("nonsense", today), today);
        let picker = SlotPicker::week(first_day("2026-07-09", today), today, "/p", "&tz=");
        assert_eq!(picker.earlier.as_deref(), Some("/p?from=2026-07-06&tz="));
        assert_eq!(picker.later, "/p?from=2026-07-16&tz=");
        assert_eq!(SlotPicker::week(today, today, "/p", "").earlier, None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("Etc/GMT+1"), "Etc%2FGMT%2B1");
        assert_eq!(encode("a&b=c d"), "a%26b%3Dc%20d");
    }
}

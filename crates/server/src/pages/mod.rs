//! Server-rendered HTML pages for people using a browser. They call the same service functions as the
//! JSON API, so every access to patient data goes through the access gate and the audit log.

mod account;
mod appointments;
mod call;
mod csrf;
mod guest;
mod home;
mod patient;
mod practice;
mod recordings;
mod schedule;
mod triage;

use std::borrow::Cow;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppState;
use crate::auth::{Caller, Session};
use crate::error::ApiError;
use csrf::CsrfToken;

const STYLESHEET: &str = include_str!("../../static/confide.css");
const WAITING_ROOM_JS: &str = include_str!("../../static/waiting-room.js");
const CALL_JS: &str = include_str!("../../static/call.js");
const RECORDING_JS: &str = include_str!("../../static/recording.js");

/// Every page route, and the stylesheet and script they share. The CSRF cookie's Secure flag follows
/// `state`'s configuration.
pub fn routes(state: &AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(account::landing))
        .route("/signup", get(account::signup_form).post(account::signup))
        .route("/login", get(account::login_form).post(account::login))
        .route("/logout", post(account::logout))
        .route("/logout-everywhere", post(account::logout_everywhere))
        .route("/mfa/setup", get(account::mfa_form).post(account::mfa_confirm))
        .route("/reset-password", get(account::reset_form).post(account::reset))
        .route("/invite", get(account::invite_form).post(account::invite))
        .route("/home", get(home::home))
        .route("/record", get(patient::record))
        .route("/access-log", get(patient::access_log))
        .route("/practices", get(patient::practices))
        .route("/practices/register", post(patient::register))
        .route("/practice/queue", get(practice::queue).post(practice::decide))
        .route("/appointments", get(appointments::list))
        .route(
            "/appointments/book",
            get(appointments::book_form).post(appointments::book),
        )
        .route("/appointments/{id}", get(appointments::detail))
        .route("/appointments/{id}/call", get(call::call))
        .route("/join/{token}", get(guest::join_form).post(guest::join))
        .route("/guest/appointments/{id}/call", get(call::guest_call))
        .route("/appointments/{id}/cancel", post(appointments::cancel))
        .route("/appointments/{id}/check-in", post(appointments::check_in))
        .route(
            "/appointments/{id}/reschedule",
            get(appointments::reschedule_form).post(appointments::reschedule),
        )
        .route("/recordings", get(recordings::list))
        .route("/recordings/{id}", get(recordings::detail))
        .route(
            "/recordings/{id}/break-glass",
            get(recordings::break_glass_form).post(recordings::break_glass),
        )
        .route("/triage", get(triage::form).post(triage::start))
        .route("/triage/answer", post(triage::answer))
        .route("/triage/back", post(triage::back))
        .route("/triage/{id}", get(triage::show))
        .route("/schedule", get(schedule::day))
        .route("/schedule/appointments/{id}", post(schedule::act))
        .route(
            "/schedule/appointments/{id}/symptom-check",
            get(schedule::symptom_check),
        )
        .route("/availability", get(schedule::availability))
        .route("/availability/rules", post(schedule::add_rule))
        .route("/availability/rules/remove", post(schedule::remove_rule))
        .route("/availability/exceptions", post(schedule::add_exception))
        .route(
            "/availability/exceptions/remove",
            post(schedule::remove_exception),
        )
        .route("/availability/cutoff", post(schedule::set_cutoff))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::ensure_cookie,
        ))
        // Pages show personal data: no browser or proxy may keep a copy.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    Router::new()
        .route("/static/confide.css", get(stylesheet))
        .route("/static/waiting-room.js", get(|| script(WAITING_ROOM_JS)))
        .route("/static/call.js", get(|| script(CALL_JS)))
        .route("/static/recording.js", get(|| script(RECORDING_JS)))
        .merge(pages)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

/// The pages' scripts: the CSP allows no inline code, so they are served from here.
async fn script(code: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        code,
    )
}

/// Unknown paths: the API keeps its JSON answer, everything else gets the HTML page.
pub async fn fallback(uri: Uri) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        ApiError::NotFound.into_response()
    } else {
        PageError::NotFound.into_response()
    }
}

/// What the shared layout shows: who is logged in, with the token their logout form carries, and a
/// one-line notice about what just happened.
pub struct Layout {
    user: Option<String>,
    csrf: String,
    guest_links: bool,
    notice: Option<&'static str>,
}

impl Layout {
    fn new(session: Option<&Session>, csrf: &CsrfToken) -> Layout {
        Layout {
            user: session.map(|s| s.account().name.clone()),
            csrf: csrf.0.clone(),
            guest_links: true,
            notice: None,
        }
    }

    /// For error pages, which know nothing about the person.
    fn bare() -> Layout {
        Layout {
            user: None,
            csrf: String::new(),
            guest_links: false,
            notice: None,
        }
    }

    fn with_notice(mut self, notice: &NoticeQuery) -> Layout {
        self.notice = notice_text(&notice.notice);
        self
    }
}

/// `?notice=` after a redirect. Only these fixed keys are shown, so nothing from the URL is reflected.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NoticeQuery {
    notice: String,
}

fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "requested" => "Your request was sent. The practice will accept or decline it.",
        "accepted" => "Registration accepted.",
        "declined" => "Registration declined.",
        "logged_out" => "You are logged out.",
        "logged_out_everywhere" => "You are logged out on every device.",
        "password_changed" => "Your password was changed. Log in with your new password.",
        "invite_accepted" => "Your account is ready. Log in to set up your authenticator app.",
        "booked" => "Your appointment is booked. We have emailed you the details.",
        "rescheduled" => "Your appointment was moved. We have emailed you the new time.",
        "checked_in" => "You are checked in.",
        "cancelled" => "The appointment was cancelled.",
        "started" => "The consultation has started.",
        "completed" => "The consultation is complete.",
        "no_show" => "The appointment is recorded as missed.",
        "rule_added" => "The weekly session was added.",
        "rule_removed" => "The weekly session was removed. Appointments already booked in it stay.",
        "exception_added" => "The change for that day was added.",
        "exception_removed" => "The change for that day was removed.",
        "cutoff_saved" => "The booking cutoff was saved.",
        "glass_broken" => {
            "You may open this recording for the next hour. The patient will see that you did, and why."
        }
        _ => return None,
    })
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// Logged out, or not yet enrolled in a second factor: go there first.
    Redirect(&'static str),
    /// A malformed request; the message is for people.
    BadRequest(String),
    /// A form without the right CSRF token.
    Forbidden,
    /// Unknown, or not the caller's: the same page either way.
    NotFound,
    /// A dependency failed; the detail goes to the log only.
    Unavailable(String),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound | ApiError::MethodNotAllowed => PageError::NotFound,
            ApiError::Unavailable(detail) => PageError::Unavailable(detail),
            ApiError::Unauthorized {
                code: "login_required",
                ..
            } => PageError::Redirect("/login"),
            ApiError::CrossSite => PageError::Forbidden,
            other => PageError::BadRequest(sentence(&other.public_message())),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    title: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::Redirect(to) => return Redirect::to(to).into_response(),
            PageError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                "Something was wrong with that request",
                message,
            ),
            PageError::Forbidden => (
                StatusCode::FORBIDDEN,
                "That form has expired",
                "For your safety we did not accept it. Go back, reload the page and try again.".to_owned(),
            ),
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing here, or it is not yours to see. Check the address, or go to the start page."
                    .to_owned(),
            ),
            PageError::Unavailable(detail) => {
                tracing::error!(%detail, "page failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Confide is unavailable right now",
                    "Nothing was lost. Please try again in a minute.".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            layout: Layout::bare(),
            title,
            message,
        };
        (status, page).into_response()
    }
}

/// A problem with what was entered: shown above the form and next to the field it is about.
#[derive(Default)]
pub struct Problem {
    message: Option<String>,
    field: Option<&'static str>,
}

impl Problem {
    fn none() -> Problem {
        Problem::default()
    }

    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The message, for the field it is about.
    pub fn text(&self) -> &str {
        self.message.as_deref().unwrap_or_default()
    }

    /// Whether the problem is about the field named `field`.
    pub fn on(&self, field: &str) -> bool {
        self.field == Some(field)
    }
}

/// Splits a service's error into a problem the form shows (with its status) and a failure that gets a
/// page of its own.
fn problem(e: ApiError) -> Result<(StatusCode, Problem), PageError> {
    let field = match e.code() {
        "invalid_name" => Some("name"),
        "invalid_email" | "email_taken" => Some("email"),
        "invalid_date_of_birth" => Some("date_of_birth"),
        "weak_password" => Some("password"),
        "mfa_required" | "invalid_mfa_code" => Some("code"),
        "invalid_query" => Some("q"),
        "not_found" | "unavailable" | "login_required" | "cross_site_request" | "method_not_allowed" => {
            return Err(e.into());
        }
        _ => None,
    };
    Ok((
        e.status(),
        Problem {
            message: Some(sentence(&e.public_message())),
            field,
        },
    ))
}

/// Service messages are written lower-case for the API; pages show them as sentences.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// Query parameters; an address whose query cannot be read gets the bad-request page.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(PageError))]
pub struct PageQuery<T>(pub T);

impl From<QueryRejection> for PageError {
    fn from(_: QueryRejection) -> Self {
        PageError::BadRequest("The address could not be read.".to_owned())
    }
}

/// A path parameter; an id that cannot be read names nothing, so it gets the not-found page.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(PageError))]
pub struct PagePath<T>(pub T);

impl From<PathRejection> for PageError {
    fn from(_: PathRejection) -> Self {
        PageError::NotFound
    }
}

/// Anyone, logged in or not.
pub struct Viewer(Caller);

impl Viewer {
    fn session(&self) -> Option<&Session> {
        self.0.0.as_ref()
    }

    fn require(&self) -> Result<&Session, PageError> {
        self.session().ok_or(PageError::Redirect("/login"))
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Viewer(Caller::from_request_parts(parts, state).await?))
    }
}

/// Someone logged in who may use Confide: staff must have set up their second factor first, because
/// until then the gate refuses them everything.
pub struct SignedIn(Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        let session = viewer.require()?.clone();
        if needs_mfa_enrolment(&session) {
            return Err(PageError::Redirect("/mfa/setup"));
        }
        Ok(SignedIn(session))
    }
}

fn needs_mfa_enrolment(session: &Session) -> bool {
    session.account().role.requires_mfa() && !session.record.mfa_verified
}

/// A 303 to `to` that also sets the cookie a service function returned.
fn redirect_setting_cookie(to: &str, cookie: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    match HeaderValue::from_str(cookie) {
        Ok(value) => {
            response.headers_mut().append(header::SET_COOKIE, value);
            response
        }
        Err(_) => PageError::Unavailable("session cookie is not a valid header".into()).into_response(),
    }
}

/// A moment, for people and for machines.
pub struct When {
    pub text: String,
    pub iso: String,
}

/// Epoch milliseconds as "YYYY-MM-DD HH:MM UTC".
fn when(ms: i64) -> When {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => When {
            text: t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            iso: t.to_string(),
        },
        Err(_) => When {
            text: "unknown time".to_owned(),
            iso: String::new(),
        },
    }
}

/// An RFC 3339 moment as the local time in the IANA zone `zone`: "Monday 5 January 2026, 09:30 GMT".
fn local_when(rfc3339: &str, zone: &str) -> When {
    let local = rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .zip(jiff::tz::TimeZone::get(zone).ok())
        .map(|(t, tz)| t.to_zoned(tz));
    match local {
        Some(z) => When {
            text: z.strftime("%A %-d %B %Y, %H:%M %Z").to_string(),
            iso: z.timestamp().to_string(),
        },
        None => When {
            text: "unknown time".to_owned(),
            iso: String::new(),
        },
    }
}

/// A form or query field, trimmed; `None` when left empty.
fn non_empty(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "video" => "Video call",
        "audio" => "Audio call",
        "either" => "Video or audio call",
        _ => "Unknown kind",
    }
}

fn appointment_status_label(status: &str) -> &'static str {
    match status {
        "booked" => "Booked",
        "checked_in" => "In the waiting room",
        "in_consultation" => "In consultation",
        "completed" => "Completed",
        "cancelled" => "Cancelled",
        "no_show" => "Missed",
        _ => "Unknown",
    }
}

/// A stored YYYY-MM-DD date as "2 January 1980".
fn long_date(ymd: &str) -> String {
    ymd.parse::<jiff::civil::Date>()
        .map(|d| d.strftime("%-d %B %Y").to_string())
        .unwrap_or_else(|_| ymd.to_owned())
}

fn role_label(role: &str) -> &'static str {
    match role {
        "patient" => "Patient",
        "clinician" => "Clinician",
        "practice_admin" => "Practice administrator",
        "platform_admin" => "Platform administrator",
        _ => "Unknown role",
    }
}

/// What an audited action means to the patient it was about.
fn action_label(action: &str) -> Cow<'static, str> {
    Cow::Borrowed(match action {
        "patient.profile.read" => "Viewed your profile",
        "patient.record.read" => "Read your record",
        "patient.record.write" => "Added a note to your record",
        "patient.access_log.read" => "Viewed who accessed your data",
        "patient.registrations.list" => "Listed your registrations",
        "registration.request" => "Asked a practice to register you",
        "registration.decide" => "Decided your registration request",
        "recording.read" => "Looked at a recording of your consultation",
        "recording.play" => "Played a recording of your consultation",
        "recording.break_glass" => "Asked to open a recording of your consultation in an emergency",
        "recording.break_glass.opened" => "Opened a recording of your consultation in an emergency",
        other => return Cow::Owned(other.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc_to_the_minute() {
        assert_eq!(when(0).text, "1970-01-01 00:00 UTC");
        assert_eq!(when(1_700_000_000_000).text, "2023-11-14 22:13 UTC");
        assert_eq!(long_date("1980-01-02"), "2 January 1980");
        assert_eq!(
            local_when("2026-07-06T08:30:00Z", "Europe/London").text,
            "Monday 6 July 2026, 09:30 BST"
        );
        assert_eq!(local_when("garbage", "Europe/London").text, "unknown time");
    }

    #[test]
    fn only_known_notices_are_shown() {
        assert!(notice_text("requested").is_some());
        assert_eq!(notice_text("<script>"), None);
    }

    #[test]
    fn service_messages_become_sentences() {
        assert_eq!(
            sentence("email address is not valid"),
            "Email address is not valid."
        );
        assert_eq!(sentence("Log in to continue."), "Log in to continue.");
    }
}

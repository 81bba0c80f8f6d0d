//! The call page: a consultation's video call in the browser, for its patient and its clinician, and a
//! guest's version of it for the guests the clinician invited. The
//! page only holds the controls; `call.js` does the WebRTC and talks to the signaling API. Before joining,
//! the page asks whether the viewer may be recorded, and during the call it lets them change their mind
//! and chat; both go through the consultation-record API, which asks the gate again.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use confide_domain::scheduling::AppointmentStatus;
use uuid::Uuid;

use super::csrf::CsrfToken;
use super::{Layout, PageError, PagePath, SignedIn};
use crate::AppState;
use crate::api;
use crate::api::guests::{GuestCaller, InCall};
use crate::gate::RequestId;

#[derive(Template, WebTemplate)]
#[template(path = "call.html")]
struct CallPage {
    layout: Layout,
    id: Uuid,
    /// The other person in the call.
    with: String,
    /// `video` or `audio_only`: the mode the call is in now.
    mode: &'static str,
    running: bool,
    /// The viewer's user id, so the chat can tell their own messages.
    me: Uuid,
    /// Whether the viewer may switch between audio only and video (guests may not).
    may_switch: bool,
}

pub async fn call(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
) -> Result<Response, PageError> {
    // The gate first, as for joining: to anyone but the consultation's two people this page does not exist.
    let facts = api::calls::facts(&state, &InCall::Account(session.clone()), id, &request).await?;
    let appointment = api::appointments::get(&state, &session, id, &request).await?;
    let with = if appointment.patient_id == session.account().id.as_uuid() {
        appointment.clinician_name
    } else {
        appointment.patient_name
    };
    let page = CallPage {
        layout: Layout::new(Some(&session), &csrf),
        id,
        with,
        mode: facts.segments.last().map_or("video", |s| s.mode.as_str()),
        running: facts.status == AppointmentStatus::InConsultation,
        me: session.account().id.as_uuid(),
        may_switch: true,
    };
    Ok(page.into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "guest_call.html")]
struct GuestCallPage {
    layout: Layout,
    id: Uuid,
    /// The clinician who invited the guest, and their practice.
    clinician: String,
    practice: String,
    mode: &'static str,
    running: bool,
    /// The guest's id, which is what the chat names their messages by.
    me: Uuid,
    may_switch: bool,
}

/// The call page for a guest, by their guest session: for any other appointment, or without a guest
/// session, it does not exist.
pub async fn guest_call(
    State(state): State<AppState>,
    GuestCaller(guest): GuestCaller,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
) -> Result<Response, PageError> {
    let guest = guest.ok_or(PageError::NotFound)?;
    let (clinician, practice, me) = (
        guest.clinician_name.clone(),
        guest.practice_name.clone(),
        guest.principal.guest.as_uuid(),
    );
    let facts = api::calls::facts(&state, &InCall::Guest(guest), id, &request).await?;
    let page = GuestCallPage {
        layout: Layout::new(None, &csrf),
        id,
        clinician,
        practice,
        mode: facts.segments.last().map_or("video", |s| s.mode.as_str()),
        running: facts.status == AppointmentStatus::InConsultation,
        me,
        may_switch: false,
    };
    Ok(page.into_response())
}

//! The call page: a consultation's video call in the browser, for its patient and its clinician. The
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
}

pub async fn call(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
) -> Result<Response, PageError> {
    // The gate first, as for joining: to anyone but the consultation's two people this page does not exist.
    let facts = api::calls::facts(&state, &session, id, &request).await?;
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
    };
    Ok(page.into_response())
}

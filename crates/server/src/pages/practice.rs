//! The practice staff's queue of registration requests.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::csrf::{CsrfForm, CsrfToken};
use super::{Layout, NoticeQuery, PageError, PageQuery, Problem, SignedIn, When, long_date, problem, when};
use crate::AppState;
use crate::api;
use crate::auth::Session;
use crate::gate::RequestId;

struct RequestRow {
    registration_id: Uuid,
    name: String,
    email: String,
    date_of_birth: String,
    requested: When,
}

#[derive(Template, WebTemplate)]
#[template(path = "queue.html")]
struct QueuePage {
    layout: Layout,
    requests: Vec<RequestRow>,
    error: Problem,
}

/// The queue of the caller's practice; people who work at no practice get the not-found page.
async fn queue_page(
    state: &AppState,
    session: &Session,
    layout: Layout,
    request: &RequestId,
    status: StatusCode,
    error: Problem,
) -> Result<Response, PageError> {
    let practice = session.account().practice.ok_or(PageError::NotFound)?;
    let requests = api::practices::queue(state, session, practice.as_uuid(), request)
        .await?
        .into_iter()
        .map(|e| RequestRow {
            registration_id: e.registration_id,
            name: e.name,
            email: e.email,
            date_of_birth: long_date(&e.date_of_birth),
            requested: when(e.requested_at),
        })
        .collect();
    let page = QueuePage {
        layout,
        requests,
        error,
    };
    Ok((status, page).into_response())
}

pub async fn queue(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PageQuery(notice): PageQuery<NoticeQuery>,
) -> Result<Response, PageError> {
    let layout = Layout::new(Some(&session), &csrf).with_notice(&notice);
    queue_page(
        &state,
        &session,
        layout,
        &request,
        StatusCode::OK,
        Problem::none(),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DecisionForm {
    registration: String,
    /// `accept` or `decline`: the value of the button pressed.
    decision: String,
}

pub async fn decide(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<DecisionForm>,
) -> Result<Response, PageError> {
    let accept = match form.decision.as_str() {
        "accept" => true,
        "decline" => false,
        _ => return Err(PageError::BadRequest("Choose accept or decline.".to_owned())),
    };
    let id = Uuid::parse_str(form.registration.trim()).map_err(|_| PageError::NotFound)?;
    match api::registrations::decide(&state, &session, id, accept, &request).await {
        Ok(_) => {
            let to = if accept {
                "/practice/queue?notice=accepted"
            } else {
                "/practice/queue?notice=declined"
            };
            Ok(Redirect::to(to).into_response())
        }
        Err(e) => {
            let (status, error) = problem(e)?;
            let layout = Layout::new(Some(&session), &csrf);
            queue_page(&state, &session, layout, &request, status, error).await
        }
    }
}

//! A patient's own pages: their record, who accessed their data, and finding a practice to register with.

use std::borrow::Cow;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use confide_domain::identity::Role;
use serde::Deserialize;
use uuid::Uuid;

use super::csrf::{CsrfForm, CsrfToken};
use super::{
    Layout, PageError, PageQuery, Problem, SignedIn, Viewer, When, action_label, problem, role_label, when,
};
use crate::AppState;
use crate::api;
use crate::auth::Session;
use crate::gate::RequestId;

/// The patient's own id: these pages are for patients only, and anyone else gets the not-found page.
fn own_patient_id(session: &Session) -> Result<Uuid, PageError> {
    let account = session.account();
    if account.role == Role::Patient {
        Ok(account.id.as_uuid())
    } else {
        Err(PageError::NotFound)
    }
}

struct NoteRow {
    author: String,
    written: When,
    body: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "record.html")]
pub struct RecordPage {
    layout: Layout,
    notes: Vec<NoteRow>,
}

pub async fn record(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
) -> Result<RecordPage, PageError> {
    let id = own_patient_id(&session)?;
    let record = api::patients::record(&state, &session, id, &request).await?;
    Ok(RecordPage {
        layout: Layout::new(Some(&session), &csrf),
        notes: record
            .notes
            .into_iter()
            .map(|n| NoteRow {
                author: n.author_name,
                written: when(n.created_at),
                body: n.body,
            })
            .collect(),
    })
}

struct AccessRow {
    at: When,
    who: String,
    role: &'static str,
    what: Cow<'static, str>,
    refused: bool,
    /// The reason a clinician gave for opening a recording by break-glass.
    reason: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "access_log.html")]
pub struct AccessLogPage {
    layout: Layout,
    entries: Vec<AccessRow>,
}

pub async fn access_log(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
) -> Result<AccessLogPage, PageError> {
    let id = own_patient_id(&session)?;
    let entries = api::patients::access_log(&state, &session, id, &request).await?;
    Ok(AccessLogPage {
        layout: Layout::new(Some(&session), &csrf),
        entries: entries
            .into_iter()
            .map(|e| AccessRow {
                at: when(e.at),
                who: e.actor_name.unwrap_or_else(|| "Someone unknown".to_owned()),
                role: e.actor_role.as_deref().map_or("Unknown role", role_label),
                what: action_label(&e.action),
                refused: e.outcome != "allowed",
                reason: (e.action == "recording.break_glass.opened").then_some(e.reason),
            })
            .collect(),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SearchQuery {
    q: String,
}

struct PracticeRow {
    id: Uuid,
    name: String,
    address: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "practices.html")]
struct PracticesPage {
    layout: Layout,
    q: String,
    /// Only patients may ask to register.
    can_register: bool,
    results: Vec<PracticeRow>,
    error: Problem,
}

/// The search page for `q`, with `error` (and its status) if something went wrong.
async fn practices_page(
    state: &AppState,
    session: Option<&Session>,
    csrf: &CsrfToken,
    q: String,
    status: StatusCode,
    error: Problem,
) -> Result<Response, PageError> {
    let (status, results, error) = match api::practices::search(state, &q).await {
        Ok(found) => (status, found, error),
        Err(e) => {
            let (status, error) = problem(e)?;
            (status, Vec::new(), error)
        }
    };
    let page = PracticesPage {
        layout: Layout::new(session, csrf),
        q,
        can_register: session.is_some_and(|s| s.account().role == Role::Patient),
        results: results
            .into_iter()
            .map(|p| PracticeRow {
                id: p.id,
                name: p.name,
                address: p.address,
            })
            .collect(),
        error,
    };
    Ok((status, page).into_response())
}

pub async fn practices(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    PageQuery(query): PageQuery<SearchQuery>,
) -> Result<Response, PageError> {
    practices_page(
        &state,
        viewer.session(),
        &csrf,
        query.q,
        StatusCode::OK,
        Problem::none(),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterForm {
    practice_id: String,
    /// The search the form was on, to show it again if the request fails.
    q: String,
}

pub async fn register(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<RegisterForm>,
) -> Result<Response, PageError> {
    own_patient_id(&session)?;
    let practice = Uuid::parse_str(form.practice_id.trim()).map_err(|_| PageError::NotFound)?;
    match api::registrations::request(&state, &session, practice, &request).await {
        Ok(_) => Ok(Redirect::to("/home?notice=requested").into_response()),
        Err(e) => {
            let (status, error) = problem(e)?;
            practices_page(&state, Some(&session), &csrf, form.q, status, error).await
        }
    }
}

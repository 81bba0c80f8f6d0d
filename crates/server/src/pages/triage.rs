//! The symptom checker as plain HTML forms: what is wrong, then one question at a time, then the result.
//! A logged-in patient's conversation is kept (and lives at `/triage/{id}`); anyone else's travels in a
//! hidden field of each form, as the API's sealed state, and is kept nowhere.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::csrf::{CsrfForm, CsrfToken};
use super::{Layout, PageError, PagePath, Problem, SignedIn, Viewer, problem};
use crate::AppState;
use crate::api::triage::{self as service, AnswerRequest, QuestionView, StartRequest, TriageView};
use crate::auth::{Caller, Session};
use crate::error::ApiError;
use crate::gate::RequestId;
use confide_domain::identity::Role;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StartForm {
    text: String,
    age: String,
    sex: String,
}

/// An answer, or a step back, on a kept conversation (`id`) or an anonymous one (`state`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StepForm {
    id: String,
    state: String,
    question: String,
    answer: String,
}

struct ConditionPage {
    name: String,
    likelihood: &'static str,
    explanation: String,
    because: Vec<String>,
}

struct ResultPage {
    disposition: String,
    headline: String,
    advice: String,
    safety_net: String,
    warnings: Vec<String>,
    conditions: Vec<ConditionPage>,
    can_book: bool,
}

struct ViewPage {
    id: Option<Uuid>,
    id_text: String,
    state: String,
    question: Option<QuestionView>,
    result: Option<ResultPage>,
    percent: u32,
    can_go_back: bool,
    understood: Vec<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "triage.html")]
struct TriagePage {
    layout: Layout,
    error: Problem,
    view: Option<ViewPage>,
    form: StartForm,
    ask_age: bool,
}

fn likelihood(p: f64) -> &'static str {
    if p >= 0.5 {
        "likely"
    } else if p >= 0.2 {
        "possible"
    } else {
        "less likely"
    }
}

fn view_page(v: TriageView) -> ViewPage {
    ViewPage {
        id: v.id,
        id_text: v.id.map(|i| i.to_string()).unwrap_or_default(),
        state: v.state.unwrap_or_default(),
        question: v.question,
        result: v.result.map(|r| ResultPage {
            disposition: r.disposition,
            headline: r.headline,
            advice: r.advice,
            safety_net: r.safety_net,
            warnings: r.warnings,
            conditions: r
                .conditions
                .into_iter()
                .map(|c| ConditionPage {
                    name: c.name,
                    likelihood: likelihood(c.probability),
                    explanation: c.explanation,
                    because: c.because,
                })
                .collect(),
            can_book: r.can_book,
        }),
        percent: (v.progress * 100.0).round().clamp(0.0, 100.0) as u32,
        can_go_back: v.can_go_back,
        understood: v
            .understood
            .into_iter()
            .map(|u| {
                if u.present {
                    u.phrase
                } else {
                    format!("no {}", u.phrase)
                }
            })
            .collect(),
    }
}

/// Whether the conversation is kept for this person, so that their age comes from their profile.
fn kept_for(session: Option<&Session>) -> bool {
    session.is_some_and(|s| s.account().role == Role::Patient)
}

fn page(
    layout: Layout,
    session: Option<&Session>,
    (status, error): (StatusCode, Problem),
    view: Option<ViewPage>,
    form: StartForm,
) -> Response {
    let page = TriagePage {
        layout,
        error,
        view,
        form,
        ask_age: !kept_for(session),
    };
    (status, page).into_response()
}

pub async fn form(viewer: Viewer, csrf: CsrfToken) -> Response {
    let layout = Layout::new(viewer.session(), &csrf);
    page(
        layout,
        viewer.session(),
        (StatusCode::OK, Problem::none()),
        None,
        StartForm::default(),
    )
}

pub async fn start(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<StartForm>,
) -> Result<Response, PageError> {
    let age = match form.age.trim() {
        "" => None,
        raw => Some(raw.parse::<u32>().map_err(|_| {
            ApiError::bad_request(
                "invalid_age",
                format!(
                    "age must be a whole number of years, 0 to {}",
                    service::MAX_AGE_YEARS
                ),
            )
        })),
    };
    let result = match age.transpose() {
        Ok(age) => {
            let req = StartRequest {
                text: form.text.clone(),
                age,
                age_months: None,
                sex: form.sex.clone(),
                region: None,
            };
            service::start(&state, &Caller(viewer.session().cloned()), &req, &request).await
        }
        Err(e) => Err(e),
    };
    let layout = Layout::new(viewer.session(), &csrf);
    match result {
        Ok(v) => match v.id {
            Some(id) => Ok(Redirect::to(&format!("/triage/{id}")).into_response()),
            None => Ok(page(
                layout,
                viewer.session(),
                (StatusCode::OK, Problem::none()),
                Some(view_page(v)),
                StartForm::default(),
            )),
        },
        Err(e) => Ok(page(layout, viewer.session(), problem(e)?, None, form)),
    }
}

pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
) -> Result<Response, PageError> {
    let v = service::get(&state, &session, id, &request).await?;
    let layout = Layout::new(Some(&session), &csrf);
    Ok(page(
        layout,
        Some(&session),
        (StatusCode::OK, Problem::none()),
        Some(view_page(v)),
        StartForm::default(),
    ))
}

async fn step(
    state: &AppState,
    viewer: &Viewer,
    csrf: &CsrfToken,
    request: &RequestId,
    form: StepForm,
    back: bool,
) -> Result<Response, PageError> {
    let id = form.id.trim();
    if !id.is_empty() {
        let id = Uuid::parse_str(id).map_err(|_| PageError::NotFound)?;
        let session = viewer.require()?;
        let given = AnswerRequest {
            question: form.question,
            answer: form.answer,
        };
        let result = service::change(state, session, id, (!back).then_some(&given), request).await;
        return match result {
            Ok(_) => Ok(Redirect::to(&format!("/triage/{id}")).into_response()),
            Err(e) => {
                let shown = problem(e)?;
                let v = service::get(state, session, id, request).await?;
                Ok(page(
                    Layout::new(Some(session), csrf),
                    Some(session),
                    shown,
                    Some(view_page(v)),
                    StartForm::default(),
                ))
            }
        };
    }
    let given = (!back).then_some((form.question.as_str(), form.answer.as_str()));
    let layout = Layout::new(viewer.session(), csrf);
    match service::change_anonymous(state, &form.state, given) {
        Ok(v) => Ok(page(
            layout,
            viewer.session(),
            (StatusCode::OK, Problem::none()),
            Some(view_page(v)),
            StartForm::default(),
        )),
        // The state could not be used: start again, saying why.
        Err(e) => Ok(page(
            layout,
            viewer.session(),
            problem(e)?,
            None,
            StartForm::default(),
        )),
    }
}

pub async fn answer(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<StepForm>,
) -> Result<Response, PageError> {
    step(&state, &viewer, &csrf, &request, form, false).await
}

pub async fn back(
    State(state): State<AppState>,
    viewer: Viewer,
    csrf: CsrfToken,
    request: RequestId,
    CsrfForm(form): CsrfForm<StepForm>,
) -> Result<Response, PageError> {
    step(&state, &viewer, &csrf, &request, form, true).await
}

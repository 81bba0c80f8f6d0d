//! Recordings in the browser: the list of one's own, the playback page, and the break-glass form. The
//! pages call the same service functions as the API, so the gate decides and the audit log records.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use confide_domain::identity::Role;
use serde::Deserialize;
use uuid::Uuid;

use super::csrf::{CsrfForm, CsrfToken};
use super::{Layout, NoticeQuery, PageError, PagePath, PageQuery, Problem, SignedIn, When, problem, when};
use crate::AppState;
use crate::api;
use crate::api::recordings::{MIN_REASON_CHARS, RecordingView};
use crate::error::ApiError;
use crate::gate::RequestId;

struct Row {
    id: Uuid,
    when: When,
    with: String,
    length: String,
    modes: String,
    status: &'static str,
}

fn length(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let secs = ms / 1000;
            format!("{} min {:02} s", secs / 60, secs % 60)
        }
        None => "not known yet".to_owned(),
    }
}

fn modes(r: &RecordingView) -> String {
    let words: Vec<&str> = r
        .modes
        .iter()
        .map(|m| match *m {
            "video" => "video",
            _ => "audio only",
        })
        .collect();
    if words.is_empty() {
        "–".to_owned()
    } else {
        words.join(", then ")
    }
}

fn status_label(status: &str) -> &'static str {
    match status {
        "recording" => "Consultation still going on",
        "processing" => "Being prepared",
        "ready" => "Ready to play",
        "failed" => "Could not be prepared",
        "expired" => "Deleted after the practice's retention period",
        _ => "Unknown",
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "recordings.html")]
pub struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
}

pub async fn list(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
) -> Result<ListPage, PageError> {
    let me = session.account().id.as_uuid();
    let rows = api::recordings::list(&state, &session, &request)
        .await?
        .into_iter()
        .map(|r| Row {
            id: r.id,
            when: when(r.started_at),
            with: r
                .participants
                .iter()
                .filter(|p| p.id != me)
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
            length: length(r.duration_ms),
            modes: modes(&r),
            status: status_label(r.status),
        })
        .collect();
    Ok(ListPage {
        layout: Layout::new(Some(&session), &csrf),
        rows,
    })
}

/// One participant's copy on the playback page.
struct Player {
    /// Who, for the caption: "Jo Bloggs (patient)".
    who: String,
    url: String,
    offset_ms: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "recording.html")]
pub struct PlaybackPage {
    layout: Layout,
    when: When,
    patient: String,
    clinician: String,
    length: String,
    modes: String,
    status: &'static str,
    /// The recording's own copy, with everyone's tracks, to download.
    media_url: Option<String>,
    /// The participants' copies, played side by side and in step.
    players: Vec<Player>,
    /// Of the longest copy, with its offset: how far the shared position goes.
    span_ms: i64,
    unavailable: &'static str,
}

/// The recording and, when it can be played, a player per participant, driven together: opening the page
/// is one play session, audited once; every player's range requests carry its ticket.
pub async fn detail(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
    PageQuery(notice): PageQuery<NoticeQuery>,
) -> Result<PlaybackPage, PageError> {
    let r = api::recordings::get(&state, &session, id, &request).await?;
    let (ticket, unavailable) = if r.status == "ready" {
        match api::recordings::playback(&state, &session, id, &request).await {
            Ok(ticket) => (Some(ticket), ""),
            Err(ApiError::ReplayDisabled) => (None, "Playing recordings back is turned off at the moment."),
            Err(ApiError::RecordingNotPlayable(_)) => (None, "This recording cannot be played."),
            Err(e) => return Err(e.into()),
        }
    } else {
        (None, status_label(r.status))
    };
    let mut players: Vec<Player> = ticket
        .iter()
        .flat_map(|t| &t.participants)
        .map(|m| {
            let who = r
                .participants
                .iter()
                .find(|p| p.id == m.participant_id)
                .map_or_else(
                    || "Another participant".to_owned(),
                    |p| format!("{} ({})", p.name, p.role),
                );
            Player {
                who,
                url: m.media_url.clone(),
                offset_ms: m.offset_ms,
            }
        })
        .collect();
    let span_ms = ticket
        .iter()
        .flat_map(|t| &t.participants)
        .map(|m| m.offset_ms + m.duration_ms)
        .max()
        .unwrap_or(0);
    // A copy made before there were participants' copies: everyone in one player, the first audio heard.
    let span_ms = match &ticket {
        Some(t) if players.is_empty() => {
            players.push(Player {
                who: "Everyone".to_owned(),
                url: t.media_url.clone(),
                offset_ms: 0,
            });
            r.duration_ms.unwrap_or(0)
        }
        _ => span_ms,
    };
    let name = |role: &str| {
        r.participants
            .iter()
            .find(|p| p.role == role)
            .map(|p| p.name.clone())
            .unwrap_or_default()
    };
    Ok(PlaybackPage {
        layout: Layout::new(Some(&session), &csrf).with_notice(&notice),
        when: when(r.started_at),
        patient: name("patient"),
        clinician: name("clinician"),
        length: length(r.duration_ms),
        modes: modes(&r),
        status: status_label(r.status),
        media_url: ticket.map(|t| t.media_url),
        players,
        span_ms,
        unavailable,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "break_glass.html")]
pub struct BreakGlassPage {
    layout: Layout,
    id: Uuid,
    error: Problem,
    reason: String,
    min_chars: usize,
}

/// The form shows nothing about the recording, so any clinician may see it; only sending it asks the
/// gate, and everyone it refuses gets the not-found page.
pub async fn break_glass_form(
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    PagePath(id): PagePath<Uuid>,
) -> Result<BreakGlassPage, PageError> {
    if session.account().role != Role::Clinician {
        return Err(PageError::NotFound);
    }
    Ok(BreakGlassPage {
        layout: Layout::new(Some(&session), &csrf),
        id,
        error: Problem::default(),
        reason: String::new(),
        min_chars: MIN_REASON_CHARS,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BreakGlassForm {
    reason: String,
}

pub async fn break_glass(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PagePath(id): PagePath<Uuid>,
    CsrfForm(form): CsrfForm<BreakGlassForm>,
) -> Result<Response, PageError> {
    if session.account().role != Role::Clinician {
        return Err(PageError::NotFound);
    }
    match api::recordings::break_glass(&state, &session, id, &form.reason, &request).await {
        Ok(_) => Ok(Redirect::to(&format!("/recordings/{id}?notice=glass_broken")).into_response()),
        Err(e) => {
            let (status, mut error) = problem(e)?;
            if status == StatusCode::BAD_REQUEST {
                error.field = Some("reason");
            }
            let page = BreakGlassPage {
                layout: Layout::new(Some(&session), &csrf),
                id,
                error,
                reason: form.reason,
                min_chars: MIN_REASON_CHARS,
            };
            Ok((status, page).into_response())
        }
    }
}

//! What a consultation keeps beside its media, for the people in its call only (its patient, its
//! clinician and the guests its clinician invited): each one's consent to being recorded (given on
//! joining, withdrawn or given again during the call) and the call's chat. Every request is decided by
//! the gate on the consultation, so anyone else, and any appointment whose consultation has not started,
//! gets the same recorded 404.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use confide_domain::audit::{AuditEvent, Outcome};
use confide_domain::consultation::ConsentDecision;
use confide_domain::ids::ConsultationId;
use confide_domain::policy::actions::{PostChatMessage, ReadCallRecord, RecordConsent};
use confide_domain::policy::{Actor, CallGrant, ConsultationGrant, ConsultationRef, GuardedAction};
use confide_store::{ChatMessage, ConsentEntry, MAX_MESSAGE_CHARS};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::api::guests::{InCall, call_grant, guest_event};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::gate::RequestId;

/// The most messages one read returns; the page asks again from the last one it has.
const PAGE: i64 = 200;

/// A chat message as it was kept, sent to everyone reading the consultation's chat live. The gate
/// decided who may read a consultation's messages when their stream opened; the stream passes on only
/// that consultation's.
#[derive(Clone, Debug)]
pub struct ChatPosted {
    pub consultation: ConsultationId,
    pub message: ChatMessage,
}

/// The gate's grant for `A` on the appointment's consultation. An appointment that does not exist, or
/// whose consultation has not started, is recorded and answered as a denial is.
async fn grant<A: GuardedAction<On = ConsultationRef>>(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    request: &RequestId,
) -> Result<CallGrant<A>, ApiError> {
    call_grant::<A>(state, who, id, request).await
}

/// Who someone is in the consultation.
#[derive(Serialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    Patient,
    Clinician,
    Guest,
}

impl ParticipantRole {
    fn as_str(self) -> &'static str {
        match self {
            ParticipantRole::Patient => "patient",
            ParticipantRole::Clinician => "clinician",
            ParticipantRole::Guest => "guest",
        }
    }
}

fn role_in(c: &ConsultationRef, actor: Actor) -> ParticipantRole {
    match actor {
        Actor::User(user) if user == c.clinician => ParticipantRole::Clinician,
        Actor::User(_) => ParticipantRole::Patient,
        Actor::Guest(_) => ParticipantRole::Guest,
    }
}

#[derive(Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// `given` to be recorded from now on, `withdrawn` to be left out of the recording from now on.
    #[schema(value_type = String, example = "withdrawn")]
    pub decision: ConsentDecision,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ConsentView {
    pub participant_id: Uuid,
    pub role: ParticipantRole,
    /// `given` or `withdrawn`.
    #[schema(value_type = String)]
    pub decision: ConsentDecision,
    /// When it was decided (RFC 3339).
    pub at: String,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ConsentAnswer {
    /// The caller's decision in force now.
    #[schema(value_type = String)]
    pub decision: ConsentDecision,
    /// Whether this request changed it (repeating the decision in force adds nothing to the record).
    pub changed: bool,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ConsentLog {
    /// Every decision in the consultation, oldest first.
    pub decisions: Vec<ConsentView>,
}

fn consent_view(c: &ConsultationRef, e: &ConsentEntry) -> ConsentView {
    ConsentView {
        participant_id: e.participant.as_uuid(),
        role: role_in(c, e.participant),
        decision: e.decision,
        at: e.at.to_string(),
    }
}

/// Records the caller's decision about being recorded and tells the recorder; the change, if any, is
/// audited as `consultation.consent_given` or `consultation.consent_withdrawn`. Used by the consent
/// endpoint and by joining with an answer.
pub async fn record_consent(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    decision: ConsentDecision,
    request: &RequestId,
) -> Result<ConsentAnswer, ApiError> {
    let grant = grant::<RecordConsent>(state, who, id, request).await?;
    let at = state.clock.now();
    let entry = state
        .calls
        .record_consent(&state.store, &grant, decision, at)
        .await?;
    if entry.is_some() {
        let c = grant.consultation();
        let action = match decision {
            ConsentDecision::Given => "consultation.consent_given",
            ConsentDecision::Withdrawn => "consultation.consent_withdrawn",
        };
        let role = role_in(c, grant.actor()).as_str();
        let event = match grant.actor() {
            Actor::Guest(guest) => guest_event(state, guest, action, Outcome::Allowed, role, c, request),
            Actor::User(_) => AuditEvent {
                resource: format!("consultation:{}", c.id),
                subject_patient: Some(c.patient.patient),
                ..state.event(who.session(), action, Outcome::Allowed, role, request)
            },
        };
        state.record(event).await?;
    }
    Ok(ConsentAnswer {
        decision,
        changed: entry.is_some(),
    })
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/call/consent", tag = "calls", params(("id" = Uuid, Path)),
    request_body = ConsentRequest,
    responses((status = 200, description = "Decided: the recorder follows it from now on", body = ConsentAnswer),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, description = "Not the caller's consultation, or not started", body = ErrorBody),
              (status = 409, description = "The consultation has ended", body = ErrorBody)))]
pub async fn consent_handler(
    State(state): State<AppState>,
    who: InCall,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<ConsentRequest>,
) -> Result<axum::Json<ConsentAnswer>, ApiError> {
    Ok(axum::Json(
        record_consent(&state, &who, id, req.decision, &request).await?,
    ))
}

pub async fn consent_log(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    request: &RequestId,
) -> Result<ConsentLog, ApiError> {
    let grant = grant::<ReadCallRecord>(state, who, id, request).await?;
    let entries = state.store.consent_log(&grant).await?;
    let c = grant.consultation();
    Ok(ConsentLog {
        decisions: entries.iter().map(|e| consent_view(c, e)).collect(),
    })
}

#[utoipa::path(get, path = "/api/v1/appointments/{id}/call/consent", tag = "calls", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The consultation's consent decisions", body = ConsentLog),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn consent_log_handler(
    State(state): State<AppState>,
    who: InCall,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<ConsentLog>, ApiError> {
    Ok(axum::Json(consent_log(&state, &who, id, &request).await?))
}

#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// 1 to 2000 characters, not only spaces.
    pub body: String,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct MessageView {
    /// The message's position in the consultation's chat, from 1.
    pub seq: i64,
    pub sender_id: Uuid,
    pub sender_role: ParticipantRole,
    pub body: String,
    /// RFC 3339.
    pub sent_at: String,
}

fn message_view(c: &ConsultationRef, m: &ChatMessage) -> MessageView {
    MessageView {
        seq: m.seq,
        sender_id: m.sender.as_uuid(),
        sender_role: role_in(c, m.sender),
        body: m.body.clone(),
        sent_at: m.sent_at.to_string(),
    }
}

#[derive(Deserialize, IntoParams, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// Only messages after this position; from the first if absent.
    pub after: Option<i64>,
}

pub async fn post_message(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    body: String,
    request: &RequestId,
) -> Result<MessageView, ApiError> {
    if body.trim().is_empty() {
        return Err(ApiError::bad_request(
            "empty_message",
            "Write something before sending.",
        ));
    }
    let chars = body.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request(
            "message_too_long",
            format!("A message can be at most {MAX_MESSAGE_CHARS} characters; this one has {chars}."),
        ));
    }
    let grant = grant::<PostChatMessage>(state, who, id, request).await?;
    let message = state.store.post_message(&grant, &body, state.clock.now()).await?;
    let c = grant.consultation();
    // Nobody may be listening; the message is kept either way.
    let _ = state.chat.send(ChatPosted {
        consultation: c.id,
        message: message.clone(),
    });
    Ok(message_view(c, &message))
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/messages", tag = "calls", params(("id" = Uuid, Path)),
    request_body = MessageRequest,
    responses((status = 201, description = "Kept in the consultation's record and sent to the others", body = MessageView),
              (status = 400, description = "Empty, or longer than 2000 characters", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "The consultation has ended", body = ErrorBody)))]
pub async fn post_message_handler(
    State(state): State<AppState>,
    who: InCall,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<MessageRequest>,
) -> Result<(StatusCode, axum::Json<MessageView>), ApiError> {
    let view = post_message(&state, &who, id, req.body, &request).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

pub async fn messages(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    after: i64,
    request: &RequestId,
) -> Result<Vec<MessageView>, ApiError> {
    let grant = grant::<ReadCallRecord>(state, who, id, request).await?;
    let list = state.store.messages(&grant, after, PAGE).await?;
    let c = grant.consultation();
    Ok(list.iter().map(|m| message_view(c, m)).collect())
}

#[utoipa::path(get, path = "/api/v1/appointments/{id}/messages", tag = "calls", params(("id" = Uuid, Path), MessagesQuery),
    responses((status = 200, description = "The consultation's chat, oldest first, at most 200 from `after`", body = Vec<MessageView>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn messages_handler(
    State(state): State<AppState>,
    who: InCall,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<axum::Json<Vec<MessageView>>, ApiError> {
    Ok(axum::Json(
        messages(&state, &who, id, query.after.unwrap_or(0), &request).await?,
    ))
}

fn message_event(c: &ConsultationRef, m: &ChatMessage) -> Event {
    let data = serde_json::to_string(&message_view(c, m)).expect("a message serializes");
    Event::default().event("message").id(m.seq.to_string()).data(data)
}

/// The consultation's chat as a stream: the messages after `after` first, then each new one. One
/// audited read of the consultation's record opens it.
pub async fn message_events(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    after: i64,
    request: &RequestId,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + use<>, ApiError> {
    let grant = grant::<ReadCallRecord>(state, who, id, request).await?;
    // Subscribed before reading, so that a message kept in between arrives once: by its position.
    let mut posted = state.chat.subscribe();
    let mut sent = after;
    let mut first = Vec::new();
    let c = *grant.consultation();
    loop {
        let page = state.store.messages(&grant, sent, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        for m in &page {
            sent = m.seq;
            first.push(Ok(message_event(&c, m)));
        }
        if !full {
            break;
        }
    }
    let store = state.store.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = posted.recv() => next,
                () = tx.closed() => return,
            };
            let message = match next {
                Ok(p) if p.consultation == c.id => p.message,
                Ok(_) => continue,
                // Fell behind: what was missed is read again from the store, under the same grant.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let Ok(missed) = store.messages(&grant, sent, PAGE).await else {
                        return;
                    };
                    for m in missed {
                        sent = m.seq;
                        if tx.send(Ok(message_event(&c, &m))).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if message.seq <= sent {
                continue;
            }
            sent = message.seq;
            if tx.send(Ok(message_event(&c, &message))).await.is_err() {
                return;
            }
        }
    });
    let rest =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok(futures_util::StreamExt::chain(
        futures_util::stream::iter(first),
        rest,
    ))
}

#[utoipa::path(get, path = "/api/v1/appointments/{id}/messages/events", tag = "calls", params(("id" = Uuid, Path), MessagesQuery),
    responses((status = 200, description = "Server-sent events: a `message` event (the message as JSON, its position as the event id) for each message after `after`, then for each new one", content_type = "text/event-stream", body = String),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn message_events_handler(
    State(state): State<AppState>,
    who: InCall,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = message_events(&state, &who, id, query.after.unwrap_or(0), &request).await?;
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

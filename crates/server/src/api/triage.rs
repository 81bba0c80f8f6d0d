//! The symptom checker's API: a conversation that starts from what the patient typed, asks one question at a
//! time and ends with how urgently to seek care.
//!
//! A logged-in patient's conversation is kept as their data: bound to them when it begins, read and
//! answered only through the gate, and audited. Anyone else (logged out, or staff trying it) gets an
//! anonymous conversation that the server does not keep at all: its state travels with the client as an
//! opaque token, sealed with AES-256-GCM under a key derived from the master key, so it cannot be read or
//! altered on the way, and expires after a day. Nothing about an anonymous conversation is written to
//! the database or the audit log.

use std::path::Path;
use std::sync::LazyLock;

use aes_gcm::aead::{Aead, Nonce};
use aes_gcm::{Aes256Gcm, KeyInit};
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confide_domain::audit::Outcome as AuditOutcome;
use confide_domain::identity::Role;
use confide_domain::policy::actions::{
    AnswerTriage, ListTriageSessions, ReadTriageSession, ShareTriageSummary, StartTriage,
};
use confide_domain::policy::{Action, Grant, TriageSessionRef};
use confide_domain::{TriageSessionId, UserId};
use confide_store::{TriageRecord, TriageUpdate};
use confide_triage::{
    Answer, Asked, Disposition, Engine, Kb, KbError, Outcome, Patient, Question, Region, Sex, Step,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::api::availability::rfc3339;
use crate::api::patients::patient_ref;
use crate::auth::{Caller, Session};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::gate::RequestId;

pub const MAX_TEXT_CHARS: usize = 2000;
pub const MAX_AGE_YEARS: u32 = 120;
/// An anonymous conversation's token stops working after this long.
const STATE_TTL_MS: i64 = 24 * 3_600_000;
const STATE_PREFIX: &str = "t1.";
const NONCE_LEN: usize = 12;

static KB: LazyLock<Result<Kb, KbError>> = LazyLock::new(Kb::embedded);

/// The knowledge base and the key that seals anonymous conversations.
pub struct Triage {
    kb: &'static Kb,
    key: Aes256Gcm,
}

impl std::fmt::Debug for Triage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Triage")
    }
}

impl Triage {
    /// Loads the embedded knowledge base (once per process) and derives the sealing key from the master key.
    pub fn open(master_key_path: &Path) -> Result<Triage, String> {
        let kb = KB.as_ref().map_err(|e| format!("knowledge base: {e}"))?;
        let master = std::fs::read(master_key_path).map_err(|e| format!("master key: {e}"))?;
        let mut derive = Sha256::new();
        derive.update(b"confide triage state v1\0");
        derive.update(&master);
        let raw: [u8; 32] = derive.finalize().into();
        Ok(Triage {
            kb,
            key: Aes256Gcm::new((&raw).into()),
        })
    }

    fn engine(&self, region: &'static Region) -> Engine<'static> {
        Engine::new(self.kb).with_region(region)
    }

    fn seal(&self, conversation: &Conversation, now_ms: i64) -> String {
        let sealed = Sealed {
            expires_at_ms: now_ms + STATE_TTL_MS,
            conversation: conversation.clone(),
        };
        let plain = serde_json::to_vec(&sealed).expect("a conversation serialises");
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = self
            .key
            .encrypt(&Nonce::<Aes256Gcm>::from(nonce), plain.as_slice())
            .expect("a conversation is within AES-GCM's limits");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&cipher);
        format!("{STATE_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    fn open_state(&self, token: &str, now_ms: i64) -> Result<Conversation, ApiError> {
        let invalid = || {
            ApiError::bad_request(
                "invalid_state",
                "state is not a conversation this server gave out: start again",
            )
        };
        let bytes = token
            .trim()
            .strip_prefix(STATE_PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(invalid)?;
        let (nonce, cipher) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| invalid())?;
        let plain = self.key.decrypt(&nonce, cipher).map_err(|_| invalid())?;
        let sealed: Sealed = serde_json::from_slice(&plain).map_err(|_| invalid())?;
        if sealed.expires_at_ms < now_ms {
            return Err(ApiError::bad_request(
                "state_expired",
                "this conversation is more than a day old: start again",
            ));
        }
        Ok(sealed.conversation)
    }
}

/// What is kept of a conversation, stored or sealed: the region it is answered for and the engine's session.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Conversation {
    region: String,
    session: confide_triage::Session,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    expires_at_ms: i64,
    conversation: Conversation,
}

impl Conversation {
    fn region(&self) -> &'static Region {
        Region::get(&self.region).unwrap_or_else(Region::uk)
    }

    fn complaint(&self) -> String {
        self.session
            .entries
            .iter()
            .find_map(|e| match e {
                confide_triage::Entry::Text { text, .. } => Some(text.clone()),
                confide_triage::Entry::Answer { .. } => None,
            })
            .unwrap_or_default()
    }
}

// ---- Requests -------------------------------------------------------------------------------------------

#[derive(Deserialize, ToSchema, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// What is wrong, in the patient's words (1 to 2000 characters).
    pub text: String,
    /// Age in whole years, 0 to 120. Required when not logged in as a patient; a patient's own age comes
    /// from their profile unless given.
    pub age: Option<u32>,
    /// For babies: age in whole months (0 to 23), used instead of `age`.
    pub age_months: Option<u32>,
    /// female or male.
    pub sex: String,
    /// Whose emergency numbers and services to name: uk (the default), us, …
    pub region: Option<String>,
}

#[derive(Deserialize, ToSchema, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// The id of the question being answered, as the conversation gave it (`question.id`).
    pub question: String,
    /// yes, no or unknown; for a choice, one option's id, or unknown.
    pub answer: String,
}

#[derive(Deserialize, ToSchema, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AnonymousAnswerRequest {
    /// The `state` token of the conversation so far.
    pub state: String,
    pub question: String,
    pub answer: String,
}

#[derive(Deserialize, ToSchema, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AnonymousBackRequest {
    pub state: String,
}

// ---- Views -----------------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct TriageView {
    /// A stored conversation's id (a logged-in patient's); null when anonymous.
    pub id: Option<Uuid>,
    /// An anonymous conversation's state: send it back with the next answer. Null when stored.
    pub state: Option<String>,
    pub complaint: String,
    /// What was understood from the text: findings, each present or denied.
    pub understood: Vec<UnderstoodView>,
    /// question or result.
    pub status: String,
    pub question: Option<QuestionView>,
    pub result: Option<ResultView>,
    /// A rough share of the conversation done, 0 to 1.
    pub progress: f64,
    /// Questions answered so far.
    pub answered: usize,
    /// Whether there is an answer to take back.
    pub can_go_back: bool,
    pub region: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct UnderstoodView {
    pub phrase: String,
    pub present: bool,
}

#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct QuestionView {
    /// What to send back as `question`.
    pub id: String,
    /// yes_no or choice.
    pub kind: String,
    pub text: String,
    /// For a choice: the options, each answered by its id.
    pub options: Vec<OptionView>,
    /// This question's number in the conversation, from 1.
    pub number: usize,
}

#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct OptionView {
    pub id: String,
    pub label: String,
}

#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
pub struct ConditionView {
    pub id: String,
    pub name: String,
    /// The model's probability, 0 to 1.
    pub probability: f64,
    /// The disposition the condition usually needs.
    pub triage: String,
    /// A short plain explanation.
    pub explanation: String,
    /// What the patient said that points to it.
    pub because: Vec<String>,
}

#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct ResultView {
    /// emergency, urgent, routine or self-care.
    pub disposition: String,
    /// A heading in plain words ("Call 999 now").
    pub headline: String,
    /// What to do now.
    pub advice: String,
    /// When to seek help sooner.
    pub safety_net: String,
    /// The red-flag rules that fired, in words: they come first.
    pub warnings: Vec<String>,
    /// The most likely conditions, most likely first.
    pub conditions: Vec<ConditionView>,
    pub questions: usize,
    /// Whether booking a GP appointment is the next step (routine or urgent).
    pub can_book: bool,
}

/// What a patient may share with the clinician of an appointment, copied onto it when it is booked.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
pub struct TriageSummaryView {
    pub triage_session_id: Uuid,
    pub complaint: String,
    pub disposition: String,
    pub warnings: Vec<String>,
    pub conditions: Vec<ConditionView>,
    /// Findings the patient confirmed, and denied, as short phrases.
    pub present: Vec<String>,
    pub absent: Vec<String>,
    pub transcript: Vec<ExchangeView>,
    /// When the conversation reached its result, RFC 3339.
    pub completed_at: String,
}

#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
pub struct ExchangeView {
    pub question: String,
    pub answer: String,
}

#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct TriageListItem {
    pub id: Uuid,
    pub complaint: String,
    /// The result's disposition; null while unfinished.
    pub disposition: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

fn question_id(q: &Question) -> &str {
    match q {
        Question::Finding { finding } => finding,
        Question::Group { group } => group,
    }
}

fn question_view(asked: &Asked) -> QuestionView {
    QuestionView {
        id: question_id(&asked.question).to_owned(),
        kind: match asked.question {
            Question::Finding { .. } => "yes_no",
            Question::Group { .. } => "choice",
        }
        .to_owned(),
        text: asked.text.clone(),
        options: asked
            .options
            .iter()
            .map(|(id, label)| OptionView {
                id: id.clone(),
                label: label.clone(),
            })
            .collect(),
        number: asked.number,
    }
}

fn headline(d: Disposition, region: &Region) -> String {
    match d {
        Disposition::Emergency => format!(
            "Emergency: call {} or go to {} now",
            region.emergency, region.place
        ),
        Disposition::Urgent => "See a clinician today".to_owned(),
        Disposition::Routine => "Book an appointment with your GP".to_owned(),
        Disposition::SelfCare => "You can probably look after this yourself".to_owned(),
    }
}

fn conditions(outcome: &Outcome) -> Vec<ConditionView> {
    outcome
        .top
        .iter()
        .map(|r| ConditionView {
            id: r.id.clone(),
            name: r.name.clone(),
            probability: r.probability,
            triage: r.triage.as_str().to_owned(),
            explanation: r.explanation.clone(),
            because: r.because.clone(),
        })
        .collect()
}

fn result_view(outcome: &Outcome, region: &Region) -> ResultView {
    let d = outcome.disposition;
    ResultView {
        disposition: d.as_str().to_owned(),
        headline: headline(d, region),
        advice: outcome.advice.clone(),
        safety_net: outcome.safety_net.clone(),
        warnings: outcome.red_flags.iter().map(|f| f.message.clone()).collect(),
        conditions: conditions(outcome),
        questions: outcome.questions,
        can_book: matches!(d, Disposition::Routine | Disposition::Urgent),
    }
}

/// The conversation as the client sees it, with where it stands now.
fn view(triage: &Triage, c: &Conversation) -> (TriageView, Step) {
    let region = c.region();
    let step = triage.engine(region).next(&c.session);
    let understood = c
        .session
        .entries
        .iter()
        .filter_map(|e| match e {
            confide_triage::Entry::Text { understood, .. } => Some(understood),
            confide_triage::Entry::Answer { .. } => None,
        })
        .flat_map(|u| u.findings.iter())
        .filter_map(|f| {
            let i = triage.kb.finding(&f.finding)?;
            Some(UnderstoodView {
                phrase: triage.kb.findings[i].phrase.clone(),
                present: f.present,
            })
        })
        .collect();
    let (status, question, result, progress) = match &step {
        Step::Ask(asked) => ("question", Some(question_view(asked)), None, asked.progress),
        Step::Done(outcome) => ("result", None, Some(result_view(outcome, region)), 1.0),
    };
    let v = TriageView {
        id: None,
        state: None,
        complaint: c.complaint(),
        understood,
        status: status.to_owned(),
        question,
        result,
        progress,
        answered: c.session.questions(),
        can_go_back: c.session.entries.len() > 1,
        region: region.id.clone(),
        created_at: None,
        updated_at: None,
    };
    (v, step)
}

fn disposition_of(step: &Step) -> Option<&'static str> {
    match step {
        Step::Done(o) => Some(o.disposition.as_str()),
        Step::Ask(_) => None,
    }
}

// ---- Validation ----------------------------------------------------------------------------------------

fn check_text(text: &str) -> Result<&str, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "text_required",
            "say in a few words what is wrong",
        ));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::bad_request(
            "text_too_long",
            format!("text can be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::bad_request(
            "invalid_text",
            "text contains control characters",
        ));
    }
    Ok(text)
}

fn parse_sex(raw: &str) -> Result<Sex, ApiError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "female" => Ok(Sex::Female),
        "male" => Ok(Sex::Male),
        _ => Err(ApiError::bad_request("invalid_sex", "sex must be female or male")),
    }
}

fn parse_region(raw: Option<&str>) -> Result<&'static Region, ApiError> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(Region::uk()),
        Some(id) => Region::get(id).ok_or_else(|| {
            let known: Vec<&str> = Region::all().iter().map(|r| r.id.as_str()).collect();
            ApiError::bad_request(
                "invalid_region",
                format!("region must be one of: {}", known.join(", ")),
            )
        }),
    }
}

/// The patient's age from the request, or else from `profile_age_months`.
fn patient_of(req: &StartRequest, profile_age_months: Option<u32>) -> Result<Patient, ApiError> {
    let sex = parse_sex(&req.sex)?;
    if let Some(months) = req.age_months {
        if months >= 24 {
            return Err(ApiError::bad_request(
                "invalid_age",
                "age_months is for babies under 2: give age in years instead",
            ));
        }
        return Ok(Patient::from_months(months, sex));
    }
    match (req.age, profile_age_months) {
        (Some(years), _) if years > MAX_AGE_YEARS => Err(ApiError::bad_request(
            "invalid_age",
            format!("age must be between 0 and {MAX_AGE_YEARS} years"),
        )),
        (Some(years), _) => Ok(Patient::new(years, sex)),
        (None, Some(months)) => Ok(Patient::from_months(months, sex)),
        (None, None) => Err(ApiError::bad_request("age_required", "give the age in years")),
    }
}

/// The answer to the question being asked; anything else is refused rather than guessed at.
fn parse_answer(asked: &Asked, question: &str, answer: &str) -> Result<Answer, ApiError> {
    if question.trim() != question_id(&asked.question) {
        return Err(ApiError::InvalidState(
            "that is not the question being asked: reload the conversation".into(),
        ));
    }
    let answer = answer.trim();
    let dont_know = matches!(answer, "unknown" | "dont_know" | "don't know");
    match &asked.question {
        Question::Finding { .. } => match answer {
            "yes" => Ok(Answer::Yes),
            "no" => Ok(Answer::No),
            _ if dont_know => Ok(Answer::DontKnow),
            _ => Err(ApiError::bad_request(
                "invalid_answer",
                "answer must be yes, no or unknown",
            )),
        },
        Question::Group { .. } if dont_know => Ok(Answer::DontKnow),
        Question::Group { .. } => asked
            .options
            .iter()
            .find(|(id, _)| id == answer)
            .map(|(id, _)| Answer::Choice { option: id.clone() })
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_answer",
                    "answer must be one of the question's options, or unknown",
                )
            }),
    }
}

/// Applies an answer to the conversation.
fn answer(triage: &Triage, c: &mut Conversation, question: &str, answer: &str) -> Result<(), ApiError> {
    let engine = triage.engine(c.region());
    let Step::Ask(asked) = engine.next(&c.session) else {
        return Err(ApiError::InvalidState(
            "the conversation has its result: go back to change an answer".into(),
        ));
    };
    let parsed = parse_answer(&asked, question, answer)?;
    engine
        .answer(&mut c.session, asked.question, parsed)
        .map_err(|e| ApiError::InvalidState(e.to_string()))
}

fn back(c: &mut Conversation) -> Result<(), ApiError> {
    if c.session.undo() {
        Ok(())
    } else {
        Err(ApiError::InvalidState("there is no answer to take back".into()))
    }
}

// ---- Stored conversations ------------------------------------------------------------------------------

/// Whether the caller's conversations are kept: a patient's are, anyone else's are anonymous.
fn keeps(caller: &Caller) -> Option<&Session> {
    caller.0.as_ref().filter(|s| s.account().role == Role::Patient)
}

/// Age in whole months on `today` of someone born on `dob` (YYYY-MM-DD).
fn age_months(dob: &str, today: jiff::civil::Date) -> Option<u32> {
    let born: jiff::civil::Date = dob.parse().ok()?;
    let span = born.until((jiff::Unit::Month, today)).ok()?;
    u32::try_from(span.get_months()).ok()
}

fn stored_view(triage: &Triage, record: &TriageRecord) -> Result<TriageView, ApiError> {
    let c: Conversation = serde_json::from_str(&record.session)
        .map_err(|e| ApiError::Unavailable(format!("stored triage session {}: {e}", record.id)))?;
    let (mut v, _) = view(triage, &c);
    v.id = Some(record.id.as_uuid());
    v.created_at = Some(rfc3339(record.created_at_ms));
    v.updated_at = Some(rfc3339(record.updated_at_ms));
    Ok(v)
}

async fn record_event(
    state: &AppState,
    session: &Session,
    action: &str,
    id: TriageSessionId,
    patient: UserId,
    request: &RequestId,
) -> Result<(), ApiError> {
    let event = confide_domain::audit::AuditEvent {
        resource: format!("triage_session:{id}"),
        subject_patient: Some(patient),
        ..state.event(
            Some(session),
            action,
            AuditOutcome::Allowed,
            "patient_self",
            request,
        )
    };
    state.record(event).await?;
    Ok(())
}

/// Starts a conversation: kept for a logged-in patient, sealed into `state` for anyone else.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    req: &StartRequest,
    request: &RequestId,
) -> Result<TriageView, ApiError> {
    let text = check_text(&req.text)?;
    let region = parse_region(req.region.as_deref())?;
    parse_sex(&req.sex)?;
    let triage = &state.triage;
    let Some(session) = keeps(caller) else {
        let patient = patient_of(req, None)?;
        let c = Conversation {
            region: region.id.clone(),
            session: triage.engine(region).start(patient, text),
        };
        let (mut v, _) = view(triage, &c);
        v.state = Some(triage.seal(&c, state.clock.now_ms()));
        return Ok(v);
    };
    let on = patient_ref(
        state,
        session,
        session.account().id.as_uuid(),
        Action::StartTriage,
        request,
    )
    .await?;
    let grant = state.authorize::<StartTriage>(session, on, request).await?;
    let today = state.clock.now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let profile_age = state
        .store
        .triage_date_of_birth(&grant)
        .await?
        .and_then(|dob| age_months(&dob, today));
    let patient = patient_of(req, profile_age)?;
    let c = Conversation {
        region: region.id.clone(),
        session: triage.engine(region).start(patient, text),
    };
    let (_, step) = view(triage, &c);
    let id = TriageSessionId::from_uuid(Uuid::now_v7());
    let json = serde_json::to_string(&c).expect("a conversation serialises");
    let record = state
        .store
        .create_triage_session(
            &grant,
            id,
            text,
            &json,
            disposition_of(&step),
            state.clock.now_ms(),
        )
        .await?;
    record_event(state, session, "triage.created", id, grant.patient(), request).await?;
    stored_view(triage, &record)
}

/// The conversation, if it exists; an unknown id is recorded and answered as a denial would be.
async fn triage_ref(
    state: &AppState,
    session: &Session,
    id: Uuid,
    action: Action,
    request: &RequestId,
) -> Result<TriageSessionRef, ApiError> {
    let id = TriageSessionId::from_uuid(id);
    let found = state.store.triage_session_ref(id).await?;
    state
        .found(found, session, action, || format!("triage_session:{id}"), request)
        .await
}

pub async fn get(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<TriageView, ApiError> {
    let on = triage_ref(state, session, id, Action::ReadTriageSession, request).await?;
    let grant = state.authorize::<ReadTriageSession>(session, on, request).await?;
    let record = state
        .store
        .triage_session(&grant)
        .await?
        .ok_or(ApiError::NotFound)?;
    stored_view(&state.triage, &record)
}

/// Answers the question being asked, or (`question` None) takes the last answer back.
pub async fn change(
    state: &AppState,
    session: &Session,
    id: Uuid,
    given: Option<&AnswerRequest>,
    request: &RequestId,
) -> Result<TriageView, ApiError> {
    let on = triage_ref(state, session, id, Action::AnswerTriage, request).await?;
    let grant: Grant<AnswerTriage> = state.authorize::<AnswerTriage>(session, on, request).await?;
    let record = state
        .store
        .triage_session_to_answer(&grant)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut c: Conversation = serde_json::from_str(&record.session)
        .map_err(|e| ApiError::Unavailable(format!("stored triage session {}: {e}", record.id)))?;
    match given {
        Some(a) => answer(&state.triage, &mut c, &a.question, &a.answer)?,
        None => back(&mut c)?,
    }
    let (_, step) = view(&state.triage, &c);
    let json = serde_json::to_string(&c).expect("a conversation serialises");
    let updated = state
        .store
        .update_triage_session(
            &grant,
            TriageUpdate {
                from_version: record.version,
                session: &json,
                disposition: disposition_of(&step),
                at_ms: state.clock.now_ms(),
            },
        )
        .await?;
    stored_view(&state.triage, &updated)
}

pub async fn list(
    state: &AppState,
    session: &Session,
    request: &RequestId,
) -> Result<Vec<TriageListItem>, ApiError> {
    let on = patient_ref(
        state,
        session,
        session.account().id.as_uuid(),
        Action::ListTriageSessions,
        request,
    )
    .await?;
    let grant = state
        .authorize::<ListTriageSessions>(session, on, request)
        .await?;
    Ok(state
        .store
        .patient_triage_sessions(&grant)
        .await?
        .into_iter()
        .map(|r| TriageListItem {
            id: r.id.as_uuid(),
            complaint: r.complaint,
            disposition: r.disposition,
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
        })
        .collect())
}

/// Anonymous: answers or goes back on a sealed conversation, and seals the result again.
pub fn change_anonymous(
    state: &AppState,
    token: &str,
    given: Option<(&str, &str)>,
) -> Result<TriageView, ApiError> {
    let now_ms = state.clock.now_ms();
    let mut c = state.triage.open_state(token, now_ms)?;
    match given {
        Some((question, a)) => answer(&state.triage, &mut c, question, a)?,
        None => back(&mut c)?,
    }
    let (mut v, _) = view(&state.triage, &c);
    v.state = Some(state.triage.seal(&c, now_ms));
    Ok(v)
}

/// For booking: the gate's grant to share the conversation, and its summary. Only a conversation with a
/// result can be shared.
pub async fn summary_to_share(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<(Grant<ShareTriageSummary>, TriageSummaryView), ApiError> {
    let on = triage_ref(state, session, id, Action::ShareTriageSummary, request).await?;
    let grant = state
        .authorize::<ShareTriageSummary>(session, on, request)
        .await?;
    let record = state
        .store
        .triage_session_to_share(&grant)
        .await?
        .ok_or(ApiError::NotFound)?;
    let c: Conversation = serde_json::from_str(&record.session)
        .map_err(|e| ApiError::Unavailable(format!("stored triage session {}: {e}", record.id)))?;
    let Step::Done(outcome) = state.triage.engine(c.region()).next(&c.session) else {
        return Err(ApiError::InvalidState(
            "that symptom check is not finished: answer its questions first".into(),
        ));
    };
    let summary = TriageSummaryView {
        triage_session_id: record.id.as_uuid(),
        complaint: record.complaint,
        disposition: outcome.disposition.as_str().to_owned(),
        warnings: outcome.red_flags.iter().map(|f| f.message.clone()).collect(),
        conditions: conditions(&outcome),
        present: outcome.present.clone(),
        absent: outcome.absent.clone(),
        transcript: outcome
            .transcript
            .iter()
            .map(|e| ExchangeView {
                question: e.question.clone(),
                answer: e.answer.clone(),
            })
            .collect(),
        completed_at: rfc3339(record.updated_at_ms),
    };
    Ok((grant, summary))
}

// ---- Handlers ------------------------------------------------------------------------------------------

#[utoipa::path(post, path = "/api/v1/triage/sessions", tag = "triage", request_body = StartRequest,
    responses((status = 201, description = "The first question, or already the result. A logged-in patient's \
        conversation is kept (`id`); anyone else's is not, and comes back as `state`", body = TriageView),
              (status = 400, body = ErrorBody)))]
pub async fn start_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiJson(req): ApiJson<StartRequest>,
) -> Result<(StatusCode, axum::Json<TriageView>), ApiError> {
    let v = start(&state, &caller, &req, &request).await?;
    Ok((StatusCode::CREATED, axum::Json(v)))
}

#[utoipa::path(get, path = "/api/v1/triage/sessions", tag = "triage",
    responses((status = 200, description = "The caller's own kept conversations, newest first", body = Vec<TriageListItem>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
) -> Result<axum::Json<Vec<TriageListItem>>, ApiError> {
    Ok(axum::Json(list(&state, caller.session()?, &request).await?))
}

#[utoipa::path(get, path = "/api/v1/triage/sessions/{id}", tag = "triage", params(("id" = Uuid, Path)),
    responses((status = 200, body = TriageView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<TriageView>, ApiError> {
    Ok(axum::Json(get(&state, caller.session()?, id, &request).await?))
}

#[utoipa::path(post, path = "/api/v1/triage/sessions/{id}/answers", tag = "triage", params(("id" = Uuid, Path)),
    request_body = AnswerRequest,
    responses((status = 200, description = "The next question, or the result", body = TriageView),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Not the question being asked, or the conversation has its result", body = ErrorBody)))]
pub async fn answer_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AnswerRequest>,
) -> Result<axum::Json<TriageView>, ApiError> {
    Ok(axum::Json(
        change(&state, caller.session()?, id, Some(&req), &request).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/triage/sessions/{id}/back", tag = "triage", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The conversation with its last answer taken back", body = TriageView),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn back_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<TriageView>, ApiError> {
    Ok(axum::Json(
        change(&state, caller.session()?, id, None, &request).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/triage/anonymous/answers", tag = "triage", request_body = AnonymousAnswerRequest,
    responses((status = 200, description = "The next question or the result, with the new `state`", body = TriageView),
              (status = 400, description = "Invalid answer, or a state this server did not give out or that expired", body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn anonymous_answer_handler(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AnonymousAnswerRequest>,
) -> Result<axum::Json<TriageView>, ApiError> {
    Ok(axum::Json(change_anonymous(
        &state,
        &req.state,
        Some((&req.question, &req.answer)),
    )?))
}

#[utoipa::path(post, path = "/api/v1/triage/anonymous/back", tag = "triage", request_body = AnonymousBackRequest,
    responses((status = 200, body = TriageView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn anonymous_back_handler(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AnonymousBackRequest>,
) -> Result<axum::Json<TriageView>, ApiError> {
    Ok(axum::Json(change_anonymous(&state, &req.state, None)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_come_from_the_date_of_birth_in_whole_months() {
        let today: jiff::civil::Date = "2026-11-26".parse().unwrap();
        assert_eq!(age_months("2026-10-01", today), Some(1));
        assert_eq!(age_months("1980-11-27", today), Some(45 * 12 + 11));
        assert_eq!(age_months("not a date", today), None);
    }

    #[test]
    fn a_sealed_conversation_opens_only_unchanged_and_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let triage = Triage::open(&key).unwrap();
        let c = Conversation {
            region: "uk".into(),
            session: triage
                .engine(Region::uk())
                .start(Patient::new(30, Sex::Female), "sore throat"),
        };
        let token = triage.seal(&c, 1_000);
        assert_eq!(
            triage.open_state(&token, 2_000).unwrap().complaint(),
            "sore throat"
        );
        let expired = triage.open_state(&token, 1_000 + STATE_TTL_MS + 1).unwrap_err();
        assert_eq!(expired.code(), "state_expired");
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            triage.open_state(&tampered, 2_000).unwrap_err().code(),
            "invalid_state"
        );
        std::fs::write(&key, [8u8; 32]).unwrap();
        let other = Triage::open(&key).unwrap();
        assert_eq!(
            other.open_state(&token, 2_000).unwrap_err().code(),
            "invalid_state"
        );
    }
}

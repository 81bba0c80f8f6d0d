//! Every API endpoint, called as every principal in generated worlds of practices, staff, patients,
//! registrations and transfers, appointments and symptom checks (some shared into a booking). The expected answer comes from an oracle written from the policy's words,
//! independently of the access gate; any unexpected 2xx, or a 2xx that carries someone else's data, fails.
//! Every new endpoint joins [`ENDPOINTS`] and [`expect`].

use std::collections::{BTreeSet, HashMap};

use confide_domain::identity::Role;
use confide_domain::{PracticeId, UserId};
use confide_server::Clock;
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Client, Seeded, TestApp, not_found_body};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    None,
    Patient,
    Practice,
    Registration,
    /// A practice named in the JSON body rather than the path.
    PracticeInBody,
    /// Anyone's user id in the path, standing for a clinician.
    Clinician,
    /// A clinician named in the JSON body.
    ClinicianInBody,
    Appointment,
    /// An availability rule, under its clinician's path.
    Rule,
    /// An availability exception, under its clinician's path.
    Exception,
    Recording,
    /// A patient's kept symptom check.
    Triage,
    /// An anonymous symptom check's sealed state, sent in the JSON body.
    TriageState,
}

#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub target: Target,
}

const fn ep(method: &'static str, path: &'static str, target: Target) -> Endpoint {
    Endpoint { method, path, target }
}

pub const ENDPOINTS: &[Endpoint] = &[
    ep("GET", "/api/v1/me", Target::None),
    ep("GET", "/api/v1/practices", Target::None),
    ep("POST", "/api/v1/practices", Target::None),
    ep("GET", "/api/v1/practices/{id}", Target::Practice),
    ep(
        "GET",
        "/api/v1/practices/{id}/registration-requests",
        Target::Practice,
    ),
    ep("GET", "/api/v1/practices/{id}/patients", Target::Practice),
    ep("POST", "/api/v1/practices/{id}/invites", Target::Practice),
    ep("GET", "/api/v1/registrations", Target::None),
    ep("POST", "/api/v1/registrations", Target::PracticeInBody),
    ep("POST", "/api/v1/registrations/{id}/accept", Target::Registration),
    ep("POST", "/api/v1/registrations/{id}/decline", Target::Registration),
    ep("GET", "/api/v1/patients/{id}", Target::Patient),
    ep("GET", "/api/v1/patients/{id}/record", Target::Patient),
    ep("POST", "/api/v1/patients/{id}/notes", Target::Patient),
    ep("GET", "/api/v1/patients/{id}/access-log", Target::Patient),
    ep("GET", "/api/v1/practices/{id}/slots", Target::Practice),
    ep("PUT", "/api/v1/practices/{id}/booking-cutoff", Target::Practice),
    ep(
        "PUT",
        "/api/v1/practices/{id}/recording-retention",
        Target::Practice,
    ),
    ep("PUT", "/api/v1/practices/{id}/replay", Target::Practice),
    ep("GET", "/api/v1/recordings", Target::None),
    ep("GET", "/api/v1/recordings/{id}", Target::Recording),
    ep("GET", "/api/v1/recordings/{id}/media", Target::Recording),
    // One participant's copy: the recording's patient's, so that the path names a real participant.
    ep(
        "GET",
        "/api/v1/recordings/{id}/media/{participant}",
        Target::Recording,
    ),
    // Before completing, while the recording is still being made: break-glass first, so that a
    // colleague who broke the glass then reaches the recording's (not yet playable) media.
    ep("POST", "/api/v1/recordings/{id}/break-glass", Target::Recording),
    ep("POST", "/api/v1/recordings/{id}/playback", Target::Recording),
    ep("GET", "/api/v1/appointments", Target::None),
    ep("POST", "/api/v1/appointments", Target::ClinicianInBody),
    ep("GET", "/api/v1/appointments/{id}", Target::Appointment),
    ep("GET", "/api/v1/appointments/{id}/events", Target::Appointment),
    ep("POST", "/api/v1/appointments/{id}/cancel", Target::Appointment),
    ep(
        "POST",
        "/api/v1/appointments/{id}/reschedule",
        Target::Appointment,
    ),
    ep("POST", "/api/v1/appointments/{id}/check-in", Target::Appointment),
    ep("POST", "/api/v1/appointments/{id}/start", Target::Appointment),
    // Before completing, so that a call into a running consultation succeeds.
    ep("POST", "/api/v1/appointments/{id}/call", Target::Appointment),
    ep("POST", "/api/v1/appointments/{id}/call/mode", Target::Appointment),
    ep(
        "POST",
        "/api/v1/appointments/{id}/call/leave",
        Target::Appointment,
    ),
    // The consultation's record beside its media: consent and chat, while it runs and after.
    ep(
        "POST",
        "/api/v1/appointments/{id}/call/consent",
        Target::Appointment,
    ),
    ep(
        "GET",
        "/api/v1/appointments/{id}/call/consent",
        Target::Appointment,
    ),
    ep("POST", "/api/v1/appointments/{id}/messages", Target::Appointment),
    // Guests, while the consultation runs: only its clinician invites and lists them.
    ep("POST", "/api/v1/appointments/{id}/guests", Target::Appointment),
    ep("GET", "/api/v1/appointments/{id}/guests", Target::Appointment),
    ep("GET", "/api/v1/appointments/{id}/messages", Target::Appointment),
    ep(
        "GET",
        "/api/v1/appointments/{id}/messages/events",
        Target::Appointment,
    ),
    ep("POST", "/api/v1/appointments/{id}/complete", Target::Appointment),
    ep("POST", "/api/v1/appointments/{id}/no-show", Target::Appointment),
    ep("GET", "/api/v1/clinicians/{id}/availability", Target::Clinician),
    ep(
        "POST",
        "/api/v1/clinicians/{id}/availability/rules",
        Target::Clinician,
    ),
    ep(
        "DELETE",
        "/api/v1/clinicians/{id}/availability/rules/{rule_id}",
        Target::Rule,
    ),
    ep(
        "POST",
        "/api/v1/clinicians/{id}/availability/exceptions",
        Target::Clinician,
    ),
    ep(
        "DELETE",
        "/api/v1/clinicians/{id}/availability/exceptions/{exception_id}",
        Target::Exception,
    ),
    ep("GET", "/api/v1/clinicians/{id}/schedule", Target::Clinician),
    // Starting comes first among the writes, so that conversations begun in the matrix are tried too.
    ep("POST", "/api/v1/triage/sessions", Target::None),
    ep("GET", "/api/v1/triage/sessions", Target::None),
    ep("GET", "/api/v1/triage/sessions/{id}", Target::Triage),
    ep("POST", "/api/v1/triage/sessions/{id}/answers", Target::Triage),
    ep("POST", "/api/v1/triage/sessions/{id}/back", Target::Triage),
    ep("POST", "/api/v1/triage/anonymous/answers", Target::TriageState),
    ep("POST", "/api/v1/triage/anonymous/back", Target::TriageState),
];

/// Appointments in the generated world start days ahead, so only cancelling and "no show" move them;
/// one more is in consultation from the start, and completing moves it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Visit {
    Booked,
    Cancelled,
    NoShow,
    InConsultation,
    Completed,
}

#[derive(Clone, Debug)]
struct Appt {
    id: Uuid,
    patient: UserId,
    clinician: UserId,
    practice: PracticeId,
    status: Visit,
    /// Who is in its call.
    in_call: BTreeSet<UserId>,
    /// The kept symptom check whose summary the patient shared when booking.
    triage: Option<Uuid>,
}

/// A consultation's recording, with the owners it was bound to when the consultation started.
#[derive(Clone, Debug)]
struct Rec {
    id: Uuid,
    patient: UserId,
    clinician: UserId,
    practice: PracticeId,
}

/// Where a conversation with the symptom checker stands, from the last view of it.
#[derive(Clone, Debug, Default)]
struct Step {
    /// The id of the question being asked; none once it has its result.
    question: Option<String>,
    can_go_back: bool,
}

impl Step {
    fn of(view: &Value) -> Step {
        Step {
            question: view["question"]["id"].as_str().map(str::to_owned),
            can_go_back: view["can_go_back"] == true,
        }
    }
}

/// A patient's kept symptom check. Its complaint carries a marker found nowhere else, so that any answer
/// showing it to someone else is caught.
#[derive(Clone, Debug)]
struct Check {
    id: Uuid,
    patient: UserId,
    complaint: String,
    marker: String,
    step: Step,
}

/// An anonymous symptom check's sealed state, known to the test by a made-up id. The server keeps nothing of
/// it, so every caller sending it gets the same answer.
#[derive(Clone, Debug)]
struct Token {
    key: Uuid,
    state: String,
    complaint: String,
    step: Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Accepted,
    Declined,
    Withdrawn,
    Ended,
}

#[derive(Clone, Debug)]
struct Reg {
    id: Uuid,
    patient: UserId,
    practice: PracticeId,
    status: Status,
}

/// What the test believes the world is, kept up to date as calls change it.
#[derive(Default)]
struct Model {
    practices: Vec<PracticeId>,
    names: HashMap<UserId, String>,
    regs: Vec<Reg>,
    notes: HashMap<UserId, BTreeSet<String>>,
    /// Every clinician, with where they work.
    clinicians: HashMap<UserId, PracticeId>,
    /// Availability rules and exceptions: (id, clinician).
    rules: Vec<(Uuid, UserId)>,
    exceptions: Vec<(Uuid, UserId)>,
    appts: Vec<Appt>,
    recordings: Vec<Rec>,
    /// Who broke the glass on which recording (within the hour the test runs in).
    glass: BTreeSet<(UserId, Uuid)>,
    checks: Vec<Check>,
    tokens: Vec<Token>,
}

impl Model {
    fn registered_at(&self, patient: UserId) -> Option<PracticeId> {
        self.regs
            .iter()
            .find(|r| r.patient == patient && r.status == Status::Accepted)
            .map(|r| r.practice)
    }

    fn live(&self, patient: UserId, practice: PracticeId) -> bool {
        self.regs.iter().any(|r| {
            r.patient == patient
                && r.practice == practice
                && matches!(r.status, Status::Pending | Status::Accepted)
        })
    }

    /// Whether `who` may see the kept symptom check `c` anywhere: its patient, and the clinician of an
    /// appointment it was shared into. Never a colleague or an admin.
    fn may_see_check(&self, who: Option<&Person>, c: &Check) -> bool {
        let Some(who) = who else { return false };
        let me = who.seeded.id;
        match who.seeded.role {
            Role::Patient => me == c.patient,
            Role::Clinician => {
                who.mfa
                    && self.appts.iter().any(|a| {
                        a.triage == Some(c.id) && a.clinician == me && who.seeded.practice == Some(a.practice)
                    })
            }
            Role::PracticeAdmin | Role::PlatformAdmin => false,
        }
    }

    fn accept(&mut self, id: Uuid) {
        let Some(patient) = self.regs.iter().find(|r| r.id == id).map(|r| r.patient) else {
            return;
        };
        for r in self.regs.iter_mut().filter(|r| r.patient == patient) {
            r.status = match (r.id == id, r.status) {
                (true, _) => Status::Accepted,
                (false, Status::Accepted) => Status::Ended,
                (false, Status::Pending) => Status::Withdrawn,
                (false, other) => other,
            };
        }
    }
}

struct Person {
    seeded: Seeded,
    client: Client,
    /// Staff who logged in without a second factor: the gate must refuse them everything.
    mfa: bool,
}

/// The oracle: which status a call should get.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Created,
    Accepted,
    NoContent,
    /// Allowed, but the request's content is refused (the generated requests ask for past times).
    BadRequest,
    /// Allowed, but the data refuses the change.
    Conflict,
    NotFound,
    LoginRequired,
}

fn expect(model: &Model, who: Option<&Person>, endpoint: &Endpoint, target: Option<Uuid>) -> Expect {
    use Expect::*;
    let public =
        matches!(endpoint.path, "/api/v1/practices" | "/api/v1/practices/{id}") && endpoint.method == "GET";
    let practice_exists = |id: Uuid| model.practices.contains(&PracticeId::from_uuid(id));
    if public {
        return match target {
            Some(id) if !practice_exists(id) => NotFound,
            _ => Ok,
        };
    }
    // Anyone may use the symptom checker: a patient's conversation is kept, anyone else's is sealed into
    // a state token that answers the same whoever sends it.
    match (endpoint.method, endpoint.path) {
        ("POST", "/api/v1/triage/sessions") => return Created,
        ("POST", "/api/v1/triage/anonymous/answers" | "/api/v1/triage/anonymous/back") => {
            let Some(t) = model.tokens.iter().find(|t| Some(t.key) == target) else {
                return BadRequest;
            };
            let possible = if endpoint.path.ends_with("back") {
                t.step.can_go_back
            } else {
                t.step.question.is_some()
            };
            return if possible { Ok } else { Conflict };
        }
        _ => {}
    }
    let Some(who) = who else { return LoginRequired };
    let role = who.seeded.role;
    let me = who.seeded.id;
    let works_at = |p: PracticeId| who.seeded.practice == Some(p) && who.mfa;
    let is_patient = role == Role::Patient;
    let allowed = |yes: bool, ok: Expect| if yes { ok } else { NotFound };
    match (endpoint.method, endpoint.path) {
        ("GET", "/api/v1/me") => Ok,
        ("POST", "/api/v1/practices") => allowed(role == Role::PlatformAdmin && who.mfa, Created),
        ("GET", "/api/v1/registrations") => allowed(is_patient, Ok),
        ("GET", "/api/v1/appointments") => allowed(is_patient, Ok),
        // A patient's own recordings; a clinician's of the consultations they ran.
        ("GET", "/api/v1/recordings") => allowed(is_patient || (role == Role::Clinician && who.mfa), Ok),
        ("GET", "/api/v1/triage/sessions") => allowed(is_patient, Ok),
        _ => {
            let id = target.expect("a target");
            match endpoint.target {
                Target::Practice | Target::PracticeInBody => {
                    let p = PracticeId::from_uuid(id);
                    if !practice_exists(id) {
                        return NotFound;
                    }
                    match endpoint.path {
                        "/api/v1/practices/{id}/registration-requests" => allowed(
                            matches!(role, Role::Clinician | Role::PracticeAdmin) && works_at(p),
                            Ok,
                        ),
                        "/api/v1/practices/{id}/patients" => {
                            allowed(role == Role::Clinician && works_at(p), Ok)
                        }
                        "/api/v1/practices/{id}/invites" => allowed(
                            (role == Role::PracticeAdmin && works_at(p))
                                || (role == Role::PlatformAdmin && who.mfa),
                            Accepted,
                        ),
                        "/api/v1/practices/{id}/slots" => {
                            allowed(is_patient && model.registered_at(me) == Some(p), Ok)
                        }
                        "/api/v1/practices/{id}/booking-cutoff" => allowed(
                            (role == Role::PracticeAdmin && works_at(p))
                                || (role == Role::PlatformAdmin && who.mfa),
                            Ok,
                        ),
                        // The practice's own admin only: recordings are no platform admin's business.
                        "/api/v1/practices/{id}/recording-retention" | "/api/v1/practices/{id}/replay" => {
                            allowed(role == Role::PracticeAdmin && works_at(p), Ok)
                        }
                        "/api/v1/registrations" if is_patient => {
                            if model.live(me, p) {
                                Conflict
                            } else {
                                Created
                            }
                        }
                        _ => NotFound,
                    }
                }
                Target::Registration => match model.regs.iter().find(|r| r.id == id) {
                    Some(r)
                        if matches!(role, Role::Clinician | Role::PracticeAdmin) && works_at(r.practice) =>
                    {
                        if r.status == Status::Pending {
                            Ok
                        } else {
                            Conflict
                        }
                    }
                    _ => NotFound,
                },
                Target::Patient => {
                    let patient = UserId::from_uuid(id);
                    if !model.names.contains_key(&patient) {
                        return NotFound;
                    }
                    let own = is_patient && me == patient;
                    let their_clinician =
                        role == Role::Clinician && model.registered_at(patient).is_some_and(works_at);
                    match endpoint.path {
                        "/api/v1/patients/{id}" | "/api/v1/patients/{id}/record" => {
                            allowed(own || their_clinician, Ok)
                        }
                        "/api/v1/patients/{id}/notes" => allowed(their_clinician, Created),
                        "/api/v1/patients/{id}/access-log" => allowed(own, Ok),
                        _ => NotFound,
                    }
                }
                Target::Clinician | Target::ClinicianInBody => {
                    let clinician = UserId::from_uuid(id);
                    let Some(&at) = model.clinicians.get(&clinician) else {
                        return NotFound;
                    };
                    let manages = (role == Role::Clinician && me == clinician && works_at(at))
                        || (role == Role::PracticeAdmin && works_at(at));
                    let staff_here = matches!(role, Role::Clinician | Role::PracticeAdmin) && works_at(at);
                    match endpoint.path {
                        "/api/v1/appointments" => {
                            allowed(is_patient && model.registered_at(me) == Some(at), BadRequest)
                        }
                        "/api/v1/clinicians/{id}/availability" => allowed(manages, Ok),
                        "/api/v1/clinicians/{id}/availability/rules"
                        | "/api/v1/clinicians/{id}/availability/exceptions" => allowed(manages, Created),
                        "/api/v1/clinicians/{id}/schedule" => allowed(staff_here, Ok),
                        _ => NotFound,
                    }
                }
                Target::Rule | Target::Exception => {
                    let list = match endpoint.target {
                        Target::Rule => &model.rules,
                        _ => &model.exceptions,
                    };
                    match list.iter().find(|(r, _)| *r == id) {
                        Some((_, clinician)) => {
                            let at = model.clinicians[clinician];
                            let manages = (role == Role::Clinician && me == *clinician && works_at(at))
                                || (role == Role::PracticeAdmin && works_at(at));
                            allowed(manages, NoContent)
                        }
                        None => NotFound,
                    }
                }
                Target::Appointment => {
                    let Some(a) = model.appts.iter().find(|a| a.id == id) else {
                        return NotFound;
                    };
                    let own = is_patient && me == a.patient;
                    let its_clinician = role == Role::Clinician && me == a.clinician && works_at(a.practice);
                    let colleague = role == Role::Clinician
                        && works_at(a.practice)
                        && model.registered_at(a.patient) == Some(a.practice);
                    let its_admin = role == Role::PracticeAdmin && works_at(a.practice);
                    let booked = if a.status == Visit::Booked { Ok } else { Conflict };
                    match endpoint.path {
                        "/api/v1/appointments/{id}" | "/api/v1/appointments/{id}/events" => {
                            allowed(own || its_clinician || colleague, Ok)
                        }
                        "/api/v1/appointments/{id}/cancel" => {
                            allowed(own || its_clinician || colleague || its_admin, booked)
                        }
                        "/api/v1/appointments/{id}/reschedule" => allowed(own, BadRequest),
                        "/api/v1/appointments/{id}/check-in" => allowed(own, Conflict),
                        "/api/v1/appointments/{id}/start" => allowed(its_clinician, Conflict),
                        "/api/v1/appointments/{id}/complete" => allowed(
                            its_clinician,
                            if a.status == Visit::InConsultation {
                                Ok
                            } else {
                                Conflict
                            },
                        ),
                        // Only a consultation's patient and clinician get in; before it starts, nobody.
                        "/api/v1/appointments/{id}/call"
                        | "/api/v1/appointments/{id}/call/mode"
                        | "/api/v1/appointments/{id}/call/leave" => {
                            let started = matches!(a.status, Visit::InConsultation | Visit::Completed);
                            let answer = match endpoint.path {
                                "/api/v1/appointments/{id}/call/leave" => NoContent,
                                _ if a.status == Visit::Completed => Conflict,
                                "/api/v1/appointments/{id}/call" => Ok,
                                // The generated renegotiation is not SDP; only someone in the call gets
                                // as far as the offer.
                                _ if a.in_call.contains(&me) => BadRequest,
                                _ => Conflict,
                            };
                            allowed(started && (own || its_clinician), answer)
                        }
                        "/api/v1/appointments/{id}/no-show" => allowed(its_clinician, booked),
                        "/api/v1/appointments/{id}/guests" => {
                            let started = matches!(a.status, Visit::InConsultation | Visit::Completed);
                            let answer = match endpoint.method {
                                "GET" => Ok,
                                _ if a.status == Visit::Completed => Conflict,
                                _ => Created,
                            };
                            allowed(started && its_clinician, answer)
                        }
                        // The consultation's two people, once it has started; writing only while it runs.
                        "/api/v1/appointments/{id}/call/consent"
                        | "/api/v1/appointments/{id}/messages"
                        | "/api/v1/appointments/{id}/messages/events" => {
                            let started = matches!(a.status, Visit::InConsultation | Visit::Completed);
                            let answer = match (endpoint.method, endpoint.path) {
                                ("GET", _) => Ok,
                                _ if a.status == Visit::Completed => Conflict,
                                (_, "/api/v1/appointments/{id}/messages") => Created,
                                _ => Ok,
                            };
                            allowed(started && (own || its_clinician), answer)
                        }
                        _ => NotFound,
                    }
                }
                // Its patient and clinician; a colleague at the practice only by breaking the glass, while
                // the patient is registered there. The recording is still being made, so its media is not
                // playable yet.
                Target::Recording => {
                    let Some(r) = model.recordings.iter().find(|r| r.id == id) else {
                        return NotFound;
                    };
                    let own = is_patient && me == r.patient;
                    let its_clinician = role == Role::Clinician && me == r.clinician && works_at(r.practice);
                    let colleague = role == Role::Clinician
                        && me != r.clinician
                        && works_at(r.practice)
                        && model.registered_at(r.patient) == Some(r.practice);
                    let glass = colleague && model.glass.contains(&(me, r.id));
                    let may_see = own || its_clinician || glass;
                    match endpoint.path {
                        "/api/v1/recordings/{id}" => allowed(may_see, Ok),
                        "/api/v1/recordings/{id}/media"
                        | "/api/v1/recordings/{id}/media/{participant}"
                        | "/api/v1/recordings/{id}/playback" => allowed(may_see, Conflict),
                        "/api/v1/recordings/{id}/break-glass" => allowed(colleague, Ok),
                        _ => NotFound,
                    }
                }
                // The patient's alone: not even their own clinician reaches a kept conversation.
                Target::Triage => {
                    let Some(c) = model.checks.iter().find(|c| c.id == id) else {
                        return NotFound;
                    };
                    let possible = match endpoint.path {
                        "/api/v1/triage/sessions/{id}/answers" => c.step.question.is_some(),
                        "/api/v1/triage/sessions/{id}/back" => c.step.can_go_back,
                        _ => true,
                    };
                    allowed(
                        is_patient && me == c.patient,
                        if possible { Ok } else { Conflict },
                    )
                }
                Target::None | Target::TriageState => NotFound,
            }
        }
    }
}

fn status_of(e: &Expect) -> StatusCode {
    match e {
        Expect::Ok => StatusCode::OK,
        Expect::Created => StatusCode::CREATED,
        Expect::Accepted => StatusCode::ACCEPTED,
        Expect::NoContent => StatusCode::NO_CONTENT,
        Expect::BadRequest => StatusCode::BAD_REQUEST,
        Expect::Conflict => StatusCode::CONFLICT,
        Expect::NotFound => StatusCode::NOT_FOUND,
        Expect::LoginRequired => StatusCode::UNAUTHORIZED,
    }
}

fn ids(body: &Value, field: &str) -> BTreeSet<String> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap().to_owned())
        .collect()
}

/// Checks that a successful answer carries only what the caller may see, and updates the model.
fn check_and_apply(model: &mut Model, who: &Person, endpoint: &Endpoint, target: Option<Uuid>, body: &Value) {
    let me = who.seeded.id;
    let target_str = target.map(|t| t.to_string()).unwrap_or_default();
    match (endpoint.method, endpoint.path) {
        ("GET", "/api/v1/me") => assert_eq!(body["id"], me.to_string()),
        ("GET", "/api/v1/patients/{id}") => {
            assert_eq!(body["id"], target_str);
            assert_eq!(
                body["name"].as_str(),
                model
                    .names
                    .get(&UserId::from_uuid(target.unwrap()))
                    .map(String::as_str)
            );
        }
        ("GET", "/api/v1/patients/{id}/record") => {
            assert_eq!(body["patient_id"], target_str);
            let expected = model
                .notes
                .get(&UserId::from_uuid(target.unwrap()))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                ids(&body["notes"], "id"),
                expected,
                "the record holds exactly this patient's notes"
            );
        }
        ("POST", "/api/v1/patients/{id}/notes") => {
            let id = body["id"].as_str().unwrap().to_owned();
            model
                .notes
                .entry(UserId::from_uuid(target.unwrap()))
                .or_default()
                .insert(id);
        }
        ("GET", "/api/v1/patients/{id}/access-log") => {
            assert!(
                body.as_array()
                    .unwrap()
                    .iter()
                    .all(|e| e["actor_id"] != target_str)
            );
        }
        ("GET", "/api/v1/practices/{id}/registration-requests") => {
            let p = PracticeId::from_uuid(target.unwrap());
            let expected: BTreeSet<String> = model
                .regs
                .iter()
                .filter(|r| r.practice == p && r.status == Status::Pending)
                .map(|r| r.id.to_string())
                .collect();
            assert_eq!(ids(body, "registration_id"), expected);
        }
        ("GET", "/api/v1/practices/{id}/patients") => {
            let p = PracticeId::from_uuid(target.unwrap());
            let expected: BTreeSet<String> = model
                .regs
                .iter()
                .filter(|r| r.practice == p && r.status == Status::Accepted)
                .map(|r| r.patient.to_string())
                .collect();
            assert_eq!(ids(body, "id"), expected);
        }
        ("GET", "/api/v1/registrations") => {
            let expected: BTreeSet<String> = model
                .regs
                .iter()
                .filter(|r| r.patient == me)
                .map(|r| r.id.to_string())
                .collect();
            assert_eq!(ids(body, "id"), expected);
        }
        ("POST", "/api/v1/registrations") => model.regs.push(Reg {
            id: body["id"].as_str().unwrap().parse().unwrap(),
            patient: me,
            practice: PracticeId::from_uuid(target.unwrap()),
            status: Status::Pending,
        }),
        ("POST", "/api/v1/registrations/{id}/accept") => model.accept(target.unwrap()),
        ("POST", "/api/v1/registrations/{id}/decline") => {
            if let Some(r) = model.regs.iter_mut().find(|r| Some(r.id) == target) {
                r.status = Status::Declined;
            }
        }
        ("GET", "/api/v1/appointments") => {
            let expected: BTreeSet<String> = model
                .appts
                .iter()
                .filter(|a| a.patient == me)
                .map(|a| a.id.to_string())
                .collect();
            assert_eq!(ids(body, "id"), expected);
        }
        ("GET", "/api/v1/appointments/{id}") => {
            let a = model.appts.iter().find(|a| Some(a.id) == target).unwrap();
            assert_eq!(body["id"], target_str);
            assert_eq!(body["patient_id"], a.patient.to_string());
            assert_eq!(
                body["patient_name"].as_str(),
                model.names.get(&a.patient).map(String::as_str)
            );
            // The shared summary: the patient's and the appointment's own clinician's, never a colleague's.
            let shared = a.triage.and_then(|id| model.checks.iter().find(|c| c.id == id));
            let sees = shared.filter(|c| model.may_see_check(Some(who), c));
            match sees {
                Some(c) => {
                    let summary = &body["triage_summary"];
                    assert_eq!(summary["triage_session_id"], c.id.to_string(), "{body}");
                    assert_eq!(summary["complaint"], c.complaint.as_str(), "{body}");
                    assert!(summary["disposition"].is_string(), "{body}");
                }
                None => assert!(body.get("triage_summary").is_none(), "{body}"),
            }
        }
        ("POST", "/api/v1/triage/sessions") if who.seeded.role == Role::Patient => {
            assert!(body["state"].is_null(), "{body}");
            let complaint = body["complaint"].as_str().unwrap().to_owned();
            model.checks.push(Check {
                id: body["id"].as_str().unwrap().parse().unwrap(),
                patient: me,
                marker: complaint.rsplit(' ').next().unwrap().to_owned(),
                complaint,
                step: Step::of(body),
            });
        }
        // Anyone but a patient starting one, and anyone sending a state token, has an anonymous
        // conversation: nothing kept, nothing of anyone's.
        ("POST", "/api/v1/triage/sessions")
        | ("POST", "/api/v1/triage/anonymous/answers")
        | ("POST", "/api/v1/triage/anonymous/back") => {
            assert!(body["id"].is_null() && body["state"].is_string(), "{body}");
            if let Some(t) = model.tokens.iter().find(|t| Some(t.key) == target) {
                assert_eq!(body["complaint"], t.complaint.as_str(), "{body}");
            }
        }
        ("GET", "/api/v1/triage/sessions") => {
            let expected: BTreeSet<String> = model
                .checks
                .iter()
                .filter(|c| c.patient == me)
                .map(|c| c.id.to_string())
                .collect();
            assert_eq!(ids(body, "id"), expected);
            for item in body.as_array().unwrap() {
                let c = model
                    .checks
                    .iter()
                    .find(|c| c.id.to_string() == item["id"].as_str().unwrap())
                    .unwrap();
                assert_eq!(item["complaint"], c.complaint.as_str());
            }
        }
        ("GET", "/api/v1/triage/sessions/{id}")
        | ("POST", "/api/v1/triage/sessions/{id}/answers")
        | ("POST", "/api/v1/triage/sessions/{id}/back") => {
            let c = model.checks.iter_mut().find(|c| Some(c.id) == target).unwrap();
            assert_eq!(body["id"], target_str);
            assert_eq!(body["complaint"], c.complaint.as_str());
            assert!(body["state"].is_null(), "{body}");
            c.step = Step::of(body);
        }
        ("POST", "/api/v1/appointments/{id}/call") => {
            let answer = body["sdp"].as_str().unwrap();
            assert!(answer.starts_with("v=0"), "{answer}");
            let a = model.appts.iter_mut().find(|a| Some(a.id) == target).unwrap();
            a.in_call.insert(me);
        }
        ("GET", "/api/v1/appointments/{id}/messages") | ("POST", "/api/v1/appointments/{id}/messages") => {
            let a = model.appts.iter().find(|a| Some(a.id) == target).unwrap();
            let people = [a.patient.to_string(), a.clinician.to_string()];
            let list = match body.as_array() {
                Some(list) => list.clone(),
                None => vec![body.clone()],
            };
            for m in &list {
                let sender = m["sender_id"].as_str().unwrap();
                assert!(
                    people.iter().any(|p| p == sender),
                    "{m} is not from its consultation"
                );
            }
        }
        ("GET", "/api/v1/appointments/{id}/call/consent") => {
            let a = model.appts.iter().find(|a| Some(a.id) == target).unwrap();
            let people = [a.patient.to_string(), a.clinician.to_string()];
            for d in body["decisions"].as_array().unwrap() {
                let who = d["participant_id"].as_str().unwrap();
                assert!(
                    people.iter().any(|p| p == who),
                    "{d} is not from its consultation"
                );
            }
        }
        ("POST", "/api/v1/appointments/{id}/call/leave") => {
            let a = model.appts.iter_mut().find(|a| Some(a.id) == target).unwrap();
            a.in_call.remove(&me);
        }
        ("POST", "/api/v1/appointments/{id}/complete") => {
            let a = model.appts.iter_mut().find(|a| Some(a.id) == target).unwrap();
            a.status = Visit::Completed;
            assert_eq!(body["status"], "completed");
        }
        ("POST", "/api/v1/appointments/{id}/cancel") | ("POST", "/api/v1/appointments/{id}/no-show") => {
            let a = model.appts.iter_mut().find(|a| Some(a.id) == target).unwrap();
            a.status = if endpoint.path.ends_with("cancel") {
                Visit::Cancelled
            } else {
                Visit::NoShow
            };
            assert_eq!(
                body["status"],
                if a.status == Visit::Cancelled {
                    "cancelled"
                } else {
                    "no_show"
                }
            );
        }
        ("GET", "/api/v1/clinicians/{id}/availability") => {
            let clinician = UserId::from_uuid(target.unwrap());
            let expected: BTreeSet<String> = model
                .rules
                .iter()
                .filter(|(_, c)| *c == clinician)
                .map(|(r, _)| r.to_string())
                .collect();
            assert_eq!(ids(&body["rules"], "id"), expected);
        }
        ("POST", "/api/v1/clinicians/{id}/availability/rules") => model.rules.push((
            body["id"].as_str().unwrap().parse().unwrap(),
            UserId::from_uuid(target.unwrap()),
        )),
        ("POST", "/api/v1/clinicians/{id}/availability/exceptions") => model.exceptions.push((
            body["id"].as_str().unwrap().parse().unwrap(),
            UserId::from_uuid(target.unwrap()),
        )),
        ("DELETE", "/api/v1/clinicians/{id}/availability/rules/{rule_id}") => {
            model.rules.retain(|(r, _)| Some(*r) != target)
        }
        ("DELETE", "/api/v1/clinicians/{id}/availability/exceptions/{exception_id}") => {
            model.exceptions.retain(|(r, _)| Some(*r) != target)
        }
        ("GET", "/api/v1/clinicians/{id}/schedule") => {
            let clinician = target_str.as_str();
            for item in body["appointments"].as_array().unwrap() {
                let a = model
                    .appts
                    .iter()
                    .find(|a| a.id.to_string() == item["appointment_id"].as_str().unwrap())
                    .unwrap();
                assert_eq!(
                    a.clinician.to_string(),
                    clinician,
                    "only this clinician's appointments"
                );
            }
        }
        ("GET", "/api/v1/recordings") => {
            for id in ids(body, "id") {
                let r = model
                    .recordings
                    .iter()
                    .find(|r| r.id.to_string() == id)
                    .expect("a known recording");
                assert!(r.patient == me || r.clinician == me, "{id} is not theirs");
            }
            let expected: BTreeSet<String> = model
                .recordings
                .iter()
                .filter(|r| r.patient == me || r.clinician == me)
                .map(|r| r.id.to_string())
                .collect();
            assert_eq!(ids(body, "id"), expected);
        }
        ("GET", "/api/v1/recordings/{id}") => {
            let r = model.recordings.iter().find(|r| Some(r.id) == target).unwrap();
            assert_eq!(body["id"], target_str);
            let people: BTreeSet<String> = ids(&body["participants"], "id");
            assert_eq!(
                people,
                BTreeSet::from([r.patient.to_string(), r.clinician.to_string()])
            );
        }
        ("POST", "/api/v1/recordings/{id}/break-glass") => {
            model.glass.insert((me, target.unwrap()));
        }
        ("POST", "/api/v1/practices") => model.practices.push(
            body["id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .map(PracticeId::from_uuid)
                .unwrap(),
        ),
        _ => {}
    }
}

/// The path for `target`: rules and exceptions sit under their clinician (an unknown one under an unknown
/// clinician).
fn path_for(model: &Model, endpoint: &Endpoint, target: Option<Uuid>) -> String {
    let owner = |list: &[(Uuid, UserId)], id: Uuid| {
        list.iter()
            .find(|(r, _)| *r == id)
            .map_or_else(Uuid::new_v4, |(_, c)| c.as_uuid())
    };
    match (endpoint.target, target) {
        (Target::PracticeInBody | Target::ClinicianInBody | Target::TriageState | Target::None, _)
        | (_, None) => endpoint.path.to_owned(),
        (Target::Rule, Some(id)) => endpoint
            .path
            .replace("{id}", &owner(&model.rules, id).to_string())
            .replace("{rule_id}", &id.to_string()),
        (Target::Exception, Some(id)) => endpoint
            .path
            .replace("{id}", &owner(&model.exceptions, id).to_string())
            .replace("{exception_id}", &id.to_string()),
        (Target::Recording, Some(id)) => {
            let patient = model
                .recordings
                .iter()
                .find(|r| r.id == id)
                .map_or_else(Uuid::new_v4, |r| r.patient.as_uuid());
            endpoint
                .path
                .replace("{id}", &id.to_string())
                .replace("{participant}", &patient.to_string())
        }
        (_, Some(id)) => endpoint.path.replace("{id}", &id.to_string()),
    }
}

/// What a symptom check started by call `n` says is wrong, ending in a marker no other call uses.
fn complaint(n: usize) -> String {
    format!("Burning pain when I pee and need to go all the time ref{n}x")
}

/// A date far ahead, one per call, so that generated availability never overlaps.
fn far_date(n: usize) -> String {
    jiff::civil::date(2100, 1, 1)
        .checked_add(jiff::Span::new().days(n as i64))
        .unwrap()
        .to_string()
}

async fn call(
    client: &Client,
    model: &Model,
    endpoint: &Endpoint,
    target: Option<Uuid>,
    n: usize,
) -> (StatusCode, Value) {
    let path = path_for(model, endpoint, target);
    match endpoint.method {
        "GET" if endpoint.path.ends_with("/events") => return client.open_stream(&path).await,
        "GET" => return client.get(&path).await,
        "DELETE" => return client.delete(&path).await,
        _ => {}
    }
    let body = match endpoint.path {
        "/api/v1/practices" => {
            json!({"name": format!("Practice {n}"), "address": "2 Side Street", "time_zone": "Europe/London"})
        }
        "/api/v1/practices/{id}/invites" => {
            json!({"email": format!("invitee-{n}@example.org"), "name": "New Colleague", "role": "clinician"})
        }
        "/api/v1/registrations" => json!({"practice_id": target}),
        "/api/v1/patients/{id}/notes" => json!({"body": format!("note {n}")}),
        "/api/v1/practices/{id}/booking-cutoff" => json!({"minutes": 120}),
        "/api/v1/practices/{id}/recording-retention" => json!({"days": 3650}),
        "/api/v1/practices/{id}/replay" => json!({"enabled": true}),
        "/api/v1/recordings/{id}/break-glass" => {
            json!({"reason": format!("Urgent review of the advice given, request {n}")})
        }
        "/api/v1/appointments" => {
            json!({"clinician_id": target, "start": "2001-01-01T09:00:00Z", "kind": "video"})
        }
        "/api/v1/appointments/{id}/reschedule" => json!({"start": "2001-01-01T09:00:00Z"}),
        "/api/v1/appointments/{id}/guests" => json!({"name": "Ana Tolk", "role": "interpreter"}),
        "/api/v1/appointments/{id}/call" => {
            json!({"sdp": crate::peer::Peer::new("call").await.offer(true), "mode": "video"})
        }
        "/api/v1/appointments/{id}/call/mode" => json!({"sdp": "not sdp", "mode": "audio_only"}),
        "/api/v1/appointments/{id}/call/consent" => json!({"decision": "given"}),
        "/api/v1/appointments/{id}/messages" => json!({"body": format!("message {n}")}),
        "/api/v1/clinicians/{id}/availability/rules" => json!({
            "weekday": 1 + n % 7, "start": "09:00", "end": "10:00", "slot_minutes": 15, "kinds": "either",
            "valid_from": far_date(n), "valid_until": far_date(n),
        }),
        "/api/v1/clinicians/{id}/availability/exceptions" => {
            json!({"date": far_date(n), "kind": "blocked", "note": format!("leave {n}")})
        }
        "/api/v1/triage/sessions" => json!({"text": complaint(n), "age": 40, "sex": "female"}),
        // The question being asked, so that only the gate stands between a caller and the answer.
        "/api/v1/triage/sessions/{id}/answers" => {
            let question = target
                .and_then(|id| model.checks.iter().find(|c| c.id == id))
                .and_then(|c| c.step.question.clone());
            json!({"question": question.as_deref().unwrap_or("none"), "answer": "unknown"})
        }
        "/api/v1/triage/anonymous/answers" | "/api/v1/triage/anonymous/back" => {
            let token = target.and_then(|id| model.tokens.iter().find(|t| t.key == id));
            // A state this server never gave out.
            let state = token.map_or("t1.bm9wZQ", |t| t.state.as_str());
            if endpoint.path.ends_with("back") {
                json!({"state": state})
            } else {
                let question = token.and_then(|t| t.step.question.as_deref());
                json!({"state": state, "question": question.unwrap_or("none"), "answer": "unknown"})
            }
        }
        _ => json!({}),
    };
    if endpoint.method == "PUT" {
        return client.put(&path, body).await;
    }
    client.post(&path, body).await
}

#[derive(Clone, Copy, Debug)]
enum Decision {
    Accept,
    Decline,
    Leave,
}

/// A symptom check a patient keeps before booking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kept {
    /// One question answered, the rest not.
    Unfinished,
    Finished,
    /// Finished, and its summary shared with the clinician if the patient books.
    Shared,
}

#[derive(Clone, Debug)]
struct WorldSpec {
    practices: usize,
    /// Extra staff beyond one clinician per practice: (practice, is admin).
    extra_staff: Vec<(usize, bool)>,
    /// Per patient, the requests they make in order, and what the practice does with each.
    histories: Vec<Vec<(usize, Decision)>>,
    /// Per patient, the symptom checks they keep.
    checks: Vec<Vec<Kept>>,
}

fn world() -> impl Strategy<Value = WorldSpec> {
    (2usize..=3).prop_flat_map(|n| {
        let decision = prop_oneof![
            Just(Decision::Accept),
            Just(Decision::Decline),
            Just(Decision::Leave)
        ];
        let kept = prop_oneof![Just(Kept::Unfinished), Just(Kept::Finished), Just(Kept::Shared)];
        let patient = (
            prop::collection::vec((0..n, decision), 0..=3),
            prop::collection::vec(kept, 0..=2),
        );
        (
            Just(n),
            prop::collection::vec((0..n, any::<bool>()), 0..=2),
            prop::collection::vec(patient, 2..=4),
        )
            .prop_map(|(practices, extra_staff, patients)| {
                let (histories, checks) = patients.into_iter().unzip();
                WorldSpec {
                    practices,
                    extra_staff,
                    histories,
                    checks,
                }
            })
    })
}

async fn person(app: &TestApp, role: Role, practice: Option<PracticeId>, mfa: bool) -> Person {
    let seeded = app.user(role, practice, mfa).await;
    let client = app.login(&seeded).await;
    Person {
        seeded,
        client,
        mfa: mfa || role == Role::Patient,
    }
}

async fn run_world(spec: WorldSpec, db: Option<confide_store::testing::TestDatabase>) {
    let app = TestApp::spawn_with(db, |_| {}).await;
    // The world starts at 10:52 tomorrow in London, before anyone logs in, so that an appointment can
    // be booked for 11:00 and be in consultation (see `book_appointments`).
    let london = jiff::tz::TimeZone::get("Europe/London").unwrap();
    let now = jiff::Timestamp::from_millisecond(app.clock.now_ms()).unwrap();
    let morning = now
        .to_zoned(london.clone())
        .date()
        .checked_add(jiff::Span::new().days(1))
        .unwrap()
        .at(10, 52, 0, 0)
        .to_zoned(london)
        .unwrap()
        .timestamp();
    app.clock.advance(std::time::Duration::from_millis(
        (morning.as_millisecond() - now.as_millisecond()) as u64,
    ));
    let mut model = Model::default();
    for i in 0..spec.practices {
        model.practices.push(app.practice(&format!("Practice {i}")).await);
    }
    let mut people = vec![person(&app, Role::PlatformAdmin, None, true).await];
    for p in &model.practices {
        people.push(person(&app, Role::Clinician, Some(*p), true).await);
    }
    people.push(person(&app, Role::Clinician, Some(model.practices[0]), false).await);
    for (i, admin) in &spec.extra_staff {
        let role = if *admin {
            Role::PracticeAdmin
        } else {
            Role::Clinician
        };
        people.push(person(&app, role, Some(model.practices[*i]), true).await);
    }
    let first_patient = people.len();
    for _ in &spec.histories {
        let patient = person(&app, Role::Patient, None, false).await;
        let (_, me) = patient.client.get("/api/v1/me").await;
        model
            .names
            .insert(patient.seeded.id, me["name"].as_str().unwrap().to_owned());
        people.push(patient);
    }
    // Histories go through the API too, checked like every other call.
    let request = &ENDPOINTS
        .iter()
        .find(|e| e.target == Target::PracticeInBody)
        .copied()
        .unwrap();
    let mut n = 0;
    for (k, history) in spec.histories.iter().enumerate() {
        let patient = &people[first_patient + k];
        for (practice, decision) in history {
            let practice = model.practices[*practice];
            n += 1;
            let (status, body) = call(&patient.client, &model, request, Some(practice.as_uuid()), n).await;
            if status != StatusCode::CREATED {
                continue;
            }
            check_and_apply(&mut model, patient, request, Some(practice.as_uuid()), &body);
            let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
            let gp = &people[1 + model.practices.iter().position(|p| *p == practice).unwrap()];
            let path = match decision {
                Decision::Accept => "/api/v1/registrations/{id}/accept",
                Decision::Decline => "/api/v1/registrations/{id}/decline",
                Decision::Leave => continue,
            };
            let endpoint = ENDPOINTS.iter().find(|e| e.path == path).unwrap();
            let (status, body) = call(&gp.client, &model, endpoint, Some(id), n).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            check_and_apply(&mut model, gp, endpoint, Some(id), &body);
        }
    }
    // A registered patient's clinician writes in their record, so records have something to leak.
    for k in 0..spec.histories.len() {
        let patient = people[first_patient + k].seeded.id;
        if let Some(p) = model.registered_at(patient) {
            let gp = &people[1 + model.practices.iter().position(|x| *x == p).unwrap()];
            let endpoint = ENDPOINTS
                .iter()
                .find(|e| e.path == "/api/v1/patients/{id}/notes")
                .unwrap();
            n += 1;
            let (status, body) = call(&gp.client, &model, endpoint, Some(patient.as_uuid()), n).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            check_and_apply(&mut model, gp, endpoint, Some(patient.as_uuid()), &body);
        }
    }

    let anonymous = app.anonymous();
    let shared = keep_checks(&mut model, &spec, &people, first_patient, &anonymous, &mut n).await;
    book_appointments(&app, &mut model, &people, first_patient, &shared).await;

    let unknown = Uuid::new_v4();
    // Only SQLite lets the test read the audit log outside a scope.
    let sqlite = app.running.state.store.backend() == confide_store::Backend::Sqlite;
    // Reads first, then writes, so that every principal also reads the world before it changes.
    let order: Vec<&Endpoint> = ENDPOINTS
        .iter()
        .filter(|e| e.method == "GET")
        .chain(ENDPOINTS.iter().filter(|e| e.method != "GET"))
        .collect();
    for endpoint in order {
        let targets: Vec<Option<Uuid>> = match endpoint.target {
            Target::None => vec![None],
            Target::Practice | Target::PracticeInBody => model
                .practices
                .iter()
                .map(|p| Some(p.as_uuid()))
                .chain([Some(unknown)])
                .collect(),
            Target::Registration => model
                .regs
                .iter()
                .map(|r| Some(r.id))
                .chain([Some(unknown)])
                .collect(),
            Target::Patient | Target::Clinician | Target::ClinicianInBody => people
                .iter()
                .map(|p| Some(p.seeded.id.as_uuid()))
                .chain([Some(unknown)])
                .collect(),
            Target::Appointment => model
                .appts
                .iter()
                .map(|a| Some(a.id))
                .chain([Some(unknown)])
                .collect(),
            Target::Rule => model
                .rules
                .iter()
                .map(|(r, _)| Some(*r))
                .chain([Some(unknown)])
                .collect(),
            Target::Exception => model
                .exceptions
                .iter()
                .map(|(r, _)| Some(*r))
                .chain([Some(unknown)])
                .collect(),
            Target::Recording => model
                .recordings
                .iter()
                .map(|r| Some(r.id))
                .chain([Some(unknown)])
                .collect(),
            Target::Triage => model
                .checks
                .iter()
                .map(|c| Some(c.id))
                .chain([Some(unknown)])
                .collect(),
            Target::TriageState => model
                .tokens
                .iter()
                .map(|t| Some(t.key))
                .chain([Some(unknown)])
                .collect(),
        };
        for target in targets {
            for who in people.iter().map(Some).chain([None]) {
                n += 1;
                let expected = expect(&model, who, endpoint, target);
                let client = who.map_or(&anonymous, |p| &p.client);
                // An anonymous conversation leaves nothing behind, whoever is logged in.
                let anonymous_conversation = endpoint.target == Target::TriageState
                    || (endpoint.path == "/api/v1/triage/sessions"
                        && endpoint.method == "POST"
                        && who.is_none_or(|p| p.seeded.role != Role::Patient));
                let audit_head = if anonymous_conversation && sqlite {
                    Some(app.running.state.store.audit_head().await.unwrap().0)
                } else {
                    None
                };
                let (status, body) = call(client, &model, endpoint, target, n).await;
                let label = format!(
                    "{} {} target={target:?} as {:?}: expected {expected:?}, got {status} {body}",
                    endpoint.method,
                    endpoint.path,
                    who.map(|p| (p.seeded.role, p.mfa)),
                );
                assert_eq!(status, status_of(&expected), "{label}");
                let text = body.to_string();
                for c in &model.checks {
                    assert!(
                        model.may_see_check(who, c) || !text.contains(&c.marker),
                        "{label}: shows {}'s symptom check {}",
                        c.patient,
                        c.id
                    );
                }
                if let Some(after) = audit_head {
                    let me = who.map(|p| p.seeded.id);
                    for e in app.running.state.store.audit_page(after, 1000).await.unwrap() {
                        let e = e.event;
                        assert!(
                            e.actor.is_none_or(|a| Some(a) != me)
                                && !e.action.starts_with("triage")
                                && !e.resource.starts_with("triage"),
                            "{label}: audited {e:?}"
                        );
                    }
                }
                match expected {
                    Expect::NotFound => assert_eq!(body, not_found_body(), "{label}"),
                    Expect::LoginRequired => assert_eq!(body["error"]["code"], "login_required", "{label}"),
                    Expect::Ok | Expect::Created | Expect::Accepted | Expect::NoContent => {
                        if let Some(who) = who {
                            check_and_apply(&mut model, who, endpoint, target, &body);
                        }
                    }
                    Expect::Conflict | Expect::BadRequest => {}
                }
            }
        }
    }
    // Nobody's anonymous conversation, logged in or not, became one of a patient's kept ones.
    let list = ENDPOINTS
        .iter()
        .find(|e| e.method == "GET" && e.path == "/api/v1/triage/sessions")
        .unwrap();
    for patient in &people[first_patient..] {
        let (status, body) = call(&patient.client, &model, list, None, n).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        check_and_apply(&mut model, patient, list, None, &body);
    }
    app.stop().await;
}

/// Each patient keeps their symptom checks through the API: answered to the result, or one answer only.
/// Two anonymous conversations give the tokens the matrix sends: one begun logged out, one by a clinician
/// and answered once. Returns, per patient, the finished check they share when booking.
async fn keep_checks(
    model: &mut Model,
    spec: &WorldSpec,
    people: &[Person],
    first_patient: usize,
    anonymous: &Client,
    n: &mut usize,
) -> HashMap<UserId, Uuid> {
    let endpoint = |method: &str, path: &str| {
        ENDPOINTS
            .iter()
            .find(|e| e.method == method && e.path == path)
            .unwrap()
    };
    let start = endpoint("POST", "/api/v1/triage/sessions");
    let answer = endpoint("POST", "/api/v1/triage/sessions/{id}/answers");
    let mut shared = HashMap::new();
    for (k, kept) in spec.checks.iter().enumerate() {
        let patient = &people[first_patient + k];
        for kind in kept {
            *n += 1;
            let (status, body) = call(&patient.client, model, start, None, *n).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            check_and_apply(model, patient, start, None, &body);
            let id = model.checks.last().unwrap().id;
            for _ in 0..40 {
                let step = &model.checks.last().unwrap().step;
                if step.question.is_none() || (*kind == Kept::Unfinished && step.can_go_back) {
                    break;
                }
                let (status, body) = call(&patient.client, model, answer, Some(id), *n).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                check_and_apply(model, patient, answer, Some(id), &body);
            }
            let done = model.checks.last().unwrap().step.question.is_none();
            assert!(done || *kind == Kept::Unfinished, "no result after 40 answers");
            if *kind == Kept::Shared {
                shared.entry(patient.seeded.id).or_insert(id);
            }
        }
    }
    for (k, client) in [anonymous, &people[1].client].into_iter().enumerate() {
        *n += 1;
        let (status, mut view) = call(client, model, start, None, *n).await;
        assert_eq!(status, StatusCode::CREATED, "{view}");
        if k == 1 && view["question"].is_object() {
            let (status, next) = client
                .post(
                    "/api/v1/triage/anonymous/answers",
                    json!({"state": view["state"], "question": view["question"]["id"], "answer": "unknown"}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{next}");
            view = next;
        }
        model.tokens.push(Token {
            key: Uuid::new_v4(),
            state: view["state"].as_str().unwrap().to_owned(),
            complaint: view["complaint"].as_str().unwrap().to_owned(),
            step: Step::of(&view),
        });
    }
    shared
}

/// Each practice's first clinician opens a week of availability and takes a day of leave; each registered
/// patient books one of their slots two days ahead, through the API.
async fn book_appointments(
    app: &TestApp,
    model: &mut Model,
    people: &[Person],
    first_patient: usize,
    shared: &HashMap<UserId, Uuid>,
) {
    for p in people.iter().filter(|p| p.seeded.role == Role::Clinician) {
        model.clinicians.insert(p.seeded.id, p.seeded.practice.unwrap());
    }
    for i in 0..model.practices.len() {
        let gp = &people[1 + i];
        let base = format!("/api/v1/clinicians/{}/availability", gp.seeded.id);
        for weekday in 1..=7 {
            let (status, body) = gp
                .client
                .post(
                    &format!("{base}/rules"),
                    json!({
                        "weekday": weekday, "start": "09:00", "end": "17:00", "slot_minutes": 15, "kinds": "either",
                        "valid_until": "2099-12-31",
                    }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            model
                .rules
                .push((body["id"].as_str().unwrap().parse().unwrap(), gp.seeded.id));
        }
        let (status, body) = gp
            .client
            .post(
                &format!("{base}/exceptions"),
                json!({"date": far_date(0), "kind": "blocked", "note": "leave"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        model
            .exceptions
            .push((body["id"].as_str().unwrap().parse().unwrap(), gp.seeded.id));
    }
    let london = jiff::tz::TimeZone::get("Europe/London").unwrap();
    let today = jiff::Timestamp::from_millisecond(app.clock.now_ms())
        .unwrap()
        .to_zoned(london)
        .date();
    let from = today.checked_add(jiff::Span::new().days(2)).unwrap();
    for (k, patient) in people[first_patient..].iter().enumerate() {
        let Some(practice) = model.registered_at(patient.seeded.id) else {
            continue;
        };
        let gp = people[1 + model.practices.iter().position(|p| *p == practice).unwrap()]
            .seeded
            .id;
        let (status, slots) = patient
            .client
            .get(&format!(
                "/api/v1/practices/{practice}/slots?from={from}&days=7&clinician_id={gp}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{slots}");
        let slot = &slots[k];
        let triage = shared.get(&patient.seeded.id).copied();
        let (status, body) = patient
            .client
            .post(
                "/api/v1/appointments",
                json!({"clinician_id": gp, "start": slot["start"], "kind": "video", "reason": format!("reason {k}"),
                       "triage_session_id": triage}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(
            body["triage_summary"]["triage_session_id"].as_str(),
            triage.map(|t| t.to_string()).as_deref(),
            "{body}"
        );
        model.appts.push(Appt {
            id: body["id"].as_str().unwrap().parse().unwrap(),
            patient: patient.seeded.id,
            clinician: gp,
            practice,
            status: Visit::Booked,
            in_call: BTreeSet::new(),
            triage,
        });
    }
    // One appointment is in consultation: the first registered patient's, at 11:00 today (the world's
    // clock is at 10:52), checked in and started.
    let Some(patient) = people[first_patient..]
        .iter()
        .find(|p| model.registered_at(p.seeded.id).is_some())
    else {
        return;
    };
    let practice = model.registered_at(patient.seeded.id).unwrap();
    let gp = &people[1 + model.practices.iter().position(|p| *p == practice).unwrap()];
    let start = today
        .at(11, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::get("Europe/London").unwrap())
        .unwrap()
        .timestamp();
    let (status, body) = patient
        .client
        .post(
            "/api/v1/appointments",
            json!({"clinician_id": gp.seeded.id, "start": start.to_string(), "kind": "video"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let (status, body) = patient
        .client
        .post(&format!("/api/v1/appointments/{id}/check-in"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = gp
        .client
        .post(&format!("/api/v1/appointments/{id}/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    model.appts.push(Appt {
        id,
        patient: patient.seeded.id,
        clinician: gp.seeded.id,
        practice,
        status: Visit::InConsultation,
        in_call: BTreeSet::new(),
        triage: None,
    });
    // Starting it made its recording, bound to the appointment's patient, clinician and practice.
    let (status, list) = patient.client.get("/api/v1/recordings").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let recording = &list[0];
    assert_eq!(recording["appointment_id"], id.to_string());
    model.recordings.push(Rec {
        id: recording["id"].as_str().unwrap().parse().unwrap(),
        patient: patient.seeded.id,
        clinician: gp.seeded.id,
        practice,
    });
}

fn run_on_runtime(spec: WorldSpec, postgres: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = if postgres {
            confide_store::testing::TestDatabase::postgres().await
        } else {
            None
        };
        if postgres && db.is_none() {
            return;
        }
        run_world(spec, db).await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 8, ..ProptestConfig::default() })]

    #[test]
    fn no_one_sees_what_the_policy_does_not_give_them(spec in world()) {
        run_on_runtime(spec, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2, max_shrink_iters: 4, ..ProptestConfig::default() })]

    #[test]
    fn no_one_sees_what_the_policy_does_not_give_them_on_postgres(spec in world()) {
        run_on_runtime(spec, true);
    }
}

/// `clinician` opens availability and `patient` books its first slot two days ahead with `reason`; returns
/// the appointment id and its local date.
async fn book_with(
    app: &TestApp,
    clinician: &Person,
    patient: &Person,
    practice: PracticeId,
    reason: &str,
) -> (String, String) {
    for weekday in 1..=7 {
        let (status, body) = clinician
            .client
            .post(
                &format!("/api/v1/clinicians/{}/availability/rules", clinician.seeded.id),
                json!({"weekday": weekday, "start": "09:00", "end": "12:00", "slot_minutes": 15, "kinds": "either"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let london = jiff::tz::TimeZone::get("Europe/London").unwrap();
    let day = jiff::Timestamp::from_millisecond(app.clock.now_ms())
        .unwrap()
        .to_zoned(london)
        .date()
        .checked_add(jiff::Span::new().days(2))
        .unwrap();
    let (status, slots) = patient
        .client
        .get(&format!("/api/v1/practices/{practice}/slots?from={day}&days=1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{slots}");
    let (status, body) = patient
        .client
        .post(
            "/api/v1/appointments",
            json!({"clinician_id": clinician.seeded.id, "start": slots[0]["start"], "kind": "audio", "reason": reason}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["id"].as_str().unwrap().to_owned(), day.to_string())
}

/// The web pages, as every kind of principal: each answers by role, and none shows another patient's
/// name or notes unless the policy gives them to the viewer.
#[tokio::test]
async fn pages_show_each_person_only_what_the_policy_gives_them() {
    let app = TestApp::spawn().await;
    let (north, south) = (
        app.practice("North Surgery").await,
        app.practice("South Surgery").await,
    );
    let gp = person(&app, Role::Clinician, Some(north), true).await;
    let gp_south = person(&app, Role::Clinician, Some(south), true).await;
    let admin = person(&app, Role::PracticeAdmin, Some(north), true).await;
    let platform = person(&app, Role::PlatformAdmin, None, true).await;
    let unenrolled = person(&app, Role::Clinician, Some(north), false).await;
    let ann = person(&app, Role::Patient, None, false).await;
    let bob = person(&app, Role::Patient, None, false).await;
    let cat = person(&app, Role::Patient, None, false).await;
    crate::helpers::register(&ann.client, &gp.client, north).await;
    crate::helpers::register(&bob.client, &gp_south.client, south).await;
    let (_, pending) = cat
        .client
        .post("/api/v1/registrations", json!({"practice_id": north}))
        .await;
    for (patient, writer, text) in [
        (&ann, &gp, "ann-private-note"),
        (&bob, &gp_south, "bob-private-note"),
    ] {
        let path = format!("/api/v1/patients/{}/notes", patient.seeded.id);
        assert_eq!(
            writer.client.post(&path, json!({"body": text})).await.0,
            StatusCode::CREATED
        );
    }
    let mut names = Vec::new();
    for p in [&ann, &bob, &cat] {
        names.push(
            p.client.get("/api/v1/me").await.1["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (ann_name, bob_name, cat_name) = (&names[0], &names[1], &names[2]);
    let (appointment, day) = book_with(&app, &gp, &ann, north, "ann-private-reason").await;
    let secrets = [
        ("ann", ann_name.as_str()),
        ("ann-note", "ann-private-note"),
        ("ann-reason", "ann-private-reason"),
        ("bob", bob_name.as_str()),
        ("bob-note", "bob-private-note"),
        ("cat", cat_name.as_str()),
    ];

    // (who, what they may see, page → expected status)
    let cases: Vec<(&str, &Person, &[&str], [u16; 13])> = vec![
        // pages: as listed in `pages` below
        (
            "ann",
            &ann,
            &["ann", "ann-note", "ann-reason"],
            [200, 200, 200, 404, 200, 200, 404, 404, 404, 200, 404, 404, 404],
        ),
        (
            "bob",
            &bob,
            &["bob", "bob-note"],
            [200, 200, 200, 404, 200, 404, 404, 404, 404, 200, 404, 404, 404],
        ),
        (
            "cat",
            &cat,
            &["cat"],
            [200, 200, 200, 404, 200, 404, 404, 404, 404, 200, 404, 404, 404],
        ),
        (
            "north clinician",
            &gp,
            &["ann", "ann-note", "cat"],
            [200, 404, 404, 200, 404, 404, 200, 200, 404, 200, 404, 200, 404],
        ),
        (
            "south clinician",
            &gp_south,
            &["bob", "bob-note"],
            [200, 404, 404, 200, 404, 404, 404, 404, 404, 200, 404, 200, 404],
        ),
        // The practice admin sees who is booked when, never why.
        (
            "north admin",
            &admin,
            &["ann", "cat"],
            [200, 404, 404, 200, 404, 404, 200, 200, 404, 404, 404, 404, 404],
        ),
        (
            "platform admin",
            &platform,
            &[],
            [200, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404],
        ),
        (
            "clinician without a second factor",
            &unenrolled,
            &[],
            [303, 303, 303, 303, 303, 303, 303, 303, 303, 303, 303, 303, 303],
        ),
    ];
    let appointment_page = format!("/appointments/{appointment}");
    let schedule_page = format!("/schedule?date={day}&clinician={}", gp.seeded.id);
    let availability_page = format!("/availability?clinician={}", gp.seeded.id);
    // Not started: nobody has a call to join yet (the API's matrix covers a running one).
    let call_page = format!("/appointments/{appointment}/call");
    // No recording exists here (the recordings test covers a real one): an unknown one's page is the
    // not-found page for everyone; its break-glass form shows nothing about it, to clinicians only.
    let unknown_recording = format!("/recordings/{}", Uuid::new_v4());
    let break_glass_page = format!("{unknown_recording}/break-glass");
    // Nothing was shared with this appointment: the page is the not-found page for everyone.
    let symptom_check_page = format!("/schedule/appointments/{appointment}/symptom-check");
    let pages = [
        "/home",
        "/record",
        "/access-log",
        "/practice/queue",
        "/appointments",
        appointment_page.as_str(),
        schedule_page.as_str(),
        availability_page.as_str(),
        call_page.as_str(),
        "/recordings",
        unknown_recording.as_str(),
        break_glass_page.as_str(),
        symptom_check_page.as_str(),
    ];
    for (label, who, visible, expected) in &cases {
        for (page, status) in pages.iter().zip(expected) {
            let (got, body) = who.client.get(page).await;
            assert_eq!(got.as_u16(), *status, "{page} as {label}: {body}");
            let html = body.as_str().unwrap_or_default();
            for (owner, secret) in secrets {
                if !visible.contains(&owner) {
                    assert!(
                        !html.contains(secret),
                        "{page} as {label} shows {owner}'s {secret:?}"
                    );
                }
            }
        }
    }
    let anonymous = app.anonymous();
    for page in pages {
        let response = anonymous.http.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(response.headers()["location"], "/login");
    }

    // Deciding another practice's request through the page form is refused like an unknown one.
    let (_, form) = gp_south.client.get("/practice/queue").await;
    let html = form.as_str().unwrap();
    let start = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = &html[start..start + html[start..].find('"').unwrap()];
    let registration = pending["id"].as_str().unwrap();
    let response = gp_south
        .client
        .http
        .post(app.url("/practice/queue"))
        .form(&[
            ("csrf", csrf),
            ("registration", registration),
            ("decision", "accept"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (_, queue) = admin
        .client
        .get(&format!("/api/v1/practices/{north}/registration-requests"))
        .await;
    assert_eq!(
        queue[0]["registration_id"], registration,
        "the request is still pending"
    );
    app.stop().await;
}

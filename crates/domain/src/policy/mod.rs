//! The one access gate. Every read or write of patient data is decided by [`decide`]: (principal, action,
//! resource, context) → allow or deny, with a reason for the audit log.
//!
//! The policy is typed Rust rather than Cedar: it is small, `match` makes the compiler check that every
//! (role, action) pair is answered, and a property test compares it with an independent oracle. What makes
//! the gate impossible to skip is [`Grant`]: the store only loads patient data for a `Grant<A>`, whose
//! fields are private to this module, so the only way to obtain one is [`authorize`].

use std::marker::PhantomData;

use serde::Serialize;

use crate::identity::Role;
use crate::ids::{
    AppointmentId, ConsultationId, GuestId, PracticeId, RecordingId, RegistrationId, TriageSessionId, UserId,
};
use crate::registration::RegistrationStatus;

/// Who is asking, as established by their session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: UserId,
    pub role: Role,
    /// The practice a clinician or practice admin works at; `None` for patients and platform admins.
    pub practice: Option<PracticeId>,
}

/// Facts about the request that are not about who or what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// Whether this session passed the second factor. Staff without it are denied everything.
    pub mfa_verified: bool,
}

/// Everything the gate can be asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Demographics: name, email, date of birth, registered practice.
    ReadProfile,
    /// Clinical content.
    ReadRecord,
    WriteRecord,
    /// "Who accessed my data".
    ReadAccessLog,
    /// A patient's own registration requests.
    ListRegistrations,
    RequestRegistration,
    DecideRegistration,
    ViewRegistrationQueue,
    ListPracticePatients,
    ManagePracticeStaff,
    ManagePlatform,
    /// A clinician's weekly availability and its exceptions.
    ManageAvailability,
    /// Times and patients of a clinician's appointments, without clinical content.
    ViewSchedule,
    /// Free slots at the practice a patient is registered with.
    ViewFreeSlots,
    BookAppointment,
    /// One appointment in full, including the patient's reason.
    ReadAppointment,
    CancelAppointment,
    RescheduleAppointment,
    CheckIn,
    /// Start, complete or mark as missed: the appointment's own clinician.
    RunConsultation,
    /// A patient's list of their own appointments.
    ListAppointments,
    /// Be in the call: the consultation's patient and clinician. Invited guests hold no account and come
    /// in by their single-use link instead.
    JoinConsultation,
    InviteGuest,
    /// Say whether one may be recorded, or change one's mind: each participant for themselves.
    RecordConsent,
    /// What the consultation's record holds beside the media: its chat and its consent decisions.
    ReadCallRecord,
    /// Send a message in the consultation's chat.
    PostChatMessage,
    /// A recording's details: when, how long, which segments.
    ReadRecording,
    /// A recording's audio and video.
    PlayRecording,
    /// Play a recording of a call one was not in. The caller checks and logs the typed reason; the gate
    /// decides who may ask.
    BreakGlassRecording,
    /// How long the practice keeps recordings. Set for the practice as a whole, so that whoever sets it
    /// never needs to see which patients were recorded.
    ManageRetention,
    /// A patient's list of their own recordings.
    ListRecordings,
    /// A clinician's list of the recordings of consultations they ran.
    ListClinicianRecordings,
    /// Whether the practice's recordings may be played back at all. Like retention, set for the practice
    /// as a whole.
    ManageReplay,
    /// Keep a symptom-checker conversation as one's own data.
    StartTriage,
    /// A patient's list of their own symptom-checker conversations.
    ListTriageSessions,
    ReadTriageSession,
    /// Answer a question, or take an answer back.
    AnswerTriage,
    /// Attach a conversation's summary to an appointment one books.
    ShareTriageSummary,
    /// The summary attached to an appointment: its patient and the clinician it was booked with, nobody
    /// else (not even colleagues who may read the appointment).
    ReadTriageSummary,
}

impl Action {
    pub const ALL: [Action; 39] = [
        Action::ReadProfile,
        Action::ReadRecord,
        Action::WriteRecord,
        Action::ReadAccessLog,
        Action::ListRegistrations,
        Action::RequestRegistration,
        Action::DecideRegistration,
        Action::ViewRegistrationQueue,
        Action::ListPracticePatients,
        Action::ManagePracticeStaff,
        Action::ManagePlatform,
        Action::ManageAvailability,
        Action::ViewSchedule,
        Action::ViewFreeSlots,
        Action::BookAppointment,
        Action::ReadAppointment,
        Action::CancelAppointment,
        Action::RescheduleAppointment,
        Action::CheckIn,
        Action::RunConsultation,
        Action::ListAppointments,
        Action::JoinConsultation,
        Action::InviteGuest,
        Action::RecordConsent,
        Action::ReadCallRecord,
        Action::PostChatMessage,
        Action::ReadRecording,
        Action::PlayRecording,
        Action::BreakGlassRecording,
        Action::ManageRetention,
        Action::ListRecordings,
        Action::ListClinicianRecordings,
        Action::ManageReplay,
        Action::StartTriage,
        Action::ListTriageSessions,
        Action::ReadTriageSession,
        Action::AnswerTriage,
        Action::ShareTriageSummary,
        Action::ReadTriageSummary,
    ];

    /// The name written to the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadProfile => "patient.profile.read",
            Action::ReadRecord => "patient.record.read",
            Action::WriteRecord => "patient.record.write",
            Action::ReadAccessLog => "patient.access_log.read",
            Action::ListRegistrations => "patient.registrations.list",
            Action::RequestRegistration => "registration.request",
            Action::DecideRegistration => "registration.decide",
            Action::ViewRegistrationQueue => "practice.registration_queue.read",
            Action::ListPracticePatients => "practice.patients.list",
            Action::ManagePracticeStaff => "practice.staff.manage",
            Action::ManagePlatform => "platform.manage",
            Action::ManageAvailability => "clinician.availability.manage",
            Action::ViewSchedule => "clinician.schedule.read",
            Action::ViewFreeSlots => "practice.slots.read",
            Action::BookAppointment => "appointment.book",
            Action::ReadAppointment => "appointment.read",
            Action::CancelAppointment => "appointment.cancel",
            Action::RescheduleAppointment => "appointment.reschedule",
            Action::CheckIn => "appointment.check_in",
            Action::RunConsultation => "appointment.run",
            Action::ListAppointments => "patient.appointments.list",
            Action::JoinConsultation => "consultation.join",
            Action::InviteGuest => "consultation.invite_guest",
            Action::RecordConsent => "consultation.consent.record",
            Action::ReadCallRecord => "consultation.record.read",
            Action::PostChatMessage => "consultation.chat.post",
            Action::ReadRecording => "recording.read",
            Action::PlayRecording => "recording.play",
            Action::BreakGlassRecording => "recording.break_glass",
            Action::ManageRetention => "practice.retention.manage",
            Action::ListRecordings => "patient.recordings.list",
            Action::ListClinicianRecordings => "clinician.recordings.list",
            Action::ManageReplay => "practice.replay.manage",
            Action::StartTriage => "triage.start",
            Action::ListTriageSessions => "patient.triage.list",
            Action::ReadTriageSession => "triage.read",
            Action::AnswerTriage => "triage.answer",
            Action::ShareTriageSummary => "triage.share",
            Action::ReadTriageSummary => "appointment.triage_summary.read",
        }
    }
}

/// A patient, with the one fact the policy needs: where they are registered now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatientRef {
    pub patient: UserId,
    pub registered_at: Option<PracticeId>,
}

/// A request a patient makes, or has made, to register with a practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrationRef {
    pub id: RegistrationId,
    pub patient: UserId,
    pub practice: PracticeId,
    pub status: RegistrationStatus,
}

/// A patient asking to join a practice, before any request exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewRegistration {
    pub patient: UserId,
    pub practice: PracticeId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PracticeRef {
    pub practice: PracticeId,
}

/// A clinician, with the practice they work at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClinicianRef {
    pub clinician: UserId,
    pub practice: PracticeId,
}

/// A patient looking to book at a practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatientAtPractice {
    pub patient: PatientRef,
    pub practice: PracticeId,
}

/// An appointment, bound when it was booked to its patient, clinician and practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppointmentRef {
    pub id: AppointmentId,
    pub patient: PatientRef,
    pub clinician: UserId,
    pub practice: PracticeId,
}

/// A consultation, bound when it started to its appointment's patient, clinician and practice. Its guests
/// are not here: they hold no account, so the gate is never asked about them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsultationRef {
    pub id: ConsultationId,
    pub appointment: AppointmentId,
    pub patient: PatientRef,
    pub clinician: UserId,
    pub practice: PracticeId,
}

/// A recording, with the owners it was given when its consultation started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordingRef {
    pub id: RecordingId,
    pub consultation: ConsultationId,
    pub patient: PatientRef,
    pub clinician: UserId,
    pub practice: PracticeId,
    /// The clinician asking, when they hold an unexpired break-glass grant on this recording: looked up
    /// for each request, so a grant that has run out is simply absent.
    pub break_glass_for: Option<UserId>,
}

/// A symptom-checker conversation, bound when it began to the patient who had it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TriageSessionRef {
    pub id: TriageSessionId,
    pub patient: UserId,
}

/// What an action is done to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Patient(PatientRef),
    Registration(RegistrationRef),
    NewRegistration(NewRegistration),
    Practice(PracticeRef),
    Clinician(ClinicianRef),
    PatientAtPractice(PatientAtPractice),
    Appointment(AppointmentRef),
    Consultation(ConsultationRef),
    Recording(RecordingRef),
    TriageSession(TriageSessionRef),
    Platform,
}

impl Resource {
    /// The patient whose data this is, for the audit log's "subject" column.
    pub fn subject_patient(&self) -> Option<UserId> {
        match self {
            Resource::Patient(p) => Some(p.patient),
            Resource::Registration(r) => Some(r.patient),
            Resource::NewRegistration(r) => Some(r.patient),
            Resource::PatientAtPractice(r) => Some(r.patient.patient),
            Resource::Appointment(a) => Some(a.patient.patient),
            Resource::Consultation(c) => Some(c.patient.patient),
            Resource::Recording(r) => Some(r.patient.patient),
            Resource::TriageSession(t) => Some(t.patient),
            Resource::Practice(_) | Resource::Clinician(_) | Resource::Platform => None,
        }
    }

    /// The kind and id written to the audit log.
    pub fn audit_label(&self) -> String {
        match self {
            Resource::Patient(p) => format!("patient:{}", p.patient),
            Resource::Registration(r) => format!("registration:{}", r.id),
            Resource::NewRegistration(r) => format!("practice:{}", r.practice),
            Resource::Practice(p) => format!("practice:{}", p.practice),
            Resource::Clinician(c) => format!("clinician:{}", c.clinician),
            Resource::PatientAtPractice(r) => format!("practice:{}", r.practice),
            Resource::Appointment(a) => format!("appointment:{}", a.id),
            Resource::Consultation(c) => format!("consultation:{}", c.id),
            Resource::Recording(r) => format!("recording:{}", r.id),
            Resource::TriageSession(t) => format!("triage_session:{}", t.id),
            Resource::Platform => "platform".to_owned(),
        }
    }
}

/// Why the gate said yes or no, in words an auditor reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    PatientSelf,
    ClinicianOfRegisteredPractice,
    StaffOfPractice,
    PlatformWide,
    ClinicianSelf,
    ClinicianOfAppointment,
    ClinicianOfConsultation,
    GuestOfConsultation,
    BreakGlass,
    MfaRequired,
    NotRegisteredThere,
    NotTheirAppointment,
    NotTheirConsultation,
    NotTheirRecording,
    WasInTheCall,
    NotTheirPatient,
    NotTheirPractice,
    RoleMayNot,
    ResourceDoesNotFitAction,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PatientSelf => "patient_self",
            Reason::ClinicianOfRegisteredPractice => "clinician_of_registered_practice",
            Reason::StaffOfPractice => "staff_of_practice",
            Reason::PlatformWide => "platform_admin",
            Reason::ClinicianSelf => "clinician_self",
            Reason::ClinicianOfAppointment => "clinician_of_appointment",
            Reason::ClinicianOfConsultation => "clinician_of_consultation",
            Reason::GuestOfConsultation => "guest_of_consultation",
            Reason::BreakGlass => "break_glass",
            Reason::MfaRequired => "mfa_required",
            Reason::NotRegisteredThere => "not_registered_there",
            Reason::NotTheirAppointment => "not_their_appointment",
            Reason::NotTheirConsultation => "not_their_consultation",
            Reason::NotTheirRecording => "not_their_recording",
            Reason::WasInTheCall => "was_in_the_call",
            Reason::NotTheirPatient => "not_their_patient",
            Reason::NotTheirPractice => "not_their_practice",
            Reason::RoleMayNot => "role_may_not",
            Reason::ResourceDoesNotFitAction => "resource_does_not_fit_action",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(Reason),
    Deny(Reason),
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    pub fn reason(self) -> Reason {
        match self {
            Decision::Allow(r) | Decision::Deny(r) => r,
        }
    }
}

fn allow_if(condition: bool, yes: Reason, no: Reason) -> Decision {
    if condition {
        Decision::Allow(yes)
    } else {
        Decision::Deny(no)
    }
}

/// The policy. A patient sees only their own data; a clinician sees patients registered at their own
/// practice; practice staff decide their practice's registration requests; admins manage practices and
/// accounts but see no clinical content.
pub fn decide(principal: &Principal, action: Action, resource: &Resource, ctx: &Context) -> Decision {
    use Action::*;
    use Reason::*;
    use Role::*;

    if principal.role.requires_mfa() && !ctx.mfa_verified {
        return Decision::Deny(MfaRequired);
    }
    let staff_of =
        |practice: PracticeId| principal.role.belongs_to_practice() && principal.practice == Some(practice);
    match (action, resource) {
        (ReadProfile | ReadRecord, Resource::Patient(p)) => match principal.role {
            Patient => allow_if(principal.user == p.patient, PatientSelf, NotTheirPatient),
            Clinician => allow_if(
                p.registered_at.is_some() && principal.practice == p.registered_at,
                ClinicianOfRegisteredPractice,
                NotTheirPatient,
            ),
            PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (WriteRecord, Resource::Patient(p)) => match principal.role {
            Clinician => allow_if(
                p.registered_at.is_some() && principal.practice == p.registered_at,
                ClinicianOfRegisteredPractice,
                NotTheirPatient,
            ),
            Patient | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ReadAccessLog | ListRegistrations, Resource::Patient(p)) => match principal.role {
            Patient => allow_if(principal.user == p.patient, PatientSelf, NotTheirPatient),
            Clinician | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (RequestRegistration, Resource::NewRegistration(r)) => match principal.role {
            Patient => allow_if(principal.user == r.patient, PatientSelf, NotTheirPatient),
            Clinician | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (DecideRegistration, Resource::Registration(r)) => match principal.role {
            Clinician | PracticeAdmin => allow_if(staff_of(r.practice), StaffOfPractice, NotTheirPractice),
            Patient | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ViewRegistrationQueue, Resource::Practice(p)) => match principal.role {
            Clinician | PracticeAdmin => allow_if(staff_of(p.practice), StaffOfPractice, NotTheirPractice),
            Patient | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ListPracticePatients, Resource::Practice(p)) => match principal.role {
            Clinician => allow_if(staff_of(p.practice), StaffOfPractice, NotTheirPractice),
            Patient | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ManagePracticeStaff, Resource::Practice(p)) => match principal.role {
            PracticeAdmin => allow_if(staff_of(p.practice), StaffOfPractice, NotTheirPractice),
            PlatformAdmin => Decision::Allow(PlatformWide),
            Patient | Clinician => Decision::Deny(RoleMayNot),
        },
        (ManageAvailability, Resource::Clinician(c)) => match principal.role {
            Clinician => allow_if(
                principal.user == c.clinician && staff_of(c.practice),
                ClinicianSelf,
                NotTheirPractice,
            ),
            PracticeAdmin => allow_if(staff_of(c.practice), StaffOfPractice, NotTheirPractice),
            Patient | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ViewSchedule, Resource::Clinician(c)) => match principal.role {
            Clinician | PracticeAdmin => allow_if(staff_of(c.practice), StaffOfPractice, NotTheirPractice),
            Patient | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ViewFreeSlots | BookAppointment, Resource::PatientAtPractice(b)) => match principal.role {
            Patient if principal.user != b.patient.patient => Decision::Deny(NotTheirPatient),
            Patient => allow_if(
                b.patient.registered_at == Some(b.practice),
                PatientSelf,
                NotRegisteredThere,
            ),
            Clinician | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ReadAppointment | CancelAppointment, Resource::Appointment(a)) => match principal.role {
            Patient => allow_if(
                principal.user == a.patient.patient,
                PatientSelf,
                NotTheirAppointment,
            ),
            // Their own appointment, or a colleague's with a patient still registered here: a practice
            // the patient has left keeps no view of them.
            Clinician if staff_of(a.practice) && principal.user == a.clinician => {
                Decision::Allow(ClinicianOfAppointment)
            }
            Clinician => allow_if(
                staff_of(a.practice) && a.patient.registered_at == Some(a.practice),
                ClinicianOfRegisteredPractice,
                NotTheirAppointment,
            ),
            PracticeAdmin if action == CancelAppointment => {
                allow_if(staff_of(a.practice), StaffOfPractice, NotTheirPractice)
            }
            PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (RescheduleAppointment | CheckIn, Resource::Appointment(a)) => match principal.role {
            Patient => allow_if(
                principal.user == a.patient.patient,
                PatientSelf,
                NotTheirAppointment,
            ),
            Clinician | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (RunConsultation, Resource::Appointment(a)) => match principal.role {
            Clinician => allow_if(
                staff_of(a.practice) && principal.user == a.clinician,
                ClinicianOfAppointment,
                NotTheirAppointment,
            ),
            Patient | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ListAppointments | ListRecordings, Resource::Patient(p)) => match principal.role {
            Patient => allow_if(principal.user == p.patient, PatientSelf, NotTheirPatient),
            Clinician | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (
            JoinConsultation | InviteGuest | RecordConsent | ReadCallRecord | PostChatMessage,
            Resource::Consultation(c),
        ) => match principal.role {
            Patient if action != InviteGuest => allow_if(
                principal.user == c.patient.patient,
                PatientSelf,
                NotTheirConsultation,
            ),
            Clinician => allow_if(
                staff_of(c.practice) && principal.user == c.clinician,
                ClinicianOfConsultation,
                NotTheirConsultation,
            ),
            Patient | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        // Only the two people who were in the call, or a colleague for as long as the glass they broke
        // (while the patient was registered here) stays open; admins manage accounts and retention, never
        // content.
        (ReadRecording | PlayRecording, Resource::Recording(r)) => match principal.role {
            Patient => allow_if(
                principal.user == r.patient.patient,
                PatientSelf,
                NotTheirRecording,
            ),
            Clinician if staff_of(r.practice) && principal.user == r.clinician => {
                Decision::Allow(ClinicianOfConsultation)
            }
            Clinician => allow_if(
                staff_of(r.practice)
                    && r.break_glass_for == Some(principal.user)
                    && r.patient.registered_at == Some(r.practice),
                BreakGlass,
                NotTheirRecording,
            ),
            PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (BreakGlassRecording, Resource::Recording(r)) => match principal.role {
            // The call's own clinician plays it as a participant, so their access is never an emergency.
            Clinician if principal.user == r.clinician => Decision::Deny(WasInTheCall),
            Clinician if !staff_of(r.practice) => Decision::Deny(NotTheirPractice),
            Clinician => allow_if(
                r.patient.registered_at == Some(r.practice),
                BreakGlass,
                NotRegisteredThere,
            ),
            Patient | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ListClinicianRecordings, Resource::Clinician(c)) => match principal.role {
            Clinician => allow_if(
                principal.user == c.clinician && staff_of(c.practice),
                ClinicianSelf,
                NotTheirPractice,
            ),
            Patient | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ManageRetention | ManageReplay, Resource::Practice(p)) => match principal.role {
            PracticeAdmin => allow_if(staff_of(p.practice), StaffOfPractice, NotTheirPractice),
            Patient | Clinician | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (StartTriage | ListTriageSessions, Resource::Patient(p)) => match principal.role {
            Patient => allow_if(principal.user == p.patient, PatientSelf, NotTheirPatient),
            Clinician | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        // A conversation with the checker is the patient's alone until they attach it to an appointment.
        (ReadTriageSession | AnswerTriage | ShareTriageSummary, Resource::TriageSession(t)) => {
            match principal.role {
                Patient => allow_if(principal.user == t.patient, PatientSelf, NotTheirPatient),
                Clinician | PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
            }
        }
        (ReadTriageSummary, Resource::Appointment(a)) => match principal.role {
            Patient => allow_if(
                principal.user == a.patient.patient,
                PatientSelf,
                NotTheirAppointment,
            ),
            Clinician => allow_if(
                staff_of(a.practice) && principal.user == a.clinician,
                ClinicianOfAppointment,
                NotTheirAppointment,
            ),
            PracticeAdmin | PlatformAdmin => Decision::Deny(RoleMayNot),
        },
        (ManagePlatform, Resource::Platform) => match principal.role {
            PlatformAdmin => Decision::Allow(PlatformWide),
            Patient | Clinician | PracticeAdmin => Decision::Deny(RoleMayNot),
        },
        _ => Decision::Deny(ResourceDoesNotFitAction),
    }
}

/// Someone without an account whom a consultation's clinician invited by a single-use link. Their
/// session names the one consultation they were invited to, and that is all they can ever be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPrincipal {
    pub guest: GuestId,
    pub consultation: ConsultationId,
}

/// Who takes a step in a consultation: one of its account holders, or one of its guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    User(UserId),
    Guest(GuestId),
}

impl Actor {
    /// The id a row or a media frame is kept under: a guest's id never equals an account's.
    pub fn as_uuid(self) -> uuid::Uuid {
        match self {
            Actor::User(u) => u.as_uuid(),
            Actor::Guest(g) => g.as_uuid(),
        }
    }
}

/// The policy for guests: in the call of their own consultation they may be, chat, read its chat and
/// consent decisions, and decide for themselves about being recorded. Nothing else, anywhere.
pub fn decide_guest(guest: &GuestPrincipal, action: Action, resource: &Resource) -> Decision {
    use Action::*;
    match (action, resource) {
        (JoinConsultation | RecordConsent | ReadCallRecord | PostChatMessage, Resource::Consultation(c)) => {
            allow_if(
                c.id == guest.consultation,
                Reason::GuestOfConsultation,
                Reason::NotTheirConsultation,
            )
        }
        _ => Decision::Deny(Reason::RoleMayNot),
    }
}

mod sealed {
    pub trait Sealed {}
    /// Only this module's grants hold a consultation grant.
    pub trait Holder {}
}

/// An action the store guards, with the kind of resource it is done to.
pub trait GuardedAction: sealed::Sealed {
    const ACTION: Action;
    type On: Copy + Into<Resource>;
}

impl From<PatientRef> for Resource {
    fn from(r: PatientRef) -> Self {
        Resource::Patient(r)
    }
}
impl From<RegistrationRef> for Resource {
    fn from(r: RegistrationRef) -> Self {
        Resource::Registration(r)
    }
}
impl From<NewRegistration> for Resource {
    fn from(r: NewRegistration) -> Self {
        Resource::NewRegistration(r)
    }
}
impl From<PracticeRef> for Resource {
    fn from(r: PracticeRef) -> Self {
        Resource::Practice(r)
    }
}
impl From<ClinicianRef> for Resource {
    fn from(r: ClinicianRef) -> Self {
        Resource::Clinician(r)
    }
}
impl From<PatientAtPractice> for Resource {
    fn from(r: PatientAtPractice) -> Self {
        Resource::PatientAtPractice(r)
    }
}
impl From<AppointmentRef> for Resource {
    fn from(r: AppointmentRef) -> Self {
        Resource::Appointment(r)
    }
}
impl From<ConsultationRef> for Resource {
    fn from(r: ConsultationRef) -> Self {
        Resource::Consultation(r)
    }
}
impl From<RecordingRef> for Resource {
    fn from(r: RecordingRef) -> Self {
        Resource::Recording(r)
    }
}
impl From<TriageSessionRef> for Resource {
    fn from(r: TriageSessionRef) -> Self {
        Resource::TriageSession(r)
    }
}

/// Marker types, one per action, so that a grant for reading cannot be used for writing.
pub mod actions {
    use super::*;

    macro_rules! guarded {
        ($($name:ident => $action:ident on $on:ty),* $(,)?) => {$(
            #[derive(Debug)]
            pub enum $name {}
            impl sealed::Sealed for $name {}
            impl GuardedAction for $name {
                const ACTION: Action = Action::$action;
                type On = $on;
            }
        )*};
    }

    guarded! {
        ReadProfile => ReadProfile on PatientRef,
        ReadRecord => ReadRecord on PatientRef,
        WriteRecord => WriteRecord on PatientRef,
        ReadAccessLog => ReadAccessLog on PatientRef,
        ListRegistrations => ListRegistrations on PatientRef,
        RequestRegistration => RequestRegistration on NewRegistration,
        DecideRegistration => DecideRegistration on RegistrationRef,
        ViewRegistrationQueue => ViewRegistrationQueue on PracticeRef,
        ListPracticePatients => ListPracticePatients on PracticeRef,
        ManagePracticeStaff => ManagePracticeStaff on PracticeRef,
        ManageAvailability => ManageAvailability on ClinicianRef,
        ViewSchedule => ViewSchedule on ClinicianRef,
        ViewFreeSlots => ViewFreeSlots on PatientAtPractice,
        BookAppointment => BookAppointment on PatientAtPractice,
        ReadAppointment => ReadAppointment on AppointmentRef,
        CancelAppointment => CancelAppointment on AppointmentRef,
        RescheduleAppointment => RescheduleAppointment on AppointmentRef,
        CheckIn => CheckIn on AppointmentRef,
        RunConsultation => RunConsultation on AppointmentRef,
        ListAppointments => ListAppointments on PatientRef,
        JoinConsultation => JoinConsultation on ConsultationRef,
        InviteGuest => InviteGuest on ConsultationRef,
        RecordConsent => RecordConsent on ConsultationRef,
        ReadCallRecord => ReadCallRecord on ConsultationRef,
        PostChatMessage => PostChatMessage on ConsultationRef,
        ReadRecording => ReadRecording on RecordingRef,
        PlayRecording => PlayRecording on RecordingRef,
        BreakGlassRecording => BreakGlassRecording on RecordingRef,
        ManageRetention => ManageRetention on PracticeRef,
        ListRecordings => ListRecordings on PatientRef,
        ListClinicianRecordings => ListClinicianRecordings on ClinicianRef,
        ManageReplay => ManageReplay on PracticeRef,
        StartTriage => StartTriage on PatientRef,
        ListTriageSessions => ListTriageSessions on PatientRef,
        ReadTriageSession => ReadTriageSession on TriageSessionRef,
        AnswerTriage => AnswerTriage on TriageSessionRef,
        ShareTriageSummary => ShareTriageSummary on TriageSessionRef,
        ReadTriageSummary => ReadTriageSummary on AppointmentRef,
    }
}

/// Proof that the gate allowed `principal` to do `A` to `on`. Only [`authorize`] makes one.
#[derive(Debug)]
pub struct Grant<A: GuardedAction> {
    principal: Principal,
    on: A::On,
    reason: Reason,
    _action: PhantomData<A>,
}

impl<A: GuardedAction> Grant<A> {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn on(&self) -> &A::On {
        &self.on
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }
}

impl<A: GuardedAction<On = PatientRef>> Grant<A> {
    pub fn patient(&self) -> UserId {
        self.on.patient
    }
}

impl<A: GuardedAction<On = PracticeRef>> Grant<A> {
    pub fn practice(&self) -> PracticeId {
        self.on.practice
    }
}

impl<A: GuardedAction<On = AppointmentRef>> Grant<A> {
    pub fn appointment(&self) -> &AppointmentRef {
        &self.on
    }
}

impl<A: GuardedAction<On = ConsultationRef>> Grant<A> {
    pub fn consultation(&self) -> &ConsultationRef {
        &self.on
    }
}

impl<A: GuardedAction<On = TriageSessionRef>> Grant<A> {
    pub fn triage_session(&self) -> &TriageSessionRef {
        &self.on
    }
}

impl<A: GuardedAction<On = RecordingRef>> Grant<A> {
    pub fn recording(&self) -> &RecordingRef {
        &self.on
    }
}

/// Proof that the gate allowed a guest to do `A` in their consultation. Only [`authorize_guest`] makes one.
#[derive(Debug)]
pub struct GuestGrant<A: GuardedAction> {
    guest: GuestPrincipal,
    on: A::On,
    reason: Reason,
    _action: PhantomData<A>,
}

impl<A: GuardedAction> GuestGrant<A> {
    pub fn guest(&self) -> &GuestPrincipal {
        &self.guest
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }
}

/// A grant for `A` on one consultation, whoever holds it. The store binds what it writes under one to
/// the consultation's owners and to [`actor`](ConsultationGrant::actor), who took the step.
pub trait ConsultationGrant<A>: sealed::Holder {
    fn consultation(&self) -> &ConsultationRef;
    fn actor(&self) -> Actor;
}

impl<A: GuardedAction<On = ConsultationRef>> sealed::Holder for Grant<A> {}
impl<A: GuardedAction<On = ConsultationRef>> ConsultationGrant<A> for Grant<A> {
    fn consultation(&self) -> &ConsultationRef {
        &self.on
    }

    fn actor(&self) -> Actor {
        Actor::User(self.principal.user)
    }
}

impl<A: GuardedAction<On = ConsultationRef>> sealed::Holder for GuestGrant<A> {}
impl<A: GuardedAction<On = ConsultationRef>> ConsultationGrant<A> for GuestGrant<A> {
    fn consultation(&self) -> &ConsultationRef {
        &self.on
    }

    fn actor(&self) -> Actor {
        Actor::Guest(self.guest.guest)
    }
}

/// Either kind of grant on a consultation, for the steps account holders and guests share.
#[derive(Debug)]
pub enum CallGrant<A: GuardedAction<On = ConsultationRef>> {
    Account(Grant<A>),
    Guest(GuestGrant<A>),
}

impl<A: GuardedAction<On = ConsultationRef>> sealed::Holder for CallGrant<A> {}
impl<A: GuardedAction<On = ConsultationRef>> ConsultationGrant<A> for CallGrant<A> {
    fn consultation(&self) -> &ConsultationRef {
        match self {
            CallGrant::Account(g) => &g.on,
            CallGrant::Guest(g) => &g.on,
        }
    }

    fn actor(&self) -> Actor {
        match self {
            CallGrant::Account(g) => ConsultationGrant::actor(g),
            CallGrant::Guest(g) => ConsultationGrant::actor(g),
        }
    }
}

/// A denial: callers answer it exactly as they answer a resource that does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not found")]
pub struct Denied {
    pub reason: Reason,
}

/// Asks the gate; on yes, returns the grant the store requires for `A`.
pub fn authorize<A: GuardedAction>(
    principal: &Principal,
    on: A::On,
    ctx: &Context,
) -> Result<Grant<A>, Denied> {
    match decide(principal, A::ACTION, &on.into(), ctx) {
        Decision::Allow(reason) => Ok(Grant {
            principal: *principal,
            on,
            reason,
            _action: PhantomData,
        }),
        Decision::Deny(reason) => Err(Denied { reason }),
    }
}

/// Asks the gate on a guest's behalf; on yes, returns their grant for `A`.
pub fn authorize_guest<A: GuardedAction>(guest: &GuestPrincipal, on: A::On) -> Result<GuestGrant<A>, Denied> {
    match decide_guest(guest, A::ACTION, &on.into()) {
        Decision::Allow(reason) => Ok(GuestGrant {
            guest: *guest,
            on,
            reason,
            _action: PhantomData,
        }),
        Decision::Deny(reason) => Err(Denied { reason }),
    }
}

#[cfg(test)]
mod tests;

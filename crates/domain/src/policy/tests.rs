//! The policy against an oracle written from the words, not from `decide`.

use proptest::prelude::*;
use uuid::Uuid;

use super::*;

fn user(n: u8) -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x1000 + n as u128))
}
fn practice(n: u8) -> PracticeId {
    PracticeId::from_uuid(Uuid::from_u128(0x2000 + n as u128))
}

fn arb_role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}
fn arb_status() -> impl Strategy<Value = RegistrationStatus> {
    prop::sample::select(RegistrationStatus::ALL.to_vec())
}

fn arb_principal() -> impl Strategy<Value = Principal> {
    (0u8..4, arb_role(), 0u8..3).prop_map(|(u, role, p)| Principal {
        user: user(u),
        role,
        practice: role.belongs_to_practice().then(|| practice(p)),
    })
}

fn patient_ref() -> impl Strategy<Value = PatientRef> {
    (0u8..4, prop::option::of(0u8..3)).prop_map(|(u, p)| PatientRef {
        patient: user(u),
        registered_at: p.map(practice),
    })
}

fn arb_resource() -> impl Strategy<Value = Resource> {
    let patient = patient_ref();
    prop_oneof![
        patient.prop_map(Resource::Patient),
        (0u8..4, 0u8..3, arb_status()).prop_map(|(u, p, status)| Resource::Registration(RegistrationRef {
            id: RegistrationId::from_uuid(Uuid::from_u128(7)),
            patient: user(u),
            practice: practice(p),
            status,
        })),
        (0u8..4, 0u8..3).prop_map(|(u, p)| Resource::NewRegistration(NewRegistration {
            patient: user(u),
            practice: practice(p),
        })),
        (0u8..3).prop_map(|p| Resource::Practice(PracticeRef {
            practice: practice(p)
        })),
        (0u8..4, 0u8..3).prop_map(|(c, p)| Resource::Clinician(ClinicianRef {
            clinician: user(c),
            practice: practice(p),
        })),
        (patient_ref(), 0u8..3).prop_map(|(patient, p)| Resource::PatientAtPractice(PatientAtPractice {
            patient,
            practice: practice(p),
        })),
        (patient_ref(), 0u8..4, 0u8..3).prop_map(|(patient, c, p)| Resource::Appointment(AppointmentRef {
            id: AppointmentId::from_uuid(Uuid::from_u128(9)),
            patient,
            clinician: user(c),
            practice: practice(p),
        })),
        consultation_ref(),
        recording_ref(),
        triage_ref(),
        Just(Resource::Platform),
    ]
}

fn consultation_ref() -> impl Strategy<Value = Resource> {
    (patient_ref(), 0u8..4, 0u8..3).prop_map(|(patient, c, p)| {
        Resource::Consultation(ConsultationRef {
            id: ConsultationId::from_uuid(Uuid::from_u128(11)),
            appointment: AppointmentId::from_uuid(Uuid::from_u128(9)),
            patient,
            clinician: user(c),
            practice: practice(p),
        })
    })
}

fn recording_ref() -> impl Strategy<Value = Resource> {
    (patient_ref(), 0u8..4, 0u8..3, prop::option::of(0u8..4)).prop_map(|(patient, c, p, glass)| {
        Resource::Recording(RecordingRef {
            id: RecordingId::from_uuid(Uuid::from_u128(13)),
            consultation: ConsultationId::from_uuid(Uuid::from_u128(11)),
            patient,
            clinician: user(c),
            practice: practice(p),
            break_glass_for: glass.map(user),
        })
    })
}

fn triage_ref() -> impl Strategy<Value = Resource> {
    (0u8..4).prop_map(|u| {
        Resource::TriageSession(TriageSessionRef {
            id: TriageSessionId::from_uuid(Uuid::from_u128(15)),
            patient: user(u),
        })
    })
}

/// The symptom checker's actions, tried often enough on the resources they could apply to.
const TRIAGE_ACTIONS: [Action; 6] = [
    Action::StartTriage,
    Action::ListTriageSessions,
    Action::ReadTriageSession,
    Action::AnswerTriage,
    Action::ShareTriageSummary,
    Action::ReadTriageSummary,
];

/// The actions about calls and recordings, which the whole-policy test reaches too rarely to be sure of.
const CALL_ACTIONS: [Action; 12] = [
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
];

/// The rules, restated as "who may" per action.
fn oracle(who: &Principal, action: Action, what: &Resource, mfa: bool) -> bool {
    let is_patient = who.role == Role::Patient;
    let is_clinician = who.role == Role::Clinician;
    let works_at = |p: &PracticeId| who.practice.as_ref() == Some(p);
    if !is_patient && !mfa {
        return false;
    }
    match what {
        Resource::Patient(p) => {
            let own = is_patient && who.user == p.patient;
            let their_clinician = is_clinician && p.registered_at.as_ref().is_some_and(works_at);
            match action {
                Action::ReadProfile | Action::ReadRecord => own || their_clinician,
                Action::WriteRecord => their_clinician,
                Action::ReadAccessLog
                | Action::ListRegistrations
                | Action::ListAppointments
                | Action::ListRecordings
                | Action::StartTriage
                | Action::ListTriageSessions => own,
                _ => false,
            }
        }
        Resource::NewRegistration(r) => {
            action == Action::RequestRegistration && is_patient && who.user == r.patient
        }
        Resource::Registration(r) => {
            action == Action::DecideRegistration
                && matches!(who.role, Role::Clinician | Role::PracticeAdmin)
                && works_at(&r.practice)
        }
        Resource::Practice(p) => match action {
            Action::ViewRegistrationQueue => {
                matches!(who.role, Role::Clinician | Role::PracticeAdmin) && works_at(&p.practice)
            }
            Action::ListPracticePatients => is_clinician && works_at(&p.practice),
            Action::ManagePracticeStaff => {
                who.role == Role::PlatformAdmin || who.role == Role::PracticeAdmin && works_at(&p.practice)
            }
            Action::ManageRetention | Action::ManageReplay => {
                who.role == Role::PracticeAdmin && works_at(&p.practice)
            }
            _ => false,
        },
        Resource::Clinician(c) => match action {
            Action::ManageAvailability => {
                is_clinician && who.user == c.clinician && works_at(&c.practice)
                    || who.role == Role::PracticeAdmin && works_at(&c.practice)
            }
            Action::ViewSchedule => {
                matches!(who.role, Role::Clinician | Role::PracticeAdmin) && works_at(&c.practice)
            }
            Action::ListClinicianRecordings => {
                is_clinician && who.user == c.clinician && works_at(&c.practice)
            }
            _ => false,
        },
        Resource::PatientAtPractice(b) => {
            matches!(action, Action::ViewFreeSlots | Action::BookAppointment)
                && is_patient
                && who.user == b.patient.patient
                && b.patient.registered_at == Some(b.practice)
        }
        Resource::Appointment(a) => {
            let own = is_patient && who.user == a.patient.patient;
            let its_clinician = is_clinician && who.user == a.clinician && works_at(&a.practice);
            let colleague =
                is_clinician && works_at(&a.practice) && a.patient.registered_at == Some(a.practice);
            let its_admin = who.role == Role::PracticeAdmin && works_at(&a.practice);
            match action {
                Action::ReadAppointment => own || its_clinician || colleague,
                Action::CancelAppointment => own || its_clinician || colleague || its_admin,
                Action::RescheduleAppointment | Action::CheckIn => own,
                Action::RunConsultation => its_clinician,
                // A shared triage summary: the two people the appointment is between, colleagues not.
                Action::ReadTriageSummary => own || its_clinician,
                _ => false,
            }
        }
        Resource::Consultation(c) => {
            let own = is_patient && who.user == c.patient.patient;
            let its_clinician = is_clinician && who.user == c.clinician && works_at(&c.practice);
            match action {
                // Being in the call, and what the call keeps beside its media (chat, consent): the same two.
                Action::JoinConsultation
                | Action::RecordConsent
                | Action::ReadCallRecord
                | Action::PostChatMessage => own || its_clinician,
                Action::InviteGuest => its_clinician,
                _ => false,
            }
        }
        // Recordings: the two people in the call, or a colleague of the clinician breaking the glass
        // while the patient is still registered there, and then only while their glass stays open.
        // Nobody else, admins least of all.
        Resource::Recording(r) => {
            let own = is_patient && who.user == r.patient.patient;
            let its_clinician = is_clinician && who.user == r.clinician && works_at(&r.practice);
            let colleague_not_in_the_call = is_clinician
                && who.user != r.clinician
                && works_at(&r.practice)
                && r.patient.registered_at == Some(r.practice);
            let glass_open = colleague_not_in_the_call && r.break_glass_for == Some(who.user);
            match action {
                Action::ReadRecording | Action::PlayRecording => own || its_clinician || glass_open,
                Action::BreakGlassRecording => colleague_not_in_the_call,
                _ => false,
            }
        }
        // A symptom-checker conversation is its patient's alone: no clinician or admin reads it directly.
        Resource::TriageSession(t) => {
            matches!(
                action,
                Action::ReadTriageSession | Action::AnswerTriage | Action::ShareTriageSummary
            ) && is_patient
                && who.user == t.patient
        }
        Resource::Platform => action == Action::ManagePlatform && who.role == Role::PlatformAdmin,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decide_agrees_with_the_oracle(
        who in arb_principal(),
        action in prop::sample::select(Action::ALL.to_vec()),
        what in arb_resource(),
        mfa in any::<bool>(),
    ) {
        let ctx = Context { mfa_verified: mfa };
        prop_assert_eq!(decide(&who, action, &what, &ctx).is_allowed(), oracle(&who, action, &what, mfa));
    }

    #[test]
    fn calls_and_recordings_agree_with_the_oracle(
        who in arb_principal(),
        action in prop::sample::select(CALL_ACTIONS.to_vec()),
        what in prop_oneof![
            consultation_ref(),
            recording_ref(),
            patient_ref().prop_map(Resource::Patient),
            (0u8..3).prop_map(|p| Resource::Practice(PracticeRef { practice: practice(p) })),
        ],
    ) {
        let ctx = Context { mfa_verified: true };
        prop_assert_eq!(decide(&who, action, &what, &ctx).is_allowed(), oracle(&who, action, &what, true));
    }

    #[test]
    fn triage_agrees_with_the_oracle(
        who in arb_principal(),
        action in prop::sample::select(TRIAGE_ACTIONS.to_vec()),
        what in prop_oneof![
            triage_ref(),
            patient_ref().prop_map(Resource::Patient),
            (patient_ref(), 0u8..4, 0u8..3).prop_map(|(patient, c, p)| Resource::Appointment(AppointmentRef {
                id: AppointmentId::from_uuid(Uuid::from_u128(9)),
                patient,
                clinician: user(c),
                practice: practice(p),
            })),
        ],
        mfa in any::<bool>(),
    ) {
        let ctx = Context { mfa_verified: mfa };
        prop_assert_eq!(decide(&who, action, &what, &ctx).is_allowed(), oracle(&who, action, &what, mfa));
    }

    #[test]
    fn admins_never_see_clinical_content(
        who in arb_principal().prop_filter("admins", |p| matches!(p.role, Role::PracticeAdmin | Role::PlatformAdmin)),
        what in arb_resource(),
    ) {
        let ctx = Context { mfa_verified: true };
        for action in [
            Action::ReadRecord,
            Action::WriteRecord,
            Action::ReadProfile,
            Action::ReadAccessLog,
            Action::ReadAppointment,
            Action::JoinConsultation,
            Action::ReadCallRecord,
            Action::PostChatMessage,
            Action::RecordConsent,
            Action::ListRecordings,
            Action::ReadRecording,
            Action::PlayRecording,
            Action::BreakGlassRecording,
            Action::ListClinicianRecordings,
            Action::StartTriage,
            Action::ListTriageSessions,
            Action::ReadTriageSession,
            Action::AnswerTriage,
            Action::ShareTriageSummary,
            Action::ReadTriageSummary,
        ] {
            prop_assert!(!decide(&who, action, &what, &ctx).is_allowed());
        }
    }
}

#[test]
fn a_grant_carries_what_was_authorized() {
    let ann = Principal {
        user: user(1),
        role: Role::Patient,
        practice: None,
    };
    let ctx = Context { mfa_verified: false };
    let own = PatientRef {
        patient: user(1),
        registered_at: Some(practice(1)),
    };
    let grant = authorize::<actions::ReadRecord>(&ann, own, &ctx).unwrap();
    assert_eq!(grant.patient(), user(1));
    assert_eq!(grant.reason(), Reason::PatientSelf);

    let other = PatientRef {
        patient: user(2),
        registered_at: Some(practice(1)),
    };
    assert_eq!(
        authorize::<actions::ReadRecord>(&ann, other, &ctx).unwrap_err(),
        Denied {
            reason: Reason::NotTheirPatient
        }
    );
}

#[test]
fn moving_practice_moves_access() {
    let ctx = Context { mfa_verified: true };
    let old = Principal {
        user: user(3),
        role: Role::Clinician,
        practice: Some(practice(1)),
    };
    let new = Principal {
        user: user(2),
        role: Role::Clinician,
        practice: Some(practice(2)),
    };
    let moved = Resource::Patient(PatientRef {
        patient: user(1),
        registered_at: Some(practice(2)),
    });
    assert!(!decide(&old, Action::ReadRecord, &moved, &ctx).is_allowed());
    assert!(decide(&new, Action::ReadRecord, &moved, &ctx).is_allowed());
}

fn recording(patient_registered_at: Option<PracticeId>) -> RecordingRef {
    RecordingRef {
        id: RecordingId::from_uuid(Uuid::from_u128(13)),
        consultation: ConsultationId::from_uuid(Uuid::from_u128(11)),
        patient: PatientRef {
            patient: user(1),
            registered_at: patient_registered_at,
        },
        clinician: user(2),
        practice: practice(1),
        break_glass_for: None,
    }
}

fn clinician(n: u8, at: u8) -> Principal {
    Principal {
        user: user(n),
        role: Role::Clinician,
        practice: Some(practice(at)),
    }
}

#[test]
fn break_glass_is_for_a_colleague_who_was_not_in_the_call() {
    let ctx = Context { mfa_verified: true };
    let here = recording(Some(practice(1)));
    let decision =
        |who: &Principal, on: RecordingRef| decide(who, Action::BreakGlassRecording, &on.into(), &ctx);
    assert_eq!(
        decision(&clinician(3, 1), here),
        Decision::Allow(Reason::BreakGlass)
    );
    assert_eq!(
        decision(&clinician(2, 1), here),
        Decision::Deny(Reason::WasInTheCall)
    );
    assert_eq!(
        decision(&clinician(3, 2), here),
        Decision::Deny(Reason::NotTheirPractice)
    );
    // Once the patient has left the practice, nobody there may break the glass on them.
    let left = recording(Some(practice(2)));
    assert_eq!(
        decision(&clinician(3, 1), left),
        Decision::Deny(Reason::NotRegisteredThere)
    );
    // The call's own clinician keeps their ordinary access, and a colleague has none without the glass.
    let play = |who: &Principal| decide(who, Action::PlayRecording, &Resource::Recording(left), &ctx);
    assert_eq!(
        play(&clinician(2, 1)),
        Decision::Allow(Reason::ClinicianOfConsultation)
    );
    assert_eq!(play(&clinician(3, 1)), Decision::Deny(Reason::NotTheirRecording));
    // With the glass broken, that colleague may play it while the patient stays registered there; the
    // glass is theirs alone.
    let broken = RecordingRef {
        break_glass_for: Some(user(3)),
        ..recording(Some(practice(1)))
    };
    let play = |who: &Principal| decide(who, Action::PlayRecording, &Resource::Recording(broken), &ctx);
    assert_eq!(play(&clinician(3, 1)), Decision::Allow(Reason::BreakGlass));
    assert_eq!(play(&clinician(4, 1)), Decision::Deny(Reason::NotTheirRecording));
    let moved_on = RecordingRef {
        break_glass_for: Some(user(3)),
        ..left
    };
    assert_eq!(
        decide(
            &clinician(3, 1),
            Action::PlayRecording,
            &Resource::Recording(moved_on),
            &ctx
        ),
        Decision::Deny(Reason::NotTheirRecording)
    );
}

#[test]
fn a_recording_grant_names_its_recording_and_is_audited_as_one() {
    let ann = Principal {
        user: user(1),
        role: Role::Patient,
        practice: None,
    };
    let on = recording(None);
    let grant = authorize::<actions::PlayRecording>(&ann, on, &Context { mfa_verified: false }).unwrap();
    assert_eq!(grant.recording(), &on);
    assert_eq!(grant.reason(), Reason::PatientSelf);
    let resource = Resource::from(on);
    assert_eq!(resource.audit_label(), format!("recording:{}", on.id));
    assert_eq!(resource.subject_patient(), Some(user(1)));
    let consultation = Resource::Consultation(ConsultationRef {
        id: on.consultation,
        appointment: AppointmentId::from_uuid(Uuid::from_u128(9)),
        patient: on.patient,
        clinician: on.clinician,
        practice: on.practice,
    });
    assert_eq!(
        consultation.audit_label(),
        format!("consultation:{}", on.consultation)
    );
    assert_eq!(consultation.subject_patient(), Some(user(1)));
}

/// A guest of consultation 11 or of another one.
fn arb_guest() -> impl Strategy<Value = GuestPrincipal> {
    (0u8..3, prop::bool::ANY).prop_map(|(g, same)| GuestPrincipal {
        guest: GuestId::from_uuid(Uuid::from_u128(0x3000 + g as u128)),
        consultation: ConsultationId::from_uuid(Uuid::from_u128(if same { 11 } else { 12 })),
    })
}

/// From the issue: a guest joins the call they were invited to and is recorded as a participant, so
/// they may be in it, chat, read its chat and decide about their own recording; nothing else.
fn guest_oracle(guest: &GuestPrincipal, action: Action, what: &Resource) -> bool {
    let in_the_call = matches!(
        action,
        Action::JoinConsultation | Action::RecordConsent | Action::ReadCallRecord | Action::PostChatMessage
    );
    matches!(what, Resource::Consultation(c) if c.id == guest.consultation) && in_the_call
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn guests_agree_with_their_oracle(
        guest in arb_guest(),
        action in prop::sample::select(Action::ALL.to_vec()),
        what in prop_oneof![consultation_ref(), recording_ref(), arb_resource()],
    ) {
        prop_assert_eq!(decide_guest(&guest, action, &what).is_allowed(), guest_oracle(&guest, action, &what));
    }
}

#[test]
fn a_guest_grant_names_the_guest_as_the_actor() {
    let guest = GuestPrincipal {
        guest: GuestId::from_uuid(Uuid::from_u128(0x3001)),
        consultation: ConsultationId::from_uuid(Uuid::from_u128(11)),
    };
    let on = ConsultationRef {
        id: guest.consultation,
        appointment: AppointmentId::from_uuid(Uuid::from_u128(9)),
        patient: PatientRef {
            patient: user(1),
            registered_at: Some(practice(0)),
        },
        clinician: user(2),
        practice: practice(0),
    };
    let grant = authorize_guest::<actions::JoinConsultation>(&guest, on).unwrap();
    assert_eq!(ConsultationGrant::actor(&grant), Actor::Guest(guest.guest));
    assert_eq!(grant.reason(), Reason::GuestOfConsultation);
    assert!(authorize_guest::<actions::InviteGuest>(&guest, on).is_err());
    let elsewhere = ConsultationRef {
        id: ConsultationId::from_uuid(Uuid::from_u128(12)),
        ..on
    };
    assert_eq!(
        authorize_guest::<actions::JoinConsultation>(&guest, elsewhere)
            .unwrap_err()
            .reason,
        Reason::NotTheirConsultation
    );
}

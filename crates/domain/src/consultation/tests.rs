use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::identity::Role;
use crate::policy::{AppointmentRef, Context, PatientRef, Principal, authorize};

fn user(n: u8) -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x1000 + n as u128))
}
fn practice(n: u8) -> PracticeId {
    PracticeId::from_uuid(Uuid::from_u128(0x2000 + n as u128))
}
fn guest(n: u8) -> GuestId {
    GuestId::from_uuid(Uuid::from_u128(0x3000 + n as u128))
}
fn ts(minute: i64) -> Timestamp {
    Timestamp::from_second(1_780_000_000 + minute * 60).unwrap()
}

/// The grant a clinician gets to run their own appointment, as the gate gives it.
fn grant(appointment: u8, patient: UserId, clinician: UserId, at: PracticeId) -> Grant<RunConsultation> {
    let principal = Principal {
        user: clinician,
        role: Role::Clinician,
        practice: Some(at),
    };
    let on = AppointmentRef {
        id: AppointmentId::from_uuid(Uuid::from_u128(0x4000 + appointment as u128)),
        patient: PatientRef {
            patient,
            registered_at: Some(at),
        },
        clinician,
        practice: at,
    };
    authorize::<RunConsultation>(&principal, on, &Context { mfa_verified: true }).unwrap()
}

fn start(n: u8, patient: UserId, clinician: UserId, at: PracticeId) -> Consultation {
    Consultation::start(
        ConsultationId::from_uuid(Uuid::from_u128(0x5000 + n as u128)),
        RecordingId::from_uuid(Uuid::from_u128(0x6000 + n as u128)),
        &grant(n, patient, clinician, at),
        ConsultationMode::Video,
        ts(0),
    )
}

fn ann_with_dr_bo() -> Consultation {
    start(1, user(1), user(2), practice(1))
}

fn interpreter() -> (PersonName, GuestRole) {
    (
        PersonName::parse("Iris Tolk").unwrap(),
        GuestRole::parse("interpreter").unwrap(),
    )
}

fn reasons(c: &Consultation) -> Vec<SegmentReason> {
    c.recording().segments().iter().map(Segment::reason).collect()
}

#[test]
fn starting_binds_the_recording_to_the_appointment() {
    let g = grant(1, user(1), user(2), practice(1));
    let c = Consultation::start(
        ConsultationId::from_uuid(Uuid::from_u128(0x5001)),
        RecordingId::from_uuid(Uuid::from_u128(0x6001)),
        &g,
        ConsultationKind::Audio.into(),
        ts(0),
    );
    let b = c.binding();
    assert_eq!(b.appointment(), g.appointment().id);
    assert_eq!(b.patient(), user(1));
    assert_eq!(b.clinician(), user(2));
    assert_eq!(b.practice(), practice(1));
    assert_eq!(c.recording().binding(), b);
    assert_eq!(c.mode(), ConsultationMode::AudioOnly);
    assert_eq!(reasons(&c), [SegmentReason::Start]);
    assert_eq!(c.recording().segments()[0].mode(), ConsultationMode::AudioOnly);
    // The clinician who started the call is in it; the patient joins when they come.
    assert_eq!(c.participants()[0].joined_at(), None);
    assert_eq!(c.participants()[1].joined_at(), Some(ts(0)));
}

#[test]
fn switches_reconnects_and_restarts_extend_the_same_recording() {
    let mut c = ann_with_dr_bo();
    let binding = c.binding();
    let recording = c.recording().id();
    c.join(Party::Patient, ts(1)).unwrap();
    let refs = [
        c.switch_mode(Party::Patient, ConsultationMode::AudioOnly, ts(2))
            .unwrap(),
        c.switch_mode(Party::Clinician, ConsultationMode::Video, ts(3))
            .unwrap(),
        c.reconnect(Party::Patient, ts(4)).unwrap(),
        c.resume_after_restart(ts(5)).unwrap(),
        c.switch_mode(Party::Patient, ConsultationMode::AudioOnly, ts(6))
            .unwrap(),
    ];
    assert!(refs.iter().all(|r| r.recording() == recording));
    assert_eq!(refs.map(|r| r.index()), [1, 2, 3, 4, 5]);
    assert_eq!(
        reasons(&c),
        [
            SegmentReason::Start,
            SegmentReason::ModeSwitch,
            SegmentReason::ModeSwitch,
            SegmentReason::Reconnect,
            SegmentReason::Restart,
            SegmentReason::ModeSwitch,
        ]
    );
    let modes: Vec<_> = c.recording().segments().iter().map(Segment::mode).collect();
    use ConsultationMode::{AudioOnly, Video};
    assert_eq!(modes, [Video, AudioOnly, Video, Video, Video, AudioOnly]);
    assert_eq!(c.binding(), binding);
    assert_eq!(c.recording().binding(), binding);
    assert_eq!(c.recording().segment_ref(3), Some(refs[2]));
    assert_eq!(c.recording().segment_ref(6), None);
}

#[test]
fn a_rebuilt_consultation_carries_on_the_same_recording() {
    let mut c = ann_with_dr_bo();
    c.join(Party::Patient, ts(1)).unwrap();
    let (name, role) = interpreter();
    c.invite_guest(guest(1), name, role, ts(2)).unwrap();
    c.join(Party::Guest(guest(1)), ts(3)).unwrap();
    c.record_consent(Party::Patient, ConsentDecision::Given, ts(3))
        .unwrap();
    c.switch_mode(Party::Clinician, ConsultationMode::AudioOnly, ts(4))
        .unwrap();

    let mut rebuilt = Consultation::restore_from_storage(c.stored(), c.events().to_vec()).unwrap();
    assert_eq!(rebuilt, c);
    let after = rebuilt.resume_after_restart(ts(9)).unwrap();
    assert_eq!(after.recording(), c.recording().id());
    assert_eq!(after.index(), 2);
    assert_eq!(rebuilt.recording().binding(), c.binding());
    assert_eq!(
        rebuilt.recording().segments()[2].mode(),
        ConsultationMode::AudioOnly
    );
}

#[test]
fn refused_steps_are_named_and_change_nothing() {
    let mut c = ann_with_dr_bo();
    let (name, role) = interpreter();
    c.invite_guest(guest(1), name.clone(), role.clone(), ts(1))
        .unwrap();
    c.join(Party::Guest(guest(1)), ts(2)).unwrap();

    type Step = fn(&mut Consultation) -> Result<(), ConsultationError>;
    let refused: [(Step, ConsultationError); 8] = [
        (
            |c| {
                c.switch_mode(Party::Clinician, ConsultationMode::Video, ts(3))
                    .map(drop)
            },
            ConsultationError::AlreadyInMode(ConsultationMode::Video),
        ),
        (
            |c| {
                c.switch_mode(Party::Guest(guest(1)), ConsultationMode::AudioOnly, ts(3))
                    .map(drop)
            },
            ConsultationError::GuestMayNotSwitch,
        ),
        (
            |c| {
                c.switch_mode(Party::Patient, ConsultationMode::AudioOnly, ts(3))
                    .map(drop)
            },
            ConsultationError::NotJoined(Party::Patient),
        ),
        (
            |c| c.reconnect(Party::Patient, ts(3)).map(drop),
            ConsultationError::NotJoined(Party::Patient),
        ),
        (
            |c| c.join(Party::Guest(guest(2)), ts(3)),
            ConsultationError::NotAParticipant(Party::Guest(guest(2))),
        ),
        // A guest's link is single-use: a dropped guest reconnects.
        (
            |c| c.join(Party::Guest(guest(1)), ts(3)),
            ConsultationError::AlreadyJoined(Party::Guest(guest(1))),
        ),
        (
            |c| {
                let (name, role) = interpreter();
                c.invite_guest(guest(1), name, role, ts(3)).map(drop)
            },
            ConsultationError::GuestAlreadyInvited(guest(1)),
        ),
        (
            |c| c.end(ts(1)),
            ConsultationError::OutOfOrder {
                at: ts(1),
                last: ts(2),
            },
        ),
    ];
    for (step, expected) in refused {
        let before = c.clone();
        assert_eq!(step(&mut c), Err(expected));
        assert_eq!(c, before);
    }
    assert!(c.reconnect(Party::Guest(guest(1)), ts(3)).is_ok());
}

#[test]
fn nothing_happens_after_the_end() {
    let mut c = ann_with_dr_bo();
    c.end(ts(5)).unwrap();
    let ended = c.clone();
    let (name, role) = interpreter();
    assert_eq!(c.end(ts(6)), Err(ConsultationError::Ended));
    assert_eq!(
        c.invite_guest(guest(1), name, role, ts(6)).map(drop),
        Err(ConsultationError::Ended)
    );
    assert_eq!(c.join(Party::Patient, ts(6)), Err(ConsultationError::Ended));
    assert_eq!(
        c.switch_mode(Party::Clinician, ConsultationMode::AudioOnly, ts(6)),
        Err(ConsultationError::Ended)
    );
    assert_eq!(
        c.reconnect(Party::Clinician, ts(6)),
        Err(ConsultationError::Ended)
    );
    assert_eq!(c.resume_after_restart(ts(6)), Err(ConsultationError::Ended));
    assert_eq!(
        c.record_consent(Party::Patient, ConsentDecision::Given, ts(6)),
        Err(ConsultationError::Ended)
    );
    assert_eq!(c, ended);
    assert_eq!(c.ended_at(), Some(ts(5)));
}

#[test]
fn consent_given_then_withdrawn_then_given_again() {
    let mut c = ann_with_dr_bo();
    c.record_consent(Party::Patient, ConsentDecision::Given, ts(2))
        .unwrap();
    c.record_consent(Party::Patient, ConsentDecision::Withdrawn, ts(5))
        .unwrap();
    c.record_consent(Party::Patient, ConsentDecision::Given, ts(8))
        .unwrap();
    let patient = &c.participants()[0];
    let timeline = patient.consent();
    let expected = [
        (ts(1), Consent::NotAsked),
        (ts(2), Consent::Given),
        (ts(4), Consent::Given),
        (ts(5), Consent::Withdrawn),
        (ts(7), Consent::Withdrawn),
        (ts(8), Consent::Given),
        (ts(60), Consent::Given),
    ];
    for (at, consent) in expected {
        assert_eq!(timeline.at(at), consent, "at {at}");
        assert_eq!(recordable(patient, at), consent == Consent::Given, "at {at}");
    }
    assert_eq!(timeline.decisions().len(), 3);
}

#[test]
fn of_two_decisions_at_one_instant_the_later_counts() {
    let mut c = ann_with_dr_bo();
    c.record_consent(Party::Clinician, ConsentDecision::Given, ts(3))
        .unwrap();
    c.record_consent(Party::Clinician, ConsentDecision::Withdrawn, ts(3))
        .unwrap();
    assert_eq!(c.participants()[1].consent().at(ts(3)), Consent::Withdrawn);
}

#[test]
fn the_recorder_leaves_out_anyone_without_consent() {
    let mut c = ann_with_dr_bo();
    let (name, role) = interpreter();
    let g = Party::Guest(guest(1));
    c.invite_guest(guest(1), name, role, ts(1)).unwrap();
    c.record_consent(Party::Patient, ConsentDecision::Given, ts(1))
        .unwrap();
    c.record_consent(g, ConsentDecision::Given, ts(2)).unwrap();
    c.record_consent(g, ConsentDecision::Withdrawn, ts(4)).unwrap();
    // The clinician is never asked here, so is never recorded.
    assert_eq!(tracks_to_record(c.participants(), ts(0)), []);
    assert_eq!(tracks_to_record(c.participants(), ts(1)), [Party::Patient]);
    assert_eq!(tracks_to_record(c.participants(), ts(3)), [Party::Patient, g]);
    assert_eq!(tracks_to_record(c.participants(), ts(4)), [Party::Patient]);
    assert_eq!(
        c.record_consent(Party::Guest(guest(2)), ConsentDecision::Given, ts(5)),
        Err(ConsultationError::NotAParticipant(Party::Guest(guest(2))))
    );
}

#[test]
fn a_stored_recording_must_agree_with_its_consultation() {
    let mut c = ann_with_dr_bo();
    c.resume_after_restart(ts(2)).unwrap();
    c.reconnect(Party::Clinician, ts(3)).unwrap();
    let row = c.stored();
    let good = c.recording().stored();
    assert_eq!(
        Recording::restore_from_storage(good.clone(), &row).as_ref(),
        Ok(c.recording())
    );

    let other = start(2, user(3), user(4), practice(2));
    let alterations: [fn(&mut StoredRecording, &Consultation); 5] = [
        |r, o| r.patient = o.binding().patient(),
        |r, o| r.clinician = o.binding().clinician(),
        |r, o| r.practice = o.binding().practice(),
        |r, o| r.consultation = o.id(),
        |r, o| r.id = o.recording().id(),
    ];
    for alter in alterations {
        let mut bad = good.clone();
        alter(&mut bad, &other);
        let expected = RestoreError::OwnerMismatch {
            recording: bad.id,
            consultation: row.id,
        };
        assert_eq!(Recording::restore_from_storage(bad, &row), Err(expected));
    }
    // The consultation's row pointing at another recording is as wrong as the reverse.
    let elsewhere = StoredConsultation {
        recording: other.recording().id(),
        ..row
    };
    assert_eq!(
        Recording::restore_from_storage(good.clone(), &elsewhere),
        Err(RestoreError::OwnerMismatch {
            recording: good.id,
            consultation: row.id,
        })
    );

    type Alter = fn(&mut Vec<StoredSegment>);
    let segments_refused: [(Alter, RestoreError); 5] = [
        (
            |s| {
                s.remove(1);
            },
            RestoreError::SegmentOutOfPlace {
                expected: 1,
                found: 2,
            },
        ),
        (
            |s| s[0].reason = SegmentReason::Restart,
            RestoreError::StartSegment { index: 0 },
        ),
        (
            |s| s[2].reason = SegmentReason::Start,
            RestoreError::StartSegment { index: 2 },
        ),
        (
            |s| s[2].started_at = ts(1),
            RestoreError::SegmentOutOfOrder { index: 2 },
        ),
        (Vec::clear, RestoreError::StartSegment { index: 0 }),
    ];
    for (alter, expected) in segments_refused {
        let mut bad = good.clone();
        alter(&mut bad.segments);
        assert_eq!(Recording::restore_from_storage(bad, &row), Err(expected));
    }
}

#[test]
fn a_stored_log_must_start_once_and_replay() {
    let mut c = ann_with_dr_bo();
    c.end(ts(3)).unwrap();
    let row = c.stored();
    let log = c.events().to_vec();
    assert_eq!(
        Consultation::restore_from_storage(row, log[1..].to_vec()),
        Err(RestoreError::NotStartedOnce)
    );
    assert_eq!(
        Consultation::restore_from_storage(row, [log[0].clone(), log[0].clone()]),
        Err(RestoreError::NotStartedOnce)
    );
    assert_eq!(
        Consultation::restore_from_storage(row, [log[0].clone(), log[1].clone(), log[1].clone()]),
        Err(RestoreError::Replay(ConsultationError::Ended))
    );
}

#[test]
fn only_this_consultations_account_holders_are_parties() {
    let c = ann_with_dr_bo();
    assert_eq!(c.party_of(user(1)), Some(Party::Patient));
    assert_eq!(c.party_of(user(2)), Some(Party::Clinician));
    assert_eq!(c.party_of(user(3)), None);
}

#[test]
fn guest_roles_are_short_printable_labels() {
    assert_eq!(GuestRole::parse(" carer ").unwrap().as_str(), "carer");
    assert!(GuestRole::parse("").is_err());
    assert!(GuestRole::parse("a\u{7}").is_err());
    assert!(GuestRole::parse(&"x".repeat(GuestRole::MAX + 1)).is_err());
}

#[derive(Clone, Copy, Debug)]
enum Who {
    Patient,
    Clinician,
    Guest(u8),
}

impl Who {
    fn party(self) -> Party {
        match self {
            Who::Patient => Party::Patient,
            Who::Clinician => Party::Clinician,
            Who::Guest(n) => Party::Guest(guest(n)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Switch(Who, ConsultationMode),
    Invite(u8),
    Join(Who),
    Reconnect(Who),
    Restart,
    Consent(Who, ConsentDecision),
    End,
}

fn arb_who() -> impl Strategy<Value = Who> {
    prop_oneof![
        Just(Who::Patient),
        Just(Who::Clinician),
        (0u8..3).prop_map(Who::Guest)
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    let mode = prop::sample::select(vec![ConsultationMode::AudioOnly, ConsultationMode::Video]);
    let decision = prop::sample::select(vec![ConsentDecision::Given, ConsentDecision::Withdrawn]);
    prop_oneof![
        4 => (arb_who(), mode).prop_map(|(w, m)| Step::Switch(w, m)),
        2 => (0u8..3).prop_map(Step::Invite),
        3 => arb_who().prop_map(Step::Join),
        3 => arb_who().prop_map(Step::Reconnect),
        2 => Just(Step::Restart),
        2 => (arb_who(), decision).prop_map(|(w, d)| Step::Consent(w, d)),
        1 => Just(Step::End),
    ]
}

fn take(c: &mut Consultation, step: Step, at: Timestamp) -> Result<Option<SegmentRef>, ConsultationError> {
    match step {
        Step::Switch(who, mode) => c.switch_mode(who.party(), mode, at).map(Some),
        Step::Invite(n) => {
            let (name, role) = interpreter();
            c.invite_guest(guest(n), name, role, at).map(|_| None)
        }
        Step::Join(who) => c.join(who.party(), at).map(|()| None),
        Step::Reconnect(who) => c.reconnect(who.party(), at).map(Some),
        Step::Restart => c.resume_after_restart(at).map(Some),
        Step::Consent(who, d) => c.record_consent(who.party(), d, at).map(|()| None),
        Step::End => c.end(at).map(|()| None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Several consultations, some sharing a patient or a clinician, under random interleaved steps.
    #[test]
    fn every_segment_belongs_to_its_own_consultations_people(
        people in prop::collection::vec((0u8..3, 0u8..2, 0u8..2), 2..5),
        steps in prop::collection::vec((0usize..4, -1i64..4, arb_step()), 0..80),
    ) {
        let mut cs: Vec<Consultation> = people
            .iter()
            .enumerate()
            .map(|(n, &(p, c, at))| start(n as u8, user(p), user(10 + c), practice(at)))
            .collect();
        let mut handed_out: Vec<(usize, SegmentRef)> = Vec::new();
        let mut now = 0;
        for (k, dt, step) in steps {
            let k = k % cs.len();
            now += dt;
            let before = cs[k].clone();
            match take(&mut cs[k], step, ts(now)) {
                Ok(Some(segment)) => {
                    prop_assert_eq!(segment.recording(), cs[k].recording().id());
                    prop_assert_eq!(segment.index() as usize + 1, cs[k].recording().segments().len());
                    handed_out.push((k, segment));
                }
                Ok(None) => prop_assert_eq!(cs[k].recording(), before.recording()),
                Err(_) => prop_assert_eq!(&cs[k], &before),
            }
            // Every mode change opens a segment, so the newest one is always in the current mode.
            let newest = cs[k].recording().segments().last().map(Segment::mode);
            prop_assert_eq!(newest, Some(cs[k].mode()));
        }

        for (k, segment) in handed_out {
            let (p, c, at) = people[k];
            let owners: Vec<Binding> = cs
                .iter()
                .map(Consultation::recording)
                .filter(|r| r.id() == segment.recording())
                .map(Recording::binding)
                .collect();
            prop_assert_eq!(owners.len(), 1);
            prop_assert_eq!(owners[0].patient(), user(p));
            prop_assert_eq!(owners[0].clinician(), user(10 + c));
            prop_assert_eq!(owners[0].practice(), practice(at));
            prop_assert_eq!(owners[0].consultation(), cs[k].id());
        }
        for (i, a) in cs.iter().enumerate() {
            let indexes: Vec<u32> = a.recording().segments().iter().map(Segment::index).collect();
            prop_assert_eq!(indexes, (0..a.recording().segments().len() as u32).collect::<Vec<_>>());
            for (j, b) in cs.iter().enumerate() {
                let (ra, rb) = (a.recording().binding(), b.recording().binding());
                prop_assert_eq!(ra.patient() == rb.patient(), people[i].0 == people[j].0);
                prop_assert_eq!(ra.clinician() == rb.clinician(), people[i].1 == people[j].1);
            }
            let rebuilt = Consultation::restore_from_storage(a.stored(), a.events().to_vec());
            prop_assert_eq!(rebuilt.as_ref(), Ok(a));
            let reread = Recording::restore_from_storage(a.recording().stored(), &a.stored());
            prop_assert_eq!(reread.as_ref(), Ok(a.recording()));
        }
    }
}

//! Scheduling in the store on every configured backend: SQLite always, PostgreSQL when
//! CONFIDE_TEST_DATABASE_URL is set. The database, not the code in front of it, keeps a clinician's
//! appointments from overlapping; these tests race it and check what it leaves behind.

use std::collections::BTreeSet;
use std::sync::Arc;

use confide_domain::consultation::{Consultation, ConsultationMode};
use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::ids::{AvailabilityId, ConsultationId, RecordingId};
use confide_domain::policy::{
    AppointmentRef, Context, Grant, GuardedAction, NewRegistration, PatientAtPractice, PatientRef, Principal,
    actions, authorize,
};
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::scheduling::{
    AppointmentStatus, AvailabilityException, AvailabilityRule, ConsultationKind, ExceptionKind,
    KindsOffered, MinuteOfDay, SlotLength, units, weekday_from_number,
};
use confide_domain::{AppointmentId, PracticeId, RegistrationId, Timestamp, UserId};
use confide_store::testing::TestDatabase;
use confide_store::{
    Appointment, Conflict, JobKind, NewAppointment, NewJob, NewPractice, NewTime, NewUser, Role as StoreRole,
    ScheduleEntry, Store, StoreError,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tokio::sync::Barrier;
use uuid::Uuid;

const MFA: Context = Context { mfa_verified: true };
const MINUTE: i64 = 60_000;

fn ms(rfc3339: &str) -> i64 {
    rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
}

/// Monday 7 January 2030, 09:00 UTC: every test books around it.
fn nine() -> i64 {
    ms("2030-01-07T09:00:00Z")
}

async fn practice(store: &Store, name: &str) -> PracticeId {
    let id = PracticeId::from_uuid(Uuid::new_v4());
    store
        .create_practice(NewPractice {
            id,
            name: &PracticeName::parse(name).unwrap(),
            address: &Address::parse("1 High Street").unwrap(),
            time_zone: &TimeZoneName::parse("Europe/London").unwrap(),
            at_ms: 1,
        })
        .await
        .unwrap();
    id
}

async fn user(store: &Store, email: &str, role: Role, practice: Option<PracticeId>) -> Principal {
    let id = UserId::from_uuid(Uuid::new_v4());
    store
        .create_user(NewUser {
            id,
            email: &Email::parse(email).unwrap(),
            name: &PersonName::parse(email.split('@').next().unwrap()).unwrap(),
            role,
            practice,
            password_hash: None,
            date_of_birth: (role == Role::Patient).then(|| "1980-01-02".to_owned()),
            at_ms: 1,
        })
        .await
        .unwrap();
    Principal {
        user: id,
        role,
        practice,
    }
}

/// Asks a practice to register the patient and has `staff` accept.
async fn register(store: &Store, patient: &Principal, at: PracticeId, staff: &Principal) -> RegistrationId {
    let ask = authorize::<actions::RequestRegistration>(
        patient,
        NewRegistration {
            patient: patient.user,
            practice: at,
        },
        &MFA,
    )
    .unwrap();
    let id = RegistrationId::from_uuid(Uuid::new_v4());
    store.request_registration(&ask, id, 10).await.unwrap();
    let facts = store.registration_ref(id).await.unwrap().unwrap();
    let decide = authorize::<actions::DecideRegistration>(staff, facts, &MFA).unwrap();
    store.decide_registration(&decide, true, 20).await.unwrap();
    id
}

/// A patient registered at `at`, so able to book there.
async fn patient(store: &Store, email: &str, at: PracticeId, staff: &Principal) -> Principal {
    let p = user(store, email, Role::Patient, None).await;
    register(store, &p, at, staff).await;
    p
}

fn book_grant(patient: &Principal, practice: PracticeId) -> Grant<actions::BookAppointment> {
    let on = PatientAtPractice {
        patient: PatientRef {
            patient: patient.user,
            registered_at: Some(practice),
        },
        practice,
    };
    authorize::<actions::BookAppointment>(patient, on, &MFA).unwrap()
}

fn new_appointment<'a>(
    clinician: UserId,
    start_ms: i64,
    minutes: i64,
    jobs: &'a [NewJob],
) -> NewAppointment<'a> {
    NewAppointment {
        id: AppointmentId::from_uuid(Uuid::new_v4()),
        clinician,
        start_ms,
        end_ms: start_ms + minutes * MINUTE,
        kind: ConsultationKind::Video,
        reason: "Cough for three weeks",
        at_ms: 100,
        jobs,
    }
}

async fn book(
    store: &Store,
    patient: &Principal,
    practice: PracticeId,
    clinician: &Principal,
    start_ms: i64,
    minutes: i64,
) -> Result<Appointment, StoreError> {
    store
        .book_appointment(
            &book_grant(patient, practice),
            new_appointment(clinician.user, start_ms, minutes, &[]),
        )
        .await
}

/// The gate's grant for `who` to do `A` to an existing appointment.
async fn on_appointment<A: GuardedAction<On = AppointmentRef>>(
    store: &Store,
    who: &Principal,
    id: AppointmentId,
) -> Grant<A> {
    let facts = store.appointment_ref(id).await.unwrap().unwrap();
    authorize::<A>(who, facts, &MFA).unwrap()
}

fn job(kind: JobKind, run_at_ms: i64) -> NewJob {
    NewJob {
        id: Uuid::new_v4().to_string(),
        kind,
        run_at_ms,
    }
}

/// A cancellation with no cutoff, as staff make it.
async fn cancel_at(
    store: &Store,
    grant: &Grant<actions::CancelAppointment>,
    message: Option<&str>,
    at_ms: i64,
    jobs: &[NewJob],
) -> Result<Appointment, StoreError> {
    store.cancel_appointment(grant, message, at_ms, None, jobs).await
}

/// A move to a slot that offers either kind, keeping the appointment's kind, with no cutoff.
async fn move_to(
    store: &Store,
    grant: &Grant<actions::RescheduleAppointment>,
    start_ms: i64,
    end_ms: i64,
    at_ms: i64,
    jobs: &[NewJob],
) -> Result<Appointment, StoreError> {
    let to = NewTime {
        start_ms,
        end_ms,
        kind: None,
        offers: KindsOffered::Either,
    };
    store
        .reschedule_appointment(grant, to, at_ms, i64::MIN, jobs)
        .await
}

async fn schedule(
    store: &Store,
    viewer: &Principal,
    clinician: UserId,
    from: i64,
    until: i64,
) -> Vec<ScheduleEntry> {
    let facts = store.clinician_ref(clinician).await.unwrap().unwrap();
    let grant = authorize::<actions::ViewSchedule>(viewer, facts, &MFA).unwrap();
    store.schedule(&grant, from, until).await.unwrap()
}

async fn booked_units(store: &Store, clinician: UserId, from: i64, until: i64) -> Vec<i64> {
    let booked = store.booked_times(clinician, from, until).await.unwrap();
    for b in &booked {
        assert_eq!(b.end_ms - b.start_ms, 5 * MINUTE);
    }
    booked.iter().map(|b| b.start_ms).collect()
}

fn is_slot_taken<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(Conflict::SlotTaken)))
}

fn is_invalid<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Invalid(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_bookings_of_one_slot_leave_exactly_one() {
    for db in TestDatabase::all().await {
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let north = practice(&store, "North").await;
        let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
        let mut patients = Vec::new();
        for n in 0..50 {
            patients.push(patient(&store, &format!("p{n}@x.org"), north, &gp).await);
        }

        let barrier = Arc::new(Barrier::new(patients.len()));
        let tasks: Vec<_> = patients
            .iter()
            .map(|p| {
                let (store, barrier, grant) = (store.clone(), barrier.clone(), book_grant(p, north));
                let clinician = gp.user;
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .book_appointment(&grant, new_appointment(clinician, nine(), 15, &[]))
                        .await
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }

        let won: Vec<&Appointment> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{:?}", db.backend);
        let other: Vec<_> = results
            .iter()
            .filter(|r| r.is_err() && !is_slot_taken(r))
            .collect();
        assert!(other.is_empty(), "{:?}: {other:?}", db.backend);
        assert_eq!(results.iter().filter(|r| is_slot_taken(r)).count(), 49);

        let day = (nine() - 60 * MINUTE, nine() + 8 * 60 * MINUTE);
        let entries = schedule(&store, &gp, gp.user, day.0, day.1).await;
        assert_eq!(entries.len(), 1, "{:?}", db.backend);
        assert_eq!(entries[0].id, won[0].id);
        assert_eq!(
            (entries[0].start_ms, entries[0].end_ms),
            (nine(), nine() + 15 * MINUTE)
        );
        assert_eq!(entries[0].status, AppointmentStatus::Booked);
        assert_eq!(
            booked_units(&store, gp.user, day.0, day.1).await,
            units(nine(), nine() + 15 * MINUTE).collect::<Vec<_>>()
        );
        store.close().await;
    }
}

#[tokio::test]
async fn overlapping_times_of_different_lengths_conflict() {
    for db in TestDatabase::all().await {
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let north = practice(&store, "North").await;
        let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
        let gp2 = user(&store, "gp2@x.org", Role::Clinician, Some(north)).await;
        let ann = patient(&store, "ann@x.org", north, &gp).await;
        let bob = patient(&store, "bob@x.org", north, &gp).await;

        book(&store, &ann, north, &gp, nine(), 15).await.unwrap();
        let inside = book(&store, &bob, north, &gp, nine() + 10 * MINUTE, 10).await;
        assert!(is_slot_taken(&inside), "{:?}: {inside:?}", db.backend);
        let around = book(&store, &bob, north, &gp, nine() - 5 * MINUTE, 30).await;
        assert!(is_slot_taken(&around), "{:?}: {around:?}", db.backend);
        let before = book(&store, &bob, north, &gp, nine() - 10 * MINUTE, 15).await;
        assert!(is_slot_taken(&before), "{:?}: {before:?}", db.backend);

        let after = book(&store, &bob, north, &gp, nine() + 15 * MINUTE, 10)
            .await
            .unwrap();
        assert_eq!(after.start_ms, nine() + 15 * MINUTE);
        let ending_at_nine = book(&store, &bob, north, &gp, nine() - 20 * MINUTE, 20)
            .await
            .unwrap();
        assert_eq!(ending_at_nine.end_ms, nine());
        let elsewhere = book(&store, &bob, north, &gp2, nine(), 15).await.unwrap();
        assert_eq!(elsewhere.clinician, gp2.user);

        let day = (nine() - 60 * MINUTE, nine() + 60 * MINUTE);
        let starts: Vec<_> = schedule(&store, &gp2, gp.user, day.0, day.1)
            .await
            .iter()
            .map(|e| (e.start_ms, e.end_ms))
            .collect();
        assert_eq!(
            starts,
            [
                (nine() - 20 * MINUTE, nine()),
                (nine(), nine() + 15 * MINUTE),
                (nine() + 15 * MINUTE, nine() + 25 * MINUTE)
            ]
        );
        let held: Vec<i64> = units(nine() - 20 * MINUTE, nine() + 25 * MINUTE).collect();
        assert_eq!(booked_units(&store, gp.user, day.0, day.1).await, held);
        store.close().await;
    }
}

#[tokio::test]
async fn cancel_frees_the_time_and_reschedule_is_atomic() {
    for db in TestDatabase::all().await {
        let b = db.backend;
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let north = practice(&store, "North").await;
        let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
        let ann = patient(&store, "ann@x.org", north, &gp).await;
        let bob = patient(&store, "bob@x.org", north, &gp).await;
        let cat = patient(&store, "cat@x.org", north, &gp).await;
        let day = (nine() - 60 * MINUTE, nine() + 8 * 60 * MINUTE);

        // Booked with its emails, then cancelled: reminders are dropped, the rest still go out.
        let jobs = [
            job(JobKind::Booked, 100),
            job(JobKind::Reminder24h, nine() - 24 * 60 * MINUTE),
            job(JobKind::Reminder1h, nine() - 60 * MINUTE),
        ];
        let first = store
            .book_appointment(
                &book_grant(&ann, north),
                new_appointment(gp.user, nine(), 15, &jobs),
            )
            .await
            .unwrap();
        assert_eq!((first.status, first.sequence), (AppointmentStatus::Booked, 0));
        let cancel = on_appointment::<actions::CancelAppointment>(&store, &ann, first.id).await;
        let cancelled = cancel_at(
            &store,
            &cancel,
            Some("Feeling better"),
            200,
            &[job(JobKind::Cancelled, 200)],
        )
        .await
        .unwrap();
        assert_eq!(cancelled.status, AppointmentStatus::Cancelled);
        assert_eq!(cancelled.sequence, 1);
        assert_eq!(cancelled.cancel_message.as_deref(), Some("Feeling better"));
        let mut states: Vec<(String, String)> = store
            .appointment_jobs(first.id)
            .await
            .unwrap()
            .into_iter()
            .map(|(kind, state, _)| (kind, state))
            .collect();
        states.sort();
        let expected = [
            ("booked", "pending"),
            ("cancelled", "pending"),
            ("reminder_1h", "cancelled"),
            ("reminder_24h", "cancelled"),
        ];
        assert_eq!(
            states,
            expected.map(|(k, s)| (k.to_owned(), s.to_owned())),
            "{b:?}"
        );
        assert!(
            booked_units(&store, gp.user, day.0, day.1).await.is_empty(),
            "{b:?}"
        );
        let twice = cancel_at(&store, &cancel, None, 210, &[]).await;
        assert!(is_invalid(&twice), "{b:?}: {twice:?}");

        // The freed time can be booked again.
        let again = book(&store, &bob, north, &gp, nine(), 15).await.unwrap();

        // A move onto a taken time changes nothing, and the old time stays held.
        let ann_ten = book(&store, &ann, north, &gp, nine() + 60 * MINUTE, 15)
            .await
            .unwrap();
        let move_ann = on_appointment::<actions::RescheduleAppointment>(&store, &ann, ann_ten.id).await;
        // Inside the patient's cutoff, or onto a slot that does not offer its kind, nothing changes either.
        let cancel_ann = on_appointment::<actions::CancelAppointment>(&store, &ann, ann_ten.id).await;
        let past_cutoff = store
            .cancel_appointment(&cancel_ann, None, 250, Some(ann_ten.start_ms + 1), &[])
            .await;
        assert!(
            matches!(past_cutoff, Err(StoreError::Conflict(Conflict::PastCutoff))),
            "{b:?}: {past_cutoff:?}"
        );
        let later = |offers| NewTime {
            start_ms: nine() + 3 * 60 * MINUTE,
            end_ms: nine() + 3 * 60 * MINUTE + 15 * MINUTE,
            kind: None,
            offers,
        };
        let past_cutoff = store
            .reschedule_appointment(
                &move_ann,
                later(KindsOffered::Either),
                260,
                ann_ten.start_ms + 1,
                &[],
            )
            .await;
        assert!(
            matches!(past_cutoff, Err(StoreError::Conflict(Conflict::PastCutoff))),
            "{b:?}: {past_cutoff:?}"
        );
        let audio_only = store
            .reschedule_appointment(&move_ann, later(KindsOffered::Audio), 270, i64::MIN, &[])
            .await;
        assert!(is_invalid(&audio_only), "{b:?}: {audio_only:?}");
        let onto_bob = move_to(
            &store,
            &move_ann,
            nine() + 5 * MINUTE,
            nine() + 20 * MINUTE,
            300,
            &[],
        )
        .await;
        assert!(is_slot_taken(&onto_bob), "{b:?}: {onto_bob:?}");
        let read = on_appointment::<actions::ReadAppointment>(&store, &ann, ann_ten.id).await;
        let unchanged = store.appointment(&read).await.unwrap().unwrap();
        assert_eq!(unchanged, ann_ten, "{b:?}");
        let steal = book(&store, &cat, north, &gp, nine() + 60 * MINUTE, 15).await;
        assert!(is_slot_taken(&steal), "{b:?}: {steal:?}");
        let held: BTreeSet<i64> = units(nine(), nine() + 15 * MINUTE)
            .chain(units(nine() + 60 * MINUTE, nine() + 75 * MINUTE))
            .collect();
        let booked: BTreeSet<i64> = booked_units(&store, gp.user, day.0, day.1)
            .await
            .into_iter()
            .collect();
        assert_eq!(booked, held, "{b:?}");

        // A move onto a free time (overlapping its own old time) takes it and frees the old one.
        let moved = move_to(
            &store,
            &move_ann,
            nine() + 70 * MINUTE,
            nine() + 90 * MINUTE,
            400,
            &[job(JobKind::Rescheduled, 400)],
        )
        .await
        .unwrap();
        assert_eq!(
            (moved.start_ms, moved.end_ms, moved.sequence, moved.status),
            (
                nine() + 70 * MINUTE,
                nine() + 90 * MINUTE,
                1,
                AppointmentStatus::Booked
            )
        );
        assert!(is_slot_taken(
            &book(&store, &cat, north, &gp, nine() + 85 * MINUTE, 10).await
        ));
        let cat_ten = book(&store, &cat, north, &gp, nine() + 60 * MINUTE, 10)
            .await
            .unwrap();
        let held: BTreeSet<i64> = units(nine(), nine() + 15 * MINUTE)
            .chain(units(nine() + 60 * MINUTE, nine() + 90 * MINUTE))
            .collect();
        let booked: BTreeSet<i64> = booked_units(&store, gp.user, day.0, day.1)
            .await
            .into_iter()
            .collect();
        assert_eq!(booked, held, "{b:?}");
        let entries: Vec<_> = schedule(&store, &gp, gp.user, day.0, day.1)
            .await
            .into_iter()
            .map(|e| (e.start_ms, e.id, e.status))
            .collect();
        let mut expected = [
            (nine(), first.id, AppointmentStatus::Cancelled),
            (nine(), again.id, AppointmentStatus::Booked),
            (nine() + 60 * MINUTE, cat_ten.id, AppointmentStatus::Booked),
            (nine() + 70 * MINUTE, ann_ten.id, AppointmentStatus::Booked),
        ];
        expected.sort_by_key(|&(start, id, _)| (start, id));
        assert_eq!(entries, expected, "{b:?}");

        // A cancelled appointment cannot be moved.
        let move_first = on_appointment::<actions::RescheduleAppointment>(&store, &ann, first.id).await;
        let revived = move_to(
            &store,
            &move_first,
            nine() + 4 * 60 * MINUTE,
            nine() + 4 * 60 * MINUTE + 15 * MINUTE,
            500,
            &[],
        )
        .await;
        assert!(is_invalid(&revived), "{b:?}: {revived:?}");
        assert!(
            !booked_units(&store, gp.user, day.0, day.1)
                .await
                .contains(&(nine() + 4 * 60 * MINUTE))
        );
        store.close().await;
    }
}

#[tokio::test]
async fn status_moves_follow_the_state_machine() {
    use AppointmentStatus::*;
    for db in TestDatabase::all().await {
        let b = db.backend;
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let north = practice(&store, "North").await;
        let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
        let gp2 = user(&store, "gp2@x.org", Role::Clinician, Some(north)).await;
        let ann = patient(&store, "ann@x.org", north, &gp).await;
        let bob = patient(&store, "bob@x.org", north, &gp).await;

        let appt = book(&store, &ann, north, &gp, nine(), 15).await.unwrap();
        let run = on_appointment::<actions::RunConsultation>(&store, &gp, appt.id).await;
        let check_in = on_appointment::<actions::CheckIn>(&store, &ann, appt.id).await;
        assert!(
            is_invalid(&store.run_consultation(&run, Completed, 1_000).await),
            "{b:?}"
        );
        assert!(is_invalid(&start(&store, &run, 1_000).await), "{b:?}");
        let facts = store.appointment_ref(appt.id).await.unwrap().unwrap();
        assert!(authorize::<actions::RunConsultation>(&gp2, facts, &MFA).is_err());

        for (why, at) in [
            ("early", nine() - 11 * MINUTE),
            ("at the end", nine() + 15 * MINUTE),
        ] {
            let r = store.check_in(&check_in, at).await;
            assert!(
                matches!(r, Err(StoreError::Conflict(Conflict::CheckInNotOpen))),
                "{b:?} {why}: {r:?}"
            );
        }
        let arrived = store.check_in(&check_in, nine() - 10 * MINUTE).await.unwrap();
        assert_eq!(
            (arrived.status, arrived.checked_in_at_ms),
            (CheckedIn, Some(nine() - 10 * MINUTE))
        );
        assert_eq!(arrived.sequence, 0);
        let twice = store.check_in(&check_in, nine()).await;
        assert!(is_invalid(&twice), "{b:?}: {twice:?}");
        for refused in [CheckedIn, Cancelled, Booked] {
            let r = store.run_consultation(&run, refused, 3_000).await;
            assert!(is_invalid(&r), "{b:?} {refused}: {r:?}");
        }
        assert!(
            is_invalid(&store.run_consultation(&run, Completed, 3_000).await),
            "{b:?}"
        );

        let started = start(&store, &run, 4_000).await.unwrap();
        assert_eq!(
            (started.status, started.started_at_ms),
            (InConsultation, Some(4_000))
        );
        assert!(
            is_invalid(&store.run_consultation(&run, InConsultation, 4_100).await),
            "{b:?}: starting is start_consultation's alone, so that no call starts without its recording"
        );
        let list = authorize::<actions::ListRecordings>(
            &ann,
            store.patient_ref(ann.user).await.unwrap().unwrap(),
            &MFA,
        )
        .unwrap();
        let recordings = store.patient_recordings(&list).await.unwrap();
        assert_eq!(recordings.len(), 1, "{b:?}");
        let r = &recordings[0];
        assert_eq!(
            (r.patient, r.clinician, r.practice),
            (ann.user, gp.user, north),
            "{b:?}"
        );
        assert_eq!(r.segments.len(), 1, "{b:?}");
        assert_eq!(r.segments[0].index, 0);
        let bobs = authorize::<actions::ListRecordings>(
            &bob,
            store.patient_ref(bob.user).await.unwrap().unwrap(),
            &MFA,
        )
        .unwrap();
        assert!(store.patient_recordings(&bobs).await.unwrap().is_empty(), "{b:?}");
        let cancel = on_appointment::<actions::CancelAppointment>(&store, &ann, appt.id).await;
        assert!(
            is_invalid(&cancel_at(&store, &cancel, None, 4_500, &[]).await),
            "{b:?}"
        );
        assert!(
            is_invalid(&store.run_consultation(&run, NoShow, 4_600).await),
            "{b:?}"
        );
        let done = store.run_consultation(&run, Completed, 5_000).await.unwrap();
        assert_eq!(done.status, Completed);
        assert!(
            is_invalid(&store.run_consultation(&run, Completed, 5_500).await),
            "{b:?}"
        );
        assert!(
            is_invalid(&cancel_at(&store, &cancel, None, 5_600, &[]).await),
            "{b:?}"
        );
        let reschedule = on_appointment::<actions::RescheduleAppointment>(&store, &ann, appt.id).await;
        let moved = move_to(
            &store,
            &reschedule,
            nine() + 60 * MINUTE,
            nine() + 75 * MINUTE,
            5_700,
            &[],
        )
        .await;
        assert!(is_invalid(&moved), "{b:?}: {moved:?}");

        // A finished consultation keeps its time.
        assert!(
            is_slot_taken(&book(&store, &bob, north, &gp, nine(), 15).await),
            "{b:?}"
        );

        // A missed one too, and its reminders are dropped.
        let jobs = [
            job(JobKind::Booked, 100),
            job(JobKind::Reminder1h, nine() + 60 * MINUTE),
        ];
        let missed = store
            .book_appointment(
                &book_grant(&bob, north),
                new_appointment(gp.user, nine() + 2 * 60 * MINUTE, 15, &jobs),
            )
            .await
            .unwrap();
        let run_missed = on_appointment::<actions::RunConsultation>(&store, &gp, missed.id).await;
        let no_show = store.run_consultation(&run_missed, NoShow, 6_000).await.unwrap();
        assert_eq!(no_show.status, NoShow);
        let check_in_late = on_appointment::<actions::CheckIn>(&store, &bob, missed.id).await;
        assert!(
            is_invalid(&store.check_in(&check_in_late, nine() + 2 * 60 * MINUTE).await),
            "{b:?}"
        );
        let states: Vec<_> = store
            .appointment_jobs(missed.id)
            .await
            .unwrap()
            .into_iter()
            .map(|(kind, state, _)| format!("{kind}:{state}"))
            .collect();
        assert_eq!(states, ["booked:pending", "reminder_1h:cancelled"], "{b:?}");
        let again = book(&store, &ann, north, &gp, nine() + 2 * 60 * MINUTE, 15).await;
        assert!(is_slot_taken(&again), "{b:?}: {again:?}");

        // Checked in, then cancelled: the time is free again.
        let late = book(&store, &ann, north, &gp, nine() + 3 * 60 * MINUTE, 15)
            .await
            .unwrap();
        let check_in = on_appointment::<actions::CheckIn>(&store, &ann, late.id).await;
        store
            .check_in(&check_in, nine() + 3 * 60 * MINUTE + 14 * MINUTE)
            .await
            .unwrap();
        let cancel = on_appointment::<actions::CancelAppointment>(&store, &gp, late.id).await;
        let gone = cancel_at(&store, &cancel, None, 7_100, &[]).await.unwrap();
        assert_eq!((gone.status, gone.sequence), (Cancelled, 1));
        book(&store, &bob, north, &gp, nine() + 3 * 60 * MINUTE, 15)
            .await
            .unwrap();
        store.close().await;
    }
}

#[tokio::test]
async fn booking_needs_a_clinician_of_that_practice() {
    for db in TestDatabase::all().await {
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let (north, south) = (practice(&store, "North").await, practice(&store, "South").await);
        let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
        let south_gp = user(&store, "s@x.org", Role::Clinician, Some(south)).await;
        let admin = user(&store, "admin@x.org", Role::PracticeAdmin, Some(north)).await;
        let ann = patient(&store, "ann@x.org", north, &gp).await;
        let bob = user(&store, "bob@x.org", Role::Patient, None).await;

        for (who, not_bookable) in [
            ("another practice's clinician", &south_gp),
            ("an admin", &admin),
            ("a patient", &bob),
        ] {
            let r = book(&store, &ann, north, not_bookable, nine(), 15).await;
            assert!(
                matches!(r, Err(StoreError::Conflict(Conflict::NotBookable))),
                "{:?} {who}: {r:?}",
                db.backend
            );
        }
        let nobody = store
            .book_appointment(
                &book_grant(&ann, north),
                new_appointment(UserId::from_uuid(Uuid::new_v4()), nine(), 15, &[]),
            )
            .await;
        assert!(matches!(nobody, Err(StoreError::Conflict(Conflict::NotBookable))));
        // Not registered at South, the gate refuses before the store is asked.
        let at_south = PatientAtPractice {
            patient: store.patient_ref(ann.user).await.unwrap().unwrap(),
            practice: south,
        };
        assert!(authorize::<actions::BookAppointment>(&ann, at_south, &MFA).is_err());
        assert!(
            booked_units(&store, south_gp.user, nine() - MINUTE * 60, nine() + MINUTE * 60)
                .await
                .is_empty()
        );
        book(&store, &ann, north, &gp, nine(), 15).await.unwrap();
        store.close().await;
    }
}

fn rule(weekday: i64, start: &str, end: &str, from: &str, until: Option<&str>) -> AvailabilityRule {
    AvailabilityRule::new(
        weekday_from_number(weekday).unwrap(),
        start.parse().unwrap(),
        end.parse().unwrap(),
        SlotLength::try_from(15).unwrap(),
        KindsOffered::Either,
        from.parse().unwrap(),
        until.map(|u| u.parse().unwrap()),
    )
    .unwrap()
}

fn new_id() -> AvailabilityId {
    AvailabilityId::from_uuid(Uuid::new_v4())
}

#[tokio::test]
async fn availability_rules_refuse_overlaps() {
    for db in TestDatabase::all().await {
        let b = db.backend;
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let (north, south) = (practice(&store, "North").await, practice(&store, "South").await);
        let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
        let gp2 = user(&store, "gp2@x.org", Role::Clinician, Some(north)).await;
        let admin = user(&store, "admin@x.org", Role::PracticeAdmin, Some(north)).await;
        let south_admin = user(&store, "sa@x.org", Role::PracticeAdmin, Some(south)).await;
        let gp_facts = store.clinician_ref(gp.user).await.unwrap().unwrap();
        let gp2_facts = store.clinician_ref(gp2.user).await.unwrap().unwrap();
        let own = authorize::<actions::ManageAvailability>(&gp, gp_facts, &MFA).unwrap();
        let by_admin = authorize::<actions::ManageAvailability>(&admin, gp_facts, &MFA).unwrap();
        let colleague = authorize::<actions::ManageAvailability>(&gp2, gp2_facts, &MFA).unwrap();
        assert!(authorize::<actions::ManageAvailability>(&gp2, gp_facts, &MFA).is_err());
        assert!(authorize::<actions::ManageAvailability>(&south_admin, gp_facts, &MFA).is_err());

        let morning = store
            .add_availability_rule(&own, new_id(), &rule(1, "09:00", "12:00", "2030-01-01", None), 1)
            .await
            .unwrap();
        for (why, overlapping) in [
            ("late morning", rule(1, "11:00", "13:00", "2030-01-01", None)),
            ("inside", rule(1, "10:00", "10:30", "2030-01-01", None)),
            (
                "around",
                rule(1, "08:00", "13:00", "2030-06-01", Some("2030-07-01")),
            ),
            (
                "earlier start",
                rule(1, "08:00", "09:15", "2029-01-01", Some("2030-01-01")),
            ),
        ] {
            let r = store
                .add_availability_rule(&by_admin, new_id(), &overlapping, 2)
                .await;
            assert!(is_invalid(&r), "{b:?} {why}: {r:?}");
        }
        let afternoon = store
            .add_availability_rule(
                &by_admin,
                new_id(),
                &rule(1, "12:00", "13:00", "2030-01-01", None),
                3,
            )
            .await
            .unwrap();
        let tuesday = store
            .add_availability_rule(&own, new_id(), &rule(2, "09:00", "12:00", "2030-01-01", None), 4)
            .await
            .unwrap();
        let last_year = store
            .add_availability_rule(
                &own,
                new_id(),
                &rule(1, "09:00", "12:00", "2029-01-01", Some("2029-12-31")),
                5,
            )
            .await
            .unwrap();
        // Another clinician's hours are their own.
        let theirs = store
            .add_availability_rule(
                &colleague,
                new_id(),
                &rule(1, "09:00", "12:00", "2030-01-01", None),
                6,
            )
            .await
            .unwrap();

        let (rules, exceptions) = store.availability(gp.user).await.unwrap();
        let mut expected = vec![
            morning.clone(),
            last_year.clone(),
            afternoon.clone(),
            tuesday.clone(),
        ];
        expected.sort_by_key(|r| (r.rule.weekday_number(), r.rule.start, r.id));
        assert_eq!(rules, expected, "{b:?}");
        assert!(exceptions.is_empty());
        assert_eq!(
            store.availability(gp2.user).await.unwrap().0,
            std::slice::from_ref(&theirs)
        );

        assert!(
            !store
                .remove_availability_rule(&colleague, morning.id)
                .await
                .unwrap()
        );
        assert!(!store.remove_availability_rule(&own, theirs.id).await.unwrap());
        assert!(store.remove_availability_rule(&own, morning.id).await.unwrap());
        assert!(!store.remove_availability_rule(&own, morning.id).await.unwrap());
        assert!(
            store
                .remove_availability_rule(&by_admin, last_year.id)
                .await
                .unwrap()
        );
        let rules = store.availability(gp.user).await.unwrap().0;
        assert_eq!(rules, [afternoon.clone(), tuesday.clone()], "{b:?}");
        // The removed morning can be added again.
        store
            .add_availability_rule(&own, new_id(), &rule(1, "10:00", "12:00", "2030-01-01", None), 7)
            .await
            .unwrap();

        let blocked = AvailabilityException::new(
            "2030-01-07".parse().unwrap(),
            MinuteOfDay::new(13 * 60).unwrap(),
            MinuteOfDay::new(14 * 60).unwrap(),
            ExceptionKind::Blocked,
        )
        .unwrap();
        let extra = AvailabilityException::new(
            "2030-01-12".parse().unwrap(),
            "17:00".parse().unwrap(),
            "18:00".parse().unwrap(),
            ExceptionKind::Extra {
                slot: SlotLength::try_from(20).unwrap(),
                kinds: KindsOffered::Video,
            },
        )
        .unwrap();
        let leave = store
            .add_availability_exception(&own, new_id(), &blocked, "Training", 8)
            .await
            .unwrap();
        let saturday = store
            .add_availability_exception(&by_admin, new_id(), &extra, "Flu clinic", 9)
            .await
            .unwrap();
        assert_eq!(leave.clinician, gp.user);
        let exceptions = store.availability(gp.user).await.unwrap().1;
        assert_eq!(exceptions, [leave.clone(), saturday.clone()], "{b:?}");
        assert!(store.availability(gp2.user).await.unwrap().1.is_empty());
        assert!(
            !store
                .remove_availability_exception(&colleague, leave.id)
                .await
                .unwrap()
        );
        assert!(store.remove_availability_exception(&own, leave.id).await.unwrap());
        assert!(!store.remove_availability_exception(&own, leave.id).await.unwrap());
        assert_eq!(
            store.availability(gp.user).await.unwrap().1,
            std::slice::from_ref(&saturday)
        );
        assert!(
            store
                .remove_availability_exception(&by_admin, saturday.id)
                .await
                .unwrap()
        );
        assert!(store.availability(gp.user).await.unwrap().1.is_empty());
        store.close().await;
    }
}

// The property: whatever sequence of bookings, cancellations, moves and availability edits runs,
// sequentially or two at a time, the database holds no two overlapping live appointments for one
// clinician, the claimed units are exactly those of the live appointments, and the outcome is one
// that running the operations one after the other could have produced.

const CLINICIANS: usize = 2;
const PATIENTS: usize = 3;
const LENGTHS: [i64; 4] = [10, 15, 20, 30];

#[derive(Clone, Debug)]
enum Op {
    Book {
        patient: usize,
        clinician: usize,
        start: i64,
        length: usize,
    },
    Cancel {
        pick: usize,
        by_clinician: bool,
    },
    Reschedule {
        pick: usize,
        start: i64,
        length: usize,
    },
    /// At some minutes from the appointment's start as the step begins.
    CheckIn {
        pick: usize,
        minutes: i64,
    },
    AddRule {
        clinician: usize,
        weekday: i64,
        start: i64,
        halves: i64,
    },
    RemoveRule {
        pick: usize,
        by: usize,
    },
}

#[derive(Clone, Debug)]
enum Step {
    One(Op),
    Two(Op, Op),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PATIENTS, 0..CLINICIANS, 0..12i64, 0..LENGTHS.len()).prop_map(|(patient, clinician, start, length)| {
            Op::Book { patient, clinician, start, length }
        }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, by_clinician)| Op::Cancel { pick, by_clinician }),
        3 => (any::<usize>(), 0..12i64, 0..LENGTHS.len()).prop_map(|(pick, start, length)| Op::Reschedule {
            pick,
            start,
            length
        }),
        1 => (any::<usize>(), prop::sample::select(vec![-15i64, -10, -5, 0, 10, 25, 30])).prop_map(|(pick, minutes)| Op::CheckIn { pick, minutes }),
        1 => (0..CLINICIANS, 1..=2i64, 0..8i64, 1..=3i64).prop_map(|(clinician, weekday, start, halves)| {
            Op::AddRule { clinician, weekday, start, halves }
        }),
        1 => (any::<usize>(), 0..CLINICIANS).prop_map(|(pick, by)| Op::RemoveRule { pick, by }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => op().prop_map(Step::One),
        1 => (op(), op()).prop_map(|(a, b)| Step::Two(a, b)),
    ]
}

/// An operation with its targets chosen: what both the store and the model run.
#[derive(Clone, Debug)]
enum Planned {
    Book {
        id: AppointmentId,
        patient: usize,
        clinician: usize,
        start_ms: i64,
        end_ms: i64,
    },
    Cancel {
        id: AppointmentId,
        by_clinician: bool,
    },
    Reschedule {
        id: AppointmentId,
        start_ms: i64,
        end_ms: i64,
    },
    CheckIn {
        id: AppointmentId,
        at_ms: i64,
    },
    AddRule {
        id: AvailabilityId,
        clinician: usize,
        weekday: i64,
        start: i64,
        end: i64,
    },
    RemoveRule {
        id: AvailabilityId,
        by: usize,
    },
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ModelAppointment {
    id: AppointmentId,
    clinician: usize,
    patient: usize,
    start_ms: i64,
    end_ms: i64,
    status: &'static str,
    sequence: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ModelRule {
    id: AvailabilityId,
    clinician: usize,
    weekday: i64,
    start: i64,
    end: i64,
}

#[derive(Clone, Debug, Default)]
struct Model {
    appointments: Vec<ModelAppointment>,
    /// Every rule ever added, with whether it is still there.
    rules: Vec<(ModelRule, bool)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    SlotTaken,
    Invalid,
    CheckInNotOpen,
    /// PostgreSQL chose this transaction as a deadlock's victim and rolled it back.
    Deadlock,
    Removed(bool),
    Skipped,
    Failed(String),
}

/// What the database holds, in the model's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    appointments: Vec<ModelAppointment>,
    rules: Vec<ModelRule>,
}

fn status_name(s: AppointmentStatus) -> &'static str {
    s.as_str()
}

fn holds(status: &str) -> bool {
    status != AppointmentStatus::Cancelled.as_str()
}

impl Model {
    fn pick(&self, pick: usize) -> Option<&ModelAppointment> {
        (!self.appointments.is_empty()).then(|| &self.appointments[pick % self.appointments.len()])
    }

    fn plan(&self, op: &Op) -> Planned {
        let time = |start: i64, length: usize| {
            let start_ms = nine() + start * 5 * MINUTE;
            (start_ms, start_ms + LENGTHS[length] * MINUTE)
        };
        match *op {
            Op::Book {
                patient,
                clinician,
                start,
                length,
            } => {
                let (start_ms, end_ms) = time(start, length);
                Planned::Book {
                    id: AppointmentId::from_uuid(Uuid::new_v4()),
                    patient,
                    clinician,
                    start_ms,
                    end_ms,
                }
            }
            Op::Cancel { pick, by_clinician } => {
                self.pick(pick).map_or(Planned::Nothing, |a| Planned::Cancel {
                    id: a.id,
                    by_clinician,
                })
            }
            Op::Reschedule { pick, start, length } => self.pick(pick).map_or(Planned::Nothing, |a| {
                let (start_ms, end_ms) = time(start, length);
                Planned::Reschedule {
                    id: a.id,
                    start_ms,
                    end_ms,
                }
            }),
            Op::CheckIn { pick, minutes } => self.pick(pick).map_or(Planned::Nothing, |a| Planned::CheckIn {
                id: a.id,
                at_ms: a.start_ms + minutes * MINUTE,
            }),
            Op::AddRule {
                clinician,
                weekday,
                start,
                halves,
            } => {
                let start = 9 * 60 + 30 * start;
                Planned::AddRule {
                    id: new_id(),
                    clinician,
                    weekday,
                    start,
                    end: start + 30 * halves,
                }
            }
            Op::RemoveRule { pick, by } => {
                if self.rules.is_empty() {
                    Planned::Nothing
                } else {
                    Planned::RemoveRule {
                        id: self.rules[pick % self.rules.len()].0.id,
                        by,
                    }
                }
            }
        }
    }

    fn clashes(&self, clinician: usize, start_ms: i64, end_ms: i64, except: Option<AppointmentId>) -> bool {
        self.appointments.iter().any(|a| {
            a.clinician == clinician
                && Some(a.id) != except
                && holds(a.status)
                && a.start_ms < end_ms
                && start_ms < a.end_ms
        })
    }

    fn apply(&mut self, p: &Planned) -> Outcome {
        use AppointmentStatus::*;
        let booked = Booked.as_str();
        match *p {
            Planned::Book {
                id,
                patient,
                clinician,
                start_ms,
                end_ms,
            } => {
                if self.clashes(clinician, start_ms, end_ms, None) {
                    return Outcome::SlotTaken;
                }
                self.appointments.push(ModelAppointment {
                    id,
                    clinician,
                    patient,
                    start_ms,
                    end_ms,
                    status: booked,
                    sequence: 0,
                });
                Outcome::Done
            }
            Planned::Cancel { id, .. } => {
                let a = self.appointments.iter_mut().find(|a| a.id == id).unwrap();
                if a.status != booked && a.status != CheckedIn.as_str() {
                    return Outcome::Invalid;
                }
                a.status = Cancelled.as_str();
                a.sequence += 1;
                Outcome::Done
            }
            Planned::Reschedule { id, start_ms, end_ms } => {
                let a = self.appointments.iter().find(|a| a.id == id).unwrap();
                if a.status != booked {
                    return Outcome::Invalid;
                }
                if self.clashes(a.clinician, start_ms, end_ms, Some(id)) {
                    return Outcome::SlotTaken;
                }
                let a = self.appointments.iter_mut().find(|a| a.id == id).unwrap();
                (a.start_ms, a.end_ms) = (start_ms, end_ms);
                a.sequence += 1;
                Outcome::Done
            }
            Planned::CheckIn { id, at_ms } => {
                let a = self.appointments.iter_mut().find(|a| a.id == id).unwrap();
                if a.status != booked {
                    return Outcome::Invalid;
                }
                if at_ms < a.start_ms - 10 * MINUTE || a.end_ms <= at_ms {
                    return Outcome::CheckInNotOpen;
                }
                a.status = CheckedIn.as_str();
                Outcome::Done
            }
            Planned::AddRule {
                id,
                clinician,
                weekday,
                start,
                end,
            } => {
                let overlaps = self.rules.iter().any(|(r, live)| {
                    *live
                        && r.clinician == clinician
                        && r.weekday == weekday
                        && r.start < end
                        && start < r.end
                });
                if overlaps {
                    return Outcome::Invalid;
                }
                self.rules.push((
                    ModelRule {
                        id,
                        clinician,
                        weekday,
                        start,
                        end,
                    },
                    true,
                ));
                Outcome::Done
            }
            Planned::RemoveRule { id, by } => {
                let (r, live) = self.rules.iter_mut().find(|(r, _)| r.id == id).unwrap();
                let removed = *live && r.clinician == by;
                if removed {
                    *live = false;
                }
                Outcome::Removed(removed)
            }
            Planned::Nothing => Outcome::Skipped,
        }
    }

    fn state(&self) -> State {
        let mut appointments = self.appointments.clone();
        appointments.sort();
        let mut rules: Vec<ModelRule> = self
            .rules
            .iter()
            .filter(|(_, live)| *live)
            .map(|(r, _)| r.clone())
            .collect();
        rules.sort();
        State { appointments, rules }
    }
}

struct World {
    store: Store,
    practice: PracticeId,
    clinicians: Vec<Principal>,
    patients: Vec<Principal>,
}

fn outcome(r: Result<Appointment, StoreError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Done,
        Err(StoreError::Conflict(Conflict::SlotTaken)) => Outcome::SlotTaken,
        Err(StoreError::Conflict(Conflict::CheckInNotOpen)) => Outcome::CheckInNotOpen,
        Err(StoreError::Invalid(_)) => Outcome::Invalid,
        Err(StoreError::Database(sqlx::Error::Database(e))) if e.code().as_deref() == Some("40P01") => {
            Outcome::Deadlock
        }
        Err(e) => Outcome::Failed(format!("{e:?}")),
    }
}

/// The window every planned appointment starts in, with room either side.
fn window() -> (i64, i64) {
    (nine() - 60 * MINUTE, nine() + 3 * 60 * MINUTE)
}

impl World {
    async fn new(store: Store) -> World {
        let practice = practice(&store, "North").await;
        let mut clinicians = Vec::new();
        for n in 0..CLINICIANS {
            clinicians.push(user(&store, &format!("gp{n}@x.org"), Role::Clinician, Some(practice)).await);
        }
        let mut patients = Vec::new();
        for n in 0..PATIENTS {
            patients.push(patient(&store, &format!("p{n}@x.org"), practice, &clinicians[0]).await);
        }
        World {
            store,
            practice,
            clinicians,
            patients,
        }
    }

    fn patient_of(&self, facts: &AppointmentRef) -> &Principal {
        self.patients
            .iter()
            .find(|p| p.user == facts.patient.patient)
            .unwrap()
    }

    fn clinician_of(&self, facts: &AppointmentRef) -> &Principal {
        self.clinicians
            .iter()
            .find(|c| c.user == facts.clinician)
            .unwrap()
    }

    async fn run(&self, p: &Planned) -> Outcome {
        let store = &self.store;
        let facts = |id| async move { store.appointment_ref(id).await.unwrap().unwrap() };
        let reminders = |start_ms: i64| {
            [
                job(JobKind::Rescheduled, 100),
                job(JobKind::Reminder1h, start_ms - 60 * MINUTE),
            ]
        };
        match *p {
            Planned::Book {
                id,
                patient,
                clinician,
                start_ms,
                end_ms,
            } => {
                let jobs = [
                    job(JobKind::Booked, 100),
                    job(JobKind::Reminder1h, start_ms - 60 * MINUTE),
                ];
                let new = NewAppointment {
                    id,
                    clinician: self.clinicians[clinician].user,
                    start_ms,
                    end_ms,
                    kind: ConsultationKind::Audio,
                    reason: "Review",
                    at_ms: 100,
                    jobs: &jobs,
                };
                outcome(
                    store
                        .book_appointment(&book_grant(&self.patients[patient], self.practice), new)
                        .await,
                )
            }
            Planned::Cancel { id, by_clinician } => {
                let facts = facts(id).await;
                let who = if by_clinician {
                    self.clinician_of(&facts)
                } else {
                    self.patient_of(&facts)
                };
                let grant = authorize::<actions::CancelAppointment>(who, facts, &MFA).unwrap();
                outcome(cancel_at(store, &grant, None, 200, &[job(JobKind::Cancelled, 200)]).await)
            }
            Planned::Reschedule { id, start_ms, end_ms } => {
                let facts = facts(id).await;
                let grant = authorize::<actions::RescheduleAppointment>(self.patient_of(&facts), facts, &MFA)
                    .unwrap();
                outcome(move_to(store, &grant, start_ms, end_ms, 300, &reminders(start_ms)).await)
            }
            Planned::CheckIn { id, at_ms } => {
                let facts = facts(id).await;
                let grant = authorize::<actions::CheckIn>(self.patient_of(&facts), facts, &MFA).unwrap();
                outcome(store.check_in(&grant, at_ms).await)
            }
            Planned::AddRule {
                id,
                clinician,
                weekday,
                start,
                end,
            } => {
                let who = &self.clinicians[clinician];
                let facts = store.clinician_ref(who.user).await.unwrap().unwrap();
                let grant = authorize::<actions::ManageAvailability>(who, facts, &MFA).unwrap();
                let rule = AvailabilityRule::new(
                    weekday_from_number(weekday).unwrap(),
                    MinuteOfDay::new(start).unwrap(),
                    MinuteOfDay::new(end).unwrap(),
                    SlotLength::try_from(15).unwrap(),
                    KindsOffered::Either,
                    "2030-01-01".parse().unwrap(),
                    None,
                )
                .unwrap();
                match store.add_availability_rule(&grant, id, &rule, 500).await {
                    Ok(_) => Outcome::Done,
                    Err(StoreError::Invalid(_)) => Outcome::Invalid,
                    Err(e) => Outcome::Failed(format!("{e:?}")),
                }
            }
            Planned::RemoveRule { id, by } => {
                let who = &self.clinicians[by];
                let facts = store.clinician_ref(who.user).await.unwrap().unwrap();
                let grant = authorize::<actions::ManageAvailability>(who, facts, &MFA).unwrap();
                match store.remove_availability_rule(&grant, id).await {
                    Ok(removed) => Outcome::Removed(removed),
                    Err(e) => Outcome::Failed(format!("{e:?}")),
                }
            }
            Planned::Nothing => Outcome::Skipped,
        }
    }

    /// Reads everything back, checking on the way what must hold whatever the model says: no two live
    /// appointments of a clinician overlap, and the claimed units are exactly theirs.
    async fn observe(&self) -> State {
        let store = &self.store;
        let backend = store.backend();
        let (from, until) = window();
        let mut appointments = Vec::new();
        for (n, p) in self.patients.iter().enumerate() {
            let facts = PatientRef {
                patient: p.user,
                registered_at: Some(self.practice),
            };
            let grant = authorize::<actions::ListAppointments>(p, facts, &MFA).unwrap();
            for a in store.patient_appointments(&grant).await.unwrap() {
                appointments.push(ModelAppointment {
                    id: a.id,
                    clinician: self
                        .clinicians
                        .iter()
                        .position(|c| c.user == a.clinician)
                        .unwrap(),
                    patient: n,
                    start_ms: a.start_ms,
                    end_ms: a.end_ms,
                    status: status_name(a.status),
                    sequence: a.sequence,
                });
            }
        }
        appointments.sort();
        let mut rules = Vec::new();
        for (n, c) in self.clinicians.iter().enumerate() {
            let entries = schedule(store, &self.clinicians[0], c.user, from, until).await;
            let live: Vec<&ScheduleEntry> = entries.iter().filter(|e| e.status.holds_time()).collect();
            for (i, x) in live.iter().enumerate() {
                for y in &live[i + 1..] {
                    assert!(
                        x.end_ms <= y.start_ms || y.end_ms <= x.start_ms,
                        "{backend:?} clinician {n} holds overlapping appointments: {x:?} and {y:?}"
                    );
                }
            }
            let mut expected: Vec<i64> = live.iter().flat_map(|e| units(e.start_ms, e.end_ms)).collect();
            expected.sort();
            assert_eq!(
                booked_units(store, c.user, from, until).await,
                expected,
                "{backend:?} clinician {n}: claimed units are not those of the live appointments {entries:?}"
            );
            let mut seen: Vec<_> = entries
                .iter()
                .map(|e| (e.id, e.start_ms, e.end_ms, status_name(e.status)))
                .collect();
            seen.sort();
            let listed: Vec<_> = appointments
                .iter()
                .filter(|a| a.clinician == n)
                .map(|a| (a.id, a.start_ms, a.end_ms, a.status))
                .collect();
            assert_eq!(
                seen, listed,
                "{backend:?} clinician {n}: the schedule and the patients' lists disagree"
            );

            for r in store.availability(c.user).await.unwrap().0 {
                rules.push(ModelRule {
                    id: r.id,
                    clinician: n,
                    weekday: r.rule.weekday_number(),
                    start: r.rule.start.minutes(),
                    end: r.rule.end.minutes(),
                });
            }
        }
        rules.sort();
        State { appointments, rules }
    }

    /// A time that no longer holds has no reminder waiting; one that holds has exactly its latest.
    async fn check_reminders(&self, model: &Model) {
        for a in &model.appointments {
            let jobs = self.store.appointment_jobs(a.id).await.unwrap();
            let pending: Vec<i64> = jobs
                .iter()
                .filter(|(kind, state, _)| kind == "reminder_1h" && state == "pending")
                .map(|(_, _, at)| *at)
                .collect();
            if a.status == AppointmentStatus::Cancelled.as_str() {
                assert!(pending.is_empty(), "{a:?}: {jobs:?}");
            } else {
                assert_eq!(pending, [a.start_ms - 60 * MINUTE], "{a:?}: {jobs:?}");
            }
        }
    }
}

/// Runs the steps and checks the store against the model; returns how many deadlocks PostgreSQL broke.
async fn run_steps(url: &str, steps: &[Step]) -> usize {
    let store = Store::open(url, StoreRole::App).await.unwrap();
    let backend = store.backend();
    let world = World::new(store).await;
    let mut model = Model::default();
    let mut deadlocks = 0;
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::One(op) => {
                let planned = model.plan(op);
                let expected = model.apply(&planned);
                let got = world.run(&planned).await;
                assert_eq!(got, expected, "{backend:?} step {n}: {planned:?}");
                assert_eq!(
                    world.observe().await,
                    model.state(),
                    "{backend:?} step {n}: {planned:?}"
                );
            }
            Step::Two(a, b) => {
                let (a, b) = (model.plan(a), model.plan(b));
                let (got_a, got_b) = tokio::join!(world.run(&a), world.run(&b));
                let state = world.observe().await;
                // A deadlock's victim is rolled back whole: then the other one ran as if alone.
                let alone = match (&got_a, &got_b) {
                    (Outcome::Deadlock, _) => Some((&b, &got_b)),
                    (_, Outcome::Deadlock) => Some((&a, &got_a)),
                    _ => None,
                };
                if let Some((survivor, got)) = alone {
                    let mut m = model.clone();
                    let expected = m.apply(survivor);
                    assert_eq!(
                        (got, &state),
                        (&expected, &m.state()),
                        "{backend:?} step {n}: {a:?} and {b:?} at once gave {got_a:?} and {got_b:?}"
                    );
                    deadlocks += 1;
                    model = m;
                    continue;
                }
                let serial =
                    [(&a, &b, false), (&b, &a, true)]
                        .into_iter()
                        .find_map(|(first, second, swapped)| {
                            let mut m = model.clone();
                            let (o1, o2) = (m.apply(first), m.apply(second));
                            let outcomes = if swapped { (o2, o1) } else { (o1, o2) };
                            (outcomes == (got_a.clone(), got_b.clone()) && m.state() == state).then_some(m)
                        });
                let Some(serial) = serial else {
                    panic!(
                        "{backend:?} step {n}: {a:?} and {b:?} at once gave {got_a:?} and {got_b:?}, leaving {state:#?}, \
                         which neither order gives from {:#?}",
                        model.state()
                    );
                };
                model = serial;
            }
        }
    }
    world.check_reminders(&model).await;
    world.store.close().await;
    deadlocks
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_schedules_never_double_book(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            for db in TestDatabase::all().await {
                let deadlocks = run_steps(&db.url, &steps).await;
                if deadlocks > 0 {
                    eprintln!("{:?}: {deadlocks} deadlock(s) between concurrent changes", db.backend);
                }
            }
        });
    }
}

// Races that the property found on PostgreSQL, made deterministic: another connection holds the lock on
// the appointment's pending reminder, so the first change stops inside its transaction (at
// `cancel_reminders`, after it has released the appointment's units) while the second one reads the
// appointment and then waits on those units.

/// Holds a lock on one appointment's pending 1-hour reminder until `COMMIT` on the connection returned.
async fn hold_reminder(url: &str, appointment: AppointmentId) -> sqlx::PgConnection {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    let held =
        sqlx::query("SELECT id FROM jobs WHERE appointment_id = $1 AND kind = 'reminder_1h' FOR UPDATE")
            .bind(appointment.to_string())
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(held.len(), 1);
    conn
}

/// Waits until `n` sessions of the database wait on a lock.
async fn waiting_on_locks(url: &str, n: i64) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{n} sessions never waited on a lock");
}

#[tokio::test]
async fn on_postgres_a_move_racing_a_cancellation_leaves_no_time_held() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    let north = practice(&store, "North").await;
    let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
    let ann = patient(&store, "ann@x.org", north, &gp).await;
    let jobs = [job(JobKind::Reminder1h, nine() - 60 * MINUTE)];
    let appt = store
        .book_appointment(
            &book_grant(&ann, north),
            new_appointment(gp.user, nine(), 15, &jobs),
        )
        .await
        .unwrap();
    let cancel = on_appointment::<actions::CancelAppointment>(&store, &ann, appt.id).await;
    let move_it = on_appointment::<actions::RescheduleAppointment>(&store, &ann, appt.id).await;

    let mut held = hold_reminder(&db.url, appt.id).await;
    let cancelling = {
        let store = store.clone();
        tokio::spawn(async move { cancel_at(&store, &cancel, None, 200, &[]).await })
    };
    waiting_on_locks(&db.url, 1).await;
    let moving = {
        let store = store.clone();
        tokio::spawn(async move {
            move_to(
                &store,
                &move_it,
                nine() + 2 * 60 * MINUTE,
                nine() + 2 * 60 * MINUTE + 15 * MINUTE,
                300,
                &[],
            )
            .await
        })
    };
    waiting_on_locks(&db.url, 2).await;
    sqlx::Executor::execute(&mut held, "COMMIT").await.unwrap();
    let (cancelled, moved) = (cancelling.await.unwrap(), moving.await.unwrap());

    assert_eq!(cancelled.unwrap().status, AppointmentStatus::Cancelled);
    let read = on_appointment::<actions::ReadAppointment>(&store, &ann, appt.id).await;
    let now = store.appointment(&read).await.unwrap().unwrap();
    assert_eq!(now.status, AppointmentStatus::Cancelled);
    let booked = booked_units(&store, gp.user, nine() - 60 * MINUTE, nine() + 4 * 60 * MINUTE).await;
    assert!(
        booked.is_empty() && is_invalid(&moved),
        "the move gave {moved:?}; the cancelled appointment holds {booked:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn on_postgres_two_moves_at_once_leave_one_time_held() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    let north = practice(&store, "North").await;
    let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
    let ann = patient(&store, "ann@x.org", north, &gp).await;
    let jobs = [job(JobKind::Reminder1h, nine() - 60 * MINUTE)];
    let appt = store
        .book_appointment(
            &book_grant(&ann, north),
            new_appointment(gp.user, nine(), 15, &jobs),
        )
        .await
        .unwrap();

    let mut held = hold_reminder(&db.url, appt.id).await;
    let mut moves = Vec::new();
    for hours in [1, 2] {
        let grant = on_appointment::<actions::RescheduleAppointment>(&store, &ann, appt.id).await;
        let store = store.clone();
        let start = nine() + hours * 60 * MINUTE;
        moves.push(tokio::spawn(async move {
            move_to(&store, &grant, start, start + 15 * MINUTE, 300, &[]).await
        }));
        waiting_on_locks(&db.url, hours).await;
    }
    sqlx::Executor::execute(&mut held, "COMMIT").await.unwrap();
    let mut results = Vec::new();
    for m in moves {
        results.push(m.await.unwrap());
    }

    let read = on_appointment::<actions::ReadAppointment>(&store, &ann, appt.id).await;
    let now = store.appointment(&read).await.unwrap().unwrap();
    let booked = booked_units(&store, gp.user, nine() - 60 * MINUTE, nine() + 4 * 60 * MINUTE).await;
    assert_eq!(
        booked,
        units(now.start_ms, now.end_ms).collect::<Vec<_>>(),
        "moves gave {results:?}; the appointment is at {}..{}",
        now.start_ms,
        now.end_ms
    );
    store.close().await;
}

#[tokio::test]
async fn on_postgres_a_booking_racing_a_move_is_refused_as_taken() {
    use sqlx::{Connection, Executor};
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    let north = practice(&store, "North").await;
    let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
    let ann = patient(&store, "ann@x.org", north, &gp).await;
    let bob = patient(&store, "bob@x.org", north, &gp).await;
    let cat = patient(&store, "cat@x.org", north, &gp).await;
    let moving = book(&store, &ann, north, &gp, nine() + 20 * MINUTE, 10)
        .await
        .unwrap();
    let elsewhere = book(&store, &bob, north, &gp, nine() + 2 * 60 * MINUTE, 10)
        .await
        .unwrap();
    let move_it = on_appointment::<actions::RescheduleAppointment>(&store, &ann, moving.id).await;

    // Another connection claims 09:15 without committing, so the booking stops there holding 09:00–09:15.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    sqlx::query(
        "INSERT INTO appointment_units (clinician_id, unit_start, appointment_id) VALUES ($1, $2, $3)",
    )
    .bind(gp.user.to_string())
    .bind(nine() + 15 * MINUTE)
    .bind(elsewhere.id.to_string())
    .execute(&mut other)
    .await
    .unwrap();
    let booking = {
        let (store, grant) = (store.clone(), book_grant(&cat, north));
        let clinician = gp.user;
        tokio::spawn(async move {
            store
                .book_appointment(&grant, new_appointment(clinician, nine(), 30, &[]))
                .await
        })
    };
    waiting_on_locks(&db.url, 1).await;
    // The move releases 09:20–09:30 and waits for the booking's 09:00.
    let moved = {
        let store = store.clone();
        tokio::spawn(async move { move_to(&store, &move_it, nine(), nine() + 10 * MINUTE, 300, &[]).await })
    };
    waiting_on_locks(&db.url, 2).await;
    other.execute("ROLLBACK").await.unwrap();
    let (booked, moved) = (booking.await.unwrap(), moved.await.unwrap());
    let database_error = |r: &Result<Appointment, StoreError>| matches!(r, Err(StoreError::Database(_)));
    assert!(
        !database_error(&booked) && !database_error(&moved),
        "booking gave {booked:?}; move gave {moved:?}"
    );
    store.close().await;
}

/// A running consultation's calls: the gate's facts come from the consultation's own row, the data key
/// is set once whoever comes first, segments are numbered by the store one after another and only while
/// the consultation runs, and nobody else's grant reaches any of it.
#[tokio::test]
async fn a_running_call_keeps_one_key_and_numbers_its_segments() {
    use confide_domain::consultation::SegmentReason;
    for db in TestDatabase::all().await {
        let b = db.backend;
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let north = practice(&store, "North").await;
        let gp = user(&store, "gp@x.org", Role::Clinician, Some(north)).await;
        let ann = patient(&store, "ann@x.org", north, &gp).await;
        let bob = patient(&store, "bob@x.org", north, &gp).await;
        let appt = book(&store, &ann, north, &gp, nine(), 15).await.unwrap();
        let other = book(&store, &bob, north, &gp, nine() + 15 * MINUTE, 15)
            .await
            .unwrap();
        assert_eq!(
            store.consultation_ref(appt.id).await.unwrap(),
            None,
            "{b:?}: not started"
        );

        for (id, who, at) in [(appt.id, &ann, nine()), (other.id, &bob, other.start_ms)] {
            let check_in = on_appointment::<actions::CheckIn>(&store, who, id).await;
            store.check_in(&check_in, at - 5 * MINUTE).await.unwrap();
            let run = on_appointment::<actions::RunConsultation>(&store, &gp, id).await;
            start(&store, &run, nine()).await.unwrap();
        }
        let facts = store.consultation_ref(appt.id).await.unwrap().unwrap();
        assert_eq!(
            (
                facts.appointment,
                facts.patient.patient,
                facts.clinician,
                facts.practice
            ),
            (appt.id, ann.user, gp.user, north),
            "{b:?}"
        );
        assert_eq!(facts.patient.registered_at, Some(north));
        assert!(authorize::<actions::JoinConsultation>(&bob, facts, &MFA).is_err());
        let ann_join = authorize::<actions::JoinConsultation>(&ann, facts, &MFA).unwrap();
        let gp_join = authorize::<actions::JoinConsultation>(&gp, facts, &MFA).unwrap();
        let bob_facts = store.consultation_ref(other.id).await.unwrap().unwrap();
        assert_ne!(bob_facts.id, facts.id);
        let bob_join = authorize::<actions::JoinConsultation>(&bob, bob_facts, &MFA).unwrap();

        let call = store.consultation_call(&ann_join).await.unwrap().unwrap();
        assert_eq!(call.status, AppointmentStatus::InConsultation, "{b:?}");
        assert_eq!(call.segments.len(), 1);
        assert_eq!(call.segments[0].reason, SegmentReason::Start);
        let bob_call = store.consultation_call(&bob_join).await.unwrap().unwrap();
        assert_ne!(bob_call.recording, call.recording, "{b:?}");

        assert_eq!(store.recording_key(&ann_join).await.unwrap(), None, "{b:?}");
        let first = store.set_recording_key_if_absent(&gp_join, "aa01").await.unwrap();
        let second = store
            .set_recording_key_if_absent(&ann_join, "bb02")
            .await
            .unwrap();
        assert_eq!(
            (first.as_str(), second.as_str()),
            ("aa01", "aa01"),
            "{b:?}: the first writer wins"
        );
        assert_eq!(
            store.recording_key(&ann_join).await.unwrap().as_deref(),
            Some("aa01")
        );
        assert_eq!(
            store.recording_key(&bob_join).await.unwrap(),
            None,
            "{b:?}: keys are per recording"
        );

        let mut indexes = Vec::new();
        for (grant, reason, mode) in [
            (&ann_join, SegmentReason::ModeSwitch, ConsultationMode::AudioOnly),
            (&gp_join, SegmentReason::Reconnect, ConsultationMode::AudioOnly),
        ] {
            indexes.push(
                store
                    .add_segment(grant, reason, mode, nine() + MINUTE)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(indexes, [1, 2], "{b:?}");
        let refused = store
            .add_segment(
                &ann_join,
                SegmentReason::Start,
                ConsultationMode::Video,
                nine() + MINUTE,
            )
            .await;
        assert!(is_invalid(&refused), "{b:?}: {refused:?}");
        assert_eq!(
            store
                .add_segment(
                    &bob_join,
                    SegmentReason::Reconnect,
                    ConsultationMode::Video,
                    nine()
                )
                .await
                .unwrap(),
            1,
            "{b:?}: each recording counts its own"
        );
        let segments = store.consultation_call(&gp_join).await.unwrap().unwrap().segments;
        let got: Vec<_> = segments.iter().map(|s| (s.index, s.reason, s.mode)).collect();
        assert_eq!(
            got,
            [
                (0, SegmentReason::Start, ConsultationMode::Video),
                (1, SegmentReason::ModeSwitch, ConsultationMode::AudioOnly),
                (2, SegmentReason::Reconnect, ConsultationMode::AudioOnly),
            ],
            "{b:?}"
        );

        let run = on_appointment::<actions::RunConsultation>(&store, &gp, appt.id).await;
        store
            .run_consultation(&run, AppointmentStatus::Completed, nine() + 10 * MINUTE)
            .await
            .unwrap();
        let late = store
            .add_segment(
                &ann_join,
                SegmentReason::Reconnect,
                ConsultationMode::Video,
                nine() + 11 * MINUTE,
            )
            .await;
        assert!(
            is_invalid(&late),
            "{b:?}: a finished consultation takes no segments: {late:?}"
        );
        let call = store.consultation_call(&ann_join).await.unwrap().unwrap();
        assert_eq!(
            (call.status, call.segments.len()),
            (AppointmentStatus::Completed, 3)
        );
        store.close().await;
    }
}

/// Starts the appointment's consultation, and with it its recording, as the server does.
async fn start(
    store: &Store,
    grant: &confide_domain::policy::Grant<actions::RunConsultation>,
    at_ms: i64,
) -> Result<Appointment, StoreError> {
    let consultation = Consultation::start(
        ConsultationId::from_uuid(Uuid::new_v4()),
        RecordingId::from_uuid(Uuid::new_v4()),
        grant,
        ConsultationMode::Video,
        Timestamp::from_millisecond(at_ms).unwrap(),
    );
    store.start_consultation(grant, &consultation, at_ms).await
}

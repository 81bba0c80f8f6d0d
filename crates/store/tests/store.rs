//! Store behaviour on every configured backend: SQLite always, PostgreSQL when CONFIDE_TEST_DATABASE_URL is set.

use confide_domain::audit::{AuditEvent, Outcome, verify};
use confide_domain::consultation::{Consultation, ConsultationMode};
use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::ids::{ConsultationId, NoteId, RecordingId};
use confide_domain::policy::{
    Context, NewRegistration, PatientAtPractice, PracticeRef, Principal, actions, authorize,
};
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::scheduling::ConsultationKind;
use confide_domain::{AppointmentId, PracticeId, RegistrationId, UserId};
use confide_store::testing::TestDatabase;
use confide_store::{
    Backend, Conflict, NewAppointment, NewPractice, NewUser, Role as StoreRole, Store, StoreError,
    UnscopedTable,
};
use uuid::Uuid;

const MFA: Context = Context { mfa_verified: true };

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

/// A note on the patient's record by `by`, under the gate's grant.
async fn write_note(store: &Store, by: &Principal, patient: UserId, body: &str, at: i64) {
    let facts = store.patient_ref(patient).await.unwrap().unwrap();
    let grant = authorize::<actions::WriteRecord>(by, facts, &MFA).unwrap();
    store
        .add_note(&grant, NoteId::from_uuid(Uuid::new_v4()), body, at)
        .await
        .unwrap();
}

#[tokio::test]
async fn registration_moves_access_from_the_old_practice_to_the_new() {
    for db in TestDatabase::all().await {
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let (north, south) = (practice(&store, "North").await, practice(&store, "South").await);
        let north_gp = user(&store, "n@x.org", Role::Clinician, Some(north)).await;
        let south_gp = user(&store, "s@x.org", Role::Clinician, Some(south)).await;
        let ann = user(&store, "ann@x.org", Role::Patient, None).await;

        register(&store, &ann, north, &north_gp).await;
        let facts = store.patient_ref(ann.user).await.unwrap().unwrap();
        assert_eq!(facts.registered_at, Some(north));
        write_note(&store, &north_gp, ann.user, "Asthma review", 30).await;

        register(&store, &ann, south, &south_gp).await;
        let facts = store.patient_ref(ann.user).await.unwrap().unwrap();
        assert_eq!(facts.registered_at, Some(south), "{:?}", db.backend);
        assert!(authorize::<actions::ReadRecord>(&north_gp, facts, &MFA).is_err());
        let grant = authorize::<actions::ReadRecord>(&south_gp, facts, &MFA).unwrap();
        let notes = store.patient_notes(&grant).await.unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].author, north_gp.user);

        let mine = authorize::<actions::ListRegistrations>(&ann, facts, &MFA).unwrap();
        let statuses: Vec<_> = store
            .patient_registrations(&mine)
            .await
            .unwrap()
            .iter()
            .map(|r| r.status.as_str())
            .collect();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.contains(&"ended") && statuses.contains(&"accepted"));
        store.close().await;
    }
}

#[tokio::test]
async fn duplicates_are_refused_by_the_database() {
    for db in TestDatabase::all().await {
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let north = practice(&store, "North").await;
        let gp = user(&store, "n@x.org", Role::Clinician, Some(north)).await;
        let ann = user(&store, "ann@x.org", Role::Patient, None).await;
        let again = store
            .create_user(NewUser {
                id: UserId::from_uuid(Uuid::new_v4()),
                email: &Email::parse("ANN@x.org").unwrap(),
                name: &PersonName::parse("Ann").unwrap(),
                role: Role::Patient,
                practice: None,
                password_hash: None,
                date_of_birth: Some("1990-01-01".into()),
                at_ms: 1,
            })
            .await;
        assert!(matches!(again, Err(StoreError::Conflict(Conflict::EmailTaken))));

        let reg = register(&store, &ann, north, &gp).await;
        let ask = authorize::<actions::RequestRegistration>(
            &ann,
            NewRegistration {
                patient: ann.user,
                practice: north,
            },
            &MFA,
        )
        .unwrap();
        let second = store
            .request_registration(&ask, RegistrationId::from_uuid(Uuid::new_v4()), 40)
            .await;
        assert!(matches!(
            second,
            Err(StoreError::Conflict(Conflict::RegistrationExists))
        ));

        let facts = store.registration_ref(reg).await.unwrap().unwrap();
        let decide = authorize::<actions::DecideRegistration>(&gp, facts, &MFA).unwrap();
        let twice = store.decide_registration(&decide, false, 50).await;
        assert!(matches!(
            twice,
            Err(StoreError::Conflict(Conflict::AlreadyDecided))
        ));
        store.close().await;
    }
}

#[tokio::test]
async fn the_queue_shows_pending_requests_to_its_practice_only() {
    for db in TestDatabase::all().await {
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let (north, south) = (practice(&store, "North").await, practice(&store, "South").await);
        let admin = user(&store, "admin@x.org", Role::PracticeAdmin, Some(north)).await;
        let ann = user(&store, "ann@x.org", Role::Patient, None).await;
        let bob = user(&store, "bob@x.org", Role::Patient, None).await;
        for (who, at) in [(&ann, north), (&bob, south)] {
            let ask = authorize::<actions::RequestRegistration>(
                who,
                NewRegistration {
                    patient: who.user,
                    practice: at,
                },
                &MFA,
            )
            .unwrap();
            store
                .request_registration(&ask, RegistrationId::from_uuid(Uuid::new_v4()), 5)
                .await
                .unwrap();
        }
        let grant =
            authorize::<actions::ViewRegistrationQueue>(&admin, PracticeRef { practice: north }, &MFA)
                .unwrap();
        let queue = store.registration_queue(&grant).await.unwrap();
        assert_eq!(queue.len(), 1, "{:?}", db.backend);
        assert_eq!(queue[0].patient, ann.user);
        assert_eq!(queue[0].date_of_birth, "1980-01-02");
        store.close().await;
    }
}

#[tokio::test]
async fn without_a_grant_postgres_shows_no_patient_rows() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    let north = practice(&store, "North").await;
    let gp = user(&store, "n@x.org", Role::Clinician, Some(north)).await;
    let ann = user(&store, "ann@x.org", Role::Patient, None).await;
    register(&store, &ann, north, &gp).await;
    write_note(&store, &gp, ann.user, "note", 1).await;
    let on = PatientAtPractice {
        patient: store.patient_ref(ann.user).await.unwrap().unwrap(),
        practice: north,
    };
    let grant = authorize::<actions::BookAppointment>(&ann, on, &MFA).unwrap();
    let appointment = AppointmentId::from_uuid(Uuid::new_v4());
    store
        .book_appointment(
            &grant,
            NewAppointment {
                id: appointment,
                clinician: gp.user,
                start_ms: 1_800_000_000_000,
                end_ms: 1_800_000_900_000,
                kind: ConsultationKind::Video,
                reason: "a private reason",
                at_ms: 1,
                jobs: &[],
            },
        )
        .await
        .unwrap();
    let facts = store.appointment_ref(appointment).await.unwrap().unwrap();
    let arrive = authorize::<actions::CheckIn>(&ann, facts, &MFA).unwrap();
    store.check_in(&arrive, 1_800_000_000_000 - 60_000).await.unwrap();
    let run = authorize::<actions::RunConsultation>(&gp, facts, &MFA).unwrap();
    let consultation = Consultation::start(
        ConsultationId::from_uuid(Uuid::new_v4()),
        RecordingId::from_uuid(Uuid::new_v4()),
        &run,
        ConsultationMode::Video,
        confide_domain::Timestamp::from_millisecond(1_800_000_000_000).unwrap(),
    );
    store
        .start_consultation(&run, &consultation, 1_800_000_000_000)
        .await
        .unwrap();

    assert_eq!(store.unscoped_count(UnscopedTable::Recordings).await.unwrap(), 0);
    assert_eq!(store.unscoped_count(UnscopedTable::Patients).await.unwrap(), 0);
    assert_eq!(
        store.unscoped_count(UnscopedTable::Appointments).await.unwrap(),
        0
    );
    assert_eq!(
        store.unscoped_count(UnscopedTable::ClinicalNotes).await.unwrap(),
        0
    );
    store.close().await;

    let owner = Store::open(&db.url, StoreRole::Owner).await.unwrap();
    assert_eq!(owner.unscoped_count(UnscopedTable::Recordings).await.unwrap(), 1);
    assert_eq!(owner.unscoped_count(UnscopedTable::Patients).await.unwrap(), 1);
    assert_eq!(
        owner.unscoped_count(UnscopedTable::Appointments).await.unwrap(),
        1
    );
    assert_eq!(
        owner.unscoped_count(UnscopedTable::ClinicalNotes).await.unwrap(),
        1
    );
    owner.close().await;
}

fn event(n: usize, subject: Option<UserId>, actor: Option<UserId>) -> AuditEvent {
    AuditEvent {
        at_ms: n as i64,
        actor,
        actor_role: Some(Role::Clinician),
        action: "patient.record.read".into(),
        resource: "patient:x".into(),
        subject_patient: subject,
        outcome: Outcome::Allowed,
        reason: "clinician_of_registered_practice".into(),
        request_id: format!("r{n}"),
    }
}

#[tokio::test]
async fn concurrent_audit_appends_form_one_unbroken_chain() {
    for db in TestDatabase::all().await {
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let tasks: Vec<_> = (0..300)
            .map(|n| {
                let log = store.audit().clone();
                tokio::spawn(async move { log.append(event(n, None, None)).await.unwrap() })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=300).collect::<Vec<i64>>());
        store.close().await;

        let owner = Store::open(&db.url, StoreRole::Owner).await.unwrap();
        let entries = owner.audit_page(0, 1000).await.unwrap();
        let head = owner.audit_head().await.unwrap();
        assert_eq!(verify(entries, Some(head)), Ok(300), "{:?}", db.backend);
        owner.close().await;
    }
}

#[tokio::test]
async fn the_access_log_shows_others_not_the_patient() {
    for db in TestDatabase::all().await {
        let store = Store::open(&db.url, StoreRole::App).await.unwrap();
        let north = practice(&store, "North").await;
        let gp = user(&store, "n@x.org", Role::Clinician, Some(north)).await;
        let ann = user(&store, "ann@x.org", Role::Patient, None).await;
        let bob = user(&store, "bob@x.org", Role::Patient, None).await;
        let log = store.audit();
        log.append(event(1, Some(ann.user), Some(ann.user)))
            .await
            .unwrap();
        log.append(event(2, Some(ann.user), Some(gp.user))).await.unwrap();
        log.append(event(3, Some(bob.user), Some(gp.user))).await.unwrap();
        let facts = store.patient_ref(ann.user).await.unwrap().unwrap();
        let grant = authorize::<actions::ReadAccessLog>(&ann, facts, &MFA).unwrap();
        let seen = store.access_log(&grant, 50).await.unwrap();
        assert_eq!(seen.len(), 1, "{:?}", db.backend);
        assert_eq!(seen[0].actor, Some(gp.user));
        assert_eq!(seen[0].actor_name.as_deref(), Some("n"));
        store.close().await;
    }
}

#[test]
fn backends_are_told_apart_by_url() {
    assert_eq!(Backend::from_url("sqlite:///tmp/x.db").unwrap(), Backend::Sqlite);
    assert_eq!(Backend::from_url("postgres://h/db").unwrap(), Backend::Postgres);
    assert!(Backend::from_url("mysql://h/db").is_err());
}

#[tokio::test]
async fn on_postgres_the_server_role_cannot_edit_or_delete_audit_entries() {
    use sqlx::{Connection, Executor};
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    store.audit().append(event(1, None, None)).await.unwrap();
    store.close().await;

    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    conn.execute("SET ROLE confide_app").await.unwrap();
    for tamper in [
        "UPDATE audit_log SET reason = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = conn.execute(tamper).await.expect_err(tamper);
        assert!(err.to_string().contains("permission denied"), "{tamper}: {err}");
    }
}

#[tokio::test]
async fn on_sqlite_a_snapshot_reads_the_database_as_it_was_at_its_first_read() {
    let db = TestDatabase::sqlite();
    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    let (north, south) = (practice(&store, "North").await, practice(&store, "South").await);
    let north_gp = user(&store, "n@x.org", Role::Clinician, Some(north)).await;
    let south_gp = user(&store, "s@x.org", Role::Clinician, Some(south)).await;
    let ann = user(&store, "ann@x.org", Role::Patient, None).await;
    register(&store, &ann, north, &north_gp).await;

    let snapshot = store.snapshot().unwrap();
    let facts = snapshot.patient_ref(ann.user).await.unwrap().unwrap();
    assert_eq!(facts.registered_at, Some(north));

    // Written meanwhile through the store: neither blocks on the snapshot nor shows in it.
    register(&store, &ann, south, &south_gp).await;
    let now = store.patient_ref(ann.user).await.unwrap().unwrap();
    write_note(&store, &south_gp, ann.user, "Moved practice", 40).await;

    let read = authorize::<actions::ReadRecord>(&north_gp, facts, &MFA).unwrap();
    assert!(snapshot.patient_notes(&read).await.unwrap().is_empty());
    assert_eq!(
        snapshot
            .patient_ref(ann.user)
            .await
            .unwrap()
            .unwrap()
            .registered_at,
        Some(north)
    );
    drop(snapshot);

    assert_eq!(now.registered_at, Some(south));
    let read = authorize::<actions::ReadRecord>(&south_gp, now, &MFA).unwrap();
    assert_eq!(store.patient_notes(&read).await.unwrap().len(), 1);
    store.close().await;
}

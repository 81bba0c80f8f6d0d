//! Patient data: profiles, clinical notes and registrations. Every function here takes a grant.

use confide_domain::ids::NoteId;
use confide_domain::policy::actions::{
    DecideRegistration, ListPracticePatients, ListRegistrations, ReadProfile, ReadRecord,
    RequestRegistration, ViewRegistrationQueue, WriteRecord,
};
use confide_domain::policy::{Grant, PatientRef, RegistrationRef};
use confide_domain::registration::RegistrationStatus;
use confide_domain::{PracticeId, RegistrationId, UserId};

use crate::read::{OwnedRow, Param};
use crate::{Conflict, Result, Scope, Store, is_unique_violation};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientProfile {
    pub id: UserId,
    pub name: String,
    pub email: String,
    pub date_of_birth: String,
    pub registered_at: Option<PracticeId>,
    pub registered_practice_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub id: NoteId,
    pub author: UserId,
    pub author_name: String,
    pub body: String,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub id: RegistrationId,
    pub patient: UserId,
    pub practice: PracticeId,
    pub practice_name: String,
    pub status: RegistrationStatus,
    pub requested_at_ms: i64,
    pub decided_at_ms: Option<i64>,
}

/// A pending request as the practice sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub registration: RegistrationId,
    pub patient: UserId,
    pub name: String,
    pub email: String,
    pub date_of_birth: String,
    pub requested_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientSummary {
    pub id: UserId,
    pub name: String,
    pub date_of_birth: String,
}

fn registration(row: &OwnedRow) -> Result<Registration> {
    Ok(Registration {
        id: row.parse("id")?,
        patient: row.parse("patient_id")?,
        practice: row.parse("practice_id")?,
        practice_name: row.try_get("practice_name")?,
        status: row.parse("status")?,
        requested_at_ms: row.try_get("requested_at")?,
        decided_at_ms: row.try_get("decided_at")?,
    })
}

macro_rules! registration_select {
    () => {
        "SELECT r.id, r.patient_id, r.practice_id, p.name AS practice_name, r.status, \
     r.requested_at, r.decided_at FROM registrations r JOIN practices p ON p.id = r.practice_id"
    };
}

impl Store {
    /// What the gate needs to know about a patient: that they exist and where they are registered.
    /// Not patient data in itself, so it needs no grant: it is how a grant is decided.
    pub async fn patient_ref(&self, patient: UserId) -> Result<Option<PatientRef>> {
        let row = self
            .select_one(
                Scope::default(),
                "SELECT u.id, (SELECT r.practice_id FROM registrations r \
                           WHERE r.patient_id = u.id AND r.status = 'accepted') AS practice_id \
             FROM users u WHERE u.id = $1 AND u.role = 'patient'",
                &[Param::from(patient.to_string())],
            )
            .await?;
        row.map(|row| {
            Ok(PatientRef {
                patient,
                registered_at: row.parse_opt("practice_id")?,
            })
        })
        .transpose()
    }

    /// The facts the gate needs about a registration request.
    pub async fn registration_ref(&self, id: RegistrationId) -> Result<Option<RegistrationRef>> {
        let row = self
            .select_one(
                Scope::default(),
                "SELECT patient_id, practice_id, status FROM registrations WHERE id = $1",
                &[Param::from(id.to_string())],
            )
            .await?;
        row.map(|row| {
            Ok(RegistrationRef {
                id,
                patient: row.parse("patient_id")?,
                practice: row.parse("practice_id")?,
                status: row.parse("status")?,
            })
        })
        .transpose()
    }

    pub async fn patient_profile(&self, grant: &Grant<ReadProfile>) -> Result<Option<PatientProfile>> {
        let patient = grant.patient().to_string();
        let actor = grant.principal().user.to_string();
        let row = self
            .select_one(
                Scope {
                    actor: Some(&actor),
                    patient: Some(&patient),
                    practice: None,
                    gate_facts: false,
                },
                "SELECT u.id, u.name, u.email, pt.date_of_birth, r.practice_id, pr.name AS practice_name \
             FROM users u JOIN patients pt ON pt.user_id = u.id \
             LEFT JOIN registrations r ON r.patient_id = u.id AND r.status = 'accepted' \
             LEFT JOIN practices pr ON pr.id = r.practice_id \
             WHERE u.id = $1",
                &[Param::from(&patient)],
            )
            .await?;
        row.map(|row| {
            Ok(PatientProfile {
                id: row.parse("id")?,
                name: row.try_get("name")?,
                email: row.try_get("email")?,
                date_of_birth: row.try_get("date_of_birth")?,
                registered_at: row.parse_opt("practice_id")?,
                registered_practice_name: row.try_get("practice_name")?,
            })
        })
        .transpose()
    }

    /// The patient's clinical notes, oldest first.
    pub async fn patient_notes(&self, grant: &Grant<ReadRecord>) -> Result<Vec<Note>> {
        let patient = grant.patient().to_string();
        let actor = grant.principal().user.to_string();
        let rows = self
            .select(
                Scope {
                    actor: Some(&actor),
                    patient: Some(&patient),
                    practice: None,
                    gate_facts: false,
                },
                "SELECT n.id, n.author_id, u.name AS author_name, n.body, n.created_at \
             FROM clinical_notes n JOIN users u ON u.id = n.author_id \
             WHERE n.patient_id = $1 ORDER BY n.created_at, n.id",
                &[Param::from(&patient)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Note {
                    id: row.parse("id")?,
                    author: row.parse("author_id")?,
                    author_name: row.try_get("author_name")?,
                    body: row.try_get("body")?,
                    created_at_ms: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Adds a note written by the grant's clinician; its patient and author are fixed here, once.
    pub async fn add_note(
        &self,
        grant: &Grant<WriteRecord>,
        id: NoteId,
        body: &str,
        at_ms: i64,
    ) -> Result<Note> {
        let patient = grant.patient().to_string();
        let author = grant.principal().user;
        let actor = author.to_string();
        let mut tx = self
            .write(Scope {
                actor: Some(&actor),
                patient: Some(&patient),
                practice: None,
                gate_facts: false,
            })
            .await?;
        sqlx::query(
            "INSERT INTO clinical_notes (id, patient_id, author_id, body, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(&patient)
        .bind(&actor)
        .bind(body)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        let author_name: String = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
            .bind(&actor)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Note {
            id,
            author,
            author_name,
            body: body.to_owned(),
            created_at_ms: at_ms,
        })
    }

    pub async fn request_registration(
        &self,
        grant: &Grant<RequestRegistration>,
        id: RegistrationId,
        at_ms: i64,
    ) -> Result<Registration> {
        let on = grant.on();
        let mut tx = self.write(Scope::default()).await?;
        let inserted = sqlx::query(
            "INSERT INTO registrations (id, patient_id, practice_id, status, requested_at) \
             VALUES ($1, $2, $3, 'pending', $4)",
        )
        .bind(id.to_string())
        .bind(on.patient.to_string())
        .bind(on.practice.to_string())
        .bind(at_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(Conflict::RegistrationExists.into()),
            other => other?,
        };
        let row = sqlx::query(concat!(registration_select!(), " WHERE r.id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        registration(&OwnedRow::from_any(&row)?)
    }

    /// Accepts or declines a pending request. Accepting ends the patient's current registration and
    /// withdraws their other open requests, in the same transaction: the old practice loses access at
    /// the moment the new one gains it.
    pub async fn decide_registration(
        &self,
        grant: &Grant<DecideRegistration>,
        accept: bool,
        at_ms: i64,
    ) -> Result<Registration> {
        let on = grant.on();
        let to = if accept {
            RegistrationStatus::Accepted
        } else {
            RegistrationStatus::Declined
        };
        on.status.transition(to).map_err(|_| Conflict::AlreadyDecided)?;
        let (id, patient) = (on.id.to_string(), on.patient.to_string());
        let mut tx = self.write(Scope::default()).await?;
        if accept {
            sqlx::query(
                "UPDATE registrations SET status = 'ended', decided_at = $1 WHERE patient_id = $2 AND status = 'accepted'",
            )
            .bind(at_ms)
            .bind(&patient)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE registrations SET status = 'withdrawn', decided_at = $1 \
                 WHERE patient_id = $2 AND status = 'pending' AND id <> $3",
            )
            .bind(at_ms)
            .bind(&patient)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query(
            "UPDATE registrations SET status = $1, decided_at = $2, decided_by = $3 WHERE id = $4 AND status = 'pending'",
        )
        .bind(to.as_str())
        .bind(at_ms)
        .bind(grant.principal().user.to_string())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Conflict::AlreadyDecided.into());
        }
        let row = sqlx::query(concat!(registration_select!(), " WHERE r.id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        registration(&OwnedRow::from_any(&row)?)
    }

    /// A patient's requests and registrations, newest first.
    pub async fn patient_registrations(&self, grant: &Grant<ListRegistrations>) -> Result<Vec<Registration>> {
        let rows = self
            .select(
                Scope::default(),
                concat!(
                    registration_select!(),
                    " WHERE r.patient_id = $1 ORDER BY r.requested_at DESC, r.id DESC"
                ),
                &[Param::from(grant.patient().to_string())],
            )
            .await?;
        rows.iter().map(registration).collect()
    }

    /// Pending requests to the grant's practice, oldest first.
    pub async fn registration_queue(&self, grant: &Grant<ViewRegistrationQueue>) -> Result<Vec<QueueEntry>> {
        let practice = grant.practice().to_string();
        let actor = grant.principal().user.to_string();
        let rows = self.select(Scope {
                actor: Some(&actor),
                patient: None,
                practice: Some(&practice),
                gate_facts: false,
            }, "SELECT r.id, r.patient_id, u.name, u.email, pt.date_of_birth, r.requested_at \
             FROM registrations r JOIN users u ON u.id = r.patient_id JOIN patients pt ON pt.user_id = r.patient_id \
             WHERE r.practice_id = $1 AND r.status = 'pending' ORDER BY r.requested_at, r.id", &[Param::from(&practice)]).await?;
        rows.iter()
            .map(|row| {
                Ok(QueueEntry {
                    registration: row.parse("id")?,
                    patient: row.parse("patient_id")?,
                    name: row.try_get("name")?,
                    email: row.try_get("email")?,
                    date_of_birth: row.try_get("date_of_birth")?,
                    requested_at_ms: row.try_get("requested_at")?,
                })
            })
            .collect()
    }

    /// Patients registered at the grant's practice, by name.
    pub async fn practice_patients(
        &self,
        grant: &Grant<ListPracticePatients>,
    ) -> Result<Vec<PatientSummary>> {
        let practice = grant.practice().to_string();
        let actor = grant.principal().user.to_string();
        let rows = self.select(Scope {
                actor: Some(&actor),
                patient: None,
                practice: Some(&practice),
                gate_facts: false,
            }, "SELECT u.id, u.name, pt.date_of_birth \
             FROM registrations r JOIN users u ON u.id = r.patient_id JOIN patients pt ON pt.user_id = r.patient_id \
             WHERE r.practice_id = $1 AND r.status = 'accepted' ORDER BY u.name, u.id", &[Param::from(&practice)]).await?;
        rows.iter()
            .map(|row| {
                Ok(PatientSummary {
                    id: row.parse("id")?,
                    name: row.try_get("name")?,
                    date_of_birth: row.try_get("date_of_birth")?,
                })
            })
            .collect()
    }
}

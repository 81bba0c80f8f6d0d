//! The symptom checker's stored conversations (a logged-in patient's only) and the summaries patients
//! share with the clinician of an appointment they book. The engine's session is kept as JSON text: this
//! crate neither reads nor checks it, so the engine may change its shape without a migration.

use confide_domain::policy::actions::{
    AnswerTriage, ListTriageSessions, ReadTriageSession, ReadTriageSummary, ShareTriageSummary, StartTriage,
};
use confide_domain::policy::{Grant, TriageSessionRef};
use confide_domain::{AppointmentId, TriageSessionId};
use sqlx::{Any, Transaction};

use crate::read::{OwnedRow, Param};
use crate::{Result, Scope, Store, StoreError};

/// A stored conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriageRecord {
    pub id: TriageSessionId,
    pub complaint: String,
    /// The engine's session, as JSON.
    pub session: String,
    /// Once the conversation has a result: self-care, routine, urgent or emergency.
    pub disposition: Option<String>,
    pub version: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A conversation's new state, after an answer or after taking one back.
pub struct TriageUpdate<'a> {
    /// The version the change was computed from: if another change came first, this one is refused.
    pub from_version: i64,
    pub session: &'a str,
    pub disposition: Option<&'a str>,
    pub at_ms: i64,
}

/// The summary attached to an appointment at booking: which conversation, and a copy of what it said.
#[derive(Clone, Copy)]
pub struct SharedTriage<'a> {
    pub grant: &'a Grant<ShareTriageSummary>,
    pub summary: &'a str,
}

/// A shared summary, as the appointment keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppointmentTriage {
    pub triage_session: TriageSessionId,
    /// The summary as JSON, as it was when the appointment was booked.
    pub summary: String,
    pub shared_at_ms: i64,
}

fn record(row: &OwnedRow) -> Result<TriageRecord> {
    Ok(TriageRecord {
        id: row.parse("id")?,
        complaint: row.try_get("complaint")?,
        session: row.try_get("session")?,
        disposition: row.try_get("disposition")?,
        version: row.try_get("version")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
    })
}

fn patient_scope<'a>(actor: &'a str, patient: &'a str) -> Scope<'a> {
    Scope {
        actor: Some(actor),
        patient: Some(patient),
        practice: None,
        gate_facts: false,
    }
}

/// Inside a booking's transaction: copies the summary onto the appointment just inserted. The share grant
/// must be for the same patient the appointment is booked for; the database's keys check it again.
pub(crate) async fn attach(
    tx: &mut Transaction<'static, Any>,
    appointment: &str,
    patient: &str,
    share: &SharedTriage<'_>,
    at_ms: i64,
) -> Result<()> {
    let on = share.grant.triage_session();
    if on.patient.to_string() != patient {
        return Err(StoreError::Invalid(
            "that symptom check belongs to someone else".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO appointment_triage (appointment_id, patient_id, clinician_id, practice_id, \
         triage_session_id, summary, shared_at) \
         SELECT a.id, a.patient_id, a.clinician_id, a.practice_id, $2, $3, $4 FROM appointments a WHERE a.id = $1",
    )
    .bind(appointment)
    .bind(on.id.to_string())
    .bind(share.summary)
    .bind(at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The patient's date of birth (YYYY-MM-DD), which sets the checker's age.
    pub async fn triage_date_of_birth(&self, grant: &Grant<StartTriage>) -> Result<Option<String>> {
        let (actor, patient) = (grant.principal().user.to_string(), grant.patient().to_string());
        let row = self
            .select_one(
                patient_scope(&actor, &patient),
                "SELECT date_of_birth FROM patients WHERE user_id = $1",
                &[Param::from(&patient)],
            )
            .await?;
        row.map(|r| r.try_get("date_of_birth")).transpose()
    }

    /// Keeps a new conversation as the grant's patient's.
    pub async fn create_triage_session(
        &self,
        grant: &Grant<StartTriage>,
        id: TriageSessionId,
        complaint: &str,
        session: &str,
        disposition: Option<&str>,
        at_ms: i64,
    ) -> Result<TriageRecord> {
        let (actor, patient) = (grant.principal().user.to_string(), grant.patient().to_string());
        let mut tx = self.write(patient_scope(&actor, &patient)).await?;
        sqlx::query(
            "INSERT INTO triage_sessions (id, patient_id, complaint, session, disposition, version, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6)",
        )
        .bind(id.to_string())
        .bind(&patient)
        .bind(complaint)
        .bind(session)
        .bind(disposition)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TriageRecord {
            id,
            complaint: complaint.to_owned(),
            session: session.to_owned(),
            disposition: disposition.map(str::to_owned),
            version: 0,
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        })
    }

    /// The facts the gate needs about a conversation: whose it is.
    pub async fn triage_session_ref(&self, id: TriageSessionId) -> Result<Option<TriageSessionRef>> {
        let row = self
            .select_one(
                Scope {
                    gate_facts: true,
                    ..Scope::default()
                },
                "SELECT patient_id FROM triage_sessions WHERE id = $1",
                &[Param::from(id.to_string())],
            )
            .await?;
        row.map(|r| {
            Ok(TriageSessionRef {
                id,
                patient: r.parse("patient_id")?,
            })
        })
        .transpose()
    }

    pub async fn triage_session(&self, grant: &Grant<ReadTriageSession>) -> Result<Option<TriageRecord>> {
        self.load_triage(grant.principal().user.to_string(), grant.triage_session())
            .await
    }

    /// The conversation as it stands, to compute an answer's effect from.
    pub async fn triage_session_to_answer(
        &self,
        grant: &Grant<AnswerTriage>,
    ) -> Result<Option<TriageRecord>> {
        self.load_triage(grant.principal().user.to_string(), grant.triage_session())
            .await
    }

    /// The conversation whose summary the patient attaches to an appointment they book.
    pub async fn triage_session_to_share(
        &self,
        grant: &Grant<ShareTriageSummary>,
    ) -> Result<Option<TriageRecord>> {
        self.load_triage(grant.principal().user.to_string(), grant.triage_session())
            .await
    }

    async fn load_triage(&self, actor: String, on: &TriageSessionRef) -> Result<Option<TriageRecord>> {
        let patient = on.patient.to_string();
        let row = self
            .select_one(
                patient_scope(&actor, &patient),
                "SELECT id, complaint, session, disposition, version, created_at, updated_at \
                 FROM triage_sessions WHERE id = $1 AND patient_id = $2",
                &[Param::from(on.id.to_string()), Param::from(&patient)],
            )
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Replaces the conversation's state, unless it changed since `from_version` was read.
    pub async fn update_triage_session(
        &self,
        grant: &Grant<AnswerTriage>,
        update: TriageUpdate<'_>,
    ) -> Result<TriageRecord> {
        let on = grant.triage_session();
        let (actor, patient) = (grant.principal().user.to_string(), on.patient.to_string());
        let mut tx = self.write(patient_scope(&actor, &patient)).await?;
        let row = sqlx::query(
            "UPDATE triage_sessions SET session = $1, disposition = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4 AND patient_id = $5 AND version = $6 \
             RETURNING id, complaint, session, disposition, version, created_at, updated_at",
        )
        .bind(update.session)
        .bind(update.disposition)
        .bind(update.at_ms)
        .bind(on.id.to_string())
        .bind(&patient)
        .bind(update.from_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::Invalid(
                "the conversation changed meanwhile: reload it and answer again".into(),
            ));
        };
        let updated = record(&OwnedRow::from_any(&row)?)?;
        tx.commit().await?;
        Ok(updated)
    }

    /// The patient's conversations, newest first.
    pub async fn patient_triage_sessions(
        &self,
        grant: &Grant<ListTriageSessions>,
    ) -> Result<Vec<TriageRecord>> {
        let (actor, patient) = (grant.principal().user.to_string(), grant.patient().to_string());
        let rows = self
            .select(
                patient_scope(&actor, &patient),
                "SELECT id, complaint, session, disposition, version, created_at, updated_at \
                 FROM triage_sessions WHERE patient_id = $1 ORDER BY created_at DESC, id DESC",
                &[Param::from(&patient)],
            )
            .await?;
        rows.iter().map(record).collect()
    }

    /// Whether an appointment carries a shared summary: a gate fact, so that the gate is asked about
    /// reading it only when there is one.
    pub async fn appointment_has_triage(&self, appointment: AppointmentId) -> Result<bool> {
        let row = self
            .select_one(
                Scope {
                    gate_facts: true,
                    ..Scope::default()
                },
                "SELECT 1 AS one FROM appointment_triage WHERE appointment_id = $1",
                &[Param::from(appointment.to_string())],
            )
            .await?;
        Ok(row.is_some())
    }

    /// The summary shared with the appointment, for its patient or its own clinician.
    pub async fn appointment_triage(
        &self,
        grant: &Grant<ReadTriageSummary>,
    ) -> Result<Option<AppointmentTriage>> {
        let a = grant.appointment();
        let (actor, patient, practice) = (
            grant.principal().user.to_string(),
            a.patient.patient.to_string(),
            a.practice.to_string(),
        );
        let row = self
            .select_one(
                Scope {
                    actor: Some(&actor),
                    patient: Some(&patient),
                    practice: Some(&practice),
                    gate_facts: false,
                },
                "SELECT triage_session_id, summary, shared_at FROM appointment_triage \
                 WHERE appointment_id = $1 AND patient_id = $2 AND clinician_id = $3 AND practice_id = $4",
                &[
                    Param::from(a.id.to_string()),
                    Param::from(&patient),
                    Param::from(a.clinician.to_string()),
                    Param::from(&practice),
                ],
            )
            .await?;
        row.map(|r| {
            Ok(AppointmentTriage {
                triage_session: r.parse("triage_session_id")?,
                summary: r.try_get("summary")?,
                shared_at_ms: r.try_get("shared_at")?,
            })
        })
        .transpose()
    }
}

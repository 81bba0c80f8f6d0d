//! What a consultation keeps beside its media: each participant's recording-consent decisions and the
//! call's chat. Both are append-only logs, numbered per consultation inside the writing transaction, and
//! every row is bound when it is written to the consultation's patient, clinician and practice as the
//! grant names them; the database's composite keys refuse any other owners. A guest's rows also name
//! the guest, whom the database holds to the same consultation.

use confide_domain::consultation::ConsentDecision;
use confide_domain::policy::actions::{JoinConsultation, PostChatMessage, ReadCallRecord, RecordConsent};
use confide_domain::policy::{Actor, ConsultationGrant, ConsultationRef, GuardedAction};
use confide_domain::scheduling::AppointmentStatus;
use confide_domain::{GuestId, Timestamp};
use sqlx::{Any, Transaction};

use crate::read::{OwnedRow, Param};
use crate::{Result, Scope, Store, StoreError};

/// The longest chat message, in characters; the database holds the same bound.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// One consent decision, as the consultation's log keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentEntry {
    pub participant: Actor,
    pub decision: ConsentDecision,
    pub at: Timestamp,
}

/// One chat message. `seq` counts the consultation's messages from 1, in the order they were kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub seq: i64,
    pub sender: Actor,
    pub body: String,
    pub sent_at: Timestamp,
}

/// Grants that may read the consultation's consent decisions: being in the call (the recorder must be
/// told them), or reading the consultation's record.
pub trait ReadsConsent: GuardedAction<On = ConsultationRef> {}
impl ReadsConsent for JoinConsultation {}
impl ReadsConsent for ReadCallRecord {}

/// The strings a grant on a consultation gives its statements' scope and parameters.
pub(crate) struct Owned {
    pub(crate) actor: String,
    /// Set when the actor is one of the consultation's guests.
    pub(crate) guest: Option<String>,
    pub(crate) patient: String,
    pub(crate) clinician: String,
    pub(crate) practice: String,
    pub(crate) consultation: String,
}

impl Owned {
    pub(crate) fn of<A>(grant: &impl ConsultationGrant<A>) -> Owned {
        let c = grant.consultation();
        let actor = grant.actor();
        Owned {
            actor: actor.as_uuid().to_string(),
            guest: match actor {
                Actor::Guest(g) => Some(g.to_string()),
                Actor::User(_) => None,
            },
            patient: c.patient.patient.to_string(),
            clinician: c.clinician.to_string(),
            practice: c.practice.to_string(),
            consultation: c.id.to_string(),
        }
    }

    pub(crate) fn scope(&self) -> Scope<'_> {
        Scope {
            actor: Some(&self.actor),
            patient: Some(&self.patient),
            practice: Some(&self.practice),
            gate_facts: false,
        }
    }
}

fn decision_str(d: ConsentDecision) -> &'static str {
    match d {
        ConsentDecision::Given => "given",
        ConsentDecision::Withdrawn => "withdrawn",
    }
}

fn timestamp(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms)
        .map_err(|e| StoreError::Corrupt(format!("a time in the call's record: {e}")))
}

/// Who a row is from: the guest it names, or else the account.
fn actor(row: &OwnedRow, account_column: &str) -> Result<Actor> {
    Ok(match row.parse_opt::<GuestId>("guest_id")? {
        Some(guest) => Actor::Guest(guest),
        None => Actor::User(row.parse(account_column)?),
    })
}

fn consent_entry(row: &OwnedRow) -> Result<ConsentEntry> {
    let decision = match row.try_get::<String>("decision")?.as_str() {
        "given" => ConsentDecision::Given,
        "withdrawn" => ConsentDecision::Withdrawn,
        other => return Err(StoreError::Corrupt(format!("consent decision {other:?}"))),
    };
    Ok(ConsentEntry {
        participant: actor(row, "participant_id")?,
        decision,
        at: timestamp(row.try_get("decided_at")?)?,
    })
}

fn chat_message(row: &OwnedRow) -> Result<ChatMessage> {
    Ok(ChatMessage {
        seq: row.try_get("seq")?,
        sender: actor(row, "sender_id")?,
        body: row.try_get("body")?,
        sent_at: timestamp(row.try_get("sent_at")?)?,
    })
}

/// Takes the consultation's row lock (on PostgreSQL; SQLite's write transactions already run one at a
/// time), so that two writers get different positions, and refuses unless the call is running.
async fn lock_running(tx: &mut Transaction<'static, Any>, consultation: &str) -> Result<()> {
    let locked = sqlx::query("UPDATE consultations SET started_at = started_at WHERE id = $1")
        .bind(consultation)
        .execute(&mut **tx)
        .await?;
    if locked.rows_affected() != 1 {
        return Err(StoreError::Corrupt(
            "the consultation the gate saw is gone".into(),
        ));
    }
    let row = sqlx::query(
        "SELECT a.status FROM consultations c JOIN appointments a ON a.id = c.appointment_id WHERE c.id = $1",
    )
    .bind(consultation)
    .fetch_one(&mut **tx)
    .await?;
    let status: AppointmentStatus = OwnedRow::from_any(&row)?.parse("status")?;
    if status != AppointmentStatus::InConsultation {
        return Err(StoreError::Invalid(format!(
            "the consultation is not running: the appointment is {status}"
        )));
    }
    Ok(())
}

/// The next position in one of the consultation's logs.
async fn next_seq(tx: &mut Transaction<'static, Any>, sql: &'static str, consultation: &str) -> Result<i64> {
    let row = sqlx::query(sql).bind(consultation).fetch_one(&mut **tx).await?;
    Ok(OwnedRow::from_any(&row)?.try_get::<i64>("last")? + 1)
}

impl Store {
    /// Records the grant's principal's decision about being recorded, unless it is already the one in
    /// force. Returns the entry when one was added. Refused once the consultation is no longer running.
    pub async fn record_consent(
        &self,
        grant: &impl ConsultationGrant<RecordConsent>,
        decision: ConsentDecision,
        at: Timestamp,
    ) -> Result<Option<ConsentEntry>> {
        let owned = Owned::of(grant);
        let mut tx = self.write(owned.scope()).await?;
        lock_running(&mut tx, &owned.consultation).await?;
        let current = sqlx::query(
            "SELECT decision FROM consultation_consents WHERE consultation_id = $1 AND participant_id = $2 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(&owned.consultation)
        .bind(&owned.actor)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = current
            && OwnedRow::from_any(&row)?.try_get::<String>("decision")? == decision_str(decision)
        {
            tx.commit().await?;
            return Ok(None);
        }
        let seq = next_seq(
            &mut tx,
            "SELECT COALESCE(MAX(seq), 0) AS last FROM consultation_consents WHERE consultation_id = $1",
            &owned.consultation,
        )
        .await?;
        sqlx::query(
            "INSERT INTO consultation_consents (consultation_id, patient_id, clinician_id, practice_id, seq, \
             participant_id, guest_id, decision, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&owned.consultation)
        .bind(&owned.patient)
        .bind(&owned.clinician)
        .bind(&owned.practice)
        .bind(seq)
        .bind(&owned.actor)
        .bind(&owned.guest)
        .bind(decision_str(decision))
        .bind(at.as_millisecond())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(ConsentEntry {
            participant: grant.actor(),
            decision,
            at,
        }))
    }

    /// Every consent decision in the consultation, oldest first.
    pub async fn consent_log<A: ReadsConsent>(
        &self,
        grant: &impl ConsultationGrant<A>,
    ) -> Result<Vec<ConsentEntry>> {
        let owned = Owned::of(grant);
        self.select(
            owned.scope(),
            "SELECT participant_id, guest_id, decision, decided_at FROM consultation_consents \
             WHERE consultation_id = $1 ORDER BY seq",
            &[Param::from(&owned.consultation)],
        )
        .await?
        .iter()
        .map(consent_entry)
        .collect()
    }

    /// Adds a message from the grant's principal to the consultation's chat. The caller has checked its
    /// length; the database checks it again. Refused once the consultation is no longer running.
    pub async fn post_message(
        &self,
        grant: &impl ConsultationGrant<PostChatMessage>,
        body: &str,
        at: Timestamp,
    ) -> Result<ChatMessage> {
        let owned = Owned::of(grant);
        let mut tx = self.write(owned.scope()).await?;
        lock_running(&mut tx, &owned.consultation).await?;
        let seq = next_seq(
            &mut tx,
            "SELECT COALESCE(MAX(seq), 0) AS last FROM consultation_messages WHERE consultation_id = $1",
            &owned.consultation,
        )
        .await?;
        sqlx::query(
            "INSERT INTO consultation_messages (consultation_id, patient_id, clinician_id, practice_id, seq, \
             sender_id, guest_id, body, sent_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&owned.consultation)
        .bind(&owned.patient)
        .bind(&owned.clinician)
        .bind(&owned.practice)
        .bind(seq)
        .bind(&owned.actor)
        .bind(&owned.guest)
        .bind(body)
        .bind(at.as_millisecond())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ChatMessage {
            seq,
            sender: grant.actor(),
            body: body.to_owned(),
            sent_at: at,
        })
    }

    /// The consultation's messages after position `after`, oldest first, at most `limit`.
    pub async fn messages(
        &self,
        grant: &impl ConsultationGrant<ReadCallRecord>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ChatMessage>> {
        let owned = Owned::of(grant);
        self.select(
            owned.scope(),
            "SELECT seq, sender_id, guest_id, body, sent_at FROM consultation_messages \
             WHERE consultation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[
                Param::from(&owned.consultation),
                Param::from(after),
                Param::from(limit),
            ],
        )
        .await?
        .iter()
        .map(chat_message)
        .collect()
    }
}

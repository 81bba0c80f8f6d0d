//! A consultation while its call runs: the gate's facts about it, its recording's wrapped data key, and
//! the segments the call adds to its recording. Everything after the gate's lookup takes a grant to join
//! the consultation (its patient's, its clinician's or one of its guests'), and the recording is always the one the consultation's row names: a caller
//! can't name another.

use confide_domain::consultation::{ConsultationMode, SegmentReason, StoredSegment};
use confide_domain::policy::actions::JoinConsultation;
use confide_domain::policy::{ConsultationGrant, ConsultationRef, PatientRef};
use confide_domain::scheduling::AppointmentStatus;
use confide_domain::{AppointmentId, RecordingId};

use crate::read::{OwnedRow, Param};
use crate::scheduling::{segment_reason, stored_segment};
use crate::{Result, Scope, Store, StoreError};

/// What a call needs to know about its consultation, read in the grant's scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallFacts {
    pub recording: RecordingId,
    /// The appointment's: a call runs only while it is `in_consultation`.
    pub status: AppointmentStatus,
    /// The recording's segments so far, in order; never empty.
    pub segments: Vec<StoredSegment>,
}

/// The strings a grant's scope borrows.
struct Owned {
    actor: String,
    patient: String,
    practice: String,
    consultation: String,
}

impl Owned {
    fn of(grant: &impl ConsultationGrant<JoinConsultation>) -> Owned {
        let c = grant.consultation();
        Owned {
            actor: grant.actor().as_uuid().to_string(),
            patient: c.patient.patient.to_string(),
            practice: c.practice.to_string(),
            consultation: c.id.to_string(),
        }
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            actor: Some(&self.actor),
            patient: Some(&self.patient),
            practice: Some(&self.practice),
            gate_facts: false,
        }
    }
}

impl Store {
    /// The facts the gate needs about an appointment's consultation, if it has started: whose it is.
    pub async fn consultation_ref(&self, appointment: AppointmentId) -> Result<Option<ConsultationRef>> {
        let row = self
            .select_one(
                Scope {
                    gate_facts: true,
                    ..Scope::default()
                },
                "SELECT c.id, c.patient_id, c.clinician_id, c.practice_id, \
                 (SELECT r.practice_id FROM registrations r WHERE r.patient_id = c.patient_id \
                  AND r.status = 'accepted') AS registered_at \
                 FROM consultations c WHERE c.appointment_id = $1",
                &[Param::from(appointment.to_string())],
            )
            .await?;
        row.map(|row| {
            Ok(ConsultationRef {
                id: row.parse("id")?,
                appointment,
                patient: PatientRef {
                    patient: row.parse("patient_id")?,
                    registered_at: row.parse_opt("registered_at")?,
                },
                clinician: row.parse("clinician_id")?,
                practice: row.parse("practice_id")?,
            })
        })
        .transpose()
    }

    /// The consultation's recording, its segments and its appointment's status.
    pub async fn consultation_call(
        &self,
        grant: &impl ConsultationGrant<JoinConsultation>,
    ) -> Result<Option<CallFacts>> {
        let owned = Owned::of(grant);
        let Some(row) = self
            .select_one(
                owned.scope(),
                "SELECT c.recording_id, a.status FROM consultations c \
                 JOIN appointments a ON a.id = c.appointment_id WHERE c.id = $1",
                &[Param::from(&owned.consultation)],
            )
            .await?
        else {
            return Ok(None);
        };
        let recording: String = row.try_get("recording_id")?;
        let segments = self
            .select(
                owned.scope(),
                "SELECT idx, reason, mode, started_at FROM recording_segments WHERE recording_id = $1 \
                 ORDER BY idx",
                &[Param::from(&recording)],
            )
            .await?;
        if segments.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "recording {recording} has no segments"
            )));
        }
        Ok(Some(CallFacts {
            recording: row.parse("recording_id")?,
            status: row.parse("status")?,
            segments: segments.iter().map(stored_segment).collect::<Result<_>>()?,
        }))
    }

    /// The consultation's recording's data key as stored (hex of the wrapped key), if it has one yet.
    pub async fn recording_key(
        &self,
        grant: &impl ConsultationGrant<JoinConsultation>,
    ) -> Result<Option<String>> {
        let owned = Owned::of(grant);
        let row = self
            .select_one(
                owned.scope(),
                "SELECT r.wrapped_key FROM consultations c JOIN recordings r ON r.id = c.recording_id \
                 WHERE c.id = $1",
                &[Param::from(&owned.consultation)],
            )
            .await?;
        match row {
            Some(row) => row.try_get("wrapped_key"),
            None => Ok(None),
        }
    }

    /// Stores `wrapped_hex` as the recording's key unless it already has one, and returns the key it has
    /// now: the first writer wins, so two participants joining at once end up with the same key.
    pub async fn set_recording_key_if_absent(
        &self,
        grant: &impl ConsultationGrant<JoinConsultation>,
        wrapped_hex: &str,
    ) -> Result<String> {
        let owned = Owned::of(grant);
        let mut tx = self.write(owned.scope()).await?;
        sqlx::query(
            "UPDATE recordings SET wrapped_key = $1 \
             WHERE id = (SELECT recording_id FROM consultations WHERE id = $2) AND wrapped_key IS NULL",
        )
        .bind(wrapped_hex)
        .bind(&owned.consultation)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT r.wrapped_key FROM consultations c JOIN recordings r ON r.id = c.recording_id \
             WHERE c.id = $1",
        )
        .bind(&owned.consultation)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let row = row.ok_or_else(|| StoreError::Corrupt("the consultation's recording is gone".into()))?;
        OwnedRow::from_any(&row)?
            .try_get::<Option<String>>("wrapped_key")?
            .ok_or_else(|| StoreError::Corrupt("the recording's key was not stored".into()))
    }

    /// Appends a segment to the consultation's recording and returns its index, one more than the last,
    /// decided inside the transaction. Refused once the consultation is no longer running.
    pub async fn add_segment(
        &self,
        grant: &impl ConsultationGrant<JoinConsultation>,
        reason: SegmentReason,
        mode: ConsultationMode,
        at_ms: i64,
    ) -> Result<u32> {
        if reason == SegmentReason::Start {
            return Err(StoreError::Invalid(
                "a recording has one start segment, made with it".into(),
            ));
        }
        let owned = Owned::of(grant);
        let mut tx = self.write(owned.scope()).await?;
        // Takes the recording's row lock on PostgreSQL, so two segments added at once get different indexes.
        let row = sqlx::query(
            "UPDATE recordings SET created_at = created_at \
             WHERE id = (SELECT recording_id FROM consultations WHERE id = $1) RETURNING id",
        )
        .bind(&owned.consultation)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the consultation's recording is gone".into()))?;
        let recording: String = OwnedRow::from_any(&row)?.try_get("id")?;
        let row = sqlx::query(
            "SELECT a.status, (SELECT MAX(s.idx) FROM recording_segments s WHERE s.recording_id = $1) AS last \
             FROM consultations c JOIN appointments a ON a.id = c.appointment_id WHERE c.id = $2",
        )
        .bind(&recording)
        .bind(&owned.consultation)
        .fetch_one(&mut *tx)
        .await?;
        let row = OwnedRow::from_any(&row)?;
        let status: AppointmentStatus = row.parse("status")?;
        if status != AppointmentStatus::InConsultation {
            return Err(StoreError::Invalid(format!(
                "the consultation is not running: the appointment is {status}"
            )));
        }
        let last: i64 = row
            .try_get::<Option<i64>>("last")?
            .ok_or_else(|| StoreError::Corrupt(format!("recording {recording} has no segments")))?;
        let index = u32::try_from(last + 1).map_err(|_| StoreError::Corrupt("segment index".into()))?;
        sqlx::query(
            "INSERT INTO recording_segments (recording_id, idx, reason, mode, started_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&recording)
        .bind(i64::from(index))
        .bind(segment_reason(reason))
        .bind(mode.as_str())
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(index)
    }
}

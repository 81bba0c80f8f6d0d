//! Recordings after the call: what their participants see of them, their playback copies, the queue of
//! recordings waiting to be remuxed, break-glass grants, and the practice's retention and replay
//! settings. Reads of a recording take a grant for it; the remux queue and the retention sweep are the
//! server's own work and hold ids only until they read in one recording's scope.

use confide_domain::consultation::{ConsultationMode, StoredSegment};
use confide_domain::policy::actions::{
    BreakGlassRecording, ListClinicianRecordings, ListRecordings, ManageReplay, ManageRetention,
    PlayRecording, ReadRecording,
};
use confide_domain::policy::{Grant, PatientRef, RecordingRef};
use confide_domain::{AppointmentId, ConsultationId, PracticeId, RecordingId, UserId};
use sqlx::{Any, Transaction};
use uuid::Uuid;

use crate::read::{OwnedRow, Param};
use crate::scheduling::stored_segment;
use crate::{Result, Scope, Store, StoreError};

/// Where a recording is in its life after the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordingStatus {
    /// The call is still going on.
    Recording,
    /// The call has ended and the playback copy is being made.
    Processing,
    Ready,
    /// The playback copy could not be made; the segments are kept.
    Failed,
    /// Retention erased it.
    Expired,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Processing => "processing",
            RecordingStatus::Ready => "ready",
            RecordingStatus::Failed => "failed",
            RecordingStatus::Expired => "expired",
        }
    }
}

/// A recording as its participants see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingSummary {
    pub id: RecordingId,
    pub consultation: ConsultationId,
    pub appointment: AppointmentId,
    pub patient: UserId,
    pub patient_name: String,
    pub clinician: UserId,
    pub clinician_name: String,
    pub practice: PracticeId,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// The playback copy's length, once it is made.
    pub duration_ms: Option<i64>,
    pub status: RecordingStatus,
    pub segments: Vec<StoredSegment>,
    /// One playback copy per participant, once they are made.
    pub copies: Vec<RecordingCopy>,
}

impl RecordingSummary {
    /// The modes the call was in, each once, in the order they were first used.
    pub fn modes(&self) -> Vec<ConsultationMode> {
        let mut modes = Vec::new();
        for s in &self.segments {
            if !modes.contains(&s.mode) {
                modes.push(s.mode);
            }
        }
        modes
    }
}

/// One participant's playback copy: their audio and video only, which a browser plays whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingCopy {
    /// The id the call gave the participant: a user's id.
    pub participant: Uuid,
    pub object: String,
    /// Plaintext length.
    pub len: i64,
    pub duration_ms: i64,
    /// Where the copy's 0 is, in ms after the start of the recording's own copy.
    pub offset_ms: i64,
}

fn copy_of(row: &OwnedRow) -> Result<RecordingCopy> {
    Ok(RecordingCopy {
        participant: row.parse("participant_id")?,
        object: row.try_get("object")?,
        len: row.try_get("len")?,
        duration_ms: row.try_get("duration_ms")?,
        offset_ms: row.try_get("offset_ms")?,
    })
}

/// What playing a recording back needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaybackFacts {
    pub status: RecordingStatus,
    /// Hex of the recording's wrapped data key; gone once retention erased it.
    pub wrapped_key: Option<String>,
    /// Hex of the playback key sealed under the data key.
    pub playback_key: Option<String>,
    pub object: Option<String>,
    /// Plaintext length of the playback copy.
    pub len: Option<i64>,
    /// The participants' own copies.
    pub copies: Vec<RecordingCopy>,
    /// The practice's own replay switch.
    pub practice_replay_enabled: bool,
}

/// A recording waiting for its playback copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingJob {
    pub recording: RecordingId,
    pub patient: UserId,
    pub practice: PracticeId,
    pub attempts: i64,
}

/// What a remux reads: the key, the segments, and the playback key if one was sealed before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemuxFacts {
    pub wrapped_key: Option<String>,
    pub playback_key: Option<String>,
    pub segments: Vec<StoredSegment>,
    pub expired: bool,
}

/// A recording whose keys retention has erased and whose files may still need removing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasable {
    pub recording: RecordingId,
    /// The recording's playback copy and its participants' copies.
    pub objects: Vec<String>,
    pub segments: Vec<u32>,
}

/// The recording's row with its consultation and participants' names; callers add the WHERE clause.
macro_rules! summary_select {
    () => {
        "SELECT r.id, r.consultation_id, c.appointment_id, r.patient_id, r.clinician_id, r.practice_id, \
         pu.name AS patient_name, cu.name AS clinician_name, c.started_at, c.ended_at, r.duration_ms, \
         r.playback_object, r.expired_at, j.state AS job_state \
         FROM recordings r JOIN consultations c ON c.id = r.consultation_id \
         JOIN users pu ON pu.id = r.patient_id JOIN users cu ON cu.id = r.clinician_id \
         LEFT JOIN recording_jobs j ON j.recording_id = r.id"
    };
}

fn status_of(row: &OwnedRow) -> Result<RecordingStatus> {
    Ok(if row.try_get::<Option<i64>>("expired_at")?.is_some() {
        RecordingStatus::Expired
    } else if row.try_get::<Option<String>>("playback_object")?.is_some() {
        RecordingStatus::Ready
    } else if row.try_get::<Option<String>>("job_state")?.as_deref() == Some("failed") {
        RecordingStatus::Failed
    } else if row.try_get::<Option<i64>>("ended_at")?.is_none() {
        RecordingStatus::Recording
    } else {
        RecordingStatus::Processing
    })
}

/// The strings a recording grant's scope borrows.
struct Owned {
    actor: String,
    patient: String,
    practice: String,
    recording: String,
}

impl Owned {
    fn of(actor: UserId, r: &RecordingRef) -> Owned {
        Owned {
            actor: actor.to_string(),
            patient: r.patient.patient.to_string(),
            practice: r.practice.to_string(),
            recording: r.id.to_string(),
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

/// Queues the remux of the recording of `appointment`'s consultation, if it had one, in the transaction
/// that completes the appointment. Queuing twice changes nothing.
pub(crate) async fn queue_remux(
    tx: &mut Transaction<'static, Any>,
    appointment: &str,
    at_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO recording_jobs (recording_id, patient_id, practice_id, state, attempts, run_at, created_at) \
         SELECT recording_id, patient_id, practice_id, 'pending', 0, $1, $1 FROM consultations \
         WHERE appointment_id = $2 ON CONFLICT (recording_id) DO NOTHING",
    )
    .bind(at_ms)
    .bind(appointment)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The facts the gate needs about a recording: whose it is, where its patient is registered now, and
    /// whether `asker` holds a break-glass grant on it that is still open at `now_ms`.
    pub async fn recording_ref(
        &self,
        id: RecordingId,
        asker: UserId,
        now_ms: i64,
    ) -> Result<Option<RecordingRef>> {
        let row = self
            .select_one(
                Scope {
                    gate_facts: true,
                    ..Scope::default()
                },
                "SELECT r.consultation_id, r.patient_id, r.clinician_id, r.practice_id, \
                 (SELECT g.practice_id FROM registrations g WHERE g.patient_id = r.patient_id \
                  AND g.status = 'accepted') AS registered_at, \
                 (SELECT MAX(b.clinician_id) FROM recording_break_glass b WHERE b.recording_id = r.id \
                  AND b.clinician_id = $1 AND b.expires_at > $2) AS glass \
                 FROM recordings r WHERE r.id = $3",
                // Numbered in the order they appear: SQLite numbers parameters by first appearance.
                &[
                    Param::from(asker.to_string()),
                    Param::from(now_ms),
                    Param::from(id.to_string()),
                ],
            )
            .await?;
        row.map(|row| {
            Ok(RecordingRef {
                id,
                consultation: row.parse("consultation_id")?,
                patient: PatientRef {
                    patient: row.parse("patient_id")?,
                    registered_at: row.parse_opt("registered_at")?,
                },
                clinician: row.parse("clinician_id")?,
                practice: row.parse("practice_id")?,
                break_glass_for: row.parse_opt("glass")?,
            })
        })
        .transpose()
    }

    /// A recording's segments in order, as rows of `idx, reason, mode, started_at`.
    pub(crate) async fn recording_segment_rows(
        &self,
        scope: Scope<'_>,
        recording: &str,
    ) -> Result<Vec<OwnedRow>> {
        self.select(
            scope,
            "SELECT idx, reason, mode, started_at FROM recording_segments WHERE recording_id = $1 ORDER BY idx",
            &[Param::from(recording)],
        )
        .await
    }

    /// A recording's participant copies, by participant.
    async fn recording_copies(&self, scope: Scope<'_>, recording: &str) -> Result<Vec<RecordingCopy>> {
        let rows = self
            .select(
                scope,
                "SELECT participant_id, object, len, duration_ms, offset_ms FROM recording_copies \
                 WHERE recording_id = $1 ORDER BY participant_id",
                &[Param::from(recording)],
            )
            .await?;
        rows.iter().map(copy_of).collect()
    }

    async fn summaries(&self, scope: Scope<'_>, rows: Vec<OwnedRow>) -> Result<Vec<RecordingSummary>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let segments = self.recording_segment_rows(scope, &id).await?;
            let copies = self.recording_copies(scope, &id).await?;
            out.push(RecordingSummary {
                id: row.parse("id")?,
                consultation: row.parse("consultation_id")?,
                appointment: row.parse("appointment_id")?,
                patient: row.parse("patient_id")?,
                patient_name: row.try_get("patient_name")?,
                clinician: row.parse("clinician_id")?,
                clinician_name: row.try_get("clinician_name")?,
                practice: row.parse("practice_id")?,
                started_at_ms: row.try_get("started_at")?,
                ended_at_ms: row.try_get("ended_at")?,
                duration_ms: row.try_get("duration_ms")?,
                status: status_of(&row)?,
                segments: segments.iter().map(stored_segment).collect::<Result<_>>()?,
                copies,
            });
        }
        Ok(out)
    }

    /// One recording, for someone the gate let read it.
    pub async fn recording(&self, grant: &Grant<ReadRecording>) -> Result<Option<RecordingSummary>> {
        let owned = Owned::of(grant.principal().user, grant.recording());
        let rows = self
            .select(
                owned.scope(),
                concat!(summary_select!(), " WHERE r.id = $1"),
                &[Param::from(&owned.recording)],
            )
            .await?;
        Ok(self.summaries(owned.scope(), rows).await?.into_iter().next())
    }

    /// A patient's own recordings, newest first.
    pub async fn patient_recording_list(
        &self,
        grant: &Grant<ListRecordings>,
    ) -> Result<Vec<RecordingSummary>> {
        let (actor, patient) = (grant.principal().user.to_string(), grant.patient().to_string());
        let scope = Scope {
            actor: Some(&actor),
            patient: Some(&patient),
            practice: None,
            gate_facts: false,
        };
        let rows = self
            .select(
                scope,
                concat!(
                    summary_select!(),
                    " WHERE r.patient_id = $1 ORDER BY c.started_at DESC, r.id"
                ),
                &[Param::from(&patient)],
            )
            .await?;
        self.summaries(scope, rows).await
    }

    /// The recordings of the consultations a clinician ran at their practice, newest first.
    pub async fn clinician_recording_list(
        &self,
        grant: &Grant<ListClinicianRecordings>,
    ) -> Result<Vec<RecordingSummary>> {
        let c = grant.on();
        let (actor, clinician, practice) = (
            grant.principal().user.to_string(),
            c.clinician.to_string(),
            c.practice.to_string(),
        );
        let scope = Scope {
            actor: Some(&actor),
            patient: None,
            practice: Some(&practice),
            gate_facts: false,
        };
        let rows = self
            .select(
                scope,
                concat!(
                    summary_select!(),
                    " WHERE r.clinician_id = $1 AND r.practice_id = $2 ORDER BY c.started_at DESC, r.id"
                ),
                &[Param::from(&clinician), Param::from(&practice)],
            )
            .await?;
        self.summaries(scope, rows).await
    }

    /// What playing the recording back needs, for someone the gate let play it.
    pub async fn recording_playback(&self, grant: &Grant<PlayRecording>) -> Result<Option<PlaybackFacts>> {
        let owned = Owned::of(grant.principal().user, grant.recording());
        let row = self
            .select_one(
                owned.scope(),
                "SELECT r.wrapped_key, r.playback_key, r.playback_object, r.playback_len, r.expired_at, \
                 c.ended_at, j.state AS job_state, p.replay_enabled \
                 FROM recordings r JOIN consultations c ON c.id = r.consultation_id \
                 JOIN practices p ON p.id = r.practice_id \
                 LEFT JOIN recording_jobs j ON j.recording_id = r.id WHERE r.id = $1",
                &[Param::from(&owned.recording)],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(PlaybackFacts {
            status: status_of(&row)?,
            wrapped_key: row.try_get("wrapped_key")?,
            playback_key: row.try_get("playback_key")?,
            object: row.try_get("playback_object")?,
            len: row.try_get("playback_len")?,
            copies: self.recording_copies(owned.scope(), &owned.recording).await?,
            practice_replay_enabled: row.try_get::<i64>("replay_enabled")? != 0,
        }))
    }

    /// Opens the glass for the grant's clinician until `expires_ms`, with the reason they typed.
    pub async fn open_break_glass(
        &self,
        grant: &Grant<BreakGlassRecording>,
        id: &str,
        reason: &str,
        at_ms: i64,
        expires_ms: i64,
    ) -> Result<()> {
        let r = grant.recording();
        let owned = Owned::of(grant.principal().user, r);
        let mut tx = self.write(owned.scope()).await?;
        sqlx::query(
            "INSERT INTO recording_break_glass (id, recording_id, patient_id, practice_id, clinician_id, reason, \
             granted_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&owned.recording)
        .bind(&owned.patient)
        .bind(&owned.practice)
        .bind(&owned.actor)
        .bind(reason)
        .bind(at_ms)
        .bind(expires_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many days the grant's practice keeps recordings (`None`: no limit).
    pub async fn set_recording_retention(
        &self,
        grant: &Grant<ManageRetention>,
        days: Option<i64>,
    ) -> Result<()> {
        if days.is_some_and(|d| d <= 0) {
            return Err(StoreError::Invalid(
                "retention is a number of days above 0".into(),
            ));
        }
        let practice = grant.practice().to_string();
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query("UPDATE practices SET recording_retention_days = $1 WHERE id = $2")
            .bind(days)
            .bind(&practice)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Turns replay of the grant's practice's recordings on or off.
    pub async fn set_replay_enabled(&self, grant: &Grant<ManageReplay>, enabled: bool) -> Result<()> {
        let practice = grant.practice().to_string();
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query("UPDATE practices SET replay_enabled = $1 WHERE id = $2")
            .bind(i64::from(enabled))
            .bind(&practice)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Recordings waiting for their playback copy whose turn has come, oldest first.
    pub async fn due_recording_jobs(&self, now_ms: i64, limit: i64) -> Result<Vec<RecordingJob>> {
        let rows = self
            .select(
                Scope::default(),
                "SELECT recording_id, patient_id, practice_id, attempts FROM recording_jobs \
                 WHERE state = 'pending' AND run_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
                 ORDER BY run_at, recording_id LIMIT $2",
                &[Param::from(now_ms), Param::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RecordingJob {
                    recording: r.parse("recording_id")?,
                    patient: r.parse("patient_id")?,
                    practice: r.parse("practice_id")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Takes a job for `lease_ms`; false if another runner has it or it is no longer pending.
    pub async fn claim_recording_job(&self, job: &RecordingJob, now_ms: i64, lease_ms: i64) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let taken = sqlx::query(
            "UPDATE recording_jobs SET lease_until = $1 WHERE recording_id = $2 AND state = 'pending' \
             AND (lease_until IS NULL OR lease_until <= $3)",
        )
        .bind(now_ms + lease_ms)
        .bind(job.recording.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(taken.rows_affected() == 1)
    }

    /// What the remux of a job's recording reads, in the recording's patient's scope.
    pub async fn remux_facts(&self, job: &RecordingJob) -> Result<Option<RemuxFacts>> {
        let (patient, recording) = (job.patient.to_string(), job.recording.to_string());
        let scope = Scope {
            patient: Some(&patient),
            ..Scope::default()
        };
        let Some(row) = self
            .select_one(
                scope,
                "SELECT wrapped_key, playback_key, expired_at FROM recordings WHERE id = $1 AND patient_id = $2",
                &[Param::from(&recording), Param::from(&patient)],
            )
            .await?
        else {
            return Ok(None);
        };
        let segments = self
            .select(
                scope,
                "SELECT idx, reason, mode, started_at FROM recording_segments WHERE recording_id = $1 \
                 ORDER BY idx",
                &[Param::from(&recording)],
            )
            .await?;
        Ok(Some(RemuxFacts {
            wrapped_key: row.try_get("wrapped_key")?,
            playback_key: row.try_get("playback_key")?,
            segments: segments.iter().map(stored_segment).collect::<Result<_>>()?,
            expired: row.try_get::<Option<i64>>("expired_at")?.is_some(),
        }))
    }

    /// Stores the sealed playback key unless the recording has one, and returns the one it has now: the
    /// first writer wins, so the copy is always under the key that is kept.
    pub async fn set_playback_key_if_absent(&self, job: &RecordingJob, sealed_hex: &str) -> Result<String> {
        let (patient, recording) = (job.patient.to_string(), job.recording.to_string());
        let mut tx = self
            .write(Scope {
                patient: Some(&patient),
                ..Scope::default()
            })
            .await?;
        sqlx::query(
            "UPDATE recordings SET playback_key = $1 WHERE id = $2 AND playback_key IS NULL \
             AND expired_at IS NULL",
        )
        .bind(sealed_hex)
        .bind(&recording)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT playback_key FROM recordings WHERE id = $1")
            .bind(&recording)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let row = row.ok_or_else(|| StoreError::Corrupt("the recording being remuxed is gone".into()))?;
        OwnedRow::from_any(&row)?
            .try_get::<Option<String>>("playback_key")?
            .ok_or_else(|| StoreError::Invalid("the recording has expired".into()))
    }

    /// Records the playback copy and the participants' copies and marks the job done, together. Returns
    /// false if the recording expired meanwhile, in which case no copy is recorded and the caller removes
    /// them.
    pub async fn finish_remux(
        &self,
        job: &RecordingJob,
        object: &str,
        len: i64,
        duration_ms: i64,
        copies: &[RecordingCopy],
        at_ms: i64,
    ) -> Result<bool> {
        let (patient, recording) = (job.patient.to_string(), job.recording.to_string());
        let mut tx = self
            .write(Scope {
                patient: Some(&patient),
                ..Scope::default()
            })
            .await?;
        let done = sqlx::query(
            "UPDATE recordings SET playback_object = $1, playback_len = $2, duration_ms = $3, \
             playback_error = NULL WHERE id = $4 AND expired_at IS NULL",
        )
        .bind(object)
        .bind(len)
        .bind(duration_ms)
        .bind(&recording)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            // A job run again after a crash makes the same copies under the same names.
            sqlx::query("DELETE FROM recording_copies WHERE recording_id = $1")
                .bind(&recording)
                .execute(&mut *tx)
                .await?;
            for copy in copies {
                sqlx::query(
                    "INSERT INTO recording_copies (recording_id, participant_id, object, len, duration_ms, \
                     offset_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&recording)
                .bind(copy.participant.to_string())
                .bind(&copy.object)
                .bind(copy.len)
                .bind(copy.duration_ms)
                .bind(copy.offset_ms)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "UPDATE recording_jobs SET state = 'done', finished_at = $1, attempts = attempts + 1, \
             lease_until = NULL WHERE recording_id = $2",
        )
        .bind(at_ms)
        .bind(&recording)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed remux: it runs again at `retry_at_ms`, or is given up and left for the operator.
    pub async fn fail_recording_job(
        &self,
        job: &RecordingJob,
        error: &str,
        retry_at_ms: Option<i64>,
        at_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write(Scope::default()).await?;
        let recording = job.recording.to_string();
        match retry_at_ms {
            Some(retry) => sqlx::query(
                "UPDATE recording_jobs SET attempts = attempts + 1, last_error = $1, run_at = $2, \
                 lease_until = NULL WHERE recording_id = $3 AND state = 'pending'",
            )
            .bind(error)
            .bind(retry)
            .bind(&recording),
            None => sqlx::query(
                "UPDATE recording_jobs SET attempts = attempts + 1, last_error = $1, state = 'failed', \
                 finished_at = $2, lease_until = NULL WHERE recording_id = $3 AND state = 'pending'",
            )
            .bind(error)
            .bind(at_ms)
            .bind(&recording),
        }
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Practices that keep recordings for a limited time, with the number of days.
    pub async fn practices_with_retention(&self) -> Result<Vec<(PracticeId, i64)>> {
        let rows = self
            .select(
                Scope::default(),
                "SELECT id, recording_retention_days FROM practices WHERE recording_retention_days IS NOT NULL \
                 ORDER BY id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.parse("id")?, r.try_get("recording_retention_days")?)))
            .collect()
    }

    /// Crypto-erases the practice's recordings of calls that started before `cutoff_ms` and have ended:
    /// their data keys and playback keys are deleted, in one transaction, before any file is touched.
    /// Returns how many were erased.
    pub async fn expire_recordings(&self, practice: PracticeId, cutoff_ms: i64, at_ms: i64) -> Result<u64> {
        let practice = practice.to_string();
        let mut tx = self
            .write(Scope {
                practice: Some(&practice),
                ..Scope::default()
            })
            .await?;
        let expired = sqlx::query(
            "UPDATE recordings SET wrapped_key = NULL, playback_key = NULL, expired_at = $1 \
             WHERE practice_id = $2 AND expired_at IS NULL AND created_at < $3 \
             AND consultation_id IN (SELECT id FROM consultations WHERE practice_id = $2 AND ended_at IS NOT NULL)",
        )
        .bind(at_ms)
        .bind(&practice)
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        // A remux still waiting has nothing left to read.
        sqlx::query(
            "UPDATE recording_jobs SET state = 'done', finished_at = $1, last_error = 'expired' \
             WHERE state = 'pending' AND recording_id IN \
             (SELECT id FROM recordings WHERE practice_id = $2 AND expired_at IS NOT NULL)",
        )
        .bind(at_ms)
        .bind(&practice)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(expired.rows_affected())
    }

    /// The practice's erased recordings whose files are still to be removed.
    pub async fn erasable_recordings(&self, practice: PracticeId) -> Result<Vec<Erasable>> {
        let practice = practice.to_string();
        let scope = Scope {
            practice: Some(&practice),
            ..Scope::default()
        };
        let rows = self
            .select(
                scope,
                "SELECT id, playback_object FROM recordings WHERE practice_id = $1 AND expired_at IS NOT NULL \
                 AND erased_at IS NULL ORDER BY id",
                &[Param::from(&practice)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let segments = self
                .select(
                    scope,
                    "SELECT idx, reason, mode, started_at FROM recording_segments WHERE recording_id = $1 \
                     ORDER BY idx",
                    &[Param::from(&id)],
                )
                .await?;
            let mut objects: Vec<String> = row
                .try_get::<Option<String>>("playback_object")?
                .into_iter()
                .collect();
            objects.extend(
                self.recording_copies(scope, &id)
                    .await?
                    .into_iter()
                    .map(|c| c.object),
            );
            out.push(Erasable {
                recording: row.parse("id")?,
                objects,
                segments: segments
                    .iter()
                    .map(|s| stored_segment(s).map(|s| s.index))
                    .collect::<Result<_>>()?,
            });
        }
        Ok(out)
    }

    /// Records that an erased recording's files are gone, with its participants' copies.
    pub async fn mark_erased(&self, practice: PracticeId, recording: RecordingId, at_ms: i64) -> Result<()> {
        let practice = practice.to_string();
        let mut tx = self
            .write(Scope {
                practice: Some(&practice),
                ..Scope::default()
            })
            .await?;
        sqlx::query(
            "UPDATE recordings SET erased_at = $1, playback_object = NULL WHERE id = $2 AND practice_id = $3 \
             AND expired_at IS NOT NULL",
        )
        .bind(at_ms)
        .bind(recording.to_string())
        .bind(&practice)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM recording_copies WHERE recording_id = $1 AND recording_id IN \
             (SELECT id FROM recordings WHERE practice_id = $2 AND expired_at IS NOT NULL)",
        )
        .bind(recording.to_string())
        .bind(&practice)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

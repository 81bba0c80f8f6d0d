//! Availability, appointments and the jobs that email about them.
//!
//! Double booking is refused by the database itself: an appointment that holds its time claims its
//! clinician's five-minute units in `appointment_units`, whose primary key admits each unit once. The
//! unique violation of a losing booking becomes [`Conflict::SlotTaken`].

use confide_domain::consultation::{
    Consultation, ConsultationMode, SegmentReason, StoredRecording, StoredSegment,
};
use confide_domain::ids::AvailabilityId;
use confide_domain::policy::actions::{
    BookAppointment, CancelAppointment, CheckIn, ListAppointments, ListRecordings, ManageAvailability,
    ReadAppointment, RescheduleAppointment, RunConsultation, ViewSchedule,
};
use confide_domain::policy::{AppointmentRef, ClinicianRef, Grant, PatientRef};
use confide_domain::scheduling::{
    AppointmentStatus, AvailabilityException, AvailabilityRule, Booked, ConsultationKind, ExceptionKind,
    KindsOffered, MinuteOfDay, SlotLength, check_in_open, units, weekday_from_number,
};
use confide_domain::{AppointmentId, PracticeId, Timestamp, UserId};
use sqlx::{Any, Transaction};

use crate::read::{OwnedRow, Param};
use crate::{Conflict, Result, Scope, Store, StoreError, is_unique_violation};

/// An availability rule as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRule {
    pub id: AvailabilityId,
    pub clinician: UserId,
    pub rule: AvailabilityRule,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredException {
    pub id: AvailabilityId,
    pub clinician: UserId,
    pub exception: AvailabilityException,
    pub note: String,
}

/// A clinician as patients choose them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClinicianSummary {
    pub id: UserId,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appointment {
    pub id: AppointmentId,
    pub practice: PracticeId,
    pub practice_name: String,
    pub time_zone: String,
    pub clinician: UserId,
    pub clinician_name: String,
    pub patient: UserId,
    pub patient_name: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub kind: ConsultationKind,
    pub reason: String,
    pub status: AppointmentStatus,
    pub sequence: i64,
    pub checked_in_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub cancel_message: Option<String>,
}

/// An appointment on a schedule: who and when, without the patient's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleEntry {
    pub id: AppointmentId,
    pub clinician: UserId,
    pub patient: UserId,
    pub patient_name: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub kind: ConsultationKind,
    pub status: AppointmentStatus,
    pub checked_in_at_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    Booked,
    Rescheduled,
    Cancelled,
    Reminder24h,
    Reminder1h,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Booked => "booked",
            JobKind::Rescheduled => "rescheduled",
            JobKind::Cancelled => "cancelled",
            JobKind::Reminder24h => "reminder_24h",
            JobKind::Reminder1h => "reminder_1h",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        [
            JobKind::Booked,
            JobKind::Rescheduled,
            JobKind::Cancelled,
            JobKind::Reminder24h,
            JobKind::Reminder1h,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or(())
    }
}

/// A job to add with a change to an appointment, in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub id: String,
    pub kind: JobKind,
    pub run_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub appointment: AppointmentId,
    pub patient: UserId,
    pub run_at_ms: i64,
    pub attempts: i64,
}

/// Where an appointment moves to: the new slot, what it offers, and the kind if the patient changes it.
#[derive(Clone, Copy, Debug)]
pub struct NewTime {
    pub start_ms: i64,
    pub end_ms: i64,
    pub kind: Option<ConsultationKind>,
    pub offers: KindsOffered,
}

#[derive(Clone, Copy)]
pub struct NewAppointment<'a> {
    pub id: AppointmentId,
    pub clinician: UserId,
    pub start_ms: i64,
    pub end_ms: i64,
    pub kind: ConsultationKind,
    pub reason: &'a str,
    pub at_ms: i64,
    pub jobs: &'a [NewJob],
}

fn kinds_of(row: &OwnedRow, column: &str) -> Result<KindsOffered> {
    row.parse(column)
}

fn minute(row: &OwnedRow, column: &str) -> Result<MinuteOfDay> {
    MinuteOfDay::new(row.try_get(column)?).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn slot_length(minutes: i64) -> Result<SlotLength> {
    SlotLength::try_from(minutes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn stored_rule(row: &OwnedRow) -> Result<StoredRule> {
    let corrupt = |e: confide_domain::scheduling::AvailabilityError| StoreError::Corrupt(e.to_string());
    let rule = AvailabilityRule::new(
        weekday_from_number(row.try_get("weekday")?).map_err(corrupt)?,
        minute(row, "start_minute")?,
        minute(row, "end_minute")?,
        slot_length(row.try_get("slot_minutes")?)?,
        kinds_of(row, "kinds")?,
        row.parse("valid_from")?,
        row.parse_opt("valid_until")?,
    )
    .map_err(corrupt)?;
    Ok(StoredRule {
        id: row.parse("id")?,
        clinician: row.parse("clinician_id")?,
        rule,
    })
}

fn stored_exception(row: &OwnedRow) -> Result<StoredException> {
    let kind = match row.try_get::<String>("kind")?.as_str() {
        "blocked" => ExceptionKind::Blocked,
        _ => ExceptionKind::Extra {
            slot: slot_length(row.try_get::<Option<i64>>("slot_minutes")?.unwrap_or_default())?,
            kinds: row
                .parse_opt("kinds")?
                .ok_or_else(|| StoreError::Corrupt("extra session without kinds".into()))?,
        },
    };
    let exception = AvailabilityException::new(
        row.parse("on_date")?,
        minute(row, "start_minute")?,
        minute(row, "end_minute")?,
        kind,
    )
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(StoredException {
        id: row.parse("id")?,
        clinician: row.parse("clinician_id")?,
        exception,
        note: row.try_get("note")?,
    })
}

fn appointment(row: &OwnedRow) -> Result<Appointment> {
    Ok(Appointment {
        id: row.parse("id")?,
        practice: row.parse("practice_id")?,
        practice_name: row.try_get("practice_name")?,
        time_zone: row.try_get("time_zone")?,
        clinician: row.parse("clinician_id")?,
        clinician_name: row.try_get("clinician_name")?,
        patient: row.parse("patient_id")?,
        patient_name: row.try_get("patient_name")?,
        start_ms: row.try_get("starts_at")?,
        end_ms: row.try_get("ends_at")?,
        kind: row.parse("kind")?,
        reason: row.try_get("reason")?,
        status: row.parse("status")?,
        sequence: row.try_get("sequence")?,
        checked_in_at_ms: row.try_get("checked_in_at")?,
        started_at_ms: row.try_get("started_at")?,
        cancel_message: row.try_get("cancel_message")?,
    })
}

fn schedule_entry(row: &OwnedRow) -> Result<ScheduleEntry> {
    Ok(ScheduleEntry {
        id: row.parse("id")?,
        clinician: row.parse("clinician_id")?,
        patient: row.parse("patient_id")?,
        patient_name: row.try_get("patient_name")?,
        start_ms: row.try_get("starts_at")?,
        end_ms: row.try_get("ends_at")?,
        kind: row.parse("kind")?,
        status: row.parse("status")?,
        checked_in_at_ms: row.try_get("checked_in_at")?,
    })
}

macro_rules! appointment_select {
    () => {
        "SELECT a.id, a.practice_id, pr.name AS practice_name, pr.time_zone, a.clinician_id, \
         c.name AS clinician_name, a.patient_id, p.name AS patient_name, a.starts_at, a.ends_at, a.kind, \
         a.reason, a.status, a.sequence, a.checked_in_at, a.started_at, a.cancel_message \
         FROM appointments a JOIN practices pr ON pr.id = a.practice_id \
         JOIN users c ON c.id = a.clinician_id JOIN users p ON p.id = a.patient_id"
    };
}

const RULE_COLUMNS: &str = "id, clinician_id, weekday, start_minute, end_minute, slot_minutes, kinds, valid_from, \
                            valid_until";

async fn claim_units(
    tx: &mut Transaction<'static, Any>,
    clinician: &str,
    appointment: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<()> {
    for unit in units(start_ms, end_ms) {
        let claimed = sqlx::query(
            "INSERT INTO appointment_units (clinician_id, unit_start, appointment_id) VALUES ($1, $2, $3)",
        )
        .bind(clinician)
        .bind(unit)
        .bind(appointment)
        .execute(&mut **tx)
        .await;
        match claimed {
            Err(e) if is_unique_violation(&e) => return Err(Conflict::SlotTaken.into()),
            other => other?,
        };
    }
    Ok(())
}

fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}

/// Times a booking change runs when PostgreSQL ends it as a deadlock's victim.
const DEADLOCK_ATTEMPTS: u32 = 3;

/// Runs a change again when PostgreSQL ended it as a deadlock's victim: two changes reached for each
/// other's time at once, and the victim was undone whole. Answering "slot taken" would be wrong when the
/// victim was moving out of the very time the other one wanted; run again after the other, it gets the
/// answer it would have had in turn.
async fn retry_deadlocks<T, F, Fut>(mut change: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match change().await {
            Err(StoreError::Database(e)) if is_deadlock(&e) && attempt < DEADLOCK_ATTEMPTS => attempt += 1,
            done => return done,
        }
    }
}

async fn release_units(tx: &mut Transaction<'static, Any>, appointment: &str) -> Result<()> {
    sqlx::query("DELETE FROM appointment_units WHERE appointment_id = $1")
        .bind(appointment)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn add_jobs(
    tx: &mut Transaction<'static, Any>,
    appointment: &str,
    patient: &str,
    jobs: &[NewJob],
    at_ms: i64,
) -> Result<()> {
    for job in jobs {
        sqlx::query(
            "INSERT INTO jobs (id, kind, appointment_id, patient_id, run_at, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
        )
        .bind(&job.id)
        .bind(job.kind.as_str())
        .bind(appointment)
        .bind(patient)
        .bind(job.run_at_ms)
        .bind(at_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Reminders for a time that no longer holds are not sent.
async fn cancel_reminders(tx: &mut Transaction<'static, Any>, appointment: &str, at_ms: i64) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = $1 \
         WHERE appointment_id = $2 AND state = 'pending' AND kind IN ('reminder_24h', 'reminder_1h')",
    )
    .bind(at_ms)
    .bind(appointment)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An appointment's state and times, read inside the transaction that changes it.
struct Current {
    status: AppointmentStatus,
    kind: ConsultationKind,
    start_ms: i64,
    end_ms: i64,
}

/// Also takes the appointment's row lock on PostgreSQL (SQLite's IMMEDIATE transactions already run one
/// at a time), so two changes to one appointment cannot both act on the state they read.
async fn current(tx: &mut Transaction<'static, Any>, appointment: &str) -> Result<Current> {
    let row = sqlx::query(
        "UPDATE appointments SET updated_at = updated_at WHERE id = $1 \
         RETURNING status, kind, starts_at, ends_at",
    )
    .bind(appointment)
    .fetch_one(&mut **tx)
    .await?;
    let row = OwnedRow::from_any(&row)?;
    Ok(Current {
        status: row.parse("status")?,
        kind: row.parse("kind")?,
        start_ms: row.try_get("starts_at")?,
        end_ms: row.try_get("ends_at")?,
    })
}

/// Refuses a patient's change once the appointment is closer than the practice's cutoff.
fn check_cutoff(current: &Current, earliest_start_ms: Option<i64>) -> Result<()> {
    match earliest_start_ms {
        Some(earliest) if current.start_ms < earliest => Err(Conflict::PastCutoff.into()),
        _ => Ok(()),
    }
}

pub(crate) fn segment_reason(reason: SegmentReason) -> &'static str {
    match reason {
        SegmentReason::Start => "start",
        SegmentReason::ModeSwitch => "mode_switch",
        SegmentReason::Reconnect => "reconnect",
        SegmentReason::Restart => "restart",
    }
}

pub(crate) fn stored_segment(row: &OwnedRow) -> Result<StoredSegment> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("recording segment {what}"));
    let reason = match row.try_get::<String>("reason")?.as_str() {
        "start" => SegmentReason::Start,
        "mode_switch" => SegmentReason::ModeSwitch,
        "reconnect" => SegmentReason::Reconnect,
        "restart" => SegmentReason::Restart,
        _ => return Err(corrupt("reason")),
    };
    let mode = match row.try_get::<String>("mode")?.as_str() {
        "audio_only" => ConsultationMode::AudioOnly,
        "video" => ConsultationMode::Video,
        _ => return Err(corrupt("mode")),
    };
    Ok(StoredSegment {
        index: u32::try_from(row.try_get::<i64>("idx")?).map_err(|_| corrupt("index"))?,
        reason,
        mode,
        started_at: Timestamp::from_millisecond(row.try_get("started_at")?).map_err(|_| corrupt("time"))?,
    })
}

fn appointment_scope<'a>(actor: &'a str, practice: &'a str) -> Scope<'a> {
    Scope {
        actor: Some(actor),
        patient: None,
        practice: Some(practice),
        gate_facts: false,
    }
}

impl Store {
    /// The facts the gate needs about a clinician: that they are one, and where they work.
    pub async fn clinician_ref(&self, clinician: UserId) -> Result<Option<ClinicianRef>> {
        let row = self
            .select_one(
                Scope::default(),
                "SELECT practice_id FROM users WHERE id = $1 AND role = 'clinician' AND disabled_at IS NULL",
                &[Param::from(clinician.to_string())],
            )
            .await?;
        row.map(|row| {
            Ok(ClinicianRef {
                clinician,
                practice: row.parse("practice_id")?,
            })
        })
        .transpose()
    }

    /// The clinicians patients can book at a practice, by name.
    pub async fn practice_clinicians(&self, practice: PracticeId) -> Result<Vec<ClinicianSummary>> {
        let rows = self
            .select(
                Scope::default(),
                "SELECT id, name FROM users WHERE practice_id = $1 AND role = 'clinician' AND disabled_at IS NULL \
                 ORDER BY name, id",
                &[Param::from(practice.to_string())],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ClinicianSummary {
                    id: r.parse("id")?,
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }

    /// A practice's cutoff for patients' changes, in minutes before the start.
    pub async fn booking_cutoff_minutes(&self, practice: PracticeId) -> Result<i64> {
        let row = self
            .select_one(
                Scope::default(),
                "SELECT booking_cutoff_minutes FROM practices WHERE id = $1",
                &[Param::from(practice.to_string())],
            )
            .await?;
        row.map_or(Ok(confide_domain::scheduling::DEFAULT_CUTOFF_MINUTES), |r| {
            r.try_get("booking_cutoff_minutes")
        })
    }

    pub async fn set_booking_cutoff_minutes(
        &self,
        grant: &Grant<confide_domain::policy::actions::ManagePracticeStaff>,
        minutes: i64,
    ) -> Result<()> {
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query("UPDATE practices SET booking_cutoff_minutes = $1 WHERE id = $2")
            .bind(minutes)
            .bind(grant.practice().to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A clinician's weekly rules and exceptions. Not patient data: it is when they work.
    pub async fn availability(&self, clinician: UserId) -> Result<(Vec<StoredRule>, Vec<StoredException>)> {
        let id = clinician.to_string();
        let rules = self
            .select(
                Scope::default(),
                "SELECT id, clinician_id, weekday, start_minute, end_minute, slot_minutes, kinds, valid_from, \
                 valid_until FROM availability_rules WHERE clinician_id = $1 ORDER BY weekday, start_minute, id",
                &[Param::from(&id)],
            )
            .await?;
        let exceptions = self
            .select(
                Scope::default(),
                "SELECT id, clinician_id, on_date, start_minute, end_minute, kind, slot_minutes, kinds, note \
                 FROM availability_exceptions WHERE clinician_id = $1 ORDER BY on_date, start_minute, id",
                &[Param::from(&id)],
            )
            .await?;
        Ok((
            rules.iter().map(stored_rule).collect::<Result<_>>()?,
            exceptions.iter().map(stored_exception).collect::<Result<_>>()?,
        ))
    }

    /// Adds a weekly rule unless it overlaps one the clinician has, checked inside the transaction.
    pub async fn add_availability_rule(
        &self,
        grant: &Grant<ManageAvailability>,
        id: AvailabilityId,
        rule: &AvailabilityRule,
        at_ms: i64,
    ) -> Result<StoredRule> {
        let clinician = grant.on().clinician.to_string();
        let mut tx = self.write(Scope::default()).await?;
        // Takes the clinician's row lock on PostgreSQL, so two editors cannot add overlapping rules at once.
        sqlx::query("UPDATE users SET name = name WHERE id = $1")
            .bind(&clinician)
            .execute(&mut *tx)
            .await?;
        let sql = format!("SELECT {RULE_COLUMNS} FROM availability_rules WHERE clinician_id = $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&clinician)
            .fetch_all(&mut *tx)
            .await?;
        let existing: Vec<AvailabilityRule> = rows
            .iter()
            .map(|r| {
                OwnedRow::from_any(r)
                    .and_then(|r| stored_rule(&r))
                    .map(|s| s.rule)
            })
            .collect::<Result<_>>()?;
        rule.check_against(&existing)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query(
            "INSERT INTO availability_rules (id, clinician_id, weekday, start_minute, end_minute, slot_minutes, \
             kinds, valid_from, valid_until, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id.to_string())
        .bind(&clinician)
        .bind(rule.weekday_number())
        .bind(rule.start.minutes())
        .bind(rule.end.minutes())
        .bind(rule.slot.minutes())
        .bind(rule.kinds.as_str())
        .bind(rule.valid_from.to_string())
        .bind(rule.valid_until.map(|d| d.to_string()))
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StoredRule {
            id,
            clinician: grant.on().clinician,
            rule: rule.clone(),
        })
    }

    /// Removes a rule; appointments already booked in it stay booked. False if it was not the clinician's.
    pub async fn remove_availability_rule(
        &self,
        grant: &Grant<ManageAvailability>,
        id: AvailabilityId,
    ) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let done = sqlx::query("DELETE FROM availability_rules WHERE id = $1 AND clinician_id = $2")
            .bind(id.to_string())
            .bind(grant.on().clinician.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn add_availability_exception(
        &self,
        grant: &Grant<ManageAvailability>,
        id: AvailabilityId,
        exception: &AvailabilityException,
        note: &str,
        at_ms: i64,
    ) -> Result<StoredException> {
        let (kind, slot, kinds) = match exception.kind {
            ExceptionKind::Blocked => ("blocked", None, None),
            ExceptionKind::Extra { slot, kinds } => ("extra", Some(slot.minutes()), Some(kinds.as_str())),
        };
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query(
            "INSERT INTO availability_exceptions (id, clinician_id, on_date, start_minute, end_minute, kind, \
             slot_minutes, kinds, note, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id.to_string())
        .bind(grant.on().clinician.to_string())
        .bind(exception.date.to_string())
        .bind(exception.start.minutes())
        .bind(exception.end.minutes())
        .bind(kind)
        .bind(slot)
        .bind(kinds)
        .bind(note)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StoredException {
            id,
            clinician: grant.on().clinician,
            exception: exception.clone(),
            note: note.to_owned(),
        })
    }

    pub async fn remove_availability_exception(
        &self,
        grant: &Grant<ManageAvailability>,
        id: AvailabilityId,
    ) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let done = sqlx::query("DELETE FROM availability_exceptions WHERE id = $1 AND clinician_id = $2")
            .bind(id.to_string())
            .bind(grant.on().clinician.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The times a clinician's appointments hold between two instants, read from the claimed units,
    /// which name no patient.
    pub async fn booked_times(&self, clinician: UserId, from_ms: i64, until_ms: i64) -> Result<Vec<Booked>> {
        let rows = self
            .select(
                Scope::default(),
                "SELECT unit_start FROM appointment_units WHERE clinician_id = $1 AND unit_start >= $2 \
                 AND unit_start < $3 ORDER BY unit_start",
                &[
                    Param::from(clinician.to_string()),
                    Param::from(from_ms - confide_domain::scheduling::UNIT_MS),
                    Param::from(until_ms),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let start_ms: i64 = r.try_get("unit_start")?;
                Ok(Booked {
                    start_ms,
                    end_ms: start_ms + confide_domain::scheduling::UNIT_MS,
                })
            })
            .collect()
    }

    /// Books a time for the grant's patient. The clinician must work at the grant's practice; the time
    /// must be free, which the database decides.
    pub async fn book_appointment(
        &self,
        grant: &Grant<BookAppointment>,
        new: NewAppointment<'_>,
    ) -> Result<Appointment> {
        self.book_appointment_sharing(grant, new, None).await
    }

    /// Books as [`Store::book_appointment`] does and, in the same transaction, attaches the symptom
    /// checker's summary the patient chose to share with the clinician.
    pub async fn book_appointment_sharing(
        &self,
        grant: &Grant<BookAppointment>,
        new: NewAppointment<'_>,
        triage: Option<crate::triage::SharedTriage<'_>>,
    ) -> Result<Appointment> {
        retry_deadlocks(|| self.book_once(grant, new, triage)).await
    }

    async fn book_once(
        &self,
        grant: &Grant<BookAppointment>,
        new: NewAppointment<'_>,
        triage: Option<crate::triage::SharedTriage<'_>>,
    ) -> Result<Appointment> {
        let on = grant.on();
        let (patient, practice) = (on.patient.patient.to_string(), on.practice.to_string());
        let (id, clinician) = (new.id.to_string(), new.clinician.to_string());
        let actor = grant.principal().user.to_string();
        let mut tx = self
            .write(Scope {
                actor: Some(&actor),
                patient: Some(&patient),
                practice: Some(&practice),
                gate_facts: false,
            })
            .await?;
        let works_there: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM users WHERE id = $1 AND role = 'clinician' AND practice_id = $2 AND disabled_at IS NULL",
        )
        .bind(&clinician)
        .bind(&practice)
        .fetch_optional(&mut *tx)
        .await?;
        if works_there.is_none() {
            return Err(Conflict::NotBookable.into());
        }
        sqlx::query(
            "INSERT INTO appointments (id, practice_id, clinician_id, patient_id, starts_at, ends_at, kind, reason, \
             status, sequence, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'booked', 0, $9, $9)",
        )
        .bind(&id)
        .bind(&practice)
        .bind(&clinician)
        .bind(&patient)
        .bind(new.start_ms)
        .bind(new.end_ms)
        .bind(new.kind.as_str())
        .bind(new.reason)
        .bind(new.at_ms)
        .execute(&mut *tx)
        .await?;
        claim_units(&mut tx, &clinician, &id, new.start_ms, new.end_ms).await?;
        add_jobs(&mut tx, &id, &patient, new.jobs, new.at_ms).await?;
        if let Some(shared) = &triage {
            crate::triage::attach(&mut tx, &id, &patient, shared, new.at_ms).await?;
        }
        let row = sqlx::query(concat!(appointment_select!(), " WHERE a.id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        appointment(&OwnedRow::from_any(&row)?)
    }

    /// The facts the gate needs about an appointment: whose it is and where.
    pub async fn appointment_ref(&self, id: AppointmentId) -> Result<Option<AppointmentRef>> {
        let row = self
            .select_one(
                Scope {
                    gate_facts: true,
                    ..Scope::default()
                },
                "SELECT a.patient_id, a.clinician_id, a.practice_id, \
                 (SELECT r.practice_id FROM registrations r WHERE r.patient_id = a.patient_id \
                  AND r.status = 'accepted') AS registered_at \
                 FROM appointments a WHERE a.id = $1",
                &[Param::from(id.to_string())],
            )
            .await?;
        row.map(|row| {
            Ok(AppointmentRef {
                id,
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

    pub async fn appointment(&self, grant: &Grant<ReadAppointment>) -> Result<Option<Appointment>> {
        let a = grant.appointment();
        let (actor, practice) = (grant.principal().user.to_string(), a.practice.to_string());
        let row = self
            .select_one(
                appointment_scope(&actor, &practice),
                concat!(appointment_select!(), " WHERE a.id = $1"),
                &[Param::from(a.id.to_string())],
            )
            .await?;
        row.as_ref().map(appointment).transpose()
    }

    /// A patient's appointments, soonest first.
    pub async fn patient_appointments(&self, grant: &Grant<ListAppointments>) -> Result<Vec<Appointment>> {
        let (actor, patient) = (grant.principal().user.to_string(), grant.patient().to_string());
        let rows = self
            .select(
                Scope {
                    actor: Some(&actor),
                    patient: Some(&patient),
                    practice: None,
                    gate_facts: false,
                },
                concat!(
                    appointment_select!(),
                    " WHERE a.patient_id = $1 ORDER BY a.starts_at, a.id"
                ),
                &[Param::from(&patient)],
            )
            .await?;
        rows.iter().map(appointment).collect()
    }

    /// A clinician's appointments that start in `[from_ms, until_ms)`, cancelled ones included.
    pub async fn schedule(
        &self,
        grant: &Grant<ViewSchedule>,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<ScheduleEntry>> {
        let c = grant.on();
        let (actor, practice) = (grant.principal().user.to_string(), c.practice.to_string());
        let rows = self
            .select(
                appointment_scope(&actor, &practice),
                "SELECT a.id, a.clinician_id, a.patient_id, p.name AS patient_name, a.starts_at, a.ends_at, a.kind, \
                 a.status, a.checked_in_at FROM appointments a JOIN users p ON p.id = a.patient_id \
                 WHERE a.clinician_id = $1 AND a.practice_id = $2 AND a.starts_at >= $3 AND a.starts_at < $4 \
                 ORDER BY a.starts_at, a.id",
                &[
                    Param::from(c.clinician.to_string()),
                    Param::from(&practice),
                    Param::from(from_ms),
                    Param::from(until_ms),
                ],
            )
            .await?;
        rows.iter().map(schedule_entry).collect()
    }

    async fn reread(&self, mut tx: Transaction<'static, Any>, id: &str) -> Result<Appointment> {
        let row = sqlx::query(concat!(appointment_select!(), " WHERE a.id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        appointment(&OwnedRow::from_any(&row)?)
    }

    /// Cancels an appointment and frees its time; pending reminders are dropped and `jobs` (the
    /// cancellation email) added. With `earliest_start_ms`, an appointment starting before it is refused
    /// (the patient's cutoff).
    pub async fn cancel_appointment(
        &self,
        grant: &Grant<CancelAppointment>,
        message: Option<&str>,
        at_ms: i64,
        earliest_start_ms: Option<i64>,
        jobs: &[NewJob],
    ) -> Result<Appointment> {
        let a = grant.appointment();
        let (actor, practice, id) = (
            grant.principal().user.to_string(),
            a.practice.to_string(),
            a.id.to_string(),
        );
        let mut tx = self.write(appointment_scope(&actor, &practice)).await?;
        let now = current(&mut tx, &id).await?;
        now.status
            .transition(AppointmentStatus::Cancelled)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        check_cutoff(&now, earliest_start_ms)?;
        sqlx::query(
            "UPDATE appointments SET status = 'cancelled', sequence = sequence + 1, updated_at = $1, \
             cancelled_by = $2, cancel_message = $3 WHERE id = $4",
        )
        .bind(at_ms)
        .bind(&actor)
        .bind(message)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        release_units(&mut tx, &id).await?;
        cancel_reminders(&mut tx, &id, at_ms).await?;
        add_jobs(&mut tx, &id, &a.patient.patient.to_string(), jobs, at_ms).await?;
        self.reread(tx, &id).await
    }

    /// Moves a booked appointment to a new time, unless it starts before `earliest_start_ms` (the
    /// cutoff). If the new time is taken, nothing changes.
    pub async fn reschedule_appointment(
        &self,
        grant: &Grant<RescheduleAppointment>,
        to: NewTime,
        at_ms: i64,
        earliest_start_ms: i64,
        jobs: &[NewJob],
    ) -> Result<Appointment> {
        retry_deadlocks(|| self.reschedule_once(grant, to, at_ms, earliest_start_ms, jobs)).await
    }

    async fn reschedule_once(
        &self,
        grant: &Grant<RescheduleAppointment>,
        to: NewTime,
        at_ms: i64,
        earliest_start_ms: i64,
        jobs: &[NewJob],
    ) -> Result<Appointment> {
        let a = grant.appointment();
        let (actor, practice, id) = (
            grant.principal().user.to_string(),
            a.practice.to_string(),
            a.id.to_string(),
        );
        let clinician = a.clinician.to_string();
        let mut tx = self.write(appointment_scope(&actor, &practice)).await?;
        let now = current(&mut tx, &id).await?;
        if now.status != AppointmentStatus::Booked {
            return Err(StoreError::Invalid(
                "only booked appointments can be moved".into(),
            ));
        }
        check_cutoff(&now, Some(earliest_start_ms))?;
        let kind = to.kind.unwrap_or(now.kind);
        if !to.offers.offers(kind) {
            return Err(StoreError::Invalid(format!(
                "the new slot offers {} consultations only",
                to.offers.as_str()
            )));
        }
        release_units(&mut tx, &id).await?;
        claim_units(&mut tx, &clinician, &id, to.start_ms, to.end_ms).await?;
        sqlx::query(
            "UPDATE appointments SET starts_at = $1, ends_at = $2, kind = $3, sequence = sequence + 1, \
             updated_at = $4 WHERE id = $5",
        )
        .bind(to.start_ms)
        .bind(to.end_ms)
        .bind(kind.as_str())
        .bind(at_ms)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        cancel_reminders(&mut tx, &id, at_ms).await?;
        add_jobs(&mut tx, &id, &a.patient.patient.to_string(), jobs, at_ms).await?;
        self.reread(tx, &id).await
    }

    async fn move_status(
        &self,
        appointment: &AppointmentRef,
        actor: UserId,
        to: AppointmentStatus,
        at_ms: i64,
    ) -> Result<Appointment> {
        let (actor, practice, id) = (
            actor.to_string(),
            appointment.practice.to_string(),
            appointment.id.to_string(),
        );
        let mut tx = self.write(appointment_scope(&actor, &practice)).await?;
        let now = current(&mut tx, &id).await?;
        let from = now.status;
        from.transition(to)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        if to == AppointmentStatus::CheckedIn {
            check_in_open(at_ms, now.start_ms, now.end_ms).map_err(|_| Conflict::CheckInNotOpen)?;
        }
        let stamp = match to {
            AppointmentStatus::CheckedIn => "checked_in_at",
            AppointmentStatus::InConsultation => "started_at",
            _ => "finished_at",
        };
        let sql = format!(
            "UPDATE appointments SET status = $1, updated_at = $2, {stamp} = $2 WHERE id = $3 AND status = $4"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(at_ms)
            .bind(&id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Invalid(format!(
                "an appointment that is {from} cannot become {to}"
            )));
        }
        if to == AppointmentStatus::NoShow {
            cancel_reminders(&mut tx, &id, at_ms).await?;
        }
        if to == AppointmentStatus::Completed {
            sqlx::query("UPDATE consultations SET ended_at = $1 WHERE appointment_id = $2")
                .bind(at_ms)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            crate::recordings::queue_remux(&mut tx, &id, at_ms).await?;
        }
        self.reread(tx, &id).await
    }

    /// The kind the appointment was booked as, for the clinician about to start it.
    pub async fn appointment_kind(&self, grant: &Grant<RunConsultation>) -> Result<ConsultationKind> {
        let a = grant.appointment();
        let (actor, practice) = (grant.principal().user.to_string(), a.practice.to_string());
        let row = self
            .select_one(
                appointment_scope(&actor, &practice),
                "SELECT kind FROM appointments WHERE id = $1",
                &[Param::from(a.id.to_string())],
            )
            .await?
            .ok_or_else(|| StoreError::Corrupt("the appointment being started is gone".into()))?;
        row.parse("kind")
    }

    /// Starts the consultation: the appointment moves from checked_in to in_consultation and the
    /// consultation, its recording and the recording's first segment are stored, in one transaction. The
    /// database checks again that the recording's owners are the appointment's.
    pub async fn start_consultation(
        &self,
        grant: &Grant<RunConsultation>,
        consultation: &Consultation,
        at_ms: i64,
    ) -> Result<Appointment> {
        let a = grant.appointment();
        let binding = consultation.binding();
        if binding.appointment() != a.id {
            return Err(StoreError::Invalid(
                "this consultation is for another appointment".into(),
            ));
        }
        let (actor, practice, id) = (
            grant.principal().user.to_string(),
            a.practice.to_string(),
            a.id.to_string(),
        );
        let mut tx = self.write(appointment_scope(&actor, &practice)).await?;
        let now = current(&mut tx, &id).await?;
        now.status
            .transition(AppointmentStatus::InConsultation)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query(
            "UPDATE appointments SET status = 'in_consultation', updated_at = $1, started_at = $1 WHERE id = $2",
        )
        .bind(at_ms)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let recording = consultation.recording();
        let (patient, clinician) = (binding.patient().to_string(), binding.clinician().to_string());
        let started_at = consultation.started_at().as_millisecond();
        sqlx::query(
            "INSERT INTO consultations (id, appointment_id, patient_id, clinician_id, practice_id, recording_id, \
             started_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(binding.consultation().to_string())
        .bind(&id)
        .bind(&patient)
        .bind(&clinician)
        .bind(binding.practice().to_string())
        .bind(recording.id().to_string())
        .bind(started_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO recordings (id, consultation_id, patient_id, clinician_id, practice_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(recording.id().to_string())
        .bind(binding.consultation().to_string())
        .bind(&patient)
        .bind(&clinician)
        .bind(binding.practice().to_string())
        .bind(started_at)
        .execute(&mut *tx)
        .await?;
        for segment in recording.segments() {
            sqlx::query(
                "INSERT INTO recording_segments (recording_id, idx, reason, mode, started_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(recording.id().to_string())
            .bind(i64::from(segment.index()))
            .bind(segment_reason(segment.reason()))
            .bind(segment.mode().as_str())
            .bind(segment.started_at().as_millisecond())
            .execute(&mut *tx)
            .await?;
        }
        self.reread(tx, &id).await
    }

    /// A patient's recordings, newest first, as they are stored: for the patient only.
    pub async fn patient_recordings(&self, grant: &Grant<ListRecordings>) -> Result<Vec<StoredRecording>> {
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
                "SELECT id, consultation_id, patient_id, clinician_id, practice_id FROM recordings \
                 WHERE patient_id = $1 ORDER BY created_at DESC, id",
                &[Param::from(&patient)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let segments = self.recording_segment_rows(scope, &id).await?;
            out.push(StoredRecording {
                id: row.parse("id")?,
                consultation: row.parse("consultation_id")?,
                patient: row.parse("patient_id")?,
                clinician: row.parse("clinician_id")?,
                practice: row.parse("practice_id")?,
                segments: segments.iter().map(stored_segment).collect::<Result<_>>()?,
            });
        }
        Ok(out)
    }

    /// The patient arrives in the waiting room, which is open from shortly before the start to the end.
    pub async fn check_in(&self, grant: &Grant<CheckIn>, at_ms: i64) -> Result<Appointment> {
        self.move_status(
            grant.appointment(),
            grant.principal().user,
            AppointmentStatus::CheckedIn,
            at_ms,
        )
        .await
    }

    /// The clinician completes the consultation, or records a missed appointment.
    pub async fn run_consultation(
        &self,
        grant: &Grant<RunConsultation>,
        to: AppointmentStatus,
        at_ms: i64,
    ) -> Result<Appointment> {
        // Starting is start_consultation's alone, so that no call starts without its recording.
        if !matches!(to, AppointmentStatus::Completed | AppointmentStatus::NoShow) {
            return Err(StoreError::Invalid(format!(
                "a clinician cannot set an appointment to {to}"
            )));
        }
        self.move_status(grant.appointment(), grant.principal().user, to, at_ms)
            .await
    }

    /// Pending jobs whose time has come, oldest first.
    pub async fn due_jobs(&self, now_ms: i64, limit: i64) -> Result<Vec<Job>> {
        let rows = self
            .select(
                Scope::default(),
                "SELECT id, kind, appointment_id, patient_id, run_at, attempts FROM jobs \
                 WHERE state = 'pending' AND run_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
                 ORDER BY run_at, id LIMIT $2",
                &[Param::from(now_ms), Param::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Job {
                    id: r.try_get("id")?,
                    kind: r
                        .try_get::<String>("kind")?
                        .parse()
                        .map_err(|_| StoreError::Corrupt("job kind".into()))?,
                    appointment: r.parse("appointment_id")?,
                    patient: r.parse("patient_id")?,
                    run_at_ms: r.try_get("run_at")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// How many jobs are due and not yet done, including those a runner is sending right now.
    pub async fn unfinished_due_jobs(&self, now_ms: i64) -> Result<i64> {
        let row = self
            .select_one(
                Scope::default(),
                "SELECT COUNT(*) AS n FROM jobs WHERE state = 'pending' AND run_at <= $1",
                &[Param::from(now_ms)],
            )
            .await?;
        row.map_or(Ok(0), |r| r.try_get("n"))
    }

    /// Takes a due job for `lease_ms`; false if another runner has it or it is no longer pending.
    pub async fn claim_job(&self, id: &str, now_ms: i64, lease_ms: i64) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let taken = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND state = 'pending' \
             AND (lease_until IS NULL OR lease_until <= $3)",
        )
        .bind(now_ms + lease_ms)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(taken.rows_affected() == 1)
    }

    /// The appointment a job is about, read by the job runner in its patient's scope: the runner acts
    /// for the practice that the patient booked with, and only sends to the patient.
    pub async fn job_appointment(&self, job: &Job) -> Result<Option<Appointment>> {
        let patient = job.patient.to_string();
        let row = self
            .select_one(
                Scope {
                    actor: None,
                    patient: Some(&patient),
                    practice: None,
                    gate_facts: false,
                },
                concat!(appointment_select!(), " WHERE a.id = $1 AND a.patient_id = $2"),
                &[Param::from(job.appointment.to_string()), Param::from(&patient)],
            )
            .await?;
        row.as_ref().map(appointment).transpose()
    }

    /// Marks a job done, once: false if it was no longer pending.
    pub async fn finish_job(&self, id: &str, at_ms: i64) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'done', finished_at = $1, attempts = attempts + 1 WHERE id = $2 AND state = 'pending'",
        )
        .bind(at_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt; the job runs again at `retry_at_ms`, or is given up after the last try.
    pub async fn fail_job(&self, id: &str, error: &str, retry_at_ms: Option<i64>, at_ms: i64) -> Result<()> {
        let mut tx = self.write(Scope::default()).await?;
        match retry_at_ms {
            Some(retry) => sqlx::query(
                "UPDATE jobs SET attempts = attempts + 1, last_error = $1, run_at = $2, lease_until = NULL \
                 WHERE id = $3 AND state = 'pending'",
            )
            .bind(error)
            .bind(retry)
            .bind(id),
            None => sqlx::query(
                "UPDATE jobs SET attempts = attempts + 1, last_error = $1, state = 'failed', finished_at = $2 \
                 WHERE id = $3 AND state = 'pending'",
            )
            .bind(error)
            .bind(at_ms)
            .bind(id),
        }
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Jobs about one appointment, for tests and the operator: (kind, state).
    pub async fn appointment_jobs(&self, appointment: AppointmentId) -> Result<Vec<(String, String, i64)>> {
        let rows = self
            .select(
                Scope::default(),
                "SELECT kind, state, run_at FROM jobs WHERE appointment_id = $1 ORDER BY run_at, id",
                &[Param::from(appointment.to_string())],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("state")?, r.try_get("run_at")?)))
            .collect()
    }
}

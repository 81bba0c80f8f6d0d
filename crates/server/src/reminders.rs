//! The job runner: sends the emails appointments need (confirmation, change, cancellation, reminders)
//! from the `jobs` table. A job is marked done only after its email left, and each email carries the
//! job's id as its idempotency key, so a restart neither loses a reminder nor sends it twice to the
//! outbox (over SMTP, a crash between sending and marking could repeat one; the Message-ID lets mail
//! clients fold the repeat).

use confide_domain::Timestamp;
use confide_domain::audit::Outcome;
use confide_domain::scheduling::AppointmentStatus;
use confide_store::{Appointment, Job, JobKind};
use jiff::tz::TimeZone;
use tokio::sync::watch;

use crate::AppState;
use crate::calendar::{Invite, Method, render};
use crate::gate::RequestId;
use crate::mail::Attachment;

/// Jobs taken per pass.
const BATCH: i64 = 50;
/// Attempts before a job is given up and left as failed for the operator.
const MAX_ATTEMPTS: i64 = 8;
/// How long a runner holds a job it took; one that stopped mid-send frees it for others after this.
const LEASE_MS: i64 = 5 * 60_000;

/// Runs due jobs until `stop` turns true, waking when a request adds jobs or every poll interval.
pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = run_due(&state).await {
            tracing::warn!(error = %e, "job pass failed; retrying at the next poll");
        }
        tokio::select! {
            _ = state.jobs_wake.notified() => {}
            _ = tokio::time::sleep(state.config.job_poll) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Sends every job due now; returns how many were finished.
pub async fn run_due(state: &AppState) -> Result<usize, confide_store::StoreError> {
    let mut finished = 0;
    loop {
        let now_ms = state.clock.now_ms();
        let jobs = state.store.due_jobs(now_ms, BATCH).await?;
        let taken = jobs.len();
        for job in jobs {
            if !state.store.claim_job(&job.id, now_ms, LEASE_MS).await? {
                continue;
            }
            match run_one(state, &job).await {
                Ok(()) => {
                    if state.store.finish_job(&job.id, state.clock.now_ms()).await? {
                        finished += 1;
                    }
                }
                Err(e) => {
                    let attempts = job.attempts + 1;
                    tracing::warn!(job = %job.id, attempts, error = %e, "job failed");
                    let retry = (attempts < MAX_ATTEMPTS).then(|| now_ms + 60_000 * (1 << attempts.min(6)));
                    state.store.fail_job(&job.id, &e, retry, now_ms).await?;
                }
            }
        }
        if (taken as i64) < BATCH {
            return Ok(finished);
        }
    }
}

async fn run_one(state: &AppState, job: &Job) -> Result<(), String> {
    let Some(appointment) = state
        .store
        .job_appointment(job)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let still_on = matches!(
        appointment.status,
        AppointmentStatus::Booked | AppointmentStatus::CheckedIn
    );
    if matches!(job.kind, JobKind::Reminder24h | JobKind::Reminder1h) && !still_on {
        return Ok(());
    }
    let patient = state
        .store
        .account(appointment.patient)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the patient's account is gone")?;
    let message = compose(state, job.kind, &appointment, &patient.name, &patient.email);
    state
        .mailer
        .send_with(
            &job.id,
            &patient.email,
            &message.subject,
            message.body,
            message.attachment,
        )
        .await
        .map_err(|e| e.to_string())?;
    let event = confide_domain::audit::AuditEvent {
        resource: format!("appointment:{}", appointment.id),
        subject_patient: Some(appointment.patient),
        ..state.event(
            None,
            &format!("appointment.email.{}", job.kind.as_str()),
            Outcome::Allowed,
            "scheduled_job",
            &RequestId(job.id.clone()),
        )
    };
    state.record(event).await.map_err(|e| e.to_string())?;
    Ok(())
}

struct Message {
    subject: String,
    body: String,
    attachment: Option<Attachment>,
}

fn compose(state: &AppState, kind: JobKind, a: &Appointment, name: &str, email: &str) -> Message {
    let tz = TimeZone::get(&a.time_zone).unwrap_or(TimeZone::UTC);
    let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let when = at(a.start_ms)
        .to_zoned(tz)
        .strftime("%A %-d %B %Y at %H:%M (%Z)")
        .to_string();
    let link = format!(
        "{}/appointments/{}",
        state.config.public_url.trim_end_matches('/'),
        a.id
    );
    let how = match a.kind {
        confide_domain::scheduling::ConsultationKind::Video => "video",
        confide_domain::scheduling::ConsultationKind::Audio => "audio",
    };
    let (subject, lead, method) = match kind {
        JobKind::Booked => (
            format!("Appointment booked: {when}"),
            format!(
                "your {how} appointment with {} is booked for {when}.",
                a.clinician_name
            ),
            Some(Method::Request),
        ),
        JobKind::Rescheduled => (
            format!("Appointment moved to {when}"),
            format!(
                "your {how} appointment with {} has moved to {when}.",
                a.clinician_name
            ),
            Some(Method::Request),
        ),
        JobKind::Cancelled => (
            format!("Appointment cancelled: {when}"),
            match &a.cancel_message {
                Some(m) => format!(
                    "your appointment with {} on {when} has been cancelled. The practice says: {m}",
                    a.clinician_name
                ),
                None => format!(
                    "your appointment with {} on {when} has been cancelled.",
                    a.clinician_name
                ),
            },
            Some(Method::Cancel),
        ),
        JobKind::Reminder24h => (
            format!("Reminder: appointment tomorrow, {when}"),
            format!(
                "a reminder of your {how} appointment with {} on {when}.",
                a.clinician_name
            ),
            None,
        ),
        JobKind::Reminder1h => (
            format!("Your appointment starts in an hour: {when}"),
            format!(
                "your {how} appointment with {} starts in an hour, at {when}. You can check in from 10 minutes before.",
                a.clinician_name
            ),
            None,
        ),
    };
    let body = format!(
        "Hello {name},\n\n{}\n\nYour appointment: {link}\n\n{}\n",
        capitalised(&lead),
        a.practice_name
    );
    let attachment = method.map(|method| {
        let from = state.config.mail_from.clone();
        let organizer_email = from
            .rsplit_once('<')
            .map(|(_, rest)| rest.trim_end_matches('>').to_owned())
            .unwrap_or(from);
        let summary = format!("{} appointment with {}", capitalised(how), a.clinician_name);
        let description = format!("{}. Join or manage it at {link}", a.practice_name);
        let ics = render(&Invite {
            uid: &format!("{}@confide", a.id),
            sequence: u32::try_from(a.sequence).unwrap_or(0),
            method,
            start: at(a.start_ms),
            end: at(a.end_ms),
            stamp: state.clock.now(),
            summary: &summary,
            description: &description,
            url: Some(&link),
            organizer: (&a.practice_name, &organizer_email),
            attendee: (name, email),
        });
        Attachment {
            filename: "invite.ics".to_owned(),
            content_type: format!("text/calendar; method={}; charset=UTF-8", method.as_str()),
            body: ics,
        }
    });
    Message {
        subject,
        body,
        attachment,
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

//! Consultations: the call held for an appointment, and its one recording.
//!
//! In June 2020 a telehealth app showed patients other patients' recorded consultations after a release
//! that let calls switch between audio and video. Here a recording is made when its consultation starts,
//! with owners copied from the appointment the gate approved, and nothing changes them afterwards: mode
//! switches, reconnects and server restarts only append segments to that same recording, and a segment can
//! only be had from its recording.
//!
//! Every step is also an event in the consultation's log. The store keeps the log, and a consultation is
//! rebuilt after a restart by replaying it through the same steps, so a rebuilt consultation has passed the
//! same checks as the original.

mod participants;
mod recording;
#[cfg(test)]
mod tests;

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use participants::{
    Consent, ConsentDecision, ConsentTimeline, Guest, GuestRole, InvalidGuestRole, Participant, Party,
    recordable, tracks_to_record,
};
pub use recording::{Recording, Segment, SegmentReason, SegmentRef, StoredRecording, StoredSegment};

use crate::identity::PersonName;
use crate::ids::{AppointmentId, ConsultationId, GuestId, PracticeId, RecordingId, UserId};
use crate::policy::Grant;
use crate::policy::actions::RunConsultation;
use crate::scheduling::ConsultationKind;

/// Whose a consultation is, and so whose its recording is: taken from the appointment when the
/// consultation starts and never changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    consultation: ConsultationId,
    appointment: AppointmentId,
    patient: UserId,
    clinician: UserId,
    practice: PracticeId,
}

impl Binding {
    pub fn consultation(&self) -> ConsultationId {
        self.consultation
    }

    pub fn appointment(&self) -> AppointmentId {
        self.appointment
    }

    pub fn patient(&self) -> UserId {
        self.patient
    }

    pub fn clinician(&self) -> UserId {
        self.clinician
    }

    pub fn practice(&self) -> PracticeId {
        self.practice
    }
}

/// Whether the call carries video. Either side may switch at any time; a switch is an event and a new
/// segment, and touches nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsultationMode {
    AudioOnly,
    Video,
}

impl ConsultationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsultationMode::AudioOnly => "audio_only",
            ConsultationMode::Video => "video",
        }
    }
}

impl fmt::Display for ConsultationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A consultation begins in the mode its appointment was booked for.
impl From<ConsultationKind> for ConsultationMode {
    fn from(kind: ConsultationKind) -> Self {
        match kind {
            ConsultationKind::Video => ConsultationMode::Video,
            ConsultationKind::Audio => ConsultationMode::AudioOnly,
        }
    }
}

/// One step in a consultation's life, as kept in its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsultationEvent {
    pub at: Timestamp,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Always the first event, and only ever the first. The clinician who starts the call is in it.
    Started {
        mode: ConsultationMode,
    },
    ModeSwitched {
        by: Party,
        to: ConsultationMode,
    },
    GuestInvited {
        guest: GuestId,
        name: PersonName,
        role: GuestRole,
    },
    Joined {
        who: Party,
    },
    Reconnected {
        who: Party,
    },
    /// The server restarted and the call carried on.
    Restarted,
    ConsentRecorded {
        who: Party,
        decision: ConsentDecision,
    },
    Ended,
}

/// Why a step is refused. A refused step changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsultationError {
    #[error("the consultation has already ended")]
    Ended,
    #[error("a step at {at} cannot come before the consultation's last step, at {last}")]
    OutOfOrder { at: Timestamp, last: Timestamp },
    #[error("{0} is not in this consultation")]
    NotAParticipant(Party),
    #[error("{0} has already joined: a dropped connection reconnects instead")]
    AlreadyJoined(Party),
    #[error("{0} has not joined the call yet")]
    NotJoined(Party),
    #[error("only the patient or the clinician can switch between audio and video")]
    GuestMayNotSwitch,
    #[error("the consultation is already {0}")]
    AlreadyInMode(ConsultationMode),
    #[error("guest {0} has already been invited")]
    GuestAlreadyInvited(GuestId),
}

/// Why the store's rows cannot be turned back into a consultation or a recording.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("a consultation's log must begin with its start, and have only one")]
    NotStartedOnce,
    #[error("a consultation's log does not replay: {0}")]
    Replay(#[from] ConsultationError),
    #[error("recording {recording} does not belong to consultation {consultation} and its owners")]
    OwnerMismatch {
        recording: RecordingId,
        consultation: ConsultationId,
    },
    #[error("expected segment {expected}, found segment {found}")]
    SegmentOutOfPlace { expected: u32, found: u32 },
    #[error("a recording begins with one start segment, and segment {index} breaks that")]
    StartSegment { index: u32 },
    #[error("segment {index} begins before the segment before it")]
    SegmentOutOfOrder { index: u32 },
}

/// A consultation as the store keeps it: one row of facts fixed at the start. Everything else is its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredConsultation {
    pub id: ConsultationId,
    pub recording: RecordingId,
    pub appointment: AppointmentId,
    pub patient: UserId,
    pub clinician: UserId,
    pub practice: PracticeId,
}

impl StoredConsultation {
    fn binding(&self) -> Binding {
        Binding {
            consultation: self.id,
            appointment: self.appointment,
            patient: self.patient,
            clinician: self.clinician,
            practice: self.practice,
        }
    }
}

/// The call held for one appointment, with its participants, its log and its recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consultation {
    binding: Binding,
    started_at: Timestamp,
    mode: ConsultationMode,
    ended_at: Option<Timestamp>,
    guests: Vec<Guest>,
    participants: Vec<Participant>,
    events: Vec<ConsultationEvent>,
    recording: Recording,
}

impl Consultation {
    /// Starts the consultation for the appointment in `grant`, and with it the recording. Taking the grant
    /// rather than loose facts means the patient, clinician and practice are the ones the gate approved
    /// for this appointment, and the recording's owners are copied from them here, once.
    pub fn start(
        id: ConsultationId,
        recording: RecordingId,
        grant: &Grant<RunConsultation>,
        mode: ConsultationMode,
        at: Timestamp,
    ) -> Consultation {
        let a = grant.appointment();
        let binding = Binding {
            consultation: id,
            appointment: a.id,
            patient: a.patient.patient,
            clinician: a.clinician,
            practice: a.practice,
        };
        Self::begin(binding, recording, mode, at)
    }

    fn begin(
        binding: Binding,
        recording: RecordingId,
        mode: ConsultationMode,
        at: Timestamp,
    ) -> Consultation {
        Consultation {
            binding,
            started_at: at,
            mode,
            ended_at: None,
            guests: Vec::new(),
            participants: vec![
                Participant::new(Party::Patient, None),
                Participant::new(Party::Clinician, Some(at)),
            ],
            events: vec![ConsultationEvent {
                at,
                kind: EventKind::Started { mode },
            }],
            recording: Recording::open(recording, binding, mode, at),
        }
    }

    /// For persistence only: rebuilds a consultation from its row and its log by replaying every step
    /// through the same checks, so the recording comes back with the same owners and the same segments.
    pub fn restore_from_storage(
        row: StoredConsultation,
        events: impl IntoIterator<Item = ConsultationEvent>,
    ) -> Result<Consultation, RestoreError> {
        let mut events = events.into_iter();
        let Some(ConsultationEvent {
            at,
            kind: EventKind::Started { mode },
        }) = events.next()
        else {
            return Err(RestoreError::NotStartedOnce);
        };
        let mut consultation = Self::begin(row.binding(), row.recording, mode, at);
        for event in events {
            consultation.replay(event)?;
        }
        Ok(consultation)
    }

    fn replay(&mut self, event: ConsultationEvent) -> Result<(), RestoreError> {
        let at = event.at;
        match event.kind {
            EventKind::Started { .. } => return Err(RestoreError::NotStartedOnce),
            EventKind::ModeSwitched { by, to } => self.switch_mode(by, to, at).map(drop)?,
            EventKind::GuestInvited { guest, name, role } => {
                self.invite_guest(guest, name, role, at).map(drop)?
            }
            EventKind::Joined { who } => self.join(who, at)?,
            EventKind::Reconnected { who } => self.reconnect(who, at).map(drop)?,
            EventKind::Restarted => self.resume_after_restart(at).map(drop)?,
            EventKind::ConsentRecorded { who, decision } => self.record_consent(who, decision, at)?,
            EventKind::Ended => self.end(at)?,
        }
        Ok(())
    }

    /// The row the store writes when the consultation starts.
    pub fn stored(&self) -> StoredConsultation {
        StoredConsultation {
            id: self.binding.consultation,
            recording: self.recording.id(),
            appointment: self.binding.appointment,
            patient: self.binding.patient,
            clinician: self.binding.clinician,
            practice: self.binding.practice,
        }
    }

    pub fn id(&self) -> ConsultationId {
        self.binding.consultation
    }

    pub fn binding(&self) -> Binding {
        self.binding
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    pub fn mode(&self) -> ConsultationMode {
        self.mode
    }

    pub fn ended_at(&self) -> Option<Timestamp> {
        self.ended_at
    }

    pub fn guests(&self) -> &[Guest] {
        &self.guests
    }

    pub fn participants(&self) -> &[Participant] {
        &self.participants
    }

    /// The log, oldest first; the store appends what a step added.
    pub fn events(&self) -> &[ConsultationEvent] {
        &self.events
    }

    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    /// Which of this consultation's account holders `user` is, if either.
    pub fn party_of(&self, user: UserId) -> Option<Party> {
        if user == self.binding.patient {
            Some(Party::Patient)
        } else if user == self.binding.clinician {
            Some(Party::Clinician)
        } else {
            None
        }
    }

    pub fn switch_mode(
        &mut self,
        by: Party,
        to: ConsultationMode,
        at: Timestamp,
    ) -> Result<SegmentRef, ConsultationError> {
        self.check_open(at)?;
        if let Party::Guest(_) = by {
            return Err(ConsultationError::GuestMayNotSwitch);
        }
        self.joined(by)?;
        if to == self.mode {
            return Err(ConsultationError::AlreadyInMode(to));
        }
        self.mode = to;
        self.log(at, EventKind::ModeSwitched { by, to });
        Ok(self.recording.append(SegmentReason::ModeSwitch, to, at))
    }

    /// Invites a guest, who may then join once with their link. Whether the caller may invite is the
    /// gate's `InviteGuest`.
    pub fn invite_guest(
        &mut self,
        guest: GuestId,
        name: PersonName,
        role: GuestRole,
        at: Timestamp,
    ) -> Result<&Guest, ConsultationError> {
        self.check_open(at)?;
        if self.participant_index(Party::Guest(guest)).is_ok() {
            return Err(ConsultationError::GuestAlreadyInvited(guest));
        }
        self.log(
            at,
            EventKind::GuestInvited {
                guest,
                name: name.clone(),
                role: role.clone(),
            },
        );
        self.participants
            .push(Participant::new(Party::Guest(guest), None));
        self.guests.push(Guest {
            id: guest,
            name,
            role,
            invited_at: at,
        });
        Ok(&self.guests[self.guests.len() - 1])
    }

    /// Someone comes into the call for the first time; for a guest this spends their single-use link.
    pub fn join(&mut self, who: Party, at: Timestamp) -> Result<(), ConsultationError> {
        self.check_open(at)?;
        let i = self.participant_index(who)?;
        if self.participants[i].joined_at.is_some() {
            return Err(ConsultationError::AlreadyJoined(who));
        }
        self.participants[i].joined_at = Some(at);
        self.log(at, EventKind::Joined { who });
        Ok(())
    }

    /// Someone who had joined comes back after their connection dropped.
    pub fn reconnect(&mut self, who: Party, at: Timestamp) -> Result<SegmentRef, ConsultationError> {
        self.check_open(at)?;
        self.joined(who)?;
        self.log(at, EventKind::Reconnected { who });
        Ok(self.recording.append(SegmentReason::Reconnect, self.mode, at))
    }

    /// The call carries on after the server restarted, on a consultation rebuilt from the store.
    pub fn resume_after_restart(&mut self, at: Timestamp) -> Result<SegmentRef, ConsultationError> {
        self.check_open(at)?;
        self.log(at, EventKind::Restarted);
        Ok(self.recording.append(SegmentReason::Restart, self.mode, at))
    }

    /// From `at` on, `who`'s tracks are recorded only if `decision` is to give consent.
    pub fn record_consent(
        &mut self,
        who: Party,
        decision: ConsentDecision,
        at: Timestamp,
    ) -> Result<(), ConsultationError> {
        self.check_open(at)?;
        let i = self.participant_index(who)?;
        self.participants[i].consent.push(decision, at);
        self.log(at, EventKind::ConsentRecorded { who, decision });
        Ok(())
    }

    pub fn end(&mut self, at: Timestamp) -> Result<(), ConsultationError> {
        self.check_open(at)?;
        self.ended_at = Some(at);
        self.log(at, EventKind::Ended);
        Ok(())
    }

    fn check_open(&self, at: Timestamp) -> Result<(), ConsultationError> {
        if self.ended_at.is_some() {
            return Err(ConsultationError::Ended);
        }
        let last = self.events.last().map_or(self.started_at, |e| e.at);
        if at < last {
            return Err(ConsultationError::OutOfOrder { at, last });
        }
        Ok(())
    }

    fn participant_index(&self, who: Party) -> Result<usize, ConsultationError> {
        self.participants
            .iter()
            .position(|p| p.party == who)
            .ok_or(ConsultationError::NotAParticipant(who))
    }

    fn joined(&self, who: Party) -> Result<(), ConsultationError> {
        let i = self.participant_index(who)?;
        match self.participants[i].joined_at {
            Some(_) => Ok(()),
            None => Err(ConsultationError::NotJoined(who)),
        }
    }

    fn log(&mut self, at: Timestamp, kind: EventKind) {
        self.events.push(ConsultationEvent { at, kind });
    }
}

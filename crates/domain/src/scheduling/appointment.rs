//! An appointment's states and the time rules around changing it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the patient and clinician will meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsultationKind {
    Video,
    Audio,
}

impl ConsultationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsultationKind::Video => "video",
            ConsultationKind::Audio => "audio",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("consultation kind must be video or audio, not {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for ConsultationKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "video" => Ok(ConsultationKind::Video),
            "audio" => Ok(ConsultationKind::Audio),
            _ => Err(UnknownKind(s.to_owned())),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Booked,
    /// The patient is in the virtual waiting room.
    CheckedIn,
    InConsultation,
    Completed,
    Cancelled,
    NoShow,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an appointment that is {from} cannot become {to}")]
pub struct InvalidTransition {
    pub from: AppointmentStatus,
    pub to: AppointmentStatus,
}

impl AppointmentStatus {
    pub const ALL: [AppointmentStatus; 6] = [
        Self::Booked,
        Self::CheckedIn,
        Self::InConsultation,
        Self::Completed,
        Self::Cancelled,
        Self::NoShow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booked => "booked",
            Self::CheckedIn => "checked_in",
            Self::InConsultation => "in_consultation",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::NoShow => "no_show",
        }
    }

    pub fn transition(self, to: AppointmentStatus) -> Result<AppointmentStatus, InvalidTransition> {
        use AppointmentStatus::*;
        match (self, to) {
            (Booked, CheckedIn | Cancelled | NoShow)
            | (CheckedIn, InConsultation | Cancelled | NoShow)
            | (InConsultation, Completed) => Ok(to),
            _ => Err(InvalidTransition { from: self, to }),
        }
    }

    /// Whether the appointment still holds its time: every state but cancelled does, so a finished
    /// consultation's time is never offered again either.
    pub fn holds_time(self) -> bool {
        self != Self::Cancelled
    }

    /// Still to happen, or happening.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Booked | Self::CheckedIn | Self::InConsultation)
    }
}

impl fmt::Display for AppointmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown appointment status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for AppointmentStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a patient's change to an appointment is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeRefused {
    #[error(
        "appointments can only be changed up to {minutes} minutes before they start: please contact the practice"
    )]
    PastCutoff { minutes: i64 },
    #[error("check-in opens {CHECK_IN_OPENS_MINUTES} minutes before the appointment and closes when it ends")]
    CheckInNotOpen,
    #[error("only booked appointments can be moved")]
    NotBooked,
    #[error("that time has already passed")]
    InThePast,
}

/// How long before its start a patient may still cancel or move an appointment, unless the practice
/// sets otherwise.
pub const DEFAULT_CUTOFF_MINUTES: i64 = 120;

/// How early the waiting room opens.
pub const CHECK_IN_OPENS_MINUTES: i64 = 10;

const MINUTE_MS: i64 = 60_000;

pub fn within_cutoff(now_ms: i64, start_ms: i64, cutoff_minutes: i64) -> Result<(), ChangeRefused> {
    if now_ms + cutoff_minutes * MINUTE_MS <= start_ms {
        Ok(())
    } else {
        Err(ChangeRefused::PastCutoff {
            minutes: cutoff_minutes,
        })
    }
}

pub fn check_in_open(now_ms: i64, start_ms: i64, end_ms: i64) -> Result<(), ChangeRefused> {
    if start_ms - CHECK_IN_OPENS_MINUTES * MINUTE_MS <= now_ms && now_ms < end_ms {
        Ok(())
    } else {
        Err(ChangeRefused::CheckInNotOpen)
    }
}

/// The grain at which the database claims a clinician's time: five minutes, which every slot length and
/// every time zone offset in use divides.
pub const UNIT_MS: i64 = 5 * MINUTE_MS;

/// The units `[start_ms, end_ms)` occupies. Each is claimed by a unique (clinician, unit) row, so two
/// appointments that overlap by even one unit cannot both be stored.
pub fn units(start_ms: i64, end_ms: i64) -> impl Iterator<Item = i64> {
    let first = start_ms.div_euclid(UNIT_MS) * UNIT_MS;
    (0..)
        .map(move |i| first + i * UNIT_MS)
        .take_while(move |&u| u < end_ms)
}

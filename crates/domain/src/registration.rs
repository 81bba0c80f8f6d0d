//! A patient's registration with a GP practice, as a state machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationStatus {
    /// Asked for, not yet decided by the practice.
    Pending,
    /// The patient is registered: the practice's clinicians may see their record.
    Accepted,
    Declined,
    /// The patient asked elsewhere before this one was decided.
    Withdrawn,
    /// The patient moved to another practice, which accepted them.
    Ended,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a registration that is {from} cannot become {to}")]
pub struct InvalidTransition {
    pub from: RegistrationStatus,
    pub to: RegistrationStatus,
}

impl RegistrationStatus {
    pub const ALL: [RegistrationStatus; 5] = [
        Self::Pending,
        Self::Accepted,
        Self::Declined,
        Self::Withdrawn,
        Self::Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Withdrawn => "withdrawn",
            Self::Ended => "ended",
        }
    }

    pub fn transition(self, to: RegistrationStatus) -> Result<RegistrationStatus, InvalidTransition> {
        use RegistrationStatus::*;
        match (self, to) {
            (Pending, Accepted | Declined | Withdrawn) | (Accepted, Ended) => Ok(to),
            _ => Err(InvalidTransition { from: self, to }),
        }
    }

    /// Open requests and current registrations block a second request to the same practice.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Accepted)
    }
}

impl fmt::Display for RegistrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown registration status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for RegistrationStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::RegistrationStatus::*;
    use super::*;

    #[test]
    fn only_pending_requests_are_decided_and_only_accepted_ones_end() {
        let allowed = [
            (Pending, Accepted),
            (Pending, Declined),
            (Pending, Withdrawn),
            (Accepted, Ended),
        ];
        for from in RegistrationStatus::ALL {
            for to in RegistrationStatus::ALL {
                assert_eq!(
                    from.transition(to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn statuses_round_trip() {
        for st in RegistrationStatus::ALL {
            assert_eq!(st.as_str().parse::<RegistrationStatus>().unwrap(), st);
        }
    }
}

//! Who is in a call, and whether each of them may be recorded.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::identity::{PersonName, parse_label};
use crate::ids::GuestId;

/// Someone in a consultation, named relative to it: "its patient", never a user id, so a step can only
/// ever be taken by one of this consultation's own people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    Patient,
    Clinician,
    Guest(GuestId),
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Patient => f.write_str("the patient"),
            Party::Clinician => f.write_str("the clinician"),
            Party::Guest(id) => write!(f, "guest {id}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a guest's role must be 1 to {max} printable characters, such as \"interpreter\"")]
pub struct InvalidGuestRole {
    pub max: usize,
}

/// Why a guest is in the call, as shown to the others: "interpreter", "carer", …
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct GuestRole(String);

impl GuestRole {
    pub const MAX: usize = 50;

    pub fn parse(raw: &str) -> Result<Self, InvalidGuestRole> {
        parse_label(raw, Self::MAX)
            .map(GuestRole)
            .map_err(|_| InvalidGuestRole { max: Self::MAX })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Someone the clinician invited into this one consultation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    pub(super) id: GuestId,
    pub(super) name: PersonName,
    pub(super) role: GuestRole,
    pub(super) invited_at: Timestamp,
}

impl Guest {
    pub fn id(&self) -> GuestId {
        self.id
    }

    pub fn name(&self) -> &PersonName {
        &self.name
    }

    pub fn role(&self) -> &GuestRole {
        &self.role
    }

    pub fn invited_at(&self) -> Timestamp {
        self.invited_at
    }
}

/// Where someone stands on being recorded at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    Given,
    Withdrawn,
    NotAsked,
}

/// What someone can say about being recorded; "not asked" is only ever the absence of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDecision {
    Given,
    Withdrawn,
}

impl From<ConsentDecision> for Consent {
    fn from(d: ConsentDecision) -> Self {
        match d {
            ConsentDecision::Given => Consent::Given,
            ConsentDecision::Withdrawn => Consent::Withdrawn,
        }
    }
}

/// One person's consent decisions, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsentTimeline {
    decisions: Vec<(Timestamp, ConsentDecision)>,
}

impl ConsentTimeline {
    /// Only the consultation adds decisions, and it refuses any step dated before the one before it, so
    /// the timeline is always in time order.
    pub(super) fn push(&mut self, decision: ConsentDecision, at: Timestamp) {
        self.decisions.push((at, decision));
    }

    pub fn decisions(&self) -> &[(Timestamp, ConsentDecision)] {
        &self.decisions
    }

    /// The decision in force at `at`: a decision applies from its own instant, and of two at the same
    /// instant the later one made counts.
    pub fn at(&self, at: Timestamp) -> Consent {
        self.decisions
            .iter()
            .rev()
            .find(|(when, _)| *when <= at)
            .map_or(Consent::NotAsked, |(_, d)| (*d).into())
    }
}

/// One of a consultation's people, with their consent and when they first came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub(super) party: Party,
    pub(super) consent: ConsentTimeline,
    pub(super) joined_at: Option<Timestamp>,
}

impl Participant {
    pub(super) fn new(party: Party, joined_at: Option<Timestamp>) -> Participant {
        Participant {
            party,
            consent: ConsentTimeline::default(),
            joined_at,
        }
    }

    pub fn party(&self) -> Party {
        self.party
    }

    pub fn consent(&self) -> &ConsentTimeline {
        &self.consent
    }

    pub fn joined_at(&self) -> Option<Timestamp> {
        self.joined_at
    }
}

/// Whether `participant`'s audio and video may be recorded at `at`: only with consent given and not since
/// withdrawn.
pub fn recordable(participant: &Participant, at: Timestamp) -> bool {
    participant.consent.at(at) == Consent::Given
}

/// The people whose tracks the recorder keeps at `at`; everyone else's are left out.
pub fn tracks_to_record<'a>(
    participants: impl IntoIterator<Item = &'a Participant>,
    at: Timestamp,
) -> Vec<Party> {
    participants
        .into_iter()
        .filter(|p| recordable(p, at))
        .map(|p| p.party)
        .collect()
}

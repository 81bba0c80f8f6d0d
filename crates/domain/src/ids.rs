//! Identifiers. Each is its own type so a practice id can never be passed where a user id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A person with an account: patient or staff.
    UserId
);
id_type!(
    /// A GP practice.
    PracticeId
);
id_type!(
    /// A patient's request to register with a practice.
    RegistrationId
);
id_type!(
    /// An entry in a patient's clinical record.
    NoteId
);
id_type!(
    /// A booked time between a patient and a clinician.
    AppointmentId
);
id_type!(
    /// One weekly availability rule or one exception to it.
    AvailabilityId
);
id_type!(
    /// The call held for one appointment.
    ConsultationId
);
id_type!(
    /// The one recording of a consultation.
    RecordingId
);
id_type!(
    /// Someone without an account, such as an interpreter, invited into one consultation by a single-use
    /// link. Account holders take part as themselves, by their [`UserId`].
    GuestId
);
id_type!(
    /// A logged-in patient's conversation with the symptom checker.
    TriageSessionId
);

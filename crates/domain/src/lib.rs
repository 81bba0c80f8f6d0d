//! Confide's domain: the types and rules every other crate builds on. No I/O lives here: time and
//! randomness are passed in, so everything is deterministic under test.

pub mod audit;
pub mod consultation;
pub mod identity;
pub mod ids;
pub mod password;
pub mod policy;
pub mod practice;
pub mod registration;
pub mod scheduling;

pub use ids::{
    AppointmentId, ConsultationId, GuestId, PracticeId, RecordingId, RegistrationId, TriageSessionId, UserId,
};
pub use jiff::Timestamp;

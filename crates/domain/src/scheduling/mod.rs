//! Scheduling: clinicians' weekly availability, the free slots derived from it, and the life of an
//! appointment.
//!
//! Availability is kept in the practice's local time (a clinic opens at 09:00 whatever the season) and
//! turned into instants only when slots are derived, one local day at a time, so that a daylight-saving
//! change neither shifts a session nor creates a slot twice.

mod appointment;
mod availability;

pub use appointment::{
    AppointmentStatus, CHECK_IN_OPENS_MINUTES, ChangeRefused, ConsultationKind, DEFAULT_CUTOFF_MINUTES,
    InvalidTransition, UNIT_MS, UnknownKind, UnknownStatus, check_in_open, units, within_cutoff,
};
pub use availability::{
    AvailabilityError, AvailabilityException, AvailabilityRule, Booked, ExceptionKind, KindsOffered,
    MinuteOfDay, Slot, SlotLength, free_slots, weekday_from_number,
};

#[cfg(test)]
mod tests;

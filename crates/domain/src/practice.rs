//! GP practices: the name, address and time zone patients see when they choose where to register.

use std::fmt;

use serde::Serialize;

use crate::identity::{IdentityError, parse_label};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PracticeError {
    #[error("practice name: {0}")]
    Name(IdentityError),
    #[error("practice address: {0}")]
    Address(IdentityError),
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/London")]
    TimeZone(String),
}

/// What a practice is called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PracticeName(String);

impl PracticeName {
    pub fn parse(raw: &str) -> Result<Self, PracticeError> {
        parse_label(raw, 200).map(Self).map_err(PracticeError::Name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a practice is, as one line of text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Address(String);

impl Address {
    pub fn parse(raw: &str) -> Result<Self, PracticeError> {
        parse_label(raw, 500).map(Self).map_err(PracticeError::Address)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone that exists in the time zone database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(raw: &str) -> Result<Self, PracticeError> {
        let name = raw.trim();
        // Fixed offsets and POSIX strings parse too, but they ignore daylight saving: only named zones.
        if name.is_empty() || !name.contains('/') && name != "UTC" {
            return Err(PracticeError::TimeZone(raw.to_owned()));
        }
        match jiff::tz::TimeZone::get(name) {
            Ok(_) => Ok(TimeZoneName(name.to_owned())),
            Err(_) => Err(PracticeError::TimeZone(raw.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_must_exist() {
        assert_eq!(
            TimeZoneName::parse("Europe/London").unwrap().as_str(),
            "Europe/London"
        );
        assert!(TimeZoneName::parse("UTC").is_ok());
        for bad in ["Mars/Olympus", "", "+02:00", "EST5EDT,M3.2.0,M11.1.0"] {
            assert!(TimeZoneName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_addresses_are_bounded() {
        assert!(PracticeName::parse("Riverside Surgery").is_ok());
        assert!(PracticeName::parse("").is_err());
        assert!(Address::parse(&"a".repeat(501)).is_err());
    }
}

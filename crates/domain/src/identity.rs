//! Who someone is: roles, emails, names, dates of birth. Each value is checked once, at the edge, and can
//! then not hold anything invalid.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

/// What kind of account someone holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Patient,
    Clinician,
    PracticeAdmin,
    PlatformAdmin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Patient,
        Role::Clinician,
        Role::PracticeAdmin,
        Role::PlatformAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Clinician => "clinician",
            Role::PracticeAdmin => "practice_admin",
            Role::PlatformAdmin => "platform_admin",
        }
    }

    /// Staff work at one practice; a platform admin at none; a patient is registered, not employed.
    pub fn belongs_to_practice(self) -> bool {
        matches!(self, Role::Clinician | Role::PracticeAdmin)
    }

    /// Everyone but patients must use a second factor.
    pub fn requires_mfa(self) -> bool {
        self != Role::Patient
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role {0:?}: expected patient, clinician, practice_admin or platform_admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("email address is not valid")]
    InvalidEmail,
    #[error("name must be 1 to {max} characters with no control characters")]
    InvalidName { max: usize },
    #[error("date of birth must be a date written YYYY-MM-DD")]
    MalformedDate,
    #[error("date of birth cannot be in the future")]
    BirthInFuture,
    #[error("date of birth cannot be before 1900-01-01")]
    BirthTooEarly,
}

/// An email address, trimmed and lower-cased so that one mailbox has one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, IdentityError> {
        let email = raw.trim().to_lowercase();
        let (local, domain) = email.split_once('@').ok_or(IdentityError::InvalidEmail)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let domain_ok = domain.len() <= 253
            && domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok && email.len() <= 254 {
            Ok(Email(email))
        } else {
            Err(IdentityError::InvalidEmail)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Email::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Free text that names something: trimmed, non-empty, bounded, printable.
fn bounded_text(raw: &str, max: usize) -> Result<String, IdentityError> {
    let text = raw.trim();
    let len = text.chars().count();
    if len == 0 || len > max || text.chars().any(char::is_control) {
        return Err(IdentityError::InvalidName { max });
    }
    Ok(text.to_owned())
}

/// A person's name as they want it shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PersonName(String);

impl PersonName {
    pub const MAX: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, IdentityError> {
        bounded_text(raw, Self::MAX).map(PersonName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bounded, printable text such as a practice's name or address.
pub(crate) fn parse_label(raw: &str, max: usize) -> Result<String, IdentityError> {
    bounded_text(raw, max)
}

/// A date of birth: a real calendar date, not in the future, not before 1900.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DateOfBirth(Date);

impl DateOfBirth {
    pub fn parse(raw: &str, today: Date) -> Result<Self, IdentityError> {
        let trimmed = raw.trim();
        // jiff accepts a few other ISO 8601 spellings; patients and clients are told exactly YYYY-MM-DD.
        let shape_ok = trimmed.len() == 10
            && trimmed.char_indices().all(|(i, c)| {
                if i == 4 || i == 7 {
                    c == '-'
                } else {
                    c.is_ascii_digit()
                }
            });
        if !shape_ok {
            return Err(IdentityError::MalformedDate);
        }
        let date: Date = trimmed.parse().map_err(|_| IdentityError::MalformedDate)?;
        Self::new(date, today)
    }

    pub fn new(date: Date, today: Date) -> Result<Self, IdentityError> {
        if date > today {
            return Err(IdentityError::BirthInFuture);
        }
        if date < jiff::civil::date(1900, 1, 1) {
            return Err(IdentityError::BirthTooEarly);
        }
        Ok(DateOfBirth(date))
    }

    pub fn date(&self) -> Date {
        self.0
    }
}

impl fmt::Display for DateOfBirth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ann@Example.ORG ").unwrap().as_str(),
            "ann@example.org"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.org",
            "ann@example",
            "a b@example.org",
            "ann@ex..org",
            "ann@-x.org",
        ] {
            assert_eq!(Email::parse(bad), Err(IdentityError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(PersonName::parse(" Ann Lee ").unwrap().as_str(), "Ann Lee");
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse("Ann\u{0}Lee").is_err());
        assert!(PersonName::parse(&"x".repeat(101)).is_err());
    }

    #[test]
    fn dates_of_birth_are_real_and_past() {
        let today = date(2026, 11, 25);
        assert_eq!(
            DateOfBirth::parse("1980-02-29", today).unwrap().date(),
            date(1980, 2, 29)
        );
        assert_eq!(
            DateOfBirth::parse("1981-02-29", today),
            Err(IdentityError::MalformedDate)
        );
        assert_eq!(
            DateOfBirth::parse("25/11/1980", today),
            Err(IdentityError::MalformedDate)
        );
        assert_eq!(
            DateOfBirth::parse("2026-11-26", today),
            Err(IdentityError::BirthInFuture)
        );
        assert_eq!(
            DateOfBirth::parse("1899-12-31", today),
            Err(IdentityError::BirthTooEarly)
        );
    }

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("doctor".parse::<Role>().is_err());
    }
}

//! The password rule: long enough, and not guessable. Hashing lives in the server; this is only the rule.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("password must be at least {min} characters")]
    TooShort { min: usize },
    #[error("password must be at most {max} characters")]
    TooLong { max: usize },
    #[error("password is too common or too easy to guess: {hint}")]
    TooGuessable { hint: String },
}

/// A password that passed the rule. Its Debug output never shows the text.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

impl NewPassword {
    pub const MIN_CHARS: usize = 12;
    /// Argon2 takes any length, but a bound keeps a request from buying seconds of hashing.
    pub const MAX_CHARS: usize = 256;

    /// `related` holds what an attacker would try first: the person's name and email.
    pub fn parse(raw: &str, related: &[&str]) -> Result<Self, PasswordError> {
        let chars = raw.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(PasswordError::TooShort { min: Self::MIN_CHARS });
        }
        if chars > Self::MAX_CHARS {
            return Err(PasswordError::TooLong { max: Self::MAX_CHARS });
        }
        let estimate = zxcvbn::zxcvbn(raw, related);
        if u8::from(estimate.score()) < 3 {
            let hint = estimate
                .feedback()
                .and_then(|f| f.warning().map(|w| w.to_string()))
                .unwrap_or_else(|| "add more unrelated words".to_owned());
            return Err(PasswordError::TooGuessable { hint });
        }
        Ok(NewPassword(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_passwords_are_refused() {
        assert_eq!(
            NewPassword::parse("Tr0ub4dor&3", &[]),
            Err(PasswordError::TooShort { min: 12 })
        );
    }

    #[test]
    fn common_passwords_are_refused() {
        for common in [
            "password1234",
            "123456789012",
            "qwertyuiopasdf",
            "iloveyou1234",
            "aaaaaaaaaaaa",
        ] {
            assert!(
                matches!(
                    NewPassword::parse(common, &[]),
                    Err(PasswordError::TooGuessable { .. })
                ),
                "{common}"
            );
        }
    }

    #[test]
    fn passwords_built_from_the_persons_name_are_refused() {
        assert!(NewPassword::parse("anneleeannelee", &["annelee", "ann@example.org"]).is_err());
    }

    #[test]
    fn long_unusual_passwords_pass_and_never_print() {
        let p = NewPassword::parse("violet-otter-sails-at-dawn", &[]).unwrap();
        assert_eq!(format!("{p:?}"), "NewPassword(..)");
    }
}

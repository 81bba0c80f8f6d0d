//! Who the checker is talking about: age and sex, which set priors and which questions may be asked.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Female,
    Male,
}

impl Sex {
    pub const ALL: [Sex; 2] = [Sex::Female, Sex::Male];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The knowledge base's fixed age bands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgeBand {
    Infant,
    Toddler,
    Child,
    YoungAdult,
    Adult,
    OlderAdult,
}

impl AgeBand {
    pub const ALL: [AgeBand; 6] = [
        AgeBand::Infant,
        AgeBand::Toddler,
        AgeBand::Child,
        AgeBand::YoungAdult,
        AgeBand::Adult,
        AgeBand::OlderAdult,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The band's ages in years, from (inclusive) and to (exclusive).
    pub fn years(self) -> (f64, f64) {
        match self {
            AgeBand::Infant => (0.0, 1.0),
            AgeBand::Toddler => (1.0, 5.0),
            AgeBand::Child => (5.0, 16.0),
            AgeBand::YoungAdult => (16.0, 40.0),
            AgeBand::Adult => (40.0, 65.0),
            AgeBand::OlderAdult => (65.0, 150.0),
        }
    }

    pub fn of_years(years: f64) -> AgeBand {
        AgeBand::ALL
            .into_iter()
            .find(|band| years < band.years().1)
            .unwrap_or(AgeBand::OlderAdult)
    }
}

/// The person with the symptoms (who may not be the person typing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// Age in whole months, so that rules about young infants can be applied.
    pub age_months: u32,
    pub sex: Sex,
}

impl Patient {
    pub fn new(age_years: u32, sex: Sex) -> Patient {
        Patient {
            age_months: age_years.saturating_mul(12),
            sex,
        }
    }

    pub fn from_months(age_months: u32, sex: Sex) -> Patient {
        Patient { age_months, sex }
    }

    pub fn age_years(&self) -> f64 {
        f64::from(self.age_months) / 12.0
    }

    pub fn band(&self) -> AgeBand {
        AgeBand::of_years(self.age_years())
    }
}

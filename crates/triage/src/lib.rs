//! Confide's symptom checker: a knowledge base of conditions and findings (embedded from `kb/*.toml`), free-text
//! understanding, a Bayesian question-and-answer engine with red-flag rules, and its evaluation on vignettes.
//! The library does no I/O; callers bring text and keep sessions.

pub mod engine;
pub mod eval;
pub mod kb;
pub mod nlu;
pub mod patient;
pub mod region;

pub use engine::{
    Answer, Asked, Engine, EngineConfig, EngineError, Entry, Exchange, Outcome, Question, Session, Step,
};
pub use kb::{Disposition, Kb, KbError, Problem};
pub use patient::{AgeBand, Patient, Sex};
pub use region::Region;

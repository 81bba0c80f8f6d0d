//! The small knowledge base the engine's tests run on.

use confide_triage::Kb;

pub const TINY: &str = include_str!("../fixtures/tiny.toml");

pub fn tiny() -> Kb {
    Kb::from_sources(&[("tiny.toml", TINY)]).expect("the test knowledge base is valid")
}

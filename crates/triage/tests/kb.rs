//! The shipped knowledge base: it loads, passes every check and is big enough.

use confide_triage::Kb;

/// The standard general findings and groups other files may rely on.
const GENERAL: &[&str] = &[
    "fever",
    "high_fever",
    "chills",
    "sweating",
    "feeling_very_unwell",
    "fatigue",
    "loss_of_appetite",
    "weight_loss",
    "nausea",
    "vomiting",
    "diarrhoea",
    "abdominal_pain",
    "headache",
    "dizziness",
    "fainting",
    "confusion",
    "drowsy_or_floppy",
    "breathless",
    "cough",
    "chest_pain",
    "rash",
    "itching",
    "swelling",
    "muscle_aches",
    "joint_pain",
    "back_pain",
    "pregnant",
    "recent_injury",
    "poor_feeding",
    "duration_hours",
    "duration_days",
    "duration_weeks",
    "duration_months",
    "onset_sudden",
    "onset_gradual",
];

#[test]
fn the_embedded_knowledge_base_is_valid_and_complete() {
    let kb = match Kb::embedded() {
        Ok(kb) => kb,
        Err(e) => panic!("{e}"),
    };
    let size = kb.size_problems();
    assert!(size.is_empty(), "{size:?}");
    for id in GENERAL {
        assert!(kb.finding(id).is_some(), "the general finding {id} is missing");
    }
    for group in ["duration", "onset"] {
        assert!(kb.group(group).is_some(), "the group {group} is missing");
    }
}

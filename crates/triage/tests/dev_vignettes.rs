//! The development vignettes in `../shared/triage` (beside the repository), run as simulated conversations
//! against the shipped knowledge base, must meet the targets of the symptom checker.

use std::path::PathBuf;

use confide_triage::eval::{evaluate, parse_vignettes};
use confide_triage::{Engine, Kb};

#[test]
fn development_vignettes_meet_the_targets() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/triage/vignettes-dev.json");
    let Ok(json) = std::fs::read_to_string(&path) else {
        println!("skipped: no development vignettes at {}", path.display());
        return;
    };
    let vignettes = parse_vignettes(&json).expect("the vignettes parse");
    let kb = Kb::embedded().expect("the knowledge base is valid");
    let engine = Engine::new(&kb);
    let report = evaluate(&engine, &vignettes);
    for c in &report.cases {
        let mark = if c.triage == c.expected_triage { ' ' } else { '!' };
        let rank = c.rank.map_or("-".to_string(), |r| (r + 1).to_string());
        println!(
            "{mark} {:8} {:>9} → {:9} dx#{rank} {:30} q={:2} top={:?}",
            c.id,
            c.expected_triage.as_str(),
            c.triage.as_str(),
            c.expected_diagnosis,
            c.questions,
            c.top
        );
    }
    let s = &report.summary;
    println!("{s:#?}");
    assert_eq!(s.emergency_under_triaged, 0, "an emergency was under-triaged");
    assert!(s.triage_accuracy >= 0.80, "triage accuracy {}", s.triage_accuracy);
    assert!(s.top3 >= 0.85, "top-3 {}", s.top3);
    assert!(s.mean_questions <= 15.0, "mean questions {}", s.mean_questions);
}

//! Scoring the engine on vignettes: each is run as a simulated conversation, the complaint first, then every
//! question answered from the vignette's confirmed and denied findings through the engine's own matching.

use serde::{Deserialize, Serialize};

use crate::engine::{Answer, Engine, Outcome, Question, Step};
use crate::kb::{Disposition, Kb};
use crate::nlu;
use crate::patient::{Patient, Sex};

/// One case, in the format of `shared/triage/README.md`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Vignette {
    pub id: String,
    pub age: u32,
    pub sex: Sex,
    pub complaint: String,
    #[serde(default)]
    pub present: Vec<String>,
    #[serde(default)]
    pub absent: Vec<String>,
    pub triage: Disposition,
    pub diagnosis: String,
    #[serde(default)]
    pub acceptable: Vec<String>,
}

pub fn parse_vignettes(json: &str) -> Result<Vec<Vignette>, serde_json::Error> {
    serde_json::from_str(json)
}

/// Age of an infant whose age in months is neither given nor stated: the middle of the first year.
const INFANT_MONTHS: u32 = 6;

impl Vignette {
    /// The patient; an infant's age in months comes from the complaint when it says ("my 6 week old").
    pub fn patient(&self, kb: &Kb) -> Patient {
        if self.age == 0 {
            let months = nlu::understand(kb, &self.complaint)
                .age_months
                .unwrap_or(INFANT_MONTHS);
            Patient::from_months(months.min(11), self.sex)
        } else {
            Patient::new(self.age, self.sex)
        }
    }
}

/// Answers questions the way the vignette's patient would.
pub struct Oracle<'kb> {
    kb: &'kb Kb,
    /// Findings each confirmed phrase names (present in the phrase's own sense).
    present: Vec<usize>,
    /// Findings the confirmed phrases deny ("rash that does not fade" denies nothing it names by itself).
    denied_in_present: Vec<usize>,
    absent: Vec<usize>,
}

impl<'kb> Oracle<'kb> {
    pub fn new(kb: &'kb Kb, vignette: &Vignette) -> Oracle<'kb> {
        let mut present = Vec::new();
        let mut denied_in_present = Vec::new();
        for phrase in &vignette.present {
            for (f, yes) in nlu::findings_in(kb, phrase) {
                if yes {
                    // Saying "cough with green phlegm" is also saying "cough".
                    let mut at = Some(f);
                    while let Some(x) = at {
                        present.push(x);
                        at = kb.findings[x].parent;
                    }
                } else {
                    denied_in_present.push(f);
                }
            }
        }
        let absent = vignette
            .absent
            .iter()
            .flat_map(|phrase| nlu::findings_in(kb, phrase))
            .filter(|&(_, yes)| yes)
            .map(|(f, _)| f)
            .collect();
        Oracle {
            kb,
            present,
            denied_in_present,
            absent,
        }
    }

    pub fn answer(&self, question: &Question) -> Answer {
        match question {
            Question::Finding { finding } => {
                let Some(f) = self.kb.finding(finding) else {
                    return Answer::DontKnow;
                };
                if self.present.contains(&f) {
                    Answer::Yes
                } else if self.absent.contains(&f) || self.denied_in_present.contains(&f) {
                    Answer::No
                } else {
                    Answer::DontKnow
                }
            }
            Question::Group { group } => {
                let Some(g) = self.kb.group(group) else {
                    return Answer::DontKnow;
                };
                self.present
                    .iter()
                    .find(|f| self.kb.groups[g].options.contains(f))
                    .map_or(Answer::DontKnow, |&f| Answer::Choice {
                        option: self.kb.findings[f].id.clone(),
                    })
            }
        }
    }
}

/// Runs one vignette to the end of its conversation.
pub fn converse(engine: &Engine<'_>, vignette: &Vignette) -> Outcome {
    let kb = engine.kb();
    let oracle = Oracle::new(kb, vignette);
    let mut session = engine.start(vignette.patient(kb), &vignette.complaint);
    loop {
        match engine.next(&session) {
            Step::Done(outcome) => return outcome,
            Step::Ask(asked) => {
                let answer = oracle.answer(&asked.question);
                if engine.answer(&mut session, asked.question, answer).is_err() {
                    let state = engine.state(&session);
                    return engine.outcome(&session, &state);
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub id: String,
    pub expected_triage: Disposition,
    pub triage: Disposition,
    pub expected_diagnosis: String,
    /// The three leading conditions' names.
    pub top: Vec<String>,
    pub questions: usize,
    /// Where the expected diagnosis ranks among the leading conditions (0 = first), if it is among them.
    #[serde(skip)]
    pub rank: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub cases: usize,
    pub triage_accuracy: f64,
    pub under_triage_rate: f64,
    pub emergency_under_triaged: usize,
    pub over_triage_rate: f64,
    pub top1: f64,
    pub top3: f64,
    pub mean_questions: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub summary: Summary,
    pub cases: Vec<CaseResult>,
}

/// Whether condition `c` is the vignette's diagnosis or an acceptable one, after synonym mapping.
fn matches_diagnosis(kb: &Kb, c: usize, vignette: &Vignette) -> bool {
    let condition = &kb.conditions[c];
    std::iter::once(&vignette.diagnosis)
        .chain(&vignette.acceptable)
        .any(|name| {
            kb.condition_named(name) == Some(c)
                || std::iter::once(&condition.name)
                    .chain(&condition.synonyms)
                    .any(|own| nlu::name_key(own) == nlu::name_key(name))
        })
}

pub fn run_case(engine: &Engine<'_>, vignette: &Vignette) -> CaseResult {
    let kb = engine.kb();
    let outcome = converse(engine, vignette);
    let rank = outcome.top.iter().take(3).position(|r| {
        kb.condition(&r.id)
            .is_some_and(|c| matches_diagnosis(kb, c, vignette))
    });
    CaseResult {
        id: vignette.id.clone(),
        expected_triage: vignette.triage,
        triage: outcome.disposition,
        expected_diagnosis: vignette.diagnosis.clone(),
        top: outcome.top.iter().take(3).map(|r| r.name.clone()).collect(),
        questions: outcome.questions,
        rank,
    }
}

pub fn evaluate(engine: &Engine<'_>, vignettes: &[Vignette]) -> Report {
    let cases: Vec<CaseResult> = vignettes.iter().map(|v| run_case(engine, v)).collect();
    let n = cases.len();
    let share = |count: usize| if n == 0 { 0.0 } else { count as f64 / n as f64 };
    let count = |pred: &dyn Fn(&CaseResult) -> bool| cases.iter().filter(|c| pred(c)).count();
    let summary = Summary {
        cases: n,
        triage_accuracy: share(count(&|c| c.triage == c.expected_triage)),
        under_triage_rate: share(count(&|c| c.triage < c.expected_triage)),
        emergency_under_triaged: count(&|c| {
            c.expected_triage == Disposition::Emergency && c.triage < Disposition::Emergency
        }),
        over_triage_rate: share(count(&|c| c.triage > c.expected_triage)),
        top1: share(count(&|c| c.rank == Some(0))),
        top3: share(count(&|c| c.rank.is_some())),
        mean_questions: if n == 0 {
            0.0
        } else {
            cases.iter().map(|c| c.questions as f64).sum::<f64>() / n as f64
        },
    };
    Report { summary, cases }
}

/// The 95% Wilson score interval of a proportion `rate` over `n` cases.
pub fn wilson(rate: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n = n as f64;
    let denom = 1.0 + z * z / n;
    let centre = (rate + z * z / (2.0 * n)) / denom;
    let half = z * ((rate * (1.0 - rate) / n) + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        let (lo, hi) = wilson(0.8, 40);
        assert!(
            (lo - 0.6518).abs() < 1e-3 && (hi - 0.8949).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0.0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-3, "{lo} {hi}");
    }
}

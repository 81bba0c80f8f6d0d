//! The conversation: naive Bayes over one presenting condition, questions chosen by expected information
//! gain weighted toward the disposition, red-flag rules, and the disposition that minimises expected harm.
//!
//! A [`Session`] holds only what the patient said (their text and answers), so it serialises small and the
//! engine's state is always recomputed from it: undoing an answer is removing it, and the same session gives
//! the same state on every machine.

use serde::{Deserialize, Serialize};

use crate::kb::{Disposition, Kb};
use crate::nlu::{self, Understanding};
use crate::patient::Patient;
use crate::region::Region;

/// Tuning of question selection, stopping and the harm of each disposition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    pub max_questions: usize,
    /// Questions asked before the leading condition may end the conversation by being confident.
    pub min_questions: usize,
    /// Stop once the leading condition has at least this posterior probability...
    pub confident: f64,
    /// ...and no question is expected to reduce the harm of the disposition by more than this.
    pub settled_harm: f64,
    /// Stop when no question scores above this.
    pub min_score: f64,
    /// Weight of information about the disposition (nats) next to information about the condition.
    pub disposition_weight: f64,
    /// Weight of the expected reduction in harm (cost units) a question brings.
    pub harm_weight: f64,
    /// Weight of the chance that a question completes a red flag.
    pub red_flag_weight: f64,
    /// Prior multiplier for a condition the patient names ("I have COPD").
    pub named_condition: f64,
    /// `harm[true][chosen]` by `Disposition::index`: under-triage costs far more than over-triage.
    pub harm: [[f64; 4]; 4],
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_questions: 25,
            min_questions: 3,
            confident: 0.8,
            settled_harm: 0.05,
            min_score: 0.01,
            disposition_weight: 1.0,
            harm_weight: 1.0,
            red_flag_weight: 2.0,
            named_condition: 4.0,
            harm: [
                // chosen: self-care, routine, urgent, emergency
                [0.0, 1.0, 2.0, 4.0],    // truly self-care
                [3.0, 0.0, 1.0, 3.0],    // truly routine
                [8.0, 4.0, 0.0, 2.0],    // truly urgent
                [60.0, 40.0, 20.0, 0.0], // truly emergency
            ],
        }
    }
}

/// A question, by knowledge-base id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Question {
    /// A yes / no / don't know question about one finding.
    Finding { finding: String },
    /// A choice among a group's findings.
    Group { group: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Yes,
    No,
    DontKnow,
    /// One of a group's options, by finding id.
    Choice {
        option: String,
    },
}

/// One thing the patient said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// Free text, with what was understood from it when it was said.
    Text {
        text: String,
        understood: Understanding,
    },
    Answer {
        question: Question,
        answer: Answer,
    },
}

/// Everything needed to resume a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub patient: Patient,
    pub entries: Vec<Entry>,
}

impl Session {
    /// Questions answered so far.
    pub fn questions(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::Answer { .. }))
            .count()
    }

    /// Takes back the last answer (or text said after the first); false if there is nothing to take back.
    pub fn undo(&mut self) -> bool {
        if self.entries.len() > 1 {
            self.entries.pop();
            true
        } else {
            false
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("there is no finding {0:?}")]
    UnknownFinding(String),
    #[error("there is no question group {0:?}")]
    UnknownGroup(String),
    #[error("{option:?} is not an option of {group:?}")]
    NotAnOption { group: String, option: String },
    #[error("a yes/no question cannot be answered with a choice, nor a choice with yes or no")]
    WrongAnswerKind,
    #[error("the conversation has ended")]
    Ended,
}

/// What the patient has said about one finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Known {
    Unknown,
    Present,
    Absent,
}

/// The engine's view after everything in a session.
#[derive(Clone, Debug)]
pub struct State {
    /// Posterior probability of each condition, in knowledge-base order; sums to 1.
    pub posterior: Vec<f64>,
    pub known: Vec<Known>,
    /// Findings asked and answered "don't know".
    pub unsure: Vec<bool>,
    /// The option chosen in each group, or `Some(None)` for "don't know".
    pub chosen: Vec<Option<Option<usize>>>,
    /// Red flags that fire, by index.
    pub red_flags: Vec<usize>,
    pub questions: usize,
}

impl State {
    /// Whether a finding is present, through an answer, the text or a chosen option.
    pub fn present(&self, finding: usize) -> bool {
        self.known[finding] == Known::Present
    }

    /// Probability mass on conditions of each disposition.
    pub fn disposition_mass(&self, kb: &Kb) -> [f64; 4] {
        let mut m = [0.0; 4];
        for (c, &p) in self.posterior.iter().enumerate() {
            m[kb.conditions[c].triage.index()] += p;
        }
        m
    }
}

/// The next question, ready to show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asked {
    pub question: Question,
    pub text: String,
    /// For a choice: (option finding id, label).
    pub options: Vec<(String, String)>,
    /// Questions answered so far.
    pub number: usize,
    /// A rough share of the conversation done, 0..1.
    pub progress: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FiredFlag {
    pub id: String,
    pub disposition: Disposition,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub id: String,
    pub name: String,
    pub probability: f64,
    pub triage: Disposition,
    pub explanation: String,
    /// What the patient said that points to it.
    pub because: Vec<String>,
}

/// The end of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub disposition: Disposition,
    /// The disposition with the least expected harm under the model alone.
    pub model_disposition: Disposition,
    pub red_flags: Vec<FiredFlag>,
    pub advice: String,
    pub safety_net: String,
    pub top: Vec<Ranked>,
    pub questions: usize,
    /// Each question asked and its answer, in order, in words.
    pub transcript: Vec<Exchange>,
    /// Findings confirmed and denied, as short phrases (for the clinician's summary).
    pub present: Vec<String>,
    pub absent: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub question: String,
    pub answer: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Ask(Asked),
    Done(Outcome),
}

pub struct Engine<'kb> {
    kb: &'kb Kb,
    config: EngineConfig,
    region: &'static Region,
}

/// A question by knowledge-base index, while scoring.
#[derive(Clone, Copy, Debug)]
enum Candidate {
    Finding(usize),
    Group(usize),
}

/// How much each kind of question is worth.
#[derive(Clone, Copy, Debug, Default)]
struct Score {
    total: f64,
    harm: f64,
}

impl<'kb> Engine<'kb> {
    pub fn new(kb: &'kb Kb) -> Engine<'kb> {
        Engine {
            kb,
            config: EngineConfig::default(),
            region: Region::uk(),
        }
    }

    pub fn with_config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    pub fn with_region(mut self, region: &'static Region) -> Self {
        self.region = region;
        self
    }

    pub fn kb(&self) -> &'kb Kb {
        self.kb
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A new conversation that starts with what the patient typed.
    pub fn start(&self, patient: Patient, complaint: &str) -> Session {
        let mut session = Session {
            patient,
            entries: Vec::new(),
        };
        self.tell(&mut session, complaint);
        session
    }

    /// Adds free text; red flags in it take effect at once.
    pub fn tell(&self, session: &mut Session, text: &str) {
        let understood = nlu::understand(self.kb, text);
        session.entries.push(Entry::Text {
            text: text.to_string(),
            understood,
        });
    }

    /// Records an answer after checking it fits the question.
    pub fn answer(
        &self,
        session: &mut Session,
        question: Question,
        answer: Answer,
    ) -> Result<(), EngineError> {
        match (&question, &answer) {
            (Question::Finding { finding }, Answer::Yes | Answer::No | Answer::DontKnow) => {
                self.finding(finding)?;
            }
            (Question::Group { group }, Answer::DontKnow) => {
                self.group(group)?;
            }
            (Question::Group { group }, Answer::Choice { option }) => {
                let g = self.group(group)?;
                let o = self.finding(option)?;
                if !self.kb.groups[g].options.contains(&o) {
                    return Err(EngineError::NotAnOption {
                        group: group.clone(),
                        option: option.clone(),
                    });
                }
            }
            _ => return Err(EngineError::WrongAnswerKind),
        }
        let state = self.state(session);
        if self.ended(session, &state) {
            return Err(EngineError::Ended);
        }
        session.entries.push(Entry::Answer { question, answer });
        Ok(())
    }

    fn finding(&self, id: &str) -> Result<usize, EngineError> {
        self.kb
            .finding(id)
            .ok_or_else(|| EngineError::UnknownFinding(id.to_string()))
    }

    fn group(&self, id: &str) -> Result<usize, EngineError> {
        self.kb
            .group(id)
            .ok_or_else(|| EngineError::UnknownGroup(id.to_string()))
    }

    /// Recomputes the state from the session; ids the knowledge base no longer has are ignored.
    pub fn state(&self, session: &Session) -> State {
        let kb = self.kb;
        let mut known = vec![Known::Unknown; kb.findings.len()];
        let mut unsure = vec![false; kb.findings.len()];
        let mut chosen: Vec<Option<Option<usize>>> = vec![None; kb.groups.len()];
        let mut named = vec![false; kb.conditions.len()];
        let set =
            |f: usize, present: bool, known: &mut Vec<Known>, chosen: &mut Vec<Option<Option<usize>>>| {
                known[f] = if present { Known::Present } else { Known::Absent };
                if let Some(g) = kb.findings[f].group
                    && present
                {
                    let k = kb.groups[g].options.iter().position(|&o| o == f);
                    chosen[g] = Some(k);
                    // The options exclude one another.
                    for &o in &kb.groups[g].options {
                        if o != f {
                            known[o] = Known::Absent;
                        }
                    }
                }
            };
        for entry in &session.entries {
            match entry {
                Entry::Text { understood, .. } => {
                    let read: Vec<(usize, &nlu::TextFinding)> = understood
                        .findings
                        .iter()
                        .filter_map(|tf| kb.finding(&tf.finding).map(|f| (f, tf)))
                        // "Pregnant" said of a man, or a finding only asked of children said of an adult,
                        // is about someone else.
                        .filter(|(f, _)| kb.findings[*f].applies_to(&session.patient))
                        .collect();
                    for &(f, tf) in &read {
                        // Words that name several findings mean the one that needs no unconfirmed parent:
                        // "blurred vision" is not "vision problems in pregnancy" until pregnancy is known.
                        let conditional = kb.findings[f].parent.is_some_and(|p| known[p] != Known::Present);
                        let plainer = read.iter().any(|&(g, other)| {
                            g != f
                                && (other.start, other.end) == (tf.start, tf.end)
                                && kb.findings[g].parent.is_none_or(|p| known[p] == Known::Present)
                        });
                        if !(conditional && plainer) {
                            set(f, tf.present, &mut known, &mut chosen);
                        }
                    }
                    for tc in &understood.conditions {
                        if let Some(c) = kb.condition(&tc.condition) {
                            named[c] = true;
                        }
                    }
                }
                Entry::Answer {
                    question: Question::Finding { finding },
                    answer,
                } => {
                    let Some(f) = kb.finding(finding) else { continue };
                    match answer {
                        Answer::Yes => set(f, true, &mut known, &mut chosen),
                        Answer::No => set(f, false, &mut known, &mut chosen),
                        _ => unsure[f] = true,
                    }
                }
                Entry::Answer {
                    question: Question::Group { group },
                    answer,
                } => {
                    let Some(g) = kb.group(group) else { continue };
                    match answer {
                        Answer::Choice { option } => {
                            if let Some(f) = kb.finding(option) {
                                set(f, true, &mut known, &mut chosen);
                            }
                        }
                        _ => chosen[g] = Some(None),
                    }
                }
            }
        }
        // A finding implies its parents ("cough with blood" is a cough).
        for f in 0..known.len() {
            if known[f] == Known::Present {
                let mut at = kb.findings[f].parent;
                while let Some(p) = at {
                    if known[p] == Known::Unknown {
                        known[p] = Known::Present;
                    }
                    at = kb.findings[p].parent;
                }
            }
        }

        let n = kb.conditions.len();
        let mut log: Vec<f64> = kb
            .conditions
            .iter()
            .zip(&named)
            .map(|(c, &named)| {
                let prior = c.prior_for(&session.patient);
                let boost = if named { self.config.named_condition } else { 1.0 };
                if prior > 0.0 {
                    (prior * boost).ln()
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        for (f, &k) in known.iter().enumerate() {
            // A chosen option counts once, as a choice among its group's options, below.
            if let Some(g) = kb.findings[f].group
                && matches!(chosen[g], Some(Some(_)))
            {
                continue;
            }
            let lik = kb.likelihoods(f);
            match k {
                Known::Present => log.iter_mut().zip(lik).for_each(|(l, p)| *l += p.ln()),
                Known::Absent => log.iter_mut().zip(lik).for_each(|(l, p)| *l += (1.0 - p).ln()),
                Known::Unknown => {}
            }
        }
        for (g, choice) in chosen.iter().enumerate() {
            if let Some(Some(k)) = choice {
                let q = kb.option_likelihoods(g, *k);
                log.iter_mut().zip(q).for_each(|(l, p)| *l += p.ln());
            }
        }
        let max = log.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut posterior: Vec<f64> = if max.is_finite() {
            log.iter().map(|l| (l - max).exp()).collect()
        } else {
            // Nobody of this age and sex can have any condition: fall back to the unadjusted priors.
            kb.conditions.iter().map(|c| c.prior).collect()
        };
        let total: f64 = posterior.iter().sum();
        posterior.iter_mut().for_each(|p| *p /= total);
        debug_assert_eq!(posterior.len(), n);

        let present: Vec<bool> = known.iter().map(|&k| k == Known::Present).collect();
        let red_flags = (0..kb.red_flags.len())
            .filter(|&r| kb.red_flags[r].fires(&session.patient, &present))
            .collect();
        State {
            posterior,
            known,
            unsure,
            chosen,
            red_flags,
            questions: session.questions(),
        }
    }

    fn ended(&self, session: &Session, state: &State) -> bool {
        state.red_flags.iter().any(|&r| self.kb.red_flags[r].end)
            || session.questions() >= self.config.max_questions
    }

    /// The disposition with the least expected harm for a distribution over dispositions; ties go to the more
    /// urgent.
    fn least_harm(&self, mass: &[f64; 4]) -> (Disposition, f64) {
        let mut best = (Disposition::Emergency, f64::INFINITY);
        for chosen in Disposition::ALL.into_iter().rev() {
            let risk: f64 = (0..4)
                .map(|t| mass[t] * self.config.harm[t][chosen.index()])
                .sum();
            if risk < best.1 - 1e-12 {
                best = (chosen, risk);
            }
        }
        best
    }

    /// What to ask next, or the result.
    pub fn next(&self, session: &Session) -> Step {
        let state = self.state(session);
        if !self.ended(session, &state)
            && let Some((question, score)) = self.best_question(session, &state)
        {
            let top = state.posterior.iter().copied().fold(0.0, f64::max);
            let settled = top >= self.config.confident
                && score.harm < self.config.settled_harm
                && state.questions >= self.config.min_questions;
            if !settled && score.total >= self.config.min_score {
                return Step::Ask(self.asked(question, &state));
            }
        }
        Step::Done(self.outcome(session, &state))
    }

    fn asked(&self, question: Question, state: &State) -> Asked {
        let kb = self.kb;
        let (text, options) = match &question {
            Question::Finding { finding } => {
                let f = kb.finding(finding).expect("chosen from the knowledge base");
                (kb.findings[f].question.clone(), Vec::new())
            }
            Question::Group { group } => {
                let g = &kb.groups[kb.group(group).expect("chosen from the knowledge base")];
                let options = g
                    .options
                    .iter()
                    .map(|&o| (kb.findings[o].id.clone(), kb.findings[o].phrase.clone()))
                    .collect();
                (g.question.clone(), options)
            }
        };
        let top = state.posterior.iter().copied().fold(0.0, f64::max);
        let by_count = state.questions as f64 / self.config.max_questions as f64;
        let by_confidence = top / self.config.confident;
        Asked {
            question,
            text,
            options,
            number: state.questions + 1,
            progress: by_count.max(by_confidence).min(0.95),
        }
    }

    /// Every question that may be asked now with its score, best first (for explaining the choice).
    pub fn ranked_questions(&self, session: &Session) -> Vec<(Question, f64)> {
        let state = self.state(session);
        let mut scored = self.scores(session, &state);
        scored.sort_by(|a, b| b.1.total.total_cmp(&a.1.total));
        scored
            .into_iter()
            .map(|(q, s)| (self.question(q), s.total))
            .collect()
    }

    fn question(&self, q: Candidate) -> Question {
        match q {
            Candidate::Finding(f) => Question::Finding {
                finding: self.kb.findings[f].id.clone(),
            },
            Candidate::Group(g) => Question::Group {
                group: self.kb.groups[g].id.clone(),
            },
        }
    }

    /// The question with the highest score (the first in knowledge-base order on a tie), if any can be asked.
    fn best_question(&self, session: &Session, state: &State) -> Option<(Question, Score)> {
        let mut best: Option<(Candidate, Score)> = None;
        for (q, s) in self.scores(session, state) {
            if best.is_none_or(|(_, b)| s.total > b.total) {
                best = Some((q, s));
            }
        }
        best.map(|(q, s)| (self.question(q), s))
    }

    /// The score of every question that may be asked now.
    fn scores(&self, session: &Session, state: &State) -> Vec<(Candidate, Score)> {
        let kb = self.kb;
        let patient = &session.patient;
        // Conditions with negligible probability change nothing and are skipped for speed.
        let active: Vec<usize> = (0..kb.conditions.len())
            .filter(|&c| state.posterior[c] > 1e-9)
            .collect();
        let mass = state.disposition_mass(kb);
        let (_, risk_now) = self.least_harm(&mass);
        let completes = self.completing(patient, state);
        let mut scored = Vec::new();
        for (f, finding) in kb.findings.iter().enumerate() {
            if finding.group.is_some()
                || state.known[f] != Known::Unknown
                || state.unsure[f]
                || !finding.applies_to(patient)
                || finding.parent.is_some_and(|p| state.known[p] != Known::Present)
            {
                continue;
            }
            let lik = kb.likelihoods(f);
            let h = kb.neg_entropies(f);
            let mut py = 0.0;
            let mut sum_h = 0.0;
            let mut yes_mass = [0.0; 4];
            for &c in &active {
                let pc = state.posterior[c];
                py += pc * lik[c];
                sum_h += pc * h[c];
                yes_mass[kb.conditions[c].triage.index()] += pc * lik[c];
            }
            let pn = 1.0 - py;
            if py <= 1e-12 || pn <= 1e-12 {
                continue;
            }
            let info = sum_h - py * py.ln() - pn * pn.ln();
            let no_mass: [f64; 4] = std::array::from_fn(|d| mass[d] - yes_mass[d]);
            let outcomes = [(py, yes_mass), (pn, no_mass)];
            let mut score = self.disposition_score(&mass, risk_now, &outcomes);
            // A question that could complete a red flag is worth asking for its own sake.
            let flag = if completes[f] {
                self.config.red_flag_weight * py
            } else {
                0.0
            };
            score.total += info.max(0.0) + flag;
            scored.push((Candidate::Finding(f), score));
        }
        for (g, group) in kb.groups.iter().enumerate() {
            if state.chosen[g].is_some() || group.options.iter().any(|&o| state.known[o] != Known::Unknown) {
                continue;
            }
            let h = kb.group_neg_entropies(g);
            let mut sum_h = 0.0;
            for &c in &active {
                sum_h += state.posterior[c] * h[c];
            }
            let mut info = sum_h;
            let mut outcomes = Vec::with_capacity(group.options.len());
            for k in 0..group.options.len() {
                let q = kb.option_likelihoods(g, k);
                let mut pk = 0.0;
                let mut m = [0.0; 4];
                for &c in &active {
                    pk += state.posterior[c] * q[c];
                    m[kb.conditions[c].triage.index()] += state.posterior[c] * q[c];
                }
                if pk > 1e-12 {
                    info -= pk * pk.ln();
                }
                outcomes.push((pk, m));
            }
            let mut score = self.disposition_score(&mass, risk_now, &outcomes);
            score.total += info.max(0.0);
            scored.push((Candidate::Group(g), score));
        }
        scored
    }

    /// The findings whose "yes" alone would make a red flag fire that does not yet.
    fn completing(&self, patient: &Patient, state: &State) -> Vec<bool> {
        let mut completes = vec![false; self.kb.findings.len()];
        for r in &self.kb.red_flags {
            if !r.applies_to(patient)
                || state
                    .red_flags
                    .iter()
                    .any(|&x| std::ptr::eq(&self.kb.red_flags[x], r))
            {
                continue;
            }
            let missing: Vec<usize> = r.all.iter().copied().filter(|&f| !state.present(f)).collect();
            let any_met = r.any.is_empty() || r.any.iter().any(|&f| state.present(f));
            match (missing.as_slice(), any_met) {
                ([f], true) => completes[*f] = true,
                ([f], false) if r.any.contains(f) => completes[*f] = true,
                ([], false) => r.any.iter().for_each(|&f| completes[f] = true),
                _ => {}
            }
        }
        completes
    }

    /// Information about the disposition and expected reduction in harm, given each answer's probability and
    /// the disposition mass that goes with it.
    fn disposition_score(&self, mass: &[f64; 4], risk_now: f64, outcomes: &[(f64, [f64; 4])]) -> Score {
        let mut info = 0.0;
        let mut risk_after = 0.0;
        for (p, m) in outcomes {
            if *p <= 1e-12 {
                continue;
            }
            for d in 0..4 {
                if m[d] > 1e-15 && mass[d] > 1e-15 {
                    info += m[d] * (m[d] / (mass[d] * p)).ln();
                }
            }
            let after: [f64; 4] = std::array::from_fn(|d| m[d] / p);
            risk_after += p * self.least_harm(&after).1;
        }
        let harm = (risk_now - risk_after).max(0.0);
        Score {
            total: self.config.disposition_weight * info.max(0.0) + self.config.harm_weight * harm,
            harm,
        }
    }

    fn transcript(&self, session: &Session) -> Vec<Exchange> {
        let kb = self.kb;
        session
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Text { .. } => None,
                Entry::Answer { question, answer } => {
                    let text = match question {
                        Question::Finding { finding } => {
                            kb.finding(finding).map(|f| &kb.findings[f].question)
                        }
                        Question::Group { group } => kb.group(group).map(|g| &kb.groups[g].question),
                    }?;
                    let answer = match answer {
                        Answer::Yes => "yes".to_string(),
                        Answer::No => "no".to_string(),
                        Answer::DontKnow => "don't know".to_string(),
                        Answer::Choice { option } => {
                            kb.finding(option).map(|f| kb.findings[f].phrase.clone())?
                        }
                    };
                    Some(Exchange {
                        question: text.clone(),
                        answer,
                    })
                }
            })
            .collect()
    }

    /// The result as things stand, whether or not the conversation is over.
    pub fn outcome(&self, session: &Session, state: &State) -> Outcome {
        let kb = self.kb;
        let mass = state.disposition_mass(kb);
        let (model, _) = self.least_harm(&mass);
        let red_flags: Vec<FiredFlag> = state
            .red_flags
            .iter()
            .map(|&r| {
                let r = &kb.red_flags[r];
                FiredFlag {
                    id: r.id.clone(),
                    disposition: r.disposition,
                    message: r.message.clone(),
                }
            })
            .collect();
        let disposition = red_flags
            .iter()
            .map(|f| f.disposition)
            .fold(model, Disposition::max);
        let mut order: Vec<usize> = (0..kb.conditions.len()).collect();
        // Stable order for equal probabilities keeps the result deterministic.
        order.sort_by(|&a, &b| state.posterior[b].total_cmp(&state.posterior[a]).then(a.cmp(&b)));
        let top = order
            .into_iter()
            .take(5)
            .enumerate()
            .filter(|&(i, c)| i < 3 || state.posterior[c] >= 0.05)
            .map(|(_, c)| {
                let cond = &kb.conditions[c];
                let because = cond
                    .findings
                    .iter()
                    .filter(|&&(f, p)| state.present(f) && p > kb.findings[f].leak)
                    .map(|&(f, _)| kb.findings[f].phrase.clone())
                    .collect();
                Ranked {
                    id: cond.id.clone(),
                    name: cond.name.clone(),
                    probability: state.posterior[c],
                    triage: cond.triage,
                    explanation: cond.explanation.clone(),
                    because,
                }
            })
            .collect();
        let phrases = |k: Known| {
            state
                .known
                .iter()
                .enumerate()
                .filter(|&(_, &s)| s == k)
                .map(|(f, _)| kb.findings[f].phrase.clone())
                .collect::<Vec<_>>()
        };
        Outcome {
            disposition,
            model_disposition: model,
            red_flags,
            advice: self.region.advice(disposition),
            safety_net: self.region.safety_net(disposition),
            top,
            questions: session.questions(),
            transcript: self.transcript(session),
            present: phrases(Known::Present),
            absent: phrases(Known::Absent),
        }
    }
}

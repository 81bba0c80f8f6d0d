//! The knowledge base: findings, choice groups, conditions and red flags, merged from TOML files and checked
//! as a whole (see `kb/README.md` for the schema).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::nlu::Lexicon;
use crate::patient::{AgeBand, Patient, Sex};

/// How urgently to seek care, least urgent first, so that `max` is the more urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    SelfCare,
    Routine,
    Urgent,
    Emergency,
}

impl Disposition {
    pub const ALL: [Disposition; 4] = [
        Disposition::SelfCare,
        Disposition::Routine,
        Disposition::Urgent,
        Disposition::Emergency,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::SelfCare => "self-care",
            Disposition::Routine => "routine",
            Disposition::Urgent => "urgent",
            Disposition::Emergency => "emergency",
        }
    }

    pub fn parse(s: &str) -> Option<Disposition> {
        Disposition::ALL
            .into_iter()
            .find(|d| d.as_str() == s.trim().to_ascii_lowercase())
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Minimum numbers of conditions and findings the shipped knowledge base must have.
pub const MIN_CONDITIONS: usize = 80;
pub const MIN_FINDINGS: usize = 250;
/// Questions longer than this are not plain wording.
pub const MAX_QUESTION_CHARS: usize = 140;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    finding: Vec<RawFinding>,
    #[serde(default)]
    group: Vec<RawGroup>,
    #[serde(default)]
    condition: Vec<RawCondition>,
    #[serde(default)]
    red_flag: Vec<RawRedFlag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFinding {
    id: String,
    phrase: String,
    question: String,
    #[serde(default)]
    synonyms: Vec<String>,
    leak: f64,
    parent: Option<String>,
    group: Option<String>,
    sex: Option<Sex>,
    min_age: Option<f64>,
    max_age: Option<f64>,
    #[serde(default)]
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    id: String,
    question: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgeMultipliers {
    infant: Option<f64>,
    toddler: Option<f64>,
    child: Option<f64>,
    young_adult: Option<f64>,
    adult: Option<f64>,
    older_adult: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SexMultipliers {
    female: Option<f64>,
    male: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    id: String,
    name: String,
    #[serde(default)]
    synonyms: Vec<String>,
    #[serde(default)]
    system: String,
    triage: Disposition,
    explanation: String,
    prior: f64,
    #[serde(default)]
    prior_source: String,
    #[serde(default)]
    age: AgeMultipliers,
    #[serde(default)]
    sex: SexMultipliers,
    #[serde(default)]
    findings_source: String,
    #[serde(default)]
    findings: BTreeMap<String, f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedFlag {
    id: String,
    description: String,
    all: Vec<String>,
    #[serde(default)]
    any: Vec<String>,
    min_age: Option<f64>,
    max_age_months: Option<f64>,
    sex: Option<Sex>,
    disposition: Disposition,
    message: String,
    #[serde(default)]
    end: bool,
    #[serde(default)]
    source: String,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub id: String,
    pub phrase: String,
    pub question: String,
    pub synonyms: Vec<String>,
    pub leak: f64,
    pub parent: Option<usize>,
    pub group: Option<usize>,
    pub sex: Option<Sex>,
    pub min_age: Option<f64>,
    pub max_age: Option<f64>,
    pub source: String,
    pub file: String,
}

impl Finding {
    /// Whether this finding may be asked of (or applies to) the patient, by sex and age.
    pub fn applies_to(&self, patient: &Patient) -> bool {
        let age = patient.age_years();
        self.sex.is_none_or(|s| s == patient.sex)
            && self.min_age.is_none_or(|min| age >= min)
            && self.max_age.is_none_or(|max| age <= max)
    }

    fn applies_to_band(&self, band: AgeBand, sex: Sex) -> bool {
        let (from, to) = band.years();
        self.sex.is_none_or(|s| s == sex)
            && self.min_age.is_none_or(|min| min < to)
            && self.max_age.is_none_or(|max| max >= from)
    }
}

#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub question: String,
    /// Its findings, in file order.
    pub options: Vec<usize>,
    pub file: String,
}

#[derive(Clone, Debug)]
pub struct Condition {
    pub id: String,
    pub name: String,
    pub synonyms: Vec<String>,
    pub system: String,
    pub triage: Disposition,
    pub explanation: String,
    pub prior: f64,
    pub prior_source: String,
    /// Multipliers by `AgeBand::index`.
    pub age: [f64; 6],
    /// Multipliers by `Sex::index`.
    pub sex: [f64; 2],
    /// Listed likelihoods P(finding | condition), by finding index.
    pub findings: Vec<(usize, f64)>,
    pub findings_source: String,
    pub file: String,
}

impl Condition {
    /// The prior before normalisation for this patient's age band and sex.
    pub fn prior_for(&self, patient: &Patient) -> f64 {
        self.prior * self.age[patient.band().index()] * self.sex[patient.sex.index()]
    }
}

#[derive(Clone, Debug)]
pub struct RedFlag {
    pub id: String,
    pub description: String,
    pub all: Vec<usize>,
    pub any: Vec<usize>,
    pub min_age: Option<f64>,
    pub max_age_months: Option<f64>,
    pub sex: Option<Sex>,
    pub disposition: Disposition,
    pub message: String,
    pub end: bool,
    pub source: String,
    pub file: String,
}

impl RedFlag {
    pub fn applies_to(&self, patient: &Patient) -> bool {
        self.sex.is_none_or(|s| s == patient.sex)
            && self.min_age.is_none_or(|min| patient.age_years() >= min)
            && self
                .max_age_months
                .is_none_or(|max| f64::from(patient.age_months) <= max)
    }

    /// Whether the rule fires, given which findings are known to be present.
    pub fn fires(&self, patient: &Patient, present: &[bool]) -> bool {
        self.applies_to(patient)
            && self.all.iter().all(|&f| present[f])
            && (self.any.is_empty() || self.any.iter().any(|&f| present[f]))
    }
}

/// One thing wrong with the knowledge base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub id: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.id.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.id, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error("{file}: not valid knowledge-base TOML: {message}")]
    Parse { file: String, message: String },
    #[error("the knowledge base has {} problem(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The merged, checked knowledge base.
#[derive(Debug)]
pub struct Kb {
    pub findings: Vec<Finding>,
    pub groups: Vec<Group>,
    pub conditions: Vec<Condition>,
    pub red_flags: Vec<RedFlag>,
    finding_ids: HashMap<String, usize>,
    group_ids: HashMap<String, usize>,
    condition_ids: HashMap<String, usize>,
    /// P(finding | condition) for every pair, `lik[f * conditions + c]`; unlisted pairs hold the leak.
    lik: Vec<f64>,
    /// p ln p + (1 − p) ln(1 − p) for the same pairs, so that information gain needs no logarithm per turn.
    neg_entropy: Vec<f64>,
    /// Per group: P(option k | c) as a choice among the options, `q[k * conditions + c]`.
    group_lik: Vec<Vec<f64>>,
    /// Per group and condition: Σ_k q ln q.
    group_neg_entropy: Vec<Vec<f64>>,
    /// Non-fatal remarks found while loading (ambiguous synonyms, unused findings).
    pub warnings: Vec<Problem>,
    pub(crate) lexicon: Lexicon,
}

mod generated {
    include!(concat!(env!("OUT_DIR"), "/kb_files.rs"));
}

/// The knowledge-base files compiled into the library, as (file name, text).
pub fn embedded_files() -> &'static [(&'static str, &'static str)] {
    generated::KB_FILES
}

struct Builder {
    problems: Vec<Problem>,
}

impl Builder {
    fn problem(&mut self, file: &str, id: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: file.into(),
            id: id.into(),
            message: message.into(),
        });
    }

    fn probability(&mut self, file: &str, id: &str, what: &str, p: f64) {
        if !(p > 0.0 && p < 1.0) {
            self.problem(
                file,
                id,
                format!("{what} must lie strictly between 0 and 1, not {p}"),
            );
        }
    }

    fn source(&mut self, file: &str, id: &str, what: &str, text: &str) {
        if text.trim().is_empty() {
            self.problem(file, id, format!("`{what}` must say where the figures come from"));
        }
    }

    fn text(&mut self, file: &str, id: &str, what: &str, text: &str) {
        if text.trim().is_empty() {
            self.problem(file, id, format!("`{what}` is empty"));
        }
    }

    fn synonyms(&mut self, file: &str, id: &str, synonyms: &[String]) {
        for s in synonyms {
            if s.trim().is_empty() {
                self.problem(file, id, "a synonym is empty");
            } else if s.chars().any(char::is_uppercase) {
                self.problem(file, id, format!("synonym {s:?} must be lowercase"));
            } else if Lexicon::tokens_of(s).is_empty() {
                self.problem(
                    file,
                    id,
                    format!("synonym {s:?} has no words the engine can match"),
                );
            }
        }
    }

    fn question(&mut self, file: &str, id: &str, q: &str) {
        let q = q.trim();
        if q.is_empty() {
            self.problem(file, id, "the question is empty");
        } else if !q.ends_with('?') {
            self.problem(file, id, format!("the question {q:?} must end with '?'"));
        } else if q.chars().count() > MAX_QUESTION_CHARS {
            self.problem(
                file,
                id,
                format!("the question is longer than {MAX_QUESTION_CHARS} characters"),
            );
        }
    }
}

fn valid_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn age_multiplier(file: &str, id: &str, b: &mut Builder, value: Option<f64>, what: &str) -> f64 {
    let m = value.unwrap_or(1.0);
    if !(m.is_finite() && m >= 0.0) {
        b.problem(
            file,
            id,
            format!("the {what} multiplier must be a finite number ≥ 0, not {m}"),
        );
    }
    m
}

impl Kb {
    /// The knowledge base compiled into the library.
    pub fn embedded() -> Result<Kb, KbError> {
        Kb::from_sources(embedded_files())
    }

    /// Parses, merges and checks knowledge-base files given as (file name, TOML text).
    pub fn from_sources(files: &[(&str, &str)]) -> Result<Kb, KbError> {
        let mut raw = Vec::new();
        for (name, text) in files {
            let parsed: RawFile = toml::from_str(text).map_err(|e| KbError::Parse {
                file: (*name).to_string(),
                message: e.to_string(),
            })?;
            raw.push((name.to_string(), parsed));
        }
        let mut b = Builder { problems: Vec::new() };
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut claim = |b: &mut Builder, file: &str, id: &str, kind: &str| {
            if !valid_id(id) {
                b.problem(
                    file,
                    id,
                    format!("the {kind} id must be snake_case (a–z, 0–9, _)"),
                );
            }
            if let Some(other) = ids.insert(id.to_string(), file.to_string()) {
                b.problem(file, id, format!("the id is already used (in {other})"));
            }
        };

        // Groups and findings first: everything else refers to them.
        let mut groups = Vec::new();
        let mut group_ids = HashMap::new();
        for (file, f) in &raw {
            for g in &f.group {
                claim(&mut b, file, &g.id, "group");
                b.question(file, &g.id, &g.question);
                group_ids.insert(g.id.clone(), groups.len());
                groups.push(Group {
                    id: g.id.clone(),
                    question: g.question.trim().to_string(),
                    options: Vec::new(),
                    file: file.clone(),
                });
            }
        }
        let mut finding_ids = HashMap::new();
        for (file, f) in &raw {
            for x in &f.finding {
                claim(&mut b, file, &x.id, "finding");
                let next = finding_ids.len();
                finding_ids.entry(x.id.clone()).or_insert(next);
            }
        }
        let mut findings: Vec<Finding> = Vec::new();
        let mut seen = HashSet::new();
        for (file, f) in &raw {
            for x in &f.finding {
                if !seen.insert(x.id.clone()) {
                    continue;
                }
                let id = &x.id;
                b.text(file, id, "phrase", &x.phrase);
                b.question(file, id, &x.question);
                b.synonyms(file, id, &x.synonyms);
                b.probability(file, id, "`leak`", x.leak);
                b.source(file, id, "source", &x.source);
                let parent = x.parent.as_ref().and_then(|p| {
                    let found = finding_ids.get(p).copied();
                    if found.is_none() {
                        b.problem(file, id, format!("the parent {p:?} is not a finding"));
                    }
                    found
                });
                let group = x.group.as_ref().and_then(|g| {
                    let found = group_ids.get(g).copied();
                    if found.is_none() {
                        b.problem(file, id, format!("the group {g:?} is not a group"));
                    }
                    found
                });
                for (what, age) in [("min_age", x.min_age), ("max_age", x.max_age)] {
                    if age.is_some_and(|a| !(a.is_finite() && a >= 0.0)) {
                        b.problem(file, id, format!("`{what}` must be an age in years"));
                    }
                }
                if let (Some(min), Some(max)) = (x.min_age, x.max_age)
                    && min > max
                {
                    b.problem(file, id, "`min_age` is above `max_age`: nobody can be asked");
                }
                if let Some(g) = group {
                    groups[g].options.push(findings.len());
                }
                findings.push(Finding {
                    id: id.clone(),
                    phrase: x.phrase.trim().to_string(),
                    question: x.question.trim().to_string(),
                    synonyms: x.synonyms.iter().map(|s| s.trim().to_string()).collect(),
                    leak: x.leak,
                    parent,
                    group,
                    sex: x.sex,
                    min_age: x.min_age,
                    max_age: x.max_age,
                    source: x.source.clone(),
                    file: file.clone(),
                });
            }
        }
        for g in &groups {
            if g.options.len() < 2 {
                b.problem(
                    &g.file,
                    &g.id,
                    "a choice group needs at least two findings as options",
                );
            }
        }
        // A parent chain must end, or the child could never be asked.
        for (i, f) in findings.iter().enumerate() {
            let mut at = f.parent;
            let mut steps = 0;
            while let Some(p) = at {
                if p == i || steps > findings.len() {
                    b.problem(&f.file, &f.id, "the parent chain loops back to this finding");
                    break;
                }
                at = findings[p].parent;
                steps += 1;
            }
        }

        let mut conditions = Vec::new();
        let mut condition_ids = HashMap::new();
        for (file, f) in &raw {
            for c in &f.condition {
                let id = &c.id;
                claim(&mut b, file, id, "condition");
                b.text(file, id, "name", &c.name);
                b.text(file, id, "explanation", &c.explanation);
                b.synonyms(file, id, &c.synonyms);
                b.source(file, id, "prior_source", &c.prior_source);
                b.source(file, id, "findings_source", &c.findings_source);
                if !(c.prior.is_finite() && c.prior > 0.0 && c.prior < 1.0) {
                    b.problem(
                        file,
                        id,
                        format!("`prior` must be above 0 and below 1, not {}", c.prior),
                    );
                }
                let a = &c.age;
                let age = [
                    age_multiplier(file, id, &mut b, a.infant, "infant"),
                    age_multiplier(file, id, &mut b, a.toddler, "toddler"),
                    age_multiplier(file, id, &mut b, a.child, "child"),
                    age_multiplier(file, id, &mut b, a.young_adult, "young_adult"),
                    age_multiplier(file, id, &mut b, a.adult, "adult"),
                    age_multiplier(file, id, &mut b, a.older_adult, "older_adult"),
                ];
                let sex = [
                    age_multiplier(file, id, &mut b, c.sex.female, "female"),
                    age_multiplier(file, id, &mut b, c.sex.male, "male"),
                ];
                if c.findings.is_empty() {
                    b.problem(file, id, "the condition lists no findings");
                }
                let mut listed = Vec::new();
                for (fid, &p) in &c.findings {
                    match finding_ids.get(fid) {
                        Some(&fi) => {
                            b.probability(file, id, &format!("P({fid} | {id})"), p);
                            listed.push((fi, p));
                        }
                        None => b.problem(file, id, format!("lists {fid:?}, which is not a finding")),
                    }
                }
                condition_ids.insert(id.clone(), conditions.len());
                conditions.push(Condition {
                    id: id.clone(),
                    name: c.name.trim().to_string(),
                    synonyms: c.synonyms.iter().map(|s| s.trim().to_string()).collect(),
                    system: c.system.clone(),
                    triage: c.triage,
                    explanation: c.explanation.trim().to_string(),
                    prior: c.prior,
                    prior_source: c.prior_source.clone(),
                    age,
                    sex,
                    findings: listed,
                    findings_source: c.findings_source.clone(),
                    file: file.clone(),
                });
            }
        }

        let mut red_flags = Vec::new();
        for (file, f) in &raw {
            for r in &f.red_flag {
                let id = &r.id;
                claim(&mut b, file, id, "red flag");
                b.text(file, id, "description", &r.description);
                b.text(file, id, "message", &r.message);
                b.source(file, id, "source", &r.source);
                if r.all.is_empty() {
                    b.problem(file, id, "`all` must name at least one finding");
                }
                if r.disposition < Disposition::Urgent {
                    b.problem(
                        file,
                        id,
                        "a red flag's disposition must be `emergency` or `urgent`",
                    );
                }
                let resolve = |names: &[String], b: &mut Builder| -> Vec<usize> {
                    names
                        .iter()
                        .filter_map(|n| {
                            let found = finding_ids.get(n).copied();
                            if found.is_none() {
                                b.problem(file, id, format!("names {n:?}, which is not a finding"));
                            }
                            found
                        })
                        .collect()
                };
                let all = resolve(&r.all, &mut b);
                let any = resolve(&r.any, &mut b);
                red_flags.push(RedFlag {
                    id: id.clone(),
                    description: r.description.clone(),
                    all,
                    any,
                    min_age: r.min_age,
                    max_age_months: r.max_age_months,
                    sex: r.sex,
                    disposition: r.disposition,
                    message: r.message.trim().to_string(),
                    end: r.end,
                    source: r.source.clone(),
                    file: file.clone(),
                });
            }
        }

        // Every condition must be reachable: possible for somebody, and with a finding that can be asked of them.
        for c in &conditions {
            let reachable = AgeBand::ALL.into_iter().any(|band| {
                Sex::ALL.into_iter().any(|sex| {
                    c.age[band.index()] * c.sex[sex.index()] > 0.0
                        && c.findings
                            .iter()
                            .any(|&(f, _)| findings[f].applies_to_band(band, sex))
                })
            });
            if !reachable && !c.findings.is_empty() {
                b.problem(
                    &c.file,
                    &c.id,
                    "unreachable: no listed finding can be asked of anyone the condition can affect",
                );
            }
        }
        if findings.is_empty() || conditions.is_empty() {
            b.problem(
                "kb",
                "",
                "the knowledge base needs at least one finding and one condition",
            );
        }
        if !b.problems.is_empty() {
            return Err(KbError::Invalid(b.problems));
        }

        let n = conditions.len();
        let mut lik = Vec::with_capacity(findings.len() * n);
        for f in &findings {
            lik.extend(std::iter::repeat_n(f.leak, n));
        }
        for (ci, c) in conditions.iter().enumerate() {
            for &(f, p) in &c.findings {
                lik[f * n + ci] = p;
            }
        }
        let neg_entropy = lik
            .iter()
            .map(|&p| p * p.ln() + (1.0 - p) * (1.0 - p).ln())
            .collect();
        let mut group_lik = Vec::new();
        let mut group_neg_entropy = Vec::new();
        for g in &groups {
            let mut q = vec![0.0; g.options.len() * n];
            let mut h = vec![0.0; n];
            for c in 0..n {
                let total: f64 = g.options.iter().map(|&f| lik[f * n + c]).sum();
                for (k, &f) in g.options.iter().enumerate() {
                    let v = lik[f * n + c] / total;
                    q[k * n + c] = v;
                    h[c] += v * v.ln();
                }
            }
            group_lik.push(q);
            group_neg_entropy.push(h);
        }
        let lexicon = Lexicon::build(&findings, &conditions);
        let mut kb = Kb {
            findings,
            groups,
            conditions,
            red_flags,
            finding_ids,
            group_ids,
            condition_ids,
            lik,
            neg_entropy,
            group_lik,
            group_neg_entropy,
            warnings: Vec::new(),
            lexicon,
        };
        kb.warnings = kb.find_warnings();
        Ok(kb)
    }

    fn find_warnings(&self) -> Vec<Problem> {
        let mut warnings = Vec::new();
        let mut used = vec![false; self.findings.len()];
        for c in &self.conditions {
            for &(f, _) in &c.findings {
                used[f] = true;
            }
        }
        for r in &self.red_flags {
            for &f in r.all.iter().chain(&r.any) {
                used[f] = true;
            }
        }
        for (i, f) in self.findings.iter().enumerate() {
            let is_parent = self.findings.iter().any(|x| x.parent == Some(i));
            if !used[i] && !is_parent {
                warnings.push(Problem {
                    file: f.file.clone(),
                    id: f.id.clone(),
                    message: "no condition or red flag uses this finding".into(),
                });
            }
        }
        for (phrase, owners) in self.lexicon.ambiguous_phrases() {
            let names: Vec<&str> = owners.iter().map(|&f| self.findings[f].id.as_str()).collect();
            let first = &self.findings[owners[0]];
            warnings.push(Problem {
                file: first.file.clone(),
                id: first.id.clone(),
                message: format!("the words {phrase:?} name several findings: {}", names.join(", ")),
            });
        }
        warnings
    }

    /// What the shipped knowledge base must also satisfy beyond being valid: its size.
    pub fn size_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.conditions.len() < MIN_CONDITIONS {
            problems.push(Problem {
                file: "kb".into(),
                id: String::new(),
                message: format!(
                    "{} conditions; at least {MIN_CONDITIONS} are required",
                    self.conditions.len()
                ),
            });
        }
        if self.findings.len() < MIN_FINDINGS {
            problems.push(Problem {
                file: "kb".into(),
                id: String::new(),
                message: format!(
                    "{} findings; at least {MIN_FINDINGS} are required",
                    self.findings.len()
                ),
            });
        }
        problems
    }

    pub fn finding(&self, id: &str) -> Option<usize> {
        self.finding_ids.get(id).copied()
    }

    pub fn group(&self, id: &str) -> Option<usize> {
        self.group_ids.get(id).copied()
    }

    pub fn condition(&self, id: &str) -> Option<usize> {
        self.condition_ids.get(id).copied()
    }

    /// P(finding | condition), the leak when the condition does not list it.
    pub fn likelihood(&self, finding: usize, condition: usize) -> f64 {
        self.lik[finding * self.conditions.len() + condition]
    }

    /// P(finding | c) for every condition c, in condition order.
    pub fn likelihoods(&self, finding: usize) -> &[f64] {
        let n = self.conditions.len();
        &self.lik[finding * n..(finding + 1) * n]
    }

    /// p ln p + (1 − p) ln(1 − p) of P(finding | c) for every condition c.
    pub(crate) fn neg_entropies(&self, finding: usize) -> &[f64] {
        let n = self.conditions.len();
        &self.neg_entropy[finding * n..(finding + 1) * n]
    }

    /// P(option k | c) when the group's question is answered with one option, for every condition c.
    pub fn option_likelihoods(&self, group: usize, option: usize) -> &[f64] {
        let n = self.conditions.len();
        &self.group_lik[group][option * n..(option + 1) * n]
    }

    pub(crate) fn group_neg_entropies(&self, group: usize) -> &[f64] {
        &self.group_neg_entropy[group]
    }

    /// The condition a name refers to, through its name or synonyms after normalisation.
    pub fn condition_named(&self, name: &str) -> Option<usize> {
        self.lexicon.condition_named(name)
    }
}

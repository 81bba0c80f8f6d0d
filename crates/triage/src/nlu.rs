//! Free-text understanding without a learned model: the patient's words are normalised (case, punctuation,
//! apostrophes, British and American spelling, light stemming), matched against the knowledge base's phrases as
//! token sequences with small typo tolerance, and each match is marked present or absent by negation scope.
//! Durations ("for three days", "since yesterday") and onset ("all of a sudden") map to the standard findings.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::kb::{Condition, Finding, Kb};

/// A finding read from the patient's text, with where it was said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextFinding {
    pub finding: String,
    pub present: bool,
    /// Byte offsets of the matched words in the text.
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// A condition the patient named ("I have COPD", "I think it's flu").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextCondition {
    pub condition: String,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Understanding {
    pub findings: Vec<TextFinding>,
    /// Named conditions that were not negated.
    pub conditions: Vec<TextCondition>,
    /// An age the text gives in days, weeks or months ("my 6 week old"), in whole months.
    pub age_months: Option<u32>,
}

/// Reads findings, named conditions and a stated infant age from free text.
pub fn understand(kb: &Kb, text: &str) -> Understanding {
    kb.lexicon.understand(kb, text)
}

/// The findings a short phrase names, present or absent, by finding index (used to answer from vignettes).
pub(crate) fn findings_in(kb: &Kb, text: &str) -> Vec<(usize, bool)> {
    kb.lexicon
        .hits(text)
        .into_iter()
        .map(|h| (h.finding, h.present))
        .collect()
}

/// A name reduced to the words that count, so that names compare regardless of case, spelling and fillers.
pub(crate) fn name_key(name: &str) -> String {
    Lexicon::tokens_of(name).join(" ")
}

/// Words that carry no meaning for matching, dropped from phrases and text alike.
const FILLER: &[&str] = &[
    "a", "an", "the", "my", "his", "her", "their", "our", "your", "its", "some", "very", "really", "quite",
    "bit", "little", "just", "so", "too", "also", "is", "are", "was", "were", "am", "be", "been", "being",
    "i", "me", "he", "she", "it", "they", "we", "you", "him", "them", "us", "of", "in", "on", "at", "with",
    "to", "into", "onto", "lot", "lots", "kind", "sort", "that", "which", "who", "this", "these", "those",
];

/// Words that change a phrase's meaning ("keep fit", "can't keep still", "had a fit"): a phrase keeps them and
/// the text must say them, but text may hold them between a phrase's words without using up a gap.
const WEAK: &[&str] = &[
    "have", "has", "had", "having", "got", "get", "getting", "bad", "badly", "like", "feels", "seems",
    "seem", "looks", "look", "keep", "keeps", "kept", "do", "does", "did", "will", "would", "can", "could",
    "now", "still",
];

/// Common English words that must not be mistaken for a typo of a medical word ("fewer" is not "fever").
const COMMON: &[&str] = &[
    "fewer",
    "never",
    "lever",
    "ever",
    "every",
    "water",
    "later",
    "latter",
    "other",
    "mother",
    "father",
    "brother",
    "sister",
    "daughter",
    "there",
    "where",
    "these",
    "those",
    "their",
    "think",
    "thing",
    "things",
    "still",
    "since",
    "while",
    "after",
    "under",
    "before",
    "being",
    "going",
    "doing",
    "having",
    "taking",
    "making",
    "better",
    "bitter",
    "butter",
    "letter",
    "matter",
    "worse",
    "worst",
    "about",
    "above",
    "again",
    "always",
    "around",
    "because",
    "could",
    "would",
    "should",
    "first",
    "great",
    "right",
    "might",
    "night",
    "light",
    "fight",
    "eight",
    "weight",
    "heavy",
    "happy",
    "sorry",
    "money",
    "house",
    "place",
    "point",
    "start",
    "started",
    "starting",
    "stand",
    "thought",
    "through",
    "though",
    "today",
    "tonight",
    "together",
    "until",
    "which",
    "whole",
    "world",
    "years",
    "young",
    "older",
    "along",
    "early",
    "earlier",
    "either",
    "enough",
    "floor",
    "garden",
    "gardening",
    "friend",
    "friends",
    "husband",
    "partner",
    "people",
    "person",
    "school",
    "stairs",
    "store",
    "shops",
    "table",
    "three",
    "seven",
    "eleven",
    "twelve",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "hundred",
    "month",
    "months",
    "weeks",
    "hours",
    "minutes",
    "second",
    "seconds",
    "morning",
    "evening",
    "afternoon",
    "yesterday",
    "couple",
    "several",
    "nearly",
    "almost",
    "maybe",
    "perhaps",
    "little",
    "small",
    "large",
    "bigger",
    "smaller",
    "longer",
    "shorter",
    "slightly",
    "beach",
    "drink",
    "drinking",
    "eating",
    "sleep",
    "sleeping",
    "working",
    "walking",
    "running",
    "sitting",
    "standing",
    "lying",
    "wanted",
    "trying",
    "worried",
    "worry",
    "scared",
    "pressed",
    "press",
    "glass",
    "spots",
    "baby",
    "toddler",
    "children",
    "child",
    "woman",
    "women",
    "inside",
    "outside",
    "behind",
    "below",
    "beside",
    "between",
    "within",
    "without",
    "whether",
    "whenever",
    "anything",
    "everything",
    "something",
    "nothing",
    "anyone",
    "someone",
    "everyone",
    "lately",
    "recently",
    "usually",
    "normally",
    "properly",
    "suddenly",
    "really",
    "hardly",
    "barely",
    "close",
    "closer",
    "whose",
    "tried",
    "tries",
    "loads",
    "plenty",
    "level",
];

/// American (and other) spellings mapped to the British spelling the knowledge base uses.
const SPELLING: &[(&str, &str)] = &[
    ("diarrhea", "diarrhoea"),
    ("diarrhoae", "diarrhoea"),
    ("anemia", "anaemia"),
    ("anemic", "anaemic"),
    ("edema", "oedema"),
    ("esophagus", "oesophagus"),
    ("esophageal", "oesophageal"),
    ("estrogen", "oestrogen"),
    ("feces", "faeces"),
    ("fecal", "faecal"),
    ("fetus", "foetus"),
    ("hemorrhage", "haemorrhage"),
    ("hemorrhoid", "haemorrhoid"),
    ("hemorrhoids", "haemorrhoids"),
    ("hematoma", "haematoma"),
    ("hemoglobin", "haemoglobin"),
    ("leukemia", "leukaemia"),
    ("pediatric", "paediatric"),
    ("orthopedic", "orthopaedic"),
    ("gynecology", "gynaecology"),
    ("gynecological", "gynaecological"),
    ("ischemia", "ischaemia"),
    ("ischemic", "ischaemic"),
    ("anesthetic", "anaesthetic"),
    ("septicemia", "septicaemia"),
    ("color", "colour"),
    ("colored", "coloured"),
    ("discolored", "discoloured"),
    ("behavior", "behaviour"),
    ("tumor", "tumour"),
    ("tumors", "tumours"),
    ("labor", "labour"),
    ("odor", "odour"),
    ("odors", "odours"),
    ("center", "centre"),
    ("fiber", "fibre"),
    ("gray", "grey"),
    ("mom", "mum"),
    ("mommy", "mummy"),
    ("poop", "poo"),
    ("pooping", "pooing"),
    ("pooped", "pooed"),
    ("vomitting", "vomiting"),
    ("tummy", "tummy"),
    ("stomachache", "stomach ache"),
    ("bellyache", "belly ache"),
    ("headach", "headache"),
    ("toothache", "tooth ache"),
    ("earache", "ear ache"),
    ("backache", "back ache"),
];

/// Words that negate what follows them in the same clause.
const NEGATIONS: &[&str] = &[
    "no", "not", "never", "without", "denies", "deny", "nor", "neither", "none",
];
/// Words after which a negation word expresses doubt rather than absence ("not sure", "don't know").
const DOUBT_AFTER_NEGATION: &[&str] = &["sure", "know", "certain", "idea", "think"];
/// Words that make what follows uncertain: it is neither confirmed nor denied.
const DOUBT: &[&str] = &[
    "unsure",
    "maybe",
    "perhaps",
    "possibly",
    "might",
    "wonder",
    "wondering",
    "whether",
];
/// Words that end a negation's scope (a new clause) without ending a phrase match.
const SCOPE_BREAKS: &[&str] = &[
    "but", "and", "then", "so", "although", "though", "however", "except", "apart", "because", "since",
];
/// How many words a negation reaches at most.
const NEGATION_WINDOW: usize = 8;
/// Words a phrase match may skip in all, and between two of its words.
const MAX_GAPS: usize = 1;
/// Weak words ("have", "keep") a phrase match may skip in all, on top of `MAX_GAPS`.
const MAX_WEAK_GAPS: usize = 2;

const BUILT_IN_SUDDEN: &[&str] = &[
    "sudden",
    "suddenly",
    "all of a sudden",
    "abrupt",
    "abruptly",
    "out of the blue",
    "out of nowhere",
    "came on quickly",
    "in an instant",
    "thunderclap",
];
const BUILT_IN_GRADUAL: &[&str] = &[
    "gradual",
    "gradually",
    "slowly",
    "crept up",
    "came on slowly",
    "bit by bit",
    "over time",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Break {
    None,
    /// Punctuation: ends phrase matches and negation.
    Hard,
}

/// One normalised word of the text, with the byte span of the original word it came from.
#[derive(Clone, Debug)]
struct Word {
    /// Lowercase, contractions expanded, spelling normalised, not stemmed.
    lower: String,
    stem: String,
    start: usize,
    end: usize,
    brk: Break,
}

#[derive(Clone, Debug)]
struct Phrase {
    words: Vec<u32>,
    target: Target,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Finding(usize),
    Condition(usize),
}

#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub finding: usize,
    pub present: bool,
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Copy, Debug)]
struct Durations {
    hours: usize,
    days: usize,
    weeks: usize,
    months: usize,
}

/// Everything the knowledge base says in words, compiled for matching.
#[derive(Debug, Default)]
pub(crate) struct Lexicon {
    vocab: HashMap<String, u32>,
    words: Vec<String>,
    phrases: Vec<Phrase>,
    /// Phrases by their first word.
    by_first: HashMap<u32, Vec<usize>>,
    condition_names: HashMap<String, usize>,
    durations: Option<Durations>,
}

impl Lexicon {
    pub(crate) fn build(findings: &[Finding], conditions: &[Condition]) -> Lexicon {
        let mut lex = Lexicon::default();
        let index = |id: &str| findings.iter().position(|f| f.id == id);
        if let (Some(hours), Some(days), Some(weeks), Some(months)) = (
            index("duration_hours"),
            index("duration_days"),
            index("duration_weeks"),
            index("duration_months"),
        ) {
            lex.durations = Some(Durations {
                hours,
                days,
                weeks,
                months,
            });
        }
        for (i, f) in findings.iter().enumerate() {
            // Durations are read by `duration`, which knows "8 weeks pregnant" from "for 8 weeks".
            if lex
                .durations
                .is_some_and(|d| [d.hours, d.days, d.weeks, d.months].contains(&i))
            {
                continue;
            }
            for s in std::iter::once(&f.phrase).chain(&f.synonyms) {
                lex.add(s, Target::Finding(i));
            }
        }
        for (id, built_in) in [
            ("onset_sudden", BUILT_IN_SUDDEN),
            ("onset_gradual", BUILT_IN_GRADUAL),
        ] {
            if let Some(i) = index(id) {
                for s in built_in {
                    lex.add(s, Target::Finding(i));
                }
            }
        }
        for (i, c) in conditions.iter().enumerate() {
            for s in std::iter::once(&c.name).chain(&c.synonyms) {
                lex.add(s, Target::Condition(i));
                lex.condition_names.entry(name_key(s)).or_insert(i);
            }
        }
        lex
    }

    fn add(&mut self, phrase: &str, target: Target) {
        let tokens = Lexicon::tokens_of(phrase);
        // A phrase that is one word without meaning of its own ("not", "keep") would match almost any text.
        if tokens.is_empty()
            || (tokens.len() == 1
                && (WEAK.contains(&tokens[0].as_str()) || NEGATIONS.contains(&tokens[0].as_str())))
        {
            return;
        }
        let words: Vec<u32> = tokens
            .into_iter()
            .map(|t| {
                let next = self.words.len() as u32;
                *self.vocab.entry(t.clone()).or_insert_with(|| {
                    self.words.push(t);
                    next
                })
            })
            .collect();
        if self
            .phrases
            .iter()
            .any(|p| p.words == words && p.target == target)
        {
            return;
        }
        self.by_first
            .entry(words[0])
            .or_default()
            .push(self.phrases.len());
        self.phrases.push(Phrase { words, target });
    }

    /// The stems of a phrase that take part in matching.
    pub(crate) fn tokens_of(phrase: &str) -> Vec<String> {
        words(phrase)
            .into_iter()
            .filter(|w| w.brk == Break::None && !FILLER.contains(&w.lower.as_str()))
            .map(|w| w.stem)
            .collect()
    }

    pub(crate) fn condition_named(&self, name: &str) -> Option<usize> {
        self.condition_names.get(&name_key(name)).copied()
    }

    /// Phrases that name more than one finding, with those findings.
    pub(crate) fn ambiguous_phrases(&self) -> Vec<(String, Vec<usize>)> {
        let mut owners: HashMap<&[u32], Vec<usize>> = HashMap::new();
        for p in &self.phrases {
            if let Target::Finding(f) = p.target {
                let list = owners.entry(&p.words).or_default();
                if !list.contains(&f) {
                    list.push(f);
                }
            }
        }
        let mut out: Vec<(String, Vec<usize>)> = owners
            .into_iter()
            .filter(|(_, fs)| fs.len() > 1)
            .map(|(ws, fs)| {
                let text = ws
                    .iter()
                    .map(|&w| self.words[w as usize].as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                (text, fs)
            })
            .collect();
        out.sort();
        out
    }

    /// The vocabulary words a text word may stand for: itself, or a near spelling if it is not a word we know.
    fn candidates(&self, w: &Word) -> Vec<u32> {
        if let Some(&id) = self.vocab.get(&w.stem) {
            return vec![id];
        }
        let stem = w.stem.as_str();
        if stem.len() < 5
            || stem.bytes().any(|b| b.is_ascii_digit())
            || COMMON.contains(&w.lower.as_str())
            || FILLER.contains(&w.lower.as_str())
            || WEAK.contains(&w.lower.as_str())
        {
            return Vec::new();
        }
        let first = stem.as_bytes()[0];
        self.words
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                let shorter = v.len().min(stem.len());
                let allowed = if shorter >= 8 {
                    2
                } else if shorter >= 5 {
                    1
                } else {
                    0
                };
                allowed > 0
                    && v.as_bytes()[0] == first
                    && v.len().abs_diff(stem.len()) <= allowed
                    && edit_distance(v.as_bytes(), stem.as_bytes()) <= allowed
            })
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// All matches in the text: (target, first word, last word) over `words`, longest first where contained.
    fn matches(&self, words: &[Word]) -> Vec<(Target, usize, usize)> {
        // Words that may take part, with their index in `words` and the clause they are in.
        let mut content: Vec<Content> = Vec::new();
        let mut clause = 0;
        for (i, w) in words.iter().enumerate() {
            // A comma may sit inside a phrase ("sudden, severe headache"); other punctuation ends it.
            if w.brk == Break::Hard {
                if w.lower != "," {
                    clause += 1;
                }
            } else if !FILLER.contains(&w.lower.as_str()) {
                content.push(Content {
                    word: i,
                    clause,
                    weak: WEAK.contains(&w.lower.as_str()),
                    candidates: self.candidates(w),
                });
            }
        }
        let mut found: Vec<(Target, Vec<usize>)> = Vec::new();
        for start in 0..content.len() {
            for &first in &content[start].candidates {
                let Some(phrases) = self.by_first.get(&first) else {
                    continue;
                };
                for &p in phrases {
                    let phrase = &self.phrases[p];
                    if let Some(used) = match_from(&content, start, &phrase.words) {
                        found.push((phrase.target, used.iter().map(|&c| content[c].word).collect()));
                    }
                }
            }
        }
        found.sort_by(|(t, a), (t2, b)| {
            (a[0], std::cmp::Reverse(a[a.len() - 1]), target_key(*t)).cmp(&(
                b[0],
                std::cmp::Reverse(b[b.len() - 1]),
                target_key(*t2),
            ))
        });
        found.dedup();
        // A match whose words all belong to a longer match is part of it ("rash" in "rash that does not fade",
        // "fever" in the condition "hay fever"). Words, not spans, decide: a phrase matched across a gap does not
        // swallow a word it skipped ("sweaty" in "feel sweaty and sick"). A gapped match is no match when the word
        // it skipped makes another phrase with one of its own and it keeps only weak words besides ("had fits"
        // across "had coughing fits"; "chest pain" across "chest sharp pain" stands).
        let contained = |(t, ws): &(Target, Vec<usize>)| {
            let skipped: Vec<usize> = (ws[0]..ws[ws.len() - 1]).filter(|w| !ws.contains(w)).collect();
            found.iter().any(|(t2, ws2)| {
                let inside = ws2.len() > ws.len()
                    && ws.iter().all(|w| ws2.contains(w))
                    && (same_kind(*t, *t2) || matches!(t2, Target::Condition(_)));
                let torn = ws2 != ws
                    && ws2.iter().any(|w| skipped.contains(w))
                    && ws2.iter().any(|w| ws.contains(w))
                    && ws
                        .iter()
                        .filter(|w| !ws2.contains(w))
                        .all(|&w| WEAK.contains(&words[w].lower.as_str()));
                inside || torn
            })
        };
        found
            .iter()
            .filter(|m| !contained(m))
            .map(|(t, ws)| (*t, ws[0], ws[ws.len() - 1]))
            .collect()
    }

    pub(crate) fn hits(&self, text: &str) -> Vec<Hit> {
        let words = words(text);
        self.hits_in(&words, &self.matches(&words))
    }

    /// The findings among `matches`, with durations, as byte spans in the text.
    fn hits_in(&self, words: &[Word], matches: &[(Target, usize, usize)]) -> Vec<Hit> {
        let mut hits = Vec::new();
        for &(target, s, e) in matches {
            let Target::Finding(finding) = target else {
                continue;
            };
            match polarity(words, s) {
                Polarity::Present => hits.push(Hit {
                    finding,
                    present: true,
                    start: s,
                    end: e,
                }),
                Polarity::Absent => hits.push(Hit {
                    finding,
                    present: false,
                    start: s,
                    end: e,
                }),
                Polarity::Doubtful => {}
            }
        }
        if let Some(d) = &self.durations
            && let Some((finding, s, e)) = duration(words, d)
        {
            let present = polarity(words, s) != Polarity::Absent;
            hits.push(Hit {
                finding,
                present,
                start: s,
                end: e,
            });
        }
        hits.sort_by_key(|h| (h.start, h.end, h.finding));
        hits.dedup_by_key(|h| (h.finding, h.present, h.start, h.end));
        // Word indices become byte offsets in the text.
        for h in &mut hits {
            h.start = words[h.start].start;
            h.end = words[h.end].end;
        }
        hits
    }

    fn understand(&self, kb: &Kb, text: &str) -> Understanding {
        let words = words(text);
        let matches = self.matches(&words);
        let findings = self
            .hits_in(&words, &matches)
            .into_iter()
            .map(|h| TextFinding {
                finding: kb.findings[h.finding].id.clone(),
                present: h.present,
                start: h.start,
                end: h.end,
                text: text[h.start..h.end].to_string(),
            })
            .collect();
        let conditions = matches
            .into_iter()
            .filter_map(|(t, s, e)| match t {
                Target::Condition(c) if polarity(&words, s) == Polarity::Present => {
                    let (start, end) = (words[s].start, words[e].end);
                    Some(TextCondition {
                        condition: kb.conditions[c].id.clone(),
                        start,
                        end,
                        text: text[start..end].to_string(),
                    })
                }
                _ => None,
            })
            .collect();
        Understanding {
            findings,
            conditions,
            age_months: stated_age(&words),
        }
    }
}

fn target_key(t: Target) -> (u8, usize) {
    match t {
        Target::Finding(f) => (0, f),
        Target::Condition(c) => (1, c),
    }
}

fn same_kind(a: Target, b: Target) -> bool {
    matches!(
        (a, b),
        (Target::Finding(_), Target::Finding(_)) | (Target::Condition(_), Target::Condition(_))
    )
}

/// A text word that may take part in a match.
struct Content {
    /// Index in the text's words.
    word: usize,
    clause: usize,
    /// A word that a phrase may need but that text may also hold between a phrase's words for free.
    weak: bool,
    candidates: Vec<u32>,
}

/// Matches a phrase's words starting at content word `start`, allowing a few skipped words within one
/// clause; returns the content indices of the matched words.
fn match_from(content: &[Content], start: usize, phrase: &[u32]) -> Option<Vec<usize>> {
    let clause = content[start].clause;
    let mut used = vec![start];
    let (mut gaps, mut weak) = (0, 0);
    for &w in &phrase[1..] {
        let mut at = used[used.len() - 1] + 1;
        loop {
            let candidate = content.get(at).filter(|c| c.clause == clause)?;
            if candidate.candidates.contains(&w) {
                used.push(at);
                break;
            }
            if candidate.weak {
                weak += 1;
                if weak > MAX_WEAK_GAPS {
                    return None;
                }
            } else {
                gaps += 1;
                if gaps > MAX_GAPS {
                    return None;
                }
            }
            at += 1;
        }
    }
    Some(used)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Polarity {
    Present,
    Absent,
    Doubtful,
}

/// Whether the match starting at word `s` is negated or doubted by a word before it in the same clause.
/// A negation inside the match belongs to the phrase ("rash that does not fade"), so only earlier words count.
fn polarity(words: &[Word], s: usize) -> Polarity {
    let mut i = s;
    let mut reach = 0;
    while i > 0 && reach < NEGATION_WINDOW {
        i -= 1;
        let w = &words[i];
        if w.brk == Break::Hard {
            // A comma before a list that ends in "or" keeps the negation going: "no fever, cough or cold".
            if w.lower == "," && list_continues(words, i + 1) {
                continue;
            }
            break;
        }
        reach += 1;
        let lower = w.lower.as_str();
        if SCOPE_BREAKS.contains(&lower) {
            break;
        }
        if DOUBT.contains(&lower) {
            return Polarity::Doubtful;
        }
        if NEGATIONS.contains(&lower) {
            let next = words.get(i + 1).map(|n| n.lower.as_str()).unwrap_or("");
            if DOUBT_AFTER_NEGATION.contains(&next) {
                return Polarity::Doubtful;
            }
            return Polarity::Absent;
        }
    }
    Polarity::Present
}

/// Whether the clause from `from` on (to the next punctuation) holds "or"/"nor", as a list does.
fn list_continues(words: &[Word], from: usize) -> bool {
    words[from..]
        .iter()
        .take_while(|w| w.brk == Break::None || w.lower == ",")
        .any(|w| w.lower == "or" || w.lower == "nor")
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=m).collect();
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// Splits text into normalised words and punctuation breaks, keeping each word's byte span.
fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let bytes: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (at, c) = bytes[i];
        let is_word = |c: char| c.is_alphanumeric() || c == '\'' || c == '’';
        if c.is_alphanumeric() {
            let mut j = i;
            while j < bytes.len() {
                let (_, d) = bytes[j];
                // A decimal point inside a number ("39.5") is part of it.
                let decimal = d == '.'
                    && j > i
                    && bytes[j - 1].1.is_ascii_digit()
                    && bytes.get(j + 1).is_some_and(|n| n.1.is_ascii_digit());
                if is_word(d) || decimal {
                    j += 1;
                } else {
                    break;
                }
            }
            let end = bytes.get(j).map_or(text.len(), |b| b.0);
            push_word(&mut out, &text[at..end], at, end);
            i = j;
        } else {
            if matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | '(' | ')' | '\n' | '"') {
                out.push(Word {
                    lower: if c == ',' { ",".into() } else { ".".into() },
                    stem: String::new(),
                    start: at,
                    end: at + c.len_utf8(),
                    brk: Break::Hard,
                });
            }
            i += 1;
        }
    }
    out
}

fn push_word(out: &mut Vec<Word>, raw: &str, start: usize, end: usize) {
    let lower = raw.to_lowercase().replace('’', "'");
    let lower = lower.trim_matches('\'');
    for part in expand(lower) {
        let spelled = SPELLING
            .iter()
            .find(|(from, _)| *from == part)
            .map_or(part.as_str(), |(_, to)| to);
        // A spelling may become two words ("stomachache").
        for piece in spelled.split(' ') {
            let lower = british(piece);
            let stem = stem(&lower);
            out.push(Word {
                lower,
                stem,
                start,
                end,
                brk: Break::None,
            });
        }
    }
}

/// Expands contractions, with or without the apostrophe.
fn expand(word: &str) -> Vec<String> {
    const WHOLE: &[(&str, &str, &str)] = &[
        ("can't", "can", "not"),
        ("cant", "can", "not"),
        ("cannot", "can", "not"),
        ("won't", "will", "not"),
        ("shan't", "shall", "not"),
        ("dont", "do", "not"),
        ("doesnt", "does", "not"),
        ("didnt", "did", "not"),
        ("isnt", "is", "not"),
        ("arent", "are", "not"),
        ("wasnt", "was", "not"),
        ("werent", "were", "not"),
        ("havent", "have", "not"),
        ("hasnt", "has", "not"),
        ("hadnt", "had", "not"),
        ("couldnt", "could", "not"),
        ("wouldnt", "would", "not"),
        ("shouldnt", "should", "not"),
        ("aint", "is", "not"),
        ("im", "i", "am"),
        ("ive", "i", "have"),
    ];
    if let Some((_, a, b)) = WHOLE.iter().find(|(w, _, _)| *w == word) {
        return vec![a.to_string(), b.to_string()];
    }
    if let Some(base) = word.strip_suffix("n't") {
        return vec![base.to_string(), "not".to_string()];
    }
    for (suffix, full) in [
        ("'m", "am"),
        ("'ve", "have"),
        ("'re", "are"),
        ("'ll", "will"),
        ("'d", "would"),
    ] {
        if let Some(base) = word.strip_suffix(suffix) {
            return vec![base.to_string(), full.to_string()];
        }
    }
    let word = word.strip_suffix("'s").unwrap_or(word);
    vec![word.replace('\'', "")]
}

/// American -ize/-yze endings to British -ise/-yse.
fn british(word: &str) -> String {
    for (from, to) in [
        ("ization", "isation"),
        ("izing", "ising"),
        ("ized", "ised"),
        ("izes", "ises"),
        ("ize", "ise"),
        ("yzed", "ysed"),
        ("yze", "yse"),
    ] {
        if word.len() > from.len() + 2
            && let Some(base) = word.strip_suffix(from)
        {
            return format!("{base}{to}");
        }
    }
    word.to_string()
}

/// A light stemmer: plurals, -ing, -ed and a final e, so that "coughs", "coughing" and "coughed" agree.
/// Stems need not be words; the same function is applied to the knowledge base's phrases.
fn stem(word: &str) -> String {
    let mut w = word.to_string();
    if !w.is_ascii() || w.len() <= 3 || w.bytes().any(|b| b.is_ascii_digit()) {
        return w;
    }
    if let Some(base) = w.strip_suffix("ies")
        && base.len() >= 2
    {
        w = format!("{base}y");
    } else if let Some(base) = w.strip_suffix("sses") {
        w = format!("{base}ss");
    } else if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        w.pop();
    }
    let undouble = |mut s: String| {
        let b = s.as_bytes();
        let n = b.len();
        if n >= 2 && b[n - 1] == b[n - 2] && !matches!(b[n - 1], b'l' | b's' | b'z' | b'e' | b'o') {
            s.pop();
        }
        s
    };
    // "spotting" (bleeding) is not "spots", "fitting" (a seizure) is not "keep fit", and "weeing" keeps its
    // short stem whole.
    if w.len() > 5
        && !matches!(w.as_str(), "spotting" | "fitting")
        && let Some(base) = w.strip_suffix("ing")
        && base.len() >= 3
    {
        w = undouble(base.to_string());
    } else if w.len() > 4
        && let Some(base) = w.strip_suffix("ed")
        && !base.ends_with('e')
    {
        w = undouble(base.to_string());
    }
    if w.len() > 3 && w.ends_with('e') && !w.ends_with("ee") {
        w.pop();
    }
    w
}

fn number(word: &str) -> Option<f64> {
    const WORDS: &[(&str, f64)] = &[
        ("a", 1.0),
        ("an", 1.0),
        ("one", 1.0),
        ("two", 2.0),
        ("three", 3.0),
        ("four", 4.0),
        ("five", 5.0),
        ("six", 6.0),
        ("seven", 7.0),
        ("eight", 8.0),
        ("nine", 9.0),
        ("ten", 10.0),
        ("eleven", 11.0),
        ("twelve", 12.0),
        ("fifteen", 15.0),
        ("twenty", 20.0),
        ("thirty", 30.0),
        ("forty", 40.0),
        ("fifty", 50.0),
        ("couple", 2.0),
        ("few", 3.0),
        ("several", 4.0),
        ("half", 0.5),
    ];
    word.parse::<f64>()
        .ok()
        .or_else(|| WORDS.iter().find(|(w, _)| *w == word).map(|&(_, n)| n))
}

/// Length in days of one unit word.
fn unit_days(word: &str) -> Option<f64> {
    Some(match word {
        "second" | "seconds" | "minute" | "minutes" | "min" | "mins" => 1.0 / 1440.0,
        "hour" | "hours" | "hr" | "hrs" => 1.0 / 24.0,
        "day" | "days" | "night" | "nights" => 1.0,
        "week" | "weeks" | "wk" | "wks" | "fortnight" => 7.0,
        "month" | "months" => 30.0,
        "year" | "years" | "yr" | "yrs" => 365.0,
        _ => return None,
    })
}

/// The longest time the text says the problem has lasted, as a duration finding with its word span.
fn duration(words: &[Word], d: &Durations) -> Option<(usize, usize, usize)> {
    let lower = |i: usize| words.get(i).map_or("", |w| w.lower.as_str());
    // (anchored, days, first word, last word): a duration tied to the complaint ("for 3 days", "2 weeks ago")
    // beats a bare one, and the longer of two alike wins.
    let mut best: Option<(bool, f64, usize, usize)> = None;
    let mut note = |anchored: bool, days: f64, s: usize, e: usize| {
        if best.is_none_or(|(a, b, _, _)| (anchored, days) > (a, b)) {
            best = Some((anchored, days, s, e));
        }
    };
    for i in 0..words.len() {
        let w = lower(i);
        if let Some(per) = unit_days(w) {
            let next = lower(i + 1);
            // "6 weeks old", "8 weeks pregnant": an age or a pregnancy, not how long the problem has lasted.
            if matches!(next, "old" | "pregnant" | "gestation" | "along") {
                continue;
            }
            let fortnight = if w == "fortnight" { 2.0 } else { 1.0 };
            let prev = if i > 0 { lower(i - 1) } else { "" };
            // "last night" is read below as hours; only counted nights ("two nights") are days.
            if matches!(w, "night" | "nights") && number(prev).is_none() {
                continue;
            }
            // Frequencies ("three times a month", "every day") are not durations.
            let before_prev = if i > 1 { lower(i - 2) } else { "" };
            if matches!(prev, "per" | "every" | "each" | "all" | "same" | "other" | "next")
                || (matches!(prev, "a" | "an") && matches!(before_prev, "times" | "once" | "twice"))
            {
                continue;
            }
            let (count, s) = if prev == "of" && i > 1 && number(before_prev).is_some() {
                (number(before_prev), i - 2)
            } else if let Some(n) = number(prev) {
                let s = if matches!(prev, "few" | "couple") && i > 1 && before_prev == "a" {
                    i - 2
                } else {
                    i - 1
                };
                (Some(n), s)
            } else if matches!(
                prev,
                "for" | "past" | "last" | "over" | "since" | "several" | "many"
            ) || w.ends_with('s')
            {
                // "for days", "the last week": one unit, or a few when plural.
                (
                    Some(if w.ends_with('s') { 3.0 } else { 1.0 }),
                    if prev.is_empty() { i } else { i - 1 },
                )
            } else {
                (None, i)
            };
            if let Some(n) = count
                && let Some(anchored) = attachment(words, s, i)
            {
                note(anchored, n * per * fortnight, s, i);
            }
            continue;
        }
        let next = lower(i + 1);
        let days = match (w, next) {
            ("yesterday", _) => Some((1.0, i, i)),
            ("overnight", _) | ("today", _) | ("tonight", _) | ("earlier", "today") => Some((0.5, i, i)),
            ("this", "morning" | "afternoon" | "evening") => Some((0.5, i, i + 1)),
            ("last", "night" | "evening") => Some((0.5, i, i + 1)),
            ("ages", _) => Some((90.0, i, i)),
            ("long", "time") => Some((90.0, i, i + 1)),
            _ => None,
        };
        if let Some((n, s, e)) = days {
            let anchored = s > 0 && matches!(lower(s - 1), "since" | "from");
            note(anchored, n, s, e);
        }
    }
    let (_, days, s, e) = best?;
    let finding = if days < 1.0 {
        d.hours
    } else if days < 7.0 {
        d.days
    } else if days < 56.0 {
        d.weeks
    } else {
        d.months
    };
    Some((finding, s, e))
}

/// Whether the time phrase over words `s..=e` (ending in its unit) says how long the complaint has lasted:
/// `Some(true)` when tied to it ("for 3 days", "over the last week", "2 weeks ago"), `Some(false)` when bare
/// ("3 days, getting worse"), `None` when it times something else ("goes after a few minutes rest", "had a
/// cold last week", "comes back within an hour").
fn attachment(words: &[Word], s: usize, e: usize) -> Option<bool> {
    let lower = |i: usize| words.get(i).map_or("", |w| w.lower.as_str());
    let after = lower(e + 1);
    if matches!(after, "ago" | "now" | "straight" | "running" | "of") {
        return Some(true);
    }
    if matches!(after, "rest" | "later" | "after" | "before" | "earlier") {
        return None;
    }
    // The word that governs the phrase, past hedges such as "about" and "the".
    let mut b = s;
    while b > 0
        && matches!(
            lower(b - 1),
            "about"
                | "around"
                | "nearly"
                | "almost"
                | "roughly"
                | "approximately"
                | "just"
                | "the"
                | "a"
                | "least"
        )
    {
        b -= 1;
    }
    // Index of the governing word, if any.
    let g = if matches!(lower(s), "last" | "past" | "over" | "for" | "since") {
        Some(s)
    } else {
        b.checked_sub(1)
    };
    let governor = g.map_or("", lower);
    match governor {
        "for" | "since" | "past" | "over" | "from" | "at" => Some(true),
        "after" | "before" | "within" | "in" | "every" | "per" | "each" | "until" | "till" | "takes"
        | "took" | "only" => None,
        // "last week" tells when something happened; it is the complaint's start only when said so ("since last
        // week", "it started last week").
        "last" => {
            let g = g.unwrap_or(s);
            let before = if g > 0 { lower(g - 1) } else { "" };
            let clause_starts = words[..g]
                .iter()
                .rev()
                .take_while(|w| w.brk == Break::None)
                .any(|w| {
                    matches!(
                        w.lower.as_str(),
                        "started" | "start" | "began" | "begun" | "came" | "begin"
                    )
                });
            (matches!(before, "the" | "for" | "over" | "since" | "in") || clause_starts).then_some(true)
        }
        _ => Some(false),
    }
}

/// An infant's age stated in the text: "my 6 week old", "a 3-month-old baby", "a newborn".
fn stated_age(words: &[Word]) -> Option<u32> {
    for (i, w) in words.iter().enumerate() {
        if matches!(w.lower.as_str(), "newborn" | "neonate") {
            return Some(0);
        }
        let unit = match w.lower.as_str() {
            "day" | "days" => 1.0 / 30.0,
            "week" | "weeks" => 7.0 / 30.0,
            "month" | "months" => 1.0,
            _ => continue,
        };
        if words.get(i + 1).is_some_and(|n| n.lower == "old")
            && i > 0
            && let Some(n) = number(&words[i - 1].lower)
        {
            return Some((n * unit).floor() as u32);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_agree_across_forms() {
        for group in [
            ["cough", "coughs", "coughing", "coughed"],
            ["wheeze", "wheezing", "wheezes", "wheezed"],
            ["ache", "aches", "aching", "ached"],
            ["rash", "rashes", "rash", "rash"],
            ["vomit", "vomiting", "vomits", "vomited"],
        ] {
            let stems: Vec<String> = group.iter().map(|w| stem(w)).collect();
            assert!(stems.iter().all(|s| *s == stems[0]), "{group:?} → {stems:?}");
        }
    }

    #[test]
    fn contractions_and_spelling_normalise() {
        let lowers: Vec<String> = words("I don’t have diarrhea, I'm fine; can't sleep")
            .into_iter()
            .map(|w| w.lower)
            .collect();
        assert_eq!(
            lowers,
            [
                "i",
                "do",
                "not",
                "have",
                "diarrhoea",
                ",",
                "i",
                "am",
                "fine",
                ".",
                "can",
                "not",
                "sleep"
            ]
        );
        assert_eq!(british("paralyzed"), "paralysed");
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance(b"fever", b"fevre"), 1);
        assert_eq!(edit_distance(b"diarrhoea", b"diarhoea"), 1);
        assert_eq!(edit_distance(b"cough", b"cough"), 0);
        assert_eq!(edit_distance(b"abc", b"xyz"), 3);
    }

    #[test]
    fn infant_ages_are_read() {
        assert_eq!(stated_age(&words("my 6 week old baby has a fever")), Some(1));
        assert_eq!(stated_age(&words("our 4-month-old")), Some(4));
        assert_eq!(stated_age(&words("I'm 8 weeks pregnant")), None);
    }
}

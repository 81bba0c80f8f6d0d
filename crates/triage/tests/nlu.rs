//! Reading findings from patients' own words.

mod common;

use confide_triage::nlu::{Understanding, understand};

/// (finding, present) pairs, for compact assertions.
fn read(text: &str) -> Vec<(String, bool)> {
    let kb = common::tiny();
    understand(&kb, text)
        .findings
        .into_iter()
        .map(|f| (f.finding, f.present))
        .collect()
}

fn has(text: &str, finding: &str, present: bool) -> bool {
    read(text).contains(&(finding.to_string(), present))
}

#[test]
fn third_person_negation_and_duration() {
    let kb = common::tiny();
    let u: Understanding = understand(
        &kb,
        "My daughter has had a cough for three days, no fever or runny nose.",
    );
    insta::assert_debug_snapshot!(u);
}

#[test]
fn negation_ends_at_the_clause_and_onset_is_read() {
    let kb = common::tiny();
    let u = understand(
        &kb,
        "I don't have a cough but my chest hurts and I'm really sweaty. It came on all of a sudden about twenty minutes ago.",
    );
    insta::assert_debug_snapshot!(u);
}

#[test]
fn typos_spellings_and_named_conditions() {
    let kb = common::tiny();
    let u = understand(
        &kb,
        "Diarrhea and vomitting since yesterday, high temprature. I think it's a tummy bug",
    );
    insta::assert_debug_snapshot!(u);
}

#[test]
fn negation_forms() {
    assert!(has("no fever", "fever", false));
    assert!(has("I do not have a fever", "fever", false));
    assert!(has("I haven’t got a temperature", "fever", false));
    assert!(has("I've been sick without diarrhoea", "diarrhoea", false));
    assert!(has("I've been sick without diarrhoea", "vomiting", true));
    assert!(has("not coughing or throwing up", "vomiting", false));
    assert!(has("no fever, cough or runny nose", "runny_nose", false));
    assert!(has("no fever, but a bad cough", "cough", true));
    assert!(has("never had a cough and my throat hurts", "sore_throat", true));
}

#[test]
fn doubt_is_neither_yes_nor_no() {
    assert!(read("not sure if I have a fever").is_empty());
    assert!(read("maybe a fever").is_empty());
}

#[test]
fn child_phrases_take_precedence_over_their_parts() {
    let found = read("coughing up blood since this morning");
    assert!(found.contains(&("coughing_blood".into(), true)), "{found:?}");
    assert!(!found.iter().any(|(f, _)| f == "cough"), "{found:?}");
    assert!(found.contains(&("duration_hours".into(), true)), "{found:?}");
}

#[test]
fn words_like_medical_words_are_not_typos() {
    assert!(read("fewer wet nappies").is_empty());
    assert!(has("a feverr", "fever", true));
    assert!(has("coughs", "cough", true));
}

#[test]
fn durations_map_to_groups() {
    for (text, expected) in [
        ("for three days", "duration_days"),
        ("since yesterday", "duration_days"),
        ("2 weeks", "duration_weeks"),
        ("for a week", "duration_weeks"),
        ("a few months", "duration_months"),
        ("for years", "duration_months"),
        ("overnight", "duration_hours"),
        ("about twenty minutes ago", "duration_hours"),
        ("since last night", "duration_hours"),
        ("for a couple of days", "duration_days"),
    ] {
        assert_eq!(read(text), [(expected.to_string(), true)], "{text}");
    }
    // Frequencies, ages and pregnancies are not how long the problem has lasted.
    assert!(read("a few times a month").is_empty());
    assert_eq!(read("I'm 8 weeks pregnant"), [("pregnant".to_string(), true)]);
    assert!(read("my 6 week old").is_empty());
}

#[test]
fn spans_point_into_the_text() {
    let kb = common::tiny();
    let text = "Since Monday: chest pain, no cough.";
    for f in understand(&kb, text).findings {
        assert_eq!(&text[f.start..f.end], f.text);
    }
}

/// (finding, present) pairs read with the full knowledge base.
fn read_full(text: &str) -> Vec<(String, bool)> {
    static KB: std::sync::OnceLock<confide_triage::Kb> = std::sync::OnceLock::new();
    let kb = KB.get_or_init(|| confide_triage::Kb::embedded().expect("the knowledge base is valid"));
    understand(kb, text)
        .findings
        .into_iter()
        .map(|f| (f.finding, f.present))
        .collect()
}

fn says(text: &str, finding: &str) -> bool {
    read_full(text).iter().any(|(f, _)| f == finding)
}

#[test]
fn a_gapped_match_does_not_swallow_a_word_it_skipped() {
    // A gap over a word that makes another phrase drops the gapped match only when nothing of content is left.
    assert!(says("a crushing chest sharp pain", "chest_pain"));
    assert!(
        says("I feel sweaty and sick", "sweating"),
        "{:?}",
        read_full("I feel sweaty and sick")
    );
    assert!(
        says("itchy watery eyes", "watery_eye"),
        "{:?}",
        read_full("itchy watery eyes")
    );
}

#[test]
fn meaningful_small_words_are_not_dropped_from_phrases() {
    for text in [
        "I go to keep fit classes",
        "I need a fit note for work",
        "I can not find my keys",
    ] {
        let found = read_full(text);
        assert!(
            !found
                .iter()
                .any(|(f, _)| f == "seizure" || f == "cannot_get_comfortable"),
            "{text}: {found:?}"
        );
    }
    assert!(says("he had a fit this morning", "seizure"));
    let found = read_full("she has had coughing fits");
    assert!(!found.iter().any(|(f, _)| f == "seizure"), "{found:?}");
    assert!(says(
        "the pain is so bad I can't keep still",
        "cannot_get_comfortable"
    ));
    assert!(says("I can't get comfortable", "cannot_get_comfortable"));
}

#[test]
fn a_condition_name_consumes_its_words() {
    for text in [
        "I had glandular fever last year and now a sore throat",
        "my sister had scarlet fever",
    ] {
        let found = read_full(text);
        assert!(!found.iter().any(|(f, _)| f == "fever"), "{text}: {found:?}");
    }
    assert!(says("I have a fever", "fever"));
}

#[test]
fn only_durations_of_the_complaint_count() {
    for (text, expected) in [
        (
            "chest pain when I walk uphill, it goes after a few minutes rest",
            None,
        ),
        ("I had a cold last week and now my ear hurts", None),
        ("it comes back within an hour", None),
        ("the pain lasts a few hours", Some("duration_hours")),
        ("it started last week", Some("duration_weeks")),
        (
            "a cough for 3 days, I had a cold a few weeks before",
            Some("duration_days"),
        ),
        ("over the last 2 weeks", Some("duration_weeks")),
        (
            "pain for 2 hours that goes after a few minutes rest",
            Some("duration_hours"),
        ),
    ] {
        let durations: Vec<String> = read(text)
            .into_iter()
            .filter(|(f, _)| f.starts_with("duration_"))
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            durations,
            expected.into_iter().map(String::from).collect::<Vec<_>>(),
            "{text}"
        );
    }
}

#[test]
fn misfiring_synonyms_stay_quiet() {
    for (text, finding) in [
        ("pain on one side of my throat", "loin_pain"),
        ("my chest hurts when I cough", "pain_worse_moving"),
        ("my tooth is throbbing", "throbbing_headache"),
        ("a throbbing sore bottom", "throbbing_headache"),
        ("spots on my face", "vaginal_bleeding"),
        ("some spotting between periods", "rash"),
    ] {
        let found = read_full(text);
        assert!(!found.iter().any(|(f, _)| f == finding), "{text}: {found:?}");
    }
    assert!(says("a throbbing headache", "throbbing_headache"));
    assert!(says("spotting between periods", "vaginal_bleeding"));
}

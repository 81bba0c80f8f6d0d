//! The conversation engine on a small knowledge base.

mod common;

use confide_triage::engine::Known;
use confide_triage::{
    Answer, Disposition, Engine, EngineError, Kb, KbError, Patient, Question, Region, Session, Sex, Step,
};
use proptest::prelude::*;

fn finding(id: &str) -> Question {
    Question::Finding { finding: id.into() }
}

/// Answers every question with `answer` until the end; returns the questions asked.
fn run(engine: &Engine<'_>, session: &mut Session, answer: impl Fn(&Question) -> Answer) -> Vec<Question> {
    let mut asked = Vec::new();
    while let Step::Ask(q) = engine.next(session) {
        asked.push(q.question.clone());
        let a = answer(&q.question);
        engine.answer(session, q.question, a).expect("a valid answer");
        assert!(asked.len() <= 25, "the engine asks at most 25 questions");
    }
    asked
}

#[test]
fn red_flag_in_the_complaint_ends_at_once() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let session = engine.start(
        Patient::new(60, Sex::Male),
        "Crushing chest pain and I'm sweating",
    );
    let Step::Done(outcome) = engine.next(&session) else {
        panic!("a red flag with end = true ends it")
    };
    assert_eq!(outcome.disposition, Disposition::Emergency);
    assert_eq!(outcome.red_flags[0].id, "cardiac_chest_pain");
    assert!(outcome.advice.contains("999"), "{}", outcome.advice);
    assert_eq!(outcome.top[0].id, "heart_attack");
    assert!(outcome.top[0].because.contains(&"chest pain".to_string()));
    // No answer is taken after the end.
    let mut session = session;
    assert_eq!(
        engine.answer(&mut session, finding("fever"), Answer::No),
        Err(EngineError::Ended)
    );
}

#[test]
fn red_flags_in_later_text_take_effect_and_undo_takes_them_back() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let mut session = engine.start(Patient::new(50, Sex::Female), "I feel unwell");
    assert!(matches!(engine.next(&session), Step::Ask(_)));
    engine.tell(&mut session, "Now my chest hurts and I'm short of breath");
    let Step::Done(outcome) = engine.next(&session) else {
        panic!("the red flag ends it")
    };
    assert_eq!(outcome.disposition, Disposition::Emergency);
    assert!(session.undo());
    assert!(matches!(engine.next(&session), Step::Ask(_)));
    assert!(!session.undo(), "the first words stay");
}

#[test]
fn text_about_someone_else_or_needing_a_parent_is_not_taken_for_the_patient() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let session = engine.start(
        Patient::new(40, Sex::Male),
        "my wife is pregnant and I have tummy pain",
    );
    let state = engine.state(&session);
    assert_eq!(
        state.known[kb.finding("pregnant").expect("exists")],
        Known::Unknown
    );
    assert!(state.red_flags.is_empty());
}

#[test]
fn red_flags_respect_age_and_the_region_sets_the_number() {
    let kb = common::tiny();
    let engine = Engine::new(&kb).with_region(Region::get("us").expect("a region"));
    let session = engine.start(Patient::new(20, Sex::Male), "chest pain and sweating");
    assert!(
        engine.state(&session).red_flags.is_empty(),
        "the rule applies from 30"
    );
    let mut session = session;
    run(&engine, &mut session, |_| Answer::DontKnow);
    let state = engine.state(&session);
    let outcome = engine.outcome(&session, &state);
    if outcome.disposition == Disposition::Emergency {
        assert!(outcome.advice.contains("911"), "{}", outcome.advice);
    }
}

#[test]
fn red_flag_from_an_answer_raises_the_disposition() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let mut session = engine.start(Patient::new(40, Sex::Male), "I have a cough");
    engine
        .answer(&mut session, finding("coughing_blood"), Answer::Yes)
        .expect("valid");
    let state = engine.state(&session);
    assert_eq!(state.red_flags.len(), 1);
    let outcome = engine.outcome(&session, &state);
    assert!(outcome.disposition >= Disposition::Urgent);
}

#[test]
fn children_follow_a_yes_to_their_parent_and_sex_limits_questions() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let mut session = engine.start(Patient::new(30, Sex::Male), "tummy ache");
    let asked = run(&engine, &mut session, |q| {
        if *q == finding("cough") {
            Answer::No
        } else {
            Answer::DontKnow
        }
    });
    assert!(!asked.contains(&finding("coughing_blood")), "{asked:?}");
    assert!(!asked.contains(&finding("pregnant")), "{asked:?}");

    let mut session = engine.start(Patient::new(30, Sex::Female), "tummy ache");
    let asked = run(&engine, &mut session, |_| Answer::DontKnow);
    assert!(asked.contains(&finding("pregnant")), "{asked:?}");
}

#[test]
fn the_model_finds_the_likely_condition() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let mut session = engine.start(
        Patient::new(25, Sex::Female),
        "runny nose and a sore throat since yesterday",
    );
    run(&engine, &mut session, |q| match q {
        Question::Finding { finding } if finding == "cough" => Answer::Yes,
        Question::Finding { .. } => Answer::No,
        Question::Group { group } if group == "onset" => Answer::Choice {
            option: "onset_gradual".into(),
        },
        Question::Group { .. } => Answer::DontKnow,
    });
    let state = engine.state(&session);
    let outcome = engine.outcome(&session, &state);
    assert_eq!(outcome.top[0].id, "common_cold");
    assert_eq!(outcome.disposition, Disposition::SelfCare);
    assert!(outcome.present.contains(&"runny nose".to_string()));
    assert_eq!(outcome.transcript.len(), outcome.questions);
    for e in &outcome.transcript {
        let expected: &[&str] = if e.question == "Do you have a cough?" {
            &["yes"]
        } else {
            &["no", "gradual start", "don't know"]
        };
        assert!(expected.contains(&e.answer.as_str()), "{e:?}");
    }
}

#[test]
fn a_long_cough_is_routine() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let mut session = engine.start(
        Patient::new(50, Sex::Male),
        "I've had a cough for five weeks, no fever",
    );
    run(&engine, &mut session, |_| Answer::No);
    let state = engine.state(&session);
    let outcome = engine.outcome(&session, &state);
    assert_eq!(outcome.top[0].id, "persistent_cough");
    assert_eq!(outcome.disposition, Disposition::Routine);
}

#[test]
fn answers_are_checked() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let mut session = engine.start(Patient::new(50, Sex::Male), "cough");
    assert_eq!(
        engine.answer(&mut session, finding("nope"), Answer::Yes),
        Err(EngineError::UnknownFinding("nope".into()))
    );
    let duration = Question::Group {
        group: "duration".into(),
    };
    assert_eq!(
        engine.answer(&mut session, duration.clone(), Answer::Yes),
        Err(EngineError::WrongAnswerKind)
    );
    assert!(matches!(
        engine.answer(
            &mut session,
            duration.clone(),
            Answer::Choice {
                option: "fever".into()
            }
        ),
        Err(EngineError::NotAnOption { .. })
    ));
    engine
        .answer(
            &mut session,
            duration,
            Answer::Choice {
                option: "duration_weeks".into(),
            },
        )
        .expect("an option of the group");
    let state = engine.state(&session);
    assert_eq!(
        state.known[kb.finding("duration_weeks").expect("exists")],
        Known::Present
    );
    assert_eq!(
        state.known[kb.finding("duration_days").expect("exists")],
        Known::Absent
    );
}

#[test]
fn sessions_serialise_and_replay_the_same() {
    let kb = common::tiny();
    let engine = Engine::new(&kb);
    let mut session = engine.start(Patient::new(3, Sex::Female), "fever and coughing for 2 days");
    run(&engine, &mut session, |_| Answer::Yes);
    let json = serde_json::to_string(&session).expect("serialises");
    let back: Session = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back, session);
    assert_eq!(engine.next(&back), engine.next(&session));
    assert_eq!(engine.state(&back).posterior, engine.state(&session).posterior);
}

#[test]
fn invalid_knowledge_bases_are_refused_with_file_and_id() {
    let broken = r#"
[[finding]]
id = "fever"
phrase = "fever"
question = "Do you have a fever"
synonyms = ["High temperature"]
leak = 1.5
parent = "nothing"
source = "test"

[[condition]]
id = "flu"
name = "Flu"
triage = "self-care"
explanation = "A virus."
prior = 0.0
prior_source = "test"
findings_source = "test"
sex = { female = 0.0, male = 0.0 }

[condition.findings]
fever = 0.8
cough = 0.5

[[red_flag]]
id = "fever"
description = "x"
all = ["rash"]
disposition = "emergency"
message = "x"
source = "test"
"#;
    let Err(KbError::Invalid(problems)) = Kb::from_sources(&[("broken.toml", broken)]) else {
        panic!("the knowledge base is broken")
    };
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for expected in [
        "broken.toml: fever: the question \"Do you have a fever\" must end with '?'",
        "broken.toml: fever: synonym \"High temperature\" must be lowercase",
        "broken.toml: fever: `leak` must lie strictly between 0 and 1, not 1.5",
        "broken.toml: fever: the parent \"nothing\" is not a finding",
        "broken.toml: flu: `prior` must be above 0 and below 1, not 0",
        "broken.toml: flu: lists \"cough\", which is not a finding",
        "broken.toml: flu: unreachable: no listed finding can be asked of anyone the condition can affect",
        "broken.toml: fever: the id is already used (in broken.toml)",
        "broken.toml: fever: names \"rash\", which is not a finding",
    ] {
        assert!(
            text.iter().any(|t| t == expected),
            "missing {expected:?} in {text:#?}"
        );
    }
    assert!(matches!(
        Kb::from_sources(&[("x.toml", "[[finding]]\nid = 3")]),
        Err(KbError::Parse { .. })
    ));
    assert!(
        !common::tiny().size_problems().is_empty(),
        "a test knowledge base is below the shipped size"
    );
}

/// One answer to one of the knowledge base's questions, chosen by index.
fn answer_for(kb: &Kb, pick: usize, kind: u8) -> (Question, Answer) {
    let total = kb.findings.len() + kb.groups.len();
    let i = pick % total;
    if i < kb.findings.len() && kb.findings[i].group.is_none() {
        let a = match kind % 3 {
            0 => Answer::Yes,
            1 => Answer::No,
            _ => Answer::DontKnow,
        };
        (finding(&kb.findings[i].id), a)
    } else {
        let g = if i < kb.findings.len() {
            kb.findings[i].group.expect("grouped")
        } else {
            i - kb.findings.len()
        };
        let group = &kb.groups[g];
        let a = match kind as usize % (group.options.len() + 1) {
            0 => Answer::DontKnow,
            k => Answer::Choice {
                option: kb.findings[group.options[k - 1]].id.clone(),
            },
        };
        (
            Question::Group {
                group: group.id.clone(),
            },
            a,
        )
    }
}

proptest! {
    #[test]
    fn posterior_sums_to_one_and_undo_restores(
        age in 0u32..100,
        female in any::<bool>(),
        answers in proptest::collection::vec((0usize..64, any::<u8>()), 0..20),
    ) {
        let kb = common::tiny();
        let engine = Engine::new(&kb);
        let sex = if female { Sex::Female } else { Sex::Male };
        let mut session = engine.start(Patient::new(age, sex), "I feel unwell");
        for (pick, kind) in answers {
            let before = engine.state(&session);
            let total: f64 = before.posterior.iter().sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "posterior sums to {}", total);
            prop_assert!(before.posterior.iter().all(|p| p.is_finite() && *p >= 0.0));
            let (q, a) = answer_for(&kb, pick, kind);
            if engine.answer(&mut session, q, a).is_err() {
                break;
            }
            let saved = session.clone();
            prop_assert!(session.undo());
            let again = engine.state(&session);
            prop_assert_eq!(&again.posterior, &before.posterior);
            prop_assert_eq!(&again.known, &before.known);
            session = saved;
        }
        let total: f64 = engine.state(&session).posterior.iter().sum();
        prop_assert!((total - 1.0).abs() < 1e-9);
    }
}

//! `confide triage`: check the symptom checker's knowledge base and score the engine on vignettes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use confide_triage::eval::{Report, evaluate, parse_vignettes, wilson};
use confide_triage::{Engine, Kb};

#[derive(Subcommand, Debug)]
pub enum TriageCommand {
    /// Run vignettes through the engine as simulated conversations and report accuracy
    Eval {
        /// A JSON array of vignettes (see shared/triage/README.md)
        file: PathBuf,
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Validate the embedded knowledge base; exits non-zero listing every problem
    KbCheck,
}

pub fn run(command: TriageCommand) -> Result<ExitCode> {
    match command {
        TriageCommand::KbCheck => Ok(kb_check()),
        TriageCommand::Eval { file, json } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let vignettes = parse_vignettes(&text).with_context(|| format!("parsing {}", file.display()))?;
            let kb = Kb::embedded()?;
            let report = evaluate(&Engine::new(&kb), &vignettes);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn kb_check() -> ExitCode {
    let kb = match Kb::embedded() {
        Ok(kb) => kb,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &kb.warnings {
        eprintln!("warning: {w}");
    }
    let size = kb.size_problems();
    for p in &size {
        eprintln!("{p}");
    }
    println!(
        "{} conditions, {} findings, {} question groups, {} red flags in {} files",
        kb.conditions.len(),
        kb.findings.len(),
        kb.groups.len(),
        kb.red_flags.len(),
        confide_triage::kb::embedded_files().len()
    );
    if size.is_empty() {
        println!("the knowledge base is valid");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_report(report: &Report) {
    for c in &report.cases {
        let verdict = match c.triage.cmp(&c.expected_triage) {
            std::cmp::Ordering::Equal => "ok",
            std::cmp::Ordering::Less => "UNDER",
            std::cmp::Ordering::Greater => "over",
        };
        let rank = c
            .rank
            .map_or("not in top 3".to_string(), |r| format!("#{}", r + 1));
        println!(
            "{:10} {:5} triage {:9} (expected {:9})  {:12} {} → {}  [{} questions]",
            c.id,
            verdict,
            c.triage.as_str(),
            c.expected_triage.as_str(),
            rank,
            c.expected_diagnosis,
            c.top.join(", "),
            c.questions
        );
    }
    let s = &report.summary;
    let n = s.cases;
    let rate = |name: &str, r: f64| {
        let (lo, hi) = wilson(r, n);
        println!(
            "{name:18} {:5.1}%  (95% CI {:.1}–{:.1}%)",
            100.0 * r,
            100.0 * lo,
            100.0 * hi
        );
    };
    println!("\n{n} cases");
    rate("triage exact", s.triage_accuracy);
    rate("under-triage", s.under_triage_rate);
    rate("over-triage", s.over_triage_rate);
    rate("diagnosis top-1", s.top1);
    rate("diagnosis top-3", s.top3);
    println!("{:18} {}", "emergencies under", s.emergency_under_triaged);
    println!("{:18} {:.1}", "mean questions", s.mean_questions);
}

//! Checking the audit log: every entry is hashed with the one before it, so walking the chain names the
//! first entry that was changed, removed or reordered.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use confide_domain::audit::ChainVerifier;

use crate::config::{self, ConfigArgs, Env};

/// Entries read per query: bounded memory for a log of any length.
const PAGE: i64 = 10_000;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check that no entry of the audit log was changed, removed or reordered; exits 1 if one was
    Verify(ConfigArgs),
}

pub async fn run(command: AuditCommand, env: Env<'_>) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(&args, env).await,
    }
}

async fn verify(args: &ConfigArgs, env: Env<'_>) -> Result<ExitCode> {
    let config = config::resolve(args, None, env)?;
    // Opening creates a missing SQLite file, whose empty log would pass: a wrong --data-dir is an error.
    let embedded = config.data_dir.join("confide.db");
    if config.database_url.is_none() && !embedded.exists() {
        bail!(
            "no database at {}: check --data-dir or --config",
            embedded.display()
        );
    }
    // On PostgreSQL the app role may read only some patients' entries; the owner reads them all.
    let store = config::open_store(&config, confide_store::Role::Owner).await?;
    let result = walk(&store).await;
    store.close().await;
    match result? {
        Ok(count) => {
            println!("audit log intact: {count} entries");
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            eprintln!("audit log broken: {broken}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The chain up to its recorded head: the number of entries, or the first break.
async fn walk(store: &confide_store::Store) -> Result<Result<u64, confide_domain::audit::ChainBreak>> {
    // The head is read first: entries a running server appends meanwhile lie beyond it and are left for
    // the next check, rather than making the head look cut short.
    let head = store.audit_head().await?;
    let len = u64::try_from(store.audit_len().await?).unwrap_or_default();
    let bar = crate::progress_bar(len, "verifying audit log");
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    'pages: loop {
        let page = store.audit_page(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            if entry.seq > head.0 {
                break 'pages;
            }
            if let Err(broken) = verifier.push(entry) {
                bar.abandon();
                return Ok(Err(broken));
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(verifier.finish(Some(head)))
}

//! The `confide` command: serve Confide, try it with a demo world, and administer it from the shell.

mod admin;
mod audit;
mod config;
mod demo;
mod passphrase;
mod serve;
mod triage;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

use confide_store::Backend;
use config::{ConfigArgs, Env};

/// A request allocates many small, short-lived values; mimalloc handles them with much less
/// bookkeeping than glibc's allocator (measured by the bench's record-read scenario).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "confide",
    version,
    about = "Confide: self-hosted telehealth for GP practices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve Confide with settings from a TOML file and CONFIDE_* environment variables
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on, overriding the file and CONFIDE_LISTEN
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Serve Confide with a demo world on an embedded database, seeded at the first start
    Demo(demo::DemoArgs),
    /// Apply database migrations and exit
    Migrate(ConfigArgs),
    /// Create practices and accounts, reset passwords, disable accounts
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Check the tamper-evident audit log
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Check the symptom checker's knowledge base and score it on vignettes
    #[command(subcommand)]
    Triage(triage::TriageCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers report what they do; one-off commands only what goes wrong, so their output stays readable.
    let default_level = match cli.command {
        Command::Serve { .. } | Command::Demo(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = confide_media::sfu::driver::disable_transparent_huge_pages() {
        tracing::warn!(error = %e, "could not turn off transparent huge pages; calls may stall now and then");
    }
    match run(cli.command, &config::process_env).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, env: Env<'_>) -> Result<ExitCode> {
    match command {
        Command::Serve { config, listen } => {
            let config = config::resolve(&config, listen, env)?;
            let (confide, listener) = serve::start(config).await?;
            serve::run(confide, listener).await?;
        }
        Command::Demo(args) => demo::run(args, env).await?,
        Command::Migrate(args) => {
            let config = config::resolve(&args, None, env)?;
            let store = config::open_store(&config, confide_store::Role::App).await?;
            let backend = match store.backend() {
                Backend::Sqlite => "SQLite",
                Backend::Postgres => "PostgreSQL",
            };
            store.close().await;
            println!("the {backend} database is up to date");
        }
        Command::Admin(command) => admin::run(command, env).await?,
        Command::Audit(command) => return audit::run(command, env).await,
        Command::Triage(command) => return triage::run(command),
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on standard error; hidden when that is not a terminal.
fn progress_bar(len: u64, message: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len}")
        .expect("the template is valid")
        .progress_chars("=> ");
    ProgressBar::new(len).with_style(style).with_message(message)
}

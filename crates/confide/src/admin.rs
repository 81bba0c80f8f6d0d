//! Administration from the shell, for the operator: the first practices and accounts, password resets and
//! disabling accounts. Every change is written to the audit log as done by the command line.

use std::io::BufRead;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Subcommand;
use confide_domain::audit::{AuditEvent, Outcome};
use confide_domain::identity::{DateOfBirth, Email, PersonName, Role};
use confide_domain::password::NewPassword;
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::{PracticeId, UserId};
use confide_server::auth::hash_password;
use confide_server::{Clock, SystemClock};
use confide_store::{Account, NewPractice, NewUser, Store};
use uuid::Uuid;

use crate::config::{self, ConfigArgs, Env};
use crate::passphrase;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create a GP practice
    CreatePractice {
        /// The name patients see
        #[arg(long)]
        name: String,
        /// The address, on one line
        #[arg(long)]
        address: String,
        /// An IANA time zone such as Europe/London
        #[arg(long, value_name = "TZ")]
        time_zone: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Create an account; staff set up an authenticator app at their first login
    CreateUser {
        /// The email address they log in with
        #[arg(long)]
        email: String,
        /// Their name as others see it
        #[arg(long)]
        name: String,
        /// patient, clinician, practice_admin or platform_admin
        #[arg(long)]
        role: String,
        /// The practice a clinician or practice admin works at: its id or exact name
        #[arg(long, value_name = "ID_OR_NAME")]
        practice: Option<String>,
        /// A patient's date of birth
        #[arg(long, value_name = "YYYY-MM-DD")]
        date_of_birth: Option<String>,
        /// Read the password from the first line of standard input instead of generating one
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Set a new password for an account and end all its sessions
    ResetPassword {
        /// The account's email address
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input instead of generating one
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Disable an account: it can no longer log in, and its sessions end
    DisableUser {
        /// The account's email address
        #[arg(long)]
        email: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub async fn run(command: AdminCommand, env: Env<'_>) -> Result<()> {
    match command {
        AdminCommand::CreatePractice {
            name,
            address,
            time_zone,
            config,
        } => create_practice(&name, &address, &time_zone, &config, env).await,
        AdminCommand::CreateUser {
            email,
            name,
            role,
            practice,
            date_of_birth,
            password_stdin,
            config,
        } => {
            let user = UserInput {
                email,
                name,
                role,
                practice,
                date_of_birth,
            };
            create_user(user, password_stdin, &config, env).await
        }
        AdminCommand::ResetPassword {
            email,
            password_stdin,
            config,
        } => reset_password(&email, password_stdin, &config, env).await,
        AdminCommand::DisableUser { email, config } => disable_user(&email, &config, env).await,
    }
}

/// An audit entry for a change made from the command line, where no user is logged in.
pub fn cli_event(action: &str, resource: String, subject_patient: Option<UserId>) -> AuditEvent {
    AuditEvent {
        at_ms: SystemClock.now_ms(),
        actor: None,
        actor_role: None,
        action: action.to_owned(),
        resource,
        subject_patient,
        outcome: Outcome::Allowed,
        reason: "cli".to_owned(),
        request_id: "cli".to_owned(),
    }
}

/// Runs `change` on the configured store and closes it, so that its audit entry is durable on return.
async fn with_store<T>(
    config: &ConfigArgs,
    env: Env<'_>,
    change: impl AsyncFnOnce(&Store) -> Result<T>,
) -> Result<T> {
    let config = config::resolve(config, None, env)?;
    let store = config::open_store(&config, confide_store::Role::App).await?;
    let result = change(&store).await;
    store.close().await;
    result
}

async fn create_practice(
    name: &str,
    address: &str,
    time_zone: &str,
    config: &ConfigArgs,
    env: Env<'_>,
) -> Result<()> {
    let name = PracticeName::parse(name)?;
    let address = Address::parse(address)?;
    let time_zone = TimeZoneName::parse(time_zone)?;
    let practice = with_store(config, env, async |store| {
        let practice = store
            .create_practice(NewPractice {
                id: PracticeId::from_uuid(Uuid::now_v7()),
                name: &name,
                address: &address,
                time_zone: &time_zone,
                at_ms: SystemClock.now_ms(),
            })
            .await?;
        let event = cli_event("admin.create_practice", format!("practice:{}", practice.id), None);
        store.audit().append(event).await?;
        Ok(practice)
    })
    .await?;
    println!("created practice {} (id {})", practice.name, practice.id);
    Ok(())
}

/// `create-user`'s arguments before they are checked.
struct UserInput {
    email: String,
    name: String,
    role: String,
    practice: Option<String>,
    date_of_birth: Option<String>,
}

/// `create-user`'s arguments, checked.
#[derive(Debug)]
struct ValidUser {
    email: Email,
    name: PersonName,
    role: Role,
    practice: Option<String>,
    date_of_birth: Option<DateOfBirth>,
}

impl UserInput {
    fn validate(self, today: jiff::civil::Date) -> Result<ValidUser> {
        let email = Email::parse(&self.email)?;
        let name = PersonName::parse(&self.name)?;
        let role: Role = self.role.trim().parse()?;
        match (role.belongs_to_practice(), &self.practice) {
            (true, None) => bail!("a {role} works at a practice: give --practice"),
            (false, Some(_)) => bail!("--practice is only for a clinician or practice_admin, not a {role}"),
            _ => {}
        }
        let date_of_birth = match (role, &self.date_of_birth) {
            (Role::Patient, Some(dob)) => Some(DateOfBirth::parse(dob, today)?),
            (Role::Patient, None) => bail!("a patient needs --date-of-birth YYYY-MM-DD"),
            (_, Some(_)) => bail!("--date-of-birth is only for a patient, not a {role}"),
            (_, None) => None,
        };
        Ok(ValidUser {
            email,
            name,
            role,
            practice: self.practice,
            date_of_birth,
        })
    }
}

/// The password from standard input, or a generated one that is to be shown (`true`).
fn new_password(from_stdin: bool, related: &[&str]) -> Result<(NewPassword, bool)> {
    if !from_stdin {
        return Ok((passphrase::generate(related)?, true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let raw = line.trim_end_matches(['\r', '\n']);
    if raw.is_empty() {
        bail!("no password on standard input");
    }
    Ok((NewPassword::parse(raw, related)?, false))
}

fn today() -> jiff::civil::Date {
    SystemClock.now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// A patient's account is their data: changes to it are shown to them as accesses.
fn subject(account: &Account) -> Option<UserId> {
    (account.role == Role::Patient).then_some(account.id)
}

async fn create_user(
    input: UserInput,
    password_stdin: bool,
    config: &ConfigArgs,
    env: Env<'_>,
) -> Result<()> {
    let user = input.validate(today())?;
    let (password, generated) = new_password(password_stdin, &[user.name.as_str(), user.email.as_str()])?;
    let shown = generated.then(|| password.expose().to_owned());
    let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await?;
    let (account, practice_name) = with_store(config, env, async |store| {
        let practice = match &user.practice {
            Some(id_or_name) => Some(
                store
                    .find_practice(id_or_name)
                    .await?
                    .ok_or_else(|| anyhow!("no practice has the id or name {id_or_name:?}"))?,
            ),
            None => None,
        };
        let account = store
            .create_user(NewUser {
                id: UserId::from_uuid(Uuid::now_v7()),
                email: &user.email,
                name: &user.name,
                role: user.role,
                practice: practice.as_ref().map(|p| p.id),
                password_hash: Some(hash),
                date_of_birth: user.date_of_birth.map(|d| d.to_string()),
                at_ms: SystemClock.now_ms(),
            })
            .await?;
        let event = cli_event(
            "admin.create_user",
            format!("user:{}", account.id),
            subject(&account),
        );
        store.audit().append(event).await?;
        Ok((account, practice.map(|p| p.name)))
    })
    .await?;
    let at = practice_name.map(|p| format!(" at {p}")).unwrap_or_default();
    println!(
        "created {} {} <{}> (id {}){at}",
        account.role, account.name, account.email, account.id
    );
    if let Some(password) = shown {
        println!("password: {password}");
    }
    if account.role.requires_mfa() {
        println!("They will set up an authenticator app at their first login.");
    }
    Ok(())
}

async fn account_by_email(store: &Store, email: &Email) -> Result<Account> {
    store
        .account_by_email(email)
        .await?
        .ok_or_else(|| anyhow!("no account has the email {email}"))
}

async fn reset_password(email: &str, password_stdin: bool, config: &ConfigArgs, env: Env<'_>) -> Result<()> {
    let email = Email::parse(email)?;
    let (account, shown, sessions) = with_store(config, env, async |store| {
        let account = account_by_email(store, &email).await?;
        let (password, generated) = new_password(password_stdin, &[&account.name, &account.email])?;
        let shown = generated.then(|| password.expose().to_owned());
        let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await?;
        store.set_password_hash(account.id, &hash).await?;
        let sessions = store.delete_user_sessions(account.id).await?;
        let event = cli_event(
            "admin.reset_password",
            format!("user:{}", account.id),
            subject(&account),
        );
        store.audit().append(event).await?;
        Ok((account, shown, sessions))
    })
    .await?;
    println!(
        "reset the password of {} <{}>; {sessions} session(s) ended",
        account.name, account.email
    );
    if let Some(password) = shown {
        println!("password: {password}");
    }
    Ok(())
}

async fn disable_user(email: &str, config: &ConfigArgs, env: Env<'_>) -> Result<()> {
    let email = Email::parse(email)?;
    let (account, newly) = with_store(config, env, async |store| {
        let account = account_by_email(store, &email).await?;
        let newly = store.disable_user(account.id, SystemClock.now_ms()).await?;
        if newly {
            let event = cli_event(
                "admin.disable_user",
                format!("user:{}", account.id),
                subject(&account),
            );
            store.audit().append(event).await?;
        }
        Ok((account, newly))
    })
    .await?;
    if newly {
        println!(
            "disabled {} <{}>; their sessions ended",
            account.name, account.email
        );
    } else {
        println!("{} <{}> was already disabled", account.name, account.email);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(role: &str, practice: Option<&str>, dob: Option<&str>) -> UserInput {
        UserInput {
            email: "Ann.Lee@Example.org".into(),
            name: "Ann Lee".into(),
            role: role.into(),
            practice: practice.map(str::to_owned),
            date_of_birth: dob.map(str::to_owned),
        }
    }

    fn error(input: UserInput) -> String {
        input
            .validate(jiff::civil::date(2026, 1, 1))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn each_role_gets_what_it_needs_and_nothing_else() {
        let today = jiff::civil::date(2026, 1, 1);
        let patient = input("patient", None, Some("1980-02-29"))
            .validate(today)
            .unwrap();
        assert_eq!(patient.email.as_str(), "ann.lee@example.org");
        assert_eq!(patient.date_of_birth.unwrap().to_string(), "1980-02-29");
        let clinician = input("clinician", Some("Riverside"), None)
            .validate(today)
            .unwrap();
        assert_eq!(clinician.practice.as_deref(), Some("Riverside"));
        assert!(input("platform_admin", None, None).validate(today).is_ok());

        assert!(error(input("doctor", None, None)).contains("unknown role"));
        assert!(error(input("clinician", None, None)).contains("--practice"));
        assert!(error(input("practice_admin", None, None)).contains("--practice"));
        assert!(error(input("platform_admin", Some("x"), None)).contains("--practice"));
        assert!(error(input("patient", None, None)).contains("--date-of-birth"));
        assert!(error(input("patient", Some("x"), Some("1980-01-01"))).contains("--practice"));
        assert!(error(input("clinician", Some("x"), Some("1980-01-01"))).contains("--date-of-birth"));
        assert!(error(input("patient", None, Some("2027-01-01"))).contains("future"));
        let bad_email = UserInput {
            email: "ann".into(),
            ..input("platform_admin", None, None)
        };
        assert!(error(bad_email).contains("email"));
    }
}

//! Accounts, sessions, recovery codes and one-time tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::{PracticeId, UserId};

use crate::read::{OwnedRow, Param};
use crate::{Conflict, Result, Scope, Store, is_unique_violation};

/// Someone who can log in, with what login needs.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub practice: Option<PracticeId>,
    pub password_hash: Option<String>,
    pub totp_secret: Option<String>,
    pub totp_enabled: bool,
    pub disabled: bool,
}

pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a Email,
    pub name: &'a PersonName,
    pub role: Role,
    pub practice: Option<PracticeId>,
    pub password_hash: Option<String>,
    /// Patients only: YYYY-MM-DD.
    pub date_of_birth: Option<String>,
    pub at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub account: Account,
    pub mfa_verified: bool,
    pub expires_at_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPurpose {
    PasswordReset,
    StaffInvite,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::PasswordReset => "password_reset",
            TokenPurpose::StaffInvite => "staff_invite",
        }
    }
}

/// A single-use token, stored by its hash. A reset names a user; an invite names who is to be created.
#[derive(Clone, Debug)]
pub struct OneTimeToken {
    pub token_hash: String,
    pub purpose: TokenPurpose,
    pub user: Option<UserId>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub role: Option<Role>,
    pub practice: Option<PracticeId>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

macro_rules! account_columns {
    () => {
        "u.id, u.email, u.name, u.role, u.practice_id, u.password_hash, u.totp_secret, u.totp_enabled, u.disabled_at"
    };
}

fn account(row: &OwnedRow) -> Result<Account> {
    Ok(Account {
        id: row.parse("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        role: row.parse("role")?,
        practice: row.parse_opt("practice_id")?,
        password_hash: row.try_get("password_hash")?,
        totp_secret: row.try_get("totp_secret")?,
        totp_enabled: row.try_get::<i64>("totp_enabled")? != 0,
        disabled: row.try_get::<Option<i64>>("disabled_at")?.is_some(),
    })
}

/// Sessions read recently. Every request reads its session, so a short-lived copy in memory saves a
/// database round trip per request. Changes made through this store drop the copy at once; a change made
/// by another process (the `confide admin` commands) takes effect within [`SESSION_CACHE_TTL`].
#[derive(Default)]
pub(crate) struct SessionCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_token: HashMap<String, (SessionRecord, Instant)>,
    /// Bumped by every change, so that a read which raced a change cannot cache what it read.
    generation: u64,
}

const SESSION_CACHE_TTL: Duration = Duration::from_secs(2);
/// Past this many entries the cache starts over, which bounds its memory.
const SESSION_CACHE_MAX: usize = 10_000;

impl SessionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh cached session, or the generation to hand to [`SessionCache::put`] after reading it.
    fn get(&self, token_hash: &str, now_ms: i64) -> Result<SessionRecord, u64> {
        let entries = self.lock();
        match entries.by_token.get(token_hash) {
            Some((record, cached))
                if cached.elapsed() < SESSION_CACHE_TTL && record.expires_at_ms > now_ms =>
            {
                Ok(record.clone())
            }
            _ => Err(entries.generation),
        }
    }

    fn put(&self, token_hash: &str, record: &SessionRecord, read_at_generation: u64) {
        let mut entries = self.lock();
        if entries.generation != read_at_generation {
            return;
        }
        if entries.by_token.len() >= SESSION_CACHE_MAX {
            entries.by_token.clear();
        }
        entries
            .by_token
            .insert(token_hash.to_owned(), (record.clone(), Instant::now()));
    }

    fn forget(&self, token_hash: &str) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.by_token.remove(token_hash);
    }

    fn forget_user(&self, user: UserId) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries
            .by_token
            .retain(|_, (record, _)| record.account.id != user);
    }
}

impl Store {
    /// Creates an account; a patient's date of birth goes to the row-level-secured patients table.
    pub async fn create_user(&self, u: NewUser<'_>) -> Result<Account> {
        let id = u.id.to_string();
        let mut tx = self
            .write(Scope {
                actor: Some(&id),
                patient: Some(&id),
                practice: None,
                gate_facts: false,
            })
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, name, role, practice_id, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(u.email.as_str())
        .bind(u.name.as_str())
        .bind(u.role.as_str())
        .bind(u.practice.map(|p| p.to_string()))
        .bind(u.password_hash.clone())
        .bind(u.at_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(Conflict::EmailTaken.into()),
            other => other?,
        };
        if let Some(dob) = &u.date_of_birth {
            sqlx::query("INSERT INTO patients (user_id, date_of_birth) VALUES ($1, $2)")
                .bind(&id)
                .bind(dob)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Account {
            id: u.id,
            email: u.email.as_str().to_owned(),
            name: u.name.as_str().to_owned(),
            role: u.role,
            practice: u.practice,
            password_hash: u.password_hash,
            totp_secret: None,
            totp_enabled: false,
            disabled: false,
        })
    }

    pub async fn account_by_email(&self, email: &Email) -> Result<Option<Account>> {
        self.account_where(
            concat!("SELECT ", account_columns!(), " FROM users u WHERE u.email = $1"),
            email.as_str(),
        )
        .await
    }

    pub async fn account(&self, id: UserId) -> Result<Option<Account>> {
        self.account_where(
            concat!("SELECT ", account_columns!(), " FROM users u WHERE u.id = $1"),
            &id.to_string(),
        )
        .await
    }

    async fn account_where(&self, sql: &'static str, value: &str) -> Result<Option<Account>> {
        let row = self
            .select_one(Scope::default(), sql, &[Param::from(value)])
            .await?;
        row.as_ref().map(account).transpose()
    }

    async fn update_user(&self, sql: &'static str, user: UserId, value: Option<String>) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let done = sqlx::query(sql)
            .bind(value)
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.inner.sessions.forget_user(user);
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<bool> {
        self.update_user(
            "UPDATE users SET password_hash = $1 WHERE id = $2",
            user,
            Some(hash.to_owned()),
        )
        .await
    }

    /// Stores a TOTP secret that is not yet confirmed; login keeps ignoring it until [`Store::enable_totp`].
    pub async fn set_pending_totp_secret(&self, user: UserId, secret: &str) -> Result<bool> {
        self.update_user(
            "UPDATE users SET totp_secret = $1 WHERE id = $2 AND totp_enabled = 0",
            user,
            Some(secret.to_owned()),
        )
        .await
    }

    /// Turns TOTP on with `secret` and replaces the recovery codes, in one transaction.
    pub async fn enable_totp(
        &self,
        user: UserId,
        secret: &str,
        recovery_code_hashes: &[String],
    ) -> Result<()> {
        let id = user.to_string();
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query("UPDATE users SET totp_secret = $1, totp_enabled = 1 WHERE id = $2")
            .bind(secret)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        for hash in recovery_code_hashes {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(&id)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.inner.sessions.forget_user(user);
        Ok(())
    }

    /// Spends a TOTP time step; false when it (or a later one) was already used, which stops replays.
    pub async fn consume_totp_step(&self, user: UserId, step: i64) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Spends a recovery code; true when it existed and was unused.
    pub async fn consume_recovery_code(&self, user: UserId, code_hash: &str, at_ms: i64) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(at_ms)
        .bind(user.to_string())
        .bind(code_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables an account and ends its sessions.
    pub async fn disable_user(&self, user: UserId, at_ms: i64) -> Result<bool> {
        let id = user.to_string();
        let mut tx = self.write(Scope::default()).await?;
        let done = sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL")
            .bind(at_ms)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.inner.sessions.forget_user(user);
        Ok(done.rows_affected() == 1)
    }

    pub async fn create_session(
        &self,
        token_hash: &str,
        user: UserId,
        mfa_verified: bool,
        at_ms: i64,
        expires_at_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, mfa_verified, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user.to_string())
        .bind(i64::from(mfa_verified))
        .bind(at_ms)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A live session of an enabled account.
    pub async fn session(&self, token_hash: &str, now_ms: i64) -> Result<Option<SessionRecord>> {
        let generation = match self.inner.sessions.get(token_hash, now_ms) {
            Ok(cached) => return Ok(Some(cached)),
            Err(generation) => generation,
        };
        let row = self
            .select_one(
                Scope::default(),
                concat!(
                    "SELECT ",
                    account_columns!(),
                    ", s.mfa_verified, s.expires_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL"
                ),
                &[Param::from(token_hash), Param::from(now_ms)],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let record = SessionRecord {
            account: account(&row)?,
            mfa_verified: row.try_get::<i64>("mfa_verified")? != 0,
            expires_at_ms: row.try_get("expires_at")?,
        };
        self.inner.sessions.put(token_hash, &record, generation);
        Ok(Some(record))
    }

    pub async fn mark_session_mfa_verified(&self, token_hash: &str) -> Result<()> {
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query("UPDATE sessions SET mfa_verified = 1 WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.inner.sessions.forget(token_hash);
        Ok(())
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.inner.sessions.forget(token_hash);
        Ok(())
    }

    /// Logs a user out everywhere; returns how many sessions ended.
    pub async fn delete_user_sessions(&self, user: UserId) -> Result<u64> {
        let mut tx = self.write(Scope::default()).await?;
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.inner.sessions.forget_user(user);
        Ok(done.rows_affected())
    }

    pub async fn create_token(&self, t: &OneTimeToken) -> Result<()> {
        let mut tx = self.write(Scope::default()).await?;
        sqlx::query(
            "INSERT INTO one_time_tokens (token_hash, purpose, user_id, email, name, role, practice_id, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&t.token_hash)
        .bind(t.purpose.as_str())
        .bind(t.user.map(|u| u.to_string()))
        .bind(t.email.clone())
        .bind(t.name.clone())
        .bind(t.role.map(|r| r.as_str()))
        .bind(t.practice.map(|p| p.to_string()))
        .bind(t.created_at_ms)
        .bind(t.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A live token, without spending it: to check what it is for before acting on it.
    pub async fn token(
        &self,
        token_hash: &str,
        purpose: TokenPurpose,
        now_ms: i64,
    ) -> Result<Option<OneTimeToken>> {
        let row = self
            .select_one(
                Scope::default(),
                "SELECT user_id, email, name, role, practice_id, created_at, expires_at FROM one_time_tokens \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
                &[
                    Param::from(token_hash),
                    Param::from(purpose.as_str()),
                    Param::from(now_ms),
                ],
            )
            .await?;
        row.map(|row| {
            Ok(OneTimeToken {
                token_hash: token_hash.to_owned(),
                purpose,
                user: row.parse_opt("user_id")?,
                email: row.try_get("email")?,
                name: row.try_get("name")?,
                role: row.parse_opt("role")?,
                practice: row.parse_opt("practice_id")?,
                created_at_ms: row.try_get("created_at")?,
                expires_at_ms: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Spends a token; true once, if it exists, has this purpose and has not expired.
    pub async fn spend_token(&self, token_hash: &str, purpose: TokenPurpose, now_ms: i64) -> Result<bool> {
        let mut tx = self.write(Scope::default()).await?;
        let spent = sqlx::query(
            "UPDATE one_time_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now_ms)
        .bind(token_hash)
        .bind(purpose.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(spent.rows_affected() == 1)
    }

    /// How many accounts exist; the demo seeds only an empty store.
    pub async fn count_users(&self) -> Result<i64> {
        let row = self
            .select_one(Scope::default(), "SELECT COUNT(*) AS n FROM users", &[])
            .await?;
        row.map_or(Ok(0), |r| r.try_get("n"))
    }
}

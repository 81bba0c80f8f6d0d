//! Passwords, sessions, second factors and login throttling.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confide_domain::password::NewPassword;
use confide_domain::policy::{Context, Principal};
use confide_store::{Account, SessionRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm as TotpAlgorithm, Secret, TOTP};

use crate::AppState;
use crate::error::ApiError;

pub const SESSION_COOKIE: &str = "confide_session";

/// Argon2id with OWASP's parameters: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP's Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &NewPassword) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    argon2()
        .hash_password(password.expose().as_bytes(), &salt)
        .expect("Argon2 hashes any password within the length bound")
        .to_string()
}

/// Verifies a password; with no stored hash it still does the work, so that timing does not tell
/// whether an account exists.
pub fn verify_password(candidate: &str, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        hash_password(&NewPassword::parse("dummy-password-for-timing", &[]).expect("a strong dummy"))
    });
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    argon2().verify_password(candidate.as_bytes(), &parsed).is_ok() && real
}

/// A new random token and the hash under which it is stored.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

/// Tokens are long and random, so a fast hash is enough to keep a stolen table from being usable.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new TOTP secret, base32.
pub fn new_totp_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    Secret::Raw(bytes.to_vec()).to_encoded().to_string()
}

fn totp(secret_b32: &str, account: &str) -> Option<TOTP> {
    let secret = Secret::Encoded(secret_b32.to_owned()).to_bytes().ok()?;
    TOTP::new(
        TotpAlgorithm::SHA1,
        6,
        1,
        30,
        secret,
        Some("Confide".to_owned()),
        account.to_owned(),
    )
    .ok()
}

const TOTP_STEP_SECS: u64 = 30;

/// The time step whose code `code` is, if it is the current one for `secret_b32` or one step either side
/// (clock drift). Callers spend the step so that the same code does not work twice.
pub fn totp_step(secret_b32: &str, code: &str, now_secs: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 {
        return None;
    }
    let totp = totp(secret_b32, "")?;
    let now_step = now_secs / TOTP_STEP_SECS;
    [now_step.saturating_sub(1), now_step, now_step + 1]
        .into_iter()
        .find(|step| constant_time_eq(totp.generate(step * TOTP_STEP_SECS).as_bytes(), code.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The current code, as an authenticator app would show it.
pub fn totp_code(secret_b32: &str, now_secs: u64) -> Option<String> {
    Some(totp(secret_b32, "")?.generate(now_secs))
}

/// The `otpauth://` URL an authenticator app imports.
pub fn totp_url(secret_b32: &str, account: &str) -> Option<String> {
    Some(totp(secret_b32, account)?.get_url())
}

/// Ten single-use recovery codes, shown once, stored hashed.
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| {
            let mut code = String::with_capacity(9);
            for i in 0..8 {
                if i == 4 {
                    code.push('-');
                }
                code.push(ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char);
            }
            code
        })
        .collect()
}

pub fn normalize_recovery_code(code: &str) -> String {
    code.trim().to_lowercase()
}

/// Failed logins per account and per address within a window; past the limit, logins are refused for a
/// while whether or not the account exists.
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
}

pub const ACCOUNT_FAILURE_LIMIT: usize = 5;
pub const ADDRESS_FAILURE_LIMIT: usize = 30;
pub const THROTTLE_WINDOW_MS: i64 = 15 * 60 * 1000;

impl Throttle {
    pub fn new() -> Self {
        Throttle {
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(email: &str, ip: IpAddr) -> [(String, usize); 2] {
        [
            (
                format!("account:{}", email.trim().to_lowercase()),
                ACCOUNT_FAILURE_LIMIT,
            ),
            (format!("address:{ip}"), ADDRESS_FAILURE_LIMIT),
        ]
    }

    /// Minutes until another attempt is allowed, or `None` when it is allowed now.
    pub fn blocked_for(&self, email: &str, ip: IpAddr, now_ms: i64) -> Option<i64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None;
        for (key, limit) in Self::keys(email, ip) {
            if let Some(times) = map.get_mut(&key) {
                while times.front().is_some_and(|t| now_ms - t >= THROTTLE_WINDOW_MS) {
                    times.pop_front();
                }
                if times.len() >= limit {
                    let oldest = times.front().copied().unwrap_or(now_ms);
                    let minutes = (oldest + THROTTLE_WINDOW_MS - now_ms + 59_999) / 60_000;
                    wait = Some(wait.map_or(minutes, |w: i64| w.max(minutes)));
                }
            }
        }
        wait
    }

    pub fn record_failure(&self, email: &str, ip: IpAddr, now_ms: i64) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for (key, limit) in Self::keys(email, ip) {
            let times = map.entry(key).or_default();
            times.push_back(now_ms);
            while times.len() > limit {
                times.pop_front();
            }
        }
    }

    pub fn clear_account(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("account:{}", email.trim().to_lowercase()));
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

/// The person behind a request, from their session cookie.
#[derive(Clone, Debug)]
pub struct Session {
    pub token_hash: String,
    pub record: SessionRecord,
}

impl Session {
    pub fn account(&self) -> &Account {
        &self.record.account
    }

    pub fn principal(&self) -> Principal {
        let a = &self.record.account;
        Principal {
            user: a.id,
            role: a.role,
            practice: a.practice,
        }
    }

    pub fn context(&self) -> Context {
        Context {
            mfa_verified: self.record.mfa_verified,
        }
    }
}

/// The caller: maybe logged in.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<Session>);

impl Caller {
    pub fn session(&self) -> Result<&Session, ApiError> {
        self.0.as_ref().ok_or_else(ApiError::login_required)
    }
}

pub fn session_token_from(parts: &Parts) -> Option<String> {
    axum_cookie(parts, SESSION_COOKIE)
}

/// A cookie's value from the request.
pub fn axum_cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let session = match session_token_from(parts) {
            Some(token) => {
                let hash = token_hash(&token);
                state
                    .store
                    .session(&hash, state.clock.now_ms())
                    .await?
                    .map(|record| Session {
                        token_hash: hash,
                        record,
                    })
            }
            None => None,
        };
        let caller = Caller(session);
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// The `Set-Cookie` value for a new session.
pub fn session_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_session_cookie(secure: bool) -> String {
    session_cookie("", 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let p = NewPassword::parse("violet-otter-sails-at-dawn", &[]).unwrap();
        let hash = hash_password(&p);
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("violet-otter-sails-at-dawn", Some(&hash)));
        assert!(!verify_password("violet-otter-sails-at-dusk", Some(&hash)));
        assert!(!verify_password("dummy-password-for-timing", None));
    }

    #[test]
    fn totp_codes_match_their_secret_and_time() {
        let secret = new_totp_secret();
        let code = totp_code(&secret, 1_800_000_000).unwrap();
        assert_eq!(totp_step(&secret, &code, 1_800_000_000), Some(60_000_000));
        assert_eq!(totp_step(&secret, &code, 1_800_000_030), Some(60_000_000));
        assert_eq!(totp_step(&secret, &code, 1_800_000_300), None);
        assert_eq!(totp_step(&secret, "12345", 1_800_000_000), None);
    }

    #[test]
    fn the_throttle_blocks_an_account_after_five_failures_for_the_window() {
        let t = Throttle::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..5 {
            assert_eq!(t.blocked_for("a@x.org", ip, i), None);
            t.record_failure("A@x.org", ip, i);
        }
        assert_eq!(t.blocked_for("a@x.org", ip, 10), Some(15));
        assert_eq!(t.blocked_for("b@x.org", ip, 10), None);
        assert_eq!(t.blocked_for("a@x.org", ip, THROTTLE_WINDOW_MS + 5), None);
    }

    #[test]
    fn recovery_codes_are_distinct() {
        let codes = new_recovery_codes();
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        assert!(codes.iter().all(|c| c.len() == 9 && c.as_bytes()[4] == b'-'));
    }
}

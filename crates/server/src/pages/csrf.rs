//! Double-submit CSRF protection for forms: a random token in a SameSite=Strict cookie, repeated in a
//! hidden field of every form. A POST whose field does not match its cookie is refused before its
//! handler runs, so it changes nothing.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Form, RequestPartsExt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::PageError;
use crate::AppState;
use crate::auth::axum_cookie;

pub const CSRF_COOKIE: &str = "confide_csrf";

/// 32 random bytes, base64url without padding.
const TOKEN_CHARS: usize = 43;

/// The token this request's forms must carry.
#[derive(Clone, Debug)]
pub struct CsrfToken(pub String);

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Anything else in the cookie was not made here: it is replaced rather than trusted.
fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// Makes the token available to handlers, and gives a browser without one a new one when it loads a page.
pub async fn ensure_cookie(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let existing = axum_cookie(&parts, CSRF_COOKIE).filter(|t| well_formed(t));
    let issue = existing.is_none() && matches!(parts.method, Method::GET | Method::HEAD);
    let token = match existing {
        Some(token) => Some(token),
        None if issue => Some(new_token()),
        None => None,
    };
    if let Some(token) = &token {
        parts.extensions.insert(CsrfToken(token.clone()));
    }
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if let Some(token) = token.filter(|_| issue)
        && let Ok(value) = HeaderValue::from_str(&cookie(&token, state.config.secure_cookies()))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CsrfToken>()
            .cloned()
            .ok_or(PageError::Forbidden)
    }
}

/// Compares in time that depends only on the length, which is public.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct Posted<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

/// A form body whose `csrf` field matches the cookie. Give every field of `T` a default, so that a
/// missing field is a validation problem rather than an unreadable form.
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let Ok(CsrfToken(expected)) = parts.extract::<CsrfToken>().await else {
            return Err(PageError::Forbidden);
        };
        let Form(posted) = Form::<Posted<T>>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| PageError::BadRequest("The form could not be read.".to_owned()))?;
        if same(&expected, &posted.csrf) {
            Ok(CsrfForm(posted.fields))
        } else {
            Err(PageError::Forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let (a, b) = (new_token(), new_token());
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
        assert!(!well_formed("short"));
        assert!(!well_formed(&"<".repeat(TOKEN_CHARS)));
    }

    #[test]
    fn only_equal_tokens_match() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn the_cookie_is_strict_and_secure_when_asked() {
        assert_eq!(
            cookie("t", false),
            "confide_csrf=t; Path=/; HttpOnly; SameSite=Strict"
        );
        assert!(cookie("t", true).ends_with("; Secure"));
    }
}

//! The one mapping from failures to HTTP answers. Every error body is `{"error": {"code", "message"}}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confide_domain::identity::IdentityError;
use confide_domain::password::PasswordError;
use confide_domain::practice::PracticeError;
use confide_store::{Conflict, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::calls::CallError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is invalid.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// No session, or a failed login.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// Unknown, or not the caller's to see: the two are indistinguishable by design.
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(Conflict),
    /// The time asked for was just taken: the answer lists the next free ones.
    #[error("that time has just been booked by someone else: choose another")]
    SlotTaken { next_free: serde_json::Value },
    /// The thing is not in a state that allows this, in words for the caller.
    #[error("{0}")]
    InvalidState(String),
    #[error("{message}")]
    TooManyRequests { message: String },
    /// Replay of recordings is turned off, for the practice or everywhere; only someone who could
    /// otherwise play the recording is told so.
    #[error("playing recordings back is turned off")]
    ReplayDisabled,
    /// The recording has no playback copy (yet): still being made, failed, or erased.
    #[error("the recording cannot be played: it is {0}")]
    RecordingNotPlayable(&'static str),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// The request came from another site.
    #[error("cross-site request refused")]
    CrossSite,
    /// A dependency (database, audit log, mail) failed; the request can be retried.
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable.
    pub code: String,
    /// For people.
    pub message: String,
    /// With `slot_taken`: the next free slots, to choose from instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub next_free_slots: Option<serde_json::Value>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn login_required() -> Self {
        ApiError::Unauthorized {
            code: "login_required",
            message: "Log in to continue.".into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_)
            | ApiError::SlotTaken { .. }
            | ApiError::InvalidState(_)
            | ApiError::ReplayDisabled
            | ApiError::RecordingNotPlayable(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::CrossSite => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Unauthorized { code, .. } => code,
            ApiError::NotFound => "not_found",
            ApiError::Conflict(Conflict::EmailTaken) => "email_taken",
            ApiError::Conflict(Conflict::RegistrationExists) => "registration_exists",
            ApiError::Conflict(Conflict::AlreadyDecided) => "already_decided",
            ApiError::Conflict(Conflict::SlotTaken) | ApiError::SlotTaken { .. } => "slot_taken",
            ApiError::Conflict(Conflict::NotBookable) => "not_bookable",
            ApiError::Conflict(Conflict::PastCutoff) => "past_cutoff",
            ApiError::Conflict(Conflict::CheckInNotOpen) => "check_in_not_open",
            ApiError::InvalidState(_) => "invalid_state",
            ApiError::ReplayDisabled => "replay_disabled",
            ApiError::RecordingNotPlayable(_) => "recording_not_playable",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::CrossSite => "cross_site_request",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// What the person is told. Internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::NotFound => "Not found.".to_owned(),
            ApiError::Unavailable(_) => {
                "The service is temporarily unavailable. Please try again.".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let next_free_slots = match &self {
            ApiError::SlotTaken { next_free } => Some(next_free.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.public_message(),
                next_free_slots,
            },
        };
        (self.status(), Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(c) => ApiError::Conflict(c),
            StoreError::Invalid(message) => ApiError::InvalidState(message),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Store(e) => e.into(),
            CallError::NotRunning(_) | CallError::NotInCall | CallError::Ended | CallError::Full => {
                ApiError::InvalidState(e.to_string())
            }
            // As for any guest the gate does not know: nothing says the invitation existed.
            CallError::GuestRevoked => ApiError::NotFound,
            CallError::BadOffer(_) => ApiError::bad_request("invalid_offer", e.to_string()),
            CallError::Sfu(_) | CallError::Recorder(_) | CallError::Key(_) | CallError::KeyEncoding => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let code = match e {
            IdentityError::InvalidEmail => "invalid_email",
            IdentityError::InvalidName { .. } => "invalid_name",
            IdentityError::MalformedDate | IdentityError::BirthInFuture | IdentityError::BirthTooEarly => {
                "invalid_date_of_birth"
            }
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        ApiError::bad_request("weak_password", e.to_string())
    }
}

impl From<PracticeError> for ApiError {
    fn from(e: PracticeError) -> Self {
        let code = match e {
            PracticeError::Name(_) => "invalid_practice_name",
            PracticeError::Address(_) => "invalid_address",
            PracticeError::TimeZone(_) => "invalid_time_zone",
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
            JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_body", e.body_text()),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge {
                    limit: crate::BODY_LIMIT,
                }
            }
            other => ApiError::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    /// A malformed id names nothing that exists.
    fn from(_: PathRejection) -> Self {
        ApiError::NotFound
    }
}

//! Asking the access gate from a request: every decision, yes or no, is committed to the audit log before
//! anything it allows is done or answered, and a no is answered exactly like a resource that does not exist.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use confide_domain::UserId;
use confide_domain::audit::{AuditEvent, Outcome};
use confide_domain::identity::Role;
use confide_domain::policy::{Action, Grant, GuardedAction, Resource, authorize};
use confide_store::Pending;

use crate::AppState;
use crate::auth::Session;
use crate::error::ApiError;

/// The id tower-http gave this request, carried into the audit log.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get(crate::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Ok(RequestId(id))
    }
}

impl AppState {
    /// Appends an audit entry and waits until it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<i64, ApiError> {
        Ok(self.store.audit().append(event).await?)
    }

    /// An audit event by `session`'s user; callers fill in the resource and subject where there is one.
    pub fn event(
        &self,
        session: Option<&Session>,
        action: &str,
        outcome: Outcome,
        reason: &str,
        request: &RequestId,
    ) -> AuditEvent {
        AuditEvent {
            at_ms: self.clock.now_ms(),
            actor: session.map(|s| s.account().id),
            actor_role: session.map(|s| s.account().role),
            action: action.to_owned(),
            resource: String::new(),
            subject_patient: None,
            outcome,
            reason: reason.to_owned(),
            request_id: request.0.clone(),
        }
    }

    /// An event about an account by its own holder (sign-up, login, password reset), when no session
    /// exists yet to name them.
    pub fn account_event(
        &self,
        user: UserId,
        role: Role,
        action: &str,
        outcome: Outcome,
        reason: &str,
        request: &RequestId,
    ) -> AuditEvent {
        AuditEvent {
            actor: Some(user),
            actor_role: Some(role),
            resource: format!("user:{user}"),
            ..self.event(None, action, outcome, reason, request)
        }
    }

    /// Asks the gate whether `session` may do `A` to `on`, and records the answer.
    pub async fn authorize<A: GuardedAction>(
        &self,
        session: &Session,
        on: A::On,
        request: &RequestId,
    ) -> Result<Grant<A>, ApiError> {
        let (decision, entry) = self.decide::<A>(session, on, request).await?;
        entry.committed().await?;
        decision
    }

    /// For a read: asks the gate, and if it allows, reads with the grant while the answer's audit entry is
    /// being committed. What was read is handed back only once the entry is committed, so nothing leaves
    /// the server unaudited, but the read no longer waits for the commit to begin.
    pub async fn read_authorized<A: GuardedAction, T>(
        &self,
        session: &Session,
        on: A::On,
        request: &RequestId,
        read: impl AsyncFnOnce(Grant<A>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (decision, entry) = self.decide::<A>(session, on, request).await?;
        let read = match decision {
            Ok(grant) => read(grant).await,
            Err(denied) => {
                // What the read holds (a snapshot's reader) is let go before the wait.
                drop(read);
                Err(denied)
            }
        };
        entry.committed().await?;
        read
    }

    /// The gate's answer, its entry already handed to the audit log.
    async fn decide<A: GuardedAction>(
        &self,
        session: &Session,
        on: A::On,
        request: &RequestId,
    ) -> Result<(Result<Grant<A>, ApiError>, Pending), ApiError> {
        let decision = authorize::<A>(&session.principal(), on, &session.context());
        let resource: Resource = on.into();
        let (outcome, reason) = match &decision {
            Ok(grant) => (Outcome::Allowed, grant.reason()),
            Err(denied) => (Outcome::Denied, denied.reason),
        };
        let event = AuditEvent {
            resource: resource.audit_label(),
            subject_patient: resource.subject_patient(),
            ..self.event(
                Some(session),
                A::ACTION.as_str(),
                outcome,
                reason.as_str(),
                request,
            )
        };
        let entry = self.store.audit().enqueue(event).await?;
        Ok((decision.map_err(|_| ApiError::NotFound), entry))
    }

    /// The thing looked up, or, when nothing exists under that name, a recorded refusal answered as a
    /// denial would be.
    pub async fn found<T>(
        &self,
        found: Option<T>,
        session: &Session,
        action: Action,
        resource: impl FnOnce() -> String,
        request: &RequestId,
    ) -> Result<T, ApiError> {
        match found {
            Some(thing) => Ok(thing),
            None => Err(self.not_found(session, action, resource(), request).await),
        }
    }

    /// Records an attempt on something that does not exist, and answers as for a denial.
    pub async fn not_found(
        &self,
        session: &Session,
        action: Action,
        resource: String,
        request: &RequestId,
    ) -> ApiError {
        let event = AuditEvent {
            resource,
            ..self.event(
                Some(session),
                action.as_str(),
                Outcome::Denied,
                "not_found",
                request,
            )
        };
        match self.record(event).await {
            Ok(_) => ApiError::NotFound,
            Err(e) => e,
        }
    }
}

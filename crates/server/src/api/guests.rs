//! Guests: a consultation's clinician invites someone without an account, such as an interpreter, into
//! the running call. The invitation is a link with a 256-bit random token, of which only the SHA-256 is
//! kept; it lasts [`LINK_TTL`] and its first redemption spends it and opens a guest session, an HttpOnly
//! cookie whose server-side row names the guest and so the one consultation. With it the guest takes the
//! same call steps as the patient and clinician (join, consent, chat), decided by the gate's guest
//! policy; every other endpoint treats them as logged out. Inviting, listing and revoking are the
//! clinician's (the gate's `InviteGuest`); everyone else gets the same 404 as for a consultation that
//! does not exist. Every step is audited with the consultation's patient as its subject.

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use confide_domain::audit::{AuditEvent, Outcome};
use confide_domain::consultation::GuestRole;
use confide_domain::identity::PersonName;
use confide_domain::policy::actions::{InviteGuest, JoinConsultation};
use confide_domain::policy::{
    CallGrant, ConsultationRef, Grant, GuardedAction, GuestPrincipal, Resource, authorize_guest,
};
use confide_domain::{AppointmentId, GuestId, Timestamp};
use confide_media::sfu::ParticipantId;
use confide_store::{GuestLink, GuestRecord, GuestSession, LinkRefusal, NewGuest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Caller, Session, axum_cookie, new_token, token_hash};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::gate::RequestId;

pub const GUEST_COOKIE: &str = "confide_guest";
/// How long an invitation's link can be redeemed: long enough for an interpreter to be reached during
/// the consultation, short enough that a link found later in someone's mail is dead. A link also stops
/// working when the consultation ends.
pub const LINK_TTL: Duration = Duration::from_secs(2 * 3600);
/// How long a guest's session lasts; the calls it opens still run only while the consultation does.
pub const SESSION_TTL: Duration = Duration::from_secs(4 * 3600);

/// Who takes a step in a call: an account holder by their session, or a guest by theirs.
#[derive(Clone, Debug)]
pub enum InCall {
    Account(Session),
    Guest(GuestSession),
}

impl InCall {
    pub fn session(&self) -> Option<&Session> {
        match self {
            InCall::Account(session) => Some(session),
            InCall::Guest(_) => None,
        }
    }
}

/// The guest behind a request's guest cookie, if it names a live guest session.
pub async fn guest_from(parts: &Parts, state: &AppState) -> Result<Option<GuestSession>, ApiError> {
    match axum_cookie(parts, GUEST_COOKIE) {
        Some(token) => Ok(state
            .store
            .guest_session(&token_hash(&token), state.clock.now())
            .await?),
        None => Ok(None),
    }
}

/// The guest behind a request, if any: for the guest's own pages.
pub struct GuestCaller(pub Option<GuestSession>);

impl FromRequestParts<AppState> for GuestCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(GuestCaller(guest_from(parts, state).await?))
    }
}

impl FromRequestParts<AppState> for InCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Caller(Some(session)) = Caller::from_request_parts(parts, state).await? {
            return Ok(InCall::Account(session));
        }
        match guest_from(parts, state).await? {
            Some(guest) => Ok(InCall::Guest(guest)),
            None => Err(ApiError::login_required()),
        }
    }
}

/// An audit event with a guest as its actor. A guest has no account, so the actor columns stay empty and
/// the guest is named in the reason, beside why the step was allowed or refused.
pub fn guest_event(
    state: &AppState,
    guest: GuestId,
    action: &str,
    outcome: Outcome,
    reason: &str,
    c: &ConsultationRef,
    request: &RequestId,
) -> AuditEvent {
    AuditEvent {
        resource: format!("consultation:{}", c.id),
        subject_patient: Some(c.patient.patient),
        ..state.event(None, action, outcome, &format!("{reason} guest:{guest}"), request)
    }
}

/// The gate's grant for `A` on the appointment's consultation, for whoever is in the call. An
/// appointment that does not exist, has no consultation yet, or is not the guest's, is recorded and
/// answered as a denial is.
pub async fn call_grant<A: GuardedAction<On = ConsultationRef>>(
    state: &AppState,
    who: &InCall,
    id: Uuid,
    request: &RequestId,
) -> Result<CallGrant<A>, ApiError> {
    let appointment = AppointmentId::from_uuid(id);
    let found = state.store.consultation_ref(appointment).await?;
    let guest = match who {
        InCall::Account(session) => {
            let on = state
                .found(
                    found,
                    session,
                    A::ACTION,
                    || format!("appointment:{appointment}"),
                    request,
                )
                .await?;
            return Ok(CallGrant::Account(
                state.authorize::<A>(session, on, request).await?,
            ));
        }
        InCall::Guest(guest) => guest,
    };
    let principal = guest.principal;
    let Some(on) = found else {
        let event = AuditEvent {
            resource: format!("appointment:{appointment}"),
            ..state.event(
                None,
                A::ACTION.as_str(),
                Outcome::Denied,
                &format!("not_found guest:{}", principal.guest),
                request,
            )
        };
        state.record(event).await?;
        return Err(ApiError::NotFound);
    };
    let decision = authorize_guest::<A>(&principal, on);
    let (outcome, reason) = match &decision {
        Ok(grant) => (Outcome::Allowed, grant.reason()),
        Err(denied) => (Outcome::Denied, denied.reason),
    };
    let event = AuditEvent {
        resource: Resource::from(on).audit_label(),
        ..guest_event(
            state,
            principal.guest,
            A::ACTION.as_str(),
            outcome,
            reason.as_str(),
            &on,
            request,
        )
    };
    state.record(event).await?;
    decision.map(CallGrant::Guest).map_err(|_| ApiError::NotFound)
}

/// The clinician's grant to manage the appointment's consultation's guests.
async fn invite_grant(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<Grant<InviteGuest>, ApiError> {
    let appointment = AppointmentId::from_uuid(id);
    let found = state.store.consultation_ref(appointment).await?;
    let on = state
        .found(
            found,
            session,
            InviteGuest::ACTION,
            || format!("appointment:{appointment}"),
            request,
        )
        .await?;
    state.authorize::<InviteGuest>(session, on, request).await
}

/// Records a step the clinician took with a guest, beside the gate's record of it being allowed.
async fn record_guest_step(
    state: &AppState,
    session: &Session,
    c: &ConsultationRef,
    guest: GuestId,
    action: &str,
    request: &RequestId,
) -> Result<(), ApiError> {
    let event = AuditEvent {
        resource: format!("consultation:{}", c.id),
        subject_patient: Some(c.patient.patient),
        ..state.event(
            Some(session),
            action,
            Outcome::Allowed,
            &format!("guest:{guest}"),
            request,
        )
    };
    state.record(event).await?;
    Ok(())
}

#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// The guest's name, as the others in the call will see it.
    pub name: String,
    /// Why they are in the call, such as `interpreter`: 1 to 50 characters.
    pub role: String,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct Invitation {
    pub guest_id: Uuid,
    /// The single-use link to give the guest. It is shown only now: the server keeps only its hash.
    pub link: String,
    /// When the link stops working if unused (RFC 3339); it also stops when the consultation ends.
    pub expires_at: String,
}

#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct GuestView {
    pub guest_id: Uuid,
    pub name: String,
    pub role: String,
    /// RFC 3339, like the other times.
    pub invited_at: String,
    pub link_expires_at: String,
    /// When the link was used, if it was: it can't be used again.
    pub redeemed_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn guest_view(g: &GuestRecord) -> GuestView {
    GuestView {
        guest_id: g.id.as_uuid(),
        name: g.name.clone(),
        role: g.role.clone(),
        invited_at: g.invited_at.to_string(),
        link_expires_at: g.link_expires_at.to_string(),
        redeemed_at: g.redeemed_at.map(|t| t.to_string()),
        revoked_at: g.revoked_at.map(|t| t.to_string()),
    }
}

pub async fn invite(
    state: &AppState,
    session: &Session,
    id: Uuid,
    req: InviteRequest,
    request: &RequestId,
) -> Result<Invitation, ApiError> {
    let name = PersonName::parse(&req.name)?;
    let role =
        GuestRole::parse(&req.role).map_err(|e| ApiError::bad_request("invalid_role", e.to_string()))?;
    let grant = invite_grant(state, session, id, request).await?;
    let now = state.clock.now();
    let expires_at = now
        .checked_add(LINK_TTL)
        .map_err(|e| ApiError::Unavailable(format!("the link's expiry: {e}")))?;
    let guest = GuestId::from_uuid(Uuid::new_v4());
    let (token, hash) = new_token();
    state
        .store
        .invite_guest(
            &grant,
            NewGuest {
                id: guest,
                name: &name,
                role: &role,
                token_hash: &hash,
                link_expires_at: expires_at,
            },
            now,
        )
        .await?;
    record_guest_step(
        state,
        session,
        grant.consultation(),
        guest,
        "consultation.guest_invited",
        request,
    )
    .await?;
    Ok(Invitation {
        guest_id: guest.as_uuid(),
        link: format!("{}/join/{token}", state.config.public_url.trim_end_matches('/')),
        expires_at: expires_at.to_string(),
    })
}

#[utoipa::path(post, path = "/api/v1/appointments/{id}/guests", tag = "calls", params(("id" = Uuid, Path)),
    request_body = InviteRequest,
    responses((status = 201, description = "Invited: the link is shown once and can be used once", body = Invitation),
              (status = 400, description = "An invalid name or role", body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, description = "Not the caller's consultation to invite into, or not started", body = ErrorBody),
              (status = 409, description = "The consultation is not running", body = ErrorBody)))]
pub async fn invite_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<(StatusCode, axum::Json<Invitation>), ApiError> {
    let invitation = invite(&state, caller.session()?, id, req, &request).await?;
    Ok((StatusCode::CREATED, axum::Json(invitation)))
}

pub async fn list(
    state: &AppState,
    session: &Session,
    id: Uuid,
    request: &RequestId,
) -> Result<Vec<GuestView>, ApiError> {
    let grant = invite_grant(state, session, id, request).await?;
    Ok(state.store.guests(&grant).await?.iter().map(guest_view).collect())
}

#[utoipa::path(get, path = "/api/v1/appointments/{id}/guests", tag = "calls", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The consultation's guests, in the order invited", body = Vec<GuestView>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<Vec<GuestView>>, ApiError> {
    Ok(axum::Json(list(&state, caller.session()?, id, &request).await?))
}

pub async fn revoke(
    state: &AppState,
    session: &Session,
    id: Uuid,
    guest: Uuid,
    request: &RequestId,
) -> Result<(), ApiError> {
    let grant = invite_grant(state, session, id, request).await?;
    let guest = GuestId::from_uuid(guest);
    let Some(revoked) = state.store.revoke_guest(&grant, guest, state.clock.now()).await? else {
        return Err(state
            .not_found(
                session,
                InviteGuest::ACTION,
                format!("consultation:{}/guest:{guest}", grant.consultation().id),
                request,
            )
            .await);
    };
    state
        .calls
        .remove(grant.consultation().id, ParticipantId(revoked.id.as_uuid()))
        .await?;
    record_guest_step(
        state,
        session,
        grant.consultation(),
        guest,
        "consultation.guest_revoked",
        request,
    )
    .await
}

#[utoipa::path(delete, path = "/api/v1/appointments/{id}/guests/{guest_id}", tag = "calls",
    params(("id" = Uuid, Path), ("guest_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked (also when already revoked): the link and the guest's session stop working and the guest is dropped from the call"),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_handler(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    ApiPath((id, guest)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    revoke(&state, caller.session()?, id, guest, &request).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A link that can still be redeemed, or `None` after recording why not. A token that names no guest is
/// recorded without a subject; one that does is recorded on its consultation's patient.
pub async fn open_link(
    state: &AppState,
    token: &str,
    request: &RequestId,
) -> Result<Option<GuestLink>, ApiError> {
    let Some(link) = state
        .store
        .guest_link(&token_hash(token), state.clock.now())
        .await?
    else {
        let event = AuditEvent {
            resource: "guest_link".to_owned(),
            ..state.event(
                None,
                "consultation.guest_link",
                Outcome::Denied,
                "unknown_link",
                request,
            )
        };
        state.record(event).await?;
        return Ok(None);
    };
    if let Some(refused) = link.refused {
        refuse(state, &link, refused, request).await?;
        return Ok(None);
    }
    Ok(Some(link))
}

async fn refuse(
    state: &AppState,
    link: &GuestLink,
    why: LinkRefusal,
    request: &RequestId,
) -> Result<(), ApiError> {
    let event = guest_event(
        state,
        link.guest,
        "consultation.guest_link",
        Outcome::Denied,
        why.as_str(),
        &link.consultation,
        request,
    );
    state.record(event).await?;
    Ok(())
}

/// Redeems a link: spends it and opens the guest's session. Returns the session's token for the cookie,
/// or `None` (recorded) when the link can't be redeemed, including when another redemption won.
pub async fn redeem(
    state: &AppState,
    token: &str,
    request: &RequestId,
) -> Result<Option<(String, AppointmentId)>, ApiError> {
    let Some(link) = open_link(state, token, request).await? else {
        return Ok(None);
    };
    let principal: GuestPrincipal = link.principal();
    let Ok(grant) = authorize_guest::<JoinConsultation>(&principal, link.consultation) else {
        return Err(ApiError::Unavailable(
            "the gate refused a guest their own consultation".into(),
        ));
    };
    let now = state.clock.now();
    let expires_at: Timestamp = now
        .checked_add(SESSION_TTL)
        .map_err(|e| ApiError::Unavailable(format!("the session's expiry: {e}")))?;
    let (session_token, session_hash) = new_token();
    if !state
        .store
        .redeem_guest_link(&grant, &session_hash, expires_at, now)
        .await?
    {
        refuse(state, &link, LinkRefusal::Redeemed, request).await?;
        return Ok(None);
    }
    let event = guest_event(
        state,
        link.guest,
        "consultation.guest_link_redeemed",
        Outcome::Allowed,
        grant.reason().as_str(),
        &link.consultation,
        request,
    );
    state.record(event).await?;
    Ok(Some((session_token, link.consultation.appointment)))
}

/// The `Set-Cookie` value for a guest's session: HttpOnly, and Strict so no other site's page can use
/// it; its row names the one consultation it is good for.
pub fn guest_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{GUEST_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    )
}

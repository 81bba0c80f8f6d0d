//! A consultation's guests: people without an account, such as interpreters, whom its clinician invites
//! into the call by a single-use link. A guest's row is bound when it is made to the consultation and its
//! owners; the link's token is kept only as its hash, and the first redemption spends it and opens the
//! one guest session the guest will have.

use confide_domain::consultation::GuestRole;
use confide_domain::identity::PersonName;
use confide_domain::policy::actions::{InviteGuest, JoinConsultation};
use confide_domain::policy::{
    ConsultationGrant, ConsultationRef, Grant, GuestGrant, GuestPrincipal, PatientRef,
};
use confide_domain::scheduling::AppointmentStatus;
use confide_domain::{AppointmentId, GuestId, Timestamp};

use crate::call_records::Owned;
use crate::read::{OwnedRow, Param};
use crate::{Result, Scope, Store, StoreError};

/// A guest about to be invited. The token's hash is all that is kept of their link.
#[derive(Clone, Debug)]
pub struct NewGuest<'a> {
    pub id: GuestId,
    pub name: &'a PersonName,
    pub role: &'a GuestRole,
    pub token_hash: &'a str,
    pub link_expires_at: Timestamp,
}

/// A guest as the clinician who invited them sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestRecord {
    pub id: GuestId,
    pub name: String,
    pub role: String,
    pub invited_at: Timestamp,
    pub link_expires_at: Timestamp,
    pub redeemed_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// Why a link can't be redeemed (any more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkRefusal {
    Redeemed,
    Revoked,
    Expired,
    /// The consultation is not running: not yet, or no more.
    NotRunning,
}

impl LinkRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRefusal::Redeemed => "link_already_used",
            LinkRefusal::Revoked => "guest_revoked",
            LinkRefusal::Expired => "link_expired",
            LinkRefusal::NotRunning => "consultation_not_running",
        }
    }
}

/// What a guest's link leads to, looked up by its hash before anyone is granted anything: the facts the
/// gate needs, and what the guest is shown before they redeem it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLink {
    pub guest: GuestId,
    pub consultation: ConsultationRef,
    pub name: String,
    pub role: String,
    pub practice_name: String,
    pub clinician_name: String,
    /// Why it can't be redeemed, if it can't.
    pub refused: Option<LinkRefusal>,
}

impl GuestLink {
    pub fn principal(&self) -> GuestPrincipal {
        GuestPrincipal {
            guest: self.guest,
            consultation: self.consultation.id,
        }
    }
}

/// A guest's browser after redeeming their link: who they are and the one consultation they are in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSession {
    pub principal: GuestPrincipal,
    pub appointment: AppointmentId,
    pub name: String,
    pub role: String,
    /// Whom and where they were invited to: what the guest's call page names.
    pub clinician_name: String,
    pub practice_name: String,
}

fn timestamp(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("a guest's time: {e}")))
}

fn optional_timestamp(row: &OwnedRow, column: &str) -> Result<Option<Timestamp>> {
    row.try_get::<Option<i64>>(column)?.map(timestamp).transpose()
}

fn guest_record(row: &OwnedRow) -> Result<GuestRecord> {
    Ok(GuestRecord {
        id: row.parse("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        invited_at: timestamp(row.try_get("invited_at")?)?,
        link_expires_at: timestamp(row.try_get("link_expires_at")?)?,
        redeemed_at: optional_timestamp(row, "redeemed_at")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
    })
}

impl Store {
    /// Invites a guest into the grant's consultation. Refused unless its call is running: a guest is
    /// invited into a call, and the consultation they are bound to exists only from its start.
    pub async fn invite_guest(
        &self,
        grant: &Grant<InviteGuest>,
        guest: NewGuest<'_>,
        at: Timestamp,
    ) -> Result<()> {
        let owned = Owned::of(grant);
        let mut tx = self.write(owned.scope()).await?;
        let row = sqlx::query(
            "SELECT a.status FROM consultations c JOIN appointments a ON a.id = c.appointment_id WHERE c.id = $1",
        )
        .bind(&owned.consultation)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the consultation the gate saw is gone".into()))?;
        let status: AppointmentStatus = OwnedRow::from_any(&row)?.parse("status")?;
        if status != AppointmentStatus::InConsultation {
            return Err(StoreError::Invalid(format!(
                "a guest can only be invited while the consultation runs: the appointment is {status}"
            )));
        }
        sqlx::query(
            "INSERT INTO consultation_guests (id, consultation_id, patient_id, clinician_id, practice_id, name, \
             role, token_hash, invited_at, link_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(guest.id.to_string())
        .bind(&owned.consultation)
        .bind(&owned.patient)
        .bind(&owned.clinician)
        .bind(&owned.practice)
        .bind(guest.name.as_str())
        .bind(guest.role.as_str())
        .bind(guest.token_hash)
        .bind(at.as_millisecond())
        .bind(guest.link_expires_at.as_millisecond())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The consultation's guests, in the order they were invited.
    pub async fn guests(&self, grant: &Grant<InviteGuest>) -> Result<Vec<GuestRecord>> {
        let owned = Owned::of(grant);
        self.select(
            owned.scope(),
            "SELECT id, name, role, invited_at, link_expires_at, redeemed_at, revoked_at \
             FROM consultation_guests WHERE consultation_id = $1 ORDER BY invited_at, id",
            &[Param::from(&owned.consultation)],
        )
        .await?
        .iter()
        .map(guest_record)
        .collect()
    }

    /// Whether the guest a grant was given to is still in the consultation: not revoked since. A call
    /// checks this again once it holds the room, so that a join that passed the gate before a
    /// revocation cannot finish after the revocation has cleared the room.
    pub async fn guest_still_admitted(
        &self,
        grant: &impl ConsultationGrant<JoinConsultation>,
        guest: GuestId,
    ) -> Result<bool> {
        let owned = Owned::of(grant);
        let row = self
            .select_one(
                owned.scope(),
                "SELECT id FROM consultation_guests \
                 WHERE id = $1 AND consultation_id = $2 AND revoked_at IS NULL",
                &[Param::from(guest.to_string()), Param::from(&owned.consultation)],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Revokes one of the consultation's guests: their link and their session stop working. Returns the
    /// guest, or `None` when the consultation has no such guest.
    pub async fn revoke_guest(
        &self,
        grant: &Grant<InviteGuest>,
        guest: GuestId,
        at: Timestamp,
    ) -> Result<Option<GuestRecord>> {
        let owned = Owned::of(grant);
        let guest = guest.to_string();
        let mut tx = self.write(owned.scope()).await?;
        sqlx::query(
            "UPDATE consultation_guests SET revoked_at = $1 \
             WHERE id = $2 AND consultation_id = $3 AND revoked_at IS NULL",
        )
        .bind(at.as_millisecond())
        .bind(&guest)
        .bind(&owned.consultation)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT id, name, role, invited_at, link_expires_at, redeemed_at, revoked_at \
             FROM consultation_guests WHERE id = $1 AND consultation_id = $2",
        )
        .bind(&guest)
        .bind(&owned.consultation)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        sqlx::query("DELETE FROM guest_sessions WHERE guest_id = $1")
            .bind(&guest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(guest_record(&OwnedRow::from_any(&row)?)?))
    }

    /// What the link whose token hashes to `token_hash` leads to, if it names a guest at all.
    pub async fn guest_link(&self, token_hash: &str, now: Timestamp) -> Result<Option<GuestLink>> {
        let row = self
            .select_one(
                Scope {
                    gate_facts: true,
                    ..Scope::default()
                },
                "SELECT g.id, g.name, g.role, g.link_expires_at, g.redeemed_at, g.revoked_at, \
                 c.id AS consultation_id, c.appointment_id, c.patient_id, c.clinician_id, c.practice_id, \
                 a.status, p.name AS practice_name, u.name AS clinician_name, \
                 (SELECT r.practice_id FROM registrations r WHERE r.patient_id = c.patient_id \
                  AND r.status = 'accepted') AS registered_at \
                 FROM consultation_guests g JOIN consultations c ON c.id = g.consultation_id \
                 JOIN appointments a ON a.id = c.appointment_id JOIN practices p ON p.id = c.practice_id \
                 JOIN users u ON u.id = c.clinician_id WHERE g.token_hash = $1",
                &[Param::from(token_hash)],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let status: AppointmentStatus = row.parse("status")?;
        let refused = if row.try_get::<Option<i64>>("revoked_at")?.is_some() {
            Some(LinkRefusal::Revoked)
        } else if row.try_get::<Option<i64>>("redeemed_at")?.is_some() {
            Some(LinkRefusal::Redeemed)
        } else if row.try_get::<i64>("link_expires_at")? <= now.as_millisecond() {
            Some(LinkRefusal::Expired)
        } else if status != AppointmentStatus::InConsultation {
            Some(LinkRefusal::NotRunning)
        } else {
            None
        };
        Ok(Some(GuestLink {
            guest: row.parse("id")?,
            consultation: ConsultationRef {
                id: row.parse("consultation_id")?,
                appointment: row.parse("appointment_id")?,
                patient: PatientRef {
                    patient: row.parse("patient_id")?,
                    registered_at: row.parse_opt("registered_at")?,
                },
                clinician: row.parse("clinician_id")?,
                practice: row.parse("practice_id")?,
            },
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            practice_name: row.try_get("practice_name")?,
            clinician_name: row.try_get("clinician_name")?,
            refused,
        }))
    }

    /// Spends the guest's link and opens their session under `session_hash`, in one transaction: of two
    /// redemptions at once only one succeeds. Returns whether this one did.
    pub async fn redeem_guest_link(
        &self,
        grant: &GuestGrant<JoinConsultation>,
        session_hash: &str,
        session_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let owned = Owned::of(grant);
        let mut tx = self.write(owned.scope()).await?;
        let spent = sqlx::query(
            "UPDATE consultation_guests SET redeemed_at = $1 WHERE id = $2 AND consultation_id = $3 \
             AND redeemed_at IS NULL AND revoked_at IS NULL AND link_expires_at > $1",
        )
        .bind(now.as_millisecond())
        .bind(grant.guest().guest.to_string())
        .bind(&owned.consultation)
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            tx.commit().await?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO guest_sessions (token_hash, guest_id, expires_at) VALUES ($1, $2, $3)")
            .bind(session_hash)
            .bind(grant.guest().guest.to_string())
            .bind(session_expires_at.as_millisecond())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The guest whose session hashes to `session_hash`, unless it expired or the guest was revoked.
    pub async fn guest_session(&self, session_hash: &str, now: Timestamp) -> Result<Option<GuestSession>> {
        let row = self
            .select_one(
                Scope {
                    gate_facts: true,
                    ..Scope::default()
                },
                "SELECT g.id, g.consultation_id, g.name, g.role, c.appointment_id, \
                 u.name AS clinician_name, p.name AS practice_name \
                 FROM guest_sessions s JOIN consultation_guests g ON g.id = s.guest_id \
                 JOIN consultations c ON c.id = g.consultation_id \
                 JOIN users u ON u.id = c.clinician_id JOIN practices p ON p.id = c.practice_id \
                 WHERE s.token_hash = $1 AND s.expires_at > $2 AND g.revoked_at IS NULL",
                &[Param::from(session_hash), Param::from(now.as_millisecond())],
            )
            .await?;
        row.map(|row| {
            Ok(GuestSession {
                principal: GuestPrincipal {
                    guest: row.parse("id")?,
                    consultation: row.parse("consultation_id")?,
                },
                appointment: row.parse("appointment_id")?,
                name: row.try_get("name")?,
                role: row.try_get("role")?,
                clinician_name: row.try_get("clinician_name")?,
                practice_name: row.try_get("practice_name")?,
            })
        })
        .transpose()
    }
}

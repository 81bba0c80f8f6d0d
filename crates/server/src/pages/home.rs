//! Each person's starting point, which depends on their role.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use confide_domain::identity::Role;

use super::csrf::CsrfToken;
use super::{Layout, NoticeQuery, PageError, PageQuery, SignedIn, When, long_date, when};
use crate::AppState;
use crate::api;
use crate::gate::RequestId;

struct RegistrationRow {
    practice: String,
    status: &'static str,
    requested: When,
    decided: Option<When>,
}

fn status_label(status: &str) -> &'static str {
    match status {
        "pending" => "Waiting for the practice",
        "accepted" => "Registered",
        "declined" => "Declined",
        "withdrawn" => "Withdrawn: you asked another practice",
        "ended" => "Ended: you moved to another practice",
        _ => "Unknown",
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "home_patient.html")]
struct PatientHome {
    layout: Layout,
    name: String,
    email: String,
    date_of_birth: String,
    practice: Option<String>,
    registrations: Vec<RegistrationRow>,
    mfa_enabled: bool,
}

struct PatientRow {
    name: String,
    date_of_birth: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "home_staff.html")]
struct StaffHome {
    layout: Layout,
    name: String,
    role: &'static str,
    practice: String,
    /// Clinicians only: practice admins do not see patients.
    patients: Option<Vec<PatientRow>>,
    mfa_enabled: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "home_admin.html")]
struct AdminHome {
    layout: Layout,
    name: String,
    mfa_enabled: bool,
}

pub async fn home(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    csrf: CsrfToken,
    request: RequestId,
    PageQuery(notice): PageQuery<NoticeQuery>,
) -> Result<Response, PageError> {
    let layout = Layout::new(Some(&session), &csrf).with_notice(&notice);
    let account = session.account();
    let mfa_enabled = account.totp_enabled;
    match account.role {
        Role::Patient => {
            let profile = api::patients::profile(&state, &session, account.id.as_uuid(), &request).await?;
            let registrations = api::registrations::mine(&state, &session, &request)
                .await?
                .into_iter()
                .map(|r| RegistrationRow {
                    practice: r.practice_name,
                    status: status_label(&r.status),
                    requested: when(r.requested_at),
                    decided: r.decided_at.map(when),
                })
                .collect();
            Ok(PatientHome {
                layout,
                name: profile.name,
                email: profile.email,
                date_of_birth: long_date(&profile.date_of_birth),
                practice: profile.registered_practice_name,
                registrations,
                mfa_enabled,
            }
            .into_response())
        }
        Role::Clinician | Role::PracticeAdmin => {
            let practice_id = account.practice.ok_or(PageError::NotFound)?;
            let practice = api::practices::get(&state, practice_id).await?;
            let patients = if account.role == Role::Clinician {
                let list =
                    api::practices::patients(&state, &session, practice_id.as_uuid(), &request).await?;
                Some(
                    list.into_iter()
                        .map(|p| PatientRow {
                            name: p.name,
                            date_of_birth: long_date(&p.date_of_birth),
                        })
                        .collect(),
                )
            } else {
                None
            };
            Ok(StaffHome {
                layout,
                name: account.name.clone(),
                role: super::role_label(account.role.as_str()),
                practice: practice.name,
                patients,
                mfa_enabled,
            }
            .into_response())
        }
        Role::PlatformAdmin => Ok(AdminHome {
            layout,
            name: account.name.clone(),
            mfa_enabled,
        }
        .into_response()),
    }
}

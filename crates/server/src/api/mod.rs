//! The JSON API under `/api/v1`, and the OpenAPI document that describes every route of it.

pub mod appointments;
pub mod auth;
pub mod availability;
pub mod calls;
pub mod consultation_records;
pub mod guests;
pub mod patients;
pub mod practices;
pub mod recordings;
pub mod registrations;
pub mod triage;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Confide API", description = "Telehealth for GP practices. Every access to patient data is \
        decided by one access gate and recorded in a tamper-evident audit log. A resource the caller may not \
        see answers 404, exactly like one that does not exist. Errors are `{\"error\": {\"code\", \"message\"}}`. \
        Authentication is the `confide_session` cookie set by `POST /api/v1/auth/login`; state-changing requests \
        must be JSON and same-origin."),
    tags((name = "auth"), (name = "practices"), (name = "registrations"), (name = "patients"),
        (name = "appointments"), (name = "calls"), (name = "recordings"), (name = "scheduling"), (name = "triage"))
)]
struct ApiDoc;

/// Every API route, with its OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::signup_handler))
        .routes(routes!(auth::login_handler))
        .routes(routes!(auth::logout_handler))
        .routes(routes!(auth::logout_everywhere_handler))
        .routes(routes!(auth::me_handler))
        .routes(routes!(auth::totp_setup_handler))
        .routes(routes!(auth::totp_confirm_handler))
        .routes(routes!(auth::password_reset_handler))
        .routes(routes!(auth::password_reset_confirm_handler))
        .routes(routes!(auth::accept_invite_handler))
        .routes(routes!(practices::search_handler, practices::create_handler))
        .routes(routes!(practices::get_handler))
        .routes(routes!(practices::invite_handler))
        .routes(routes!(practices::queue_handler))
        .routes(routes!(practices::patients_handler))
        .routes(routes!(
            registrations::request_handler,
            registrations::mine_handler
        ))
        .routes(routes!(registrations::accept_handler))
        .routes(routes!(registrations::decline_handler))
        .routes(routes!(patients::profile_handler))
        .routes(routes!(patients::record_handler))
        .routes(routes!(patients::add_note_handler))
        .routes(routes!(patients::access_log_handler))
        .routes(routes!(appointments::slots_handler))
        .routes(routes!(appointments::book_handler, appointments::mine_handler))
        .routes(routes!(appointments::get_handler))
        .routes(routes!(appointments::cancel_handler))
        .routes(routes!(appointments::reschedule_handler))
        .routes(routes!(appointments::check_in_handler))
        .routes(routes!(appointments::start_handler))
        .routes(routes!(appointments::complete_handler))
        .routes(routes!(appointments::no_show_handler))
        .routes(routes!(appointments::events_handler))
        .routes(routes!(calls::join_handler))
        .routes(routes!(calls::mode_handler))
        .routes(routes!(calls::leave_handler))
        .routes(routes!(
            consultation_records::consent_handler,
            consultation_records::consent_log_handler
        ))
        .routes(routes!(
            consultation_records::post_message_handler,
            consultation_records::messages_handler
        ))
        .routes(routes!(consultation_records::message_events_handler))
        .routes(routes!(guests::invite_handler, guests::list_handler))
        .routes(routes!(guests::revoke_handler))
        .routes(routes!(recordings::list_handler))
        .routes(routes!(recordings::get_handler))
        .routes(routes!(recordings::media_handler))
        .routes(routes!(recordings::participant_media_handler))
        .routes(routes!(recordings::playback_handler))
        .routes(routes!(recordings::break_glass_handler))
        .routes(routes!(recordings::retention_handler))
        .routes(routes!(recordings::replay_handler))
        .routes(routes!(availability::availability_handler))
        .routes(routes!(availability::add_rule_handler))
        .routes(routes!(availability::remove_rule_handler))
        .routes(routes!(availability::add_exception_handler))
        .routes(routes!(availability::remove_exception_handler))
        .routes(routes!(availability::day_handler))
        .routes(routes!(availability::set_cutoff_handler))
        .routes(routes!(triage::start_handler, triage::list_handler))
        .routes(routes!(triage::get_handler))
        .routes(routes!(triage::answer_handler))
        .routes(routes!(triage::back_handler))
        .routes(routes!(triage::anonymous_answer_handler))
        .routes(routes!(triage::anonymous_back_handler))
}

//! The JSON API, exercised over HTTP against the real app on 127.0.0.1 with its own data directory.

mod accounts;
mod appointments;
mod call_records;
mod calls;
mod consultation;
mod cross_user;
mod guests;
mod helpers;
mod incident;
mod input;
mod operations;
mod peer;
mod recordings;
mod registrations;
mod triage;

//! The JSON API, exercised over HTTP against the real app on 127.0.0.1 with its own data directory.

mod accounts;
mod appointments;
mod calls;
mod cross_user;
mod helpers;
mod input;
mod operations;
mod peer;
mod registrations;

//! What the server needs to know to start. Loading it from files and the environment is the binary's job.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Holds the SQLite database (by default), the outbox, the master key and the recordings.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; `None` means the SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// Where users reach Confide, for links in emails and the cookie's Secure flag.
    pub public_url: String,
    /// Mail goes out by SMTP when set; otherwise it is written to `data_dir/outbox` as `.eml` files.
    pub smtp: Option<SmtpConfig>,
    pub mail_from: String,
    pub session_ttl: Duration,
    /// The key that wraps per-recording keys; created in `data_dir` when not given.
    pub master_key_file: Option<PathBuf>,
    /// How often the job runner looks for due reminders when nothing wakes it.
    pub job_poll: Duration,
    /// Where the SFU's UDP socket for call media is bound.
    pub media_udp: SocketAddr,
    /// The address browsers are told to send call media to, when it is not `media_udp` (bound to
    /// 0.0.0.0, or behind NAT).
    pub media_public: Option<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `starttls` (default), `tls` (implicit TLS) or `none` (only for a relay on loopback).
    pub security: SmtpSecurity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    StartTls,
    Tls,
    None,
}

impl ServerConfig {
    /// The embedded default: everything under `data_dir`, served on `listen`.
    pub fn embedded(data_dir: PathBuf, listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            public_url: format!("http://{listen}"),
            data_dir,
            database_url: None,
            smtp: None,
            mail_from: "Confide <no-reply@confide.localhost>".to_owned(),
            session_ttl: Duration::from_secs(12 * 3600),
            master_key_file: None,
            job_poll: Duration::from_secs(5),
            media_udp: (Ipv4Addr::LOCALHOST, 0).into(),
            media_public: None,
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => confide_store::sqlite_url(&self.data_dir.join("confide.db")),
        }
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// Where call recordings' segments are kept.
    pub fn recordings_dir(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }

    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

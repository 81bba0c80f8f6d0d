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
    /// Where the first SFU worker's UDP socket for call media is bound; there is one worker per core,
    /// and worker `i` binds the port `i` after this one (or any free port when this port is 0).
    pub media_udp: SocketAddr,
    /// The address browsers are told to send call media to, when it is not `media_udp` (bound to
    /// 0.0.0.0, or behind NAT); worker `i` announces the port `i` after it.
    pub media_public: Option<SocketAddr>,
    /// Where recordings' encrypted playback copies are kept.
    pub blob_store: BlobStoreConfig,
    /// Whether recordings may be played back at all; each practice can also turn it off for its own.
    /// Calls and recording go on either way.
    pub replay_enabled: bool,
}

/// Object storage for recordings' playback copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobStoreConfig {
    /// A directory on the local disk; `None` means `data_dir/blobs`.
    Local {
        dir: Option<PathBuf>,
    },
    S3(S3Config),
}

#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// For S3-compatible services; AWS's own when `None`.
    pub endpoint: Option<String>,
    pub region: String,
    /// Taken from the environment (AWS_*) or instance metadata when not given.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Config {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
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
            blob_store: BlobStoreConfig::Local { dir: None },
            replay_enabled: true,
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

//! Where `confide` gets its settings: an optional TOML file, then `CONFIDE_*` environment variables, then
//! command-line flags, each overriding the one before.

use std::fmt::Display;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use confide_server::config::{BlobStoreConfig, S3Config};
use confide_server::{ServerConfig, SmtpConfig, SmtpSecurity};
use confide_store::{Backend, Role, Store};
use serde::Deserialize;

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
pub const DEFAULT_DATA_DIR: &str = "./confide-data";

/// A year: sessions are meant to end; a longer one is more likely a typo than a choice.
const MAX_SESSION_TTL_HOURS: u64 = 24 * 365;

/// Reads an environment variable; tests pass a map instead of the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The flags of every command that reads the configuration.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// TOML configuration file; CONFIDE_* environment variables override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database, master key and mail outbox [default: ./confide-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Every setting, each possibly unset: one layer of file, environment or flags.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Settings {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    public_url: Option<String>,
    mail_from: Option<String>,
    master_key_file: Option<PathBuf>,
    session_ttl_hours: Option<u64>,
    media_udp: Option<SocketAddr>,
    media_public: Option<SocketAddr>,
    replay_enabled: Option<bool>,
    #[serde(default)]
    smtp: SmtpSettings,
    #[serde(default)]
    s3: S3Settings,
}

/// Object storage for recordings' playback copies: S3 when a bucket is given, else the local disk.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct S3Settings {
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SmtpSettings {
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    /// `starttls`, `tls` or `none`; checked when the layers are combined, whichever layer it came from.
    security: Option<String>,
}

impl SmtpSettings {
    fn is_empty(&self) -> bool {
        self == &SmtpSettings::default()
    }
}

impl Settings {
    fn from_toml(text: &str) -> Result<Settings> {
        Ok(toml::from_str(text)?)
    }

    fn from_file(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Settings::from_toml(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// An empty variable counts as unset, so that `CONFIDE_LISTEN=` in a unit file does not break startup.
    fn from_env(env: Env<'_>) -> Result<Settings> {
        let text = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        Ok(Settings {
            listen: parse_var(env, "CONFIDE_LISTEN", "an address such as 127.0.0.1:8080")?,
            data_dir: text("CONFIDE_DATA_DIR").map(PathBuf::from),
            database_url: text("CONFIDE_DATABASE_URL"),
            public_url: text("CONFIDE_PUBLIC_URL"),
            mail_from: text("CONFIDE_MAIL_FROM"),
            master_key_file: text("CONFIDE_MASTER_KEY_FILE").map(PathBuf::from),
            session_ttl_hours: parse_var(env, "CONFIDE_SESSION_TTL_HOURS", "a whole number of hours")?,
            media_udp: parse_var(env, "CONFIDE_MEDIA_UDP", "an address such as 0.0.0.0:3478")?,
            media_public: parse_var(env, "CONFIDE_MEDIA_PUBLIC", "an address such as 203.0.113.7:3478")?,
            replay_enabled: parse_var(env, "CONFIDE_REPLAY_ENABLED", "true or false")?,
            s3: S3Settings {
                bucket: text("CONFIDE_S3_BUCKET"),
                endpoint: text("CONFIDE_S3_ENDPOINT"),
                region: text("CONFIDE_S3_REGION"),
                access_key_id: text("CONFIDE_S3_ACCESS_KEY_ID"),
                secret_access_key: text("CONFIDE_S3_SECRET_ACCESS_KEY"),
            },
            smtp: SmtpSettings {
                host: text("CONFIDE_SMTP_HOST"),
                port: parse_var(env, "CONFIDE_SMTP_PORT", "a port number")?,
                username: text("CONFIDE_SMTP_USERNAME"),
                password: text("CONFIDE_SMTP_PASSWORD"),
                security: text("CONFIDE_SMTP_SECURITY"),
            },
        })
    }

    /// This layer with every setting that `over` has replaced by `over`'s.
    fn overlay(self, over: Settings) -> Settings {
        Settings {
            listen: over.listen.or(self.listen),
            data_dir: over.data_dir.or(self.data_dir),
            database_url: over.database_url.or(self.database_url),
            public_url: over.public_url.or(self.public_url),
            mail_from: over.mail_from.or(self.mail_from),
            master_key_file: over.master_key_file.or(self.master_key_file),
            session_ttl_hours: over.session_ttl_hours.or(self.session_ttl_hours),
            media_udp: over.media_udp.or(self.media_udp),
            media_public: over.media_public.or(self.media_public),
            replay_enabled: over.replay_enabled.or(self.replay_enabled),
            s3: S3Settings {
                bucket: over.s3.bucket.or(self.s3.bucket),
                endpoint: over.s3.endpoint.or(self.s3.endpoint),
                region: over.s3.region.or(self.s3.region),
                access_key_id: over.s3.access_key_id.or(self.s3.access_key_id),
                secret_access_key: over.s3.secret_access_key.or(self.s3.secret_access_key),
            },
            smtp: SmtpSettings {
                host: over.smtp.host.or(self.smtp.host),
                port: over.smtp.port.or(self.smtp.port),
                username: over.smtp.username.or(self.smtp.username),
                password: over.smtp.password.or(self.smtp.password),
                security: over.smtp.security.or(self.smtp.security),
            },
        }
    }

    fn into_server_config(self) -> Result<ServerConfig> {
        let listen = self.listen.unwrap_or(DEFAULT_LISTEN);
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut config = ServerConfig::embedded(data_dir, listen);
        if let Some(url) = self.database_url {
            Backend::from_url(&url).context("database_url")?;
            config.database_url = Some(url);
        }
        if let Some(url) = self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("public_url must start with http:// or https://, got {url:?}");
            }
            config.public_url = url.trim_end_matches('/').to_owned();
        }
        if let Some(from) = self.mail_from {
            config.mail_from = from;
        }
        if let Some(hours) = self.session_ttl_hours {
            if !(1..=MAX_SESSION_TTL_HOURS).contains(&hours) {
                bail!("session_ttl_hours must be between 1 and {MAX_SESSION_TTL_HOURS}, got {hours}");
            }
            config.session_ttl = Duration::from_secs(hours * 3600);
        }
        config.master_key_file = self.master_key_file;
        if let Some(addr) = self.media_udp {
            config.media_udp = addr;
        }
        if let Some(addr) = self.media_public {
            // Browsers are told to send here; an address that names no host can't be sent to.
            if addr.ip().is_unspecified() || addr.port() == 0 {
                bail!("media_public must be an address browsers can reach, got {addr}");
            }
            config.media_public = Some(addr);
        }
        if config.media_udp.ip().is_unspecified() && config.media_public.is_none() {
            bail!(
                "media_udp {} listens on every address: set media_public to the one browsers reach",
                config.media_udp
            );
        }
        config.smtp = smtp_config(self.smtp)?;
        if let Some(enabled) = self.replay_enabled {
            config.replay_enabled = enabled;
        }
        if let Some(blobs) = s3_config(self.s3)? {
            config.blob_store = blobs;
        }
        Ok(config)
    }
}

fn parse_var<T>(env: Env<'_>, name: &str, expected: &str) -> Result<Option<T>>
where
    T: FromStr,
    T::Err: Display,
{
    env(name)
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|e| anyhow!("{name}: expected {expected}, got {v:?} ({e})"))
        })
        .transpose()
}

/// Mail goes to the outbox unless a host is given; the port follows from the security when not given.
fn smtp_config(s: SmtpSettings) -> Result<Option<SmtpConfig>> {
    let Some(host) = s.host.clone() else {
        if s.is_empty() {
            return Ok(None);
        }
        bail!("smtp: host is required when other smtp settings are given");
    };
    let security = match s.security.as_deref().map(str::trim) {
        None | Some("starttls") => SmtpSecurity::StartTls,
        Some("tls") => SmtpSecurity::Tls,
        Some("none") => SmtpSecurity::None,
        Some(other) => bail!("smtp security must be starttls, tls or none, got {other:?}"),
    };
    if s.username.is_some() != s.password.is_some() {
        bail!("smtp: username and password must be given together");
    }
    let port = s.port.unwrap_or(match security {
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::Tls => 465,
        SmtpSecurity::None => 25,
    });
    Ok(Some(SmtpConfig {
        host,
        port,
        username: s.username,
        password: s.password,
        security,
    }))
}

/// S3 when a bucket is given; keys go together, or both come from the environment (AWS_*).
fn s3_config(s: S3Settings) -> Result<Option<BlobStoreConfig>> {
    let Some(bucket) = s.bucket else {
        if s == S3Settings::default() {
            return Ok(None);
        }
        bail!("s3: bucket is required when other s3 settings are given");
    };
    if s.access_key_id.is_some() != s.secret_access_key.is_some() {
        bail!("s3: access_key_id and secret_access_key must be given together");
    }
    Ok(Some(BlobStoreConfig::S3(S3Config {
        bucket,
        endpoint: s.endpoint,
        region: s.region.unwrap_or_else(|| "us-east-1".to_owned()),
        access_key_id: s.access_key_id,
        secret_access_key: s.secret_access_key,
    })))
}

/// The server configuration from the file named by `args`, then the environment, then the flags.
pub fn resolve(args: &ConfigArgs, listen: Option<SocketAddr>, env: Env<'_>) -> Result<ServerConfig> {
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let flags = Settings {
        listen,
        data_dir: args.data_dir.clone(),
        ..Settings::default()
    };
    file.overlay(Settings::from_env(env)?)
        .overlay(flags)
        .into_server_config()
}

/// Opens the store the configuration names, creating the data directory a SQLite file lives in.
pub async fn open_store(config: &ServerConfig, role: Role) -> Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    Store::open(&config.database_url(), role)
        .await
        .context("cannot open the database")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn config_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn with_file(file: &tempfile::NamedTempFile) -> ConfigArgs {
        ConfigArgs {
            config: Some(file.path().to_owned()),
            data_dir: None,
        }
    }

    #[test]
    fn nothing_given_means_the_embedded_default() {
        let c = resolve(&ConfigArgs::default(), None, &no_env).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from("./confide-data"));
        assert_eq!(c.database_url, None);
        assert!(c.database_url().starts_with("sqlite://./confide-data/confide.db"));
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert!(c.smtp.is_none());
        assert!(c.master_key_file.is_none());
        assert_eq!(c.media_udp, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.media_public, None);
    }

    #[test]
    fn the_file_sets_every_key() {
        let file = config_file(
            r#"
            listen = "0.0.0.0:9000"
            data_dir = "/var/lib/confide"
            database_url = "postgres://confide@db/confide"
            public_url = "https://confide.example.org/"
            mail_from = "Confide <care@example.org>"
            master_key_file = "/etc/confide/master.key"
            session_ttl_hours = 8
            media_udp = "0.0.0.0:3478"
            media_public = "203.0.113.7:3478"

            [smtp]
            host = "smtp.example.org"
            username = "confide"
            password = "secret"
            security = "tls"
            "#,
        );
        let c = resolve(&with_file(&file), None, &no_env).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/confide"));
        assert_eq!(c.database_url.as_deref(), Some("postgres://confide@db/confide"));
        assert_eq!(c.public_url, "https://confide.example.org");
        assert_eq!(c.mail_from, "Confide <care@example.org>");
        assert_eq!(c.master_key_file, Some(PathBuf::from("/etc/confide/master.key")));
        assert_eq!(c.session_ttl, Duration::from_secs(8 * 3600));
        assert_eq!(c.media_udp, "0.0.0.0:3478".parse().unwrap());
        assert_eq!(c.media_public, Some("203.0.113.7:3478".parse().unwrap()));
        let smtp = c.smtp.unwrap();
        assert_eq!(smtp.host, "smtp.example.org");
        assert_eq!(smtp.port, 465, "implicit TLS defaults to port 465");
        assert_eq!(smtp.security, SmtpSecurity::Tls);
        assert_eq!(smtp.username.as_deref(), Some("confide"));
        assert_eq!(smtp.password.as_deref(), Some("secret"));
    }

    #[test]
    fn the_environment_overrides_the_file_and_flags_override_both() {
        let file = config_file(
            r#"
            listen = "127.0.0.1:9000"
            data_dir = "/from/file"
            session_ttl_hours = 8
            [smtp]
            host = "file.example.org"
            port = 2525
            "#,
        );
        let env = env_of(&[
            ("CONFIDE_DATA_DIR", "/from/env"),
            ("CONFIDE_SESSION_TTL_HOURS", "2"),
            ("CONFIDE_MEDIA_UDP", "0.0.0.0:40000"),
            ("CONFIDE_MEDIA_PUBLIC", "198.51.100.1:40000"),
            ("CONFIDE_SMTP_HOST", "env.example.org"),
            ("CONFIDE_SMTP_SECURITY", "none"),
        ]);
        let c = resolve(&with_file(&file), None, &env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap(), "kept from the file");
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.session_ttl, Duration::from_secs(2 * 3600));
        assert_eq!(c.media_udp, "0.0.0.0:40000".parse().unwrap());
        assert_eq!(c.media_public, Some("198.51.100.1:40000".parse().unwrap()));
        let smtp = c.smtp.unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port), ("env.example.org", 2525));
        assert_eq!(smtp.security, SmtpSecurity::None);

        let flags = ConfigArgs {
            data_dir: Some("/from/flag".into()),
            ..with_file(&file)
        };
        let c = resolve(&flags, Some("127.0.0.1:7000".parse().unwrap()), &env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
    }

    #[test]
    fn the_public_url_follows_the_listen_address_unless_set() {
        let env = env_of(&[("CONFIDE_LISTEN", "127.0.0.1:9999")]);
        let c = resolve(&ConfigArgs::default(), None, &env).unwrap();
        assert_eq!(c.public_url, "http://127.0.0.1:9999");

        let env = env_of(&[
            ("CONFIDE_LISTEN", "127.0.0.1:9999"),
            ("CONFIDE_PUBLIC_URL", "https://care.example.org"),
        ]);
        let c = resolve(&ConfigArgs::default(), None, &env).unwrap();
        assert_eq!(c.public_url, "https://care.example.org");
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let env = env_of(&[("CONFIDE_LISTEN", ""), ("CONFIDE_SMTP_HOST", "  ")]);
        let c = resolve(&ConfigArgs::default(), None, &env).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert!(c.smtp.is_none());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let file = config_file("listen = \"127.0.0.1:8080\"\nlisten_port = 9000\n");
        let err = format!("{:#}", resolve(&with_file(&file), None, &no_env).unwrap_err());
        assert!(err.contains("unknown field `listen_port`"), "{err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");

        let err = Settings::from_toml("media_port = 3478\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `media_port`"),
            "{err:#}"
        );

        let err = Settings::from_toml("[smtp]\nhostname = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `hostname`"), "{err:#}");
    }

    #[test]
    fn bad_values_name_where_they_came_from() {
        for (var, value) in [
            ("CONFIDE_LISTEN", "localhost"),
            ("CONFIDE_MEDIA_UDP", "3478"),
            ("CONFIDE_MEDIA_PUBLIC", "media.example.org:3478"),
            ("CONFIDE_SMTP_PORT", "smtp"),
            ("CONFIDE_SESSION_TTL_HOURS", "12h"),
        ] {
            let err = resolve(&ConfigArgs::default(), None, &env_of(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
        let cases: [(&[(&str, &str)], &str); 10] = [
            (&[("CONFIDE_SESSION_TTL_HOURS", "0")], "session_ttl_hours"),
            (&[("CONFIDE_MEDIA_UDP", "0.0.0.0:3478")], "set media_public"),
            (&[("CONFIDE_MEDIA_PUBLIC", "0.0.0.0:3478")], "media_public"),
            (&[("CONFIDE_SMTP_SECURITY", "ssl")], "smtp: host is required"),
            (
                &[("CONFIDE_SMTP_HOST", "h"), ("CONFIDE_SMTP_SECURITY", "ssl")],
                "starttls, tls or none",
            ),
            (
                &[("CONFIDE_SMTP_HOST", "h"), ("CONFIDE_SMTP_USERNAME", "u")],
                "username and password",
            ),
            (&[("CONFIDE_DATABASE_URL", "mysql://db")], "database_url"),
            (&[("CONFIDE_S3_REGION", "eu-west-2")], "s3: bucket is required"),
            (
                &[("CONFIDE_S3_BUCKET", "b"), ("CONFIDE_S3_ACCESS_KEY_ID", "k")],
                "access_key_id and secret_access_key",
            ),
            (&[("CONFIDE_REPLAY_ENABLED", "maybe")], "CONFIDE_REPLAY_ENABLED"),
        ];
        for (vars, expected) in cases {
            let err = resolve(&ConfigArgs::default(), None, &env_of(vars)).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let args = ConfigArgs {
            config: Some("/nonexistent/confide.toml".into()),
            data_dir: None,
        };
        let err = resolve(&args, None, &no_env).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/confide.toml"), "{err}");
    }

    #[test]
    fn recordings_go_to_s3_when_a_bucket_is_given_and_replay_can_be_turned_off() {
        let c = resolve(&ConfigArgs::default(), None, &no_env).unwrap();
        assert_eq!(c.blob_store, BlobStoreConfig::Local { dir: None });
        assert!(c.replay_enabled);
        let file = config_file(
            r#"
            replay_enabled = false

            [s3]
            bucket = "recordings"
            endpoint = "http://127.0.0.1:9000"
            access_key_id = "id"
            secret_access_key = "secret"
            "#,
        );
        let c = resolve(
            &with_file(&file),
            None,
            &env_of(&[("CONFIDE_S3_REGION", "eu-west-2")]),
        )
        .unwrap();
        assert!(!c.replay_enabled);
        let BlobStoreConfig::S3(s3) = c.blob_store else {
            panic!("S3 expected");
        };
        assert_eq!(s3.bucket, "recordings");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region, "eu-west-2");
        assert_eq!(s3.secret_access_key.as_deref(), Some("secret"));
        assert!(
            !format!("{s3:?}").contains("secret\""),
            "the secret is never printed"
        );
    }
}

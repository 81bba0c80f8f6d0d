//! Outgoing email: SMTP when configured, otherwise `.eml` files in the data directory's outbox, where a
//! demo user can read them.

use std::path::{Path, PathBuf};

use lettre::message::header::{ContentType, ContentTypeErr};
use lettre::message::{Mailbox, MessageBuilder, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::AsyncWriteExt;

use crate::config::{ServerConfig, SmtpSecurity};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address: {0}")]
    Address(#[from] lettre::address::AddressError),
    #[error("could not build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("outbox: {0}")]
    File(#[from] lettre::transport::file::Error),
    #[error("outbox directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("attachment content type: {0}")]
    ContentType(#[from] ContentTypeErr),
    #[error("the idempotency key is empty")]
    EmptyKey,
}

/// A file sent along with the text body, such as a calendar invitation.
pub struct Attachment {
    pub filename: String,
    /// For example `text/calendar; method=REQUEST; charset=UTF-8`.
    pub content_type: String,
    pub body: String,
}

#[derive(Clone)]
enum Transport {
    Outbox {
        files: AsyncFileTransport<Tokio1Executor>,
        dir: PathBuf,
    },
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

impl Mailer {
    pub fn from_config(config: &ServerConfig) -> Result<Mailer, MailError> {
        let from: Mailbox = config.mail_from.parse()?;
        let transport = match &config.smtp {
            None => {
                let dir = config.outbox_dir();
                std::fs::create_dir_all(&dir)?;
                Transport::Outbox {
                    files: AsyncFileTransport::new(&dir),
                    dir,
                }
            }
            Some(smtp) => {
                let builder = match smtp.security {
                    SmtpSecurity::StartTls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
                    }
                    SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                    SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
                };
                let builder = builder.port(smtp.port);
                let builder = match (&smtp.username, &smtp.password) {
                    (Some(u), Some(p)) => builder.credentials(Credentials::new(u.clone(), p.clone())),
                    _ => builder,
                };
                Transport::Smtp(builder.build())
            }
        };
        Ok(Mailer { transport, from })
    }

    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let message = self
            .builder(to, subject)?
            .header(ContentType::TEXT_PLAIN)
            .body(body)?;
        match &self.transport {
            Transport::Outbox { files, .. } => {
                files.send(message).await?;
            }
            Transport::Smtp(t) => {
                t.send(message).await?;
            }
        }
        Ok(())
    }

    /// Sends a message identified by `key` (for example `appointment-<uuid>-reminder-24h`): its
    /// Message-ID is `<key@domain of the from address>`, so a retry is recognisably the same message, and
    /// the outbox holds it as `<key>.eml`, replaced rather than duplicated when the key is sent again.
    /// With an attachment the message is multipart/mixed: the text body, then the attachment.
    pub async fn send_with(
        &self,
        key: &str,
        to: &str,
        subject: &str,
        body: String,
        attachment: Option<Attachment>,
    ) -> Result<(), MailError> {
        let key = sanitize_key(key)?;
        let builder = self
            .builder(to, subject)?
            .message_id(Some(format!("<{key}@{}>", self.from.email.domain())));
        let message = match attachment {
            None => builder.header(ContentType::TEXT_PLAIN).body(body)?,
            Some(a) => {
                let content_type = ContentType::parse(&a.content_type)?;
                let part = lettre::message::Attachment::new(a.filename).body(a.body, content_type);
                builder.multipart(
                    MultiPart::mixed()
                        .singlepart(SinglePart::plain(body))
                        .singlepart(part),
                )?
            }
        };
        match &self.transport {
            Transport::Outbox { dir, .. } => {
                write_replacing(dir, &format!("{key}.eml"), &message.formatted()).await?;
            }
            Transport::Smtp(t) => {
                t.send(message).await?;
            }
        }
        Ok(())
    }

    fn builder(&self, to: &str, subject: &str) -> Result<MessageBuilder, MailError> {
        Ok(Message::builder()
            .from(self.from.clone())
            .to(to.parse()?)
            .subject(subject))
    }
}

/// Makes `key` both a file name and the left part of a Message-ID (an RFC 5322 dot-atom): characters
/// outside `[A-Za-z0-9._-]` become `_`, and so does a dot that is first, last or follows a dot, which
/// also keeps the file from being hidden.
fn sanitize_key(key: &str) -> Result<String, MailError> {
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        let keep = match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => true,
            '.' => !out.is_empty() && !out.ends_with('.') && chars.peek().is_some(),
            _ => false,
        };
        out.push(if keep { c } else { '_' });
    }
    if out.is_empty() {
        return Err(MailError::EmptyKey);
    }
    Ok(out)
}

/// Writes `dir/name` whole or not at all: a reader never sees half a file, and writing the same name again
/// replaces it.
async fn write_replacing(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    // Hidden and unique, so a reader of `*.eml` skips it and concurrent sends of one key do not collide.
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(contents).await?;
        file.sync_all().await?;
        tokio::fs::rename(&tmp, dir.join(name)).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{Invite, Method, render};

    #[test]
    fn keys_become_safe_names() {
        assert_eq!(
            sanitize_key("appointment-1f2e.reminder_24h").unwrap(),
            "appointment-1f2e.reminder_24h"
        );
        assert_eq!(sanitize_key("../etc/passwd").unwrap(), "_._etc_passwd");
        assert_eq!(sanitize_key("a..b.").unwrap(), "a._b_");
        assert_eq!(sanitize_key("é <x>").unwrap(), "___x_");
        assert!(matches!(sanitize_key(""), Err(MailError::EmptyKey)));
    }

    #[tokio::test]
    async fn send_with_writes_one_eml_per_key_with_the_invite() {
        let data = tempfile::tempdir().unwrap();
        let config = ServerConfig::embedded(data.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        let mailer = Mailer::from_config(&config).unwrap();
        let ts = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let ics = render(&Invite {
            uid: "0190c7f4-5b1e-7d2a-9c3e-2f4a6b8c0d1e@confide",
            sequence: 0,
            method: Method::Request,
            start: ts("2026-03-02T09:30:00Z"),
            end: ts("2026-03-02T09:45:00Z"),
            stamp: ts("2026-02-20T14:03:07Z"),
            summary: "Video appointment",
            description: "With Dr Okafor",
            url: None,
            organizer: ("Riverside Surgery", "no-reply@confide.localhost"),
            attendee: ("Sam Patient", "sam@example.org"),
        });
        let key = "appointment-0190c7f4-5b1e-7d2a-9c3e-2f4a6b8c0d1e-invite";
        for _ in 0..2 {
            let attachment = Attachment {
                filename: "invite.ics".to_owned(),
                content_type: "text/calendar; method=REQUEST; charset=UTF-8".to_owned(),
                body: ics.clone(),
            };
            mailer
                .send_with(
                    key,
                    "sam@example.org",
                    "Your appointment on 2 March",
                    "See you on 2 March at 09:30.".to_owned(),
                    Some(attachment),
                )
                .await
                .unwrap();
        }

        let files: Vec<_> = std::fs::read_dir(config.outbox_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, [format!("{key}.eml")]);
        let eml = std::fs::read_to_string(config.outbox_dir().join(&files[0])).unwrap();
        assert!(
            eml.contains(&format!("Message-ID: <{key}@confide.localhost>\r\n")),
            "{eml}"
        );
        assert!(eml.contains("Subject: Your appointment on 2 March\r\n"), "{eml}");
        assert!(eml.contains("Content-Type: multipart/mixed;"), "{eml}");
        assert!(eml.contains("See you on 2 March at 09:30."), "{eml}");
        // The mime crate lower-cases the charset value.
        assert!(
            eml.contains("Content-Type: text/calendar; method=REQUEST; charset=utf-8\r\n"),
            "{eml}"
        );
        assert!(
            eml.contains("Content-Disposition: attachment; filename=\"invite.ics\""),
            "{eml}"
        );
        assert!(eml.contains("METHOD:REQUEST\r\n"), "{eml}");
        assert!(
            eml.contains("UID:0190c7f4-5b1e-7d2a-9c3e-2f4a6b8c0d1e@confide\r\n"),
            "{eml}"
        );
    }

    #[tokio::test]
    async fn send_with_without_attachment_is_plain_text() {
        let data = tempfile::tempdir().unwrap();
        let config = ServerConfig::embedded(data.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        let mailer = Mailer::from_config(&config).unwrap();
        mailer
            .send_with(
                "reset/1",
                "sam@example.org",
                "Hello",
                "Plain body".to_owned(),
                None,
            )
            .await
            .unwrap();
        let eml = std::fs::read_to_string(config.outbox_dir().join("reset_1.eml")).unwrap();
        assert!(
            eml.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{eml}"
        );
        assert!(!eml.contains("multipart"), "{eml}");
        assert!(eml.contains("Plain body"), "{eml}");
    }
}

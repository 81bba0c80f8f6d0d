//! Outgoing email: SMTP when configured, otherwise `.eml` files in the data directory's outbox, where a
//! demo user can read them.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

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
}

#[derive(Clone)]
enum Transport {
    Outbox(AsyncFileTransport<Tokio1Executor>),
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
                Transport::Outbox(AsyncFileTransport::new(dir))
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
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.parse()?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)?;
        match &self.transport {
            Transport::Outbox(t) => {
                t.send(message).await?;
            }
            Transport::Smtp(t) => {
                t.send(message).await?;
            }
        }
        Ok(())
    }
}

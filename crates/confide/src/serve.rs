//! Starting the server and stopping it on Ctrl-C or SIGTERM.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use confide_server::{Confide, ServerConfig, SystemClock};
use tokio::net::TcpListener;

/// Binds the listen address, then opens Confide (data directory, migrations, mail).
pub async fn start(mut config: ServerConfig) -> Result<(Confide, TcpListener)> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr().context("cannot read the bound address")?;
    // With port 0 the system picks the port; a public URL derived from the listen address follows it.
    if config.public_url == format!("http://{}", config.listen) {
        config.public_url = format!("http://{bound}");
    }
    config.listen = bound;
    let confide = Confide::open(config, Arc::new(SystemClock))
        .await
        .context("cannot start Confide")?;
    Ok((confide, listener))
}

/// Serves until Ctrl-C or SIGTERM, then finishes open requests and flushes the audit log.
pub async fn run(confide: Confide, listener: TcpListener) -> Result<()> {
    let config = &confide.state().config;
    let media: Vec<String> = confide
        .state()
        .calls
        .sfu()
        .public_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let media = media.join(", ");
    tracing::info!(listen = %config.listen, url = %config.public_url, %media, "Confide is serving");
    confide
        .serve(listener, shutdown_signal())
        .await
        .context("the server failed")?;
    tracing::info!("Confide stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};

    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

//! Confide's HTTP server: the JSON API, web pages and operational endpoints, on axum.

pub mod api;
pub mod auth;
pub mod calendar;
pub mod calls;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod gate;
pub mod mail;
mod middleware;
mod pages;
pub mod recordings;
mod reminders;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use confide_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ServerConfig, SmtpConfig, SmtpSecurity};
use error::ApiError;
use mail::Mailer;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What every handler can reach. Extractors and middleware clone it several times per request, so it is
/// one shared pointer rather than a dozen.
#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

pub struct AppServices {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    pub clock: Arc<dyn Clock>,
    pub mailer: Mailer,
    pub throttle: Arc<auth::Throttle>,
    /// Appointment status changes, for live waiting-room pages.
    pub status_changes: tokio::sync::broadcast::Sender<api::appointments::StatusChange>,
    /// The video calls: the SFU and the recorder.
    pub calls: calls::Calls,
    /// Chat messages as they are kept, for the consultations' live chat streams.
    pub chat: tokio::sync::broadcast::Sender<api::consultation_records::ChatPosted>,
    /// Recordings after the call: playback copies, tickets, retention.
    pub recordings: recordings::Recordings,
    /// The symptom checker's knowledge base and the key that seals anonymous conversations.
    pub triage: Arc<api::triage::Triage>,
    /// Wakes the job runner when a request has queued an email.
    jobs_wake: Arc<tokio::sync::Notify>,
    metrics: PrometheusHandle,
}

impl AppState {
    /// Asks the job runner to look for due jobs now rather than at its next poll.
    pub fn kick_jobs(&self) {
        self.jobs_wake.notify_one();
    }

    /// Sends every email that is due by the app's clock, now: for tests and the operator.
    pub async fn run_due_jobs(&self) -> Result<usize, confide_store::StoreError> {
        reminders::run_due(self).await
    }

    /// Makes every playback copy that is due and erases every recording past its practice's retention,
    /// by the app's clock, now: for tests and the operator. Returns (copies made, recordings erased).
    pub async fn run_recording_jobs(&self) -> Result<(usize, usize), recordings::RecordingError> {
        let now_ms = self.clock.now_ms();
        let made = self.recordings.run_due(&self.store, now_ms).await?;
        let erased = self.recordings.expire_due(&self.store, now_ms).await?;
        Ok((made, erased))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("master key {path}: {message}")]
    MasterKey { path: String, message: String },
    #[error(transparent)]
    Store(#[from] confide_store::StoreError),
    #[error("call media: {0}")]
    Media(#[from] confide_media::sfu::driver::DriverError),
    #[error("recorder: {0}")]
    Recorder(std::io::Error),
    #[error("recording storage: {0}")]
    Blobs(String),
    #[error("symptom checker: {0}")]
    Triage(String),
    #[error("mail: {0}")]
    Mail(#[from] mail::MailError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The process-wide metrics recorder: `metrics` has one global recorder, shared by every app in a process.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            // Histogram samples pile up until upkeep folds them into buckets; without a scraper nothing
            // else would, and memory would grow with every request.
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("confide-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "metrics upkeep did not start; histograms fold only when scraped");
            }
            handle
        })
        .clone()
}

/// Makes sure the master key exists (32 random bytes, readable by the owner only) and is well formed.
fn ensure_master_key(path: &Path) -> Result<(), StartError> {
    let err = |message: String| StartError::MasterKey {
        path: path.display().to_string(),
        message,
    };
    if !path.exists() {
        use rand::RngCore;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        file.write_all(&key).map_err(|e| err(e.to_string()))?;
        file.sync_all().map_err(|e| err(e.to_string()))?;
    }
    let len = std::fs::metadata(path).map_err(|e| err(e.to_string()))?.len();
    if len != 32 {
        return Err(err(format!("must hold exactly 32 bytes, holds {len}")));
    }
    Ok(())
}

/// A configured Confide, ready to serve.
pub struct Confide {
    state: AppState,
}

impl Confide {
    /// Creates the data directory, applies migrations and opens the mail transport.
    pub async fn open(config: ServerConfig, clock: Arc<dyn Clock>) -> Result<Confide, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let master_key_path = config.master_key_path();
        ensure_master_key(&master_key_path)?;
        let master = confide_media::MasterKey::load(&master_key_path).map_err(|e| StartError::MasterKey {
            path: master_key_path.display().to_string(),
            message: e.to_string(),
        })?;
        let playback_master =
            confide_media::MasterKey::load(&master_key_path).map_err(|e| StartError::MasterKey {
                path: master_key_path.display().to_string(),
                message: e.to_string(),
            })?;
        let objects =
            recordings::object_store(&config.blob_store, &config.data_dir).map_err(StartError::Blobs)?;
        let triage = api::triage::Triage::open(&master_key_path).map_err(StartError::Triage)?;
        let store = Store::open(&config.database_url(), confide_store::Role::App).await?;
        let mailer = Mailer::from_config(&config)?;
        let (sfu, frames) = confide_media::sfu::driver::start(confide_media::sfu::driver::DriverConfig {
            bind: config.media_udp,
            public_addr: config.media_public,
        })
        .await?;
        let recorder = confide_media::sfu::recorder::Recorder::start(config.recordings_dir(), frames)
            .map_err(StartError::Recorder)?;
        let segments_dir = config.recordings_dir();
        let state = AppState(Arc::new(AppServices {
            store,
            config: Arc::new(config),
            clock,
            mailer,
            throttle: Arc::new(auth::Throttle::new()),
            status_changes: tokio::sync::broadcast::channel(256).0,
            calls: calls::Calls::new(sfu, recorder, master),
            chat: tokio::sync::broadcast::channel(256).0,
            recordings: recordings::Recordings::new(objects, playback_master, segments_dir),
            triage: Arc::new(triage),
            jobs_wake: Arc::new(tokio::sync::Notify::new()),
            metrics: metrics_handle(),
        }));
        Ok(Confide { state })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn router(&self) -> Router {
        let (api, openapi) = api::routes().split_for_parts();
        let openapi_json = Arc::new(openapi.to_pretty_json().unwrap_or_default());
        let ops = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(render_metrics))
            .route(
                "/api/v1/openapi.json",
                get(move || {
                    let body = openapi_json.clone();
                    async move {
                        (
                            [(header::CONTENT_TYPE, "application/json")],
                            body.as_str().to_owned(),
                        )
                    }
                }),
            );
        Router::new()
            .merge(api)
            .merge(ops)
            .merge(pages::routes(&self.state))
            .fallback(pages::fallback)
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            // One stack, outermost first, added as one layer: axum boxes each layer it is given on every
            // route and clones that box per request, so a dozen separate layers cost a dozen allocations.
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(
                        HeaderName::from_static(REQUEST_ID_HEADER),
                        MakeRequestUuid,
                    ))
                    .layer(TraceLayer::new_for_http())
                    .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
                        REQUEST_ID_HEADER,
                    )))
                    .layer(CatchPanicLayer::custom(|_| {
                        tracing::error!("a handler panicked");
                        ApiError::Unavailable("internal error".into()).into_response()
                    }))
                    .layer(security_header(
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
                    ))
                    // Not `no-referrer`: with it, browsers send `Origin: null` on same-origin form posts, which
                    // the cross-site check must refuse. `same-origin` still tells other sites nothing.
                    .layer(security_header(header::REFERRER_POLICY, "same-origin"))
                    .layer(security_header(header::X_FRAME_OPTIONS, "DENY"))
                    .layer(security_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .layer(DefaultBodyLimit::max(BODY_LIMIT))
                    .layer(axum::middleware::from_fn_with_state(
                        self.state.clone(),
                        middleware::screen,
                    )),
            )
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then waits for open requests, finishes the recordings' segments
    /// and flushes the audit log.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
        let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
        let jobs = tokio::spawn(reminders::run(self.state.clone(), jobs_stopped.clone()));
        let recording_jobs = tokio::spawn(recordings::run(self.state.clone(), jobs_stopped));
        let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        let _ = stop_jobs.send(true);
        let _ = jobs.await;
        let _ = recording_jobs.await;
        self.state.calls.shutdown().await;
        self.state.store.close().await;
        result
    }
}

fn security_header(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.store.ping().await?;
    Ok("ok")
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    text.push_str(&sfu_metrics(state.calls.sfu()));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
}

/// Bucket bounds of `confide_sfu_forward_delay_seconds`, in microseconds: each one is a bucket edge of
/// the SFU's own histogram, so every count is exact.
const SFU_DELAY_BOUNDS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
];

/// The SFU's counters and its forwarding-delay histogram in Prometheus' text format. The workers count
/// on their own threads; this reads their totals when scraped.
fn sfu_metrics(sfu: &confide_media::sfu::driver::SfuHandle) -> String {
    use std::fmt::Write as _;
    let stats = sfu.stats();
    let mut out = String::new();
    let counters = [
        (
            "confide_sfu_datagrams_received_total",
            "Datagrams the SFU's workers received.",
            stats.datagrams_received,
        ),
        (
            "confide_sfu_datagrams_sent_total",
            "Datagrams the SFU's workers sent.",
            stats.datagrams_sent,
        ),
        (
            "confide_sfu_received_bytes_total",
            "Bytes the SFU's workers received.",
            stats.bytes_received,
        ),
        (
            "confide_sfu_sent_bytes_total",
            "Bytes the SFU's workers sent.",
            stats.bytes_sent,
        ),
        (
            "confide_sfu_recorder_dropped_frames_total",
            "Frames left out of recordings because the recorder fell behind; the calls went on.",
            sfu.recorder_dropped(),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let delays = sfu.forward_delays();
    let name = "confide_sfu_forward_delay_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time a datagram spent in the SFU: from reaching a worker's socket (the kernel's \
         timestamp) to the end of the send of what it made.\n# TYPE {name} histogram"
    );
    for bound in SFU_DELAY_BOUNDS_US {
        let within = delays.count_within(std::time::Duration::from_micros(bound));
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {within}", bound as f64 / 1e6);
    }
    let count = delays.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", delays.sum().as_secs_f64());
    let _ = writeln!(out, "{name}_count {count}");
    out
}

/// A server running in the background: for tests and benchmarks.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes open requests, and flushes the audit log.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Opens Confide with `config` and serves it on `config.listen` in the background.
pub async fn spawn(config: ServerConfig, clock: Arc<dyn Clock>) -> Result<Running, StartError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let confide = Confide::open(config, clock).await?;
    let state = confide.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(confide.serve(listener, async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        state,
        stop,
        task,
    })
}

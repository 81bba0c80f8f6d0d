//! Headless Chromium driven over the DevTools protocol (chromiumoxide): one browser process and profile per
//! [`Chromium`], killed when it is dropped, even when a test panics.
//!
//! The browser is Debian's `chromium` (`/usr/bin/chromium`, or `CONFIDE_CHROMIUM`); nothing is downloaded.
//! Every step has a timeout, and waiting is done by polling a condition in the page, never by sleeping a
//! fixed time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::browser::Browser;
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network;
use chromiumoxide::cdp::browser_protocol::page::AddScriptToEvaluateOnNewDocumentParams;
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EvaluateParams, EventConsoleApiCalled, EventExceptionThrown, RemoteObject,
};
use chromiumoxide::handler::HandlerConfig;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

/// The flags every browser gets: headless, and nothing that reaches outside this machine.
const BASE_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// For video calls: a fake camera and microphone granted without a prompt, ICE over loopback with real
/// addresses (no mDNS names), and media that plays without a click.
const MEDIA_FLAGS: &[&str] = &[
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
];

/// How long the browser may take to start and open its DevTools port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one DevTools command (navigate, click, evaluate...) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Tab::wait_for`] waits for a condition by default.
pub const WAIT: Duration = Duration::from_secs(10);

/// Reported in the page's console by every document, so that a Content-Security-Policy violation counts as
/// a problem however Chromium itself reports it. Added through DevTools, this script is not subject to CSP.
const REPORT_CSP_VIOLATIONS: &str = r#"document.addEventListener("securitypolicyviolation", function (e) {
  console.error("Content-Security-Policy violation: " + e.violatedDirective + " blocked " + e.blockedURI
    + " (" + e.sourceFile + ":" + e.lineNumber + ")");
});"#;

/// The Chromium binary, or `None` after saying why the test is skipped. Under CI (`CI` set) a missing
/// browser fails the test instead: `.ci/run` installs it, so its absence there is a broken setup.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("CONFIDE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "chromium not installed ({} is missing; `apt-get install chromium`, or set CONFIDE_CHROMIUM)",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
    // Straight to stderr, past the test harness's capture, so that the skip shows in a normal run.
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
    None
}

/// The browser process, killed (and its profile removed) when dropped.
struct Process {
    child: Child,
    /// Holds the profile and the browser's log; removed after the process is gone.
    dir: tempfile::TempDir,
}

impl Process {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // The browser's helper processes end just after it, and may still write to the profile for a
        // moment: retry, so that no profile is left behind.
        for _ in 0..50 {
            if std::fs::remove_dir_all(self.dir.path()).is_ok() || !self.dir.path().exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One headless Chromium with a fresh profile.
pub struct Chromium {
    browser: Browser,
    handler: JoinHandle<()>,
    process: Process,
}

impl Chromium {
    /// Starts `executable` with the base and media flags and connects to it.
    pub async fn launch(executable: &Path) -> Chromium {
        let dir = tempfile::Builder::new()
            .prefix("confide-chromium-")
            .tempdir()
            .expect("a temporary directory for the browser profile");
        let profile = dir.path().join("profile");
        let log = std::fs::File::create(dir.path().join("chromium.log")).expect("the browser's log file");
        let child = Command::new(executable)
            .args(BASE_FLAGS)
            .args(MEDIA_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-address=127.0.0.1")
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the browser's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", executable.display()));
        let mut process = Process { child, dir };

        // With port 0 the browser picks a free port and writes it, and the browser's WebSocket path, here.
        let started = Instant::now();
        let active_port = profile.join("DevToolsActivePort");
        let ws = loop {
            if let Ok(text) = std::fs::read_to_string(&active_port) {
                let mut lines = text.lines();
                // Read whole lines only: the port, then `/devtools/browser/` and a 36-character id.
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
                    && path
                        .strip_prefix("/devtools/browser/")
                        .is_some_and(|id| id.trim_end().len() == 36)
                {
                    let path = path.trim_end();
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "chromium exited ({status}) before opening its DevTools port; its log:\n{}",
                    process.log_tail()
                );
            }
            assert!(
                started.elapsed() < LAUNCH_TIMEOUT,
                "chromium did not open its DevTools port within {LAUNCH_TIMEOUT:?}; its log:\n{}",
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };

        let config = HandlerConfig {
            request_timeout: STEP_TIMEOUT,
            ..HandlerConfig::default()
        };
        let (browser, mut handler) = step("connecting to chromium", Browser::connect_with_config(ws, config))
            .await
            .unwrap_or_else(|e| panic!("connecting to chromium: {e}; its log:\n{}", process.log_tail()));
        // The handler drives the connection. It yields an error for a message it cannot read (a newer
        // browser's event, say), which is no reason to stop.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Chromium {
            browser,
            handler,
            process,
        }
    }

    /// A new tab on `about:blank` that records the page's problems: uncaught exceptions, console errors,
    /// error log entries (a resource that failed to load, a blocked request), CSP violations.
    pub async fn tab(&self, name: &str) -> Tab {
        let page = step(
            &format!("{name}: opening a tab"),
            self.browser.new_page("about:blank"),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: opening a tab: {e}"));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let mut watchers = Vec::new();

        let mut exceptions = listen::<EventExceptionThrown>(name, &page).await;
        let sink = problems.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(event) = exceptions.next().await {
                let details = &event.exception_details;
                let what = details
                    .exception
                    .as_ref()
                    .and_then(|e| e.description.clone())
                    .unwrap_or_default();
                let at = details.url.clone().unwrap_or_default();
                record(
                    &sink,
                    format!("uncaught exception: {} {what} ({at})", details.text),
                );
            }
        }));

        let mut console = listen::<EventConsoleApiCalled>(name, &page).await;
        let sink = problems.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(event) = console.next().await {
                if matches!(
                    event.r#type,
                    ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
                ) {
                    let text: Vec<String> = event.args.iter().map(describe).collect();
                    record(&sink, format!("console.error: {}", text.join(" ")));
                }
            }
        }));

        let mut log = listen::<EventEntryAdded>(name, &page).await;
        let sink = problems.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(event) = log.next().await {
                let entry = &event.entry;
                let url = entry.url.clone().unwrap_or_default();
                // Browsers ask for a favicon on their own; Confide has none.
                if entry.level == LogEntryLevel::Error && !url.ends_with("/favicon.ico") {
                    record(&sink, format!("log ({:?}): {} ({url})", entry.source, entry.text));
                }
            }
        }));

        step(
            &format!("{name}: adding the CSP violation reporter"),
            page.execute(AddScriptToEvaluateOnNewDocumentParams::new(REPORT_CSP_VIOLATIONS)),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: adding the CSP violation reporter: {e}"));

        Tab {
            page,
            name: name.to_owned(),
            problems,
            watchers,
        }
    }

    /// Closes the browser politely (so that it ends its child processes itself), then makes sure it is gone.
    pub async fn close(self) {
        let Chromium {
            mut browser,
            handler,
            mut process,
        } = self;
        let _ = tokio::time::timeout(STEP_TIMEOUT, browser.close()).await;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if !matches!(process.child.try_wait(), Ok(None)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handler.abort();
        drop(process); // kills it if it is still there
    }
}

async fn listen<T: chromiumoxide::cdp::IntoEventKind>(
    name: &str,
    page: &Page,
) -> chromiumoxide::listeners::EventStream<T> {
    step(
        &format!("{name}: listening to events"),
        page.event_listener::<T>(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: listening to events: {e}"))
}

fn record(problems: &Mutex<Vec<String>>, problem: String) {
    problems.lock().unwrap_or_else(|e| e.into_inner()).push(problem);
}

fn describe(object: &RemoteObject) -> String {
    match (&object.value, &object.description) {
        (Some(Value::String(s)), _) => s.clone(),
        (Some(v), _) => v.to_string(),
        (None, Some(d)) => d.clone(),
        (None, None) => format!("{:?}", object.r#type),
    }
}

/// Runs one DevTools step, or panics naming it when it takes longer than [`STEP_TIMEOUT`].
async fn step<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer from chromium within {STEP_TIMEOUT:?}"),
    }
}

/// A page in a [`Chromium`], named in failure messages.
pub struct Tab {
    page: Page,
    name: String,
    problems: Arc<Mutex<Vec<String>>>,
    watchers: Vec<JoinHandle<()>>,
}

impl Drop for Tab {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

impl Tab {
    /// Loads `url` and waits until the document has loaded.
    pub async fn goto(&self, url: &str) {
        step(&format!("{}: loading {url}", self.name), self.page.goto(url))
            .await
            .unwrap_or_else(|e| panic!("{}: loading {url}: {e}", self.name));
        self.wait_for(
            &format!("{url} to load"),
            &format!(
                "document.readyState === 'complete' && location.href === {}",
                js_string(url)
            ),
        )
        .await;
    }

    /// Clicks the element that `selector` finds, as a mouse would (scrolled into view, pressed, released).
    pub async fn click(&self, selector: &str) {
        let what = format!("{}: clicking {selector}", self.name);
        step(&what, async {
            self.page.find_element(selector).await?.click().await?;
            Ok::<_, chromiumoxide::error::CdpError>(())
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    /// Clicks the field that `selector` finds and types `text` into it, key by key.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let what = format!("{}: typing into {selector}", self.name);
        step(&what, async {
            self.page
                .find_element(selector)
                .await?
                .click()
                .await?
                .type_str(text)
                .await?;
            Ok::<_, chromiumoxide::error::CdpError>(())
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    /// Takes the page off the network, or puts it back on: its requests fail as with no network at all.
    /// WebRTC's own traffic is not affected.
    pub async fn set_offline(&self, offline: bool) {
        let what = format!(
            "{}: going {}",
            self.name,
            if offline { "offline" } else { "online" }
        );
        // A rule with an empty pattern matches every request; without throttling, it only says offline
        // or not.
        let every_request = network::NetworkConditions::new("", 0, -1, -1);
        let params = network::EmulateNetworkConditionsByRuleParams::new(offline, vec![every_request]);
        step(&what, self.page.execute(params))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    /// The value of a JavaScript expression in the page (awaited if it is a promise), as JSON.
    pub async fn eval(&self, expression: &str) -> Result<Value, String> {
        let params = EvaluateParams::builder()
            .expression(expression)
            .return_by_value(true)
            .await_promise(true)
            .build()
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(STEP_TIMEOUT, self.page.execute(params))
            .await
            .map_err(|_| format!("no answer within {STEP_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        if let Some(exception) = &answer.result.exception_details {
            let what = exception
                .exception
                .as_ref()
                .and_then(|e| e.description.clone())
                .unwrap_or_else(|| exception.text.clone());
            return Err(format!("exception: {what}"));
        }
        Ok(answer.result.result.value.clone().unwrap_or(Value::Null))
    }

    /// The value of `expression`, which must evaluate without error.
    pub async fn value(&self, expression: &str) -> Value {
        self.eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{}: evaluating `{expression}`: {e}", self.name))
    }

    /// The text content of the element `selector` finds (`None` when there is none).
    pub async fn text(&self, selector: &str) -> Option<String> {
        let expression = format!(
            "(function () {{ var e = document.querySelector({}); return e ? e.textContent : null; }})()",
            js_string(selector)
        );
        match self.value(&expression).await {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Waits up to [`WAIT`] until `condition`, a JavaScript expression, is `true`. Evaluation errors (the
    /// page is navigating, say) count as not yet.
    pub async fn wait_for(&self, what: &str, condition: &str) {
        self.wait_for_within(WAIT, what, condition).await;
    }

    pub async fn wait_for_within(&self, limit: Duration, what: &str, condition: &str) {
        let started = Instant::now();
        loop {
            let last = self.eval(condition).await;
            if last == Ok(Value::Bool(true)) {
                return;
            }
            if started.elapsed() > limit {
                let at = self
                    .eval("location.href")
                    .await
                    .map_or_else(|e| e, |v| v.to_string());
                let shows = self
                    .eval("document.body ? document.body.innerText.slice(0, 600) : ''")
                    .await
                    .map_or_else(|e| e, |v| v.to_string());
                panic!(
                    "{}: waited {limit:?} for {what}, in vain: `{condition}` was {last:?}; the page is {at}, \
                     showing {shows}; problems seen: {:?}",
                    self.name,
                    self.problems()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The problems (exceptions, console errors, error log entries, CSP violations) seen so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `s` as a JavaScript string literal.
pub fn js_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

//! What every SplitNets daemon needs around its real work: structured logs, per-daemon metrics
//! ([`Metrics`]), an admin HTTP endpoint (`/live`, `/ready`, `/metrics` in Prometheus text
//! format), one lifecycle signal ([`Lifecycle`]), shutdown on SIGTERM/SIGINT, TOML config files,
//! and the shell of `main` ([`daemon_main`]).

pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics::{Counter, Gauge, Histogram, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::net::TcpListener;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (containers, log shippers).
    Json,
}

/// Installs the global tracing subscriber on stderr. `RUST_LOG` overrides `default_filter`.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Latency histogram buckets, seconds: 50 µs to 100 ms (then +Inf), so sub-millisecond stages
/// and a 50 ms fusion deadline both resolve.
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    50e-6, 100e-6, 200e-6, 350e-6, 500e-6, 750e-6, 1e-3, 1.5e-3, 2.5e-3, 5e-3, 7.5e-3, 10e-3,
    20e-3, 35e-3, 50e-3, 100e-3,
];

/// One daemon's metrics: a Prometheus recorder owned by the daemon (not a process-global), so
/// several daemons can live in one process (tests) and each renders only its own `/metrics`.
/// Handles are registered once (per view, per reason) and updated without further lookups.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn metadata() -> metrics::Metadata<'static> {
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, None)
}

fn key(name: &'static str, labels: &[(&'static str, String)]) -> metrics::Key {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::Key::from_parts(name, labels)
}

impl Metrics {
    /// A fresh recorder; every histogram gets [`LATENCY_BUCKETS_SECONDS`].
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS_SECONDS)
            .expect("non-empty bucket list")
            .build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &metadata())
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        self.recorder
            .register_gauge(&key(name, labels), &metadata())
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, String)]) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &metadata())
    }

    /// HELP text for a metric (Prometheus tooling expects one for every metric).
    pub fn describe(&self, kind: MetricKind, name: &'static str, help: &'static str) {
        let unit = name.ends_with("_seconds").then_some(metrics::Unit::Seconds);
        let (name, help) = (
            metrics::KeyName::from(name),
            metrics::SharedString::from(help),
        );
        match kind {
            MetricKind::Counter => self.recorder.describe_counter(name, unit, help),
            MetricKind::Gauge => self.recorder.describe_gauge(name, unit, help),
            MetricKind::Histogram => self.recorder.describe_histogram(name, unit, help),
        }
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// The kind of a metric, for [`Metrics::describe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// The phases of a daemon's life, in order. One `watch` channel carries them, so every task
/// waits on the same signal ("has the daemon reached phase X?") instead of on a channel of its
/// own; a phase is never left for an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting sensors and frames.
    Serving,
    /// Shutdown requested: tell peers to stop, accept nothing new.
    Draining,
    /// Peers are gone (or the drain timed out): finish what is pending.
    Flushing,
    /// Everything is published: servers stop.
    Stopped,
}

/// Moves a daemon through its [`Phase`]s.
#[derive(Debug)]
pub struct Lifecycle(tokio::sync::watch::Sender<Phase>);

/// Observes a daemon's [`Phase`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct PhaseWatch(tokio::sync::watch::Receiver<Phase>);

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Self(tokio::sync::watch::Sender::new(Phase::Serving))
    }

    /// Advances to `phase` (never backwards).
    pub fn advance(&self, phase: Phase) {
        self.0.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }

    pub fn watch(&self) -> PhaseWatch {
        PhaseWatch(self.0.subscribe())
    }
}

impl PhaseWatch {
    /// Whether the daemon has reached `phase` (non-blocking; fine on any thread).
    pub fn reached(&self, phase: Phase) -> bool {
        *self.0.borrow() >= phase
    }

    /// Resolves once the daemon reaches `phase` (or its lifecycle is dropped).
    pub async fn wait_for(&mut self, phase: Phase) {
        let _ = self.0.wait_for(|p| *p >= phase).await;
    }

    /// [`PhaseWatch::wait_for`] as an owned future (for graceful-shutdown hooks).
    pub async fn until(mut self, phase: Phase) {
        self.wait_for(phase).await;
    }
}

/// Now as Unix time in nanoseconds (0 if the clock is before 1970): the timestamps on the wire.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A budget of log lines per second for messages a peer can provoke (rejections): a flood of bad
/// input must not become a flood of log. Lines over the budget are counted, not written; the next
/// line written says how many were suppressed.
#[derive(Debug)]
pub struct LogRateLimit {
    per_second: u32,
    window: std::sync::Mutex<(std::time::Instant, u32, u64)>,
    suppressed: Counter,
}

impl LogRateLimit {
    /// At most `per_second` lines each second; suppressed lines counted in `suppressed`.
    pub fn new(per_second: u32, suppressed: Counter) -> Self {
        Self {
            per_second,
            window: std::sync::Mutex::new((std::time::Instant::now(), 0, 0)),
            suppressed,
        }
    }

    /// `Some(n)`: write the line, `n` lines were suppressed since the last one written.
    /// `None`: over budget, skip it.
    pub fn admit(&self) -> Option<u64> {
        let mut w = self.window.lock().expect("log rate limit lock");
        let now = std::time::Instant::now();
        if now.duration_since(w.0) >= std::time::Duration::from_secs(1) {
            w.0 = now;
            w.1 = 0;
        }
        if w.1 < self.per_second {
            w.1 += 1;
            Some(std::mem::take(&mut w.2))
        } else {
            w.2 += 1;
            self.suppressed.increment(1);
            None
        }
    }
}

/// Readiness flag shared between a daemon and its admin endpoint.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Serves `/live`, `/ready` and `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_admin_with(listener, readiness, metrics, Router::new(), shutdown).await
}

/// [`serve_admin`] plus a daemon's own routes (the aggregator's dashboard).
pub async fn serve_admin_with(
    listener: TcpListener,
    readiness: Readiness,
    metrics: Metrics,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = extra
        .route("/live", get(|| async { "live\n" }))
        .route(
            "/ready",
            get(move || {
                let r = readiness.clone();
                async move {
                    if r.get() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Binds a TCP listener with a message naming the address on failure.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

/// Reads an optional TOML settings file; a missing `path` gives the defaults. Errors are one line
/// naming the file.
pub fn load_config_file<T: serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
) -> anyhow::Result<T> {
    let Some(p) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", p.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "config file {}: {}",
            p.display(),
            e.to_string().trim().replace('\n', " ")
        )
    })
}

impl LogFormat {
    /// The flag if given, else the file's `log_format` (`text` or `json`), else text.
    pub fn resolve(flag: Option<LogFormat>, file: Option<&str>) -> anyhow::Result<LogFormat> {
        Ok(match (flag, file) {
            (Some(f), _) => f,
            (None, Some("json")) => LogFormat::Json,
            (None, Some("text") | None) => LogFormat::Text,
            (None, Some(other)) => {
                anyhow::bail!("config: log_format {other:?} is not text or json")
            }
        })
    }
}

/// Asks a daemon's admin server for `/ready`; `Ok` only on HTTP 200 within `timeout`.
pub async fn check_ready(admin: SocketAddr, timeout: std::time::Duration) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(admin).await?;
        s.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut head = Vec::new();
        s.take(64).read_to_end(&mut head).await?;
        anyhow::Ok(String::from_utf8_lossy(&head).into_owned())
    };
    let head = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {admin} within {timeout:?}"))??;
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status.contains(" 200 "),
        "{admin}/ready answered {status:?}"
    );
    Ok(())
}

/// The threads of a daemon's tokio runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeThreads {
    /// Everything async on the thread that calls `main`: the fewest wake-ups per message, for
    /// a daemon whose async work is light (its blocking work has threads of its own).
    One,
    /// A worker per core (tokio's multi-threaded runtime).
    PerCore,
}

/// The shell of a daemon's `main`: runs `start` on a tokio runtime with `threads` and turns an
/// error into one line on stderr (`NAME: error: ...`) and a non-zero exit.
pub fn daemon_main<F>(name: &str, threads: RuntimeThreads, start: F) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let mut builder = match threads {
        RuntimeThreads::One => tokio::runtime::Builder::new_current_thread(),
        RuntimeThreads::PerCore => tokio::runtime::Builder::new_multi_thread(),
    };
    let result = builder
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(start));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rate_limit_writes_its_budget_and_counts_the_rest() {
        let limit = LogRateLimit::new(3, Counter::noop());
        let admitted: Vec<_> = (0..10).map(|_| limit.admit()).collect();
        assert_eq!(admitted[..3], [Some(0), Some(0), Some(0)]);
        assert!(admitted[3..].iter().all(Option::is_none));
        std::thread::sleep(std::time::Duration::from_millis(1050));
        // The first line of the next second reports what was suppressed.
        assert_eq!(limit.admit(), Some(7));
        assert_eq!(limit.admit(), Some(0));
    }
}

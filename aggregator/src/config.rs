//! Aggregator settings: command line (with `SPLITNETS_AGG_*` environment fallbacks) over an
//! optional TOML file over defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use splitnets_ops::LogFormat;

#[derive(clap::Parser, Debug, Default)]
#[command(
    name = "aggregator",
    version,
    about = "SplitNets aggregator: fuses the sensors' split features and finishes inference"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML file with any of the settings below (flags win over the file).
    #[arg(long, env = "SPLITNETS_AGG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Split bundle directory (bundle.toml, head.onnx, tail.onnx).
    #[arg(long, env = "SPLITNETS_BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// gRPC address (feature link, predictions, health, reflection). Port 0 picks a free port.
    #[arg(long, env = "SPLITNETS_AGG_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP address: /live, /ready, /metrics.
    #[arg(long, env = "SPLITNETS_AGG_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// How long a frame waits for its missing views after the first arrives, milliseconds.
    #[arg(long, env = "SPLITNETS_AGG_FUSION_DEADLINE_MS")]
    pub fusion_deadline_ms: Option<u64>,
    /// Frames waiting for views at once; beyond this the oldest is fused with what it has.
    #[arg(long, env = "SPLITNETS_AGG_MAX_PENDING_FRAMES")]
    pub max_pending_frames: Option<usize>,
    /// How long shutdown waits for sensors to stop and pending frames to finish, milliseconds.
    #[arg(long, env = "SPLITNETS_AGG_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Write `{"grpc": addr, "admin": addr}` here once ready (launchers, tests with port 0).
    #[arg(long, env = "SPLITNETS_AGG_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Name in logs and hello replies.
    #[arg(long, env = "SPLITNETS_AGG_ID")]
    pub id: Option<String>,
    /// Intra-op threads of the tail's ONNX Runtime session.
    #[arg(long, env = "SPLITNETS_AGG_TAIL_THREADS")]
    pub tail_threads: Option<usize>,
    /// Open TCP connections at once (sensors, watchers, health checks); more are closed at once.
    #[arg(long, env = "SPLITNETS_AGG_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Concurrent gRPC streams per connection.
    #[arg(long, env = "SPLITNETS_AGG_MAX_STREAMS_PER_CONNECTION")]
    pub max_streams_per_connection: Option<u32>,
    /// A new connection must send its first byte, and a feature stream its Hello, within this, ms.
    #[arg(long, env = "SPLITNETS_AGG_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// An admitted sensor that sends no frame for this long (at least 4 of its frame periods) is
    /// disconnected and its view freed, ms.
    #[arg(long, env = "SPLITNETS_AGG_VIEW_IDLE_TIMEOUT_MS")]
    pub view_idle_timeout_ms: Option<u64>,
    /// TLS: the aggregator's certificate (PEM). With `--tls-key`; without them the feature link
    /// is plaintext (local development only: it says so at start-up).
    #[arg(long, env = "SPLITNETS_AGG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "SPLITNETS_AGG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// mTLS: the CA (PEM) whose client certificates identify sensors.
    #[arg(long, env = "SPLITNETS_AGG_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// mTLS: the identity (certificate DNS name) allowed for each view, in view order, e.g.
    /// `sensor-0,sensor-1,sensor-2,sensor-3`. A sensor must present a certificate from
    /// `--tls-client-ca` valid for its view's identity.
    #[arg(long, env = "SPLITNETS_AGG_VIEW_IDENTITIES", value_delimiter = ',')]
    pub view_identities: Option<Vec<String>>,
    #[arg(long, env = "SPLITNETS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Subcommands beside serving (the default).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Exit 0 when the aggregator at `--grpc` reports its feature link SERVING over gRPC health
    /// (`grpc.health.v1`), 1 otherwise: for container healthchecks (no shell needed).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:50051")]
        grpc: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Check over TLS, trusting this CA (PEM).
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// The name the aggregator's certificate is valid for.
        #[arg(long, default_value = "localhost")]
        tls_domain: String,
    },
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bundle: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    fusion_deadline_ms: Option<u64>,
    max_pending_frames: Option<usize>,
    drain_timeout_ms: Option<u64>,
    ready_file: Option<PathBuf>,
    id: Option<String>,
    tail_threads: Option<usize>,
    max_connections: Option<usize>,
    max_streams_per_connection: Option<u32>,
    handshake_timeout_ms: Option<u64>,
    view_idle_timeout_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    view_identities: Option<Vec<String>>,
    log_format: Option<String>,
}

/// The feature link's TLS: server certificate and key, and for mTLS the sensors' CA and the
/// identity allowed for each view.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub view_identities: Option<Vec<String>>,
}

/// Room for a fleet of sensors, watchers and health checks, not for a flood.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 16;
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_VIEW_IDLE_TIMEOUT_MS: u64 = 5_000;

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bundle: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub fusion_deadline: Duration,
    pub max_pending_frames: usize,
    pub drain_timeout: Duration,
    pub ready_file: Option<PathBuf>,
    pub id: String,
    pub tail_threads: usize,
    pub max_connections: usize,
    pub max_streams_per_connection: u32,
    pub handshake_timeout: Duration,
    pub view_idle_timeout: Duration,
    /// `None`: plaintext.
    pub tls: Option<TlsSettings>,
    pub log_format: LogFormat,
}

impl Settings {
    /// Settings for tests and embedding: loopback, OS-chosen ports.
    pub fn local(bundle: PathBuf) -> Self {
        Self {
            bundle,
            listen: "127.0.0.1:0".parse().expect("valid address"),
            admin_listen: "127.0.0.1:0".parse().expect("valid address"),
            fusion_deadline: Duration::from_millis(50),
            max_pending_frames: 256,
            drain_timeout: Duration::from_secs(5),
            ready_file: None,
            id: "aggregator".into(),
            tail_threads: 1,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            handshake_timeout: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            view_idle_timeout: Duration::from_millis(DEFAULT_VIEW_IDLE_TIMEOUT_MS),
            tls: None,
            log_format: LogFormat::Text,
        }
    }

    pub fn resolve(args: Args) -> anyhow::Result<Self> {
        let file: FileConfig = splitnets_ops::load_config_file(args.config.as_deref())?;
        let log_format = LogFormat::resolve(args.log_format, file.log_format.as_deref())?;
        let bundle = args.bundle.or(file.bundle).ok_or_else(|| {
            anyhow::anyhow!(
                "no bundle: pass --bundle DIR (or SPLITNETS_BUNDLE, or `bundle` in --config)"
            )
        })?;
        let s = Self {
            bundle,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(([0, 0, 0, 0], 50051).into()),
            admin_listen: args
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or(([0, 0, 0, 0], 9090).into()),
            fusion_deadline: Duration::from_millis(
                args.fusion_deadline_ms
                    .or(file.fusion_deadline_ms)
                    .unwrap_or(50),
            ),
            max_pending_frames: args
                .max_pending_frames
                .or(file.max_pending_frames)
                .unwrap_or(256),
            drain_timeout: Duration::from_millis(
                args.drain_timeout_ms
                    .or(file.drain_timeout_ms)
                    .unwrap_or(5000),
            ),
            ready_file: args.ready_file.or(file.ready_file),
            id: args.id.or(file.id).unwrap_or_else(|| "aggregator".into()),
            tail_threads: args.tail_threads.or(file.tail_threads).unwrap_or(1),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_streams_per_connection: args
                .max_streams_per_connection
                .or(file.max_streams_per_connection)
                .unwrap_or(DEFAULT_MAX_STREAMS_PER_CONNECTION),
            handshake_timeout: Duration::from_millis(
                args.handshake_timeout_ms
                    .or(file.handshake_timeout_ms)
                    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            ),
            view_idle_timeout: Duration::from_millis(
                args.view_idle_timeout_ms
                    .or(file.view_idle_timeout_ms)
                    .unwrap_or(DEFAULT_VIEW_IDLE_TIMEOUT_MS),
            ),
            tls: tls_settings(
                args.tls_cert.or(file.tls_cert),
                args.tls_key.or(file.tls_key),
                args.tls_client_ca.or(file.tls_client_ca),
                args.view_identities.or(file.view_identities),
            )?,
            log_format,
        };
        if s.max_pending_frames == 0 {
            anyhow::bail!("max_pending_frames must be at least 1");
        }
        if s.tail_threads == 0 {
            anyhow::bail!("tail_threads must be at least 1");
        }
        if s.max_connections == 0 || s.max_streams_per_connection == 0 {
            anyhow::bail!("max_connections and max_streams_per_connection must be at least 1");
        }
        if s.handshake_timeout.is_zero() || s.view_idle_timeout.is_zero() {
            anyhow::bail!("handshake_timeout_ms and view_idle_timeout_ms must be at least 1");
        }
        Ok(s)
    }
}

fn tls_settings(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    view_identities: Option<Vec<String>>,
) -> anyhow::Result<Option<TlsSettings>> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            if view_identities.is_some() && client_ca.is_none() {
                anyhow::bail!(
                    "view_identities needs tls_client_ca (the CA that signs sensor certificates)"
                );
            }
            Ok(Some(TlsSettings {
                cert,
                key,
                client_ca,
                view_identities,
            }))
        }
        (None, None) if client_ca.is_none() && view_identities.is_none() => Ok(None),
        _ => anyhow::bail!(
            "TLS needs both tls_cert and tls_key (and tls_client_ca, view_identities only with them)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses flags as the binary would, but ignoring the caller's `SPLITNETS_*` environment,
    /// so the result depends on the arguments alone.
    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let cmd = Args::command().mut_args(|a| a.env(None::<&'static str>));
        Args::from_arg_matches(&cmd.try_get_matches_from(argv)?)
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("agg.toml");
        std::fs::write(&f, "bundle = \"/b\"\nfusion_deadline_ms = 80\nmax_pending_frames = 9\nlog_format = \"json\"\n").unwrap();
        let args = parse(&[
            "aggregator",
            "--config",
            f.to_str().unwrap(),
            "--fusion-deadline-ms",
            "20",
        ])
        .unwrap();
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.bundle, PathBuf::from("/b"));
        assert_eq!(s.fusion_deadline, Duration::from_millis(20));
        assert_eq!(s.max_pending_frames, 9);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.listen.port(), 50051);
    }

    #[test]
    fn missing_bundle_and_bad_values_are_named() {
        let e = Settings::resolve(parse(&["aggregator"]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("--bundle"), "{e}");
        let args = parse(&["aggregator", "--bundle", "b", "--max-pending-frames", "0"]).unwrap();
        assert!(
            Settings::resolve(args)
                .unwrap_err()
                .to_string()
                .contains("max_pending_frames")
        );
    }
}

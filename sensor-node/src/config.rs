//! Sensor settings: command line (with `SPLITNETS_SENSOR_*` environment fallbacks) over an
//! optional TOML file over defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use splitnets_ops::LogFormat;

/// Subcommands beside running the sensor (the default).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Exit 0 when the sensor whose admin server is at `--admin` answers `/ready` with 200, 1
    /// otherwise: for container healthchecks (no shell or curl needed).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:9100")]
        admin: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

#[derive(clap::Parser, Debug, Default)]
#[command(
    name = "sensor-node",
    version,
    about = "SplitNets sensor: runs the head of a split bundle on one camera and streams quantized features to the aggregator"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML file with any of the settings below (flags win over the file).
    #[arg(long, env = "SPLITNETS_SENSOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Split bundle directory (must be the aggregator's bundle: digests are compared).
    #[arg(long, env = "SPLITNETS_BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// Which camera of the bundle this sensor is (0-based).
    #[arg(long, env = "SPLITNETS_SENSOR_VIEW")]
    pub view: Option<u32>,
    /// Aggregator gRPC endpoint, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "SPLITNETS_AGGREGATOR")]
    pub aggregator: Option<String>,
    /// Camera frame rate; 0 runs as fast as the link accepts frames.
    #[arg(long, env = "SPLITNETS_SENSOR_FPS")]
    pub fps: Option<f64>,
    /// Stop after this many frames (default: run until SIGTERM).
    #[arg(long, env = "SPLITNETS_SENSOR_FRAMES")]
    pub frames: Option<u64>,
    /// First frame number (the replay shows data-set item `frame mod size`).
    #[arg(long, env = "SPLITNETS_SENSOR_START_FRAME")]
    pub start_frame: Option<u64>,
    /// Shared camera trigger: frame `start_frame + k` is captured at this Unix time (ms) plus
    /// `k / fps`, so sensors started at different moments capture the same frame numbers together
    /// (a headset's frame-sync line). A sensor that starts late joins at the current frame.
    #[arg(long, env = "SPLITNETS_SENSOR_START_AT_UNIX_MS")]
    pub start_at_unix_ms: Option<u64>,
    /// Frame source: `replay` (the bundle's data set through its simulated cameras: the
    /// Fashion-MNIST test split, or the bundle's rendered scene) or `folder:DIR` (every `.png`,
    /// `.jpg`, `.jpeg` and binary `.pgm` image of DIR, sorted by name, looped; any size, fitted
    /// to the bundle's input per its `resize` policy, converted to its gray8 or rgb8 format).
    #[arg(long, env = "SPLITNETS_SENSOR_SOURCE")]
    pub source: Option<String>,
    /// With `--source folder:DIR`: show each image once, then end the stream (as `--frames`
    /// does) instead of looping. With `--frames N` as well, whichever comes first.
    #[arg(long, env = "SPLITNETS_SENSOR_SOURCE_ONCE")]
    pub source_once: bool,
    /// Fashion-MNIST directory for the replay source.
    #[arg(long, env = "SPLITNETS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Name in logs and in the hello.
    #[arg(long, env = "SPLITNETS_SENSOR_ID")]
    pub id: Option<String>,
    /// Admin HTTP address: /live, /ready, /metrics. Default 0.0.0.0:(9100 + view), so the
    /// sensors of one machine never collide; port 0 picks a free port.
    #[arg(long, env = "SPLITNETS_SENSOR_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Once the camera has finished (or on SIGTERM, at most 1 s), how long to keep trying to
    /// deliver queued frames before exiting anyway, milliseconds.
    #[arg(long, env = "SPLITNETS_SENSOR_FLUSH_TIMEOUT_MS")]
    pub flush_timeout_ms: Option<u64>,
    /// Frames buffered between the camera and the link; beyond this, frames are dropped.
    #[arg(long, env = "SPLITNETS_SENSOR_QUEUE")]
    pub queue: Option<usize>,
    /// Ask the aggregator for one cumulative acknowledgement per this many accepted frames
    /// (default 8; 1: every frame; at most 64). Rejections are always acknowledged at once.
    #[arg(long, env = "SPLITNETS_SENSOR_ACK_EVERY")]
    pub ack_every: Option<u32>,
    /// Reconnect backoff bounds, milliseconds (default 100 to 1000: the backoff doubles from
    /// the minimum; the maximum bounds how long after the aggregator's return the sensor is
    /// back, and one attempt a second costs a dedicated link nothing).
    #[arg(long, env = "SPLITNETS_SENSOR_RECONNECT_MIN_MS")]
    pub reconnect_min_ms: Option<u64>,
    #[arg(long, env = "SPLITNETS_SENSOR_RECONNECT_MAX_MS")]
    pub reconnect_max_ms: Option<u64>,
    /// Intra-op threads of the head's ONNX Runtime session.
    #[arg(long, env = "SPLITNETS_SENSOR_HEAD_THREADS")]
    pub head_threads: Option<usize>,
    /// Debug only: also send a small grayscale thumbnail (≤ 32 × 32) of what the camera sees,
    /// once a second, on a stream of its own, for the aggregator's dashboard. Off by default:
    /// without it no pixels leave the sensor.
    #[arg(long, env = "SPLITNETS_SENSOR_DEBUG_PREVIEW")]
    pub debug_preview: bool,
    /// TLS: the CA (PEM) that signed the aggregator's certificate; use an `https://` address.
    #[arg(long, env = "SPLITNETS_SENSOR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// mTLS: this sensor's certificate (PEM), valid for the identity the aggregator allows for
    /// its view; with `--tls-key`.
    #[arg(long, env = "SPLITNETS_SENSOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "SPLITNETS_SENSOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The name the aggregator's certificate must be valid for (default: the address's host).
    #[arg(long, env = "SPLITNETS_SENSOR_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    #[arg(long, env = "SPLITNETS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Headset emulation, off by default: shape this sensor's link in process to this rate,
    /// `KBPS` or a schedule `SECONDS:KBPS,...` from the sensor's start (e.g. `0:2000,5:100,12:2000`
    /// drops to 100 kbit/s at 5 s and restores it at 12 s).
    #[arg(long, env = "SPLITNETS_SENSOR_EMULATE_BANDWIDTH_KBPS")]
    pub emulate_bandwidth_kbps: Option<String>,
    /// Headset emulation: one-way link latency added per message, milliseconds.
    #[arg(long, env = "SPLITNETS_SENSOR_EMULATE_LATENCY_MS")]
    pub emulate_latency_ms: Option<f64>,
    /// Headset emulation: extra delay drawn uniformly from 0..=this per message, milliseconds.
    #[arg(long, env = "SPLITNETS_SENSOR_EMULATE_JITTER_MS")]
    pub emulate_jitter_ms: Option<f64>,
    /// Headset emulation: probability that a message is lost on the link (0..1).
    #[arg(long, env = "SPLITNETS_SENSOR_EMULATE_LOSS")]
    pub emulate_loss: Option<f64>,
    /// Headset emulation: pad each frame's sensor stage to what the bundle's hardware profile
    /// predicts (`predicted.sensor_seconds`), so this machine computes as slowly as the headset.
    #[arg(long, env = "SPLITNETS_SENSOR_EMULATE_COMPUTE")]
    pub emulate_compute: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bundle: Option<PathBuf>,
    view: Option<u32>,
    aggregator: Option<String>,
    fps: Option<f64>,
    frames: Option<u64>,
    start_frame: Option<u64>,
    start_at_unix_ms: Option<u64>,
    source: Option<String>,
    source_once: Option<bool>,
    data_dir: Option<PathBuf>,
    id: Option<String>,
    admin_listen: Option<SocketAddr>,
    flush_timeout_ms: Option<u64>,
    queue: Option<usize>,
    ack_every: Option<u32>,
    reconnect_min_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    head_threads: Option<usize>,
    debug_preview: Option<bool>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_domain: Option<String>,
    log_format: Option<String>,
    emulate_bandwidth_kbps: Option<String>,
    emulate_latency_ms: Option<f64>,
    emulate_jitter_ms: Option<f64>,
    emulate_loss: Option<f64>,
    emulate_compute: Option<bool>,
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    Replay { data_dir: PathBuf },
    Folder(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub bundle: PathBuf,
    pub view: u32,
    pub aggregator: String,
    pub fps: f64,
    pub frames: Option<u64>,
    pub start_frame: u64,
    pub start_at_unix_ms: Option<u64>,
    pub source: SourceKind,
    /// A folder source's images once each, then the stream ends (`--source-once`).
    pub source_once: bool,
    pub id: String,
    pub admin_listen: SocketAddr,
    pub flush_timeout: Duration,
    pub queue: usize,
    /// Accepted frames per cumulative acknowledgement (`Hello.ack_every`).
    pub ack_every: u32,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub head_threads: usize,
    /// Send debug thumbnails (see `--debug-preview`).
    pub debug_preview: bool,
    /// `None`: plaintext.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    pub log_format: LogFormat,
    /// Headset link emulation (`None`: the real link only).
    pub emulate_link: Option<crate::emulation::LinkEmulation>,
    /// Pad the sensor stage to the bundle's predicted sensor time.
    pub emulate_compute: bool,
}

/// A sensor's default admin address: port 9100 + view, so sensors on one machine never collide.
pub fn default_admin_listen(view: u32) -> SocketAddr {
    let port = u16::try_from(9100 + u64::from(view)).unwrap_or(0);
    ([0, 0, 0, 0], port).into()
}

impl Settings {
    /// Settings for tests and embedding: camera `view` replaying the data set at 30 fps to
    /// `aggregator`, admin on an OS-chosen loopback port, no shared trigger.
    pub fn local(bundle: PathBuf, view: u32, aggregator: String) -> Self {
        Self {
            bundle,
            view,
            aggregator,
            fps: 30.0,
            frames: None,
            start_frame: 0,
            start_at_unix_ms: None,
            source: SourceKind::Replay {
                data_dir: splitnets_camera::dataset::DEFAULT_DIR.into(),
            },
            source_once: false,
            id: format!("sensor-{view}"),
            admin_listen: "127.0.0.1:0".parse().expect("valid address"),
            flush_timeout: Duration::from_secs(5),
            queue: 8,
            ack_every: splitnets_proto::wire::DEFAULT_ACK_EVERY,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(1000),
            head_threads: 1,
            debug_preview: false,
            tls: None,
            log_format: LogFormat::Text,
            emulate_link: None,
            emulate_compute: false,
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
        let view = args.view.or(file.view).ok_or_else(|| {
            anyhow::anyhow!("no view: pass --view N (which camera this sensor is)")
        })?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| splitnets_camera::dataset::DEFAULT_DIR.into());
        let source = match args.source.or(file.source).as_deref() {
            None | Some("replay") => SourceKind::Replay { data_dir },
            Some(s) if s.starts_with("folder:") => {
                SourceKind::Folder(PathBuf::from(&s["folder:".len()..]))
            }
            Some(other) => anyhow::bail!("source {other:?} is not `replay` or `folder:DIR`"),
        };
        let source_once = args.source_once || file.source_once.unwrap_or(false);
        if source_once && !matches!(source, SourceKind::Folder(_)) {
            anyhow::bail!("source_once (--source-once) needs a folder source: --source folder:DIR");
        }
        let fps = args.fps.or(file.fps).unwrap_or(30.0);
        if !(fps >= 0.0 && fps.is_finite()) {
            anyhow::bail!("fps {fps} must be a finite number ≥ 0");
        }
        let aggregator = args
            .aggregator
            .or(file.aggregator)
            .unwrap_or_else(|| "http://127.0.0.1:50051".into());
        let tls = match (
            args.tls_ca.or(file.tls_ca),
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (None, None, None) => None,
            (Some(ca), cert, key) => {
                let identity = match (&cert, &key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    (None, None) => None,
                    _ => anyhow::bail!("tls_cert and tls_key go together"),
                };
                let domain = match args.tls_domain.or(file.tls_domain) {
                    Some(d) => d,
                    None => aggregator
                        .parse::<tonic::transport::Uri>()
                        .ok()
                        .and_then(|u| u.host().map(str::to_string))
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "no host in aggregator address {aggregator:?}; pass --tls-domain"
                            )
                        })?,
                };
                if !aggregator.starts_with("https://") {
                    anyhow::bail!(
                        "TLS is configured: the aggregator address must be https://, not {aggregator:?}"
                    );
                }
                Some(splitnets_ops::tls::client_config(&ca, identity, &domain)?)
            }
            (None, _, _) => anyhow::bail!(
                "tls_cert and tls_key need tls_ca (the CA that signed the aggregator's certificate)"
            ),
        };
        let emulate_link = {
            let bw = args.emulate_bandwidth_kbps.or(file.emulate_bandwidth_kbps);
            let latency = args.emulate_latency_ms.or(file.emulate_latency_ms);
            let jitter = args.emulate_jitter_ms.or(file.emulate_jitter_ms);
            let loss = args.emulate_loss.or(file.emulate_loss);
            if bw.is_none() && latency.is_none() && jitter.is_none() && loss.is_none() {
                None
            } else {
                let ms = |v: Option<f64>, what: &str| -> anyhow::Result<Duration> {
                    let v = v.unwrap_or(0.0);
                    anyhow::ensure!(
                        v >= 0.0 && v.is_finite(),
                        "emulate_{what}_ms {v} must be a finite number ≥ 0"
                    );
                    Ok(Duration::from_secs_f64(v / 1e3))
                };
                let loss = loss.unwrap_or(0.0);
                anyhow::ensure!(
                    (0.0..1.0).contains(&loss),
                    "emulate_loss {loss} must be in 0..1"
                );
                Some(crate::emulation::LinkEmulation {
                    bandwidth_kbps: match bw {
                        Some(text) => crate::emulation::LinkEmulation::parse_bandwidth(&text)
                            .map_err(anyhow::Error::msg)?,
                        None => Vec::new(),
                    },
                    latency: ms(latency, "latency")?,
                    jitter: ms(jitter, "jitter")?,
                    loss,
                    seed: 0xE4A1 ^ u64::from(view),
                })
            }
        };
        let s = Self {
            emulate_link,
            emulate_compute: args.emulate_compute || file.emulate_compute.unwrap_or(false),
            bundle,
            view,
            aggregator,
            fps,
            frames: args.frames.or(file.frames),
            start_frame: args.start_frame.or(file.start_frame).unwrap_or(0),
            start_at_unix_ms: args.start_at_unix_ms.or(file.start_at_unix_ms),
            source,
            source_once,
            id: args
                .id
                .or(file.id)
                .unwrap_or_else(|| format!("sensor-{view}")),
            admin_listen: args
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| default_admin_listen(view)),
            flush_timeout: Duration::from_millis(
                args.flush_timeout_ms
                    .or(file.flush_timeout_ms)
                    .unwrap_or(5000),
            ),
            queue: args.queue.or(file.queue).unwrap_or(8),
            ack_every: args
                .ack_every
                .or(file.ack_every)
                .unwrap_or(splitnets_proto::wire::DEFAULT_ACK_EVERY),
            reconnect_min: Duration::from_millis(
                args.reconnect_min_ms
                    .or(file.reconnect_min_ms)
                    .unwrap_or(100),
            ),
            reconnect_max: Duration::from_millis(
                args.reconnect_max_ms
                    .or(file.reconnect_max_ms)
                    .unwrap_or(1000),
            ),
            head_threads: args.head_threads.or(file.head_threads).unwrap_or(1),
            debug_preview: args.debug_preview || file.debug_preview.unwrap_or(false),
            tls,
            log_format,
        };
        if s.queue == 0 || s.head_threads == 0 {
            anyhow::bail!("queue and head_threads must be at least 1");
        }
        if !(1..=splitnets_proto::wire::MAX_ACK_EVERY).contains(&s.ack_every) {
            anyhow::bail!(
                "ack_every {} must be in 1..={}",
                s.ack_every,
                splitnets_proto::wire::MAX_ACK_EVERY
            );
        }
        Ok(s)
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
    fn sources_and_defaults() {
        let s = Settings::resolve(parse(&["sensor-node", "--bundle", "b", "--view", "2"]).unwrap())
            .unwrap();
        assert_eq!(s.id, "sensor-2");
        assert_eq!(s.admin_listen.port(), 9102, "admin ports differ per view");
        assert_eq!(s.fps, 30.0);
        assert!(matches!(s.source, SourceKind::Replay { .. }));
        let s = Settings::resolve(
            parse(&[
                "sensor-node",
                "--bundle",
                "b",
                "--view",
                "0",
                "--source",
                "folder:/x",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(s.source, SourceKind::Folder("/x".into()));
        let e = Settings::resolve(
            parse(&[
                "sensor-node",
                "--bundle",
                "b",
                "--view",
                "0",
                "--source",
                "webcam",
            ])
            .unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("webcam"), "{e}");
        let e = Settings::resolve(parse(&["sensor-node", "--bundle", "b"]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("--view"), "{e}");
        assert!(s.emulate_link.is_none(), "no emulation unless asked");
        let base = ["sensor-node", "--bundle", "b", "--view", "0"];
        let with = |extra: &[&str]| Settings::resolve(parse(&[&base[..], extra].concat()).unwrap());
        let s = with(&[
            "--emulate-bandwidth-kbps",
            "0:500,3:50",
            "--emulate-latency-ms",
            "2",
        ])
        .unwrap();
        let l = s.emulate_link.unwrap();
        assert_eq!(l.bandwidth_kbps, vec![(0.0, 500.0), (3.0, 50.0)]);
        assert_eq!(l.latency, Duration::from_millis(2));
        let e = with(&["--emulate-bandwidth-kbps", "fast"]).unwrap_err();
        assert!(e.to_string().contains("bandwidth schedule"), "{e}");
        let e = with(&["--emulate-loss", "1.5"]).unwrap_err();
        assert!(e.to_string().contains("emulate_loss"), "{e}");
    }

    #[test]
    fn source_once() {
        let base = ["sensor-node", "--bundle", "b", "--view", "0"];
        let with = |extra: &[&str]| Settings::resolve(parse(&[&base[..], extra].concat()).unwrap());
        let s = with(&["--source", "folder:/x"]).unwrap();
        assert!(!s.source_once, "folders loop by default");
        let s = with(&["--source", "folder:/x", "--source-once"]).unwrap();
        assert!(s.source_once);
        assert_eq!(s.source, SourceKind::Folder("/x".into()));
        let e = with(&["--source-once"]).unwrap_err();
        assert!(e.to_string().contains("folder:DIR"), "{e}");
        // From the TOML file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sensor.toml");
        std::fs::write(&file, "source = \"folder:/y\"\nsource_once = true\n").unwrap();
        let s = with(&["--config", file.to_str().unwrap()]).unwrap();
        assert!(s.source_once);
        assert_eq!(s.source, SourceKind::Folder("/y".into()));
    }
}

//! Launchers for SplitNets daemons.
//!
//! [`LocalCluster`] starts an aggregator and N sensor processes on loopback with OS-chosen
//! ports, waits for health, streams predictions, and stops everything cleanly (SIGTERM, then
//! wait). The demo binary and the end-to-end tests both use it. [`stats`]: percentiles for the
//! demo's report.

pub mod certs;
pub mod replay;
pub mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use splitnets_proto::wire::{Prediction, WatchRequest, predictions_client::PredictionsClient};
use tokio::process::{Child, Command};

/// Where the daemons' executables are: next to the current executable, or its parent (test
/// executables live in `target/<profile>/deps`).
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.join("aggregator").is_file() {
        return dir;
    }
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub bin_dir: PathBuf,
    pub bundle: PathBuf,
    /// Directory for logs and the ready file.
    pub work_dir: PathBuf,
    pub fusion_deadline_ms: u64,
    /// The aggregator's gRPC address; port 0 lets the OS choose.
    pub listen: SocketAddr,
    /// Extra arguments for the aggregator and every sensor.
    pub aggregator_args: Vec<String>,
    pub sensor_args: Vec<String>,
}

#[derive(Debug)]
pub struct LocalCluster {
    opts: ClusterOptions,
    aggregator: Child,
    sensors: Vec<(u32, Child)>,
    /// Aggregators started after the first (fault injection).
    restarts: u32,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn executable(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found; build the daemons first: cargo build --release --bins",
            p.display()
        );
    }
    Ok(p)
}

/// Sends SIGTERM (graceful stop) to a child.
pub fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Spawns an aggregator listening on `listen`, waits for its ready file and for its health
/// service to say SERVING; logs go to `<work_dir>/<name>.log`.
async fn spawn_aggregator(
    opts: &ClusterOptions,
    listen: SocketAddr,
    name: &str,
) -> anyhow::Result<(Child, SocketAddr, SocketAddr)> {
    let ready = opts.work_dir.join(format!("{name}.ready.json"));
    let _ = std::fs::remove_file(&ready);
    let log = opts.work_dir.join(format!("{name}.log"));
    let mut aggregator = Command::new(executable(&opts.bin_dir, "aggregator")?)
        .arg("--bundle")
        .arg(&opts.bundle)
        .arg("--listen")
        .arg(listen.to_string())
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--fusion-deadline-ms")
        .arg(opts.fusion_deadline_ms.to_string())
        .arg("--ready-file")
        .arg(&ready)
        .args(&opts.aggregator_args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting the aggregator")?;
    let started = Instant::now();
    let addrs: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break serde_json::from_str(&text).context("aggregator ready file")?;
        }
        if let Some(status) = aggregator.try_wait()? {
            bail!(
                "aggregator exited ({status}) before it was ready: {}",
                last_line(&log)
            );
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("aggregator not ready after 60 s; log: {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let addr = |k: &str| -> anyhow::Result<SocketAddr> {
        addrs[k]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("ready file lacks {k}"))?
            .parse()
            .context("ready file address")
    };
    let (grpc, admin) = (addr("grpc")?, addr("admin")?);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "splitnets.v1.FeatureLink".into(),
        })
        .await?
        .into_inner()
        .status;
    if status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
        bail!("aggregator health is {status}, not SERVING");
    }
    Ok((aggregator, grpc, admin))
}

impl LocalCluster {
    /// Starts the aggregator and waits until it is ready and its health service says SERVING.
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.work_dir)?;
        let (aggregator, grpc, admin) = spawn_aggregator(&opts, opts.listen, "aggregator").await?;
        Ok(Self {
            opts,
            aggregator,
            sensors: Vec::new(),
            restarts: 0,
            grpc,
            admin,
        })
    }

    /// Starts a new aggregator on the same gRPC address after the previous one died or was
    /// killed (the sensors find it again by themselves); its log is `aggregator-N.log`.
    pub async fn restart_aggregator(&mut self) -> anyhow::Result<()> {
        if self.aggregator.try_wait()?.is_none() {
            bail!("the aggregator is still running");
        }
        self.restarts += 1;
        let name = format!("aggregator-{}", self.restarts);
        let (child, grpc, admin) = spawn_aggregator(&self.opts, self.grpc, &name).await?;
        (self.aggregator, self.grpc, self.admin) = (child, grpc, admin);
        Ok(())
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Subscribes to predictions.
    pub async fn watch(&self) -> anyhow::Result<tonic::Streaming<Prediction>> {
        let mut client = PredictionsClient::connect(self.endpoint()).await?;
        Ok(client.watch(WatchRequest {}).await?.into_inner())
    }

    /// Starts one sensor process for `view`.
    pub fn start_sensor(&mut self, view: u32, args: &[String]) -> anyhow::Result<()> {
        let log = self.opts.work_dir.join(format!("sensor-{view}.log"));
        let child = Command::new(executable(&self.opts.bin_dir, "sensor-node")?)
            .arg("--bundle")
            .arg(&self.opts.bundle)
            .args([
                "--view",
                &view.to_string(),
                "--aggregator",
                &self.endpoint(),
            ])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(&self.opts.sensor_args)
            .args(args)
            .stdout(std::fs::File::create(
                self.opts.work_dir.join(format!("sensor-{view}.out")),
            )?)
            // Appended: a sensor started again (fault injection) keeps its earlier log.
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?,
            )
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting sensor {view}"))?;
        self.sensors.push((view, child));
        Ok(())
    }

    /// Waits for every sensor to exit; an error names each sensor that failed and why.
    pub async fn wait_sensors(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut failures = Vec::new();
        for (view, child) in &mut self.sensors {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, child.wait()).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => failures.push(format!(
                    "sensor {view} exited {s}: {}",
                    last_line(&self.opts.work_dir.join(format!("sensor-{view}.log")))
                )),
                Ok(Err(e)) => failures.push(format!("sensor {view}: {e}")),
                Err(_) => {
                    terminate(child);
                    failures.push(format!("sensor {view} still running after {timeout:?}"));
                }
            }
        }
        self.sensors.clear();
        if failures.is_empty() {
            Ok(())
        } else {
            bail!(failures.join("; "))
        }
    }

    /// Sensor reports printed as JSON on stdout by each sensor that finished.
    pub fn sensor_reports(&self, views: u32) -> Vec<serde_json::Value> {
        (0..views)
            .filter_map(|v| {
                std::fs::read_to_string(self.opts.work_dir.join(format!("sensor-{v}.out"))).ok()
            })
            .filter_map(|s| serde_json::from_str(s.trim()).ok())
            .collect()
    }

    /// The aggregator's Prometheus metrics text.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.admin).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(out))
    }

    /// The aggregator's process id (for resource measurements).
    pub fn aggregator_pid(&self) -> Option<u32> {
        self.aggregator.id()
    }

    /// A running sensor's process id.
    pub fn sensor_pid(&self, view: u32) -> Option<u32> {
        self.sensors
            .iter()
            .find(|(v, _)| *v == view)
            .and_then(|(_, c)| c.id())
    }

    /// Kills one sensor abruptly (SIGKILL), as a power loss would; it can be started again.
    pub async fn kill_sensor(&mut self, view: u32) -> anyhow::Result<()> {
        let Some(i) = self.sensors.iter().position(|(v, _)| *v == view) else {
            bail!("sensor {view} is not running");
        };
        let (_, mut child) = self.sensors.remove(i);
        child.kill().await?;
        Ok(())
    }

    /// Stops one sensor with SIGTERM and waits for it (it can be started again).
    pub async fn stop_sensor(&mut self, view: u32) -> anyhow::Result<()> {
        let Some(i) = self.sensors.iter().position(|(v, _)| *v == view) else {
            bail!("sensor {view} is not running");
        };
        let (_, mut child) = self.sensors.remove(i);
        terminate(&child);
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .with_context(|| format!("sensor {view} did not stop within 10 s of SIGTERM"))??;
        Ok(())
    }

    /// Kills the aggregator abruptly (SIGKILL), as a crash would; sensors keep running.
    pub async fn kill_aggregator(&mut self) -> anyhow::Result<()> {
        self.aggregator.kill().await?;
        Ok(())
    }

    /// Stops the sensors still running and the aggregator with SIGTERM; waits for them.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for (_, c) in &self.sensors {
            terminate(c);
        }
        for (_, c) in &mut self.sensors {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        }
        terminate(&self.aggregator);
        let status = tokio::time::timeout(Duration::from_secs(15), self.aggregator.wait())
            .await
            .context("aggregator did not stop within 15 s of SIGTERM")??;
        if !status.success() {
            bail!(
                "aggregator exited {status}: {}",
                last_line(&self.opts.work_dir.join("aggregator.log"))
            );
        }
        Ok(())
    }
}

/// A metric's value from Prometheus text (sum over label sets matching `labels`).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, rest) = key.split_once('{').unwrap_or((key, ""));
            if n != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .fold(0.0, |a, b| a + b)
}

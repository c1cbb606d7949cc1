//! Runs the real daemons (an aggregator and N sensor processes on loopback) and measures each
//! prediction's stages and each process's CPU time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use splitnets_deploy::stats::cpu_seconds_fine;
use splitnets_deploy::{ClusterOptions, LocalCluster};
use splitnets_proto::bundle::Bundle;

/// What one run measured, per fused frame after the warm-up (milliseconds).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    pub sensors: u32,
    pub fps: f64,
    pub frames: usize,
    pub degraded: usize,
    pub end_to_end_ms: Vec<f64>,
    /// Per view: capture → encoded on the sensor.
    pub sensor_ms: Vec<f64>,
    /// Per view: encoded → received by the aggregator (sensor queue + link).
    pub link_ms: Vec<f64>,
    pub wait_ms: Vec<f64>,
    pub decode_ms: Vec<f64>,
    pub tail_ms: Vec<f64>,
    /// End to end minus (the first view's arrival + wait + decode + tail): handing the frame
    /// to the tail thread and publishing the prediction.
    pub residual_ms: Vec<f64>,
    pub message_bytes_per_view: f64,
    /// CPU time (user + system) per fused frame of the aggregator, and per captured frame of
    /// each sensor (mean over sensors), milliseconds.
    pub aggregator_cpu_ms_per_frame: f64,
    pub sensor_cpu_ms_per_frame: f64,
}

impl Measured {
    /// Pools another run of the same configuration into this one (CPU figures weighted by
    /// frames).
    pub fn absorb(&mut self, o: Measured) {
        let (a, b) = (self.frames as f64, o.frames as f64);
        let w = |x: f64, y: f64| (x * a + y * b) / (a + b).max(1.0);
        self.aggregator_cpu_ms_per_frame = w(
            self.aggregator_cpu_ms_per_frame,
            o.aggregator_cpu_ms_per_frame,
        );
        self.sensor_cpu_ms_per_frame = w(self.sensor_cpu_ms_per_frame, o.sensor_cpu_ms_per_frame);
        self.message_bytes_per_view = w(self.message_bytes_per_view, o.message_bytes_per_view);
        self.frames += o.frames;
        self.degraded += o.degraded;
        self.end_to_end_ms.extend(o.end_to_end_ms);
        self.sensor_ms.extend(o.sensor_ms);
        self.link_ms.extend(o.link_ms);
        self.wait_ms.extend(o.wait_ms);
        self.decode_ms.extend(o.decode_ms);
        self.tail_ms.extend(o.tail_ms);
        self.residual_ms.extend(o.residual_ms);
    }
}

/// A copy of `bundle` for a rig of its first `views` cameras, written under `dir`.
pub fn bundle_with_views(bundle: &Bundle, views: u32, dir: &Path) -> anyhow::Result<PathBuf> {
    if views == bundle.manifest.cameras.views {
        return Ok(bundle.dir.clone());
    }
    let out = dir.join(format!("bundle-{views}-views"));
    Bundle::write(
        &out,
        bundle.manifest.clone().with_views(views),
        &bundle.head_onnx,
        &bundle.tail_onnx,
    )?;
    Ok(out)
}

pub struct RunSpec<'a> {
    pub bin_dir: PathBuf,
    pub bundle_dir: PathBuf,
    pub sensors: u32,
    pub fps: f64,
    pub warmup_s: f64,
    pub measure_s: f64,
    pub deadline_ms: u64,
    pub data_dir: &'a Path,
    pub work_dir: PathBuf,
    /// Keep a dashboard page's feed (`/events`) open during the run, read as a browser would.
    pub dashboard_viewer: bool,
}

/// Reads the aggregator's dashboard feed until aborted (what an open page costs the server).
async fn dashboard_viewer(admin: std::net::SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    s.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}

pub async fn run(spec: &RunSpec<'_>) -> anyhow::Result<Measured> {
    let mut cluster = LocalCluster::start(ClusterOptions {
        bin_dir: spec.bin_dir.clone(),
        bundle: spec.bundle_dir.clone(),
        work_dir: spec.work_dir.clone(),
        fusion_deadline_ms: spec.deadline_ms,
        listen: "127.0.0.1:0".parse()?,
        aggregator_args: vec![],
        sensor_args: vec!["--data-dir".into(), spec.data_dir.display().to_string()],
    })
    .await?;
    let mut watch = cluster.watch().await?;
    let viewer = spec
        .dashboard_viewer
        .then(|| tokio::spawn(dashboard_viewer(cluster.admin)));
    let warmup_frames = (spec.warmup_s * spec.fps).round() as u64;
    let frames = warmup_frames + (spec.measure_s * spec.fps).round() as u64;
    let start_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 + 2000;
    for v in 0..spec.sensors {
        cluster.start_sensor(
            v,
            &[
                "--fps".into(),
                spec.fps.to_string(),
                "--frames".into(),
                frames.to_string(),
                "--start-at-unix-ms".into(),
                start_at.to_string(),
            ],
        )?;
    }
    let pids: Vec<u32> = (0..spec.sensors)
        .filter_map(|v| cluster.sensor_pid(v))
        .collect();
    let agg_pid = cluster.aggregator_pid().context("aggregator pid")?;
    let mut m = Measured {
        sensors: spec.sensors,
        fps: spec.fps,
        ..Measured::default()
    };
    let mut cpu_start: Option<(f64, f64)> = None;
    let mut cpu_end: Option<(f64, f64)> = None;
    let read_cpu = || {
        (
            cpu_seconds_fine(agg_pid).unwrap_or(0.0),
            pids.iter()
                .filter_map(|&p| cpu_seconds_fine(p))
                .sum::<f64>(),
        )
    };
    let mut bytes = 0u64;
    let mut views_seen = 0u64;
    let budget = Duration::from_secs_f64(frames as f64 / spec.fps + 30.0);
    let until = Instant::now() + budget;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(Ok(Some(p))) = tokio::time::timeout(left, watch.message()).await else {
            break;
        };
        if p.sequence < warmup_frames {
            continue;
        }
        if cpu_start.is_none() {
            cpu_start = Some(read_cpu());
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        m.frames += 1;
        if !p.views_missing.is_empty() {
            m.degraded += 1;
        }
        let mut first_arrival = f64::INFINITY;
        for v in &p.views {
            m.sensor_ms.push(ms(v.sensor_ns));
            let link = ms(v.queue_ns + v.link_ns);
            m.link_ms.push(link);
            first_arrival = first_arrival.min(ms(v.sensor_ns) + link);
            bytes += v.message_bytes;
            views_seen += 1;
        }
        let e2e = ms(p.end_to_end_ns);
        m.end_to_end_ms.push(e2e);
        m.wait_ms.push(ms(p.wait_ns));
        m.decode_ms.push(ms(p.decode_ns));
        m.tail_ms.push(ms(p.tail_ns));
        m.residual_ms
            .push((e2e - first_arrival - ms(p.wait_ns) - ms(p.decode_ns) - ms(p.tail_ns)).max(0.0));
        if p.sequence + 1 >= frames {
            cpu_end = Some(read_cpu());
            break;
        }
    }
    let cpu_end = cpu_end.unwrap_or_else(read_cpu);
    if let Some((a0, s0)) = cpu_start
        && m.frames > 0
    {
        m.aggregator_cpu_ms_per_frame = 1e3 * (cpu_end.0 - a0) / m.frames as f64;
        m.sensor_cpu_ms_per_frame =
            1e3 * (cpu_end.1 - s0) / (m.frames as f64 * f64::from(spec.sensors));
    }
    m.message_bytes_per_view = bytes as f64 / views_seen.max(1) as f64;
    if let Some(v) = viewer {
        v.abort();
    }
    cluster
        .wait_sensors(Duration::from_secs(30))
        .await
        .context("sensors")?;
    cluster.stop().await?;
    if m.frames == 0 {
        anyhow::bail!(
            "no predictions after the warm-up; logs in {}",
            spec.work_dir.display()
        );
    }
    Ok(m)
}

//! `splitnets-bench latency`: the latency harness (in the spirit of Triton's perf_analyzer).
//!
//! For every scenario (sensor count × frame rate or max-throughput, headset emulation off or
//! on, plus one camera missing) the real daemons run on loopback; predictions are gathered in
//! measurement windows after a warm-up until the last three windows agree within the stability
//! rule (p50 and throughput within ±10 % of their mean) or the window budget is spent. Beside
//! each scenario: the cost model's prediction for the same bundle and profile, the in-process
//! pipeline (hot loop and paced at the same rate) and a bare tonic stream of the same message
//! size, all in the same run. Output: `latency.csv` (perf_analyzer's column names where they
//! apply, then ours), `latency.json`, `latency.md` and `latency.svg`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use splitnets_cost_model::profile::HardwareProfile;
use splitnets_deploy::stats::{ThreadRuns, machine, percentile, thread_runs};
use splitnets_deploy::{ClusterOptions, LocalCluster};
use splitnets_proto::bundle::{Bundle, PredictedCost};
use splitnets_runtime::{LocalPipeline, SessionOptions};

use crate::{bare, model};

#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Split bundle (default: the embedded demo bundle).
    #[arg(long, default_value = "deploy/bundles/fashion-mnist-4view")]
    bundle: PathBuf,
    /// Sensor counts (each runs a copy of the bundle for that many cameras).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    sensors: Vec<u32>,
    /// Frame rates per sensor; `max` is the max-throughput mode (each sensor as fast as the
    /// aggregator's credits allow).
    #[arg(long, value_delimiter = ',', default_value = "30,max")]
    rates: Vec<String>,
    /// Headset emulation: `off`, `on` (sensor compute padded to the profile's prediction, link
    /// shaped in process to the profile's bandwidth and latency) or `both`.
    #[arg(long, value_enum, default_value = "both")]
    emulation: EmulationMode,
    /// Profile emulated and predicted for the sensors and the link (`headset` or a TOML file).
    #[arg(long, default_value = "headset")]
    profile: String,
    /// Profile of this host (the aggregator is never emulated: its prediction uses this one,
    /// and so do the sensors' with emulation off).
    #[arg(long, default_value = "cost-model/profiles/host.toml")]
    host_profile: String,
    /// Emulated link rate, kbit/s (default: the profile's bandwidth).
    #[arg(long)]
    emulate_bandwidth_kbps: Option<f64>,
    /// Seconds discarded before the first window.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Length of one measurement window, seconds.
    #[arg(long, default_value_t = 2.0)]
    window_s: f64,
    /// Windows at most per scenario (the last three are reported, stable or not).
    #[arg(long, default_value_t = 8)]
    max_windows: usize,
    /// Stability rule: the last three windows' p50 latency and throughput each within this
    /// fraction of their mean.
    #[arg(long, default_value_t = 0.10)]
    stability: f64,
    #[arg(long, default_value_t = 50)]
    deadline_ms: u64,
    /// Also run the bundle's full rig with one camera missing at the first rate, with this
    /// fusion deadline (ms); `none` to skip.
    #[arg(long, default_value = "2")]
    missing_view_deadline_ms: String,
    /// Frames of the in-process hot loop (after 50 warm-up frames).
    #[arg(long, default_value_t = 1000)]
    inprocess_frames: usize,
    /// Seconds of the paced in-process run per rate.
    #[arg(long, default_value_t = 4.0)]
    paced_s: f64,
    /// Messages of the bare tonic stream (half one at a time, half pipelined).
    #[arg(long, default_value_t = 4000)]
    tonic_messages: usize,
    #[arg(
        long,
        env = "SPLITNETS_DATA_DIR",
        default_value = "/usr/share/datasets/fashion-mnist"
    )]
    data_dir: PathBuf,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[arg(long, default_value = "out/bench-latency")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EmulationMode {
    Off,
    On,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
enum Rate {
    Fps(f64),
    Max,
}

impl Rate {
    fn parse(s: &str) -> anyhow::Result<Self> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let f: f64 = s
            .parse()
            .with_context(|| format!("--rates: `{s}` is neither a frame rate nor `max`"))?;
        anyhow::ensure!(f > 0.0 && f.is_finite(), "--rates: {f} must be > 0");
        Ok(Rate::Fps(f))
    }
    fn label(self) -> String {
        match self {
            Rate::Fps(f) => format!("{f} fps"),
            Rate::Max => "max".into(),
        }
    }
    fn sensor_fps(self) -> f64 {
        match self {
            Rate::Fps(f) => f,
            Rate::Max => 0.0,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Scenario {
    /// Cameras of the bundle run.
    views: u32,
    /// Sensors started (fewer than `views`: cameras missing).
    sensors: u32,
    rate: Rate,
    emulation: bool,
    deadline_ms: u64,
}

impl Scenario {
    fn name(&self) -> String {
        format!(
            "{}{} sensor{} {}{}",
            self.sensors,
            if self.sensors < self.views {
                format!(" of {}", self.views)
            } else {
                String::new()
            },
            if self.sensors == 1 { "" } else { "s" },
            self.rate.label(),
            if self.emulation { ", emulated" } else { "" }
        )
    }
}

/// One fused frame's stages, milliseconds (per-view stages averaged over its views).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct FrameSample {
    end_to_end: f64,
    sensor: f64,
    queue: f64,
    link: f64,
    wait: f64,
    decode: f64,
    tail: f64,
    /// Capture time of the view that arrived first minus the frame's earliest capture: views
    /// of one frame captured apart (camera threads sharing this host's cores start late).
    skew: f64,
    /// Fusion complete → the tail thread picks the frame up (the aggregator's `handoff_ns`).
    handoff: f64,
    /// End to end minus everything above along the first view's path (the earliest capture →
    /// the first view in → wait → hand-off → decode → tail): publishing, and the first view's
    /// way from its receipt into fusion.
    residual: f64,
    bytes_per_view: f64,
    degraded: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
struct WindowSummary {
    frames: usize,
    seconds: f64,
    p50_ms: f64,
    frames_per_second: f64,
    aggregator_cpu_seconds: f64,
    sensors_cpu_seconds: f64,
    /// Times the aggregator's / all sensors' threads were put on a CPU (wake-ups).
    aggregator_thread_runs: u64,
    sensors_thread_runs: u64,
}

/// The cost model's view of one scenario.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Predicted {
    sensor_ms: f64,
    link_ms: f64,
    tail_ms: f64,
    end_to_end_ms: f64,
    bytes_per_view: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct ScenarioResult {
    scenario: Scenario,
    stable: bool,
    windows: Vec<WindowSummary>,
    /// Frames of the reported (last three) windows.
    samples: Vec<FrameSample>,
    frames_per_second: f64,
    aggregator_cpu_ms_per_frame: f64,
    sensor_cpu_ms_per_frame: f64,
    /// Thread wake-ups per fused frame on the aggregator and per frame on a sensor.
    aggregator_thread_runs_per_frame: f64,
    sensor_thread_runs_per_frame: f64,
    predicted: Predicted,
    /// How the link was emulated, when it was.
    emulation_detail: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct InProcess {
    views: u32,
    /// None: the hot loop (frames back to back).
    fps: Option<f64>,
    /// Per frame: every view's head and encode, decode and tail, milliseconds.
    total_ms: Vec<f64>,
    head_ms: Vec<f64>,
    tail_ms: Vec<f64>,
}

#[derive(serde::Serialize)]
struct Report {
    machine: String,
    bundle: String,
    scenarios: Vec<ScenarioResult>,
    inprocess: Vec<InProcess>,
    bare_tonic: bare::BareResult,
    /// The bare stream paced like the cameras (the largest sensor count at the first frame
    /// rate): the floor of CPU per message for one gRPC stream per camera on this host.
    bare_tonic_paced: Option<bare::PacedBare>,
    /// The same with one connection, when the largest count is more: the floor of one
    /// sensor's link stage (`one_way_ms`).
    bare_tonic_paced_one_stream: Option<bare::PacedBare>,
    /// The frame path's two thread hand-offs alone, paced at the first frame rate: the floors
    /// of the sensor queue and hand-off stages.
    handoff_floor: Option<crate::handoff::HandoffFloor>,
}

/// The floors, measured alone in this run, of the link (gRPC one way, from the paced bare
/// stream with as many connections as `sensors`), queue and hand-off stages, medians in ms.
fn floors(r: &Report, sensors: u32) -> Option<(f64, f64, f64)> {
    let bare = [&r.bare_tonic_paced_one_stream, &r.bare_tonic_paced]
        .into_iter()
        .flatten()
        .find(|p| p.streams == sensors as usize)?;
    let h = r.handoff_floor.as_ref()?;
    Some((
        med(&bare.one_way_ms),
        med(&h.thread_to_runtime_ms),
        med(&h.runtime_to_thread_ms),
    ))
}

fn med(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

fn stable(w: &[WindowSummary], tol: f64) -> bool {
    if w.len() < 3 {
        return false;
    }
    let last = &w[w.len() - 3..];
    let within = |f: &dyn Fn(&WindowSummary) -> f64| {
        let v: Vec<f64> = last.iter().map(f).collect();
        let mean = v.iter().sum::<f64>() / 3.0;
        mean > 0.0 && v.iter().all(|x| (x - mean).abs() <= tol * mean)
    };
    within(&|s| s.p50_ms) && within(&|s| s.frames_per_second)
}

/// A copy of `bundle` for `views` cameras whose `predicted` block holds the profile's sensor
/// time (what `--emulate-compute` pads to).
fn scenario_bundle(
    bundle: &Bundle,
    views: u32,
    predicted: Option<PredictedCost>,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let out = dir.join(format!(
        "bundle-{views}-views{}",
        if predicted.is_some() { "-emulated" } else { "" }
    ));
    if predicted.is_none() && views == bundle.manifest.cameras.views {
        return Ok(bundle.dir.clone());
    }
    let mut m = bundle.manifest.clone().with_views(views);
    if predicted.is_some() {
        m.predicted = predicted;
    }
    Bundle::write(&out, m, &bundle.head_onnx, &bundle.tail_onnx)?;
    Ok(out)
}

struct Ctx<'a> {
    a: &'a LatencyArgs,
    bundle: &'a Bundle,
    emulated: &'a HardwareProfile,
    host: &'a HardwareProfile,
    bin_dir: PathBuf,
}

fn predict(c: &Ctx<'_>, s: &Scenario) -> anyhow::Result<Predicted> {
    let bytes = c.bundle.manifest.link_budget.bytes_per_view_per_frame as f64;
    let host = model::bundle_costs(c.bundle, c.host)?;
    let tail =
        host.tail_one_view_seconds + f64::from(s.sensors.max(1) - 1) * host.tail_per_view_seconds;
    let (sensor, link) = if s.emulation {
        let emu = model::bundle_costs(c.bundle, c.emulated)?;
        let bw =
            c.a.emulate_bandwidth_kbps
                .map_or(c.emulated.link.bandwidth_bits_per_second, |k| k * 1e3);
        // The padded sensor stage cannot be faster than this host computes it.
        (
            emu.head_seconds.max(host.head_seconds),
            bytes * 8.0 / bw + c.emulated.link.latency_seconds,
        )
    } else {
        // Loopback: the cost model has no software transport term (see the bare tonic row).
        (host.head_seconds, 0.0)
    };
    let wait = if s.sensors < s.views {
        s.deadline_ms as f64 / 1e3
    } else {
        0.0
    };
    Ok(Predicted {
        sensor_ms: sensor * 1e3,
        link_ms: link * 1e3,
        tail_ms: tail * 1e3,
        end_to_end_ms: (sensor + link + wait + tail) * 1e3,
        bytes_per_view: bytes,
    })
}

async fn run_scenario(c: &Ctx<'_>, s: &Scenario, idx: usize) -> anyhow::Result<ScenarioResult> {
    let a = c.a;
    let predicted = predict(c, s)?;
    let mut sensor_args = vec![
        "--fps".to_string(),
        s.rate.sensor_fps().to_string(),
        "--frames".into(),
        // Stopped by the harness once measured.
        "100000000".into(),
    ];
    let mut emulation_detail = None;
    let bundle_dir = if s.emulation {
        let emu = model::bundle_costs(c.bundle, c.emulated)?;
        let kbps = a
            .emulate_bandwidth_kbps
            .unwrap_or(c.emulated.link.bandwidth_bits_per_second / 1e3);
        let latency_ms = c.emulated.link.latency_seconds * 1e3;
        sensor_args.extend([
            "--emulate-compute".into(),
            "--emulate-bandwidth-kbps".into(),
            format!("{kbps:.0}"),
            "--emulate-latency-ms".into(),
            latency_ms.to_string(),
        ]);
        emulation_detail = Some(format!(
            "in-process shaper on each sensor (no network namespaces): {kbps:.0} kbit/s, {latency_ms} ms latency; sensor stage padded to {:.3} ms ({})",
            emu.head_seconds * 1e3,
            c.emulated.name
        ));
        scenario_bundle(
            c.bundle,
            s.views,
            Some(PredictedCost {
                profile: c.emulated.name.clone(),
                sensor_seconds: emu.head_seconds,
                link_seconds: predicted.link_ms / 1e3,
                aggregator_seconds: predicted.tail_ms / 1e3,
                end_to_end_seconds: predicted.end_to_end_ms / 1e3,
                sensor_peak_memory_bytes: 0,
            }),
            &a.out,
        )?
    } else {
        scenario_bundle(c.bundle, s.views, None, &a.out)?
    };
    if let Rate::Fps(_) = s.rate {
        let start_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 + 1500;
        sensor_args.extend(["--start-at-unix-ms".into(), start_at.to_string()]);
    }
    let work_dir = a.out.join(format!("logs-{idx:02}"));
    let mut cluster = LocalCluster::start(ClusterOptions {
        bin_dir: c.bin_dir.clone(),
        bundle: bundle_dir,
        work_dir: work_dir.clone(),
        fusion_deadline_ms: s.deadline_ms,
        listen: "127.0.0.1:0".parse()?,
        aggregator_args: vec![],
        sensor_args: vec!["--data-dir".into(), a.data_dir.display().to_string()],
    })
    .await?;
    let mut watch = cluster.watch().await?;
    for v in 0..s.sensors {
        cluster.start_sensor(v, &sensor_args)?;
    }
    let pids: Vec<u32> = (0..s.sensors)
        .filter_map(|v| cluster.sensor_pid(v))
        .collect();
    let agg = cluster.aggregator_pid().context("aggregator pid")?;
    let cpu = || {
        (
            thread_runs(agg).unwrap_or(ThreadRuns {
                cpu_seconds: f64::NAN,
                runs: 0,
            }),
            pids.iter()
                .filter_map(|&p| thread_runs(p))
                .fold(ThreadRuns::default(), |a, b| a + b),
        )
    };
    let window = Duration::from_secs_f64(a.window_s);
    let mut windows: Vec<WindowSummary> = Vec::new();
    let mut per_window: Vec<Vec<FrameSample>> = Vec::new();
    let mut current: Vec<FrameSample> = Vec::new();
    let mut first: Option<Instant> = None;
    let mut window_start: Option<(Instant, (ThreadRuns, ThreadRuns))> = None;
    let give_up = Instant::now()
        + Duration::from_secs_f64(10.0 + a.warmup_s + a.window_s * a.max_windows as f64 * 2.0);
    loop {
        let now = Instant::now();
        if now > give_up {
            break;
        }
        let next_edge = window_start.map_or(now + Duration::from_millis(200), |(t, _)| t + window);
        let msg = tokio::time::timeout(
            next_edge
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
            watch.message(),
        )
        .await;
        let now = Instant::now();
        match msg {
            Ok(Ok(Some(p))) => {
                let t0 = *first.get_or_insert(now);
                if now.duration_since(t0).as_secs_f64() < a.warmup_s {
                    continue;
                }
                if window_start.is_none() {
                    window_start = Some((now, cpu()));
                }
                current.push(frame_sample(&p));
            }
            Ok(_) => anyhow::bail!(
                "the prediction stream ended; logs in {}",
                work_dir.display()
            ),
            Err(_) => {} // a window edge
        }
        if let Some((t, cpu0)) = window_start
            && now >= t + window
        {
            let cpu1 = cpu();
            let secs = now.duration_since(t).as_secs_f64();
            let e2e: Vec<f64> = current.iter().map(|f| f.end_to_end).collect();
            windows.push(WindowSummary {
                frames: current.len(),
                seconds: secs,
                p50_ms: med(&e2e),
                frames_per_second: current.len() as f64 / secs,
                aggregator_cpu_seconds: cpu1.0.cpu_seconds - cpu0.0.cpu_seconds,
                sensors_cpu_seconds: cpu1.1.cpu_seconds - cpu0.1.cpu_seconds,
                aggregator_thread_runs: cpu1.0.runs.saturating_sub(cpu0.0.runs),
                sensors_thread_runs: cpu1.1.runs.saturating_sub(cpu0.1.runs),
            });
            per_window.push(std::mem::take(&mut current));
            window_start = Some((now, cpu1));
            if stable(&windows, a.stability) || windows.len() >= a.max_windows {
                break;
            }
        }
    }
    cluster.stop().await?;
    anyhow::ensure!(
        windows.len() >= 3,
        "scenario `{}`: fewer than 3 measurement windows filled; logs in {}",
        s.name(),
        work_dir.display()
    );
    let k = windows.len() - 3;
    let last = &windows[k..];
    let frames: usize = last.iter().map(|w| w.frames).sum();
    let secs: f64 = last.iter().map(|w| w.seconds).sum();
    let agg_cpu: f64 = last.iter().map(|w| w.aggregator_cpu_seconds).sum();
    let sensor_cpu: f64 = last.iter().map(|w| w.sensors_cpu_seconds).sum();
    let agg_runs: u64 = last.iter().map(|w| w.aggregator_thread_runs).sum();
    let sensor_runs: u64 = last.iter().map(|w| w.sensors_thread_runs).sum();
    let samples: Vec<FrameSample> = per_window[k..].iter().flatten().copied().collect();
    Ok(ScenarioResult {
        scenario: s.clone(),
        stable: stable(&windows, a.stability),
        frames_per_second: frames as f64 / secs,
        aggregator_cpu_ms_per_frame: 1e3 * agg_cpu / frames.max(1) as f64,
        sensor_cpu_ms_per_frame: 1e3 * sensor_cpu / (frames.max(1) as f64 * f64::from(s.sensors)),
        aggregator_thread_runs_per_frame: agg_runs as f64 / frames.max(1) as f64,
        sensor_thread_runs_per_frame: sensor_runs as f64
            / (frames.max(1) as f64 * f64::from(s.sensors)),
        windows,
        samples,
        predicted,
        emulation_detail,
    })
}

/// The in-process pipeline (the daemons' own stages, through the codec) on one thread: a hot
/// loop, then paced at each rate (each frame started on its tick, as a camera would).
fn in_process(
    bundle: &Bundle,
    views: u32,
    hot_frames: usize,
    paced: &[f64],
    paced_s: f64,
) -> anyhow::Result<Vec<InProcess>> {
    let b = Bundle {
        manifest: bundle.manifest.clone().with_views(views),
        ..bundle.clone()
    };
    let frame_bytes = b.manifest.input.raw_frame_bytes();
    let mut p = LocalPipeline::new(b, SessionOptions::default())?;
    // Content does not change a CNN's time; distinct pseudo-random frames per view.
    let frames: Vec<Vec<u8>> = (0..views)
        .map(|v| {
            (0..frame_bytes)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(v * 97) >> 24) as u8)
                .collect()
        })
        .collect();
    let one = |p: &mut LocalPipeline| -> anyhow::Result<(f64, f64, f64)> {
        let t = Instant::now();
        let (_, tm) = p.run_frame(&frames, true)?;
        Ok((
            t.elapsed().as_secs_f64() * 1e3,
            (tm.head_ns + tm.encode_ns) as f64 / 1e6,
            (tm.decode_ns + tm.tail_ns) as f64 / 1e6,
        ))
    };
    for _ in 0..50 {
        one(&mut p)?;
    }
    let mut out = Vec::new();
    let mut run = |fps: Option<f64>, n: usize, p: &mut LocalPipeline| -> anyhow::Result<()> {
        let mut r = InProcess {
            views,
            fps,
            total_ms: Vec::with_capacity(n),
            head_ms: Vec::with_capacity(n),
            tail_ms: Vec::with_capacity(n),
        };
        let start = Instant::now();
        for i in 0..n {
            if let Some(f) = fps {
                let tick = start + Duration::from_secs_f64(i as f64 / f);
                std::thread::sleep(tick.saturating_duration_since(Instant::now()));
            }
            let (t, h, tl) = one(p)?;
            r.total_ms.push(t);
            r.head_ms.push(h);
            r.tail_ms.push(tl);
        }
        out.push(r);
        Ok(())
    };
    run(None, hot_frames, &mut p)?;
    for &f in paced {
        run(Some(f), ((paced_s * f) as usize).max(30), &mut p)?;
    }
    Ok(out)
}

pub async fn latency(a: LatencyArgs) -> anyhow::Result<()> {
    let bundle = Bundle::load(&a.bundle)?;
    let emulated = model::load_profile(&a.profile)?;
    let host = model::load_profile(&a.host_profile)?;
    let rates: Vec<Rate> = a
        .rates
        .iter()
        .map(|r| Rate::parse(r))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!rates.is_empty(), "--rates is empty");
    anyhow::ensure!(
        a.sensors.iter().all(|&n| n >= 1),
        "--sensors: counts must be ≥ 1"
    );
    anyhow::ensure!(
        a.window_s > 0.0 && a.max_windows >= 3,
        "--window-s must be > 0 and --max-windows ≥ 3"
    );
    let missing_deadline: Option<u64> = match a.missing_view_deadline_ms.as_str() {
        "none" => None,
        s => Some(s.parse().with_context(|| {
            format!("--missing-view-deadline-ms: `{s}` is neither milliseconds nor `none`")
        })?),
    };
    splitnets_runtime::onnx_runtime::environment()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let bin_dir = a
        .bin_dir
        .clone()
        .unwrap_or_else(splitnets_deploy::default_bin_dir);

    let mut scenarios = Vec::new();
    let emulations: &[bool] = match a.emulation {
        EmulationMode::Off => &[false],
        EmulationMode::On => &[true],
        EmulationMode::Both => &[false, true],
    };
    for &emulation in emulations {
        for &n in &a.sensors {
            for &rate in &rates {
                // The shaper makes the link the limit: max-throughput under emulation measures
                // the emulated bandwidth, not the system; fixed rates only.
                if emulation && rate == Rate::Max {
                    continue;
                }
                scenarios.push(Scenario {
                    views: n,
                    sensors: n,
                    rate,
                    emulation,
                    deadline_ms: a.deadline_ms,
                });
            }
        }
    }
    let full_rig = bundle.manifest.cameras.views;
    if let (Some(d), Some(&Rate::Fps(f))) = (
        missing_deadline,
        rates.iter().find(|r| matches!(r, Rate::Fps(_))),
    ) && full_rig > 1
    {
        scenarios.push(Scenario {
            views: full_rig,
            sensors: full_rig - 1,
            rate: Rate::Fps(f),
            emulation: false,
            deadline_ms: d,
        });
    }

    // Baselines first (they need no daemons): the in-process pipeline and the bare stream.
    let paced: Vec<f64> = rates
        .iter()
        .filter_map(|r| match r {
            Rate::Fps(f) => Some(*f),
            Rate::Max => None,
        })
        .collect();
    let mut inprocess = Vec::new();
    let mut counts = a.sensors.clone();
    counts.sort_unstable();
    counts.dedup();
    for &n in &counts {
        eprintln!(
            "[latency] in-process pipeline, {n} view(s): hot loop of {} frames, then paced at {:?} fps",
            a.inprocess_frames, paced
        );
        let (b, f, p, s) = (bundle.clone(), a.inprocess_frames, paced.clone(), a.paced_s);
        let r = tokio::task::spawn_blocking(move || in_process(&b, n, f, &p, s)).await??;
        inprocess.extend(r);
    }
    eprintln!(
        "[latency] bare tonic stream: {} messages of the bundle's frame size",
        a.tonic_messages
    );
    let frame = {
        let b = bundle.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut head = splitnets_runtime::HeadStage::new(&b, SessionOptions::default())?;
            let pixels = vec![128u8; b.manifest.input.raw_frame_bytes()];
            let (enc, _) = head.encode(&pixels)?;
            Ok(splitnets_proto::wire::frame_to_wire(
                enc,
                &b.manifest.frame_layout(),
                0,
                0,
                0,
            ))
        })
        .await??
    };
    // Acknowledged as the sensor daemons ask theirs to be (their default `--ack-every`).
    let every = splitnets_proto::wire::DEFAULT_ACK_EVERY;
    let burst = (a.tonic_messages / 2).div_ceil(every as usize) * every as usize;
    let bare_tonic = bare::measure(frame.clone(), a.tonic_messages / 2, burst, 32, every).await?;
    eprintln!(
        "[latency]   {} B per message: round trip p50 {:.3} ms; {:.0} messages/s with 32 in flight",
        bare_tonic.message_bytes,
        med(&bare_tonic.round_trip_ms),
        bare_tonic.messages_per_second
    );
    let paced_bare = |streams: u32, fps: f64| {
        let (frame, s) = (frame.clone(), a.paced_s);
        async move {
            eprintln!(
                "[latency] bare tonic stream paced: {streams} connection(s) × {fps} fps, 1 s warm-up, {s} s measured"
            );
            let r = tokio::task::spawn_blocking(move || {
                bare::measure_paced(
                    &frame,
                    streams as usize,
                    fps,
                    every,
                    Duration::from_secs(1),
                    s,
                )
            })
            .await??;
            eprintln!(
                "[latency]   CPU per message: server {:.3} ms ({:.1} wake-ups), client {:.3} ms ({:.1} wake-ups); one way p50 {:.3} ms",
                r.server_cpu_ms_per_message,
                r.server_runs_per_message,
                r.client_cpu_ms_per_message,
                r.client_runs_per_message,
                med(&r.one_way_ms),
            );
            anyhow::Ok(r)
        }
    };
    let bare_tonic_paced_one_stream = match (paced.first(), a.sensors.iter().max()) {
        (Some(&fps), Some(&max)) if max > 1 && a.sensors.contains(&1) => {
            Some(paced_bare(1, fps).await?)
        }
        _ => None,
    };
    let handoff_floor = match paced.first() {
        Some(&fps) => {
            let frames = ((a.paced_s * fps) as usize).max(30);
            eprintln!("[latency] thread hand-offs alone: {frames} of each kind at {fps} fps");
            let f =
                tokio::task::spawn_blocking(move || crate::handoff::measure(fps, frames)).await??;
            eprintln!(
                "[latency]   p50: thread → runtime {:.3} ms, runtime → thread {:.3} ms",
                med(&f.thread_to_runtime_ms),
                med(&f.runtime_to_thread_ms)
            );
            Some(f)
        }
        None => None,
    };
    let bare_tonic_paced = match (paced.first(), a.sensors.iter().max()) {
        (Some(&fps), Some(&streams)) => Some(paced_bare(streams, fps).await?),
        _ => None,
    };

    let ctx = Ctx {
        a: &a,
        bundle: &bundle,
        emulated: &emulated,
        host: &host,
        bin_dir,
    };
    let mut results = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        eprintln!(
            "[latency] scenario {}/{}: {} (warm-up {} s, windows of {} s until stable, at most {})",
            i + 1,
            scenarios.len(),
            s.name(),
            a.warmup_s,
            a.window_s,
            a.max_windows
        );
        let r = run_scenario(&ctx, s, i).await?;
        let e2e: Vec<f64> = r.samples.iter().map(|f| f.end_to_end).collect();
        eprintln!(
            "[latency]   {} after {} windows: {:.1} frames/s, end-to-end p50 {:.3} ms p99 {:.3} ms (predicted {:.3} ms); CPU per frame aggregator {:.3} ms ({:.1} wake-ups), sensor {:.3} ms ({:.1} wake-ups)",
            if r.stable { "stable" } else { "NOT stable" },
            r.windows.len(),
            r.frames_per_second,
            med(&e2e),
            percentile(&e2e, 99.0),
            r.predicted.end_to_end_ms,
            r.aggregator_cpu_ms_per_frame,
            r.aggregator_thread_runs_per_frame,
            r.sensor_cpu_ms_per_frame,
            r.sensor_thread_runs_per_frame
        );
        results.push(r);
    }
    let report = Report {
        machine: machine(),
        bundle: a.bundle.display().to_string(),
        scenarios: results,
        inprocess,
        bare_tonic,
        bare_tonic_paced,
        bare_tonic_paced_one_stream,
        handoff_floor,
    };
    std::fs::write(a.out.join("latency.json"), serde_json::to_string(&report)?)?;
    std::fs::write(a.out.join("latency.csv"), csv(&report))?;
    std::fs::write(a.out.join("latency.md"), markdown(&report, &a))?;
    std::fs::write(a.out.join("latency.svg"), svg(&report))?;
    eprintln!(
        "[latency] wrote {}/latency.{{md,csv,json,svg}}",
        a.out.display()
    );
    Ok(())
}

/// One prediction's stages, along the path of the view that arrived first: the frame's end to
/// end runs from its earliest capture, so a view captured later (its camera thread started
/// late) that still arrives first adds its capture skew; the residual after the aggregator's
/// own stages is publishing.
fn frame_sample(p: &splitnets_proto::wire::Prediction) -> FrameSample {
    use splitnets_proto::wire::ViewReport;
    let ms = |ns: u64| ns as f64 / 1e6;
    let n = p.views.len().max(1) as f64;
    let mean = |f: &dyn Fn(&ViewReport) -> f64| p.views.iter().map(f).sum::<f64>() / n;
    let path = |v: &ViewReport| ms(v.sensor_ns) + ms(v.queue_ns + v.link_ns);
    let earliest_capture = p.views.iter().map(|v| v.capture_time_unix_ns).min();
    // An aggregator older than `capture_time_unix_ns` reports none: no skew, shortest path.
    let (first_arrival, skew) = match earliest_capture {
        Some(c0) if c0 > 0 => {
            let received = |v: &ViewReport| ms(v.capture_time_unix_ns - c0) + path(v);
            let first = p
                .views
                .iter()
                .min_by(|a, b| received(a).total_cmp(&received(b)))
                .expect("a view");
            (received(first), ms(first.capture_time_unix_ns - c0))
        }
        _ => (p.views.iter().map(path).fold(f64::INFINITY, f64::min), 0.0),
    };
    let e2e = ms(p.end_to_end_ns);
    let handoff = ms(p.handoff_ns);
    FrameSample {
        end_to_end: e2e,
        sensor: mean(&|v| ms(v.sensor_ns)),
        queue: mean(&|v| ms(v.queue_ns)),
        link: mean(&|v| ms(v.link_ns)),
        wait: ms(p.wait_ns),
        decode: ms(p.decode_ns),
        tail: ms(p.tail_ns),
        skew,
        handoff,
        residual: (e2e
            - first_arrival.min(e2e)
            - ms(p.wait_ns)
            - handoff
            - ms(p.decode_ns)
            - ms(p.tail_ns))
        .max(0.0),
        bytes_per_view: mean(&|v| v.message_bytes as f64),
        degraded: !p.views_missing.is_empty(),
    }
}

fn stage(r: &ScenarioResult, f: fn(&FrameSample) -> f64) -> Vec<f64> {
    r.samples.iter().map(f).collect()
}

fn e2e(r: &ScenarioResult) -> Vec<f64> {
    stage(r, |f| f.end_to_end)
}

fn csv(r: &Report) -> String {
    // perf_analyzer's columns (latencies in µs), in its order, mapped onto our stages:
    // Client Send = sensor stage, Network+Server Send/Recv = sensor queue + link,
    // Server Queue = fusion wait, Server Compute Input = decode, Infer = tail,
    // Output = hand-off and publish. Then ours (capture skew and hand-off apart at the end).
    let mut s = String::from(
        "Concurrency,Request Rate,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response Size,\
scenario,views,emulation,stable,windows,frames,degraded_frames,p99.9 latency,bytes_per_frame,predicted latency,predicted bytes_per_view,aggregator_cpu_us_per_frame,sensor_cpu_us_per_frame,aggregator_thread_runs_per_frame,sensor_thread_runs_per_frame,capture_skew_us,handoff_us\n",
    );
    for x in &r.scenarios {
        let us = |v: Vec<f64>| med(&v) * 1e3;
        let e = e2e(x);
        let avg = e.iter().sum::<f64>() / e.len().max(1) as f64;
        let bytes = med(&stage(x, |f| f.bytes_per_view));
        let _ = writeln!(
            s,
            "{},{},{:.2},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},0,{:.1},{:.1},{:.1},{:.1},{:.1},{:.0},\"{}\",{},{},{},{},{},{},{:.1},{:.0},{:.1},{:.0},{:.1},{:.1},{:.2},{:.2},{:.1},{:.1}",
            x.scenario.sensors,
            match x.scenario.rate {
                Rate::Fps(f) => f.to_string(),
                Rate::Max => "max".into(),
            },
            x.frames_per_second,
            us(stage(x, |f| f.sensor)),
            us(stage(x, |f| f.queue + f.link)),
            us(stage(x, |f| f.wait)),
            us(stage(x, |f| f.decode)),
            us(stage(x, |f| f.tail)),
            us(stage(x, |f| f.handoff + f.residual)),
            percentile(&e, 50.0) * 1e3,
            percentile(&e, 90.0) * 1e3,
            percentile(&e, 95.0) * 1e3,
            percentile(&e, 99.0) * 1e3,
            avg * 1e3,
            bytes,
            x.scenario.name(),
            x.scenario.views,
            x.scenario.emulation,
            x.stable,
            x.windows.len(),
            x.samples.len(),
            x.samples.iter().filter(|f| f.degraded).count(),
            percentile(&e, 99.9) * 1e3,
            bytes * f64::from(x.scenario.sensors),
            x.predicted.end_to_end_ms * 1e3,
            x.predicted.bytes_per_view,
            x.aggregator_cpu_ms_per_frame * 1e3,
            x.sensor_cpu_ms_per_frame * 1e3,
            x.aggregator_thread_runs_per_frame,
            x.sensor_thread_runs_per_frame,
            us(stage(x, |f| f.skew)),
            us(stage(x, |f| f.handoff)),
        );
    }
    s
}

fn inprocess_for(r: &Report, views: u32, fps: Option<f64>) -> Option<&InProcess> {
    r.inprocess
        .iter()
        .find(|p| p.views == views && p.fps == fps)
}

fn find(r: &Report, sensors: u32, rate: Rate, emulation: bool) -> Option<&ScenarioResult> {
    r.scenarios.iter().find(|x| {
        x.scenario.sensors == sensors
            && x.scenario.views == sensors
            && x.scenario.rate == rate
            && x.scenario.emulation == emulation
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

fn markdown(r: &Report, a: &LatencyArgs) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Latency harness: `splitnets-bench latency`\n");
    let _ = writeln!(
        s,
        "Machine: {}. Bundle `{}`. Warm-up {} s, then windows of {} s until the last three have p50 and throughput within ±{:.0} % of their mean (at most {}); the last three windows are reported. Fusion deadline {} ms unless the scenario says otherwise. All processes on this one host (loopback gRPC).\n",
        r.machine,
        r.bundle,
        a.warmup_s,
        a.window_s,
        a.stability * 100.0,
        a.max_windows,
        a.deadline_ms
    );
    let _ = writeln!(
        s,
        "## Daemons\n\n| scenario | stable (windows) | frames/s | p50 | p90 | p95 | p99 | p99.9 | predicted e2e | bytes/view (predicted) | CPU/frame aggregator | CPU/frame per sensor | wake-ups/frame aggregator | wake-ups/frame per sensor |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for x in &r.scenarios {
        let e = e2e(x);
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} ({:.0}) | {:.3} | {:.3} | {:.1} | {:.1} |",
            x.scenario.name(),
            if x.stable { "yes" } else { "no" },
            x.windows.len(),
            x.frames_per_second,
            percentile(&e, 50.0),
            percentile(&e, 90.0),
            percentile(&e, 95.0),
            percentile(&e, 99.0),
            percentile(&e, 99.9),
            x.predicted.end_to_end_ms,
            med(&stage(x, |f| f.bytes_per_view)),
            x.predicted.bytes_per_view,
            x.aggregator_cpu_ms_per_frame,
            x.sensor_cpu_ms_per_frame,
            x.aggregator_thread_runs_per_frame,
            x.sensor_thread_runs_per_frame
        );
    }
    let _ = writeln!(
        s,
        "\nLatencies in ms, end to end (capture → prediction published). Predicted: the cost model for the same bundle, the sensors and link under `{}` with emulation, this host's profile otherwise and for the aggregator (never emulated); loopback has no transport term in the cost model. Bytes: measured message bytes per view (gRPC prefix included) beside the bundle's link budget. CPU and wake-ups (times a thread of the process was put on a CPU) from each process's `/proc/PID/task/*/schedstat`, per fused frame on the aggregator, per frame on a sensor.\n",
        a.profile
    );
    for x in r.scenarios.iter().filter(|x| x.emulation_detail.is_some()) {
        let _ = writeln!(
            s,
            "- {}: {}",
            x.scenario.name(),
            x.emulation_detail.as_deref().unwrap_or_default()
        );
    }
    let _ = writeln!(
        s,
        "\n## Per-stage breakdown (medians, ms)\n\n| scenario | sensor | queue | link | capture skew | fusion wait | hand-off | decode | tail | publish | predicted sensor / link / tail |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for x in &r.scenarios {
        let m = |f: fn(&FrameSample) -> f64| med(&stage(x, f));
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} / {:.3} / {:.3} |",
            x.scenario.name(),
            m(|f| f.sensor),
            m(|f| f.queue),
            m(|f| f.link),
            m(|f| f.skew),
            m(|f| f.wait),
            m(|f| f.handoff),
            m(|f| f.decode),
            m(|f| f.tail),
            m(|f| f.residual),
            x.predicted.sensor_ms,
            x.predicted.link_ms,
            x.predicted.tail_ms
        );
    }
    let _ = writeln!(
        s,
        "\n## Baselines in the same run\n\n| baseline | frames | p50 | p90 | p99 | head (all views) p50 | decode + tail p50 |\n|---|---|---|---|---|---|---|"
    );
    for p in &r.inprocess {
        let _ = writeln!(
            s,
            "| in process, {} view(s), {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            p.views,
            p.fps
                .map_or("hot loop".into(), |f| format!("paced at {f} fps")),
            p.total_ms.len(),
            med(&p.total_ms),
            percentile(&p.total_ms, 90.0),
            percentile(&p.total_ms, 99.0),
            med(&p.head_ms),
            med(&p.tail_ms)
        );
    }
    let b = &r.bare_tonic;
    let _ = writeln!(
        s,
        "| bare tonic stream, {} B messages, one at a time (round trip) | {} | {:.3} | {:.3} | {:.3} | | |",
        b.message_bytes,
        b.round_trip_ms.len(),
        med(&b.round_trip_ms),
        percentile(&b.round_trip_ms, 90.0),
        percentile(&b.round_trip_ms, 99.0)
    );
    let _ = writeln!(
        s,
        "\nBare tonic stream with {} messages in flight: **{:.0} messages/s**.\n",
        b.window, b.messages_per_second
    );
    if let Some(p) = &r.bare_tonic_paced {
        let _ = writeln!(
            s,
            "Bare tonic stream paced like the cameras ({} connection(s), each on a single-threaded runtime of its own, × {} fps, one acknowledgement per {} messages; {} messages in {:.1} s): CPU per message **{:.3} ms on the server** ({:.1} wake-ups) and {:.3} ms on the client ({:.1} wake-ups). That is gRPC alone, with nothing decoded or run, every message finding its threads asleep.\n",
            p.streams,
            p.fps,
            p.ack_every,
            p.messages,
            p.seconds,
            p.server_cpu_ms_per_message,
            p.server_runs_per_message,
            p.client_cpu_ms_per_message,
            p.client_runs_per_message
        );
    }
    if let Some(p) = &r.bare_tonic_paced_one_stream {
        let _ = writeln!(
            s,
            "The same with one connection ({} messages): one way (the client's send → the server's handler has it) p50 **{:.3} ms**, p90 {:.3}: the floor of one sensor's link stage here.\n",
            p.one_way_ms.len(),
            med(&p.one_way_ms),
            percentile(&p.one_way_ms, 90.0),
        );
    }
    if let Some(f) = &r.handoff_floor {
        let _ = writeln!(
            s,
            "The frame path's thread hand-offs alone ({} of each at {} fps, tokio `mpsc`, nothing else done): a plain thread → a one-threaded runtime (the sensor's camera thread → its link: the queue stage) p50 **{:.3} ms** (p90 {:.3}); a multi-threaded runtime's task → a plain thread (the aggregator's fusion → its tail thread: the hand-off stage) p50 **{:.3} ms** (p90 {:.3}). What waking a sleeping thread costs on this host.\n",
            f.thread_to_runtime_ms.len(),
            f.fps,
            med(&f.thread_to_runtime_ms),
            percentile(&f.thread_to_runtime_ms, 90.0),
            med(&f.runtime_to_thread_ms),
            percentile(&f.runtime_to_thread_ms, 90.0),
        );
    }
    let _ = writeln!(s, "## Targets (issue 11), from this run\n");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_frac = |x: &ScenarioResult| {
        let w: f64 = x.windows[x.windows.len() - 3..]
            .iter()
            .map(|w| w.seconds)
            .sum();
        let c: f64 = x.windows[x.windows.len() - 3..]
            .iter()
            .map(|w| w.aggregator_cpu_seconds)
            .sum();
        c / w
    };
    if let (Some(d), Some(p)) = (
        find(r, 1, Rate::Fps(30.0), false),
        inprocess_for(r, 1, Some(30.0)),
    ) {
        let (m, ip) = (med(&e2e(d)), med(&p.total_ms));
        let st = |f: fn(&FrameSample) -> f64| med(&stage(d, f));
        let _ = writeln!(
            s,
            "- One sensor at 30 fps: end-to-end p50 {m:.3} ms vs paced in-process p50 {ip:.3} ms + 0.25 = {:.3} ms: {} (gap {:.3} ms). By stage (medians, daemons vs in process): sensor stage {:.3} vs head {:.3}; sensor queue {:.3}, link {:.3} (the bare stream's round trip here: {:.3}), hand-off to the tail thread {:.3} and publish {:.3}, none of which exist in process; decode + tail {:.3} vs {:.3}.",
            ip + 0.25,
            verdict(m <= ip + 0.25),
            m - ip,
            st(|f| f.sensor),
            med(&p.head_ms),
            st(|f| f.queue),
            st(|f| f.link),
            med(&r.bare_tonic.round_trip_ms),
            st(|f| f.handoff),
            st(|f| f.residual),
            st(|f| f.decode + f.tail),
            med(&p.tail_ms),
        );
        if let Some((link, queue, handoff)) = floors(r, 1) {
            let floors = link + queue + handoff;
            let _ = writeln!(
                s,
                "  Floors on this host, each measured alone at this rate with nothing else done (above): link {link:.3} (gRPC one way), queue {queue:.3} and hand-off {handoff:.3} (waking a sleeping thread). These {floors:.3} ms are paid by any sensor process and aggregator process joined by a gRPC stream, with a thread hand-off on each side, against the 0.25 ms the target allows beyond in process; the daemons' own cost beyond the floors is {:.3} ms (link {:+.3}, queue {:+.3}, hand-off {:+.3}, and the rest of the gap {:.3}).",
                m - ip - floors,
                st(|f| f.link) - link,
                st(|f| f.queue) - queue,
                st(|f| f.handoff) - handoff,
                (m - ip) - st(|f| f.link) - st(|f| f.queue) - st(|f| f.handoff),
            );
        }
    }
    if let Some(d) = find(r, 4, Rate::Fps(30.0), false) {
        let e = e2e(d);
        let (p50, p99) = (percentile(&e, 50.0), percentile(&e, 99.0));
        let ip = inprocess_for(r, 4, Some(30.0)).map_or(f64::NAN, |p| med(&p.total_ms));
        let m = |f: fn(&FrameSample) -> f64| med(&stage(d, f));
        let _ = writeln!(
            s,
            "- Four sensors at 30 fps: p99 {p99:.3} ms vs 1.5 × p50 = {:.3} ms: {}. Gap to in-process (paced p50 {ip:.3} ms): {:.3} ms; by stage (medians): sensor stage {:.3} (in process the 4 heads run one after another: {:.3} for all four), sensor queue {:.3}, link {:.3}, capture skew {:.3} (the first view in was captured after the earliest), wait for the slowest view {:.3} (four sensors' heads share this host's {cores} cores, where a headset gives each camera its own), hand-off to the tail thread {:.3}, decode {:.3} + tail {:.3} (in process {:.3}), publish {:.3}.",
            1.5 * p50,
            verdict(p99 <= 1.5 * p50),
            p50 - ip,
            m(|f| f.sensor),
            inprocess_for(r, 4, Some(30.0)).map_or(f64::NAN, |p| med(&p.head_ms)),
            m(|f| f.queue),
            m(|f| f.link),
            m(|f| f.skew),
            m(|f| f.wait),
            m(|f| f.handoff),
            m(|f| f.decode),
            m(|f| f.tail),
            inprocess_for(r, 4, Some(30.0)).map_or(f64::NAN, |p| med(&p.tail_ms)),
            m(|f| f.residual),
        );
    }
    if let Some(d) = r
        .scenarios
        .iter()
        .find(|x| x.scenario.sensors < x.scenario.views)
    {
        let degraded: Vec<&FrameSample> = d.samples.iter().filter(|f| f.degraded).collect();
        let e: Vec<f64> = degraded.iter().map(|f| f.end_to_end).collect();
        let w: Vec<f64> = degraded.iter().map(|f| f.wait).collect();
        let arrival: Vec<f64> = degraded
            .iter()
            .map(|f| f.end_to_end - f.wait - f.handoff - f.decode - f.tail - f.residual)
            .collect();
        // From the first view's arrival: the wait, then hand-off, decode, tail and publish.
        let after: Vec<f64> = degraded
            .iter()
            .map(|f| f.wait + f.handoff + f.decode + f.tail + f.residual)
            .collect();
        let part = |g: fn(&&FrameSample) -> f64| med(&degraded.iter().map(g).collect::<Vec<_>>());
        let dl = d.scenario.deadline_ms as f64;
        let _ = writeln!(
            s,
            "- A frame missing a view ({} of {} cameras, deadline {} ms): end-to-end p50 {:.3} ms = first view's arrival {:.3} (capture skew {:.3} included) + wait {:.3} + hand-off {:.3} + decode {:.3} + tail {:.3} + publish {:.3}; the wait overshoots the deadline by {:.3} ms and the frame completes {:.3} ms after it (p50 over frames): {} (target ≤ deadline + 0.25 ms after the first view arrives).",
            d.scenario.sensors,
            d.scenario.views,
            d.scenario.deadline_ms,
            med(&e),
            med(&arrival),
            part(|f| f.skew),
            med(&w),
            part(|f| f.handoff),
            part(|f| f.decode),
            part(|f| f.tail),
            part(|f| f.residual),
            med(&w) - dl,
            med(&after) - dl,
            verdict(med(&after) <= dl + 0.25)
        );
    }
    if let Some(d) = find(r, 1, Rate::Max, false) {
        let frac = cpu_frac(d);
        let ratio = d.frames_per_second / r.bare_tonic.messages_per_second;
        let _ = writeln!(
            s,
            "- Aggregator frame path at max rate, one sensor: {:.0} fused frames/s = {:.0} % of the bare tonic stream's {:.0} messages/s: {}. The aggregator used {:.0} % of a core meanwhile ({:.3} ms CPU per frame, so it alone could sustain ≈ {:.0} frames/s on a core; the sensor used {:.3} ms per frame).",
            d.frames_per_second,
            100.0 * ratio,
            r.bare_tonic.messages_per_second,
            verdict(ratio >= 0.5),
            100.0 * frac,
            d.aggregator_cpu_ms_per_frame,
            1e3 / d.aggregator_cpu_ms_per_frame.max(1e-9),
            d.sensor_cpu_ms_per_frame
        );
        let sensor_rate = 1e3 / d.sensor_cpu_ms_per_frame.max(1e-9);
        let agg_rate = 1e3 / d.aggregator_cpu_ms_per_frame.max(1e-9);
        let _ = writeln!(
            s,
            "  Why: {}; the aggregator's frame path alone, at its CPU per frame, would reach ≈ {:.0} % of the bare stream's rate on a core of its own.",
            if sensor_rate < agg_rate {
                format!(
                    "the one sensor, not the aggregator, sets the rate (its {:.3} ms of CPU per frame allow ≈ {sensor_rate:.0} frames/s, and the aggregator was not saturated)",
                    d.sensor_cpu_ms_per_frame
                )
            } else {
                "the aggregator's CPU per frame sets the rate".to_string()
            },
            100.0 * agg_rate / r.bare_tonic.messages_per_second.max(1e-9)
        );
        if let Some(hot) = inprocess_for(r, 1, None) {
            // The model's own work bounds any frame path: decode + tail, hot, in process.
            let tail = med(&hot.tail_ms);
            let cap = 1e3 / tail.max(1e-9);
            let _ = writeln!(
                s,
                "  Frames are finished one at a time on the tail thread: decode + tail alone (hot, in process: {tail:.3} ms) caps the aggregator at ≈ {cap:.0} frames/s = {:.0} % of the bare stream's rate{}.",
                100.0 * cap / r.bare_tonic.messages_per_second.max(1e-9),
                if cap < 0.5 * r.bare_tonic.messages_per_second {
                    ": with this model no frame path with one tail thread can reach 50 %"
                } else {
                    ""
                }
            );
        }
    }
    for d in r.scenarios.iter().filter(|x| x.scenario.emulation) {
        let m = med(&e2e(d));
        let err = (m - d.predicted.end_to_end_ms) / d.predicted.end_to_end_ms;
        let _ = writeln!(
            s,
            "- Emulated, {}: measured p50 {m:.3} ms vs predicted {:.3} ms ({:+.0} %): {}.",
            d.scenario.name(),
            d.predicted.end_to_end_ms,
            100.0 * err,
            verdict(err.abs() <= 0.10)
        );
        // Where the difference is, stage by stage (medians; the cost model has no queue,
        // wait, hand-off or publish term).
        let st = |f: fn(&FrameSample) -> f64| med(&stage(d, f));
        let _ = writeln!(
            s,
            "  Measured − predicted by stage (ms): sensor {:+.3} (padding to the profile's time, then encode), link {:+.3} (the loopback gRPC stack on top of the emulated transmission), sensor queue {:+.3}, capture skew {:+.3}, wait for the slowest view {:+.3}{}, hand-off {:+.3}, decode + tail {:+.3} (at 30 fps the tail runs cold), publish {:+.3}.",
            st(|f| f.sensor) - d.predicted.sensor_ms,
            st(|f| f.link) - d.predicted.link_ms,
            st(|f| f.queue),
            st(|f| f.skew),
            st(|f| f.wait),
            if d.scenario.sensors > 2 {
                " (the sensors' padded heads share this host's cores)"
            } else {
                ""
            },
            st(|f| f.handoff),
            st(|f| f.decode + f.tail) - d.predicted.tail_ms,
            st(|f| f.residual),
        );
        // The cost model prices compute and transmission; the floors say how much of the
        // excess any gRPC-per-camera deployment on this host pays on top of them.
        if let Some((link, queue, handoff)) = floors(r, d.scenario.sensors) {
            let floors = link + queue + handoff;
            let excess = med(&e2e(d)) - d.predicted.end_to_end_ms;
            let _ = writeln!(
                s,
                "  Of the {excess:.3} ms over the prediction, {floors:.3} ms are this host's floors (gRPC one way with as many connections, both thread hand-offs; measured above), which the cost model does not price; beyond them the measurement is {:+.1} % from the prediction.",
                100.0 * (med(&e2e(d)) - floors - d.predicted.end_to_end_ms)
                    / d.predicted.end_to_end_ms
            );
        }
    }
    if let Some(d) = find(r, 4, Rate::Fps(30.0), false) {
        let ip = inprocess_for(r, 4, Some(30.0));
        let tail = ip.map_or(f64::NAN, |p| med(&p.tail_ms));
        let head = ip.map_or(f64::NAN, |p| med(&p.head_ms)) / 4.0;
        let _ = writeln!(
            s,
            "- CPU per frame beyond the model's own compute, 4 × 30 fps: aggregator {:.3} ms per fused frame (decode + tail in process {tail:.3}) → overhead {:.3} ms vs target 0.15: {}; each sensor {:.3} ms per frame (head + encode in process {head:.3}) → overhead {:.3} ms vs target 0.10: {}.",
            d.aggregator_cpu_ms_per_frame,
            d.aggregator_cpu_ms_per_frame - tail,
            verdict(d.aggregator_cpu_ms_per_frame - tail <= 0.15),
            d.sensor_cpu_ms_per_frame,
            d.sensor_cpu_ms_per_frame - head,
            verdict(d.sensor_cpu_ms_per_frame - head <= 0.10),
        );
        if let Some(p) = r
            .bare_tonic_paced
            .as_ref()
            .filter(|p| p.streams == 4 && p.fps == 30.0)
        {
            let _ = writeln!(
                s,
                "  The floor for one gRPC stream per camera on this host, from the paced bare stream of the same messages: {:.3} ms of server CPU per 4 messages (the aggregator's overhead above is {:.1} × that) and {:.3} ms of client CPU per message (a sensor's overhead is {:.1} × that).",
                4.0 * p.server_cpu_ms_per_message,
                (d.aggregator_cpu_ms_per_frame - tail) / (4.0 * p.server_cpu_ms_per_message),
                p.client_cpu_ms_per_message,
                (d.sensor_cpu_ms_per_frame - head) / p.client_cpu_ms_per_message,
            );
        }
    }
    let _ = writeln!(
        s,
        "\nFiles: `latency.csv` (perf_analyzer's columns, latencies in µs, then ours), `latency.json` (every window and frame), `latency.svg` (per-stage medians per scenario, predicted and in-process marks)."
    );
    s
}

/// A stage of the chart: label, colour, its value in a frame.
type Stage = (&'static str, &'static str, fn(&FrameSample) -> f64);

/// One scenario's bar: name, stage medians, predicted, paced in-process, measured p50 (ms).
type SvgRow = (String, Vec<f64>, f64, Option<f64>, f64);

/// Horizontal stacked bars: each scenario's per-stage medians, with the prediction (red tick)
/// and the paced in-process p50 for the same view count (blue tick).
fn svg(r: &Report) -> String {
    let stages: [Stage; 9] = [
        ("sensor", "#4e79a7", |f| f.sensor),
        ("queue", "#a0cbe8", |f| f.queue),
        ("link", "#f28e2b", |f| f.link),
        ("capture skew", "#e15759", |f| f.skew),
        ("wait", "#ffbe7d", |f| f.wait),
        ("hand-off", "#b6992d", |f| f.handoff),
        ("decode", "#59a14f", |f| f.decode),
        ("tail", "#8cd17d", |f| f.tail),
        ("publish", "#9d7660", |f| f.residual),
    ];
    let rows: Vec<SvgRow> = r
        .scenarios
        .iter()
        .map(|x| {
            let ip = match x.scenario.rate {
                Rate::Fps(f) => inprocess_for(r, x.scenario.views, Some(f)),
                Rate::Max => inprocess_for(r, x.scenario.views, None),
            }
            .map(|p| med(&p.total_ms));
            (
                x.scenario.name(),
                stages.iter().map(|(_, _, f)| med(&stage(x, *f))).collect(),
                x.predicted.end_to_end_ms,
                ip,
                med(&e2e(x)),
            )
        })
        .collect();
    let xmax = rows
        .iter()
        .map(|(_, v, p, _, e)| v.iter().sum::<f64>().max(*p).max(*e))
        .fold(0.1, f64::max)
        * 1.1;
    let (left, right, top, bar, gap) = (230.0, 40.0, 50.0, 18.0, 10.0);
    let width = 900.0;
    let height = top + rows.len() as f64 * (bar + gap) + 70.0;
    let px = |ms: f64| left + ms / xmax * (width - left - right);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">End-to-end latency by stage (medians, ms); red: cost model; blue: in process, paced</text>\n"
    );
    for (i, (name, vals, pred, ip, _)) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar + gap);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{name}</text>",
            left - 6.0,
            y + bar * 0.75
        );
        let mut x0 = 0.0;
        for ((label, color, _), v) in stages.iter().zip(vals) {
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{color}\"><title>{label} {v:.3} ms</title></rect>",
                px(x0),
                (px(x0 + v) - px(x0)).max(0.0)
            );
            x0 += v;
        }
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"red\" stroke-width=\"2\"/>",
            px(*pred),
            y - 2.0,
            y + bar + 2.0
        );
        if let Some(ip) = ip {
            let _ = writeln!(
                s,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"blue\" stroke-width=\"2\"/>",
                px(*ip),
                y - 2.0,
                y + bar + 2.0
            );
        }
    }
    let axis_y = top + rows.len() as f64 * (bar + gap) + 5.0;
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{axis_y}\" y2=\"{axis_y}\" stroke=\"black\"/>",
        width - right
    );
    for k in 0..=5 {
        let v = xmax * k as f64 / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{v:.2}</text>",
            px(v),
            axis_y + 15.0
        );
    }
    let mut lx = left;
    for (label, color, _) in &stages {
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{label}</text>",
            axis_y + 30.0,
            lx + 14.0,
            axis_y + 39.0
        );
        lx += 90.0;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p50: f64, fps: f64) -> WindowSummary {
        WindowSummary {
            frames: 60,
            seconds: 2.0,
            p50_ms: p50,
            frames_per_second: fps,
            aggregator_cpu_seconds: 0.0,
            sensors_cpu_seconds: 0.0,
            aggregator_thread_runs: 0,
            sensors_thread_runs: 0,
        }
    }

    #[test]
    fn stability_needs_three_windows_within_the_tolerance() {
        assert!(!stable(&[w(1.0, 30.0), w(1.0, 30.0)], 0.1));
        assert!(stable(
            &[w(5.0, 10.0), w(1.0, 30.0), w(1.05, 30.0), w(0.97, 29.5)],
            0.1
        ));
        // p50 spread too wide in the last three.
        assert!(!stable(&[w(1.0, 30.0), w(1.3, 30.0), w(1.0, 30.0)], 0.1));
        // Throughput still ramping.
        assert!(!stable(&[w(1.0, 20.0), w(1.0, 26.0), w(1.0, 30.0)], 0.1));
    }

    #[test]
    fn a_frame_is_split_along_the_first_arrived_views_path() {
        use splitnets_proto::wire::{Prediction, ViewReport};
        let ms = 1_000_000u64;
        let c0 = 1_764_000_000_000 * ms;
        // View 0 captured first, 0.8 ms on its way; view 1 captured 0.3 ms later, 0.4 ms on
        // its way, so it is in first (at 0.7 ms).
        let view = |i: u32, capture: u64, sensor: u64, link: u64| ViewReport {
            view_index: i,
            capture_time_unix_ns: capture,
            sensor_ns: sensor,
            link_ns: link,
            message_bytes: 100,
            ..Default::default()
        };
        let p = Prediction {
            views: vec![
                view(0, c0, 600_000, 200_000),
                view(1, c0 + 300_000, 300_000, 100_000),
            ],
            wait_ns: 100_000,
            handoff_ns: 50_000,
            decode_ns: 10_000,
            tail_ns: 200_000,
            // 0.7 + 0.1 + 0.05 + 0.01 + 0.2 = 1.06 ms, and 0.02 ms of publishing.
            end_to_end_ns: 1_080_000,
            ..Default::default()
        };
        let f = frame_sample(&p);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(f.skew, 0.3), "{f:?}");
        assert!(close(f.handoff, 0.05), "{f:?}");
        assert!(close(f.residual, 0.02), "{f:?}");
        assert!(close(f.sensor, 0.45) && close(f.link, 0.15), "{f:?}");
        assert!(!f.degraded);
        // Without capture times (an older aggregator): the shortest path, no skew.
        let mut old = p;
        old.views
            .iter_mut()
            .for_each(|v| v.capture_time_unix_ns = 0);
        old.handoff_ns = 0;
        let f = frame_sample(&old);
        assert!(close(f.skew, 0.0), "{f:?}");
        assert!(close(f.residual, 1.08 - 0.4 - 0.1 - 0.01 - 0.2), "{f:?}");
    }

    #[test]
    fn rates_parse_and_refuse_nonsense() {
        assert_eq!(Rate::parse("30").unwrap(), Rate::Fps(30.0));
        assert_eq!(Rate::parse("MAX").unwrap(), Rate::Max);
        assert!(Rate::parse("0").is_err());
        assert!(Rate::parse("fast").is_err());
    }
}

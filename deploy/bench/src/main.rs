//! `splitnets-bench`: measure the daemons and predict what they would do elsewhere.
//!
//! - `sensors`: runs the real daemons with 1..N sensors on loopback, measures each stage, fits
//!   the discrete-event simulator on the one-sensor run's stage distributions and the
//!   two-sensor run's wait for the second view, and puts its predictions for every sensor count
//!   beside the measurements (the error for N > 2 is a validation, not a fit).
//! - `latency`: the latency harness (see [`latency`]): fixed-rate and max-throughput scenarios,
//!   a sensor-count sweep, headset emulation off and on, stability windows, per-stage
//!   breakdown, the cost model's prediction, the in-process pipeline and a bare tonic stream
//!   beside every measurement.
//! - `whatif`: the simulator on a hardware profile (default: the headset) for many sensors, with
//!   per-camera links or one shared bus: latency percentiles, link utilisation and the highest
//!   sustainable frame rate.

mod bare;
mod handoff;
mod latency;
mod measure;
mod model;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use splitnets_cost_model::profile::LinkTopology;
use splitnets_cost_model::sim::{Dist, Placement, SimConfig, SimReport, simulate, sustainable_fps};
use splitnets_deploy::stats::percentile;
use splitnets_proto::bundle::Bundle;

#[derive(Parser, Debug)]
#[command(version, about = "SplitNets measurement harness and what-if simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the daemons with 1..N sensors; simulator fitted on 1, validated on the rest.
    Sensors(SensorsArgs),
    /// The latency harness: rates × sensor counts × emulation, stability windows, percentiles,
    /// stages, CPU, beside the cost model, the in-process pipeline and a bare tonic stream.
    Latency(latency::LatencyArgs),
    /// Simulate many sensors on a hardware profile (per-camera links and a shared bus).
    Whatif(WhatifArgs),
}

#[derive(clap::Args, Debug)]
struct SensorsArgs {
    /// Split bundle (default: the embedded demo bundle).
    #[arg(long, default_value = "deploy/bundles/fashion-mnist-4view")]
    bundle: PathBuf,
    /// Sensor counts to run (each with a copy of the bundle for that many cameras).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    counts: Vec<u32>,
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Seconds measured per sensor count, after the warm-up.
    #[arg(long, default_value_t = 20.0)]
    measure_s: f64,
    #[arg(long, default_value_t = 3.0)]
    warmup_s: f64,
    /// Rounds over all counts (1, 2, 3, 4, 1, 2, …); a count's samples are pooled over its
    /// rounds, so a slow spell of a shared machine does not land on one count only.
    #[arg(long, default_value_t = 2)]
    repeat: u32,
    #[arg(long, default_value_t = 50)]
    deadline_ms: u64,
    /// Host profile for the cost model's compute predictions.
    #[arg(long, default_value = "cost-model/profiles/host.toml")]
    profile: String,
    #[arg(
        long,
        env = "SPLITNETS_DATA_DIR",
        default_value = "/usr/share/datasets/fashion-mnist"
    )]
    data_dir: PathBuf,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[arg(long, default_value = "out/bench-sensors")]
    out: PathBuf,
    /// Keep a dashboard page's feed open on the aggregator during every run (to measure what
    /// a connected browser costs the frame path).
    #[arg(long)]
    dashboard_viewer: bool,
    /// Analyse the raw measurements of an earlier run (its `runs.json`) instead of measuring.
    #[arg(long)]
    from_runs: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct WhatifArgs {
    #[arg(long, default_value = "deploy/bundles/fashion-mnist-4view")]
    bundle: PathBuf,
    /// `headset` or a profile TOML file.
    #[arg(long, default_value = "headset")]
    profile: String,
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,64")]
    sensors: Vec<u32>,
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    #[arg(long, default_value_t = 50)]
    deadline_ms: u64,
    /// Spread of every compute time (σ of its logarithm).
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// Software transport and hand-off times measured by `sensors` (its fit.json), added to
    /// the profile's link latency; without it, the profile's link latency alone.
    #[arg(long)]
    transport_from: Option<PathBuf>,
    /// The busiest resource's utilisation allowed at the sustainable frame rate.
    #[arg(long, default_value_t = 0.9)]
    max_utilization: f64,
    #[arg(long, default_value_t = 3000)]
    frames: u64,
    #[arg(long, default_value = "out/bench-whatif")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sensors(a) => tokio::runtime::Runtime::new()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(sensors(a))),
        Command::Latency(a) => tokio::runtime::Runtime::new()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(latency::latency(a))),
        Command::Whatif(a) => whatif(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("splitnets-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn secs(ms: &[f64]) -> Vec<f64> {
    ms.iter().map(|x| x / 1e3).collect()
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// What the simulator takes from measurements of this machine (seconds).
///
/// From the one-sensor run, as measured distributions: the sensor stage (capture, head,
/// encode), the link (sensor queue + gRPC stream, per message), decode + tail for one view, and
/// the hand-off (first view in → published, minus decode and tail). From the two-sensor run,
/// one number: the time the aggregator's receive path spends on a view, the only stage that
/// one sensor cannot show (its views never queue there); it is chosen so that the simulated
/// wait for the second view matches the measured one, and taken out of the link's delay so that
/// the one-sensor total is unchanged.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TransportFit {
    /// Link delay per message, the receive path's time taken out.
    link_seconds: Vec<f64>,
    receive_path_seconds: f64,
    handoff_seconds: Vec<f64>,
    sensor_seconds: Vec<f64>,
    tail_one_view_seconds: Vec<f64>,
}

fn fit_one(one: &measure::Measured, receive: f64) -> TransportFit {
    TransportFit {
        link_seconds: one
            .link_ms
            .iter()
            .map(|l| (l / 1e3 - receive).max(0.0))
            .collect(),
        receive_path_seconds: receive,
        // With one view, the wait is the hand-over from the link to fusion.
        handoff_seconds: one
            .residual_ms
            .iter()
            .zip(&one.wait_ms)
            .map(|(r, w)| (r + w) / 1e3)
            .collect(),
        sensor_seconds: secs(&one.sensor_ms),
        tail_one_view_seconds: one
            .decode_ms
            .iter()
            .zip(&one.tail_ms)
            .map(|(d, t)| (d + t) / 1e3)
            .collect(),
    }
}

/// Fits on one sensor, then the receive path's time on two (bisection on the simulated median
/// wait for the second view).
fn fit(
    one: &measure::Measured,
    two: Option<&measure::Measured>,
    per_view: f64,
    fps: f64,
    deadline_ms: u64,
) -> TransportFit {
    let Some(two) = two else {
        return fit_one(one, 0.0);
    };
    let target = median(&two.wait_ms) / 1e3;
    let wait = |r: f64| {
        simulate(&host_config(
            &fit_one(one, r),
            per_view,
            2,
            fps,
            2000,
            deadline_ms,
        ))
        .fusion_wait
        .p50
    };
    let (mut lo, mut hi) = (0.0, median(&one.link_ms) / 1e3);
    if wait(hi) < target {
        return fit_one(one, hi);
    }
    for _ in 0..30 {
        let mid = 0.5 * (lo + hi);
        if wait(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    fit_one(one, 0.5 * (lo + hi))
}

/// The simulator for `n` co-located sensors (one host's cores shared by every process).
fn host_config(
    f: &TransportFit,
    per_view: f64,
    n: u32,
    fps: f64,
    frames: u64,
    deadline_ms: u64,
) -> SimConfig {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    SimConfig {
        sensors: n,
        fps,
        frames,
        seed: 1,
        placement: Placement::SharedHost { cores },
        sensor: Dist::Empirical(f.sensor_seconds.clone()),
        message_bytes: 0,
        links: LinkTopology::Parallel,
        bandwidth_bits_per_second: f64::INFINITY,
        link_latency: Dist::Empirical(f.link_seconds.clone()),
        sensor_queue: 8,
        receive: Dist::Fixed(f.receive_path_seconds),
        tail_base: Dist::Empirical(f.tail_one_view_seconds.clone()),
        tail_per_view: Dist::Fixed(per_view),
        publish: Dist::Empirical(f.handoff_seconds.clone()),
        fusion_deadline_seconds: deadline_ms as f64 / 1e3,
    }
}

fn pct_err(pred: f64, meas: f64) -> f64 {
    100.0 * (pred - meas) / meas
}

/// The raw measurements of a `sensors` run, kept for re-analysis (`--from-runs`).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRuns {
    runs: Vec<measure::Measured>,
    /// Median end to end per count and round, milliseconds.
    rounds: Vec<Vec<f64>>,
}

/// Runs every count `repeat` times round-robin; pools each count's samples.
async fn measure_counts(
    a: &SensorsArgs,
    bundle: &Bundle,
    bin_dir: &std::path::Path,
) -> anyhow::Result<(Vec<measure::Measured>, Vec<Vec<f64>>)> {
    let mut runs: Vec<measure::Measured> = Vec::new();
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); a.counts.len()]; // p50 per round
    for round in 0..a.repeat.max(1) {
        for (i, &n) in a.counts.iter().enumerate() {
            let dir = measure::bundle_with_views(bundle, n, &a.out)?;
            eprintln!(
                "[bench] round {}/{}: {n} sensor(s) at {} fps, {} s warm-up + {} s measured ...",
                round + 1,
                a.repeat.max(1),
                a.fps,
                a.warmup_s,
                a.measure_s
            );
            let m = measure::run(&measure::RunSpec {
                bin_dir: bin_dir.to_path_buf(),
                bundle_dir: dir,
                sensors: n,
                fps: a.fps,
                warmup_s: a.warmup_s,
                measure_s: a.measure_s,
                deadline_ms: a.deadline_ms,
                data_dir: &a.data_dir,
                work_dir: a.out.join(format!("logs-{n}-{round}")),
                dashboard_viewer: a.dashboard_viewer,
            })
            .await?;
            eprintln!(
                "[bench]   {} frames, end-to-end p50 {:.3} ms p99 {:.3} ms; CPU per frame: aggregator {:.3} ms, sensor {:.3} ms",
                m.frames,
                median(&m.end_to_end_ms),
                percentile(&m.end_to_end_ms, 99.0),
                m.aggregator_cpu_ms_per_frame,
                m.sensor_cpu_ms_per_frame
            );
            rounds[i].push(median(&m.end_to_end_ms));
            match runs.iter_mut().find(|r| r.sensors == n) {
                Some(r) => r.absorb(m),
                None => runs.push(m),
            }
        }
    }
    Ok((runs, rounds))
}

async fn sensors(a: SensorsArgs) -> anyhow::Result<()> {
    let bundle = Bundle::load(&a.bundle)?;
    let profile = model::load_profile(&a.profile)?;
    let costs = model::bundle_costs(&bundle, &profile)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let bin_dir = a
        .bin_dir
        .clone()
        .unwrap_or_else(splitnets_deploy::default_bin_dir);
    let (runs, rounds) = match &a.from_runs {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let saved: SavedRuns = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a runs.json of this tool", p.display()))?;
            (saved.runs, saved.rounds)
        }
        None => measure_counts(&a, &bundle, &bin_dir).await?,
    };
    std::fs::write(
        a.out.join("runs.json"),
        serde_json::to_string(&SavedRuns {
            runs: runs.clone(),
            rounds: rounds.clone(),
        })?,
    )?;
    let one = runs
        .iter()
        .find(|m| m.sensors == 1)
        .context("the simulator is fitted on the one-sensor run: include 1 in --counts")?;
    let two = runs.iter().find(|m| m.sensors == 2);
    let f = fit(one, two, costs.tail_per_view_seconds, a.fps, a.deadline_ms);
    std::fs::write(a.out.join("fit.json"), serde_json::to_string(&f)?)?;
    let frames = (a.measure_s * a.fps) as u64;
    let mut rows = Vec::new();
    for m in &runs {
        let sim = simulate(&host_config(
            &f,
            costs.tail_per_view_seconds,
            m.sensors,
            a.fps,
            frames.max(2000),
            a.deadline_ms,
        ));
        rows.push((m, sim));
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Measured vs simulated: 1..N sensors on this machine\n"
    );
    let _ = writeln!(
        md,
        "Bundle `{}` (the same network for a rig of N cameras), {} fps, {} s measured after {} s warm-up per count and round, {} rounds (samples pooled), fusion deadline {} ms, {} cores. Every process on one host: the simulator models that as a shared pool of the host's cores.\n",
        a.bundle.display(),
        a.fps,
        a.measure_s,
        a.warmup_s,
        a.repeat.max(1),
        a.deadline_ms,
        std::thread::available_parallelism().map_or(1, |c| c.get())
    );
    let _ = writeln!(
        md,
        "**Fitted on one and two sensors**: from the one-sensor run, the distributions of the sensor stage, of the link (sensor queue + gRPC stream, per message), of decode + tail for one view and of the hand-off (first view in → published, minus decode and tail); from the two-sensor run, one number, the time the aggregator's receive path spends per view ({:.3} ms: it handles views one at a time, which a single sensor never shows), chosen so that the simulated median wait for the second view matches the measured one. The extra tail time per view comes from the cost model ({:.2} µs, host profile `{}`). Rows with N > 2 are predictions, not fits; N = 2's wait is fitted, its latency is not.\n",
        f.receive_path_seconds * 1e3,
        costs.tail_per_view_seconds * 1e6,
        a.profile
    );
    let _ = writeln!(
        md,
        "| sensors | frames | measured e2e p50 / p90 / p99 (ms) | simulated p50 / p90 / p99 (ms) | error p50 / p90 / p99 | measured wait p50 (ms) | simulated wait p50 (ms) | CPU/frame aggregator (ms) | CPU/frame per sensor (ms) |\n|---|---|---|---|---|---|---|---|---|"
    );
    let mut csv = String::from(
        "sensors,frames,measured_p50_ms,measured_p90_ms,measured_p99_ms,simulated_p50_ms,simulated_p90_ms,simulated_p99_ms,measured_wait_p50_ms,simulated_wait_p50_ms,aggregator_cpu_ms_per_frame,sensor_cpu_ms_per_frame,bytes_per_view\n",
    );
    let mut errors = Vec::new();
    for (m, s) in &rows {
        let meas = [50.0, 90.0, 99.0].map(|p| percentile(&m.end_to_end_ms, p));
        let sim = [s.end_to_end.p50, s.end_to_end.p90, s.end_to_end.p99].map(|x| x * 1e3);
        let err: Vec<f64> = meas
            .iter()
            .zip(&sim)
            .map(|(m, s)| pct_err(*s, *m))
            .collect();
        if m.sensors > 2 {
            errors.push((m.sensors, err.clone()));
        }
        let _ = writeln!(
            md,
            "| {}{} | {} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {:+.0} % / {:+.0} % / {:+.0} % | {:.3} | {:.3} | {:.3} | {:.3} |",
            m.sensors,
            match m.sensors {
                1 => " (fit)",
                2 => " (wait fit)",
                _ => "",
            },
            m.frames,
            meas[0],
            meas[1],
            meas[2],
            sim[0],
            sim[1],
            sim[2],
            err[0],
            err[1],
            err[2],
            median(&m.wait_ms),
            s.fusion_wait.p50 * 1e3,
            m.aggregator_cpu_ms_per_frame,
            m.sensor_cpu_ms_per_frame
        );
        let _ = writeln!(
            csv,
            "{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.1}",
            m.sensors,
            m.frames,
            meas[0],
            meas[1],
            meas[2],
            sim[0],
            sim[1],
            sim[2],
            median(&m.wait_ms),
            s.fusion_wait.p50 * 1e3,
            m.aggregator_cpu_ms_per_frame,
            m.sensor_cpu_ms_per_frame,
            m.message_bytes_per_view
        );
    }
    let worst = errors
        .iter()
        .flat_map(|(_, e)| e.iter().map(|x| x.abs()))
        .fold(0.0, f64::max);
    let worst50 = errors.iter().map(|(_, e)| e[0].abs()).fold(0.0, f64::max);
    if errors.is_empty() {
        let _ = writeln!(
            md,
            "\n**Validation error**: none measured (no count above 2 sensors in this run).\n"
        );
    } else {
        let _ = writeln!(
            md,
            "\n**Validation error (N > 2)**: p50 within {worst50:.0} %, any of p50/p90/p99 within {worst:.0} %.\n"
        );
    }
    let _ = writeln!(
        md,
        "Measured p50 per round (ms), the spread of this machine: {}\n",
        a.counts
            .iter()
            .zip(&rounds)
            .map(|(n, r)| format!(
                "N={n}: {}",
                r.iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        md,
        "Stage medians measured (ms): {}",
        rows.iter()
            .map(|(m, _)| format!(
                "N={}: sensor {:.3}, link {:.3}, wait {:.3}, decode {:.3}, tail {:.3}, hand-off {:.3}",
                m.sensors,
                median(&m.sensor_ms),
                median(&m.link_ms),
                median(&m.wait_ms),
                median(&m.decode_ms),
                median(&m.tail_ms),
                median(&m.residual_ms)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        md,
        "\nCost model (host profile) for comparison: head {:.4} ms, tail {:.4} ms with one view; bytes per view on the wire measured {:.0}, link budget {}.",
        costs.head_seconds * 1e3,
        costs.tail_one_view_seconds * 1e3,
        rows.first().map_or(0.0, |(m, _)| m.message_bytes_per_view),
        costs.frame_bytes
    );
    std::fs::write(a.out.join("sensors.md"), &md)?;
    std::fs::write(a.out.join("sensors.csv"), csv)?;
    std::fs::write(
        a.out.join("sensors.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "args": format!("{a:?}"),
            "cost_model": costs,
            "runs": rows.iter().map(|(m, s)| serde_json::json!({
                "sensors": m.sensors, "frames": m.frames, "degraded": m.degraded,
                "measured_ms": {
                    "p50": percentile(&m.end_to_end_ms, 50.0),
                    "p90": percentile(&m.end_to_end_ms, 90.0),
                    "p99": percentile(&m.end_to_end_ms, 99.0),
                },
                "aggregator_cpu_ms_per_frame": m.aggregator_cpu_ms_per_frame,
                "sensor_cpu_ms_per_frame": m.sensor_cpu_ms_per_frame,
                "simulated": s,
            })).collect::<Vec<_>>(),
        }))?,
    )?;
    print!("{md}");
    Ok(())
}

fn whatif(a: WhatifArgs) -> anyhow::Result<()> {
    let bundle = Bundle::load(&a.bundle)?;
    let profile = model::load_profile(&a.profile)?;
    let costs = model::bundle_costs(&bundle, &profile)?;
    let transport = match &a.transport_from {
        Some(p) => Some(
            serde_json::from_str::<TransportFit>(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| {
                format!(
                    "{} is not a fit.json of `splitnets-bench sensors`",
                    p.display()
                )
            })?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let jitter = |median: f64| Dist::LogNormal {
        median,
        sigma: a.jitter,
    };
    let link_latency = match &transport {
        Some(t) => Dist::Empirical(
            t.link_seconds
                .iter()
                .map(|x| x + profile.link.latency_seconds)
                .collect(),
        ),
        None => Dist::Fixed(profile.link.latency_seconds),
    };
    let receive = transport.as_ref().map_or(0.0, |t| t.receive_path_seconds);
    let publish = transport.as_ref().map_or(Dist::Fixed(0.0), |t| {
        Dist::Empirical(t.handoff_seconds.clone())
    });
    let message_bytes = costs.frame_bytes + profile.link.message_overhead_bytes;
    let config = |n: u32, links: LinkTopology| SimConfig {
        sensors: n,
        fps: a.fps,
        frames: a.frames,
        seed: 1,
        placement: Placement::Dedicated,
        sensor: jitter(costs.head_seconds),
        message_bytes,
        links,
        bandwidth_bits_per_second: profile.link.bandwidth_bits_per_second,
        link_latency: link_latency.clone(),
        sensor_queue: 8,
        receive: Dist::Fixed(receive),
        tail_base: jitter(costs.tail_one_view_seconds - costs.tail_per_view_seconds),
        tail_per_view: jitter(costs.tail_per_view_seconds),
        publish: publish.clone(),
        fusion_deadline_seconds: a.deadline_ms as f64 / 1e3,
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# What-if: {} sensors on `{}`\n",
        a.sensors
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        profile.name
    );
    let _ = writeln!(
        md,
        "Command: `{}`.\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        md,
        "Bundle `{}`; cost model under `{}`: head {:.4} ms on each sensor, tail {:.4} ms + {:.2} µs per view on the aggregator, {} B per view per frame on the link ({:.0} Mbit/s, latency {:.0} µs{}). Compute times jittered log-normally (σ {}). {} fps, fusion deadline {} ms, {} frames simulated. Sustainable fps: the highest frame rate with nothing dropped, late or degraded and no resource above {:.0} % busy.\n",
        a.bundle.display(),
        a.profile,
        costs.head_seconds * 1e3,
        (costs.tail_one_view_seconds - costs.tail_per_view_seconds) * 1e3,
        costs.tail_per_view_seconds * 1e6,
        message_bytes,
        profile.link.bandwidth_bits_per_second / 1e6,
        profile.link.latency_seconds * 1e6,
        if transport.is_some() {
            ", plus the software transport and hand-off measured on this machine"
        } else {
            "; no software transport time"
        },
        a.jitter,
        a.fps,
        a.deadline_ms,
        a.frames,
        100.0 * a.max_utilization
    );
    let _ = writeln!(
        md,
        "| sensors | links | e2e p50 (ms) | p99 (ms) | p99.9 (ms) | wait for views p99 (ms) | link utilisation | tail utilisation | busiest compute (receive path included) | sustainable fps |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut out: Vec<serde_json::Value> = Vec::new();
    for &n in &a.sensors {
        for links in [LinkTopology::Parallel, LinkTopology::SharedBus] {
            let c = config(n, links);
            let r: SimReport = simulate(&c);
            let sustainable = sustainable_fps(&c, 1.0, 100_000.0, 24, a.max_utilization);
            let name = match links {
                LinkTopology::Parallel => "per camera",
                LinkTopology::SharedBus => "shared bus",
            };
            let _ = writeln!(
                md,
                "| {n} | {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} % | {:.1} % | {:.1} % | {} |",
                r.end_to_end.p50 * 1e3,
                r.end_to_end.p99 * 1e3,
                r.end_to_end.p999 * 1e3,
                r.fusion_wait.p99 * 1e3,
                100.0 * r.link_utilization,
                100.0 * r.tail_utilization,
                100.0 * r.compute_utilization,
                sustainable.map_or("< 1".to_string(), |f| format!("{f:.0}"))
            );
            out.push(serde_json::json!({"sensors": n, "links": name, "report": r, "sustainable_fps": sustainable}));
        }
    }
    std::fs::write(a.out.join("whatif.md"), &md)?;
    std::fs::write(
        a.out.join("whatif.json"),
        serde_json::to_string_pretty(&out)?,
    )?;
    print!("{md}");
    Ok(())
}

//! `splitnets-soak`: a long run of the daemons, then the same under injected faults.
//!
//! Phase 1 (steady): an aggregator and one sensor per camera at a fixed frame rate for a fixed
//! time; the resident memory (RSS) of every process is sampled, and every frame each camera
//! captured is accounted for (fused into a prediction, or lost). Phase 2 (faults): the same
//! cluster, with sensors and the aggregator killed (SIGKILL) and restarted at random; per fault,
//! the frames lost and the time until every sensor's frames are fused again.
//!
//! Writes `report.md`, `report.json`, `rss.csv` and `faults.csv` to `--out`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use splitnets_camera::dataset;
use splitnets_deploy::stats::{percentile, rss_bytes};
use splitnets_deploy::{ClusterOptions, LocalCluster, default_bin_dir, metric_sum};
use splitnets_proto::bundle::Bundle;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Soak and fault injection: sensors + aggregator for a long time, then killed and restarted at random"
)]
struct Args {
    /// Split bundle (default: the embedded demo bundle).
    #[arg(
        long,
        env = "SPLITNETS_BUNDLE",
        default_value = "deploy/bundles/fashion-mnist-4view"
    )]
    bundle: PathBuf,
    /// Camera frame rate.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Length of the steady phase (no faults), seconds.
    #[arg(long, default_value_t = 600.0)]
    steady_s: f64,
    /// Warm-up excluded from the memory-growth figure, seconds.
    #[arg(long, default_value_t = 60.0)]
    warmup_s: f64,
    /// Length of the fault-injection phase, seconds (0: skip it).
    #[arg(long, default_value_t = 180.0)]
    faults_s: f64,
    /// Mean time between faults, seconds (uniform in [0.5, 1.5] × this).
    #[arg(long, default_value_t = 12.0)]
    fault_every_s: f64,
    /// Share of faults that kill the aggregator, spread evenly (the rest kill one sensor).
    #[arg(long, default_value_t = 0.4)]
    aggregator_fault_share: f64,
    /// How long a killed process stays down before it is restarted: uniform in [0.5, this] s.
    #[arg(long, default_value_t = 3.0)]
    max_down_s: f64,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Memory sampling period, seconds.
    #[arg(long, default_value_t = 5.0)]
    sample_s: f64,
    /// Fusion deadline, milliseconds.
    #[arg(long, default_value_t = 50)]
    deadline_ms: u64,
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = dataset::DEFAULT_DIR)]
    data_dir: PathBuf,
    /// Where the daemons' executables are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Report directory.
    #[arg(long, default_value = "out/soak")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("splitnets-soak: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Which views were fused for each frame sequence, and when (from `Predictions/Watch`), kept
/// across aggregator restarts: the watcher reconnects by itself.
#[derive(Default)]
struct Seen {
    /// sequence → (views fused as a bit set, completed time unix ns)
    frames: BTreeMap<u64, (u32, u64)>,
    end_to_end_ms: Vec<f64>,
}

fn spawn_watcher(endpoint: String, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    use splitnets_proto::wire::{WatchRequest, predictions_client::PredictionsClient};
    tokio::spawn(async move {
        loop {
            if let Ok(mut client) = PredictionsClient::connect(endpoint.clone()).await
                && let Ok(stream) = client.watch(WatchRequest {}).await
            {
                let mut stream = stream.into_inner();
                while let Ok(Some(p)) = stream.message().await {
                    let mut s = seen.lock().expect("watcher state");
                    let bits = p.views_used.iter().fold(0u32, |b, v| b | (1 << v));
                    let e = s
                        .frames
                        .entry(p.sequence)
                        .or_insert((0, p.completed_time_unix_ns));
                    e.0 |= bits;
                    s.end_to_end_ms.push(p.end_to_end_ns as f64 / 1e6);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[derive(serde::Serialize, Clone)]
struct RssRow {
    t_s: f64,
    process: String,
    rss_bytes: u64,
}

#[derive(serde::Serialize, Clone)]
struct ProcessGrowth {
    process: String,
    rss_after_warmup_bytes: u64,
    rss_end_bytes: u64,
    rss_max_bytes: u64,
    growth_percent: f64,
}

#[derive(serde::Serialize)]
struct SteadyReport {
    seconds: f64,
    fps: f64,
    views: u32,
    frames_expected_per_view: u64,
    frames_captured: u64,
    view_frames_fused: u64,
    view_frames_lost: u64,
    frames_fused_all_views: u64,
    frames_degraded: u64,
    frames_missing: u64,
    late_views: f64,
    rejected: f64,
    end_to_end_ms_p50: f64,
    end_to_end_ms_p99: f64,
    end_to_end_ms_max: f64,
    growth: Vec<ProcessGrowth>,
}

#[derive(serde::Serialize, Clone)]
struct FaultRow {
    at_s: f64,
    target: String,
    down_s: f64,
    /// From the kill until the replacement was started (sensor) or ready (aggregator): the
    /// down time plus the aggregator's start-up.
    outage_s: f64,
    /// From the restarted process being started (sensor) or ready (aggregator) until every
    /// sensor's frames are fused again.
    recover_s: Option<f64>,
    /// For an aggregator fault: from its return until each sensor's first fused frame.
    per_sensor_reconnect_s: Vec<Option<f64>>,
    /// View-frames (one camera's frame) not fused between this fault and the next.
    view_frames_lost: u64,
    /// Frames with no prediction at all in that interval.
    frames_missing: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bundle = tokio::task::spawn_blocking({
        let b = args.bundle.clone();
        move || Bundle::load(&b)
    })
    .await??;
    let views = bundle.manifest.cameras.views;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let work = args.out.join("logs");
    let opts = ClusterOptions {
        bin_dir: args.bin_dir.clone().unwrap_or_else(default_bin_dir),
        bundle: args.bundle.clone(),
        work_dir: work.clone(),
        fusion_deadline_ms: args.deadline_ms,
        listen: "127.0.0.1:0".parse()?,
        aggregator_args: vec![],
        sensor_args: vec!["--data-dir".into(), args.data_dir.display().to_string()],
    };
    eprintln!(
        "[soak] bundle {} ({views} views) at {} fps; steady {} s (warm-up {} s), faults {} s; logs in {}",
        args.bundle.display(),
        args.fps,
        args.steady_s,
        args.warmup_s,
        args.faults_s,
        work.display()
    );
    let steady = steady_phase(&args, opts.clone(), views).await?;
    let faults = if args.faults_s > 0.0 {
        let mut o = opts.clone();
        o.work_dir = args.out.join("logs-faults");
        fault_phase(&args, o, views).await?
    } else {
        Vec::new()
    };
    write_reports(&args, &steady, &faults)?;
    Ok(())
}

async fn steady_phase(
    args: &Args,
    opts: ClusterOptions,
    views: u32,
) -> anyhow::Result<(SteadyReport, Vec<RssRow>)> {
    let mut cluster = LocalCluster::start(opts).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = spawn_watcher(cluster.endpoint(), seen.clone());
    let frames = (args.steady_s * args.fps).round() as u64;
    let start_at = now_unix_ms() + 2000;
    for v in 0..views {
        cluster.start_sensor(
            v,
            &[
                "--fps".into(),
                args.fps.to_string(),
                "--frames".into(),
                frames.to_string(),
                "--start-at-unix-ms".into(),
                start_at.to_string(),
            ],
        )?;
    }
    let pids: Vec<(String, u32)> =
        std::iter::once(("aggregator".to_string(), cluster.aggregator_pid()))
            .chain((0..views).map(|v| (format!("sensor-{v}"), cluster.sensor_pid(v))))
            .filter_map(|(n, p)| p.map(|p| (n, p)))
            .collect();
    let t0 = Instant::now();
    let mut rss = Vec::new();
    let mut next_print = 0.0;
    let total = args.steady_s + 2.0;
    loop {
        let t = t0.elapsed().as_secs_f64();
        for (name, pid) in &pids {
            if let Some(b) = rss_bytes(*pid) {
                rss.push(RssRow {
                    t_s: t,
                    process: name.clone(),
                    rss_bytes: b,
                });
            }
        }
        if t >= next_print {
            let fused = seen.lock().expect("watcher state").frames.len();
            let agg = rss
                .iter()
                .rev()
                .find(|r| r.process == "aggregator")
                .map_or(0, |r| r.rss_bytes);
            eprintln!(
                "[soak] steady {t:>5.0}/{total:.0} s: {fused} frames fused, aggregator RSS {:.1} MB",
                agg as f64 / 1e6
            );
            next_print += 60.0;
        }
        if t > total + 1.0 || pids[1..].iter().all(|(_, p)| rss_bytes(*p).is_none()) {
            break;
        }
        tokio::time::sleep(Duration::from_secs_f64(args.sample_s)).await;
    }
    cluster
        .wait_sensors(Duration::from_secs(30))
        .await
        .context("sensors of the steady phase")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reports = cluster.sensor_reports(views);
    let metrics = cluster.metrics_text().await?;
    watcher.abort();
    cluster.stop().await?;

    let s = seen.lock().expect("watcher state");
    let captured: u64 = reports
        .iter()
        .map(|r| r["frames_captured"].as_u64().unwrap_or(0))
        .sum();
    let all = (1u32 << views) - 1;
    let fused_view_frames: u64 = s.frames.values().map(|(b, _)| b.count_ones() as u64).sum();
    let complete = s.frames.values().filter(|(b, _)| *b == all).count() as u64;
    let growth = pids
        .iter()
        .map(|(name, _)| {
            let rows: Vec<&RssRow> = rss.iter().filter(|r| &r.process == name).collect();
            let after = rows
                .iter()
                .find(|r| r.t_s >= args.warmup_s)
                .or(rows.last())
                .map_or(0, |r| r.rss_bytes);
            // The last sample taken while the process was still in its steady state.
            let end = rows
                .iter()
                .rev()
                .find(|r| r.t_s <= args.steady_s)
                .map_or(0, |r| r.rss_bytes);
            let max = rows
                .iter()
                .filter(|r| r.t_s >= args.warmup_s)
                .map(|r| r.rss_bytes)
                .max()
                .unwrap_or(0);
            ProcessGrowth {
                process: name.clone(),
                rss_after_warmup_bytes: after,
                rss_end_bytes: end,
                rss_max_bytes: max,
                growth_percent: 100.0 * (end as f64 - after as f64) / after.max(1) as f64,
            }
        })
        .collect();
    let e2e = &s.end_to_end_ms;
    let report = SteadyReport {
        seconds: args.steady_s,
        fps: args.fps,
        views,
        frames_expected_per_view: frames,
        frames_captured: captured,
        view_frames_fused: fused_view_frames,
        view_frames_lost: frames * views as u64 - fused_view_frames,
        frames_fused_all_views: complete,
        frames_degraded: s.frames.len() as u64 - complete,
        frames_missing: frames.saturating_sub(s.frames.len() as u64),
        late_views: metric_sum(&metrics, "aggregator_late_views_total", &[]),
        rejected: metric_sum(&metrics, "aggregator_frames_rejected_total", &[]),
        end_to_end_ms_p50: percentile(e2e, 50.0),
        end_to_end_ms_p99: percentile(e2e, 99.0),
        end_to_end_ms_max: e2e.iter().copied().fold(0.0, f64::max),
        growth,
    };
    Ok((report, rss))
}

async fn fault_phase(
    args: &Args,
    opts: ClusterOptions,
    views: u32,
) -> anyhow::Result<Vec<FaultRow>> {
    let mut cluster = LocalCluster::start(opts).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = spawn_watcher(cluster.endpoint(), seen.clone());
    let start_at = now_unix_ms() + 2000;
    let sensor_args: Vec<String> = vec![
        "--fps".into(),
        args.fps.to_string(),
        "--start-at-unix-ms".into(),
        start_at.to_string(),
    ];
    for v in 0..views {
        cluster.start_sensor(v, &sensor_args)?;
    }
    let seq_at = |unix_ms: u64| -> u64 {
        (unix_ms.saturating_sub(start_at) as f64 * args.fps / 1000.0).floor() as u64
    };
    let mut rng = splitnets_camera::rig::SplitMix64::new(args.seed);
    let t0 = Instant::now();
    // Let everything settle first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut faults: Vec<(FaultRow, u64)> = Vec::new(); // (row, first sequence of its interval)
    while t0.elapsed().as_secs_f64() < args.faults_s {
        let wait = args.fault_every_s * (0.5 + rng.next_f64());
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        let down = 0.5 + rng.next_f64() * (args.max_down_s - 0.5).max(0.0);
        let at_ms = now_unix_ms();
        let at_s = t0.elapsed().as_secs_f64();
        let first_seq = seq_at(at_ms);
        let mut row = FaultRow {
            at_s,
            target: String::new(),
            down_s: down,
            outage_s: 0.0,
            recover_s: None,
            per_sensor_reconnect_s: Vec::new(),
            view_frames_lost: 0,
            frames_missing: 0,
        };
        let back_ms;
        // Aggregator faults spread evenly through the schedule (a share, not a coin flip, so a
        // short run still has them); the sensor and the down time are random.
        let index = faults.len() as f64;
        let share = args.aggregator_fault_share;
        if ((index + 1.0) * share).floor() > (index * share).floor() {
            row.target = "aggregator".into();
            cluster.kill_aggregator().await?;
            tokio::time::sleep(Duration::from_secs_f64(down)).await;
            cluster
                .restart_aggregator()
                .await
                .context("restarting the aggregator")?;
            back_ms = now_unix_ms();
        } else {
            let v = rng.below(u64::from(views)) as u32;
            row.target = format!("sensor-{v}");
            cluster.kill_sensor(v).await?;
            tokio::time::sleep(Duration::from_secs_f64(down)).await;
            back_ms = now_unix_ms();
            cluster.start_sensor(v, &sensor_args)?;
        }
        row.outage_s = back_ms.saturating_sub(at_ms) as f64 / 1e3;
        // Recovery: every view fused again, in a frame triggered after the return.
        let deadline = Instant::now() + Duration::from_secs(20);
        let back_seq = seq_at(back_ms);
        let mut per_view: Vec<Option<f64>> = vec![None; views as usize];
        while Instant::now() < deadline && per_view.iter().any(Option::is_none) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let s = seen.lock().expect("watcher state");
            for (seq, (bits, done_ns)) in s.frames.range(back_seq..) {
                let _ = seq;
                for (v, slot) in per_view.iter_mut().enumerate() {
                    if slot.is_none() && bits & (1 << v) != 0 {
                        *slot = Some((*done_ns as f64 / 1e6 - back_ms as f64) / 1e3);
                    }
                }
            }
        }
        row.recover_s = per_view.iter().try_fold(0.0f64, |m, x| x.map(|x| m.max(x)));
        if row.target == "aggregator" {
            row.per_sensor_reconnect_s = per_view;
        }
        eprintln!(
            "[soak] fault at {at_s:>5.1} s: {} down {down:.2} s, all views fused again after {}",
            row.target,
            row.recover_s
                .map_or("never (20 s)".to_string(), |r| format!("{r:.2} s"))
        );
        faults.push((row, first_seq));
    }
    // A quiet tail so the last fault's interval closes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let end_seq = seq_at(now_unix_ms()).saturating_sub(args.fps as u64); // a second of slack
    watcher.abort();
    cluster.stop().await?;

    let s = seen.lock().expect("watcher state");
    let n = faults.len();
    let bounds: Vec<u64> = faults.iter().map(|(_, f)| *f).collect();
    for i in 0..n {
        let (lo, hi) = (bounds[i], if i + 1 < n { bounds[i + 1] } else { end_seq });
        let mut lost = 0u64;
        let mut missing = 0u64;
        for seq in lo..hi {
            match s.frames.get(&seq) {
                Some((bits, _)) => lost += (views - bits.count_ones()) as u64,
                None => {
                    missing += 1;
                    lost += views as u64;
                }
            }
        }
        faults[i].0.view_frames_lost = lost;
        faults[i].0.frames_missing = missing;
    }
    Ok(faults.into_iter().map(|(r, _)| r).collect())
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn write_reports(
    args: &Args,
    (steady, rss): &(SteadyReport, Vec<RssRow>),
    faults: &[FaultRow],
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut csv = String::from("t_s,process,rss_bytes\n");
    for r in rss {
        let _ = writeln!(csv, "{:.1},{},{}", r.t_s, r.process, r.rss_bytes);
    }
    std::fs::write(args.out.join("rss.csv"), csv)?;
    let mut fcsv = String::from(
        "at_s,target,down_s,outage_s,recover_s,per_sensor_reconnect_s,view_frames_lost,frames_missing\n",
    );
    for f in faults {
        let per: Vec<String> = f
            .per_sensor_reconnect_s
            .iter()
            .map(|x| x.map_or("never".into(), |x| format!("{x:.3}")))
            .collect();
        let _ = writeln!(
            fcsv,
            "{:.1},{},{:.2},{:.3},{},{},{},{}",
            f.at_s,
            f.target,
            f.down_s,
            f.outage_s,
            f.recover_s.map_or("never".into(), |x| format!("{x:.3}")),
            per.join(";"),
            f.view_frames_lost,
            f.frames_missing
        );
    }
    std::fs::write(args.out.join("faults.csv"), fcsv)?;
    let agg_faults: Vec<&FaultRow> = faults.iter().filter(|f| f.target == "aggregator").collect();
    let reconnects: Vec<f64> = agg_faults
        .iter()
        .flat_map(|f| f.per_sensor_reconnect_s.iter().flatten().copied())
        .collect();
    let never = agg_faults
        .iter()
        .flat_map(|f| f.per_sensor_reconnect_s.iter())
        .filter(|x| x.is_none())
        .count();
    let worst_reconnect = reconnects.iter().copied().fold(0.0, f64::max);
    let json = serde_json::json!({
        "args": format!("{args:?}"),
        "steady": steady,
        "faults": faults,
        "aggregator_faults": agg_faults.len(),
        "sensor_reconnect_after_aggregator_return_s": {
            "p50": percentile(&reconnects, 50.0), "max": worst_reconnect, "never": never,
        },
    });
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;

    let mut md = String::new();
    let _ = writeln!(md, "# Soak and fault injection\n");
    let _ = writeln!(
        md,
        "Command: `{}` (on {}).\n",
        std::env::args().collect::<Vec<_>>().join(" "),
        splitnets_deploy::stats::machine()
    );
    let _ = writeln!(
        md,
        "Bundle `{}`, {} sensors at {} fps, fusion deadline {} ms. Steady phase {} s (memory growth measured from {} s on); fault phase {} s, a fault every {:.0} s on average (uniform 0.5–1.5×), {:.0} % of them on the aggregator, processes down 0.5–{} s, seed {}.\n",
        args.bundle.display(),
        steady.views,
        args.fps,
        args.deadline_ms,
        args.steady_s,
        args.warmup_s,
        args.faults_s,
        args.fault_every_s,
        100.0 * args.aggregator_fault_share,
        args.max_down_s,
        args.seed
    );
    let _ = writeln!(md, "## Steady phase (no faults)\n");
    let worst = steady
        .growth
        .iter()
        .map(|g| g.growth_percent)
        .fold(f64::MIN, f64::max);
    let _ = writeln!(
        md,
        "- Frames per camera: {} expected, {} captured in all; view-frames fused {} of {} → **lost {}** (target 0).",
        steady.frames_expected_per_view,
        steady.frames_captured,
        steady.view_frames_fused,
        steady.frames_expected_per_view * steady.views as u64,
        steady.view_frames_lost
    );
    let _ = writeln!(
        md,
        "- Frames fused from all views {}, degraded {}, never predicted {}; late views {}, rejected frames {}.",
        steady.frames_fused_all_views,
        steady.frames_degraded,
        steady.frames_missing,
        steady.late_views,
        steady.rejected
    );
    let _ = writeln!(
        md,
        "- End-to-end latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms.",
        steady.end_to_end_ms_p50, steady.end_to_end_ms_p99, steady.end_to_end_ms_max
    );
    let _ = writeln!(
        md,
        "- **RSS growth after warm-up, worst process: {worst:+.2} %** (target < 5 %).\n"
    );
    let _ = writeln!(
        md,
        "| process | RSS after warm-up (MB) | RSS at end (MB) | max (MB) | growth |\n|---|---|---|---|---|"
    );
    for g in &steady.growth {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2} | {:+.2} % |",
            g.process,
            mb(g.rss_after_warmup_bytes),
            mb(g.rss_end_bytes),
            mb(g.rss_max_bytes),
            g.growth_percent
        );
    }
    if !faults.is_empty() {
        let _ = writeln!(md, "\n## Fault injection\n");
        let _ = writeln!(
            md,
            "- {} faults: {} aggregator kills, {} sensor kills (SIGKILL, then restarted).",
            faults.len(),
            agg_faults.len(),
            faults.len() - agg_faults.len()
        );
        let _ = writeln!(
            md,
            "- **Sensors reconnected after the aggregator's return**: p50 {:.2} s, worst {:.2} s over {} reconnections, {} never (target: within 2 s).",
            percentile(&reconnects, 50.0),
            worst_reconnect,
            reconnects.len(),
            never
        );
        let _ = writeln!(
            md,
            "- Time is measured from the new aggregator being ready (sensor: from the kill's end, i.e. the restart) to the first fused frame holding that camera's view; for a sensor this includes its start-up (bundle load, ONNX Runtime warm-up).\n"
        );
        let _ = writeln!(
            md,
            "| at (s) | killed | down (s) | all views back after (s) | view-frames lost | outage (s) | of which during the outage (outage × fps × views) | frames without prediction |\n|---|---|---|---|---|---|---|---|"
        );
        for f in faults {
            let _ = writeln!(
                md,
                "| {:.1} | {} | {:.2} | {} | {} | {:.2} | {:.0} | {} |",
                f.at_s,
                f.target,
                f.down_s,
                f.recover_s.map_or("never".into(), |x| format!("{x:.2}")),
                f.view_frames_lost,
                f.outage_s,
                f.outage_s
                    * args.fps
                    * if f.target == "aggregator" {
                        steady.views as f64
                    } else {
                        1.0
                    },
                f.frames_missing
            );
        }
        let _ = writeln!(
            md,
            "\nFrames lost per fault are counted from the fault to the next fault (or the end): the frames of the killed process while it was down, plus what was in flight."
        );
    }
    std::fs::write(args.out.join("report.md"), &md)?;
    print!("{md}");
    Ok(())
}

//! `splitnets-demo`: the multi-camera demo on loopback.
//!
//! Starts an aggregator and one sensor process per camera of a bundle, replays the Fashion-MNIST
//! test split through the simulated cameras, prints each prediction as it arrives, then compares
//! the distributed run with the same bundle run in this one process: accuracy, per-frame
//! agreement, per-stage latency percentiles, and bytes per frame on the link.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use splitnets_camera::dataset;
use splitnets_deploy::replay::Replay;
use splitnets_deploy::stats::summary;
use splitnets_deploy::{ClusterOptions, LocalCluster, default_bin_dir, metric_sum};
use splitnets_proto::bundle::Bundle;
use splitnets_proto::wire::Prediction;
use splitnets_runtime::onnx_runtime::SessionOptions;
use splitnets_runtime::{LocalPipeline, argmax};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "SplitNets multi-camera demo: aggregator + one sensor per camera on loopback"
)]
struct Args {
    /// Split bundle (default: the embedded demo bundle).
    #[arg(
        long,
        env = "SPLITNETS_BUNDLE",
        default_value = "deploy/bundles/fashion-mnist-4view"
    )]
    bundle: PathBuf,
    /// Frames each camera captures.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Camera frame rate.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Start only this many sensors (views 0..N); the rest of the views are missing, and the
    /// aggregator fuses what arrives by the deadline.
    #[arg(long)]
    sensors: Option<u32>,
    /// Fusion deadline, milliseconds.
    #[arg(long, default_value_t = 50)]
    deadline_ms: u64,
    /// Print one line per N predictions (0: none).
    #[arg(long, default_value_t = 1)]
    print_every: u64,
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = dataset::DEFAULT_DIR)]
    data_dir: PathBuf,
    /// Where the daemons' executables are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Directory for the daemons' logs (default: a temporary one, removed at exit).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write the full report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("splitnets-demo: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_bundle_line(path: &std::path::Path, bundle: &Bundle) {
    let m = &bundle.manifest;
    let views = m.cameras.views;
    println!(
        "bundle {} ({}; digest {}): {} cameras, feature {:?} as {}, training accuracy one view {:.1} %, fused {:.1} %",
        path.display(),
        m.name,
        &bundle.digest[..12],
        views,
        m.split.feature_shape,
        m.codec,
        m.training
            .as_ref()
            .map_or(f64::NAN, |t| 100.0 * t.test_accuracy_one_view),
        m.training
            .as_ref()
            .map_or(f64::NAN, |t| 100.0 * t.test_accuracy_fused),
    );
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Loading reads files: off the async workers.
    let (bundle, test_set) = tokio::task::spawn_blocking({
        let (b, d) = (args.bundle.clone(), args.data_dir.clone());
        move || -> anyhow::Result<_> {
            let bundle = Bundle::load(&b)?;
            splitnets_runtime::onnx_runtime::environment()?;
            let replay = Replay::for_bundle(&bundle, &d)?;
            Ok((bundle, replay))
        }
    })
    .await??;
    let m = &bundle.manifest;
    let views = m.cameras.views;
    let sensors = args.sensors.unwrap_or(views).min(views);
    let tmp = tempfile::tempdir()?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    print_bundle_line(&args.bundle, &bundle);

    let mut cluster = LocalCluster::start(ClusterOptions {
        bin_dir: args.bin_dir.clone().unwrap_or_else(default_bin_dir),
        bundle: args.bundle.clone(),
        work_dir: work_dir.clone(),
        fusion_deadline_ms: args.deadline_ms,
        listen: "127.0.0.1:0".parse()?,
        aggregator_args: vec![],
        sensor_args: vec!["--data-dir".into(), args.data_dir.display().to_string()],
    })
    .await?;
    println!(
        "aggregator ready on {} (metrics http://{}/metrics)",
        cluster.grpc, cluster.admin
    );
    let mut watch = cluster.watch().await?;
    // A shared trigger 2 s ahead: every sensor loads and warms up, then all capture frame 0 together.
    let start_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 + 2000;
    for v in 0..sensors {
        cluster.start_sensor(
            v,
            &[
                "--frames".into(),
                args.frames.to_string(),
                "--fps".into(),
                args.fps.to_string(),
                "--start-at-unix-ms".into(),
                start_at.to_string(),
            ],
        )?;
    }
    println!(
        "{sensors} sensors started; {} frames at {} fps each\n",
        args.frames, args.fps
    );

    let mut predictions: BTreeMap<u64, Prediction> = BTreeMap::new();
    let budget = Duration::from_secs_f64(args.frames as f64 / args.fps.max(1.0) + 30.0);
    let collect = async {
        while let Some(p) = watch.message().await? {
            let truth = test_set.label(p.sequence);
            if args.print_every > 0 && p.sequence % args.print_every == 0 {
                println!(
                    "frame {:>5}  {:<12} {} truth {:<12} views {:?}  end-to-end {:>6.2} ms",
                    p.sequence,
                    p.class_name,
                    if p.class_index as usize == truth {
                        "ok  "
                    } else {
                        "MISS"
                    },
                    m.classes[truth],
                    p.views_used,
                    ms(p.end_to_end_ns)
                );
            }
            predictions.insert(p.sequence, p);
            if predictions.len() as u64 >= args.frames {
                break;
            }
        }
        anyhow::Ok(())
    };
    let collected = tokio::time::timeout(budget, collect).await;
    let sensors_ok = cluster.wait_sensors(Duration::from_secs(30)).await;
    let metrics = cluster.metrics_text().await.unwrap_or_default();
    let sensor_reports = cluster.sensor_reports(sensors);
    cluster.stop().await?;
    sensors_ok?;
    match collected {
        Ok(r) => r?,
        Err(_) => println!(
            "(stopped collecting after {budget:?}; {} predictions)",
            predictions.len()
        ),
    }
    anyhow::ensure!(
        !predictions.is_empty(),
        "no predictions arrived; logs in {}",
        work_dir.display()
    );

    // The same frames through the same bundle in this process.
    println!("\nrunning the same frames in one process for reference ...");
    let mut local = tokio::task::spawn_blocking({
        let b = bundle.clone();
        move || LocalPipeline::new(b, SessionOptions::default())
    })
    .await??;
    let report = tokio::task::spawn_blocking(move || {
        compare(&mut local, &test_set, &predictions, views, sensors)
    })
    .await??;
    let late = metric_sum(&metrics, "aggregator_late_views_total", &[]);
    let rejected = metric_sum(&metrics, "aggregator_frames_rejected_total", &[]);
    print_report(&report, &bundle, late, rejected);
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "bundle": args.bundle, "digest": bundle.digest, "frames": args.frames, "fps": args.fps,
            "sensors": sensors, "report": report, "sensor_reports": sensor_reports,
            "late_views": late, "rejected_frames": rejected,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct StageStats {
    stage: String,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
}

fn stage(name: &str, samples_ns: &[u64]) -> StageStats {
    let v: Vec<f64> = samples_ns.iter().map(|&n| ms(n)).collect();
    let (p50, p90, p99) = summary(&v);
    StageStats {
        stage: name.into(),
        p50_ms: p50,
        p90_ms: p90,
        p99_ms: p99,
    }
}

#[derive(Debug, serde::Serialize)]
struct Report {
    predictions: usize,
    partial_predictions: usize,
    accuracy_distributed: f64,
    accuracy_local_same_codec: f64,
    accuracy_local_float: f64,
    agreement_with_local: f64,
    max_abs_logit_diff_vs_local: f64,
    max_abs_logit_diff_float_vs_codec: f64,
    distributed_stages: Vec<StageStats>,
    local_stages: Vec<StageStats>,
    raw_frame_bytes_per_view: usize,
    payload_bytes_per_view: f64,
    message_bytes_per_view_mean: f64,
    message_bytes_per_view_max: u64,
    message_bytes_per_frame_mean: f64,
    link_budget_bytes_per_view: usize,
    throughput: Throughput,
}

/// Rates between the first and the last prediction's completion.
#[derive(Debug, Default, serde::Serialize)]
struct Throughput {
    seconds: f64,
    fused_frames_per_second: f64,
    views_per_second: f64,
    link_bytes_per_second: f64,
}

fn throughput(preds: &BTreeMap<u64, Prediction>) -> Throughput {
    let times = preds.values().map(|p| p.completed_time_unix_ns);
    let (Some(first), Some(last)) = (times.clone().min(), times.max()) else {
        return Throughput::default();
    };
    let seconds = (last - first) as f64 * 1e-9;
    if seconds <= 0.0 {
        return Throughput::default();
    }
    let views: usize = preds.values().map(|p| p.views_used.len()).sum();
    let bytes: u64 = preds
        .values()
        .flat_map(|p| p.views.iter().map(|v| v.message_bytes))
        .sum();
    Throughput {
        seconds,
        fused_frames_per_second: (preds.len() - 1) as f64 / seconds,
        views_per_second: views as f64 / seconds,
        link_bytes_per_second: bytes as f64 / seconds,
    }
}

fn compare(
    local: &mut LocalPipeline,
    set: &Replay,
    preds: &BTreeMap<u64, Prediction>,
    views: u32,
    sensors: u32,
) -> anyhow::Result<Report> {
    let rig = local.bundle.manifest.cameras.clone();
    let (mut ok_d, mut ok_q, mut ok_f, mut agree, mut partial) = (0, 0, 0, 0, 0);
    let (mut max_diff, mut max_fq) = (0.0f64, 0.0f64);
    let mut d: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut l: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut bytes = Vec::new();
    let mut frame_bytes = Vec::new();
    let mut payload = Vec::new();
    for (seq, p) in preds {
        let truth = set.label(*seq);
        // The views this prediction used, in the same order, through the same codec.
        let pixels: Vec<Vec<u8>> = p
            .views_used
            .iter()
            .map(|&v| set.frame(&rig, v, *seq))
            .collect::<anyhow::Result<_>>()?;
        let (logits_q, t) = local.run_frame(&pixels, true)?;
        let all: Vec<Vec<u8>> = (0..views)
            .map(|v| set.frame(&rig, v, *seq))
            .collect::<anyhow::Result<_>>()?;
        let (logits_f, _) = local.run_frame(&all, false)?;
        let diff = p
            .scores
            .iter()
            .zip(&logits_q)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0, f64::max);
        max_diff = max_diff.max(diff);
        if sensors == views {
            let (logits_all_q, _) = local.run_frame(&all, true)?;
            let fq = logits_f
                .iter()
                .zip(&logits_all_q)
                .map(|(a, b)| f64::from((a - b).abs()))
                .fold(0.0, f64::max);
            max_fq = max_fq.max(fq);
        }
        ok_d += usize::from(p.class_index as usize == truth);
        ok_q += usize::from(argmax(&logits_q) == truth);
        ok_f += usize::from(argmax(&logits_f) == truth);
        agree += usize::from(p.class_index as usize == argmax(&logits_q));
        partial += usize::from(!p.views_missing.is_empty());
        l.entry("head (all views)").or_default().push(t.head_ns);
        l.entry("encode+decode")
            .or_default()
            .push(t.encode_ns + t.decode_ns);
        l.entry("tail").or_default().push(t.tail_ns);
        l.entry("total")
            .or_default()
            .push(t.head_ns + t.encode_ns + t.decode_ns + t.tail_ns);
        let mut fb = 0;
        for v in &p.views {
            d.entry("sensor capture+head+encode")
                .or_default()
                .push(v.sensor_ns);
            d.entry("sensor queue").or_default().push(v.queue_ns);
            d.entry("link (send->receive)").or_default().push(v.link_ns);
            bytes.push(v.message_bytes);
            payload.push(v.payload_bytes);
            fb += v.message_bytes;
        }
        frame_bytes.push(fb);
        d.entry("aggregator wait for views")
            .or_default()
            .push(p.wait_ns);
        d.entry("aggregator decode+stack")
            .or_default()
            .push(p.decode_ns);
        d.entry("aggregator tail").or_default().push(p.tail_ns);
        d.entry("end to end (capture->result)")
            .or_default()
            .push(p.end_to_end_ns);
    }
    let n = preds.len() as f64;
    let order = [
        "sensor capture+head+encode",
        "sensor queue",
        "link (send->receive)",
        "aggregator wait for views",
        "aggregator decode+stack",
        "aggregator tail",
        "end to end (capture->result)",
    ];
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let m = &local.bundle.manifest;
    Ok(Report {
        predictions: preds.len(),
        partial_predictions: partial,
        accuracy_distributed: ok_d as f64 / n,
        accuracy_local_same_codec: ok_q as f64 / n,
        accuracy_local_float: ok_f as f64 / n,
        agreement_with_local: agree as f64 / n,
        max_abs_logit_diff_vs_local: max_diff,
        max_abs_logit_diff_float_vs_codec: max_fq,
        distributed_stages: order
            .iter()
            .filter_map(|k| d.get(k).map(|v| stage(k, v)))
            .collect(),
        local_stages: ["head (all views)", "encode+decode", "tail", "total"]
            .iter()
            .filter_map(|k| l.get(k).map(|v| stage(k, v)))
            .collect(),
        raw_frame_bytes_per_view: m.input.raw_frame_bytes(),
        payload_bytes_per_view: mean(&payload),
        message_bytes_per_view_mean: mean(&bytes),
        message_bytes_per_view_max: bytes.iter().copied().max().unwrap_or(0),
        message_bytes_per_frame_mean: mean(&frame_bytes),
        link_budget_bytes_per_view: m.link_budget.bytes_per_view_per_frame,
        throughput: throughput(preds),
    })
}

fn print_report(r: &Report, bundle: &Bundle, late: f64, rejected: f64) {
    let m = &bundle.manifest;
    println!(
        "\n== accuracy over {} frames ({} fused from fewer views than {}) ==",
        r.predictions, r.partial_predictions, m.cameras.views
    );
    println!(
        "  distributed (sensors -> link -> aggregator)    {:6.2} %",
        100.0 * r.accuracy_distributed
    );
    println!(
        "  one process, same views, same {:<18} {:6.2} %   (frames agreeing: {:.2} %, max |logit diff| {:.2e})",
        m.codec.to_string(),
        100.0 * r.accuracy_local_same_codec,
        100.0 * r.agreement_with_local,
        r.max_abs_logit_diff_vs_local
    );
    println!(
        "  one process, all views, float feature          {:6.2} %   (quantization moves logits by up to {:.3})",
        100.0 * r.accuracy_local_float,
        r.max_abs_logit_diff_float_vs_codec
    );
    println!("\n== latency per stage, ms (p50 / p90 / p99) ==");
    println!("  distributed:");
    for s in &r.distributed_stages {
        println!(
            "    {:<32} {:>8.3} {:>8.3} {:>8.3}",
            s.stage, s.p50_ms, s.p90_ms, s.p99_ms
        );
    }
    println!("  one process (views one after another):");
    for s in &r.local_stages {
        println!(
            "    {:<32} {:>8.3} {:>8.3} {:>8.3}",
            s.stage, s.p50_ms, s.p90_ms, s.p99_ms
        );
    }
    let e2e = r
        .distributed_stages
        .iter()
        .find(|s| s.stage.starts_with("end to end"));
    let total = r.local_stages.iter().find(|s| s.stage == "total");
    if let (Some(e), Some(t)) = (e2e, total) {
        println!(
            "  end-to-end p50 distributed / one process = {:.1}x (loopback gRPC, fusion wait and process hops included)",
            e.p50_ms / t.p50_ms
        );
    }
    let t = &r.throughput;
    println!(
        "\n== throughput (first to last prediction, {:.2} s) ==\n  {:.1} fused frames/s, {:.1} views/s, {:.1} kB/s on the links",
        t.seconds,
        t.fused_frames_per_second,
        t.views_per_second,
        t.link_bytes_per_second / 1000.0
    );
    println!("\n== link ==");
    println!(
        "  raw camera frame        {:>8} B per view",
        r.raw_frame_bytes_per_view
    );
    println!(
        "  feature payload         {:>8.0} B per view ({:.1} % of raw)",
        r.payload_bytes_per_view,
        100.0 * r.payload_bytes_per_view / r.raw_frame_bytes_per_view as f64
    );
    println!(
        "  gRPC message            {:>8.1} B per view mean, {} max (bundle link budget {})",
        r.message_bytes_per_view_mean, r.message_bytes_per_view_max, r.link_budget_bytes_per_view
    );
    println!(
        "  per fused frame         {:>8.1} B (raw frames: {} B)",
        r.message_bytes_per_frame_mean,
        r.raw_frame_bytes_per_view * m.cameras.views as usize
    );
    println!("  late views dropped {late}, malformed frames rejected {rejected}");
}

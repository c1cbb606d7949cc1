//! `splitnets-watch`: prints the predictions an aggregator publishes (`Predictions/Watch`), as
//! text lines or JSON lines, so nobody needs a custom client to see what the fleet decides.
//! With `--summary` it ends with what a demo wants to know: predictions, views used, degraded
//! frames, accuracy against the replayed data set (`--truth-bundle`), latency percentiles.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use splitnets_deploy::replay::Replay;
use splitnets_deploy::stats::percentile;
use splitnets_proto::wire::{Prediction, WatchRequest, predictions_client::PredictionsClient};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Print the predictions a SplitNets aggregator publishes"
)]
struct Args {
    /// The aggregator's gRPC endpoint.
    #[arg(
        long,
        env = "SPLITNETS_AGGREGATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    aggregator: String,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Stop after this many predictions (default: until the aggregator stops).
    #[arg(long)]
    count: Option<u64>,
    /// Keep trying to connect for this long, seconds.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout_s: f64,
    /// Stop once no prediction has come for this long (after the first), seconds.
    #[arg(long)]
    idle_exit_s: Option<f64>,
    /// End with a summary (also on SIGTERM/SIGINT): predictions, views used, accuracy, latency.
    #[arg(long)]
    summary: bool,
    /// The bundle the sensors run: its replayed data set gives each frame's true class, for the
    /// summary's accuracy (sensors replaying their bundle's data; not for `--source folder:`).
    #[arg(long, env = "SPLITNETS_BUNDLE")]
    truth_bundle: Option<PathBuf>,
    /// TLS: trust this CA (PEM) for an `https://` aggregator address.
    #[arg(long, env = "SPLITNETS_WATCH_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The name the aggregator's certificate is valid for (default: the address's host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// Where Debian's dataset-fashion-mnist put the files (for `--truth-bundle`).
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = splitnets_camera::dataset::DEFAULT_DIR)]
    data_dir: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("splitnets-watch: error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("splitnets-watch: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn connect(args: &Args) -> anyhow::Result<PredictionsClient<tonic::transport::Channel>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.connect_timeout_s);
    let mut endpoint = tonic::transport::Endpoint::from_shared(args.aggregator.clone())
        .with_context(|| format!("aggregator address {:?}", args.aggregator))?;
    if let Some(ca) = &args.tls_ca {
        let domain = match &args.tls_domain {
            Some(d) => d.clone(),
            None => endpoint.uri().host().unwrap_or("localhost").to_string(),
        };
        endpoint = endpoint.tls_config(splitnets_ops::tls::client_config(ca, None, &domain)?)?;
    }
    loop {
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(PredictionsClient::new(channel)
                    .max_decoding_message_size(splitnets_proto::wire::MAX_MESSAGE_BYTES));
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to {}", args.aggregator));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let truth = match &args.truth_bundle {
        Some(dir) => {
            let (dir, data) = (dir.clone(), args.data_dir.clone());
            Some(
                tokio::task::spawn_blocking(move || -> anyhow::Result<Replay> {
                    let bundle = splitnets_proto::bundle::Bundle::load(&dir)?;
                    Replay::for_bundle(&bundle, &data)
                })
                .await??,
            )
        }
        None => None,
    };
    let mut client = connect(&args).await?;
    let mut stream = client.watch(WatchRequest {}).await?.into_inner();
    let mut out = std::io::stdout().lock();
    let mut tally = Tally::default();
    let shutdown = splitnets_ops::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let idle = args
            .idle_exit_s
            .filter(|_| tally.predictions > 0)
            .map_or(Duration::MAX, Duration::from_secs_f64);
        let p = tokio::select! {
            m = stream.message() => match m? {
                Some(p) => p,
                None => break,
            },
            () = tokio::time::sleep(idle) => break,
            () = &mut shutdown => break,
        };
        if args.json {
            writeln!(out, "{}", json_line(&p))?;
        } else {
            writeln!(out, "{}", text_line(&p))?;
        }
        out.flush()?;
        tally.add(&p, truth.as_ref().map(|t| t.label(p.sequence)));
        if args.count.is_some_and(|c| tally.predictions >= c) {
            break;
        }
    }
    if args.summary {
        if args.json {
            writeln!(out, "{}", serde_json::json!({ "summary": tally.json() }))?;
        } else {
            writeln!(out, "{}", tally.text())?;
        }
    }
    Ok(())
}

/// What the summary counts.
#[derive(Debug, Default)]
struct Tally {
    predictions: u64,
    by_views_used: BTreeMap<usize, u64>,
    degraded: u64,
    correct: u64,
    judged: u64,
    end_to_end_ms: Vec<f64>,
    first_sequence: Option<u64>,
    last_sequence: u64,
}

impl Tally {
    fn add(&mut self, p: &Prediction, truth: Option<usize>) {
        self.predictions += 1;
        *self.by_views_used.entry(p.views_used.len()).or_default() += 1;
        if !p.views_missing.is_empty() {
            self.degraded += 1;
        }
        if let Some(t) = truth {
            self.judged += 1;
            self.correct += u64::from(p.class_index as usize == t);
        }
        self.end_to_end_ms.push(ms(p.end_to_end_ns));
        self.first_sequence.get_or_insert(p.sequence);
        self.last_sequence = self.last_sequence.max(p.sequence);
    }

    fn accuracy(&self) -> Option<f64> {
        (self.judged > 0).then(|| self.correct as f64 / self.judged as f64)
    }

    fn text(&self) -> String {
        let views: Vec<String> = self
            .by_views_used
            .iter()
            .rev()
            .map(|(v, n)| format!("{v} views: {n}"))
            .collect();
        let e = &self.end_to_end_ms;
        format!(
            "== summary: {} predictions (frames {}..={}) ==\nviews used: {} ({} degraded: fused without every view)\naccuracy: {}\nend-to-end ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.predictions,
            self.first_sequence.unwrap_or(0),
            self.last_sequence,
            views.join(", "),
            self.degraded,
            self.accuracy()
                .map_or("n/a (no --truth-bundle)".into(), |a| format!(
                    "{:.1} % ({}/{}) against the replayed labels",
                    100.0 * a,
                    self.correct,
                    self.judged
                )),
            percentile(e, 50.0),
            percentile(e, 90.0),
            percentile(e, 99.0),
            percentile(e, 100.0),
        )
    }

    fn json(&self) -> serde_json::Value {
        let e = &self.end_to_end_ms;
        serde_json::json!({
            "predictions": self.predictions,
            "views_used": self.by_views_used.iter().map(|(v, n)| (v.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "degraded": self.degraded,
            "accuracy": self.accuracy(),
            "end_to_end_ms": {
                "p50": percentile(e, 50.0), "p90": percentile(e, 90.0),
                "p99": percentile(e, 99.0), "max": percentile(e, 100.0),
            },
        })
    }
}

/// Softmax probability of the predicted class.
fn confidence(p: &Prediction) -> f32 {
    let max = p.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = p.scores.iter().map(|s| (s - max).exp()).sum();
    p.scores
        .get(p.class_index as usize)
        .map_or(0.0, |s| (s - max).exp() / sum)
}

fn ms(ns: u64) -> f64 {
    ns as f64 * 1e-6
}

fn text_line(p: &Prediction) -> String {
    let missing = if p.views_missing.is_empty() {
        String::new()
    } else {
        format!(" missing {:?}", p.views_missing)
    };
    format!(
        "frame {:>6}  {:<14} {:>5.1} %  views {:?}{missing}  end-to-end {:.2} ms (wait {:.2}, tail {:.2}){}",
        p.sequence,
        p.class_name,
        100.0 * confidence(p),
        p.views_used,
        ms(p.end_to_end_ns),
        ms(p.wait_ns),
        ms(p.tail_ns),
        if p.skipped_before > 0 {
            format!("  ({} skipped: this watcher was slow)", p.skipped_before)
        } else {
            String::new()
        }
    )
}

fn json_line(p: &Prediction) -> serde_json::Value {
    serde_json::json!({
        "sequence": p.sequence,
        "class_index": p.class_index,
        "class_name": p.class_name,
        "confidence": confidence(p),
        "scores": p.scores,
        "views_used": p.views_used,
        "views_missing": p.views_missing,
        "variant": p.variant,
        "end_to_end_ms": ms(p.end_to_end_ns),
        "wait_ms": ms(p.wait_ns),
        "decode_ms": ms(p.decode_ns),
        "tail_ms": ms(p.tail_ns),
        "views": p.views.iter().map(|v| serde_json::json!({
            "view": v.view_index, "sensor_ms": ms(v.sensor_ns), "queue_ms": ms(v.queue_ns),
            "link_ms": ms(v.link_ns), "message_bytes": v.message_bytes,
        })).collect::<Vec<_>>(),
        "capture_time_unix_ns": p.capture_time_unix_ns,
        "skipped_before": p.skipped_before,
    })
}

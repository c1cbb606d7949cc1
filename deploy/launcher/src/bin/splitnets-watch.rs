//! `splitnets-watch`: prints the predictions an aggregator publishes (`Predictions/Watch`), as
//! text lines or JSON lines, so nobody needs a custom client to see what the fleet decides.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
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
    loop {
        match PredictionsClient::connect(args.aggregator.clone()).await {
            Ok(c) => {
                return Ok(c.max_decoding_message_size(splitnets_proto::wire::MAX_MESSAGE_BYTES));
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to {}", args.aggregator));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut client = connect(&args).await?;
    let mut stream = client.watch(WatchRequest {}).await?.into_inner();
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    while let Some(p) = stream.message().await? {
        if args.json {
            writeln!(out, "{}", json_line(&p))?;
        } else {
            writeln!(out, "{}", text_line(&p))?;
        }
        out.flush()?;
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
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

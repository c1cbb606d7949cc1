//! The tail thread: owns the tail stage (ONNX Runtime session), decodes each fused frame's views
//! straight into the stacked tail input, runs the tail, and publishes the prediction.

use splitnets_proto::bundle::Bundle;
use splitnets_proto::wire::{Prediction, ViewReport};
use splitnets_runtime::{SessionOptions, TailStage, argmax};
use tokio::sync::{broadcast, mpsc};

use crate::dashboard::{DashboardTap, FEATURE_SAMPLE_PERIOD, FeatureSample};
use crate::fusion::FusionJob;
use crate::link::unix_ns;
use crate::metrics::AggregatorMetrics;

/// Loads and warms up the tail (call off the async runtime), then starts its thread, which runs
/// until `jobs` closes.
pub fn spawn_tail_thread(
    bundle: &Bundle,
    threads: usize,
    jobs: mpsc::Receiver<FusionJob>,
    predictions: broadcast::Sender<Prediction>,
    metrics: AggregatorMetrics,
    dashboard: DashboardTap,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut tail = TailStage::new(
        bundle,
        SessionOptions {
            intra_op_threads: threads,
        },
    )?;
    tail.warm_up()?;
    let classes = bundle.manifest.classes.clone();
    let handle = std::thread::Builder::new()
        .name("tail".into())
        .spawn(move || tail_loop(tail, classes, jobs, predictions, metrics, dashboard))?;
    Ok(handle)
}

fn tail_loop(
    mut tail: TailStage,
    classes: Vec<String>,
    mut jobs: mpsc::Receiver<FusionJob>,
    predictions: broadcast::Sender<Prediction>,
    metrics: AggregatorMetrics,
    dashboard: DashboardTap,
) {
    let mut last_sample: Option<std::time::Instant> = None;
    while let Some(job) = jobs.blocking_recv() {
        let n = job.views.len();
        let (logits, t) = match tail.run_encoded(job.views.iter().map(|v| &v.tensor)) {
            Ok(r) => r,
            Err(e) => {
                metrics.tail_errors.increment(1);
                tracing::error!(sequence = job.sequence, error = %e, "tail failed");
                continue;
            }
        };
        let scores = logits.to_vec();
        let class_index = argmax(&scores);
        // A page is watching: a copy of the features now and then (a few kB, never per frame).
        if dashboard.watched() && last_sample.is_none_or(|t| t.elapsed() >= FEATURE_SAMPLE_PERIOD) {
            last_sample = Some(std::time::Instant::now());
            dashboard.offer_features(FeatureSample {
                sequence: job.sequence,
                views: job.views.iter().map(|v| v.view).collect(),
                values: tail.stacked_features().to_vec(),
            });
        }
        let completed = unix_ns();
        let p = Prediction {
            sequence: job.sequence,
            capture_time_unix_ns: job.capture_time_unix_ns,
            class_index: class_index as u32,
            class_name: classes.get(class_index).cloned().unwrap_or_default(),
            scores,
            views_used: job.views.iter().map(|v| v.view).collect(),
            views_missing: job.views_missing,
            views: job
                .views
                .iter()
                .map(|v| ViewReport {
                    view_index: v.view,
                    sensor_ns: v.sensor_ns,
                    queue_ns: v.queue_ns,
                    link_ns: v.link_ns,
                    payload_bytes: v.payload_bytes,
                    message_bytes: v.message_bytes,
                })
                .collect(),
            wait_ns: job.wait_ns,
            decode_ns: t.decode_ns,
            tail_ns: t.tail_ns,
            // No plausible capture time: no end-to-end figure (0), and none in the metrics.
            end_to_end_ns: if job.capture_time_unix_ns == 0 {
                0
            } else {
                completed.saturating_sub(job.capture_time_unix_ns)
            },
            completed_time_unix_ns: completed,
            skipped_before: 0,
        };
        metrics.tail_seconds.record(t.tail_ns as f64 * 1e-9);
        if p.end_to_end_ns > 0 {
            metrics
                .end_to_end_seconds
                .record(p.end_to_end_ns as f64 * 1e-9);
        }
        metrics.predictions[n - 1].increment(1);
        if job.deadline_expired {
            metrics.partial_frames.increment(1);
        }
        tracing::debug!(
            sequence = p.sequence,
            class = %p.class_name,
            views_used = ?p.views_used,
            tail_us = t.tail_ns / 1000,
            end_to_end_us = p.end_to_end_ns / 1000,
            "prediction"
        );
        // No watchers is fine: predictions are also in logs and metrics.
        let _ = predictions.send(p);
    }
}

//! The tail thread: owns the tail stage (ONNX Runtime session), decodes each fused frame's views
//! straight into the stacked tail input, runs the tail, and publishes the prediction.

use std::sync::Arc;

use splitnets_proto::bundle_set::BundleSet;
use splitnets_proto::wire::{Prediction, ViewReport};
use splitnets_runtime::{SessionOptions, TailStage, argmax};
use tokio::sync::{broadcast, mpsc};

use crate::dashboard::{DashboardTap, FEATURE_SAMPLE_PERIOD, FeatureSample};
use crate::fusion::FusionJob;
use crate::link::unix_ns;
use crate::metrics::AggregatorMetrics;

/// Loads and warms up the tail of every variant (call off the async runtime), then starts its
/// thread, which runs until `jobs` closes.
pub fn spawn_tail_thread(
    set: &BundleSet,
    threads: usize,
    jobs: mpsc::Receiver<FusionJob>,
    predictions: broadcast::Sender<Prediction>,
    metrics: AggregatorMetrics,
    dashboard: DashboardTap,
    switching: Option<Arc<crate::switching::Switching>>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut tails = Vec::with_capacity(set.variants.len());
    for b in &set.variants {
        let mut tail = TailStage::new(
            b,
            SessionOptions {
                intra_op_threads: threads,
            },
        )?;
        tail.warm_up()?;
        tails.push((tail, b.manifest.split.feature_shape.clone()));
    }
    let classes = set.primary().manifest.classes.clone();
    let handle = std::thread::Builder::new()
        .name("tail".into())
        .spawn(move || {
            tail_loop(
                tails,
                classes,
                jobs,
                predictions,
                metrics,
                dashboard,
                switching,
            );
        })?;
    Ok(handle)
}

/// The variant a frame is finished with: the one most of its views were made with (all of
/// them, except for a frame a sensor made on the wrong side of a switch boundary).
fn frame_variant(job: &FusionJob) -> u32 {
    let first = job.views.first().map_or(0, |v| v.variant);
    // Every frame but one made across a switch boundary: no counting, no allocation.
    if job.views.iter().all(|v| v.variant == first) {
        return first;
    }
    let mut counts: Vec<(u32, usize)> = Vec::new();
    for v in &job.views {
        match counts.iter_mut().find(|(k, _)| *k == v.variant) {
            Some((_, n)) => *n += 1,
            None => counts.push((v.variant, 1)),
        }
    }
    counts.iter().max_by_key(|(_, n)| *n).map_or(0, |(k, _)| *k)
}

fn tail_loop(
    mut tails: Vec<(TailStage, Vec<usize>)>,
    classes: Vec<String>,
    mut jobs: mpsc::Receiver<FusionJob>,
    predictions: broadcast::Sender<Prediction>,
    metrics: AggregatorMetrics,
    dashboard: DashboardTap,
    switching: Option<Arc<crate::switching::Switching>>,
) {
    let mut last_sample: Option<std::time::Instant> = None;
    let mut in_flight_old = 0u64;
    while let Some(mut job) = jobs.blocking_recv() {
        let handoff_ns = job.fused_at.elapsed().as_nanos() as u64;
        let variant = frame_variant(&job);
        if job.views.iter().any(|v| v.variant != variant) {
            let (keep, odd): (Vec<_>, Vec<_>) =
                job.views.into_iter().partition(|v| v.variant == variant);
            metrics.variant_mismatched_views.increment(odd.len() as u64);
            tracing::warn!(sequence = job.sequence, variant, views = ?odd.iter().map(|v| v.view).collect::<Vec<_>>(), "views made with another variant left out");
            job.views_missing.extend(odd.iter().map(|v| v.view));
            job.views_missing.sort_unstable();
            job.views = keep;
        }
        if let Some(sw) = &switching {
            let mut issued = sw.issued.lock().expect("issued lock");
            if let Some(i) = *issued {
                if variant == i.to {
                    let took = i.at.elapsed();
                    metrics.split_switch_seconds.record(took.as_secs_f64());
                    metrics
                        .split_switch_frames_in_flight
                        .increment(in_flight_old);
                    tracing::info!(
                        from = i.from,
                        to = i.to,
                        first_sequence = job.sequence,
                        time_to_switch_ms = took.as_secs_f64() * 1e3,
                        frames_in_flight = in_flight_old,
                        "split switch complete"
                    );
                    *issued = None;
                    in_flight_old = 0;
                } else {
                    in_flight_old += 1;
                }
            }
        }
        let n = job.views.len();
        let (tail, shape) = &mut tails[variant as usize];
        let (logits, t) = match tail.run_encoded(job.views.iter().map(|v| v.tensors.as_slice())) {
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
                shape: shape.clone(),
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
                    capture_time_unix_ns: if v.capture_plausible {
                        v.capture_time_unix_ns
                    } else {
                        0
                    },
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
            variant,
            handoff_ns,
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

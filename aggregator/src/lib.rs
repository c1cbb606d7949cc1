//! The SplitNets aggregator: receives the sensors' quantized split features, fuses the views of
//! each frame, runs the tail with ONNX Runtime on a dedicated thread, and publishes predictions.
//!
//! [`run`] takes bound listeners and a shutdown future (mini-redis style), so tests bind port 0
//! and the binary stays a thin shell.

pub mod config;
pub mod fusion;
pub mod link;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use futures::Stream;
use splitnets_ops::Readiness;
use splitnets_proto::bundle::Bundle;
use splitnets_proto::pipeline::argmax;
use splitnets_proto::runtime::{OnnxModel, SessionOptions};
use splitnets_proto::wire::{
    self, Prediction, ViewReport, WatchRequest,
    feature_link_server::FeatureLinkServer,
    predictions_server::{Predictions, PredictionsServer},
};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

pub use config::{Args, Settings};
use fusion::{Fusion, FusionJob};
use link::{FeatureLinkService, LinkState, unix_ns};

/// Addresses the aggregator actually listens on (after port 0 is resolved).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoundAddrs {
    pub grpc: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

/// The tail's ONNX Runtime session, owned by one dedicated thread.
fn spawn_tail_worker(
    bundle: &Bundle,
    threads: usize,
    mut jobs: mpsc::Receiver<FusionJob>,
    predictions: broadcast::Sender<Prediction>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut tail = OnnxModel::from_bytes(
        &format!(
            "{}/{}",
            bundle.dir.display(),
            bundle.manifest.files.tail.path
        ),
        &bundle.tail_onnx,
        SessionOptions {
            intra_op_threads: threads,
        },
    )?;
    let m = &bundle.manifest;
    let f = m.split.feature_shape.clone();
    let views = m.cameras.views as usize;
    // Warm up with one view and with all views: the first runs allocate and pick kernels.
    for n in [1, views] {
        let zeros = vec![0.0f32; n * m.split.feature_elements()];
        tail.run(&[n, f[1], f[2], f[3]], &zeros)
            .context("warming up the tail")?;
    }
    let classes = m.classes.clone();
    let handle = std::thread::Builder::new()
        .name("tail".into())
        .spawn(move || {
            let mut stacked = Vec::new();
            while let Some(job) = jobs.blocking_recv() {
                let decode_started = Instant::now();
                stacked.clear();
                for v in &job.views {
                    stacked.extend_from_slice(&v.features);
                }
                let stack_ns = decode_started.elapsed().as_nanos() as u64;
                let n = job.views.len();
                let started = Instant::now();
                let logits = match tail.run(&[n, f[1], f[2], f[3]], &stacked) {
                    Ok((_, l)) => l,
                    Err(e) => {
                        metrics::counter!("aggregator_tail_errors_total").increment(1);
                        tracing::error!(sequence = job.sequence, error = %e, "tail failed");
                        continue;
                    }
                };
                let tail_ns = started.elapsed().as_nanos() as u64;
                let class_index = argmax(&logits);
                let completed = unix_ns();
                let p = Prediction {
                    sequence: job.sequence,
                    capture_time_unix_ns: job.capture_time_unix_ns,
                    class_index: class_index as u32,
                    class_name: classes.get(class_index).cloned().unwrap_or_default(),
                    scores: logits,
                    views_used: job.views.iter().map(|v| v.view).collect(),
                    views_missing: job.views_missing.clone(),
                    views: job
                        .views
                        .iter()
                        .map(|v| ViewReport {
                            view_index: v.view,
                            sensor: v.sensor,
                            link_ns: v.link_ns,
                            payload_bytes: v.payload_bytes,
                            message_bytes: v.message_bytes,
                        })
                        .collect(),
                    wait_ns: job.wait_ns,
                    decode_ns: job.views.iter().map(|v| v.decode_ns).sum::<u64>() + stack_ns,
                    tail_ns,
                    end_to_end_ns: completed.saturating_sub(job.capture_time_unix_ns),
                    completed_time_unix_ns: completed,
                    skipped_before: 0,
                };
                metrics::histogram!("aggregator_tail_seconds").record(tail_ns as f64 * 1e-9);
                metrics::histogram!("aggregator_end_to_end_seconds")
                    .record(p.end_to_end_ns as f64 * 1e-9);
                metrics::counter!("aggregator_predictions_total", "views_used" => n.to_string())
                    .increment(1);
                if job.deadline_expired {
                    metrics::counter!("aggregator_partial_frames_total").increment(1);
                }
                tracing::debug!(
                    sequence = p.sequence,
                    class = %p.class_name,
                    views_used = ?p.views_used,
                    tail_us = tail_ns / 1000,
                    end_to_end_us = p.end_to_end_ns / 1000,
                    "prediction"
                );
                // No watchers is fine: predictions are also in logs and metrics.
                let _ = predictions.send(p);
            }
        })?;
    Ok(handle)
}

/// The predictions service: a broadcast of every prediction to every watcher. Watch streams end
/// after shutdown, once every prediction made before it has been delivered.
#[derive(Debug, Clone)]
struct PredictionsService {
    tx: broadcast::Sender<Prediction>,
    stop: watch::Receiver<bool>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<Prediction, Status>> + Send>>;

#[tonic::async_trait]
impl Predictions for PredictionsService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rx = self.tx.subscribe();
        let stream = futures::stream::unfold(
            (rx, self.stop.clone(), 0u64, false),
            |(mut rx, mut stop, mut skipped, mut stopping)| async move {
                loop {
                    let got = if stopping {
                        match rx.try_recv() {
                            Ok(p) => Ok(p),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(Some(n)),
                            Err(_) => return None,
                        }
                    } else {
                        tokio::select! {
                            r = rx.recv() => match r {
                                Ok(p) => Ok(p),
                                Err(broadcast::error::RecvError::Lagged(n)) => Err(Some(n)),
                                Err(broadcast::error::RecvError::Closed) => return None,
                            },
                            _ = stop.wait_for(|s| *s) => Err(None),
                        }
                    };
                    match got {
                        Ok(mut p) => {
                            p.skipped_before = skipped;
                            return Some((Ok(p), (rx, stop, 0, stopping)));
                        }
                        Err(Some(n)) => skipped += n,
                        Err(None) => stopping = true,
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream) as WatchStream))
    }
}

/// Runs the aggregator until `shutdown` resolves, then drains: sensors are told to stop, pending
/// frames are fused and published, and the function returns.
pub async fn run(
    settings: Settings,
    bundle: Bundle,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics_handle = splitnets_ops::install_metrics()?;
    let readiness = Readiness::default();
    let addrs = BoundAddrs {
        grpc: grpc.local_addr()?,
        admin: admin.local_addr()?,
    };
    let m = &bundle.manifest;
    let (pred_tx, _) = broadcast::channel::<Prediction>(1024);
    let (job_tx, job_rx) = mpsc::channel::<FusionJob>(64);
    let (arrival_tx, arrival_rx) = mpsc::channel(1024);
    let (drain_tx, drain_rx) = watch::channel(false);

    // The tail loads and warms up on its own thread before anything reports ready.
    let tail_thread = {
        let bundle = bundle.clone();
        let threads = settings.tail_threads;
        let pred_tx = pred_tx.clone();
        tokio::task::spawn_blocking(move || spawn_tail_worker(&bundle, threads, job_rx, pred_tx))
            .await??
    };
    let (flush_tx, flush_rx) = watch::channel(false);
    let fusion_task = tokio::spawn(fusion::run_fusion(
        Fusion::new(
            m.cameras.views,
            settings.fusion_deadline,
            settings.max_pending_frames,
        ),
        arrival_rx,
        flush_rx,
        job_tx,
    ));

    let link_state = Arc::new(LinkState {
        aggregator_id: settings.id.clone(),
        bundle_digest: bundle.digest.clone(),
        views: m.cameras.views,
        feature_shape: m.split.feature_shape.clone(),
        codec: m.codec,
        connected: Mutex::new(Default::default()),
        arrivals: arrival_tx,
        draining: drain_rx,
    });
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<FeatureLinkServer<FeatureLinkService>>()
        .await;
    health_reporter
        .set_serving::<PredictionsServer<PredictionsService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(wire::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    let link_svc = FeatureLinkServer::new(FeatureLinkService {
        state: link_state.clone(),
    })
    .max_decoding_message_size(wire::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(wire::MAX_MESSAGE_BYTES);
    let (stop_tx, stop_rx) = watch::channel(false);
    let pred_svc = PredictionsServer::new(PredictionsService {
        tx: pred_tx.clone(),
        stop: stop_rx.clone(),
    })
    .max_encoding_message_size(wire::MAX_MESSAGE_BYTES);

    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin_task = tokio::spawn(splitnets_ops::serve_admin(
        admin,
        readiness.clone(),
        metrics_handle,
        stopped(stop_rx.clone()),
    ));
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(link_svc)
        .add_service(pred_svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), stopped(stop_rx.clone()));
    let server_task = tokio::spawn(server);

    readiness.set(true);
    if let Some(path) = &settings.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&addrs)?)
            .with_context(|| format!("writing ready file {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    tracing::info!(
        grpc = %addrs.grpc,
        admin = %addrs.admin,
        bundle = %bundle.dir.display(),
        digest = %&bundle.digest[..16],
        views = m.cameras.views,
        codec = %m.codec,
        deadline_ms = settings.fusion_deadline.as_millis() as u64,
        "aggregator ready"
    );

    shutdown.await;
    tracing::info!("draining: telling sensors to stop");
    readiness.set(false);
    health_reporter
        .set_not_serving::<FeatureLinkServer<FeatureLinkService>>()
        .await;
    let _ = drain_tx.send(true);
    // Give sensors the drain timeout to close their streams, then stop serving regardless.
    let deadline = Instant::now() + settings.drain_timeout;
    while !link_state
        .connected
        .lock()
        .expect("connected set lock")
        .is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Pending frames are fused with the views they have and published; then the tail ends.
    let _ = flush_tx.send(true);
    let _ = tokio::time::timeout(settings.drain_timeout, fusion_task).await;
    let _ = tokio::task::spawn_blocking(move || tail_thread.join()).await;
    drop(pred_tx);
    // Watchers get everything published so far, then the servers stop.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(settings.drain_timeout, server_task).await;
    drop(link_state);
    let _ = admin_task.await;
    tracing::info!("aggregator stopped");
    Ok(())
}

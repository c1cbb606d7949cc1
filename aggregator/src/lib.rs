//! The SplitNets aggregator: receives the sensors' quantized split features, fuses the views of
//! each frame, runs the tail with ONNX Runtime on a dedicated thread, and publishes predictions.
//!
//! A frame's path, top to bottom: [`link`] (handshake, validation, acknowledgement) →
//! [`fusion`] (views → frames, deadlines) → [`tail`] (decode into the stacked input, tail stage)
//! → [`predictions`] (the `Predictions/Watch` broadcast). [`run`] takes bound listeners, the
//! daemon's [`Metrics`] and a shutdown future (mini-redis style), so tests bind port 0, several
//! daemons can share a process, and the binary stays a thin shell.

pub mod config;
pub mod dashboard;
pub mod fleet;
pub mod front_door;
pub mod fusion;
pub mod link;
pub mod metrics;
pub mod predictions;
pub mod switching;
pub mod tail;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use splitnets_ops::{Lifecycle, LogRateLimit, Metrics, Phase, Readiness};
use splitnets_proto::bundle_set::BundleSet;
use splitnets_proto::wire::{
    self, Prediction, feature_link_server::FeatureLinkServer, predictions_server::PredictionsServer,
};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

pub use config::{Args, Command, Settings};
use fusion::{Fusion, FusionJob};
use link::{FeatureLinkService, LinkState};
use metrics::AggregatorMetrics;
use predictions::PredictionsService;

/// Warnings per second about rejected peers; the rest are counted
/// (`aggregator_log_lines_suppressed_total`).
const REJECTION_LOG_LINES_PER_SECOND: u32 = 20;

/// Addresses the aggregator actually listens on (after port 0 is resolved).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoundAddrs {
    pub grpc: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

/// Runs the aggregator until `shutdown` resolves, then drains through the [`Phase`]s: sensors are
/// told to stop (`Draining`), pending frames are fused and published (`Flushing`), watchers get
/// everything published, and the servers stop (`Stopped`).
///
/// `bundle`: a bundle, or a bundle set whose variants the aggregator switches the fleet between
/// as the links allow (live split switching).
pub async fn run(
    settings: Settings,
    bundle: impl Into<BundleSet>,
    grpc: TcpListener,
    admin: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let set: BundleSet = bundle.into();
    let bundle = set.primary().clone();
    let m = &bundle.manifest;
    if let Some(ids) = settings
        .tls
        .as_ref()
        .and_then(|t| t.view_identities.as_ref())
        && ids.len() != m.cameras.views as usize
    {
        anyhow::bail!(
            "view_identities names {} identities; the bundle has {} views",
            ids.len(),
            m.cameras.views
        );
    }
    let handles = AggregatorMetrics::register(&metrics, m.cameras.views);
    let lifecycle = Lifecycle::new();
    let readiness = Readiness::default();
    let addrs = BoundAddrs {
        grpc: grpc.local_addr()?,
        admin: admin.local_addr()?,
    };
    let (pred_tx, _) = broadcast::channel::<Prediction>(1024);
    let (job_tx, job_rx) = mpsc::channel::<FusionJob>(64);
    let dashboard = dashboard::Dashboard::new(m.cameras.views);
    let switching = set.switchable.then(|| {
        Arc::new(switching::Switching::new(
            (0..set.variants.len())
                .map(|v| set.frame_wire_bytes(v))
                .collect(),
            m.cameras.views as usize,
            (0..set.variants.len())
                .map(|v| set.link_budget(v).bits_per_second_per_view / 8.0)
                .collect(),
        ))
    });

    // The tails load and warm up on their own thread before anything reports ready.
    let tail_thread = {
        let (set, threads) = (set.clone(), settings.tail_threads);
        let (pred_tx, h, tap) = (pred_tx.clone(), handles.clone(), dashboard.tap());
        let sw = switching.clone();
        tokio::task::spawn_blocking(move || {
            tail::spawn_tail_thread(&set, threads, job_rx, pred_tx, h, tap, sw)
        })
        .await??
    };
    let fleet = Arc::new(fleet::Fleet::new());
    if let Some(sw) = &switching {
        tokio::spawn(switching::run_controller(
            sw.clone(),
            fleet.clone(),
            handles.clone(),
            dashboard.tap(),
            lifecycle.watch(),
        ));
    }
    let fusion = fusion::FusionStage::start(
        Fusion::for_aggregator(
            m.cameras.views,
            settings.fusion_deadline,
            settings.max_pending_frames,
            &handles,
            fleet.clone(),
        ),
        job_tx,
        handles.pending_frames.clone(),
    )
    .context("starting the fusion deadline timer thread")?;

    let log = Arc::new(LogRateLimit::new(
        REJECTION_LOG_LINES_PER_SECOND,
        handles.log_lines_suppressed.clone(),
    ));
    let link_state = Arc::new(LinkState {
        aggregator_id: settings.id.clone(),
        bundle_digest: set.digest.clone(),
        views: m.cameras.views,
        variants: set
            .variants
            .iter()
            .map(|b| b.manifest.frame_layout())
            .collect(),
        switching: switching.clone(),
        connected: Mutex::new(Default::default()),
        fusion: fusion.clone(),
        phase: lifecycle.watch(),
        metrics: handles.clone(),
        fleet,
        handshake_timeout: settings.handshake_timeout,
        view_idle_timeout: settings.view_idle_timeout,
        max_message_bytes: set
            .variants
            .iter()
            .map(|b| b.manifest.frame_layout().message_limit())
            .max()
            .unwrap_or(wire::MAX_MESSAGE_BYTES),
        log: log.clone(),
        view_identities: settings
            .tls
            .as_ref()
            .and_then(|t| t.view_identities.clone()),
        dashboard: dashboard.tap(),
    });
    let tls = match &settings.tls {
        Some(t) => {
            let (c, k, ca) = (t.cert.clone(), t.key.clone(), t.client_ca.clone());
            Some(
                tokio::task::spawn_blocking(move || {
                    splitnets_ops::tls::server_config(&c, &k, ca.as_deref())
                })
                .await??,
            )
        }
        None => None,
    };
    let incoming = front_door::admit_connections(
        grpc,
        front_door::ConnectionLimits {
            max_connections: settings.max_connections,
            first_byte_timeout: settings.handshake_timeout,
        },
        tls,
        handles,
        log,
    );
    let server_task = tokio::spawn(serve_grpc(
        incoming,
        settings.max_streams_per_connection,
        link_state.clone(),
        PredictionsService {
            tx: pred_tx.clone(),
            phase: lifecycle.watch(),
        },
        dashboard::PreviewService {
            tap: dashboard.tap(),
            bundle_digest: set.digest.clone(),
            views: m.cameras.views,
            view_identities: settings
                .tls
                .as_ref()
                .and_then(|t| t.view_identities.clone()),
        },
        lifecycle.watch(),
    ));
    let admin_task = tokio::spawn(splitnets_ops::serve_admin_with(
        admin,
        readiness.clone(),
        metrics,
        dashboard.routes(lifecycle.watch()),
        lifecycle.watch().until(Phase::Stopped),
    ));
    // Ends by itself at `Stopped`, like the page feeds it serves.
    tokio::spawn(dashboard.run(
        dashboard::DashboardSetup {
            bundle_name: m.name.clone(),
            classes: m.classes.clone(),
            views: m.cameras.views,
            feature_shape: m.split.feature_shape.clone(),
            budget_bytes_per_second: set.link_budget(0).bits_per_second_per_view / 8.0,
            fusion_deadline: settings.fusion_deadline,
        },
        pred_tx.clone(),
        lifecycle.watch(),
    ));

    match &settings.tls {
        None => tracing::warn!(
            "plaintext feature link: sensors are not authenticated and features travel unencrypted (local development only; see --tls-cert, --tls-client-ca, --view-identities)"
        ),
        Some(t) => tracing::info!(
            mtls = t.view_identities.is_some(),
            identities = ?t.view_identities,
            "TLS on the feature link"
        ),
    }
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
        bundle = %set.dir.display(),
        digest = %&set.digest[..16],
        variants = set.variants.len(),
        views = m.cameras.views,
        codec = %m.codec,
        deadline_ms = settings.fusion_deadline.as_millis() as u64,
        "aggregator ready"
    );

    shutdown.await;
    drain(
        &settings,
        &lifecycle,
        &readiness,
        Running {
            link_state,
            fusion,
            tail_thread,
            pred_tx,
            server_task,
            admin_task,
        },
    )
    .await;
    tracing::info!("aggregator stopped");
    Ok(())
}

/// The gRPC services (feature link, predictions, health, reflection) until [`Phase::Stopped`].
/// Health reports the feature link as not serving from [`Phase::Draining`] on.
async fn serve_grpc(
    incoming: impl tokio_stream::Stream<Item = std::io::Result<front_door::AdmittedConnection>>
    + Send
    + 'static,
    max_streams_per_connection: u32,
    link_state: Arc<LinkState>,
    predictions: PredictionsService,
    previews: dashboard::PreviewService,
    phase: splitnets_ops::PhaseWatch,
) -> anyhow::Result<()> {
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
    let limit = link_state.max_message_bytes;
    let link_svc = FeatureLinkServer::new(FeatureLinkService { state: link_state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(wire::MAX_MESSAGE_BYTES);
    let pred_svc =
        PredictionsServer::new(predictions).max_encoding_message_size(wire::MAX_MESSAGE_BYTES);
    // A 32×32 thumbnail and its header: a few kB at most.
    let preview_svc = wire::debug_preview_server::DebugPreviewServer::new(previews)
        .max_decoding_message_size(8 * 1024);
    {
        let mut phase = phase.clone();
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            phase.wait_for(Phase::Draining).await;
            reporter
                .set_not_serving::<FeatureLinkServer<FeatureLinkService>>()
                .await;
        });
    }
    tonic::transport::Server::builder()
        .max_concurrent_streams(max_streams_per_connection)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(link_svc)
        .add_service(pred_svc)
        .add_service(preview_svc)
        .serve_with_incoming_shutdown(incoming, phase.until(Phase::Stopped))
        .await?;
    Ok(())
}

/// Asks the aggregator at `grpc` whether its feature link is SERVING (gRPC health).
pub async fn healthcheck(
    grpc: std::net::SocketAddr,
    timeout: std::time::Duration,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let ask = async {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{grpc}"))?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "splitnets.v1.FeatureLink".into(),
            })
            .await?
            .into_inner()
            .status;
        anyhow::Ok(status)
    };
    let status = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no health answer from {grpc} within {timeout:?}"))??;
    anyhow::ensure!(
        status == ServingStatus::Serving as i32,
        "feature link at {grpc} is {:?}",
        ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown)
    );
    Ok(())
}

/// What runs while the aggregator serves, handed to [`drain`] at shutdown.
struct Running {
    link_state: Arc<LinkState>,
    fusion: Arc<fusion::FusionStage>,
    tail_thread: std::thread::JoinHandle<()>,
    pred_tx: broadcast::Sender<Prediction>,
    server_task: tokio::task::JoinHandle<anyhow::Result<()>>,
    admin_task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The shutdown sequence: tell sensors to stop (`Draining`) and give them the drain timeout to
/// close their streams; fuse and publish what is pending (`Flushing`); let watchers receive it
/// all, then stop the servers (`Stopped`).
async fn drain(settings: &Settings, lifecycle: &Lifecycle, readiness: &Readiness, r: Running) {
    tracing::info!("draining: telling sensors to stop");
    readiness.set(false);
    lifecycle.advance(Phase::Draining);
    let deadline = Instant::now() + settings.drain_timeout;
    while !r
        .link_state
        .connected
        .lock()
        .expect("connected set lock")
        .is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    lifecycle.advance(Phase::Flushing);
    let _ = tokio::time::timeout(settings.drain_timeout, r.fusion.flush()).await;
    let tail_thread = r.tail_thread;
    let _ = tokio::task::spawn_blocking(move || tail_thread.join()).await;
    drop(r.pred_tx);
    lifecycle.advance(Phase::Stopped);
    let _ = tokio::time::timeout(settings.drain_timeout, r.server_task).await;
    drop(r.link_state);
    let _ = r.admin_task.await;
}

//! `sensor-node`: thin shell over [`sensor_node::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = sensor_node::Args::parse();
    if let Some(sensor_node::Command::Healthcheck { admin, timeout_ms }) = args.command {
        let timeout = std::time::Duration::from_millis(timeout_ms);
        return splitnets_ops::daemon_main(
            "sensor-node healthcheck",
            splitnets_ops::RuntimeThreads::One,
            splitnets_ops::check_ready(admin, timeout),
        );
    }
    // One thread for the link, the admin endpoint and the gRPC connection: the head runs on
    // the camera's own thread, so nothing async here is heavy, and one thread saves the
    // cross-thread wake-ups of every frame (measured: see deploy/reports/latency/README.md).
    splitnets_ops::daemon_main(
        "sensor-node",
        splitnets_ops::RuntimeThreads::One,
        start(args),
    )
}

async fn start(args: sensor_node::Args) -> anyhow::Result<()> {
    let settings = sensor_node::Settings::resolve(args)?;
    splitnets_ops::init_logging(settings.log_format, "info");
    let bundle_dir = settings.bundle.clone();
    let bundle = tokio::task::spawn_blocking(move || {
        splitnets_proto::bundle_set::BundleSet::load(&bundle_dir)
    })
    .await??;
    splitnets_runtime::onnx_runtime::environment()?;
    let admin = splitnets_ops::bind(settings.admin_listen, "admin HTTP").await?;
    let metrics = splitnets_ops::Metrics::new();
    let report = sensor_node::run(
        settings,
        bundle,
        admin,
        metrics,
        splitnets_ops::shutdown_signal(),
    )
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

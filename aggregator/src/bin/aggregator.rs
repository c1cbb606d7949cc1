//! `aggregator`: thin shell over [`aggregator::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = aggregator::Args::parse();
    if let Some(aggregator::Command::Healthcheck {
        grpc,
        timeout_ms,
        tls_ca,
        tls_domain,
    }) = args.command
    {
        let timeout = std::time::Duration::from_millis(timeout_ms);
        return splitnets_ops::daemon_main(
            "aggregator healthcheck",
            splitnets_ops::RuntimeThreads::One,
            async move {
                let tls = tls_ca
                    .map(|ca| splitnets_ops::tls::client_config(&ca, None, &tls_domain))
                    .transpose()?;
                aggregator::healthcheck(grpc, timeout, tls).await
            },
        );
    }
    splitnets_ops::daemon_main(
        "aggregator",
        splitnets_ops::RuntimeThreads::PerCore,
        start(args),
    )
}

async fn start(args: aggregator::Args) -> anyhow::Result<()> {
    let settings = aggregator::Settings::resolve(args)?;
    splitnets_ops::init_logging(settings.log_format, "info");
    let bundle_dir = settings.bundle.clone();
    let bundle = tokio::task::spawn_blocking(move || {
        splitnets_proto::bundle_set::BundleSet::load(&bundle_dir)
    })
    .await??;
    splitnets_runtime::onnx_runtime::environment()?;
    let grpc = splitnets_ops::bind(settings.listen, "gRPC").await?;
    let admin = splitnets_ops::bind(settings.admin_listen, "admin HTTP").await?;
    aggregator::run(
        settings,
        bundle,
        grpc,
        admin,
        splitnets_ops::Metrics::new(),
        splitnets_ops::shutdown_signal(),
    )
    .await
}

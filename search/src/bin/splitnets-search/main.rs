//! `splitnets-search`: offline design of split networks. One module per subcommand:
//! [`train`], [`plan`], [`bench_plan`], [`calibrate`], [`rebundle`] (`split-bundle`, `set-codec`),
//! [`nas`] (the split-aware architecture search).

mod bench_plan;
mod calibrate;
mod nas;
mod plan;
mod rebundle;
mod train;
mod user_model;

use clap::{Parser, Subcommand};
use splitnets_proto::codec::CodecSpec;

#[derive(Parser, Debug)]
#[command(version, about = "Offline design of SplitNets split models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the multi-view split CNN on Fashion-MNIST and write a split bundle.
    Train(train::TrainArgs),
    /// Find the best split points of an ONNX model for a hardware profile.
    Plan(plan::PlanArgs),
    /// Benchmark the planner: split evaluations per second and whole-plan time per model.
    BenchPlan(bench_plan::BenchArgs),
    /// Cut an ONNX model at named tensor(s) and write the bundle the daemons run.
    Split(user_model::SplitArgs),
    /// Re-split a bundle's network at another tensor and write the new bundle.
    SplitBundle(rebundle::SplitBundleArgs),
    /// Write a bundle's split with another link codec (link budget recomputed; no retraining).
    SetCodec(rebundle::SetCodecArgs),
    /// Split-aware architecture search: design the network, its split and its link together;
    /// write the Pareto front as bundles with a report.
    Nas(nas::NasArgs),
    /// Compare finished NAS runs (ablations): best test accuracy within common latency budgets.
    NasCompare(nas::NasCompareArgs),
    /// Train and measure the search's baselines (all on the sensor, all on the aggregator with
    /// raw or JPEG frames, planner cuts of a fixed backbone) under the same profile and budget;
    /// with a finished `nas` run in the same directory, compare its front against them.
    NasBaselines(nas::NasBaselinesArgs),
    /// Train one network of a finished search's front alone, from scratch, for a longer
    /// budget than the search's; test it and write its bundle.
    NasRetrain(nas::NasRetrainArgs),
    /// Make a finished search's front of members retrained alone (`nas-retrain` outputs), for
    /// `nas-baselines` to compare at an equal budget per network.
    NasRetrainedFront(nas::NasRetrainedFrontArgs),
    /// Measure this machine with ONNX Runtime, fit per-op-class throughput, write a host profile,
    /// and report prediction error on held-out models.
    Calibrate(calibrate::CalibrateArgs),
}

pub(crate) fn codec_from_bits(bits: u8, per_channel: bool) -> anyhow::Result<CodecSpec> {
    Ok(match bits {
        32 => CodecSpec::Float32,
        16 => CodecSpec::Float16,
        2 | 4 | 6 | 8 => CodecSpec::Affine { bits, per_channel },
        b => anyhow::bail!("--bits {b} is not supported: use 2, 4, 6, 8, 16 or 32"),
    })
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run_train(a),
        Command::Plan(a) => plan::run_plan(a),
        Command::BenchPlan(a) => bench_plan::run_bench(a),
        Command::Calibrate(a) => calibrate::run_calibrate(a),
        Command::Nas(a) => nas::run_nas(a),
        Command::NasCompare(a) => nas::run_nas_compare(a),
        Command::NasBaselines(a) => nas::run_nas_baselines(a),
        Command::NasRetrain(a) => nas::run_nas_retrain(a),
        Command::NasRetrainedFront(a) => nas::run_nas_retrained_front(a),
        Command::Split(a) => user_model::run_split(a),
        Command::SplitBundle(a) => rebundle::run_split_bundle(a),
        Command::SetCodec(a) => rebundle::run_set_codec(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("splitnets-search: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

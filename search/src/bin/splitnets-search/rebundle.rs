//! `splitnets-search split-bundle` and `set-codec`: new bundles from an existing one (another
//! cut, another link codec), without retraining.

use std::path::PathBuf;

use splitnets_camera::dataset::{self, Split};

use crate::codec_from_bits;
use crate::plan::load_profile;

#[derive(clap::Args, Debug)]
pub(crate) struct SplitBundleArgs {
    /// The source bundle.
    #[arg(long, default_value = "deploy/bundles/hand-designed-4view")]
    pub(crate) from: PathBuf,
    /// The tensor to send across the link (see `plan` for the candidates).
    #[arg(long)]
    pub(crate) cut: String,
    /// Bits per element on the link: 2, 4, 6, 8, 16 or 32.
    #[arg(long, default_value_t = 8)]
    pub(crate) bits: u8,
    #[arg(long)]
    pub(crate) per_channel: bool,
    /// Calibrate one fixed quantization range on this many training-split frames (seen by every
    /// camera of the bundle) instead of sending each frame's own range; 0 = off.
    #[arg(long, default_value_t = 0)]
    pub(crate) calibrate_frames: usize,
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = dataset::DEFAULT_DIR)]
    pub(crate) data_dir: PathBuf,
    /// Hardware profile for the predicted costs recorded in the manifest (`headset` or a TOML file).
    #[arg(long, default_value = "headset")]
    pub(crate) profile: String,
    #[arg(long)]
    pub(crate) out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SetCodecArgs {
    #[arg(long)]
    pub(crate) bundle: PathBuf,
    /// Bits per element on the link: 2, 4, 6, 8, 16 or 32.
    #[arg(long)]
    pub(crate) bits: u8,
    #[arg(long)]
    pub(crate) per_channel: bool,
    /// Output directory (may be the input bundle itself).
    #[arg(long)]
    pub(crate) out: PathBuf,
}

pub(crate) fn run_split_bundle(a: SplitBundleArgs) -> anyhow::Result<()> {
    let codec = codec_from_bits(a.bits, a.per_channel)?;
    let profile = load_profile(&a.profile)?;
    let src = splitnets_proto::bundle::Bundle::load(&a.from)?;
    let choice = if a.calibrate_frames > 0 {
        anyhow::ensure!(
            a.bits <= 8 && !a.per_channel,
            "--calibrate-frames needs --bits 2, 4, 6 or 8, per tensor"
        );
        // Training-split frames: the range is never fitted on the frames the demo replays.
        let set = dataset::load(&a.data_dir, Split::Train)?;
        let rig = &src.manifest.cameras;
        let frames = (0..a.calibrate_frames as u64)
            .flat_map(|i| (0..rig.views).map(move |v| (v, i)))
            .map(|(v, i)| splitnets_camera::rig::replay_frame(rig, &set, v, i))
            .collect();
        splitnets_search::rebundle::CodecChoice::Calibrated {
            bits: a.bits,
            frames,
        }
    } else {
        splitnets_search::rebundle::CodecChoice::Fixed(codec)
    };
    let r = splitnets_search::rebundle::rebundle(&src, &a.cut, choice, &profile, &a.out)?;
    let codec = splitnets_proto::bundle::Bundle::load(&a.out)?
        .manifest
        .codec;
    println!(
        "bundle {} (digest {}): feature {:?} as {codec}, {} B per view per frame; predicted on {}: sensor {:.3} ms, link {:.3} ms, aggregator {:.3} ms, end to end {:.3} ms, sensor memory {} B",
        a.out.display(),
        &r.digest[..16],
        r.feature_shape,
        r.bytes_per_view_per_frame,
        r.predicted.profile,
        r.predicted.sensor_seconds * 1e3,
        r.predicted.link_seconds * 1e3,
        r.predicted.aggregator_seconds * 1e3,
        r.predicted.end_to_end_seconds * 1e3,
        r.predicted.sensor_peak_memory_bytes
    );
    Ok(())
}

pub(crate) fn run_set_codec(a: SetCodecArgs) -> anyhow::Result<()> {
    let codec = codec_from_bits(a.bits, a.per_channel)?;
    let b = splitnets_proto::bundle::Bundle::load(&a.bundle)?;
    let manifest = b.manifest.with_codec(codec);
    let budget = manifest.link_budget;
    let digest =
        splitnets_proto::bundle::Bundle::write(&a.out, manifest, &b.head_onnx, &b.tail_onnx)?;
    println!(
        "bundle {} (digest {}): {codec}, {} B per view per frame ({} B payload)",
        a.out.display(),
        &digest[..16],
        budget.bytes_per_view_per_frame,
        budget.payload_bytes_per_view
    );
    Ok(())
}

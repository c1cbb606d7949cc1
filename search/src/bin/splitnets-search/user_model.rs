//! Bring your own model: the input description and sample images shared by `plan` and `split`,
//! and `splitnets-search split` (one named cut as a bundle).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use splitnets_proto::bundle::{InputSpec, Layout, ResizeMode};
use splitnets_proto::codec::CodecSpec;
use splitnets_search::cuts::Cut;
use splitnets_search::user_model::{self, BundleOptions, TensorCodec, UserModel, WrittenBundle};

/// How camera images become the model's input, and what to check the bundles on.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ModelInputArgs {
    /// Per-channel mean of the input normalisation on pixel/255 values, comma-separated
    /// (default: ImageNet's 0.485,0.456,0.406 for 3 channels, 0 for 1).
    #[arg(long, value_delimiter = ',')]
    pub(crate) mean: Option<Vec<f32>>,
    /// Per-channel standard deviation (default: ImageNet's 0.229,0.224,0.225 for 3 channels, 1 for 1).
    #[arg(long, value_delimiter = ',')]
    pub(crate) std: Option<Vec<f32>>,
    /// How images of another size are fitted: `center-crop` (shorter side to
    /// size/crop-fraction, then the centre: torchvision's Resize + CenterCrop) or `stretch`.
    #[arg(long, default_value = "center-crop")]
    pub(crate) resize: String,
    /// Fraction of the resized image the centre crop keeps (0.875 = 224 of 256).
    #[arg(long, default_value_t = 0.875)]
    pub(crate) crop_fraction: f32,
    /// Class names, one per line, in the model's output order.
    #[arg(long)]
    pub(crate) labels: Option<PathBuf>,
    /// Sample images (PNG/JPEG, any size): the float check, the quantized agreement per bit
    /// width and the JPEG baseline are measured on them.
    #[arg(long)]
    pub(crate) images: Option<PathBuf>,
    /// Calibrate the codec's range on these images: one fixed range per crossing tensor in the
    /// bundle, no quantization parameters sent per frame (default: each frame's own range).
    #[arg(long)]
    pub(crate) calibrate_images: Option<PathBuf>,
    /// With --calibrate-images: one fixed range per channel (axis 1) instead of per tensor.
    #[arg(long, requires = "calibrate_images")]
    pub(crate) calibrate_per_channel: bool,
    /// Most sample images read from each folder.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_images: usize,
}

/// `--input-shape NAME=d,d,...` values.
pub(crate) fn parse_input_shapes(v: &[String]) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    let mut shapes = HashMap::new();
    for s in v {
        let (name, dims) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--input-shape {s:?} is not NAME=d,d,..."))?;
        let dims = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| anyhow::anyhow!("--input-shape {s:?}: dims must be integers"))?;
        shapes.insert(name.to_string(), dims);
    }
    Ok(shapes)
}

/// The bundle's input specification for the model's image input.
pub(crate) fn input_spec(um: &UserModel, a: &ModelInputArgs) -> anyhow::Result<InputSpec> {
    let (_, s) = um.image_input()?;
    let nchw = matches!(s[1], 1 | 3);
    let (c, h, w) = if nchw {
        (s[1], s[2], s[3])
    } else {
        (s[3], s[1], s[2])
    };
    let (dm, ds) = if c == 3 {
        (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
    } else {
        (vec![0.0], vec![1.0])
    };
    let mean = a.mean.clone().unwrap_or(dm);
    let std = a.std.clone().unwrap_or(ds);
    for (what, v) in [("--mean", &mean), ("--std", &std)] {
        anyhow::ensure!(
            v.len() == 1 || v.len() == c,
            "{what} has {} values; the input has {c} channels",
            v.len()
        );
    }
    let (resize, crop_fraction) = match a.resize.as_str() {
        "center-crop" => {
            anyhow::ensure!(
                a.crop_fraction > 0.0 && a.crop_fraction <= 1.0,
                "--crop-fraction {} is not in (0, 1]",
                a.crop_fraction
            );
            (ResizeMode::CenterCrop, Some(a.crop_fraction))
        }
        "stretch" => (ResizeMode::Stretch, None),
        other => anyhow::bail!("--resize {other:?} is not center-crop or stretch"),
    };
    let spec = InputSpec {
        height: h,
        width: w,
        pixel_format: if c == 3 { "rgb8" } else { "gray8" }.into(),
        layout: if nchw { Layout::Nchw } else { Layout::Nhwc },
        mean: mean.into(),
        std: std.into(),
        resize,
        crop_fraction,
    };
    Ok(spec)
}

/// Camera frames (pixels) and the head inputs made from them.
pub(crate) type FramesAndInputs = (Vec<Vec<u8>>, Vec<Vec<f32>>);

/// Up to `max` images of `dir` as camera frames of `spec`, and as head inputs.
pub(crate) fn load_images(
    dir: &Path,
    spec: &InputSpec,
    max: usize,
) -> anyhow::Result<FramesAndInputs> {
    use splitnets_camera::images::{FrameFormat, load_folder};
    let mut frames = load_folder(dir, &FrameFormat::of(spec))
        .with_context(|| format!("reading images from {}", dir.display()))?;
    frames.truncate(max);
    let inputs = frames
        .iter()
        .map(|f| {
            let mut x = Vec::new();
            spec.preprocess(f, &mut x);
            x
        })
        .collect();
    Ok((frames, inputs))
}

/// Seeded uniform inputs in the normalised range, for the float check when no images are given.
pub(crate) fn random_inputs(spec: &InputSpec, n: usize) -> Vec<Vec<f32>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let len = spec.raw_frame_bytes();
    (0..n)
        .map(|_| {
            let frame: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect();
            let mut x = Vec::new();
            spec.preprocess(&frame, &mut x);
            x
        })
        .collect()
}

pub(crate) fn read_labels(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Everything needed to write bundles of `um`'s cuts.
pub(crate) struct BundleJob {
    pub opts: BundleOptions,
    /// Inputs the float check and the agreement run on (the images, else seeded noise).
    pub check_inputs: Vec<Vec<f32>>,
    pub from_images: bool,
    pub calibration: Option<Vec<Vec<f32>>>,
    pub calibrate_per_channel: bool,
}

impl BundleJob {
    pub(crate) fn new(
        um: &UserModel,
        a: &ModelInputArgs,
        codec: CodecSpec,
        fps: f64,
        profile: splitnets_cost_model::profile::HardwareProfile,
        command: String,
    ) -> anyhow::Result<(Self, Option<Vec<Vec<u8>>>)> {
        let input = input_spec(um, a)?;
        let classes = match &a.labels {
            Some(p) => read_labels(p)?,
            None => Vec::new(),
        };
        let (frames, check_inputs, from_images) = match &a.images {
            Some(dir) => {
                let (f, x) = load_images(dir, &input, a.max_images)?;
                (Some(f), x, true)
            }
            None => (None, random_inputs(&input, 4), false),
        };
        let calibration = match &a.calibrate_images {
            Some(dir) => Some(load_images(dir, &input, a.max_images)?.1),
            None => None,
        };
        Ok((
            Self {
                opts: BundleOptions {
                    input,
                    classes,
                    codec,
                    tensor_codecs: Vec::new(),
                    fps,
                    profile,
                    command,
                },
                check_inputs,
                from_images,
                calibration,
                calibrate_per_channel: a.calibrate_per_channel,
            },
            frames,
        ))
    }

    /// Writes `cut` to `dir` (codec calibrated on the calibration images when given).
    pub(crate) fn write(
        &self,
        um: &UserModel,
        cut: &Cut,
        dir: &Path,
    ) -> anyhow::Result<WrittenBundle> {
        let mut opts = self.opts.clone();
        if let Some(cal) = &self.calibration {
            let (CodecSpec::Affine { bits, .. } | CodecSpec::AffineCalibrated { bits, .. }) =
                opts.codec
            else {
                anyhow::bail!("--calibrate-images needs a quantized codec (--bits 2..8)")
            };
            opts.tensor_codecs = user_model::feature_ranges(um, cut, cal)?
                .into_iter()
                .map(|r| {
                    if self.calibrate_per_channel {
                        TensorCodec {
                            codec: CodecSpec::AffineCalibratedPerChannel { bits },
                            channel_ranges: r.channels,
                        }
                    } else {
                        TensorCodec::plain(CodecSpec::AffineCalibrated {
                            bits,
                            min: r.min,
                            max: r.max,
                        })
                    }
                })
                .collect();
        }
        user_model::write_bundle(um, cut, &opts, &self.check_inputs, dir)
    }
}

/// One line per bundle plus the quantized agreement per bit width, as plan.txt shows them.
pub(crate) fn bundle_report(
    um: &UserModel,
    written: &[(WrittenBundle, &Cut)],
    job: &BundleJob,
) -> anyhow::Result<String> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nBundles ({} written; float check on {} {}; B/frame: the feature frame on the gRPC stream, exact — the table's B/view adds the profile's {} B per message for the transport beneath):",
        written.len(),
        job.check_inputs.len(),
        if job.from_images {
            "images"
        } else {
            "seeded random inputs (give --images for real ones)"
        },
        job.opts.profile.link.message_overhead_bytes
    );
    let bits = [8u8, 6, 4];
    let _ = writeln!(
        s,
        "{:<34} {:<28} {:>10} {:>9} {:>10}  top-1 agreement with the whole model: the bundle's codec; per-frame range at 8/6/4 bits",
        "dir", "crossing", "B/frame", "e2e ms", "float diff"
    );
    for (b, cut) in written {
        let agreement = if job.from_images {
            let mut codecs = vec![b.codecs.clone()];
            codecs.extend(bits.iter().map(|&b| {
                vec![TensorCodec::plain(CodecSpec::Affine {
                    bits: b,
                    per_channel: false,
                })]
            }));
            let a = user_model::quantized_agreement(um, cut, &codecs, &job.check_inputs)?;
            format!(
                "{:.1} % ({}); {}",
                a[0] * 100.0,
                codec_name(b.codecs[0].codec),
                a[1..]
                    .iter()
                    .map(|v| format!("{:.1} %", v * 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            )
        } else {
            "n/a (no --images)".into()
        };
        let _ = writeln!(
            s,
            "{:<34} {:<28} {:>10} {:>9.3} {:>10}  {agreement}",
            b.dir,
            b.crossing,
            b.bytes_per_view_per_frame,
            b.predicted.end_to_end_seconds * 1e3,
            if b.float_max_abs_diff == 0.0 {
                "exact".to_string()
            } else {
                format!("{:e}", b.float_max_abs_diff)
            },
        );
    }
    Ok(s)
}

/// Top-1 agreement with the whole model on the sample images, for every cut of the plan (the
/// Pareto front first, then by rank; multi-tensor cuts too: each crossing tensor through the
/// codec), with each tensor's range taken per frame at 8, 6 and 4 bits: which cuts survive 4
/// bits. Returns the text for plan.txt and the rows of `agreement.csv`.
pub(crate) fn cut_agreement(
    um: &UserModel,
    plan: &splitnets_search::plan::Plan,
    cuts: &[Cut],
    job: &BundleJob,
) -> (String, String) {
    let bits = [8u8, 6, 4];
    let codecs: Vec<Vec<TensorCodec>> = bits
        .iter()
        .map(|&bits| {
            vec![TensorCodec::plain(CodecSpec::Affine {
                bits,
                per_channel: false,
            })]
        })
        .collect();
    let mut s = format!(
        "\nTop-1 agreement with the whole model on {} images, every cut (Pareto front first), range per frame at 8 / 6 / 4 bits (agreement.csv has them all):\n",
        job.check_inputs.len()
    );
    let mut csv = String::from(
        "rank,pareto,crossing,e2e_ms,agreement_8bit,agreement_6bit,agreement_4bit,error\n",
    );
    let mut rows: Vec<_> = plan.rows.iter().collect();
    rows.sort_by_key(|r| (!r.pareto, row_rank(plan, r)));
    let started = std::time::Instant::now();
    let (mut survive4, mut measured) = (0usize, 0usize);
    for (k, row) in rows.iter().enumerate() {
        if k % 20 == 0 && k > 0 {
            eprintln!(
                "[plan]   agreement: {k}/{} cuts, {:.0} s",
                rows.len(),
                started.elapsed().as_secs_f64()
            );
        }
        let cut = &cuts[row.cut_index];
        let crossing = row.crossing.join(" + ");
        let rank = row_rank(plan, row);
        let result = if cut
            .crossing
            .iter()
            .any(|&t| um.graph.tensors[t].producer.is_none())
            || cut.on_sensor.iter().all(|&x| x)
        {
            Err("the raw input or the output crosses: nothing to quantize here".to_string())
        } else {
            user_model::quantized_agreement(um, cut, &codecs, &job.check_inputs)
                .map_err(|e| format!("{e:#}"))
        };
        let text = match &result {
            Ok(a) => {
                measured += 1;
                survive4 += usize::from(a[2] >= 0.99);
                let _ = writeln!(
                    csv,
                    "{rank},{},\"{crossing}\",{:.4},{:.4},{:.4},{:.4},",
                    row.pareto,
                    row.cost.end_to_end_seconds * 1e3,
                    a[0],
                    a[1],
                    a[2]
                );
                a.iter()
                    .map(|v| format!("{:.1} %", v * 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            }
            Err(e) => {
                let _ = writeln!(
                    csv,
                    "{rank},{},\"{crossing}\",{:.4},,,,\"{}\"",
                    row.pareto,
                    row.cost.end_to_end_seconds * 1e3,
                    e.replace('"', "'")
                );
                format!("n/a ({e})")
            }
        };
        if row.pareto || k < 40 {
            let _ = writeln!(
                s,
                "  rank {rank:<3} {:<7} {crossing:<40} {text}",
                if row.pareto { "pareto" } else { "" },
            );
        }
    }
    if rows.len() > 40 {
        let _ = writeln!(s, "  ... {} more cuts in agreement.csv", rows.len() - 40);
    }
    let _ = writeln!(
        s,
        "  {survive4} of {measured} cuts keep >= 99 % agreement at 4 bits."
    );
    (s, csv)
}

fn row_rank(plan: &splitnets_search::plan::Plan, row: &splitnets_search::plan::PlanRow) -> usize {
    plan.rows
        .iter()
        .position(|r| r.cut_index == row.cut_index)
        .map_or(0, |i| i + 1)
}

fn codec_name(c: CodecSpec) -> String {
    match c {
        CodecSpec::Float32 => "float32".into(),
        CodecSpec::Float16 => "float16".into(),
        CodecSpec::Affine { bits, per_channel } => format!(
            "{bits}-bit, range per {}",
            if per_channel { "channel" } else { "frame" }
        ),
        CodecSpec::AffineCalibrated { bits, .. } => format!("{bits}-bit, calibrated range"),
        CodecSpec::AffineCalibratedPerChannel { bits } => {
            format!("{bits}-bit, calibrated range per channel")
        }
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct SplitArgs {
    /// The ONNX model to split.
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// The tensor(s) sent over the link, comma-separated (names as in plan.txt).
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) cut: Vec<String>,
    /// Where to write the bundle (head.onnx, tail.onnx, bundle.toml).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Hardware profile TOML, or `headset`.
    #[arg(long, default_value = "headset")]
    pub(crate) profile: String,
    /// Frame rate the link budget is computed for.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) fps: f64,
    /// Bits per element of the feature on the wire (2, 4, 6, 8; 16 or 32 for float).
    #[arg(long, default_value_t = 8)]
    pub(crate) bits: u8,
    /// Shape of an input whose dims are symbolic beyond the batch: NAME=1,3,224,224.
    #[arg(long = "input-shape")]
    pub(crate) input_shapes: Vec<String>,
    #[command(flatten)]
    pub(crate) input: ModelInputArgs,
}

pub(crate) fn run_split(a: SplitArgs) -> anyhow::Result<()> {
    let profile = crate::plan::load_profile(&a.profile)?;
    let um = UserModel::load(&a.model, &parse_input_shapes(&a.input_shapes)?)?;
    for t in &um.graph.batch_taken_as_one {
        eprintln!("[split] input {t:?}: symbolic batch dimension taken as 1");
    }
    let cuts = splitnets_search::cuts::enumerate(&um.graph, a.cut.len().max(1), 2_000_000)?;
    let cut = um.cut_at(&cuts, &a.cut)?;
    let (job, _) = BundleJob::new(
        &um,
        &a.input,
        crate::codec_from_bits(a.bits, false)?,
        a.fps,
        profile,
        std::env::args().collect::<Vec<_>>().join(" "),
    )?;
    let b = job.write(&um, cut, &a.out)?;
    print!("{}", bundle_report(&um, &[(b.clone(), cut)], &job)?);
    println!(
        "wrote {} (digest {}): {} B per frame on the wire, predicted {:.3} ms end to end",
        b.dir,
        &b.digest[..16],
        b.bytes_per_view_per_frame,
        b.predicted.end_to_end_seconds * 1e3
    );
    Ok(())
}

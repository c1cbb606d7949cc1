//! `splitnets-search plan`: the best split points of an ONNX model for a hardware profile.

use std::path::PathBuf;

use anyhow::Context;
use splitnets_camera::dataset::{self, Split};

#[derive(clap::Args, Debug)]
pub(crate) struct PlanArgs {
    /// The ONNX model to split.
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// Hardware profile TOML, or `headset` for the shipped preset.
    #[arg(long, default_value = "headset")]
    pub(crate) profile: String,
    /// Target camera frame rate (a constraint: the slowest stage must keep up).
    #[arg(long, default_value_t = 30.0)]
    pub(crate) fps: f64,
    /// Bits per element of the crossing feature (2, 4, 6, 8, 16, 32).
    #[arg(long, default_value_t = 8)]
    pub(crate) bits: u32,
    /// End-to-end latency target, milliseconds.
    #[arg(long)]
    pub(crate) latency_ms: Option<f64>,
    /// Most tensors a cut may send across the link.
    #[arg(long, default_value_t = 2)]
    pub(crate) max_crossing: usize,
    /// Bound on the down-closed node sets visited while enumerating cuts.
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) max_states: usize,
    /// Shape of an input whose dims are symbolic beyond a leading batch dimension (taken as
    /// 1): NAME=1,3,224,224 (repeatable).
    #[arg(long = "input-shape")]
    pub(crate) input_shapes: Vec<String>,
    /// Write a bundle (head.onnx, tail.onnx, bundle.toml) for each of the top N cuts that can
    /// be one, under OUT/bundles/ (0: none).
    #[arg(long, default_value_t = 3)]
    pub(crate) bundles: usize,
    #[command(flatten)]
    pub(crate) input: crate::user_model::ModelInputArgs,
    /// JPEG quality of the "compress the frame and send it" baseline.
    #[arg(long, default_value_t = 75)]
    pub(crate) jpeg_quality: u8,
    /// Where to write plan.txt, plan.csv, plan.json and pareto.svg.
    #[arg(long, default_value = "out/plan")]
    pub(crate) out: PathBuf,
    /// Table rows to print.
    #[arg(long, default_value_t = 15)]
    pub(crate) rows: usize,
    #[arg(long, env = "SPLITNETS_DATA_DIR", default_value = dataset::DEFAULT_DIR)]
    pub(crate) data_dir: PathBuf,
}

pub(crate) fn run_plan(a: PlanArgs) -> anyhow::Result<()> {
    use crate::user_model::BundleJob;
    use splitnets_search::user_model::{self, UserModel};
    use splitnets_search::{cuts, plan};
    use std::time::Instant;

    let profile = load_profile(&a.profile)?;
    anyhow::ensure!(
        matches!(a.bits, 2 | 4 | 6 | 8 | 16 | 32),
        "--bits {} is not 2, 4, 6, 8, 16 or 32",
        a.bits
    );
    let started = Instant::now();
    let shapes = crate::user_model::parse_input_shapes(&a.input_shapes)?;
    let um = UserModel::load(&a.model, &shapes)?;
    let g = &um.graph;
    for t in &g.batch_taken_as_one {
        eprintln!("[plan] input {t:?}: symbolic batch dimension taken as 1");
    }
    eprintln!(
        "[plan] {}: {} compute nodes ({} constant nodes folded, {} of them shape arithmetic), {:.2} GMAC",
        a.model.display(),
        g.nodes.len(),
        g.constant_nodes.len(),
        g.shape_constants.len(),
        g.total_macs() as f64 / 1e9
    );
    let all_cuts = cuts::enumerate(g, a.max_crossing, a.max_states)?;
    eprintln!(
        "[plan] {} cuts with at most {} crossing tensors ({:.0} ms)",
        all_cuts.len(),
        a.max_crossing,
        started.elapsed().as_secs_f64() * 1e3
    );
    let sums = plan::summaries(g, &all_cuts);
    let image_model = um.image_input().is_ok();
    let mut profile = profile;
    if image_model && profile.sensors != 1 {
        // A user's model sees one camera (its bundles have no fusion): plan it for one.
        eprintln!(
            "[plan] single-view model: costs for 1 camera (the profile {:?} has {})",
            profile.name, profile.sensors
        );
        profile.sensors = 1;
    }
    let job = if image_model && (a.bundles > 0 || a.input.images.is_some()) {
        Some(BundleJob::new(
            &um,
            &a.input,
            crate::codec_from_bits(a.bits as u8, false)?,
            a.fps,
            profile.clone(),
            std::env::args().collect::<Vec<_>>().join(" "),
        )?)
    } else {
        None
    };
    // The JPEG baseline: frame size measured on the user's images at the model's input size
    // when given; otherwise on Fashion-MNIST upscaled (which compresses far better than photos:
    // said in the output).
    let input = &g.tensors[g.inputs[0]].shape;
    let mut jpeg_note = String::new();
    let jpeg = match (&job, input.len() == 4) {
        (Some((j, Some(frames))), _) => {
            let s = &j.opts.input;
            let t = Instant::now();
            let bytes = plan::jpeg_mean_bytes(
                frames,
                s.width as u16,
                s.height as u16,
                s.channels(),
                a.jpeg_quality,
            )?;
            jpeg_note = format!(
                "JPEG q{} of {} of your images at {}x{}: {} B per frame on average; encoding took {:.2} ms per frame on this machine",
                a.jpeg_quality,
                frames.len(),
                s.width,
                s.height,
                bytes,
                t.elapsed().as_secs_f64() * 1e3 / frames.len().max(1) as f64
            );
            Some((bytes, (s.width * s.height * s.channels()) as u64))
        }
        (_, true) if input[1] == 1 || input[1] == 3 => {
            let set = dataset::load(&a.data_dir, Split::Test)?;
            let (c, h, w) = (input[1], input[2], input[3]);
            let frames: Vec<Vec<u8>> = (0..32)
                .map(|i| {
                    let img = set.image(i);
                    let mut f = Vec::with_capacity(h * w * c);
                    for y in 0..h {
                        for x in 0..w {
                            let p = img[(y * set.rows / h) * set.cols + x * set.cols / w];
                            f.extend(std::iter::repeat_n(p, c));
                        }
                    }
                    f
                })
                .collect();
            jpeg_note = "JPEG baseline measured on upscaled Fashion-MNIST (compresses far better than photos: give --images for yours)".into();
            Some((
                plan::jpeg_mean_bytes(&frames, w as u16, h as u16, c, a.jpeg_quality)?,
                (c * h * w) as u64,
            ))
        }
        _ => None,
    };
    let p = plan::plan(
        &a.model.display().to_string(),
        g,
        &all_cuts,
        &sums,
        &profile,
        &plan::PlanOptions {
            bits: a.bits,
            fps: a.fps,
            latency_seconds: a.latency_ms.map(|l| l / 1e3),
            jpeg_frame_bytes: jpeg.map(|j| j.0),
            jpeg_frame_samples: jpeg.map(|j| j.1),
        },
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut table = plan::table(&p, a.rows);
    if !jpeg_note.is_empty() {
        table.push_str(&format!(
            "{jpeg_note}; its encode time on the sensor is estimated as {} MAC per sample at the sensor's conv rate.\n",
            plan::JPEG_MACS_PER_SAMPLE
        ));
    }
    if let Some((job, _)) = &job
        && a.bundles > 0
    {
        // The top cuts in the plan's ranking that can be bundles (not the raw input or the
        // output; several tensors crossing is fine).
        let mut written = Vec::new();
        let mut skipped = Vec::new();
        for row in &p.rows {
            if written.len() == a.bundles {
                break;
            }
            let cut = &all_cuts[row.cut_index];
            if let Some(why) = user_model::bundle_blocker(g, cut) {
                skipped.push(format!(
                    "cut {} ({}): {why}",
                    row.cut_index,
                    row.crossing.join("+")
                ));
                continue;
            }
            // Named by rank, so a listing puts the best first.
            let dir = a.out.join("bundles").join(format!(
                "{:02}-{}",
                written.len() + 1,
                sanitize(&row.crossing.join("+"))
            ));
            eprintln!(
                "[plan] writing bundle {} (float check, then files)",
                dir.display()
            );
            match job.write(&um, cut, &dir) {
                Ok(b) => written.push((b, cut)),
                Err(e) => skipped.push(format!(
                    "cut {} ({}): {e:#}",
                    row.cut_index,
                    row.crossing.join("+")
                )),
            }
        }
        table.push_str(&crate::user_model::bundle_report(&um, &written, job)?);
        if !skipped.is_empty() {
            table.push_str(&format!("Skipped on the way ({}):\n", skipped.len()));
            for s in skipped.iter().take(10) {
                table.push_str(&format!("  {s}\n"));
            }
        }
        let json: Vec<_> = written.iter().map(|(b, _)| b).collect();
        std::fs::write(
            a.out.join("bundles.json"),
            serde_json::to_vec_pretty(&json)?,
        )?;
    }
    if let Some((job, _)) = &job
        && job.from_images
    {
        eprintln!(
            "[plan] quantized agreement of every cut on your images ({} cuts x {} images)",
            p.rows.len(),
            job.check_inputs.len()
        );
        let (text, csv) = crate::user_model::cut_agreement(&um, &p, &all_cuts, job);
        table.push_str(&text);
        std::fs::write(a.out.join("agreement.csv"), csv)?;
    }
    std::fs::write(a.out.join("plan.txt"), &table)?;
    std::fs::write(a.out.join("plan.csv"), plan::csv(&p))?;
    std::fs::write(a.out.join("plan.json"), serde_json::to_vec_pretty(&p)?)?;
    std::fs::write(a.out.join("pareto.svg"), plan::svg(&p))?;
    let feasible = p.rows.iter().filter(|r| r.feasible).count();
    let pareto = p.rows.iter().filter(|r| r.pareto).count();
    println!("{table}");
    println!(
        "{} cuts, {} feasible at {} fps{}, {} on the Pareto front; planned in {:.0} ms; JPEG q{} frame {} B; written to {}",
        p.rows.len(),
        feasible,
        a.fps,
        a.latency_ms
            .map(|l| format!(" and {l} ms"))
            .unwrap_or_default(),
        pareto,
        started.elapsed().as_secs_f64() * 1e3,
        a.jpeg_quality,
        jpeg.map_or("n/a".to_string(), |b| b.0.to_string()),
        a.out.display()
    );
    Ok(())
}

/// A tensor name as a directory name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn load_profile(
    spec: &str,
) -> anyhow::Result<splitnets_cost_model::profile::HardwareProfile> {
    let text = if spec == "headset" {
        splitnets_cost_model::profile::presets::HEADSET.to_string()
    } else {
        std::fs::read_to_string(spec).with_context(|| format!("reading profile {spec}"))?
    };
    let p: splitnets_cost_model::profile::HardwareProfile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "profile {spec}: {}",
            e.to_string().trim().replace('\n', " ")
        )
    })?;
    p.validate()?;
    Ok(p)
}

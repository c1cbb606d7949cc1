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
    /// Shape of an input whose dims are symbolic: NAME=1,3,224,224 (repeatable).
    #[arg(long = "input-shape")]
    pub(crate) input_shapes: Vec<String>,
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
    use splitnets_cost_model::graph::analyze;
    use splitnets_search::{cuts, plan};
    use std::collections::HashMap;
    use std::time::Instant;

    let profile = load_profile(&a.profile)?;
    anyhow::ensure!(
        matches!(a.bits, 2 | 4 | 6 | 8 | 16 | 32),
        "--bits {} is not 2, 4, 6, 8, 16 or 32",
        a.bits
    );
    let mut shapes = HashMap::new();
    for s in &a.input_shapes {
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
    let started = Instant::now();
    let model = splitnets_onnx::read_model(&a.model)?;
    let spec = splitnets_onnx::cost_graph(&model)?;
    let g = analyze(&spec, &shapes).with_context(|| format!("analysing {}", a.model.display()))?;
    eprintln!(
        "[plan] {}: {} compute nodes ({} constant nodes folded), {:.2} GMAC",
        a.model.display(),
        g.nodes.len(),
        g.constant_nodes.len(),
        g.total_macs() as f64 / 1e9
    );
    let all_cuts = cuts::enumerate(&g, a.max_crossing, a.max_states)?;
    eprintln!(
        "[plan] {} cuts with at most {} crossing tensors ({:.0} ms)",
        all_cuts.len(),
        a.max_crossing,
        started.elapsed().as_secs_f64() * 1e3
    );
    let sums = plan::summaries(&g, &all_cuts);
    // The JPEG baseline's frame size is measured on real images (Fashion-MNIST, upscaled to the
    // model's input, grey replicated to its channels): a stand-in for camera frames.
    let input = &g.tensors[g.inputs[0]].shape;
    let jpeg = if input.len() == 4 && (input[1] == 1 || input[1] == 3) {
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
        Some(plan::jpeg_mean_bytes(
            &frames,
            w as u16,
            h as u16,
            c,
            a.jpeg_quality,
        )?)
    } else {
        None
    };
    let p = plan::plan(
        &a.model.display().to_string(),
        &g,
        &all_cuts,
        &sums,
        &profile,
        &plan::PlanOptions {
            bits: a.bits,
            fps: a.fps,
            latency_seconds: a.latency_ms.map(|l| l / 1e3),
            jpeg_frame_bytes: jpeg,
        },
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let table = plan::table(&p, a.rows);
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
        jpeg.map_or("n/a".to_string(), |b| b.to_string()),
        a.out.display()
    );
    Ok(())
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

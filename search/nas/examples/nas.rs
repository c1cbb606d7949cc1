//! Runs the split-aware search: `cargo run --release -p splitnets-nas --example nas -- DATA PRESET OUT`
//! with DATA one of fashion-mnist, fashion-mnist-4view, shapes and PRESET quick or full.

use std::io::Write;
use std::path::PathBuf;

use splitnets_cost_model::profile::{HardwareProfile, presets};
use splitnets_nas::data::DataKind;
use splitnets_nas::{NasConfig, Preset, Progress, onnx_export, reference, report, run_nas};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let kind = match args.get(1).map(String::as_str) {
        Some("fashion-mnist") => DataKind::FashionMnist,
        Some("fashion-mnist-4view") | None => DataKind::FashionMnist4View,
        Some("shapes") => DataKind::Shapes,
        Some(o) => return Err(format!("unknown data set {o}").into()),
    };
    let preset = match args.get(2).map(String::as_str) {
        Some("full") => Preset::Full,
        Some("quick") | None => Preset::Quick,
        Some(o) => return Err(format!("unknown preset {o}").into()),
    };
    let out = PathBuf::from(args.get(3).cloned().unwrap_or_else(|| "nas-out".into()));
    let profile: HardwareProfile = toml::from_str(presets::HEADSET)?;
    let mut cfg = NasConfig::preset(preset, kind, profile, Some(out.clone()));
    if let Ok(t) = std::env::var("NAS_TRAIN_THREADS") {
        cfg.train.threads = t.parse()?;
    }
    // Ablation switches.
    if std::env::var("NAS_INIT").is_ok_and(|v| v == "default") {
        cfg.train.init = splitnets_nas::supernet::InitScheme::Default;
    }
    if std::env::var("NAS_SPLIT_SAMPLING").is_ok_and(|v| v == "0") {
        cfg.train.split_aware_sampling = false;
    }
    if std::env::var("NAS_DISTILL").is_ok_and(|v| v == "0") {
        cfg.train.distill = false;
    }
    if let Ok(p) = std::env::var("NAS_VIEW_KEEP") {
        cfg.train.view_keep_prob = p.parse()?;
    }
    if let Ok(s) = std::env::var("NAS_STEPS") {
        cfg.train.steps = s.parse()?;
    }
    let outcome = run_nas(&cfg, &mut |p| match p {
        Progress::Step(r) if r.step % 10 == 0 || r.step == r.steps => {
            let eta = r.seconds / r.step.max(1) as f64 * (r.steps - r.step) as f64;
            eprintln!(
                "step {}/{} loss {:.3} {:.1}s (ETA {:.0}s)",
                r.step, r.steps, r.loss_largest, r.seconds, eta
            );
        }
        Progress::Step(_) => {}
        other => eprintln!("{other:?}"),
    })?;
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.md"), report::markdown(&outcome))?;
    std::fs::write(out.join("report.csv"), report::csv(&outcome))?;
    std::fs::write(out.join("report.svg"), report::svg(&outcome))?;
    std::fs::write(
        out.join("outcome.json"),
        serde_json::to_string_pretty(&outcome)?,
    )?;
    for (i, m) in outcome.front.iter().enumerate() {
        let dir = out.join(format!("front-{i:02}"));
        std::fs::create_dir_all(&dir)?;
        let side = outcome.space.input_size;
        let fside = outcome.space.sides()[m.arch.split.min(outcome.space.stages.len())];
        let head = onnx_export::head_model(&m.weights, side, fside);
        let tail = onnx_export::tail_model(&m.weights, fside);
        splitnets_onnx::write_model(&head, &dir.join("head.onnx"))?;
        splitnets_onnx::write_model(&tail, &dir.join("tail.onnx"))?;
        std::fs::write(dir.join("arch.json"), serde_json::to_string_pretty(m)?)?;
        // A probe for checking the ONNX files elsewhere: random normalised views and the
        // logits of the plain-Rust reference forward (which the tests tie to burn).
        let views = outcome.space.views;
        let probe: Vec<Vec<f32>> = (0..views)
            .map(|v| {
                let mut rng = splitnets_nas::Rng::new(v as u64 + 1);
                (0..side * side).map(|_| rng.normal() as f32).collect()
            })
            .collect();
        let feats: Vec<_> = probe
            .iter()
            .map(|x| reference::head(&m.weights, x, side))
            .collect();
        let logits = reference::tail(&m.weights, &feats);
        let probe_json = serde_json::json!({ "views": probe, "logits": logits });
        std::fs::write(dir.join("probe.json"), probe_json.to_string())?;
    }
    std::io::stdout().write_all(report::markdown(&outcome).as_bytes())?;
    Ok(())
}

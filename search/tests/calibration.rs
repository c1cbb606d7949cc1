//! Calibration runs end to end: every op class gets a positive measured throughput and the
//! resulting host profile validates.

use splitnets_cost_model::graph::{OpClass, analyze};
use splitnets_search::calibrate::{calibrate, micro_models};

#[test]
fn micro_models_cover_every_class_but_resize_and_fit_positive_rates() {
    let models = micro_models();
    for class in OpClass::ALL {
        if class != OpClass::Resize {
            assert!(
                models.iter().any(|(c, _)| *c == class),
                "no micro-model for {}",
                class.name()
            );
        }
    }
    for (class, m) in &models {
        let g = analyze(&splitnets_onnx::cost_graph(m).unwrap(), &Default::default()).unwrap();
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].class, *class);
    }
    let (thr, overhead, report) = calibrate(3, |_, _| {}).unwrap();
    // The fit clamps to non-negative values, so check what a real machine must show instead: a
    // per-node overhead between 10 ns and 1 ms, and per-class rates between 1e5 and 1e13 work
    // units per second (a 2-core VM runs convolutions at ~1e9-1e11 MAC/s).
    assert!(
        (1e-8..1e-3).contains(&overhead),
        "per-node overhead {overhead} s"
    );
    assert!(
        (0.0..1e-2).contains(&report.per_run_overhead_seconds),
        "per-run overhead {} s",
        report.per_run_overhead_seconds
    );
    for class in OpClass::ALL {
        let v = thr.get(class);
        assert!((1e5..1e13).contains(&v), "{}: {v}", class.name());
    }
    // Convolutions do more work per second than elementwise ops on this kind of runtime.
    assert!(
        thr.get(OpClass::Conv) > thr.get(OpClass::Elementwise),
        "conv {} vs elementwise {}",
        thr.get(OpClass::Conv),
        thr.get(OpClass::Elementwise)
    );
    assert_eq!(report.samples, models.len());
}

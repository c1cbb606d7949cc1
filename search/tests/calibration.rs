//! Calibration runs end to end: every op class gets a positive measured throughput and the
//! resulting host profile validates.

use splitnets_cost_model::graph::{OpClass, analyze};
use splitnets_search::calibrate::{Timing, calibrate, micro_models};

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
        // One op, or a short chain of the same class (chains time ops as a network runs them).
        assert!(!g.nodes.is_empty());
        assert!(
            g.nodes.iter().all(|n| n.class == *class),
            "a {} micro-model holds other classes",
            class.name()
        );
    }
    let timing = Timing {
        passes: 2,
        min_runs: 2,
        min_seconds: 0.0,
    };
    let mut passes = 0;
    let (profile, report, _) = calibrate(&timing, &[], |p| {
        if let splitnets_search::calibrate::Progress::Pass { .. } = p {
            passes += 1;
        }
    })
    .unwrap();
    assert_eq!(passes, 2);
    let thr = &profile.macs_per_second;
    let overhead = profile.per_node_overhead_seconds;
    // The fit clamps to non-negative values, so check what a real machine must show instead: a
    // per-node overhead between 10 ns and 1 ms, and per-class rates above 1e5 work units per
    // second (a 2-core VM runs convolutions at ~1e9-1e11 MAC/s; a class whose time the fit
    // explains by bytes or nodes alone gets a rate of 1e15).
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
        assert!((1e5..=1e15).contains(&v), "{}: {v}", class.name());
    }
    // Convolutions are arithmetic: their MACs always cost something. A fully connected layer at
    // batch 1 reads each weight once per MAC, so its time is explained by MACs or by weight
    // bytes (the two are proportional): one of them must cost something.
    assert!((1e8..1e13).contains(&thr.conv), "conv {}", thr.conv);
    assert!(
        (1e7..1e13).contains(&thr.gemm) || profile.seconds_per_weight_byte.gemm > 1e-13,
        "gemm {} MAC/s, {} s per weight byte",
        thr.gemm,
        profile.seconds_per_weight_byte.gemm
    );
    let mut host: splitnets_cost_model::profile::HardwareProfile =
        toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
    host.sensor = profile.clone();
    host.aggregator = profile;
    host.validate().unwrap();
    assert_eq!(report.samples, models.len());
    // The fit explains its own micro-models (timing noise on a shared machine aside).
    assert!(report.fit_median_error < 0.5, "{report:?}");
}

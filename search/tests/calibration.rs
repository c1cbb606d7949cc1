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
    assert!(overhead >= 0.0);
    for class in OpClass::ALL {
        let v = thr.get(class);
        assert!(v.is_finite() && v > 0.0, "{}: {v}", class.name());
    }
    assert_eq!(report.samples, models.len());
}

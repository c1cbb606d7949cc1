//! Predicted costs of a subnet under a hardware profile, by `splitnets-cost-model`.
//!
//! The subnet is laid out as the ONNX graph its bundle would hold (BatchNorm folded into the
//! convolutions, every ReLU and residual Add its own node, float32 tensors and weights) and each
//! node's multiply-accumulates are counted per op class exactly as `cost_model::graph` counts
//! them. The sensor side becomes a [`CutSummary`] that `cost_model::split::evaluate` prices
//! (sensor latency, SRAM: weights plus peak live activations, link bytes of the split feature at
//! its bit width with the daemons' exact framing). The aggregator runs the recover module once per
//! view and everything after the fusion once per frame, which the cost model's per-view tail does
//! not express, so its time comes from [`SideWork::seconds`] on the summed work.

use serde::{Deserialize, Serialize};
use splitnets_cost_model::graph::OpClass;
use splitnets_cost_model::profile::HardwareProfile;
use splitnets_cost_model::split::{CutSummary, SideWork, evaluate, jpeg_encode_seconds};

use crate::space::{Arch, Form, Fusion, SearchSpace};

/// Bytes of one tensor element / one weight in the exported float32 graph.
const F32: u64 = 4;

/// What a subnet costs per frame (all views), as the cost model predicts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictedCost {
    pub sensor_macs: u64,
    pub aggregator_macs: u64,
    pub sensor_seconds: f64,
    /// Weights plus peak live activations on one sensor.
    pub sensor_memory_bytes: u64,
    pub sensor_memory_limit_bytes: u64,
    pub fits_sensor_memory: bool,
    /// One view's bytes on the wire per frame (framing included).
    pub link_bytes_per_view: u64,
    pub link_seconds: f64,
    /// Link load at the target frame rate, bits per second per link.
    pub link_bits_per_second: f64,
    pub link_bandwidth_bits_per_second: f64,
    pub aggregator_seconds: f64,
    pub end_to_end_seconds: f64,
    /// Frames per second the slowest stage sustains.
    pub sustained_fps: f64,
    pub parameters: u64,
    /// Raw frame bytes of one view (8-bit grey), for the ratio.
    pub raw_frame_bytes: u64,
}

/// Constraints the search respects.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    /// End-to-end latency target, seconds.
    pub latency_seconds: f64,
    /// Frame rate every stage (and the link) must sustain.
    pub target_fps: f64,
}

impl PredictedCost {
    /// Whether the subnet fits the sensor, the link at the frame rate and the latency target.
    pub fn satisfies(&self, c: &Constraints) -> bool {
        self.fits_sensor_memory
            && self.link_bits_per_second <= self.link_bandwidth_bits_per_second
            && self.sustained_fps >= c.target_fps
            && self.end_to_end_seconds <= c.latency_seconds
    }
}

/// One node of the exported graph: class, MACs (elements for non-arithmetic classes), weights,
/// input and output elements, and whether it is an epilogue of the convolution before it.
#[derive(Debug, Clone, Copy)]
struct Node {
    class: OpClass,
    macs: u64,
    params: u64,
    in_elems: u64,
    out_elems: u64,
    epilogue: bool,
}

/// A node that is not a convolution's epilogue.
fn node(class: OpClass, macs: u64, params: u64, in_elems: u64, out_elems: u64) -> Node {
    Node {
        class,
        macs,
        params,
        in_elems,
        out_elems,
        epilogue: false,
    }
}

#[derive(Debug, Default)]
struct Side {
    nodes: Vec<Node>,
    /// Extra live elements during a node (a residual input held across its block).
    held: Vec<u64>,
}

impl Side {
    fn push(&mut self, n: Node, held: u64) {
        self.nodes.push(n);
        self.held.push(held);
    }
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        cin: usize,
        cout: usize,
        k: usize,
        groups: usize,
        side_in: usize,
        side_out: usize,
        held: u64,
    ) {
        let (cin, cout, k, g) = (cin as u64, cout as u64, k as u64, groups as u64);
        let out = cout * (side_out * side_out) as u64;
        self.push(
            Node {
                class: if g > 1 {
                    OpClass::DepthwiseConv
                } else {
                    OpClass::Conv
                },
                macs: out * (cin / g) * k * k,
                params: cout * (cin / g) * k * k + cout,
                in_elems: cin * (side_in * side_in) as u64,
                out_elems: out,
                epilogue: false,
            },
            held,
        );
    }
    fn relu(&mut self, elems: u64, held: u64) {
        self.push(
            Node {
                class: OpClass::Elementwise,
                macs: elems,
                params: 0,
                in_elems: elems,
                out_elems: elems,
                epilogue: true,
            },
            held,
        );
    }
    fn add(&mut self, elems: u64) {
        self.push(
            Node {
                class: OpClass::Elementwise,
                macs: elems,
                params: 0,
                in_elems: 2 * elems,
                out_elems: elems,
                epilogue: false,
            },
            0,
        );
    }
    fn work(&self) -> SideWork {
        let mut w = SideWork::default();
        for n in &self.nodes {
            if n.epilogue {
                w.epilogue_macs_by_class[n.class.index()] += n.macs;
                w.epilogue_nodes += 1;
            } else {
                w.macs_by_class[n.class.index()] += n.macs;
                w.nodes += 1;
            }
            w.param_bytes += n.params * F32;
        }
        w
    }
    /// Peak live activation bytes of a chain: a node's input and output plus any held tensor.
    fn peak_bytes(&self, input_elems: u64) -> u64 {
        let mut peak = input_elems * F32;
        for (n, &h) in self.nodes.iter().zip(&self.held) {
            peak = peak.max((n.in_elems + n.out_elems + h) * F32);
        }
        peak
    }
}

/// Appends stage `s`'s blocks; `side` is the side before the stage, `cin` its input channels.
fn stage(out: &mut Side, space: &SearchSpace, arch: &Arch, s: usize, cin: usize) -> usize {
    let st = arch.stages[s];
    let sides = space.sides();
    let mut c = cin;
    for b in 0..st.depth {
        let (si, so) = if b == 0 {
            (sides[s], sides[s + 1])
        } else {
            (sides[s + 1], sides[s + 1])
        };
        let residual = b > 0 && c == st.width;
        let held = if residual { (c * si * si) as u64 } else { 0 };
        let hidden = c * st.expansion;
        out.conv(c, hidden, 1, 1, si, si, held);
        out.relu((hidden * si * si) as u64, held);
        out.conv(hidden, hidden, st.kernel, hidden, si, so, held);
        out.relu((hidden * so * so) as u64, held);
        out.conv(hidden, st.width, 1, 1, so, so, held);
        if residual {
            out.add((st.width * so * so) as u64);
        }
        c = st.width;
    }
    c
}

/// The stem convolution and its ReLU.
fn stem(out: &mut Side, space: &SearchSpace, arch: &Arch) {
    let side = space.sides()[0];
    out.conv(1, arch.stem_width, 3, 1, space.input_size, side, 0);
    out.relu((arch.stem_width * side * side) as u64, 0);
}

/// The fusion of `views` feature maps of `c × hw × hw` (nothing for one view).
fn fusion_nodes(out: &mut Side, views: usize, fusion: Fusion, c: usize, hw: usize) {
    if views < 2 {
        return;
    }
    let fmap = (c * hw * hw) as u64;
    let v = views as u64;
    match fusion {
        Fusion::Max | Fusion::Mean => {
            out.push(node(OpClass::Elementwise, v * fmap, 0, v * fmap, fmap), 0);
        }
        Fusion::Learned => {
            // GlobalAveragePool per view, a score (Gemm), softmax over views, weighted sum.
            let c = c as u64;
            out.push(node(OpClass::Reduce, v * fmap, 0, v * fmap, v * c), 0);
            out.push(node(OpClass::Gemm, v * c, c + 1, v * c, v), 0);
            out.push(node(OpClass::Softmax, v, 0, v, v), 0);
            out.push(
                node(OpClass::Elementwise, 2 * v * fmap, 0, v * fmap, fmap),
                0,
            );
        }
    }
}

/// Global average pooling and the classifier on `c × side × side`.
fn classifier_nodes(out: &mut Side, c: usize, side: usize, classes: usize) {
    out.push(
        Node {
            class: OpClass::Reduce,
            macs: (c * side * side) as u64,
            params: 0,
            in_elems: (c * side * side) as u64,
            out_elems: c as u64,
            epilogue: false,
        },
        0,
    );
    out.push(
        Node {
            class: OpClass::Gemm,
            macs: (c * classes) as u64,
            params: (c * classes + classes) as u64,
            in_elems: c as u64,
            out_elems: classes as u64,
            epilogue: false,
        },
        0,
    );
}

/// The sensor's graph (one view) and the aggregator's graph (all views), node by node.
fn layout(space: &SearchSpace, arch: &Arch) -> (Side, Side) {
    let sides = space.sides();
    let mut head = Side::default();
    stem(&mut head, space, arch);
    let mut c = arch.stem_width;
    for s in 0..arch.split.min(arch.stages.len()) {
        c = stage(&mut head, space, arch, s, c);
    }
    if arch.after_classifier() {
        return logits_layout(space, arch, head, c);
    }
    let hw = sides[arch.split];
    head.conv(c, arch.c_red, 1, 1, hw, hw, 0);

    let views = space.views;
    let mut tail = Side::default();
    for _ in 0..views {
        tail.conv(arch.c_red, c, 1, 1, hw, hw, 0);
    }
    fusion_nodes(&mut tail, views, arch.fusion, c, hw);
    for s in arch.split..arch.stages.len() {
        c = stage(&mut tail, space, arch, s, c);
    }
    classifier_nodes(&mut tail, c, *sides.last().unwrap_or(&1), space.classes);
    (head, tail)
}

/// [`layout`] of a split after the classifier: `head` holds the stages (`c` channels out), to
/// which pooling, the classifier and learned fusion's score are added; the aggregator fuses the
/// views' logits.
fn logits_layout(space: &SearchSpace, arch: &Arch, mut head: Side, c: usize) -> (Side, Side) {
    let last_side = *space.sides().last().unwrap_or(&1);
    classifier_nodes(&mut head, c, last_side, space.classes);
    let k = arch.feature_shape(space)[0] as u64;
    let views = space.views as u64;
    if k > space.classes as u64 {
        // The view's fusion score (MatMul on the pooled feature, Add of the bias, as exported)
        // and the concatenation.
        let c = c as u64;
        head.push(node(OpClass::Gemm, c, c + 1, c, 1), 0);
        head.push(node(OpClass::Elementwise, 1, 0, 1, 1), 0);
        head.push(node(OpClass::Elementwise, k, 0, k, k), 0);
    }
    // As exported: ReduceMax/ReduceMean over the views; or two Slices (logits, scores), Softmax
    // over the views, Mul and ReduceSum.
    let mut tail = Side::default();
    if views > 1 {
        let (all, out) = (views * k, space.classes as u64);
        let logits = views * out;
        match arch.fusion {
            Fusion::Max | Fusion::Mean => {
                tail.push(node(OpClass::Reduce, all, 0, all, out), 0);
            }
            Fusion::Learned => {
                tail.push(node(OpClass::DataMovement, all, 0, all, all), 0);
                tail.push(node(OpClass::Softmax, 3 * views, 0, views, views), 0);
                tail.push(node(OpClass::Elementwise, logits, 0, logits, logits), 0);
                tail.push(node(OpClass::Reduce, logits, 0, logits, out), 0);
            }
        }
    }
    (head, tail)
}

/// What crosses the link per view: elements, bits per element, and whether it is the raw frame.
struct Crossing {
    elements: u64,
    bits: u32,
    raw_frame: bool,
    /// Rank with the batch axis.
    rank: usize,
}

/// A baseline's graphs (`form` other than [`Form::Split`]) and what crosses its link.
fn layout_form(space: &SearchSpace, arch: &Arch, form: Form) -> (Side, Side, Crossing) {
    let sides = space.sides();
    let last = arch.stages.len();
    let views = space.views;
    let (mut head, mut tail) = (Side::default(), Side::default());
    match form {
        Form::Split => {
            let (h, t) = layout(space, arch);
            let crossing = Crossing {
                elements: arch.feature_shape(space).iter().product::<usize>() as u64,
                bits: arch.bits,
                raw_frame: false,
                rank: arch.feature_shape(space).len() + 1,
            };
            (h, t, crossing)
        }
        Form::LateFusion => {
            stem(&mut head, space, arch);
            let mut c = arch.stem_width;
            for s in 0..last {
                c = stage(&mut head, space, arch, s, c);
            }
            classifier_nodes(&mut head, c, sides[last], space.classes);
            if views > 1 {
                // The mean of the views' logits.
                let k = (views * space.classes) as u64;
                tail.push(
                    Node {
                        class: OpClass::Elementwise,
                        macs: k,
                        params: 0,
                        in_elems: k,
                        out_elems: space.classes as u64,
                        epilogue: false,
                    },
                    0,
                );
            }
            let crossing = Crossing {
                elements: space.classes as u64,
                bits: 32,
                raw_frame: false,
                rank: 2,
            };
            (head, tail, crossing)
        }
        Form::Whole { cut_after } => {
            let k = cut_after.unwrap_or(0).min(last);
            let mut c = arch.stem_width;
            if k > 0 {
                stem(&mut head, space, arch);
                for s in 0..k {
                    c = stage(&mut head, space, arch, s, c);
                }
            }
            let c_cut = c;
            let mut c_end = c;
            for _ in 0..views {
                c = c_cut;
                if k == 0 {
                    stem(&mut tail, space, arch);
                }
                for s in k..last {
                    c = stage(&mut tail, space, arch, s, c);
                }
                c_end = c;
            }
            fusion_nodes(&mut tail, views, arch.fusion, c_end, sides[last]);
            classifier_nodes(&mut tail, c_end, sides[last], space.classes);
            let crossing = if k == 0 {
                Crossing {
                    elements: (space.input_size * space.input_size) as u64,
                    bits: 8,
                    raw_frame: true,
                    rank: 4,
                }
            } else {
                Crossing {
                    elements: (c_cut * sides[k] * sides[k]) as u64,
                    bits: 8,
                    raw_frame: false,
                    rank: 4,
                }
            };
            (head, tail, crossing)
        }
    }
}

/// A JPEG-compressed frame on the link instead of the raw one (all-on-aggregator baseline).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JpegLink {
    /// Mean compressed bytes of one view's frame, measured.
    pub mean_bytes: u64,
}

/// Predicts the costs of `arch` under `profile` at `target_fps`.
///
/// The profile's sensor count must equal the space's views for the aggregator and link figures
/// to mean what they say; the caller checks that.
pub fn predict(
    space: &SearchSpace,
    arch: &Arch,
    profile: &HardwareProfile,
    target_fps: f64,
) -> PredictedCost {
    predict_form(space, arch, Form::Split, profile, target_fps, None)
}

/// [`predict`] for `arch` laid out as `form`; `jpeg`: the raw frame of a
/// `Form::Whole { cut_after: None }` network crosses JPEG-compressed, encoded on the sensor.
pub fn predict_form(
    space: &SearchSpace,
    arch: &Arch,
    form: Form,
    profile: &HardwareProfile,
    target_fps: f64,
    jpeg: Option<JpegLink>,
) -> PredictedCost {
    let (head, tail, crossing) = layout_form(space, arch, form);
    let input = (space.input_size * space.input_size) as u64;
    let sensor = head.work();
    let summary = CutSummary {
        sensor_peak_activation_bytes: head.peak_bytes(input),
        crossing_elements: vec![crossing.elements],
        crossing_ranks: vec![crossing.rank],
        sensor: sensor.clone(),
        aggregator: SideWork::default(),
        raw_frame: crossing.raw_frame,
    };
    let jpeg = jpeg.filter(|_| crossing.raw_frame);
    let mut split = evaluate(&summary, profile, crossing.bits, jpeg.map(|j| j.mean_bytes));
    if jpeg.is_some() {
        split.sensor_seconds += jpeg_encode_seconds(profile, input);
    }
    let agg = tail.work();
    let aggregator_seconds = agg.seconds(&profile.aggregator);
    let transfer = split.link_seconds - profile.link.latency_seconds;
    let slowest = split
        .sensor_seconds
        .max(transfer)
        .max(aggregator_seconds)
        .max(1e-12);
    let parameters = (sensor.param_bytes + agg.param_bytes) / F32;
    PredictedCost {
        sensor_macs: sensor.macs(),
        aggregator_macs: agg.macs(),
        sensor_seconds: split.sensor_seconds,
        sensor_memory_bytes: split.sensor_memory_bytes,
        sensor_memory_limit_bytes: profile.sensor.memory_bytes,
        fits_sensor_memory: split.fits_sensor_memory,
        link_bytes_per_view: split.link_bytes_per_view,
        link_seconds: split.link_seconds,
        link_bits_per_second: split.link_bytes_per_view as f64 * 8.0 * target_fps,
        link_bandwidth_bits_per_second: profile.link.bandwidth_bits_per_second,
        aggregator_seconds,
        end_to_end_seconds: split.sensor_seconds + split.link_seconds + aggregator_seconds,
        sustained_fps: 1.0 / slowest,
        parameters,
        raw_frame_bytes: input,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headset() -> HardwareProfile {
        let mut p: HardwareProfile =
            toml::from_str(splitnets_cost_model::profile::presets::HEADSET).unwrap();
        p.validate().unwrap();
        p.sensors = 4;
        p
    }

    #[test]
    fn bigger_subnets_cost_more_and_bits_shrink_the_link() {
        let space = SearchSpace::standard(28, 4, 10);
        let p = headset();
        let big = predict(&space, &Arch::largest(&space, 2), &p, 30.0);
        let small = predict(&space, &Arch::smallest(&space, 2), &p, 30.0);
        assert!(big.sensor_macs > 3 * small.sensor_macs);
        assert!(big.end_to_end_seconds > small.end_to_end_seconds);
        assert!(big.parameters > small.parameters);
        let mut a = Arch::largest(&space, 2);
        a.bits = 2;
        let low = predict(&space, &a, &p, 30.0);
        assert!(low.link_bytes_per_view < big.link_bytes_per_view);
        assert_eq!(low.sensor_macs, big.sensor_macs);
        // Moving the split later moves work onto the sensor.
        let late = predict(&space, &Arch::largest(&space, 3), &p, 30.0);
        assert!(late.sensor_macs > big.sensor_macs);
        assert!(late.aggregator_macs < big.aggregator_macs);
    }

    #[test]
    fn baseline_forms_move_the_work_and_the_link_as_placed() {
        let one = SearchSpace::standard(28, 1, 10);
        let mut p = headset();
        p.sensors = 1;
        let a = Arch::largest(&one, 3);
        let late = predict_form(&one, &a, Form::LateFusion, &p, 30.0, None);
        let raw = predict_form(&one, &a, Form::Whole { cut_after: None }, &p, 30.0, None);
        // One view: the same network, all on one side or all on the other.
        assert_eq!(raw.sensor_macs, 0);
        assert_eq!(raw.aggregator_macs, late.sensor_macs);
        assert_eq!(late.aggregator_macs, 0);
        assert_eq!(raw.sensor_seconds, 0.0);
        // Raw 8-bit frame vs ten float32 logits.
        assert!(raw.link_bytes_per_view >= 28 * 28);
        assert!(late.link_bytes_per_view >= 40 && late.link_bytes_per_view < 28 * 28);
        for k in 1..=3 {
            let cut = predict_form(&one, &a, Form::Whole { cut_after: Some(k) }, &p, 30.0, None);
            assert_eq!(
                cut.sensor_macs + cut.aggregator_macs,
                late.sensor_macs,
                "cut {k}"
            );
            assert!(cut.sensor_macs > 0 && cut.aggregator_macs > 0);
        }
        let jpeg = predict_form(
            &one,
            &a,
            Form::Whole { cut_after: None },
            &p,
            30.0,
            Some(JpegLink { mean_bytes: 300 }),
        );
        assert_eq!(
            jpeg.link_bytes_per_view,
            300 + p.link.message_overhead_bytes
        );
        assert!(
            jpeg.sensor_seconds > 0.0,
            "the encode is counted on the sensor"
        );
        // The split form through predict_form is predict.
        assert_eq!(
            predict_form(&one, &a, Form::Split, &p, 30.0, None),
            predict(&one, &a, &p, 30.0)
        );
        // Four views: the aggregator runs the whole network once per view.
        let four = SearchSpace::standard(28, 4, 10);
        let p4 = headset();
        let b = Arch::largest(&four, 3);
        let raw4 = predict_form(&four, &b, Form::Whole { cut_after: None }, &p4, 30.0, None);
        assert!(raw4.aggregator_macs > 3 * late.sensor_macs);
        assert_eq!(raw4.sensor_macs, 0);
    }

    #[test]
    fn a_split_after_the_classifier_costs_late_fusion_with_quantized_logits() {
        let four = SearchSpace::standard(28, 4, 10);
        let p = headset();
        let mut a = Arch::largest(&four, 4);
        assert!(a.after_classifier());
        a.fusion = Fusion::Mean;
        let logits = predict(&four, &a, &p, 30.0);
        let late = predict_form(&four, &a, Form::LateFusion, &p, 30.0, None);
        // The whole network and the classifier on the sensor, only the fusion on the aggregator.
        assert_eq!(logits.sensor_macs, late.sensor_macs);
        assert_eq!(logits.aggregator_macs, late.aggregator_macs);
        // Ten 8-bit logits and their scale and zero point instead of ten float32 logits.
        assert!(logits.link_bytes_per_view < late.link_bytes_per_view);
        assert!(logits.end_to_end_seconds <= late.end_to_end_seconds);
        // Learned fusion: the score is computed on the sensor and crosses with the logits.
        a.fusion = Fusion::Learned;
        let learned = predict(&four, &a, &p, 30.0);
        assert!(learned.sensor_macs > logits.sensor_macs);
        assert!(learned.link_bytes_per_view > logits.link_bytes_per_view);
        // Fewer bits, fewer bytes.
        a.bits = 2;
        assert!(predict(&four, &a, &p, 30.0).link_bytes_per_view < learned.link_bytes_per_view);
    }

    #[test]
    fn stem_macs_are_counted_exactly() {
        let space = SearchSpace::standard(28, 1, 10);
        let a = Arch::smallest(&space, 1);
        let (head, _) = layout(&space, &a);
        assert_eq!(head.nodes[0].macs, (28 * 28 * a.stem_width * 9) as u64);
        assert_eq!(
            head.nodes[0].params,
            (a.stem_width * 9 + a.stem_width) as u64
        );
    }
}

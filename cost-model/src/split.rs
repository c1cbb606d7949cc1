//! Evaluation of a split: a cut through the graph (which compute nodes run on the sensor) and the
//! codec's bits per element of what crosses.
//!
//! [`summarize`] reduces a cut to the numbers that matter (work per op class on each side, weights,
//! peak sensor memory, crossing tensors); [`evaluate`] turns a summary, a profile and a bit width
//! into latencies, bytes, memory and energy in O(op classes): sweeps over profiles, bit widths and
//! frame rates cost almost nothing once a cut is summarised.

use serde::Serialize;

use crate::graph::{AnalyzedGraph, OpClass};
use crate::profile::{ComputeProfile, HardwareProfile, LinkTopology};

const CLASSES: usize = OpClass::ALL.len();

/// What a profile's shape terms need of a class's nodes on one side: how many there are and the
/// bytes they read and write (activations) and hold (weights).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ShapeWork {
    pub nodes: u32,
    pub activation_bytes: u64,
    pub weight_bytes: u64,
}

impl ShapeWork {
    fn add(&mut self, o: &ShapeWork) {
        self.nodes += o.nodes;
        self.activation_bytes += o.activation_bytes;
        self.weight_bytes += o.weight_bytes;
    }
    fn seconds(&self, c: &ComputeProfile, class: OpClass) -> f64 {
        self.nodes as f64 * c.seconds_per_node.get(class)
            + self.activation_bytes as f64 * c.seconds_per_activation_byte.get(class)
            + self.weight_bytes as f64 * c.seconds_per_weight_byte.get(class)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SideWork {
    pub macs_by_class: [u64; CLASSES],
    pub nodes: u32,
    pub param_bytes: u64,
    /// Work of convolution epilogues on this side (free where the runtime fuses them).
    pub epilogue_macs_by_class: [u64; CLASSES],
    pub epilogue_nodes: u32,
    /// Per class, for the profile's shape terms (left at zero, those terms add nothing).
    pub shape_by_class: [ShapeWork; CLASSES],
    pub epilogue_shape_by_class: [ShapeWork; CLASSES],
}

impl SideWork {
    pub fn macs(&self) -> u64 {
        self.macs_by_class.iter().sum::<u64>() + self.epilogue_macs_by_class.iter().sum::<u64>()
    }
    /// Time of this side's work on a processor.
    pub fn seconds(&self, c: &ComputeProfile) -> f64 {
        let fused = c.fuses_conv_epilogues;
        let nodes = self.nodes + if fused { 0 } else { self.epilogue_nodes };
        if nodes == 0 {
            return 0.0;
        }
        let mut t = c.per_run_overhead_seconds + nodes as f64 * c.per_node_overhead_seconds;
        for class in OpClass::ALL {
            let i = class.index();
            let mut m = self.macs_by_class[i];
            let mut shape = self.shape_by_class[i];
            if !fused {
                m += self.epilogue_macs_by_class[i];
                shape.add(&self.epilogue_shape_by_class[i]);
            }
            if m > 0 {
                t += m as f64 / c.macs_per_second.get(class);
            }
            t += shape.seconds(c, class);
        }
        t
    }
    /// Adds one node of `g` to this side; `fusable` when its producing Conv is on the same side.
    pub fn add(&mut self, n: &crate::graph::NodeCost, fusable: bool) {
        self.add_work(
            n.class,
            n.macs,
            n.input_bytes + n.output_bytes,
            n.param_bytes,
            fusable,
        );
    }
    /// Adds one node described by its numbers: class, MACs, activation bytes read and written,
    /// weight bytes; `epilogue` when the runtime may fuse it into the Conv before it.
    pub fn add_work(
        &mut self,
        class: OpClass,
        macs: u64,
        activation_bytes: u64,
        weight_bytes: u64,
        epilogue: bool,
    ) {
        let i = class.index();
        let shape = ShapeWork {
            nodes: 1,
            activation_bytes,
            weight_bytes,
        };
        if epilogue {
            self.epilogue_macs_by_class[i] += macs;
            self.epilogue_nodes += 1;
            self.epilogue_shape_by_class[i].add(&shape);
        } else {
            self.macs_by_class[i] += macs;
            self.nodes += 1;
            self.shape_by_class[i].add(&shape);
        }
        self.param_bytes += weight_bytes;
    }
}

/// A cut, reduced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutSummary {
    pub sensor: SideWork,
    pub aggregator: SideWork,
    /// Element counts and ranks of the tensors that cross.
    pub crossing_elements: Vec<u64>,
    pub crossing_ranks: Vec<usize>,
    /// Peak bytes of activations alive at once on the sensor (input frame included).
    pub sensor_peak_activation_bytes: u64,
    /// When nothing runs on the sensor the raw frame crosses: its bytes at 8 bits per element.
    pub raw_frame: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CutError {
    #[error(
        "the cut does not separate the graph: node {consumer:?} on the sensor needs tensor {tensor:?} computed on the aggregator"
    )]
    NotSeparating { consumer: String, tensor: String },
    #[error("assignment has {got} entries for {want} nodes")]
    Length { got: usize, want: usize },
}

/// The tensors crossing a cut: produced on the sensor (or graph inputs, which are on the sensor)
/// and consumed on the aggregator or being graph outputs.
pub fn crossing_tensors(g: &AnalyzedGraph, on_sensor: &[bool]) -> Result<Vec<usize>, CutError> {
    if on_sensor.len() != g.nodes.len() {
        return Err(CutError::Length {
            got: on_sensor.len(),
            want: g.nodes.len(),
        });
    }
    let mut crossing = Vec::new();
    for (tid, t) in g.tensors.iter().enumerate() {
        let made_on_sensor = t.producer.is_none_or(|p| on_sensor[p]);
        for &c in &t.consumers {
            if on_sensor[c] && !made_on_sensor {
                return Err(CutError::NotSeparating {
                    consumer: g.nodes[c].name.clone(),
                    tensor: t.name.clone(),
                });
            }
        }
        let needed_after = t.is_graph_output || t.consumers.iter().any(|&c| !on_sensor[c]);
        if made_on_sensor && needed_after {
            crossing.push(tid);
        }
    }
    Ok(crossing)
}

/// Peak activation bytes on the sensor, by liveness over the (topological) node order: a tensor
/// is alive from its production until its last consumer on the sensor ran; crossing tensors stay
/// alive until sent (the end).
pub fn sensor_peak_bytes(g: &AnalyzedGraph, on_sensor: &[bool], crossing: &[usize]) -> u64 {
    let mut remaining: Vec<u32> = g
        .tensors
        .iter()
        .map(|t| t.consumers.iter().filter(|&&c| on_sensor[c]).count() as u32)
        .collect();
    let mut pinned = vec![false; g.tensors.len()];
    for &t in crossing {
        pinned[t] = true;
    }
    let mut live: u64 = g.inputs.iter().map(|&t| g.tensors[t].bytes).sum();
    let mut peak = live;
    for (i, n) in g.nodes.iter().enumerate() {
        if !on_sensor[i] {
            continue;
        }
        live += n.outputs.iter().map(|&t| g.tensors[t].bytes).sum::<u64>();
        peak = peak.max(live);
        for &t in &n.inputs {
            remaining[t] -= 1;
            if remaining[t] == 0 && !pinned[t] {
                live -= g.tensors[t].bytes;
            }
        }
        for &t in &n.outputs {
            if remaining[t] == 0 && !pinned[t] {
                live -= g.tensors[t].bytes;
            }
        }
    }
    peak
}

/// Summarises the cut `on_sensor` (one flag per compute node).
pub fn summarize(g: &AnalyzedGraph, on_sensor: &[bool]) -> Result<CutSummary, CutError> {
    let crossing = crossing_tensors(g, on_sensor)?;
    let mut s = SideWork::default();
    let mut a = SideWork::default();
    for (i, n) in g.nodes.iter().enumerate() {
        let producer = n.inputs.first().and_then(|&t| g.tensors[t].producer);
        let fusable = n.conv_epilogue && producer.is_some_and(|p| on_sensor[p] == on_sensor[i]);
        let side = if on_sensor[i] { &mut s } else { &mut a };
        side.add(n, fusable);
    }
    let raw_frame = on_sensor.iter().all(|&x| !x);
    Ok(CutSummary {
        sensor_peak_activation_bytes: if raw_frame {
            0
        } else {
            sensor_peak_bytes(g, on_sensor, &crossing)
        },
        crossing_elements: crossing.iter().map(|&t| g.tensors[t].elements()).collect(),
        crossing_ranks: crossing.iter().map(|&t| g.tensors[t].shape.len()).collect(),
        sensor: s,
        aggregator: a,
        raw_frame,
    })
}

/// The predicted cost of a split under a profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SplitCost {
    pub sensor_seconds: f64,
    pub sensor_memory_bytes: u64,
    pub fits_sensor_memory: bool,
    /// One view's bytes per frame: feature frame messages plus transport overhead.
    pub link_bytes_per_view: u64,
    pub link_seconds: f64,
    /// The aggregator's work for all views of a frame.
    pub aggregator_seconds: f64,
    /// Sensors in parallel, then the link, then the aggregator.
    pub end_to_end_seconds: f64,
    /// Frames per second the slowest stage sustains.
    pub sustained_fps: f64,
    pub energy_joules_per_frame: f64,
}

/// Bytes one view sends per frame: one `splitnets.v1` feature frame on the gRPC stream carrying
/// every crossing tensor (exactly what the daemons send: each tensor's payload packed at `bits`
/// to whole bytes, one (scale, zero point) pair per quantized tensor, fixed framing; a raw frame
/// goes as 8-bit elements), plus the profile's transport overhead for the message (`overhead`,
/// e.g. HTTP/2 and link-layer headers).
pub fn link_bytes(s: &CutSummary, bits: u32, overhead: u64) -> u64 {
    let bits = if s.raw_frame { 8 } else { bits };
    let pairs = usize::from(bits < 16 && !s.raw_frame) * s.crossing_elements.len();
    let payload: u64 = s
        .crossing_elements
        .iter()
        .map(|&e| (e * u64::from(bits)).div_ceil(8))
        .sum();
    crate::link::feature_message_bytes(pairs, payload) + overhead
}

/// Work of a baseline JPEG encoder per sample, in multiply-accumulate equivalents: the 8×8
/// forward DCT done separably (16 per coefficient), colour conversion (3), quantisation and
/// entropy coding (~5). An estimate (stated in the plan), not a measurement of a sensor.
pub const JPEG_MACS_PER_SAMPLE: u64 = 24;

/// Seconds the profile's sensor needs to JPEG-encode a frame of `samples`.
pub fn jpeg_encode_seconds(p: &HardwareProfile, samples: u64) -> f64 {
    (samples * JPEG_MACS_PER_SAMPLE) as f64 / p.sensor.macs_per_second.conv
        + p.sensor.per_run_overhead_seconds
}

/// Evaluates a summarised cut; `payload_override` replaces the computed payload bytes (used for
/// a JPEG-compressed frame, whose size is measured, not computed).
pub fn evaluate(
    s: &CutSummary,
    p: &HardwareProfile,
    bits: u32,
    payload_override: Option<u64>,
) -> SplitCost {
    let views = u64::from(p.sensors);
    let sensor_seconds = s.sensor.seconds(&p.sensor);
    let per_view_tail = s.aggregator.seconds(&p.aggregator);
    let aggregator_seconds = per_view_tail * views as f64;
    let bytes = payload_override.map_or_else(
        || link_bytes(s, bits, p.link.message_overhead_bytes),
        |b| b + p.link.message_overhead_bytes,
    );
    let on_wire = match p.links {
        LinkTopology::Parallel => bytes,
        LinkTopology::SharedBus => bytes * views,
    };
    let transfer = on_wire as f64 * 8.0 / p.link.bandwidth_bits_per_second;
    let link_seconds = transfer + p.link.latency_seconds;
    let memory = s.sensor_peak_activation_bytes + s.sensor.param_bytes;
    let slowest = sensor_seconds.max(transfer).max(aggregator_seconds);
    SplitCost {
        sensor_seconds,
        sensor_memory_bytes: memory,
        fits_sensor_memory: memory <= p.sensor.memory_bytes,
        link_bytes_per_view: bytes,
        link_seconds,
        aggregator_seconds,
        end_to_end_seconds: sensor_seconds + link_seconds + aggregator_seconds,
        sustained_fps: if slowest > 0.0 {
            1.0 / slowest
        } else {
            f64::INFINITY
        },
        energy_joules_per_frame: views as f64
            * (s.sensor.macs() as f64 * p.sensor.energy_per_mac_joules
                + bytes as f64 * 8.0 * p.link.energy_per_bit_joules
                + s.aggregator.macs() as f64 * p.aggregator.energy_per_mac_joules),
    }
}

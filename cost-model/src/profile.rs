//! Hardware profiles: what a sensor, its link and the aggregator can do. Loaded from TOML by
//! the callers (this crate does no I/O); every field is required and named with its unit.

use serde::{Deserialize, Serialize};

use crate::graph::OpClass;

/// Throughput per op class, in multiply-accumulates (or elements, for non-arithmetic classes)
/// per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassThroughput {
    pub conv: f64,
    pub depthwise_conv: f64,
    pub gemm: f64,
    pub pool: f64,
    pub elementwise: f64,
    pub normalization: f64,
    pub data_movement: f64,
    pub resize: f64,
    pub reduce: f64,
    pub softmax: f64,
    pub local_response_norm: f64,
}

macro_rules! per_class_access {
    ($t:ty) => {
        impl $t {
            pub fn get(&self, c: OpClass) -> f64 {
                match c {
                    OpClass::Conv => self.conv,
                    OpClass::DepthwiseConv => self.depthwise_conv,
                    OpClass::Gemm => self.gemm,
                    OpClass::Pool => self.pool,
                    OpClass::Elementwise => self.elementwise,
                    OpClass::Normalization => self.normalization,
                    OpClass::DataMovement => self.data_movement,
                    OpClass::Resize => self.resize,
                    OpClass::Reduce => self.reduce,
                    OpClass::Softmax => self.softmax,
                    OpClass::LocalResponseNorm => self.local_response_norm,
                }
            }
            pub fn set(&mut self, c: OpClass, v: f64) {
                *match c {
                    OpClass::Conv => &mut self.conv,
                    OpClass::DepthwiseConv => &mut self.depthwise_conv,
                    OpClass::Gemm => &mut self.gemm,
                    OpClass::Pool => &mut self.pool,
                    OpClass::Elementwise => &mut self.elementwise,
                    OpClass::Normalization => &mut self.normalization,
                    OpClass::DataMovement => &mut self.data_movement,
                    OpClass::Resize => &mut self.resize,
                    OpClass::Reduce => &mut self.reduce,
                    OpClass::Softmax => &mut self.softmax,
                    OpClass::LocalResponseNorm => &mut self.local_response_norm,
                } = v;
            }
        }
    };
}

per_class_access!(ClassThroughput);
per_class_access!(ClassCoefficients);

/// One optional coefficient per op class (seconds per unit of some feature of a node); a class
/// left out is 0. Calibration fits these where the measurements need them (see
/// [`ComputeProfile::seconds_per_node`] and its neighbours).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassCoefficients {
    pub conv: f64,
    pub depthwise_conv: f64,
    pub gemm: f64,
    pub pool: f64,
    pub elementwise: f64,
    pub normalization: f64,
    pub data_movement: f64,
    pub resize: f64,
    pub reduce: f64,
    pub softmax: f64,
    pub local_response_norm: f64,
}

impl ClassCoefficients {
    pub fn is_zero(&self) -> bool {
        OpClass::ALL.iter().all(|&c| self.get(c) == 0.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeProfile {
    pub macs_per_second: ClassThroughput,
    /// Fixed cost of launching one node (kernel dispatch), seconds.
    pub per_node_overhead_seconds: f64,
    /// Fixed cost of one inference call on this side (runtime entry, I/O binding), seconds.
    #[serde(default)]
    pub per_run_overhead_seconds: f64,
    /// Memory for activations and resident weights, bytes (sensor SRAM; ignored on the aggregator).
    pub memory_bytes: u64,
    /// Energy per MAC, joules (0 if unknown).
    #[serde(default)]
    pub energy_per_mac_joules: f64,
    /// Whether this processor's runtime folds convolution epilogues (BatchNorm, activations,
    /// constant Mul/Add right after a Conv) into the Conv, making them free.
    #[serde(default)]
    pub fuses_conv_epilogues: bool,
    /// Shape terms (optional, 0 when absent): a node of class `c` costs, on top of
    /// `per_node_overhead_seconds` and its MACs over `macs_per_second`,
    /// `seconds_per_node.c + seconds_per_activation_byte.c · (input + output bytes) +
    /// seconds_per_weight_byte.c · weight bytes`. They capture what one rate per class cannot:
    /// convolutions with little work per output element (1×1 over few channels, large strided
    /// kernels over 3 channels) run far below the rate of wide 3×3 ones, and a fully connected
    /// layer whose weights do not fit in cache runs at memory bandwidth.
    #[serde(default, skip_serializing_if = "ClassCoefficients::is_zero")]
    pub seconds_per_node: ClassCoefficients,
    #[serde(default, skip_serializing_if = "ClassCoefficients::is_zero")]
    pub seconds_per_activation_byte: ClassCoefficients,
    #[serde(default, skip_serializing_if = "ClassCoefficients::is_zero")]
    pub seconds_per_weight_byte: ClassCoefficients,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkTopology {
    /// Every sensor has its own link.
    Parallel,
    /// All sensors share one bus.
    SharedBus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    pub bandwidth_bits_per_second: f64,
    /// Bytes the transport adds to every feature frame message (below the gRPC message).
    pub message_overhead_bytes: u64,
    pub latency_seconds: f64,
    #[serde(default)]
    pub energy_per_bit_joules: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub sensors: u32,
    pub links: LinkTopology,
    pub sensor: ComputeProfile,
    pub link: LinkProfile,
    pub aggregator: ComputeProfile,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("hardware profile: {0}")]
pub struct ProfileError(pub String);

impl HardwareProfile {
    /// Checks every number is usable: positive rates, non-negative costs, at least one sensor.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let bad =
            |f: &str, v: f64| ProfileError(format!("{f} = {v} must be a positive finite number"));
        if self.sensors == 0 {
            return Err(ProfileError("sensors must be at least 1".into()));
        }
        for (side, c) in [("sensor", &self.sensor), ("aggregator", &self.aggregator)] {
            for class in OpClass::ALL {
                let v = c.macs_per_second.get(class);
                if !(v.is_finite() && v > 0.0) {
                    return Err(bad(&format!("{side}.macs_per_second.{}", class.name()), v));
                }
            }
            for (f, coefs) in [
                ("seconds_per_node", &c.seconds_per_node),
                (
                    "seconds_per_activation_byte",
                    &c.seconds_per_activation_byte,
                ),
                ("seconds_per_weight_byte", &c.seconds_per_weight_byte),
            ] {
                for class in OpClass::ALL {
                    let v = coefs.get(class);
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(ProfileError(format!(
                            "{side}.{f}.{} = {v} must be ≥ 0",
                            class.name()
                        )));
                    }
                }
            }
            for (f, v) in [
                ("per_node_overhead_seconds", c.per_node_overhead_seconds),
                ("per_run_overhead_seconds", c.per_run_overhead_seconds),
                ("energy_per_mac_joules", c.energy_per_mac_joules),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(ProfileError(format!("{side}.{f} = {v} must be ≥ 0")));
                }
            }
        }
        if !(self.link.bandwidth_bits_per_second.is_finite()
            && self.link.bandwidth_bits_per_second > 0.0)
        {
            return Err(bad(
                "link.bandwidth_bits_per_second",
                self.link.bandwidth_bits_per_second,
            ));
        }
        for (f, v) in [
            ("link.latency_seconds", self.link.latency_seconds),
            (
                "link.energy_per_bit_joules",
                self.link.energy_per_bit_joules,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ProfileError(format!("{f} = {v} must be ≥ 0")));
            }
        }
        Ok(())
    }
}

/// Preset profiles shipped with the crate (TOML text; parse with `toml`).
pub mod presets {
    /// A stacked-sensor headset camera, a MIPI-class link, a mobile SoC aggregator.
    pub const HEADSET: &str = include_str!("../profiles/headset.toml");
}

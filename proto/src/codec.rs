//! The feature codec: what crosses the link between a sensor and the aggregator.
//!
//! Affine quantization `x ≈ (q - zero_point) · scale` to 2, 4, 6 or 8 bits, per tensor or per
//! channel, with the codes packed densely (element `i` occupies bits `i·b .. (i+1)·b` of the
//! payload, least significant bit first), or float16/float32 passthrough (little-endian).
//!
//! The quantization range always contains 0, so 0 (every ReLU's favourite value) is exact; the
//! parameters are chosen from the tensor itself on every frame (dynamic range), and travel with it.
//! Pure arithmetic: no I/O.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// How a bundle encodes its split feature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "encoding")]
pub enum CodecSpec {
    Float32,
    Float16,
    /// Parameters from each tensor's own range, sent with every frame.
    Affine {
        bits: u8,
        #[serde(default)]
        per_channel: bool,
    },
    /// One fixed per-tensor range calibrated offline on sample inputs; values outside it are
    /// clamped. The range is in the bundle, so frames carry no parameters.
    AffineCalibrated {
        bits: u8,
        min: f32,
        max: f32,
    },
    /// One fixed range per channel (axis 1) calibrated offline; values outside are clamped.
    /// The ranges are in the bundle beside the codec (`channel_ranges`: they do not fit in a
    /// `Copy` spec), so frames carry no parameters.
    AffineCalibratedPerChannel {
        bits: u8,
    },
}

impl CodecSpec {
    /// Bits per element on the wire.
    pub fn bits_per_element(&self) -> u32 {
        match self {
            CodecSpec::Float32 => 32,
            CodecSpec::Float16 => 16,
            CodecSpec::Affine { bits, .. }
            | CodecSpec::AffineCalibrated { bits, .. }
            | CodecSpec::AffineCalibratedPerChannel { bits } => u32::from(*bits),
        }
    }

    /// Whether the bundle must hold calibrated ranges per channel for this codec.
    pub fn needs_channel_ranges(&self) -> bool {
        matches!(self, CodecSpec::AffineCalibratedPerChannel { .. })
    }

    /// Rejects unsupported bit widths.
    pub fn validate(&self) -> Result<(), CodecError> {
        match self {
            CodecSpec::Affine { bits, .. }
            | CodecSpec::AffineCalibrated { bits, .. }
            | CodecSpec::AffineCalibratedPerChannel { bits }
                if !SUPPORTED_BITS.contains(bits) =>
            {
                Err(CodecError::UnsupportedBits(u32::from(*bits)))
            }
            CodecSpec::AffineCalibrated { min, max, .. }
                if !(min.is_finite() && max.is_finite() && min <= max) =>
            {
                Err(CodecError::Parameter(format!(
                    "calibrated range [{min}, {max}] is not a finite interval"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Payload bytes for a tensor of `elements` elements: `ceil(elements · bits / 8)`.
    pub fn payload_bytes(&self, elements: usize) -> usize {
        (elements * self.bits_per_element() as usize).div_ceil(8)
    }

    /// Number of (scale, zero point) pairs sent with each frame of a tensor of this shape: the
    /// dynamic-range codec's; none for floats and for a calibrated range (pinned by the bundle).
    pub fn parameter_count(&self, shape: &[usize]) -> usize {
        match self {
            CodecSpec::Affine {
                per_channel: true, ..
            } if shape.len() >= 2 => shape[1],
            CodecSpec::Affine { .. } => 1,
            _ => 0,
        }
    }

    /// The (scale, zero point) of a calibrated range, which every frame shares.
    pub fn fixed_parameters(&self) -> Option<(f32, i32)> {
        match *self {
            CodecSpec::AffineCalibrated { bits, min, max } => {
                Some(affine_parameters(min, max, u32::from(bits)))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for CodecSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecSpec::Float32 => write!(f, "float32"),
            CodecSpec::Float16 => write!(f, "float16"),
            CodecSpec::Affine { bits, per_channel } => write!(
                f,
                "affine uint{bits} {}",
                if *per_channel {
                    "per channel"
                } else {
                    "per tensor"
                }
            ),
            CodecSpec::AffineCalibrated { bits, min, max } => {
                write!(f, "affine uint{bits} calibrated [{min:.4}, {max:.4}]")
            }
            CodecSpec::AffineCalibratedPerChannel { bits } => {
                write!(f, "affine uint{bits} calibrated per channel")
            }
        }
    }
}

/// Bit widths the affine encoding supports.
pub const SUPPORTED_BITS: [u8; 4] = [2, 4, 6, 8];

/// The element encoding of an [`EncodedTensor`] (mirrors `splitnets.v1.ElementEncoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float32,
    Float16,
    AffineUint,
}

/// A tensor as it crosses the link.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedTensor {
    pub shape: Vec<usize>,
    pub encoding: Encoding,
    pub bits: u32,
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    /// Axis of per-channel parameters, or -1 for one pair per tensor.
    pub channel_axis: i32,
    pub payload: Bytes,
}

/// A tensor that cannot be encoded or decoded; each variant says what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("unsupported bit width {0} (supported: 2, 4, 6, 8)")]
    UnsupportedBits(u32),
    #[error("shape {shape:?} has {expected} elements but {actual} values were given")]
    ElementCount {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error(
        "payload is {actual} bytes; shape {shape:?} with {bits}-bit elements needs exactly {expected}"
    )]
    PayloadLength {
        shape: Vec<usize>,
        bits: u32,
        expected: usize,
        actual: usize,
    },
    #[error(
        "expected {expected} quantization (scale, zero point) pairs, got {scales} scales and {zero_points} zero points"
    )]
    ParameterCount {
        expected: usize,
        scales: usize,
        zero_points: usize,
    },
    #[error("invalid quantization parameter: {0}")]
    Parameter(String),
    #[error("unspecified element encoding")]
    UnspecifiedEncoding,
    #[error("tensor contains a non-finite value at element {0}")]
    NonFinite(usize),
}

fn element_count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Encodes `values` (row-major, of `shape`) with `spec` into a new tensor.
pub fn encode(
    spec: CodecSpec,
    shape: &[usize],
    values: &[f32],
) -> Result<EncodedTensor, CodecError> {
    encode_with_ranges(spec, &[], shape, values)
}

/// [`encode`] with the calibrated ranges per channel an
/// [`CodecSpec::AffineCalibratedPerChannel`] codec needs (ignored by the others).
pub fn encode_with_ranges(
    spec: CodecSpec,
    channel_ranges: &[[f32; 2]],
    shape: &[usize],
    values: &[f32],
) -> Result<EncodedTensor, CodecError> {
    let mut out = EncodedTensor::empty();
    encode_into_with_ranges(
        spec,
        channel_ranges,
        shape,
        values,
        &mut out,
        &mut BytesMut::new(),
    )?;
    Ok(out)
}

/// Encodes `values` (row-major, of `shape`) with `spec` into `out`, reusing its vectors, and
/// packs the payload into `arena`: the payload becomes a frozen slice of it, so once earlier
/// payloads are dropped the arena's memory is reused and a steady stream allocates nothing.
pub fn encode_into(
    spec: CodecSpec,
    shape: &[usize],
    values: &[f32],
    out: &mut EncodedTensor,
    arena: &mut BytesMut,
) -> Result<(), CodecError> {
    encode_into_with_ranges(spec, &[], shape, values, out, arena)
}

/// (scale, zero point) per channel of calibrated `channel_ranges` at `bits`: what the sensor
/// quantizes with and the aggregator dequantizes with.
pub fn channel_parameters(bits: u32, channel_ranges: &[[f32; 2]]) -> (Vec<f32>, Vec<i32>) {
    channel_ranges
        .iter()
        .map(|&[lo, hi]| affine_parameters(lo, hi, bits))
        .unzip()
}

/// Checks calibrated ranges per channel against a tensor of `shape`.
pub fn check_channel_ranges(
    shape: &[usize],
    channel_ranges: &[[f32; 2]],
) -> Result<(), CodecError> {
    let channels = if shape.len() >= 2 { shape[1] } else { 1 };
    if channel_ranges.len() != channels {
        return Err(CodecError::Parameter(format!(
            "{} calibrated channel ranges for shape {shape:?} ({channels} channels on axis 1)",
            channel_ranges.len()
        )));
    }
    if let Some((c, r)) = channel_ranges
        .iter()
        .enumerate()
        .find(|(_, r)| !(r[0].is_finite() && r[1].is_finite() && r[0] <= r[1]))
    {
        return Err(CodecError::Parameter(format!(
            "calibrated range of channel {c} {r:?} is not a finite interval"
        )));
    }
    Ok(())
}

/// [`encode_into`] with the calibrated ranges per channel an
/// [`CodecSpec::AffineCalibratedPerChannel`] codec needs (ignored by the others).
pub fn encode_into_with_ranges(
    spec: CodecSpec,
    channel_ranges: &[[f32; 2]],
    shape: &[usize],
    values: &[f32],
    out: &mut EncodedTensor,
    arena: &mut BytesMut,
) -> Result<(), CodecError> {
    spec.validate()?;
    if spec.needs_channel_ranges() {
        check_channel_ranges(shape, channel_ranges)?;
    }
    let n = element_count(shape);
    if n != values.len() {
        return Err(CodecError::ElementCount {
            shape: shape.to_vec(),
            expected: n,
            actual: values.len(),
        });
    }
    // Release this tensor's previous payload first, so the arena can reclaim its memory.
    out.payload = Bytes::new();
    out.shape.clear();
    out.shape.extend_from_slice(shape);
    out.scale.clear();
    out.zero_point.clear();
    out.channel_axis = -1;
    arena.clear();
    arena.reserve(spec.payload_bytes(n));
    match spec {
        CodecSpec::Float32 => {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(CodecError::NonFinite(i));
            }
            (out.encoding, out.bits) = (Encoding::Float32, 32);
            for v in values {
                arena.extend_from_slice(&v.to_le_bytes());
            }
        }
        CodecSpec::Float16 => {
            (out.encoding, out.bits) = (Encoding::Float16, 16);
            if let Some(i) = values.iter().position(|v| v.is_nan()) {
                return Err(CodecError::NonFinite(i));
            }
            // Saturate at float16's largest finite value: a frame never carries infinity (the
            // aggregator refuses non-finite elements).
            let max = f32::from(half::f16::MAX);
            for v in values {
                arena.extend_from_slice(&half::f16::from_f32(v.clamp(-max, max)).to_le_bytes());
            }
        }
        CodecSpec::Affine { .. }
        | CodecSpec::AffineCalibrated { .. }
        | CodecSpec::AffineCalibratedPerChannel { .. } => {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(CodecError::NonFinite(i));
            }
            let (bits, per_channel, fixed) = match spec {
                CodecSpec::Affine { bits, per_channel } => (bits, per_channel, None),
                CodecSpec::AffineCalibrated { bits, min, max } => (bits, false, Some((min, max))),
                CodecSpec::AffineCalibratedPerChannel { bits } => (bits, true, None),
                _ => unreachable!("affine variants only"),
            };
            let channel_fixed = spec.needs_channel_ranges();
            let bits = u32::from(bits);
            (out.encoding, out.bits) = (Encoding::AffineUint, bits);
            let groups = ChannelGroups::new(shape, per_channel);
            // `scale` first holds each group's minimum, then its scale. Per-channel ranges need
            // one small vector for the maxima (the per-tensor path allocates nothing).
            out.scale.resize(groups.count, 0.0);
            let lo = &mut out.scale;
            let mut hi_acc = [0.0f32; 1];
            let mut hi_many = Vec::new();
            let hi: &mut [f32] = if groups.count == 1 {
                &mut hi_acc
            } else {
                hi_many.resize(groups.count, 0.0);
                &mut hi_many
            };
            if let Some((min, max)) = fixed {
                (lo[0], hi[0]) = (min, max);
            } else if channel_fixed {
                for (g, r) in channel_ranges.iter().enumerate().take(groups.count) {
                    (lo[g], hi[g]) = (r[0], r[1]);
                }
            } else {
                for (i, v) in values.iter().enumerate() {
                    let g = groups.group_of(i);
                    lo[g] = lo[g].min(*v);
                    hi[g] = hi[g].max(*v);
                }
            }
            for g in 0..groups.count {
                let (scale, zp) = affine_parameters(lo[g], hi[g], bits);
                lo[g] = scale;
                out.zero_point.push(zp);
            }
            let qmax = (1u32 << bits) - 1;
            let (mut acc, mut filled) = (0u64, 0u32);
            for (i, v) in values.iter().enumerate() {
                let g = groups.group_of(i);
                let q = (v / out.scale[g]).round() + out.zero_point[g] as f32;
                acc |= u64::from(q.clamp(0.0, qmax as f32) as u32) << filled;
                filled += bits;
                while filled >= 8 {
                    arena.extend_from_slice(&[acc as u8]);
                    acc >>= 8;
                    filled -= 8;
                }
            }
            if filled > 0 {
                arena.extend_from_slice(&[acc as u8]);
            }
            if per_channel && shape.len() >= 2 {
                out.channel_axis = 1;
            }
        }
    }
    out.payload = arena.split().freeze();
    Ok(())
}

impl EncodedTensor {
    /// An empty tensor to encode into.
    pub fn empty() -> Self {
        Self {
            shape: Vec::new(),
            encoding: Encoding::Float32,
            bits: 32,
            scale: Vec::new(),
            zero_point: Vec::new(),
            channel_axis: -1,
            payload: Bytes::new(),
        }
    }
}

/// Scale and zero point mapping `[min(lo,0), max(hi,0)]` onto `0 ..= 2^bits - 1`.
fn affine_parameters(lo: f32, hi: f32, bits: u32) -> (f32, i32) {
    let qmax = ((1u32 << bits) - 1) as f32;
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let range = hi - lo;
    if range <= 0.0 || !range.is_normal() {
        return (1.0, 0);
    }
    let scale = range / qmax;
    let zero_point = (-lo / scale).round().clamp(0.0, qmax) as i32;
    (scale, zero_point)
}

/// The largest error [`decode`] can make on an element inside the quantization range, given the
/// tensor's parameters: half a quantization step (zero for float32; float16's rounding is
/// relative, not bounded here). A calibrated range clamps values outside it.
pub fn max_abs_error(t: &EncodedTensor) -> f32 {
    match t.encoding {
        Encoding::AffineUint => t.scale.iter().copied().fold(0.0, f32::max) * 0.5,
        _ => 0.0,
    }
}

/// Which elements share quantization parameters: all of them, or those of one channel (axis 1).
struct ChannelGroups {
    count: usize,
    /// Elements per channel block (product of dims after axis 1).
    inner: usize,
}

impl ChannelGroups {
    fn new(shape: &[usize], per_channel: bool) -> Self {
        if per_channel && shape.len() >= 2 {
            Self {
                count: shape[1],
                inner: shape[2..].iter().product(),
            }
        } else {
            Self { count: 1, inner: 0 }
        }
    }

    fn group_of(&self, i: usize) -> usize {
        if self.count == 1 {
            0
        } else {
            (i / self.inner) % self.count
        }
    }
}

/// Accumulates `bits`-bit codes into a dense little-endian bit stream.
struct BitPacker {
    out: Vec<u8>,
    acc: u64,
    filled: u32,
    bits: u32,
}

impl BitPacker {
    fn new(elements: usize, bits: u32) -> Self {
        Self {
            out: Vec::with_capacity((elements * bits as usize).div_ceil(8)),
            acc: 0,
            filled: 0,
            bits,
        }
    }

    fn push(&mut self, code: u32) {
        self.acc |= u64::from(code) << self.filled;
        self.filled += self.bits;
        while self.filled >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.filled -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Packs codes (each `< 2^bits`) densely; exposed for tests and tools.
pub fn pack_codes(codes: &[u32], bits: u32) -> Vec<u8> {
    let mut p = BitPacker::new(codes.len(), bits);
    for &c in codes {
        p.push(c);
    }
    p.finish()
}

/// Unpacks `count` codes of `bits` bits.
pub fn unpack_codes(payload: &[u8], bits: u32, count: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(count);
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut filled, mut bytes) = (0u64, 0u32, payload.iter());
    while out.len() < count {
        while filled < bits {
            acc |= u64::from(*bytes.next().unwrap_or(&0)) << filled;
            filled += 8;
        }
        out.push((acc & mask) as u32);
        acc >>= bits;
        filled -= bits;
    }
    out
}

/// Checks everything a malformed frame could get wrong without decoding it: payload length for
/// the shape and bit width, the parameter count, finite positive scales, zero points in range.
/// A tensor that passes decodes without error ([`decode_to_slice`]).
pub fn validate(t: &EncodedTensor) -> Result<(), CodecError> {
    let n = element_count(&t.shape);
    let expect_len = |bits: u32| -> Result<(), CodecError> {
        let expected = (n * bits as usize).div_ceil(8);
        if t.payload.len() != expected {
            return Err(CodecError::PayloadLength {
                shape: t.shape.clone(),
                bits,
                expected,
                actual: t.payload.len(),
            });
        }
        Ok(())
    };
    match t.encoding {
        Encoding::Float32 => {
            expect_len(32)?;
            let non_finite = t
                .payload
                .chunks_exact(4)
                .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite());
            non_finite.map_or(Ok(()), |i| Err(CodecError::NonFinite(i)))
        }
        Encoding::Float16 => {
            expect_len(16)?;
            let non_finite = t
                .payload
                .chunks_exact(2)
                .position(|c| !half::f16::from_le_bytes([c[0], c[1]]).is_finite());
            non_finite.map_or(Ok(()), |i| Err(CodecError::NonFinite(i)))
        }
        Encoding::AffineUint => {
            if !SUPPORTED_BITS.contains(&(t.bits.min(255) as u8)) {
                return Err(CodecError::UnsupportedBits(t.bits));
            }
            expect_len(t.bits)?;
            let groups = affine_groups(t)?;
            if t.scale.len() != groups.count || t.zero_point.len() != groups.count {
                return Err(CodecError::ParameterCount {
                    expected: groups.count,
                    scales: t.scale.len(),
                    zero_points: t.zero_point.len(),
                });
            }
            let qmax = (1i32 << t.bits) - 1;
            for (s, z) in t.scale.iter().zip(&t.zero_point) {
                if !(s.is_finite() && *s > 0.0) {
                    return Err(CodecError::Parameter(format!(
                        "scale {s} is not a positive finite number"
                    )));
                }
                if !(0..=qmax).contains(z) {
                    return Err(CodecError::Parameter(format!(
                        "zero point {z} is outside 0..={qmax} for {} bits",
                        t.bits
                    )));
                }
                // Every code must decode to a finite value: (q - z) · s for q in 0..=qmax.
                if !(s * qmax as f32).is_finite() {
                    return Err(CodecError::Parameter(format!(
                        "scale {s} overflows: codes up to {qmax} would decode to infinity"
                    )));
                }
            }
            Ok(())
        }
    }
}

fn affine_groups(t: &EncodedTensor) -> Result<ChannelGroups, CodecError> {
    match t.channel_axis {
        -1 => Ok(ChannelGroups::new(&t.shape, false)),
        1 if t.shape.len() >= 2 => Ok(ChannelGroups::new(&t.shape, true)),
        a => Err(CodecError::Parameter(format!(
            "channel axis {a} is not supported for shape {:?} (use -1 or 1)",
            t.shape
        ))),
    }
}

/// Decodes straight into `out`, which must hold exactly the tensor's element count (e.g. one
/// view's slot of a stacked tail input). Validates first; allocates nothing.
pub fn decode_to_slice(t: &EncodedTensor, out: &mut [f32]) -> Result<(), CodecError> {
    validate(t)?;
    let n = element_count(&t.shape);
    if out.len() != n {
        return Err(CodecError::ElementCount {
            shape: t.shape.clone(),
            expected: n,
            actual: out.len(),
        });
    }
    match t.encoding {
        Encoding::Float32 => {
            for (o, c) in out.iter_mut().zip(t.payload.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Encoding::Float16 => {
            for (o, c) in out.iter_mut().zip(t.payload.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Encoding::AffineUint => {
            let groups = affine_groups(t)?;
            let mask = (1u64 << t.bits) - 1;
            let (mut acc, mut filled, mut bytes) = (0u64, 0u32, t.payload.iter());
            for (i, o) in out.iter_mut().enumerate() {
                while filled < t.bits {
                    acc |= u64::from(*bytes.next().unwrap_or(&0)) << filled;
                    filled += 8;
                }
                let q = (acc & mask) as i32;
                acc >>= t.bits;
                filled -= t.bits;
                let g = groups.group_of(i);
                *o = (q - t.zero_point[g]) as f32 * t.scale[g];
            }
        }
    }
    Ok(())
}

/// Decodes into `out` (cleared, then resized to the element count), validating everything a
/// malformed frame could get wrong.
pub fn decode_into(t: &EncodedTensor, out: &mut Vec<f32>) -> Result<(), CodecError> {
    out.clear();
    validate(t)?;
    out.resize(element_count(&t.shape), 0.0);
    decode_to_slice(t, out)
}

/// Decodes into a new vector.
pub fn decode(t: &EncodedTensor) -> Result<Vec<f32>, CodecError> {
    let mut out = Vec::new();
    decode_into(t, &mut out)?;
    Ok(out)
}

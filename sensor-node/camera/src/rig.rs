//! Simulated cameras of a headset: every view sees the same item through its own occluder and
//! its own sensor noise, deterministically from (rig seed, view, frame).
//!
//! Training and the sensor daemons call the same function, so the distribution the network was
//! trained on is the one it meets at run time, and any frame can be reproduced bit for bit by a
//! test in another process.

pub use splitnets_proto::bundle::CameraRig;

/// SplitMix64: small, fast, and identical on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn mix(seed: u64, view: u32, frame: u64) -> u64 {
    let mut r = SplitMix64::new(seed ^ (u64::from(view) << 48) ^ frame.rotate_left(17));
    r.next_u64()
}

/// What camera `view` of `rig` records of `clean` (an 8-bit grey image `rows × cols`) at frame
/// `frame`, written into `out` (cleared first; its allocation is reused).
pub fn capture_into(
    rig: &CameraRig,
    view: u32,
    frame: u64,
    clean: &[u8],
    rows: usize,
    cols: usize,
    out: &mut Vec<u8>,
) {
    debug_assert_eq!(clean.len(), rows * cols);
    let mut rng = SplitMix64::new(mix(rig.seed, view, frame));
    let side = rig.occluder_px as i64;
    let jitter = i64::from(rig.occluder_jitter_px);
    let quadrant = view % 4;
    let base_r = if quadrant >= 2 { rows as i64 - side } else { 0 };
    let base_c = if quadrant % 2 == 1 {
        cols as i64 - side
    } else {
        0
    };
    let jr = rng.below((2 * jitter + 1) as u64) as i64 - jitter;
    let jc = rng.below((2 * jitter + 1) as u64) as i64 - jitter;
    let (r0, c0) = (base_r + jr, base_c + jc);
    out.clear();
    out.reserve(clean.len());
    for r in 0..rows as i64 {
        for c in 0..cols as i64 {
            let occluded = r >= r0 && r < r0 + side && c >= c0 && c < c0 + side;
            let p = if occluded {
                0.0
            } else {
                f64::from(clean[(r as usize) * cols + c as usize]) / 255.0
            };
            let noisy = p + f64::from(rig.noise_std) * rng.normal();
            out.push((noisy.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
}

/// [`capture_into`] into a new buffer.
pub fn capture(
    rig: &CameraRig,
    view: u32,
    frame: u64,
    clean: &[u8],
    rows: usize,
    cols: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    capture_into(rig, view, frame, clean, rows, cols, &mut out);
    out
}

/// Frame `frame` of the data-set replay seen by camera `view`: item `frame mod len`.
pub fn replay_frame(
    rig: &CameraRig,
    set: &crate::dataset::ImageSet,
    view: u32,
    frame: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    replay_frame_into(rig, set, view, frame, &mut out);
    out
}

/// [`replay_frame`] into a reused buffer.
pub fn replay_frame_into(
    rig: &CameraRig,
    set: &crate::dataset::ImageSet,
    view: u32,
    frame: u64,
    out: &mut Vec<u8>,
) {
    let idx = (frame % set.len() as u64) as usize;
    capture_into(rig, view, frame, set.image(idx), set.rows, set.cols, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_is_deterministic_and_views_differ() {
        let rig = CameraRig::default();
        let clean: Vec<u8> = (0..28 * 28).map(|i| (i % 251) as u8).collect();
        let a = capture(&rig, 1, 7, &clean, 28, 28);
        assert_eq!(a, capture(&rig, 1, 7, &clean, 28, 28));
        assert_ne!(a, capture(&rig, 2, 7, &clean, 28, 28));
        assert_ne!(a, capture(&rig, 1, 8, &clean, 28, 28));
    }

    #[test]
    fn occluder_sits_in_the_views_quadrant() {
        let rig = CameraRig {
            noise_std: 0.0,
            occluder_jitter_px: 0,
            ..CameraRig::default()
        };
        let clean = vec![200u8; 28 * 28];
        let img = capture(&rig, 3, 0, &clean, 28, 28);
        assert_eq!(img[27 * 28 + 27], 0, "bottom-right occluded for view 3");
        assert_eq!(img[0], 200, "top-left visible for view 3");
    }
}

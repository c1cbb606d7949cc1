//! Simulated cameras of a headset: every view sees the same item through its own occluder and
//! its own sensor noise, deterministically from (rig seed, view, frame).
//!
//! Training and the sensor daemons call the same function, so the distribution the network was
//! trained on is the one it meets at run time, and any frame can be reproduced bit for bit by a
//! test in another process.

use serde::{Deserialize, Serialize};

/// The simulated camera rig, as recorded in a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraRig {
    /// Number of cameras (views).
    pub views: u32,
    /// Side of the square occluder, pixels. Camera `k` puts it in quadrant `k mod 4`
    /// (top-left, top-right, bottom-left, bottom-right), jittered per frame.
    pub occluder_px: u32,
    /// Jitter of the occluder's position per frame, ± pixels.
    pub occluder_jitter_px: u32,
    /// Standard deviation of additive Gaussian sensor noise, in units of full scale (0..1).
    pub noise_std: f32,
    /// Seed of the rig; frames differ across seeds.
    pub seed: u64,
}

impl Default for CameraRig {
    fn default() -> Self {
        Self {
            views: 4,
            occluder_px: 14,
            occluder_jitter_px: 3,
            noise_std: 0.1,
            seed: 0x5117,
        }
    }
}

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

impl CameraRig {
    /// What camera `view` records of `clean` (an 8-bit grey image `rows × cols`) at frame `frame`.
    pub fn capture(
        &self,
        view: u32,
        frame: u64,
        clean: &[u8],
        rows: usize,
        cols: usize,
    ) -> Vec<u8> {
        debug_assert_eq!(clean.len(), rows * cols);
        let mut rng = SplitMix64::new(mix(self.seed, view, frame));
        let side = self.occluder_px as i64;
        let jitter = i64::from(self.occluder_jitter_px);
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
        let mut out = Vec::with_capacity(clean.len());
        for r in 0..rows as i64 {
            for c in 0..cols as i64 {
                let occluded = r >= r0 && r < r0 + side && c >= c0 && c < c0 + side;
                let p = if occluded {
                    0.0
                } else {
                    f64::from(clean[(r as usize) * cols + c as usize]) / 255.0
                };
                let noisy = p + f64::from(self.noise_std) * rng.normal();
                out.push((noisy.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        out
    }
}

/// Frame `frame` of the data-set replay seen by camera `view`: item `frame mod len`.
pub fn replay_frame(
    rig: &CameraRig,
    set: &crate::dataset::ImageSet,
    view: u32,
    frame: u64,
) -> Vec<u8> {
    let idx = (frame % set.len() as u64) as usize;
    rig.capture(view, frame, set.image(idx), set.rows, set.cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_is_deterministic_and_views_differ() {
        let rig = CameraRig::default();
        let clean: Vec<u8> = (0..28 * 28).map(|i| (i % 251) as u8).collect();
        let a = rig.capture(1, 7, &clean, 28, 28);
        assert_eq!(a, rig.capture(1, 7, &clean, 28, 28));
        assert_ne!(a, rig.capture(2, 7, &clean, 28, 28));
        assert_ne!(a, rig.capture(1, 8, &clean, 28, 28));
    }

    #[test]
    fn occluder_sits_in_the_views_quadrant() {
        let rig = CameraRig {
            noise_std: 0.0,
            occluder_jitter_px: 0,
            ..CameraRig::default()
        };
        let clean = vec![200u8; 28 * 28];
        let img = rig.capture(3, 0, &clean, 28, 28);
        assert_eq!(img[27 * 28 + 27], 0, "bottom-right occluded for view 3");
        assert_eq!(img[0], 200, "top-left visible for view 3");
    }
}

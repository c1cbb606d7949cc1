//! A rendered multi-view 3-D shape data set, made here and deterministic from a seed.
//!
//! Twelve classes of procedurally generated solids ([`CLASSES`]), each instance with its own
//! proportions, scale, orientation (full yaw, a random tilt) and deformation (taper, twist and a
//! smooth warp), rendered by a small software z-buffer rasterizer with flat Lambert shading
//! attenuated by depth into 8-bit grey frames (`size × size`, default 64) from a rig of cameras
//! ([`ShapeRig`]: 4 around and above the object by default, 12 around it as MVCNN does).
//!
//! One view alone is ambiguous by construction: an upright cylinder and a box look alike from the
//! side, a cone and a pyramid from most angles, a mug hides its handle behind its body, an
//! L-shape shows a plain box from the side of its full faces, a cross shows a box end-on. The
//! object's yaw is uniform, so which camera sees the telling side changes per instance.
//!
//! Every frame is a pure function of (config, split, instance, view): the trainer caches whole
//! splits on disk ([`load_or_generate`]) and a simulated sensor replays a frame with
//! [`render_view`] / [`replay_frame`], bit-identical.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::rig::SplitMix64;

/// The classes, in label order.
pub const CLASSES: [&str; 12] = [
    "cube", "bar", "sphere", "cylinder", "cone", "pyramid", "torus", "capsule", "l-shape", "cross",
    "prism", "mug",
];

/// One camera of the rig: where it sits on a sphere around the object, looking at its centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraPose {
    /// Angle around the vertical axis, degrees.
    pub azimuth_deg: f32,
    /// Angle above the horizontal plane, degrees.
    pub elevation_deg: f32,
}

/// The cameras, their distance to the object and their field of view.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeRig {
    pub cameras: Vec<CameraPose>,
    /// Distance from the object's centre (the object fits in a unit sphere).
    pub distance: f32,
    /// Full vertical (= horizontal) field of view, degrees.
    pub fov_deg: f32,
}

impl ShapeRig {
    /// Four cameras around and above the object, a quarter turn apart, at alternating heights
    /// (20° and 40° above the horizon), as a headset's cameras looking down at a held object.
    pub fn headset() -> Self {
        let cameras = (0..4)
            .map(|k| CameraPose {
                azimuth_deg: 45.0 + 90.0 * k as f32,
                elevation_deg: if k % 2 == 0 { 20.0 } else { 40.0 },
            })
            .collect();
        Self {
            cameras,
            distance: 3.0,
            fov_deg: 42.0,
        }
    }

    /// `n` cameras evenly around the object at `elevation_deg` (MVCNN: 12 at 30°).
    pub fn ring(n: usize, elevation_deg: f32) -> Self {
        let cameras = (0..n)
            .map(|k| CameraPose {
                azimuth_deg: 360.0 * k as f32 / n.max(1) as f32,
                elevation_deg,
            })
            .collect();
        Self {
            cameras,
            distance: 3.0,
            fov_deg: 42.0,
        }
    }

    /// MVCNN's rig: 12 cameras every 30° at 30° elevation.
    pub fn mvcnn() -> Self {
        Self::ring(12, 30.0)
    }

    pub fn views(&self) -> usize {
        self.cameras.len()
    }
}

impl Default for ShapeRig {
    fn default() -> Self {
        Self::headset()
    }
}

/// Everything that determines the data set.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeSetConfig {
    /// Frame side, pixels.
    pub size: usize,
    pub rig: ShapeRig,
    pub seed: u64,
    /// Instances per split (classes are balanced: instance `i` has class `i mod 12`).
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Standard deviation of additive Gaussian sensor noise, full scale = 1.
    pub noise_std: f32,
}

impl Default for ShapeSetConfig {
    fn default() -> Self {
        Self {
            size: 64,
            rig: ShapeRig::headset(),
            seed: 0x5A4E,
            train: 12_000,
            val: 1_200,
            test: 2_400,
            noise_std: 0.02,
        }
    }
}

/// Which part of the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShapeSplit {
    Train,
    Val,
    Test,
}

impl ShapeSplit {
    fn salt(self) -> u64 {
        match self {
            ShapeSplit::Train => 0x7EA1_0001,
            ShapeSplit::Val => 0x7EA1_0002,
            ShapeSplit::Test => 0x7EA1_0003,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ShapeSplit::Train => "train",
            ShapeSplit::Val => "val",
            ShapeSplit::Test => "test",
        }
    }
}

impl ShapeSetConfig {
    pub fn len(&self, split: ShapeSplit) -> usize {
        match split {
            ShapeSplit::Train => self.train,
            ShapeSplit::Val => self.val,
            ShapeSplit::Test => self.test,
        }
    }

    /// A stable 64-bit key of every parameter (names the cache file).
    pub fn key(&self, split: ShapeSplit) -> u64 {
        let mut h = Fnv::new();
        h.u64(FORMAT_VERSION);
        h.u64(self.size as u64);
        h.u64(self.seed);
        h.u64(self.len(split) as u64);
        h.u64(split.salt());
        h.u64(u64::from(self.noise_std.to_bits()));
        h.u64(u64::from(self.rig.distance.to_bits()));
        h.u64(u64::from(self.rig.fov_deg.to_bits()));
        for c in &self.rig.cameras {
            h.u64(u64::from(c.azimuth_deg.to_bits()));
            h.u64(u64::from(c.elevation_deg.to_bits()));
        }
        h.0
    }

    pub fn check(&self) -> Result<(), ShapeError> {
        if self.size < 8 || self.size > 1024 {
            return Err(ShapeError::Config(format!(
                "size {} must be within 8..=1024",
                self.size
            )));
        }
        if self.rig.cameras.is_empty() {
            return Err(ShapeError::Config("the rig has no camera".into()));
        }
        if !(self.rig.distance > 1.2 && self.rig.distance.is_finite()) {
            return Err(ShapeError::Config(format!(
                "camera distance {} must exceed 1.2 (the object fits in a unit sphere)",
                self.rig.distance
            )));
        }
        if !(self.rig.fov_deg > 1.0 && self.rig.fov_deg < 170.0) {
            return Err(ShapeError::Config(format!(
                "field of view {}° must be within 1..170",
                self.rig.fov_deg
            )));
        }
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return Err(ShapeError::Config(format!(
                "noise_std {} must be ≥ 0",
                self.noise_std
            )));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("shape data set: {0}")]
    Config(String),
    #[error("shape cache {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("index {index} out of range (split has {len} instances, rig {views} views)")]
    Index {
        index: usize,
        len: usize,
        views: usize,
    },
}

/// One rendered split: `images` is `[instances][views][size × size]` row-major `u8`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeSet {
    pub size: usize,
    pub views: usize,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl ShapeSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn pixels(&self) -> usize {
        self.size * self.size
    }
    /// View `view` of instance `i`.
    pub fn image(&self, i: usize, view: usize) -> &[u8] {
        let n = self.pixels();
        let at = (i * self.views + view) * n;
        &self.images[at..at + n]
    }
}

/// The label of instance `index` (classes are balanced and interleaved).
pub fn label(index: usize) -> u8 {
    (index % CLASSES.len()) as u8
}

/// Frame `frame` of the replay seen by camera `view`: instance `frame mod len` of `split`.
pub fn replay_frame(
    cfg: &ShapeSetConfig,
    split: ShapeSplit,
    view: usize,
    frame: u64,
) -> Result<Vec<u8>, ShapeError> {
    let len = cfg.len(split).max(1) as u64;
    let mut out = Vec::new();
    render_view(cfg, split, (frame % len) as usize, view, &mut out)?;
    Ok(out)
}

/// Renders view `view` of instance `index` of `split` into `out` (cleared; `size²` bytes).
pub fn render_view(
    cfg: &ShapeSetConfig,
    split: ShapeSplit,
    index: usize,
    view: usize,
    out: &mut Vec<u8>,
) -> Result<(), ShapeError> {
    cfg.check()?;
    if index >= cfg.len(split) || view >= cfg.rig.views() {
        return Err(ShapeError::Index {
            index,
            len: cfg.len(split),
            views: cfg.rig.views(),
        });
    }
    let inst = Instance::new(cfg, split, index);
    let mut r = Raster::new(cfg.size);
    r.draw(&inst, &cfg.rig, view);
    r.finish(cfg.noise_std, inst.noise_seed(view), out);
    Ok(())
}

/// Renders a whole split, on all cores.
pub fn generate(cfg: &ShapeSetConfig, split: ShapeSplit) -> Result<ShapeSet, ShapeError> {
    cfg.check()?;
    let n = cfg.len(split);
    let views = cfg.rig.views();
    let px = cfg.size * cfg.size;
    let per = views * px;
    let mut images = vec![0u8; n * per];
    let threads = std::thread::available_parallelism()
        .map(|x| x.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let chunk_items = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (c, chunk) in images.chunks_mut(chunk_items * per).enumerate() {
            s.spawn(move || {
                let mut r = Raster::new(cfg.size);
                let mut buf = Vec::with_capacity(px);
                for (k, item) in chunk.chunks_mut(per).enumerate() {
                    let index = c * chunk_items + k;
                    let inst = Instance::new(cfg, split, index);
                    for v in 0..views {
                        r.clear();
                        r.draw(&inst, &cfg.rig, v);
                        r.finish(cfg.noise_std, inst.noise_seed(v), &mut buf);
                        item[v * px..(v + 1) * px].copy_from_slice(&buf);
                    }
                }
            });
        }
    });
    Ok(ShapeSet {
        size: cfg.size,
        views,
        images,
        labels: (0..n).map(label).collect(),
    })
}

const FORMAT_VERSION: u64 = 1;
const MAGIC: &[u8; 8] = b"SNSHAPE1";

/// The cache file of a split under `dir`.
pub fn cache_path(cfg: &ShapeSetConfig, split: ShapeSplit, dir: &Path) -> PathBuf {
    dir.join(format!(
        "shapes-{}-{}px-{}v-{:016x}.u8",
        split.name(),
        cfg.size,
        cfg.rig.views(),
        cfg.key(split)
    ))
}

/// Loads a split from the cache under `dir`, or renders it and writes the cache (a header and
/// the raw frames; written to a temporary name and renamed, so a killed run leaves no torn file).
pub fn load_or_generate(
    cfg: &ShapeSetConfig,
    split: ShapeSplit,
    dir: &Path,
) -> Result<ShapeSet, ShapeError> {
    cfg.check()?;
    let path = cache_path(cfg, split, dir);
    let io = |cause| ShapeError::Io {
        path: path.display().to_string(),
        cause,
    };
    let n = cfg.len(split);
    let views = cfg.rig.views();
    let want = n * views * cfg.size * cfg.size;
    if let Ok(mut f) = std::fs::File::open(&path) {
        let mut head = [0u8; 16];
        let mut images = Vec::with_capacity(want);
        if f.read_exact(&mut head).is_ok()
            && &head[..8] == MAGIC
            && head[8..] == cfg.key(split).to_le_bytes()
            && f.read_to_end(&mut images).is_ok()
            && images.len() == want
        {
            return Ok(ShapeSet {
                size: cfg.size,
                views,
                images,
                labels: (0..n).map(label).collect(),
            });
        }
    }
    let set = generate(cfg, split)?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(MAGIC).map_err(io)?;
        f.write_all(&cfg.key(split).to_le_bytes()).map_err(io)?;
        f.write_all(&set.images).map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(set)
}

// ---------------------------------------------------------------------------------------------
// Geometry

type V3 = [f32; 3];

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn dot(a: V3, b: V3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: V3) -> V3 {
    let l = dot(a, a).sqrt().max(1e-12);
    [a[0] / l, a[1] / l, a[2] / l]
}

/// A 3×3 rotation, row-major.
type M3 = [[f32; 3]; 3];

fn mat_mul(a: &M3, b: &M3) -> M3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}
fn apply(m: &M3, v: V3) -> V3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}
fn rot_x(a: f32) -> M3 {
    let (s, c) = a.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}
fn rot_z(a: f32) -> M3 {
    let (s, c) = a.sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// A triangle soup (z is up).
#[derive(Debug, Default, Clone)]
struct Mesh {
    tris: Vec<[V3; 3]>,
}

impl Mesh {
    fn quad(&mut self, a: V3, b: V3, c: V3, d: V3) {
        self.tris.push([a, b, c]);
        self.tris.push([a, c, d]);
    }

    /// An axis-aligned box centred at `c` with half-sizes `h`.
    fn cuboid(&mut self, c: V3, h: V3) {
        let p = |sx: f32, sy: f32, sz: f32| [c[0] + sx * h[0], c[1] + sy * h[1], c[2] + sz * h[2]];
        let v = [
            p(-1., -1., -1.),
            p(1., -1., -1.),
            p(1., 1., -1.),
            p(-1., 1., -1.),
            p(-1., -1., 1.),
            p(1., -1., 1.),
            p(1., 1., 1.),
            p(-1., 1., 1.),
        ];
        for f in [
            [0, 1, 2, 3],
            [4, 5, 6, 7],
            [0, 1, 5, 4],
            [1, 2, 6, 5],
            [2, 3, 7, 6],
            [3, 0, 4, 7],
        ] {
            self.quad(v[f[0]], v[f[1]], v[f[2]], v[f[3]]);
        }
    }

    /// A surface of revolution about z through the profile points `(radius, z)`, with `seg`
    /// segments (4 segments make square cross sections: a pyramid from a cone's profile).
    fn revolve(&mut self, profile: &[(f32, f32)], seg: usize, phase: f32, c: V3) {
        let at = |r: f32, z: f32, k: usize| {
            let a = phase + std::f32::consts::TAU * k as f32 / seg as f32;
            [c[0] + r * a.cos(), c[1] + r * a.sin(), c[2] + z]
        };
        for w in profile.windows(2) {
            let ((r0, z0), (r1, z1)) = (w[0], w[1]);
            for k in 0..seg {
                let (a, b) = (at(r0, z0, k), at(r0, z0, k + 1));
                let (cc, d) = (at(r1, z1, k + 1), at(r1, z1, k));
                if r0 > 1e-6 {
                    self.tris.push([a, b, cc]);
                }
                if r1 > 1e-6 {
                    self.tris.push([a, cc, d]);
                }
            }
        }
    }

    /// A torus about the z axis centred at `c` (major radius `big`, tube radius `small`).
    fn torus(&mut self, big: f32, small: f32, nu: usize, nv: usize, c: V3, m: &M3) {
        let at = |i: usize, j: usize| {
            let u = std::f32::consts::TAU * i as f32 / nu as f32;
            let v = std::f32::consts::TAU * j as f32 / nv as f32;
            let r = big + small * v.cos();
            let p = apply(m, [r * u.cos(), r * u.sin(), small * v.sin()]);
            [c[0] + p[0], c[1] + p[1], c[2] + p[2]]
        };
        for i in 0..nu {
            for j in 0..nv {
                self.quad(at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j + 1));
            }
        }
    }

    /// A prism: the polygon `poly` (in the xz plane) extruded along y by ±`half`.
    fn prism_y(&mut self, poly: &[(f32, f32)], half: f32) {
        let n = poly.len();
        for i in 0..n {
            let (x0, z0) = poly[i];
            let (x1, z1) = poly[(i + 1) % n];
            self.quad(
                [x0, -half, z0],
                [x1, -half, z1],
                [x1, half, z1],
                [x0, half, z0],
            );
        }
        for i in 1..n - 1 {
            for y in [-half, half] {
                self.tris.push([
                    [poly[0].0, y, poly[0].1],
                    [poly[i].0, y, poly[i].1],
                    [poly[i + 1].0, y, poly[i + 1].1],
                ]);
            }
        }
    }
}

fn sphere_profile(r: f32, n: usize, from: f32, to: f32, zc: f32) -> Vec<(f32, f32)> {
    (0..=n)
        .map(|i| {
            let t = from + (to - from) * i as f32 / n as f32;
            (r * t.cos().max(0.0), zc + r * t.sin())
        })
        .collect()
}

/// One object: its class, shape parameters, pose and deformation.
#[derive(Debug, Clone)]
struct Instance {
    class: usize,
    seed: u64,
    mesh: Mesh,
    light: V3,
}

struct Uni<'a>(&'a mut SplitMix64);
impl Uni<'_> {
    fn in_range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.0.next_f64() as f32
    }
}

impl Instance {
    fn new(cfg: &ShapeSetConfig, split: ShapeSplit, index: usize) -> Self {
        let seed = SplitMix64::new(cfg.seed ^ split.salt().rotate_left(32) ^ (index as u64))
            .next_u64()
            ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = SplitMix64::new(seed);
        let class = usize::from(label(index));
        let mut u = Uni(&mut rng);
        let mut m = Mesh::default();
        let pi = std::f32::consts::PI;
        match class {
            0 => {
                // cube: near-equal sides
                let s = 0.5;
                m.cuboid(
                    [0.0; 3],
                    [
                        s * u.in_range(0.9, 1.1),
                        s * u.in_range(0.9, 1.1),
                        s * u.in_range(0.9, 1.1),
                    ],
                );
            }
            1 => {
                // bar: one long upright axis
                let w = u.in_range(0.22, 0.32);
                m.cuboid(
                    [0.0; 3],
                    [w, w * u.in_range(0.8, 1.25), u.in_range(0.65, 0.8)],
                );
            }
            2 => {
                let p = sphere_profile(0.6, 10, -pi / 2.0, pi / 2.0, 0.0);
                m.revolve(&p, 16, 0.0, [0.0; 3]);
            }
            3 => {
                let (r, h) = (u.in_range(0.3, 0.42), u.in_range(0.45, 0.65));
                m.revolve(&[(0.0, -h), (r, -h), (r, h), (0.0, h)], 20, 0.0, [0.0; 3]);
            }
            4 | 5 => {
                let (r, h) = (u.in_range(0.4, 0.55), u.in_range(0.45, 0.65));
                let seg = if class == 4 { 24 } else { 4 };
                m.revolve(&[(0.0, -h), (r, -h), (0.0, h)], seg, pi / 4.0, [0.0; 3]);
            }
            6 => {
                let big = u.in_range(0.45, 0.55);
                let small = u.in_range(0.14, 0.22);
                m.torus(big, small, 20, 10, [0.0; 3], &rot_x(0.0));
            }
            7 => {
                let (r, h) = (u.in_range(0.22, 0.3), u.in_range(0.3, 0.45));
                let mut p = sphere_profile(r, 5, -pi / 2.0, 0.0, -h);
                p.extend(sphere_profile(r, 5, 0.0, pi / 2.0, h));
                m.revolve(&p, 16, 0.0, [0.0; 3]);
            }
            8 => {
                // L: a box with one quarter (in x-z) removed; extruded along y
                let (a, b, t) = (
                    u.in_range(0.45, 0.6),
                    u.in_range(0.45, 0.6),
                    u.in_range(0.18, 0.28),
                );
                let d = u.in_range(0.2, 0.35);
                m.prism_y(
                    &[
                        (-a, -b),
                        (a, -b),
                        (a, -b + 2.0 * t),
                        (-a + 2.0 * t, -b + 2.0 * t),
                        (-a + 2.0 * t, b),
                        (-a, b),
                    ],
                    d,
                );
            }
            9 => {
                // a 3-D cross: three bars through the centre, unequal arms
                let t = u.in_range(0.14, 0.2);
                m.cuboid([0.0; 3], [u.in_range(0.5, 0.65), t, t]);
                m.cuboid([0.0; 3], [t, u.in_range(0.5, 0.65), t]);
                m.cuboid([0.0; 3], [t, t, u.in_range(0.3, 0.5)]);
            }
            10 => {
                // triangular prism lying on its side
                let (w, h, d) = (
                    u.in_range(0.45, 0.6),
                    u.in_range(0.35, 0.55),
                    u.in_range(0.35, 0.55),
                );
                m.prism_y(&[(-w, -h), (w, -h), (u.in_range(-0.3, 0.3) * w, h)], d);
            }
            _ => {
                // mug: a cylinder with a handle on one side
                let (r, h) = (u.in_range(0.3, 0.38), u.in_range(0.4, 0.55));
                m.revolve(&[(0.0, -h), (r, -h), (r, h), (0.0, h)], 20, 0.0, [0.0; 3]);
                let hr = u.in_range(0.18, 0.24) * h / 0.45;
                m.torus(hr, 0.06, 12, 6, [r + 0.02, 0.0, 0.0], &rot_x(pi / 2.0));
            }
        }
        // Deformation: taper and twist along z, then a smooth low-frequency warp.
        let taper = u.in_range(-0.15, 0.15);
        let twist = u.in_range(-0.3, 0.3);
        let amp = u.in_range(0.0, 0.04);
        let ph = [
            u.in_range(0.0, std::f32::consts::TAU),
            u.in_range(0.0, std::f32::consts::TAU),
            u.in_range(0.0, std::f32::consts::TAU),
        ];
        let f = u.in_range(2.0, 4.0);
        // Pose: uniform yaw, a tilt up to ~20° about a random horizontal axis.
        let yaw = u.in_range(0.0, std::f32::consts::TAU);
        let tilt_dir = u.in_range(0.0, std::f32::consts::TAU);
        let tilt = u.in_range(0.0, 0.35);
        let rot = mat_mul(
            &rot_z(tilt_dir),
            &mat_mul(&rot_x(tilt), &mat_mul(&rot_z(-tilt_dir), &rot_z(yaw))),
        );
        let scale = u.in_range(0.7, 0.95);
        let light = norm([
            u.in_range(-0.6, 0.6),
            u.in_range(0.0, 0.8),
            u.in_range(0.5, 1.0),
        ]);
        let warp = |p: V3| -> V3 {
            let s = 1.0 + taper * p[2];
            let (sn, cs) = (twist * p[2]).sin_cos();
            let (x, y) = (p[0] * s, p[1] * s);
            let q = [x * cs - y * sn, x * sn + y * cs, p[2]];
            [
                q[0] + amp * (f * q[1] + ph[0]).sin(),
                q[1] + amp * (f * q[2] + ph[1]).sin(),
                q[2] + amp * (f * q[0] + ph[2]).sin(),
            ]
        };
        let mut radius: f32 = 1e-6;
        for t in &mut m.tris {
            for v in t.iter_mut() {
                *v = warp(*v);
                radius = radius.max(dot(*v, *v).sqrt());
            }
        }
        let k = scale / radius;
        for t in &mut m.tris {
            for v in t.iter_mut() {
                let r = apply(&rot, *v);
                *v = [r[0] * k, r[1] * k, r[2] * k];
            }
        }
        Self {
            class,
            seed,
            mesh: m,
            light,
        }
    }

    fn noise_seed(&self, view: usize) -> u64 {
        self.seed ^ (view as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (self.class as u64)
    }
}

/// A z-buffer and an intensity buffer.
struct Raster {
    size: usize,
    depth: Vec<f32>,
    shade: Vec<f32>,
}

impl Raster {
    fn new(size: usize) -> Self {
        Self {
            size,
            depth: vec![f32::INFINITY; size * size],
            shade: vec![0.0; size * size],
        }
    }

    fn clear(&mut self) {
        self.depth.fill(f32::INFINITY);
        self.shade.fill(0.0);
    }

    /// Draws the instance as seen by camera `view`.
    fn draw(&mut self, inst: &Instance, rig: &ShapeRig, view: usize) {
        let pose = rig.cameras[view];
        let (az, el) = (
            pose.azimuth_deg.to_radians(),
            pose.elevation_deg.to_radians(),
        );
        let eye = [
            rig.distance * el.cos() * az.cos(),
            rig.distance * el.cos() * az.sin(),
            rig.distance * el.sin(),
        ];
        // Camera basis: forward to the origin, right, up.
        let fwd = norm([-eye[0], -eye[1], -eye[2]]);
        let world_up = if fwd[2].abs() > 0.99 {
            [0.0, 1.0, 0.0]
        } else {
            [0.0, 0.0, 1.0]
        };
        let right = norm(cross(fwd, world_up));
        let up = cross(right, fwd);
        // Light in world space: the instance's light direction expressed in the camera frame
        // (from above and in front of the camera), so shading follows the viewer like a headlamp.
        let l = inst.light;
        let light = norm([
            right[0] * l[0] + up[0] * l[1] - fwd[0] * l[2],
            right[1] * l[0] + up[1] * l[1] - fwd[1] * l[2],
            right[2] * l[0] + up[2] * l[1] - fwd[2] * l[2],
        ]);
        let focal = 0.5 * self.size as f32 / (0.5 * rig.fov_deg.to_radians()).tan();
        let half = 0.5 * self.size as f32;
        let (near, far) = (rig.distance - 1.0, rig.distance + 1.0);
        for t in &inst.mesh.tris {
            let n = norm(cross(sub(t[1], t[0]), sub(t[2], t[0])));
            let to_eye = sub(eye, t[0]);
            let n = if dot(n, to_eye) < 0.0 {
                [-n[0], -n[1], -n[2]]
            } else {
                n
            };
            let lambert = dot(n, light).max(0.0);
            let intensity = 0.18 + 0.82 * lambert;
            let mut sx = [0.0f32; 3];
            let mut sy = [0.0f32; 3];
            let mut iz = [0.0f32; 3];
            for k in 0..3 {
                let p = sub(t[k], eye);
                let z = dot(p, fwd).max(1e-3);
                sx[k] = half + focal * dot(p, right) / z;
                sy[k] = half - focal * dot(p, up) / z;
                iz[k] = 1.0 / z;
            }
            let area = (sx[1] - sx[0]) * (sy[2] - sy[0]) - (sx[2] - sx[0]) * (sy[1] - sy[0]);
            if area.abs() < 1e-9 {
                continue;
            }
            let min_x = sx
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min)
                .floor()
                .max(0.0) as usize;
            let max_x = (sx.iter().copied().fold(f32::NEG_INFINITY, f32::max).ceil() as isize)
                .min(self.size as isize - 1);
            let min_y = sy
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min)
                .floor()
                .max(0.0) as usize;
            let max_y = (sy.iter().copied().fold(f32::NEG_INFINITY, f32::max).ceil() as isize)
                .min(self.size as isize - 1);
            if max_x < 0 || max_y < 0 {
                continue;
            }
            let inv_area = 1.0 / area;
            for py in min_y..=max_y as usize {
                let y = py as f32 + 0.5;
                for px in min_x..=max_x as usize {
                    let x = px as f32 + 0.5;
                    let w0 = ((sx[1] - x) * (sy[2] - y) - (sx[2] - x) * (sy[1] - y)) * inv_area;
                    let w1 = ((sx[2] - x) * (sy[0] - y) - (sx[0] - x) * (sy[2] - y)) * inv_area;
                    let w2 = 1.0 - w0 - w1;
                    if w0 < 0.0 || w1 < 0.0 || w2 < 0.0 {
                        continue;
                    }
                    let z = 1.0 / (w0 * iz[0] + w1 * iz[1] + w2 * iz[2]);
                    let i = py * self.size + px;
                    if z < self.depth[i] {
                        self.depth[i] = z;
                        let fog = 1.0 - 0.45 * ((z - near) / (far - near)).clamp(0.0, 1.0);
                        self.shade[i] = intensity * fog;
                    }
                }
            }
        }
    }

    fn finish(&self, noise_std: f32, seed: u64, out: &mut Vec<u8>) {
        out.clear();
        let mut rng = SplitMix64::new(seed);
        let noise = f64::from(noise_std);
        for &s in &self.shade {
            let v = if noise > 0.0 {
                f64::from(s) + noise * rng.normal()
            } else {
                f64::from(s)
            };
            out.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
}

/// FNV-1a over 64-bit words.
struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
    fn u64(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01B3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ShapeSetConfig {
        ShapeSetConfig {
            train: 48,
            val: 24,
            test: 24,
            ..ShapeSetConfig::default()
        }
    }

    fn l1(a: &[u8], b: &[u8]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn rendering_is_deterministic_and_matches_the_generated_set() {
        let cfg = small();
        let set = generate(&cfg, ShapeSplit::Val).unwrap();
        let mut a = Vec::new();
        for i in [0, 5, 23] {
            for v in 0..cfg.rig.views() {
                render_view(&cfg, ShapeSplit::Val, i, v, &mut a).unwrap();
                assert_eq!(a, set.image(i, v), "instance {i} view {v}");
            }
        }
        assert_eq!(generate(&cfg, ShapeSplit::Val).unwrap(), set);
        let other = ShapeSetConfig {
            seed: cfg.seed + 1,
            ..cfg.clone()
        };
        assert_ne!(
            generate(&other, ShapeSplit::Val).unwrap().images,
            set.images
        );
        assert_ne!(
            generate(&cfg, ShapeSplit::Test).unwrap().images,
            set.images,
            "splits differ"
        );
    }

    #[test]
    fn objects_are_visible_and_views_differ() {
        let cfg = small();
        let set = generate(&cfg, ShapeSplit::Train).unwrap();
        for i in 0..set.len() {
            for v in 0..set.views {
                let img = set.image(i, v);
                let lit = img.iter().filter(|&&p| p > 40).count();
                assert!(
                    lit > img.len() / 20 && lit < img.len() * 3 / 4,
                    "instance {i} ({}) view {v}: {lit} lit pixels",
                    CLASSES[usize::from(set.labels[i])]
                );
            }
            assert!(
                l1(set.image(i, 0), set.image(i, 1)) > 2.0,
                "views of {i} differ"
            );
        }
    }

    #[test]
    fn classes_differ() {
        // Mean silhouette per class over a few instances: every pair of classes differs.
        let cfg = ShapeSetConfig {
            train: 12 * 16,
            noise_std: 0.0,
            ..small()
        };
        let set = generate(&cfg, ShapeSplit::Train).unwrap();
        let px = set.pixels();
        let mut mean = vec![vec![0.0f64; px]; CLASSES.len()];
        for i in 0..set.len() {
            let c = usize::from(set.labels[i]);
            for v in 0..set.views {
                for (m, &p) in mean[c].iter_mut().zip(set.image(i, v)) {
                    *m += f64::from(p);
                }
            }
        }
        for a in 0..CLASSES.len() {
            for b in a + 1..CLASSES.len() {
                let d: f64 = mean[a]
                    .iter()
                    .zip(&mean[b])
                    .map(|(x, y)| (x - y).abs())
                    .sum::<f64>()
                    / (px * 16 * set.views) as f64;
                assert!(d > 0.5, "{} vs {}: {d}", CLASSES[a], CLASSES[b]);
            }
        }
    }

    #[test]
    fn cache_round_trips_and_is_keyed_by_parameters() {
        let dir = std::env::temp_dir().join(format!("shapes-cache-test-{}", std::process::id()));
        let cfg = small();
        let a = load_or_generate(&cfg, ShapeSplit::Val, &dir).unwrap();
        assert!(cache_path(&cfg, ShapeSplit::Val, &dir).exists());
        let b = load_or_generate(&cfg, ShapeSplit::Val, &dir).unwrap();
        assert_eq!(a, b);
        let c = ShapeSetConfig {
            size: 32,
            ..cfg.clone()
        };
        assert_ne!(
            cache_path(&c, ShapeSplit::Val, &dir),
            cache_path(&cfg, ShapeSplit::Val, &dir)
        );
        assert_eq!(
            load_or_generate(&c, ShapeSplit::Val, &dir)
                .unwrap()
                .pixels(),
            32 * 32
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_requests_are_errors() {
        let cfg = small();
        let mut out = Vec::new();
        assert!(render_view(&cfg, ShapeSplit::Val, 24, 0, &mut out).is_err());
        assert!(render_view(&cfg, ShapeSplit::Val, 0, 4, &mut out).is_err());
        let bad = ShapeSetConfig {
            size: 2,
            ..cfg.clone()
        };
        assert!(generate(&bad, ShapeSplit::Val).is_err());
    }

    #[test]
    fn mvcnn_rig_has_twelve_views() {
        let cfg = ShapeSetConfig {
            rig: ShapeRig::mvcnn(),
            ..small()
        };
        let set = generate(&cfg, ShapeSplit::Val).unwrap();
        assert_eq!(set.views, 12);
        assert_eq!(set.images.len(), 24 * 12 * 64 * 64);
    }
}

/// The scene a bundle records for this configuration (what sensors replay: the test split).
pub fn scene_of(cfg: &ShapeSetConfig) -> splitnets_proto::bundle::SceneSpec {
    splitnets_proto::bundle::SceneSpec {
        kind: "shapes".into(),
        size: cfg.size,
        seed: cfg.seed,
        test_items: cfg.test,
        noise_std: cfg.noise_std,
        cameras: cfg
            .rig
            .cameras
            .iter()
            .map(|c| [c.azimuth_deg, c.elevation_deg])
            .collect(),
        distance: cfg.rig.distance,
        fov_deg: cfg.rig.fov_deg,
    }
}

/// The configuration that renders a bundle's scene (its test split is what the sensors replay).
pub fn config_of(scene: &splitnets_proto::bundle::SceneSpec) -> Result<ShapeSetConfig, ShapeError> {
    if scene.kind != "shapes" {
        return Err(ShapeError::Config(format!(
            "scene kind {:?} is not supported (shapes)",
            scene.kind
        )));
    }
    let cfg = ShapeSetConfig {
        size: scene.size,
        rig: ShapeRig {
            cameras: scene
                .cameras
                .iter()
                .map(|[a, e]| CameraPose {
                    azimuth_deg: *a,
                    elevation_deg: *e,
                })
                .collect(),
            distance: scene.distance,
            fov_deg: scene.fov_deg,
        },
        seed: scene.seed,
        test: scene.test_items,
        noise_std: scene.noise_std,
        ..ShapeSetConfig::default()
    };
    cfg.check()?;
    Ok(cfg)
}

#[cfg(test)]
mod scene_tests {
    use super::*;

    #[test]
    fn a_scene_round_trips_and_renders_the_same_frames() {
        let cfg = ShapeSetConfig {
            size: 32,
            ..ShapeSetConfig::default()
        };
        let back = config_of(&scene_of(&cfg)).unwrap();
        assert_eq!(back.size, cfg.size);
        assert_eq!(back.rig, cfg.rig);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        render_view(&cfg, ShapeSplit::Test, 5, 2, &mut a).unwrap();
        render_view(&back, ShapeSplit::Test, 5, 2, &mut b).unwrap();
        assert_eq!(a, b);
        let mut bad = scene_of(&cfg);
        bad.kind = "teapots".into();
        assert!(config_of(&bad).is_err());
    }
}

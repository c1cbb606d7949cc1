//! The split bundle: a directory holding `bundle.toml` (the manifest), `head.onnx` (runs on each
//! sensor) and `tail.onnx` (fuses the views' features and classifies on the aggregator).
//!
//! The bundle digest is the sha256 of `bundle.toml`'s bytes; the manifest records the sha256 of
//! both model files, so the digest pins the whole bundle. Loading verifies every file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use splitnets_cost_model::LinkBudget;

use crate::codec::CodecSpec;
use crate::wire::{FrameLayout, TensorLayout};

/// The simulated camera rig, as recorded in a bundle (the simulation itself is
/// `splitnets_camera::rig`).
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

pub const MANIFEST_FILE: &str = "bundle.toml";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Class names in output order.
    pub classes: Vec<String>,
    pub input: InputSpec,
    pub cameras: CameraRig,
    /// A rendered scene the cameras replay instead of Fashion-MNIST (absent: Fashion-MNIST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<SceneSpec>,
    pub split: SplitSpec,
    pub codec: CodecSpec,
    pub files: Files,
    pub link_budget: LinkBudget,
    /// The cost model's predicted per-stage breakdown, when one was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<PredictedCost>,
    /// Where the weights came from (training run summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingSummary>,
}

/// A procedurally rendered scene the simulated cameras replay (`splitnets_camera::shapes`):
/// everything that determines its frames, so a sensor renders exactly what the network was
/// tested on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneSpec {
    /// `shapes`: the project's multi-view 3-D shape set.
    pub kind: String,
    /// Frame side, pixels.
    pub size: usize,
    pub seed: u64,
    /// Instances of the test split the cameras cycle through.
    pub test_items: usize,
    pub noise_std: f32,
    /// Camera poses (azimuth, elevation) in degrees, one per view.
    pub cameras: Vec<[f32; 2]>,
    /// Camera distance from the object's centre (object within a unit sphere).
    pub distance: f32,
    pub fov_deg: f32,
}

/// The camera frame and how it becomes the head's input tensor.
///
/// Frames are interleaved 8-bit rows (HWC): `gray8` has one channel, `rgb8` three (R, G, B).
/// The head's input is `[1, C, H, W]` (`layout = "nchw"`, the default) or `[1, H, W, C]`
/// (`nhwc`), values `(pixel / 255 - mean[c]) / std[c]`. Images of another size are fitted to
/// `height × width` per `resize`. Manifests written before RGB support (`gray8`, scalar
/// `mean`/`std`, no `layout`/`resize`) read and write back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Frame size in pixels.
    pub height: usize,
    pub width: usize,
    /// `gray8` (one 8-bit channel) or `rgb8` (three, interleaved R, G, B).
    pub pixel_format: String,
    /// Per-channel normalisation: one value (every channel) or one per channel.
    pub mean: ChannelValues,
    pub std: ChannelValues,
    /// The head input's layout (absent: `nchw`).
    #[serde(default, skip_serializing_if = "Layout::is_default")]
    pub layout: Layout,
    /// How an image of another size becomes `height × width` (absent: `stretch`).
    #[serde(default, skip_serializing_if = "ResizeMode::is_default")]
    pub resize: ResizeMode,
    /// `resize = "center-crop"`: the crop keeps this fraction of the resized image's shorter
    /// side, in (0, 1] (absent: 1). 0.875 is torchvision's `Resize(256)` + `CenterCrop(224)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_fraction: Option<f32>,
}

impl Default for InputSpec {
    /// A 0 × 0 `gray8` frame, mean 0, std 1, NCHW, stretched: a base for struct update syntax
    /// (`InputSpec { height, width, ..Default::default() }`); not a valid spec by itself.
    fn default() -> Self {
        Self {
            height: 0,
            width: 0,
            pixel_format: "gray8".into(),
            mean: 0.0.into(),
            std: 1.0.into(),
            layout: Layout::default(),
            resize: ResizeMode::default(),
            crop_fraction: None,
        }
    }
}

/// Layout of the head's input tensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[1, C, H, W]` (PyTorch).
    #[default]
    Nchw,
    /// `[1, H, W, C]` (TensorFlow / Keras).
    Nhwc,
}

impl Layout {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How an image of another size is fitted to the bundle's frame size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Resize to exactly `height × width` (the aspect ratio may change).
    #[default]
    Stretch,
    /// Keep the aspect ratio: resize so the frame covers `height / crop_fraction ×
    /// width / crop_fraction`, then cut out the centre `height × width`.
    CenterCrop,
}

impl ResizeMode {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Per-channel values (`mean`, `std`): one value applies to every channel. In TOML a number
/// or a list of numbers; one value is written as a plain number (as manifests always had it).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelValues(pub Vec<f32>);

impl ChannelValues {
    /// The value of channel `c` (the single value, when there is one).
    #[inline]
    pub fn get(&self, c: usize) -> f32 {
        match self.0.as_slice() {
            [v] => *v,
            v => v[c],
        }
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
}

impl From<f32> for ChannelValues {
    fn from(v: f32) -> Self {
        Self(vec![v])
    }
}

impl From<Vec<f32>> for ChannelValues {
    fn from(v: Vec<f32>) -> Self {
        Self(v)
    }
}

impl<const N: usize> From<[f32; N]> for ChannelValues {
    fn from(v: [f32; N]) -> Self {
        Self(v.to_vec())
    }
}

impl Serialize for ChannelValues {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [v] => s.serialize_f32(*v),
            v => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ChannelValues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ChannelValues;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a list of numbers (one per channel)")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok((v as f32).into())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok((v as f32).into())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok((v as f32).into())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(3).min(16));
                while let Some(x) = seq.next_element::<f32>()? {
                    v.push(x);
                }
                Ok(ChannelValues(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl InputSpec {
    /// Channels per pixel: 3 for `rgb8`, 1 for `gray8`.
    pub fn channels(&self) -> usize {
        match self.pixel_format.as_str() {
            "rgb8" => 3,
            _ => 1,
        }
    }
    /// `[1, C, H, W]` or `[1, H, W, C]`, per `layout`.
    pub fn head_input_shape(&self) -> [usize; 4] {
        let (c, h, w) = (self.channels(), self.height, self.width);
        match self.layout {
            Layout::Nchw => [1, c, h, w],
            Layout::Nhwc => [1, h, w, c],
        }
    }
    /// Bytes of one frame: `height × width × channels`.
    pub fn raw_frame_bytes(&self) -> usize {
        self.height * self.width * self.channels()
    }
    /// A frame's interleaved pixels (`raw_frame_bytes()` of them) to the head's input values,
    /// `(p / 255 - mean[c]) / std[c]` in the head's layout. Reuses `out`'s allocation.
    pub fn preprocess(&self, pixels: &[u8], out: &mut Vec<f32>) {
        out.clear();
        let c = self.channels();
        let norm = |p: u8, ch: usize| (f32::from(p) / 255.0 - self.mean.get(ch)) / self.std.get(ch);
        if c == 1 {
            let (mean, std) = (self.mean.get(0), self.std.get(0));
            out.extend(pixels.iter().map(|&p| (f32::from(p) / 255.0 - mean) / std));
            return;
        }
        match self.layout {
            // Interleaved already: the tensor is the pixels in order.
            Layout::Nhwc => out.extend(
                pixels
                    .chunks_exact(c)
                    .flat_map(|px| px.iter().enumerate().map(move |(ch, &p)| norm(p, ch))),
            ),
            // One plane per channel.
            Layout::Nchw => {
                for ch in 0..c {
                    let (mean, std) = (self.mean.get(ch), self.std.get(ch));
                    out.extend(
                        pixels
                            .iter()
                            .skip(ch)
                            .step_by(c)
                            .map(|&p| (f32::from(p) / 255.0 - mean) / std),
                    );
                }
            }
        }
    }

    /// Checks the fields (names the field at fault).
    pub fn validate(&self) -> Result<(), String> {
        if !["gray8", "rgb8"].contains(&self.pixel_format.as_str()) {
            return Err(format!(
                "input.pixel_format {:?} is not supported (gray8 or rgb8)",
                self.pixel_format
            ));
        }
        if self.height == 0 || self.width == 0 {
            return Err(format!(
                "input.height and input.width must be non-zero (they are {} and {})",
                self.height, self.width
            ));
        }
        let c = self.channels();
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != 1 && v.len() != c {
                return Err(format!(
                    "input.{name} has {} values: give 1 or {c} (one per channel of {})",
                    v.len(),
                    self.pixel_format
                ));
            }
            if let Some(x) = v.as_slice().iter().find(|x| !x.is_finite()) {
                return Err(format!("input.{name} value {x} is not a finite number"));
            }
        }
        if self.std.as_slice().contains(&0.0) {
            return Err(format!(
                "input.std {:?} must be non-zero",
                self.std.as_slice()
            ));
        }
        if let Some(f) = self.crop_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return Err(format!("input.crop_fraction {f} must be in (0, 1]"));
            }
            if self.resize != ResizeMode::CenterCrop {
                return Err("input.crop_fraction applies only to resize = \"center-crop\"".into());
            }
        }
        Ok(())
    }
}

/// Where the network is cut and how the views are fused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec {
    /// Names of the head's input and output tensors.
    pub head_input: String,
    pub head_output: String,
    /// One view's feature, `[1, C, H, W]` (any rank ≥ 2 with a leading 1 for a user's model).
    pub feature_shape: Vec<usize>,
    /// The tail's input stacks the present views' features along axis 0: `[views_present, C, H, W]`.
    pub tail_input: String,
    pub tail_output: String,
    /// How the tail fuses the present views (after a shared per-view recover layer): `max`
    /// (element-wise), `mean`, or `learned` (attention weights over the views present); `none`
    /// for a single-view network.
    pub fusion: String,
    /// The feature's calibrated `[min, max]` per channel (axis 1), for the codec
    /// `affine_calibrated_per_channel`; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_ranges: Vec<[f32; 2]>,
    /// Further tensors crossing the link, for a cut through a block whose branches both cross
    /// (a residual or squeeze-excite block of a user's model): each is a head output and a tail
    /// input of its own, sent in the same frame after the first (see [`crate::wire::FrameLayout`]).
    /// Empty for the project's networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_features: Vec<ExtraFeature>,
}

/// A further tensor crossing the link (see [`SplitSpec::extra_features`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtraFeature {
    pub head_output: String,
    pub tail_input: String,
    /// One view's tensor, `[1, ...]`.
    pub shape: Vec<usize>,
    /// This tensor's codec when it differs from the bundle's (a calibrated range of its own);
    /// absent: the bundle's `codec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<CodecSpec>,
    /// Calibrated `[min, max]` per channel, for the codec `affine_calibrated_per_channel`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_ranges: Vec<[f32; 2]>,
}

impl SplitSpec {
    pub fn feature_elements(&self) -> usize {
        self.feature_shape.iter().product()
    }
}

/// One tensor crossing the link, as both stages see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossingTensor {
    pub head_output: String,
    pub tail_input: String,
    pub shape: Vec<usize>,
    pub codec: CodecSpec,
    pub channel_ranges: Vec<[f32; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Files {
    pub head: FileRef,
    pub tail: FileRef,
}

impl Files {
    /// `head.onnx` and `tail.onnx`, digests to be filled in by [`Bundle::write`].
    pub fn to_be_written() -> Self {
        let named = |path: &str| FileRef {
            path: path.into(),
            sha256: String::new(),
        };
        Self {
            head: named("head.onnx"),
            tail: named("tail.onnx"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    pub path: String,
    pub sha256: String,
}

/// Predicted per-frame costs (seconds, bytes) from the cost model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedCost {
    pub profile: String,
    pub sensor_seconds: f64,
    pub link_seconds: f64,
    pub aggregator_seconds: f64,
    pub end_to_end_seconds: f64,
    pub sensor_peak_memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub dataset: String,
    pub steps: u64,
    pub batch_size: usize,
    pub seconds: f64,
    pub final_loss: f64,
    /// Test accuracy of the float model, each view alone (mean over views) and all views fused.
    pub test_accuracy_one_view: f64,
    pub test_accuracy_fused: f64,
    pub test_samples: usize,
    /// Largest |ONNX Runtime − training framework| over the checked logits.
    pub onnx_max_abs_diff: f64,
    pub command: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {dir}: cannot read {file}: {cause}")]
    Io {
        dir: String,
        file: String,
        cause: std::io::Error,
    },
    #[error("bundle {dir}: {file} is not a valid manifest: {reason}")]
    Manifest {
        dir: String,
        file: String,
        reason: String,
    },
    #[error(
        "bundle {dir}: {file} does not match its digest (manifest says sha256 {expected}, file has {actual}); the bundle is corrupt or was edited"
    )]
    DigestMismatch {
        dir: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("bundle {dir}: {reason}")]
    Invalid { dir: String, reason: String },
}

/// A verified bundle in memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Hex sha256 of `bundle.toml`.
    pub digest: String,
    pub head_onnx: Vec<u8>,
    pub tail_onnx: Vec<u8>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read(dir: &Path, file: &str) -> Result<Vec<u8>, BundleError> {
    std::fs::read(dir.join(file)).map_err(|cause| BundleError::Io {
        dir: dir.display().to_string(),
        file: file.to_string(),
        cause,
    })
}

/// Why a manifest's text is not a bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// Not TOML of the manifest's shape (one line).
    Syntax(String),
    /// Well-formed, but inconsistent (see [`Manifest::validate`]).
    Invalid(String),
}

impl Manifest {
    /// Parses and validates a manifest's text: everything `Bundle::load` checks before it
    /// reads the model files (the bundle-parsing fuzz target drives this).
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text)
            .map_err(|e| ManifestError::Syntax(e.to_string().trim().replace('\n', " ")))?;
        manifest.validate().map_err(ManifestError::Invalid)?;
        Ok(manifest)
    }
}

impl Bundle {
    /// Reads and verifies a bundle directory.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let d = dir.display().to_string();
        let manifest_bytes = read(dir, MANIFEST_FILE)?;
        let text = std::str::from_utf8(&manifest_bytes).map_err(|e| BundleError::Manifest {
            dir: d.clone(),
            file: MANIFEST_FILE.into(),
            reason: e.to_string(),
        })?;
        let manifest = Manifest::parse(text).map_err(|e| match e {
            ManifestError::Syntax(reason) => BundleError::Manifest {
                dir: d.clone(),
                file: MANIFEST_FILE.into(),
                reason,
            },
            ManifestError::Invalid(reason) => BundleError::Invalid {
                dir: d.clone(),
                reason,
            },
        })?;
        let load_checked = |f: &FileRef| -> Result<Vec<u8>, BundleError> {
            let bytes = read(dir, &f.path)?;
            let actual = sha256_hex(&bytes);
            if actual != f.sha256 {
                return Err(BundleError::DigestMismatch {
                    dir: d.clone(),
                    file: f.path.clone(),
                    expected: f.sha256.clone(),
                    actual,
                });
            }
            Ok(bytes)
        };
        let head_onnx = load_checked(&manifest.files.head)?;
        let tail_onnx = load_checked(&manifest.files.tail)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            digest: sha256_hex(&manifest_bytes),
            manifest,
            head_onnx,
            tail_onnx,
        })
    }

    /// Writes a bundle: the model files, then a manifest whose file digests are filled in.
    /// Returns the bundle digest.
    pub fn write(
        dir: &Path,
        mut manifest: Manifest,
        head_onnx: &[u8],
        tail_onnx: &[u8],
    ) -> Result<String, BundleError> {
        let d = dir.display().to_string();
        let io = |file: &str| {
            let file = file.to_string();
            let d = d.clone();
            move |cause| BundleError::Io {
                dir: d,
                file,
                cause,
            }
        };
        std::fs::create_dir_all(dir).map_err(io("."))?;
        manifest.files.head.sha256 = sha256_hex(head_onnx);
        manifest.files.tail.sha256 = sha256_hex(tail_onnx);
        std::fs::write(dir.join(&manifest.files.head.path), head_onnx)
            .map_err(io(&manifest.files.head.path))?;
        std::fs::write(dir.join(&manifest.files.tail.path), tail_onnx)
            .map_err(io(&manifest.files.tail.path))?;
        manifest.validate().map_err(|reason| BundleError::Invalid {
            dir: d.clone(),
            reason,
        })?;
        let text = format!(
            "# SplitNets split bundle. The bundle digest is the sha256 of this file.\n{}",
            toml::to_string_pretty(&manifest).map_err(|e| BundleError::Manifest {
                dir: d.clone(),
                file: MANIFEST_FILE.into(),
                reason: e.to_string(),
            })?
        );
        std::fs::write(dir.join(MANIFEST_FILE), &text).map_err(io(MANIFEST_FILE))?;
        Ok(sha256_hex(text.as_bytes()))
    }
}

impl Manifest {
    /// Consistency checks that do not need the model files.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.classes.is_empty() {
            return Err("classes is empty".into());
        }
        self.input.validate()?;
        if self.cameras.views == 0 {
            return Err("cameras.views must be at least 1".into());
        }
        // [1, C, H, W] from the project's networks; a user's model may cut anywhere ([1, C]
        // after a flatten too).
        if self.split.feature_shape.len() < 2 || self.split.feature_shape[0] != 1 {
            return Err(format!(
                "split.feature_shape {:?} must be [1, ...] with at least 2 dims",
                self.split.feature_shape
            ));
        }
        let mut names = vec![(&self.split.head_output, &self.split.tail_input)];
        for (i, e) in self.split.extra_features.iter().enumerate() {
            if e.shape.len() < 2 || e.shape[0] != 1 {
                return Err(format!(
                    "split.extra_features[{i}] ({}): shape {:?} must be [1, ...] with at least 2 dims",
                    e.head_output, e.shape
                ));
            }
            if let Some(c) = e.codec {
                c.validate()
                    .map_err(|err| format!("split.extra_features[{i}].codec: {err}"))?;
            }
            if names
                .iter()
                .any(|(h, t)| **h == e.head_output || **t == e.tail_input)
            {
                return Err(format!(
                    "split.extra_features[{i}]: head output {:?} or tail input {:?} is named twice",
                    e.head_output, e.tail_input
                ));
            }
            names.push((&e.head_output, &e.tail_input));
        }
        if !self.split.extra_features.is_empty() && self.cameras.views != 1 {
            return Err(format!(
                "split.extra_features (several tensors crossing) are for one camera, but cameras.views is {}",
                self.cameras.views
            ));
        }
        // The tail fuses the views itself; this records how (and refuses what no tail does).
        // `none`: a single-view network (a user's model) whose tail takes the one feature.
        match self.split.fusion.as_str() {
            "max" | "mean" | "learned" => {}
            "none" if self.cameras.views == 1 => {}
            "none" => {
                return Err(format!(
                    "split.fusion \"none\" is for one camera, but cameras.views is {}",
                    self.cameras.views
                ));
            }
            other => {
                return Err(format!(
                    "split.fusion {other:?} is not supported (max, mean, learned, or none with one view)"
                ));
            }
        }
        if self.scene.is_some() && self.input.pixel_format != "gray8" {
            return Err(format!(
                "the bundle has a rendered scene (gray8 frames) but input.pixel_format {:?}",
                self.input.pixel_format
            ));
        }
        if let Some(scene) = &self.scene
            && (scene.cameras.len() != self.cameras.views as usize
                || scene.size != self.input.height
                || scene.size != self.input.width)
        {
            return Err(format!(
                "scene has {} cameras of {}x{} px, but the bundle has {} views of {}x{}",
                scene.cameras.len(),
                scene.size,
                scene.size,
                self.cameras.views,
                self.input.height,
                self.input.width
            ));
        }
        self.codec.validate().map_err(|e| format!("codec: {e}"))?;
        for t in self.crossing_tensors() {
            if t.codec.needs_channel_ranges() {
                crate::codec::check_channel_ranges(&t.shape, &t.channel_ranges)
                    .map_err(|e| format!("split feature {:?}: {e}", t.head_output))?;
            } else if !t.channel_ranges.is_empty() {
                return Err(format!(
                    "split feature {:?} has channel_ranges but its codec ({}) takes none",
                    t.head_output, t.codec
                ));
            }
        }
        Ok(())
    }
}

/// The link budget of frames of `layout` sent by `views` cameras at `fps`: exactly the bytes
/// each sensor's stream carries per frame.
pub fn link_budget_for(
    layout: &FrameLayout,
    views: u32,
    fps: f64,
    raw_frame_bytes: usize,
) -> LinkBudget {
    link_budget_with_framing(
        layout,
        layout.wire_bytes(false),
        views,
        fps,
        raw_frame_bytes,
    )
}

/// [`link_budget_for`] with the frame's total bytes given (a bundle set's frames are larger).
pub(crate) fn link_budget_with_framing(
    layout: &FrameLayout,
    frame_bytes: usize,
    views: u32,
    fps: f64,
    raw_frame_bytes: usize,
) -> LinkBudget {
    let pairs = layout.parameter_pairs();
    let payload = layout.payload_bytes();
    splitnets_cost_model::link_budget(&splitnets_cost_model::LinkBudgetInput {
        payload_bytes: payload,
        quantization_parameter_pairs: pairs,
        message_overhead_bytes: frame_bytes - payload - 8 * pairs,
        views,
        target_fps: fps,
        raw_frame_bytes,
    })
}

impl Manifest {
    /// Every tensor crossing the link, in frame order: the split's feature, then its extra
    /// features.
    pub fn crossing_tensors(&self) -> Vec<CrossingTensor> {
        let first = CrossingTensor {
            head_output: self.split.head_output.clone(),
            tail_input: self.split.tail_input.clone(),
            shape: self.split.feature_shape.clone(),
            codec: self.codec,
            channel_ranges: self.split.channel_ranges.clone(),
        };
        std::iter::once(first)
            .chain(self.split.extra_features.iter().map(|e| CrossingTensor {
                head_output: e.head_output.clone(),
                tail_input: e.tail_input.clone(),
                shape: e.shape.clone(),
                codec: e.codec.unwrap_or(self.codec),
                channel_ranges: e.channel_ranges.clone(),
            }))
            .collect()
    }

    /// What each of this bundle's feature frames holds.
    pub fn frame_layout(&self) -> FrameLayout {
        FrameLayout {
            tensors: self
                .crossing_tensors()
                .into_iter()
                .map(|t| TensorLayout {
                    shape: t.shape,
                    codec: t.codec,
                    channel_ranges: t.channel_ranges,
                })
                .collect(),
        }
    }

    /// The same split with another codec for every crossing tensor (link budget recomputed).
    pub fn with_codec(mut self, codec: CodecSpec) -> Self {
        self.codec = codec;
        self.split.channel_ranges.clear();
        for e in &mut self.split.extra_features {
            e.codec = None;
            e.channel_ranges.clear();
        }
        self.link_budget = link_budget_for(
            &self.frame_layout(),
            self.cameras.views,
            self.link_budget.target_fps,
            self.input.raw_frame_bytes(),
        );
        self
    }

    /// The same network for a rig of the first `views` cameras (a tail fuses any number of
    /// views): link budget recomputed, a rendered scene keeps its first `views` cameras. Used
    /// to measure one network with 1..N sensors.
    pub fn with_views(mut self, views: u32) -> Self {
        self.cameras.views = views;
        if let Some(scene) = &mut self.scene {
            scene.cameras.truncate(views as usize);
        }
        self.link_budget = link_budget_for(
            &self.frame_layout(),
            views,
            self.link_budget.target_fps,
            self.input.raw_frame_bytes(),
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle written before RGB input existed (the repository's demo bundle).
    const OLD_MANIFEST: &str = include_str!("../../deploy/bundles/hand-designed-4view/bundle.toml");

    fn with_input(input_toml: &str) -> String {
        let start = OLD_MANIFEST.find("[input]").unwrap();
        let end = OLD_MANIFEST.find("[cameras]").unwrap();
        format!(
            "{}[input]\n{input_toml}\n\n{}",
            &OLD_MANIFEST[..start],
            &OLD_MANIFEST[end..]
        )
    }

    fn invalid(input_toml: &str) -> String {
        match Manifest::parse(&with_input(input_toml)) {
            Err(ManifestError::Invalid(e)) => e,
            other => panic!("{input_toml}: expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn old_manifests_parse_and_write_back_unchanged() {
        let m = Manifest::parse(OLD_MANIFEST).unwrap();
        let i = &m.input;
        assert_eq!((i.height, i.width, i.channels()), (28, 28, 1));
        assert_eq!(
            (i.mean.as_slice(), i.std.as_slice()),
            (&[0.0][..], &[1.0][..])
        );
        assert_eq!(i.layout, Layout::Nchw);
        assert_eq!(i.resize, ResizeMode::Stretch);
        assert_eq!(i.crop_fraction, None);
        assert_eq!(i.head_input_shape(), [1, 1, 28, 28]);
        assert_eq!(i.raw_frame_bytes(), 784);
        // The bundle was written by `Bundle::write`: the same manifest writes the same bytes,
        // so the digest of a re-written old bundle does not change.
        let body = OLD_MANIFEST.split_once('\n').unwrap().1;
        assert_eq!(toml::to_string_pretty(&m).unwrap(), body);
        // Scalar and integer forms of the old fields.
        let m = Manifest::parse(&with_input(
            "height = 4\nwidth = 2\npixel_format = \"gray8\"\nmean = 0.2860\nstd = 1",
        ))
        .unwrap();
        assert_eq!(m.input.mean, 0.286.into());
        assert_eq!(m.input.std, 1.0.into());
    }

    #[test]
    fn rgb_specs_parse_and_write_lists() {
        let m = Manifest::parse(&with_input(
            "height = 224\nwidth = 224\npixel_format = \"rgb8\"\n\
             mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n\
             layout = \"nhwc\"\nresize = \"center-crop\"\ncrop_fraction = 0.875",
        ))
        .unwrap();
        let i = &m.input;
        assert_eq!(i.channels(), 3);
        assert_eq!(i.mean.as_slice(), &[0.485, 0.456, 0.406]);
        assert_eq!(i.head_input_shape(), [1, 224, 224, 3]);
        assert_eq!(i.raw_frame_bytes(), 224 * 224 * 3);
        assert_eq!(
            (i.resize, i.crop_fraction),
            (ResizeMode::CenterCrop, Some(0.875))
        );
        let text = toml::to_string_pretty(&m).unwrap();
        assert!(text.contains("layout = \"nhwc\""), "{text}");
        assert!(text.contains("resize = \"center-crop\""), "{text}");
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        let nchw = InputSpec {
            layout: Layout::Nchw,
            ..i.clone()
        };
        assert_eq!(nchw.head_input_shape(), [1, 3, 224, 224]);
    }

    fn rgb(layout: Layout) -> InputSpec {
        InputSpec {
            height: 1,
            width: 2,
            pixel_format: "rgb8".into(),
            mean: [0.0, 0.5, 1.0].into(),
            std: [1.0, 0.5, 0.25].into(),
            layout,
            ..InputSpec::default()
        }
    }

    #[test]
    fn preprocess_rgb_nchw_and_nhwc() {
        // Two pixels: (R, G, B) = (255, 0, 51) and (0, 255, 255).
        let px = [255, 0, 51, 0, 255, 255];
        let r = |p: f32| (p / 255.0 - 0.0) / 1.0;
        let g = |p: f32| (p / 255.0 - 0.5) / 0.5;
        let b = |p: f32| (p / 255.0 - 1.0) / 0.25;
        let mut out = Vec::new();
        rgb(Layout::Nchw).preprocess(&px, &mut out);
        assert_eq!(out, [r(255.0), r(0.0), g(0.0), g(255.0), b(51.0), b(255.0)]);
        assert_eq!(out[..4], [1.0, 0.0, -1.0, 1.0]);
        rgb(Layout::Nhwc).preprocess(&px, &mut out);
        assert_eq!(out, [r(255.0), g(0.0), b(51.0), r(0.0), g(255.0), b(255.0)]);
        // A scalar mean/std applies to every channel; gray stays (p/255 - mean)/std.
        let spec = InputSpec {
            mean: 0.5.into(),
            std: 0.5.into(),
            ..rgb(Layout::Nchw)
        };
        spec.preprocess(&px, &mut out);
        assert_eq!(out, [1.0, -1.0, -1.0, 1.0, -0.6, 1.0]);
        let gray = InputSpec {
            height: 1,
            width: 3,
            mean: 0.2.into(),
            std: 0.5.into(),
            ..InputSpec::default()
        };
        gray.preprocess(&[0, 51, 255], &mut out);
        assert_eq!(
            out,
            [(0.0 - 0.2) / 0.5, (0.2 - 0.2) / 0.5, (1.0 - 0.2) / 0.5]
        );
    }

    #[test]
    fn validation_names_the_field() {
        let base = "height = 8\nwidth = 8\n";
        let e = invalid(&format!("{base}pixel_format = \"bgr8\"\nmean = 0\nstd = 1"));
        assert!(
            e.contains("input.pixel_format") && e.contains("bgr8"),
            "{e}"
        );
        let e = invalid(&format!(
            "{base}pixel_format = \"rgb8\"\nmean = [0.5, 0.5]\nstd = 1"
        ));
        assert!(e.contains("input.mean has 2 values"), "{e}");
        let e = invalid(&format!(
            "{base}pixel_format = \"gray8\"\nmean = 0\nstd = [1, 1, 1]"
        ));
        assert!(e.contains("input.std has 3 values"), "{e}");
        let e = invalid(&format!(
            "{base}pixel_format = \"rgb8\"\nmean = 0\nstd = [1, 0, 1]"
        ));
        assert!(e.contains("input.std") && e.contains("non-zero"), "{e}");
        let e = invalid(&format!(
            "{base}pixel_format = \"gray8\"\nmean = []\nstd = 1"
        ));
        assert!(e.contains("input.mean has 0 values"), "{e}");
        let e = invalid(&format!(
            "{base}pixel_format = \"gray8\"\nmean = 0\nstd = 1\nresize = \"center-crop\"\ncrop_fraction = 1.5"
        ));
        assert!(e.contains("input.crop_fraction 1.5"), "{e}");
        let e = invalid(&format!(
            "{base}pixel_format = \"gray8\"\nmean = 0\nstd = 1\ncrop_fraction = 0.875"
        ));
        assert!(e.contains("center-crop"), "{e}");
        let e = invalid("height = 0\nwidth = 8\npixel_format = \"gray8\"\nmean = 0\nstd = 1");
        assert!(e.contains("input.height"), "{e}");
        // Unknown layouts and resize modes are refused when parsing, naming the value.
        for (field, bad) in [("layout", "chw"), ("resize", "fill")] {
            let text = with_input(&format!(
                "{base}pixel_format = \"gray8\"\nmean = 0\nstd = 1\n{field} = \"{bad}\""
            ));
            match Manifest::parse(&text) {
                Err(ManifestError::Syntax(e)) => assert!(e.contains(bad), "{e}"),
                other => panic!("{field} = {bad}: {other:?}"),
            }
        }
        let text = with_input(&format!(
            "{base}pixel_format = \"gray8\"\nmean = \"zero\"\nstd = 1"
        ));
        match Manifest::parse(&text) {
            Err(ManifestError::Syntax(e)) => assert!(e.contains("list of numbers"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    /// Several tensors crossing and calibrated ranges per channel: what the manifest check
    /// accepts and what it refuses, each with the reason.
    #[test]
    fn extra_features_and_channel_ranges_are_checked() {
        let base = Manifest::parse(OLD_MANIFEST).unwrap().with_views(1);
        let mut m = base.clone();
        m.split.fusion = "none".into();
        m.split.extra_features.push(ExtraFeature {
            head_output: "gate".into(),
            tail_input: "gate".into(),
            shape: vec![1, 4, 1, 1],
            codec: Some(CodecSpec::AffineCalibratedPerChannel { bits: 4 }),
            channel_ranges: vec![[0.0, 1.0]; 4],
        });
        m.validate().unwrap();
        assert_eq!(m.frame_layout().tensors.len(), 2);
        assert_eq!(m.frame_layout().tensors[1].channel_ranges.len(), 4);

        let mut short = m.clone();
        short.split.extra_features[0].channel_ranges.pop();
        assert!(
            short
                .validate()
                .unwrap_err()
                .contains("3 calibrated channel ranges")
        );
        let mut stray = m.clone();
        stray.split.channel_ranges = vec![[0.0, 1.0]; 4];
        assert!(stray.validate().unwrap_err().contains("takes none"));
        let mut twice = m.clone();
        twice.split.extra_features[0].tail_input = base.split.tail_input;
        assert!(twice.validate().unwrap_err().contains("named twice"));
        let mut four_views = m.clone();
        four_views.cameras.views = 4;
        four_views.split.fusion = "max".into();
        assert!(
            four_views
                .validate()
                .unwrap_err()
                .contains("for one camera")
        );
        // A new codec for the whole bundle drops every per-tensor choice.
        let plain = m.with_codec(CodecSpec::Affine {
            bits: 8,
            per_channel: false,
        });
        plain.validate().unwrap();
        assert!(plain.split.extra_features[0].codec.is_none());
    }
}

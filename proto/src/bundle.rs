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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Frame size in pixels.
    pub height: usize,
    pub width: usize,
    /// Only `gray8` (one 8-bit channel) so far.
    pub pixel_format: String,
    /// Head input `[1, 1, height, width]`, values `(pixel / 255 - mean) / std`.
    pub mean: f32,
    pub std: f32,
}

impl InputSpec {
    pub fn head_input_shape(&self) -> [usize; 4] {
        [1, 1, self.height, self.width]
    }
    pub fn raw_frame_bytes(&self) -> usize {
        self.height * self.width
    }
    /// Pixels to the head's input values.
    pub fn preprocess(&self, pixels: &[u8], out: &mut Vec<f32>) {
        out.clear();
        out.extend(
            pixels
                .iter()
                .map(|&p| (f32::from(p) / 255.0 - self.mean) / self.std),
        );
    }
}

/// Where the network is cut and how the views are fused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec {
    /// Names of the head's input and output tensors.
    pub head_input: String,
    pub head_output: String,
    /// One view's feature, `[1, C, H, W]`.
    pub feature_shape: Vec<usize>,
    /// The tail's input stacks the present views' features along axis 0: `[views_present, C, H, W]`.
    pub tail_input: String,
    pub tail_output: String,
    /// How the tail fuses the present views (after a shared per-view recover layer): `max`
    /// (element-wise), `mean`, or `learned` (attention weights over the views present).
    pub fusion: String,
}

impl SplitSpec {
    pub fn feature_elements(&self) -> usize {
        self.feature_shape.iter().product()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Files {
    pub head: FileRef,
    pub tail: FileRef,
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
        if self.input.pixel_format != "gray8" {
            return Err(format!(
                "input.pixel_format {:?} is not supported (gray8)",
                self.input.pixel_format
            ));
        }
        if self.input.height == 0 || self.input.width == 0 || self.input.std == 0.0 {
            return Err("input height, width and std must be non-zero".into());
        }
        if self.cameras.views == 0 {
            return Err("cameras.views must be at least 1".into());
        }
        if self.split.feature_shape.len() != 4 || self.split.feature_shape[0] != 1 {
            return Err(format!(
                "split.feature_shape {:?} must be [1, C, H, W]",
                self.split.feature_shape
            ));
        }
        // The tail fuses the views itself; this records how (and refuses what no tail does).
        if !["max", "mean", "learned"].contains(&self.split.fusion.as_str()) {
            return Err(format!(
                "split.fusion {:?} is not supported (max, mean or learned)",
                self.split.fusion
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
        Ok(())
    }
}

/// The link budget of a split feature of `feature_shape` sent with `codec` by `views` cameras at
/// `fps`: exactly the bytes each sensor's stream carries per frame.
pub fn link_budget_for(
    feature_shape: &[usize],
    codec: CodecSpec,
    views: u32,
    fps: f64,
    raw_frame_bytes: usize,
) -> LinkBudget {
    let elements: usize = feature_shape.iter().product();
    let frame_bytes = crate::wire::feature_frame_wire_bytes(feature_shape, codec);
    let pairs = codec.parameter_count(feature_shape);
    splitnets_cost_model::link_budget(&splitnets_cost_model::LinkBudgetInput {
        feature_elements: elements,
        bits_per_element: codec.bits_per_element(),
        quantization_parameter_pairs: pairs,
        message_overhead_bytes: frame_bytes - codec.payload_bytes(elements) - 8 * pairs,
        views,
        target_fps: fps,
        raw_frame_bytes,
    })
}

impl Manifest {
    /// The same split with another codec (link budget recomputed).
    pub fn with_codec(mut self, codec: CodecSpec) -> Self {
        self.codec = codec;
        self.link_budget = link_budget_for(
            &self.split.feature_shape,
            codec,
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
            &self.split.feature_shape,
            self.codec,
            views,
            self.link_budget.target_fps,
            self.input.raw_frame_bytes(),
        );
        self
    }
}

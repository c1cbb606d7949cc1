//! Frame sources: the data-set replay through the bundle's simulated camera, the bundle's rendered
//! scene, or a folder of images (PNG, JPEG, PGM; `splitnets_camera::images`).

use std::path::Path;

use splitnets_camera::dataset::{self, ImageSet, Split};
use splitnets_camera::images;
use splitnets_camera::rig::{CameraRig, replay_frame_into};
use splitnets_proto::bundle::InputSpec;

#[derive(Debug)]
pub enum FrameSource {
    /// Fashion-MNIST test split seen by camera `view` of `rig`.
    Replay {
        set: ImageSet,
        rig: CameraRig,
        view: u32,
    },
    /// Pre-recorded frames (already in the bundle's format), looped.
    Folder { frames: Vec<Vec<u8>> },
    /// The bundle's rendered scene (test split), seen by camera `view`.
    Shapes {
        cfg: splitnets_camera::shapes::ShapeSetConfig,
        view: usize,
    },
}

impl FrameSource {
    pub fn replay(data_dir: &Path, rig: CameraRig, view: u32) -> anyhow::Result<Self> {
        let set = dataset::load(data_dir, Split::Test)?;
        Ok(Self::Replay { set, rig, view })
    }

    /// Loads every `.png`, `.jpg`, `.jpeg` and `.pgm` image of `dir`, sorted by name, each
    /// fitted to the bundle's frame (size, resize policy, gray8 or rgb8).
    pub fn folder(dir: &Path, input: &InputSpec) -> anyhow::Result<Self> {
        let frames = images::load_folder(dir, &images::FrameFormat::of(input))?;
        Ok(Self::Folder { frames })
    }

    /// Frames the source has before it repeats (`None`: endless or too many to matter).
    pub fn distinct_frames(&self) -> Option<u64> {
        match self {
            Self::Folder { frames } => Some(frames.len() as u64),
            Self::Replay { .. } | Self::Shapes { .. } => None,
        }
    }

    /// The bundle's rendered scene, seen by camera `view`.
    pub fn shapes(scene: &splitnets_proto::bundle::SceneSpec, view: u32) -> anyhow::Result<Self> {
        let cfg = splitnets_camera::shapes::config_of(scene)
            .map_err(|e| anyhow::anyhow!("the bundle's scene: {e}"))?;
        Ok(Self::Shapes {
            cfg,
            view: view as usize,
        })
    }

    /// Pixels of frame `n`, written into `out` (its allocation is reused).
    pub fn frame_into(&self, n: u64, out: &mut Vec<u8>) -> anyhow::Result<()> {
        match self {
            Self::Replay { set, rig, view } => replay_frame_into(rig, set, *view, n, out),
            Self::Folder { frames } => {
                out.clear();
                out.extend_from_slice(&frames[(n % frames.len() as u64) as usize]);
            }
            Self::Shapes { cfg, view } => {
                let items = cfg.test.max(1) as u64;
                splitnets_camera::shapes::render_view(
                    cfg,
                    splitnets_camera::shapes::ShapeSplit::Test,
                    (n % items) as usize,
                    *view,
                    out,
                )?;
            }
        }
        Ok(())
    }

    /// Ground-truth label of frame `n`, where the source knows it.
    pub fn label(&self, n: u64) -> Option<u8> {
        match self {
            Self::Replay { set, .. } => Some(set.labels[(n % set.len() as u64) as usize]),
            Self::Folder { .. } => None,
            Self::Shapes { cfg, .. } => Some(splitnets_camera::shapes::label(
                (n % cfg.test.max(1) as u64) as usize,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_frames_follow_the_bundle_input() {
        let dir = tempfile::tempdir().unwrap();
        // A 4x2 PGM; the bundle wants 2x2 RGB frames.
        let mut pgm = b"P5\n4 2\n255\n".to_vec();
        pgm.extend([100; 8]);
        std::fs::write(dir.path().join("a.pgm"), pgm).unwrap();
        let input = InputSpec {
            height: 2,
            width: 2,
            pixel_format: "rgb8".into(),
            ..InputSpec::default()
        };
        let src = FrameSource::folder(dir.path(), &input).unwrap();
        assert_eq!(src.distinct_frames(), Some(1));
        let mut px = Vec::new();
        src.frame_into(5, &mut px).unwrap();
        assert_eq!(px, [100; 12]);
        assert_eq!(px.len(), input.raw_frame_bytes());
        let e = FrameSource::folder(&dir.path().join("none"), &input).unwrap_err();
        assert!(e.to_string().contains("none"), "{e}");
    }
}

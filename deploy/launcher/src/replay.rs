//! What the sensors replay for a bundle, for the tools that need the same frames or their ground
//! truth (the demo's reference run, the viewer's accuracy).

use splitnets_camera::dataset::{self, Split};
use splitnets_camera::rig::{CameraRig, replay_frame};
use splitnets_proto::bundle::Bundle;

/// What the sensors replay for a bundle: Fashion-MNIST's test split through the bundle's camera
/// rig, or the bundle's rendered scene. The demo's reference run and ground truth use the same.
pub enum Replay {
    Fashion(dataset::ImageSet),
    Shapes(splitnets_camera::shapes::ShapeSetConfig),
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fashion(set) => write!(f, "Replay::Fashion({} test images)", set.len()),
            Self::Shapes(cfg) => write!(f, "Replay::Shapes({cfg:?})"),
        }
    }
}

impl Replay {
    pub fn for_bundle(bundle: &Bundle, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        Ok(match &bundle.manifest.scene {
            Some(scene) => Self::Shapes(splitnets_camera::shapes::config_of(scene)?),
            None => Self::Fashion(dataset::load(data_dir, Split::Test)?),
        })
    }

    pub fn label(&self, seq: u64) -> usize {
        match self {
            Self::Fashion(set) => set.labels[(seq % set.len() as u64) as usize] as usize,
            Self::Shapes(cfg) => {
                splitnets_camera::shapes::label((seq % cfg.test.max(1) as u64) as usize) as usize
            }
        }
    }

    pub fn frame(&self, rig: &CameraRig, view: u32, seq: u64) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Self::Fashion(set) => replay_frame(rig, set, view, seq),
            Self::Shapes(cfg) => {
                let mut out = Vec::new();
                splitnets_camera::shapes::render_view(
                    cfg,
                    splitnets_camera::shapes::ShapeSplit::Test,
                    (seq % cfg.test.max(1) as u64) as usize,
                    view as usize,
                    &mut out,
                )?;
                out
            }
        })
    }
}

//! Frame sources: the data-set replay through the bundle's simulated camera, or a folder of images.

use std::path::Path;

use splitnets_camera::dataset::{self, ImageSet, Split};
use splitnets_camera::rig::{CameraRig, replay_frame_into};

#[derive(Debug)]
pub enum FrameSource {
    /// Fashion-MNIST test split seen by camera `view` of `rig`.
    Replay {
        set: ImageSet,
        rig: CameraRig,
        view: u32,
    },
    /// Pre-recorded frames, looped.
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

    /// Loads every `.pgm` (binary P5, 8-bit) in `dir`, sorted by name; each must be `h × w`.
    pub fn folder(dir: &Path, h: usize, w: usize) -> anyhow::Result<Self> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("frame folder {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("pgm")))
            .collect();
        paths.sort();
        if paths.is_empty() {
            anyhow::bail!("frame folder {} has no .pgm images", dir.display());
        }
        let frames = paths
            .iter()
            .map(|p| {
                let bytes =
                    std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                let (pw, ph, px) =
                    parse_pgm(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                if (ph, pw) != (h, w) {
                    anyhow::bail!(
                        "{}: image is {pw}x{ph}, the bundle expects {w}x{h}",
                        p.display()
                    );
                }
                Ok(px)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::Folder { frames })
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

/// Parses a binary PGM (P5) with maxval ≤ 255: returns (width, height, pixels).
pub fn parse_pgm(b: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'#') {
            if b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err("truncated PGM header".into());
        }
        fields.push(String::from_utf8_lossy(&b[start..i]).to_string());
    }
    if fields[0] != "P5" {
        return Err(format!("not a binary PGM (magic {:?}, want P5)", fields[0]));
    }
    let num = |s: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("bad PGM header field {s:?}"))
    };
    let (w, h, max) = (num(&fields[1])?, num(&fields[2])?, num(&fields[3])?);
    if max == 0 || max > 255 {
        return Err(format!("PGM maxval {max} is not 1..=255"));
    }
    let data = &b[(i + 1).min(b.len())..];
    if data.len() < w * h {
        return Err(format!(
            "PGM has {} pixel bytes, {w}x{h} needs {}",
            data.len(),
            w * h
        ));
    }
    Ok((w, h, data[..w * h].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pgm_with_a_comment() {
        let mut b = b"P5\n# made by hand\n3 2\n255\n".to_vec();
        b.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(parse_pgm(&b).unwrap(), (3, 2, vec![1, 2, 3, 4, 5, 6]));
        assert!(
            parse_pgm(b"P6\n1 1\n255\n\0\0\0")
                .unwrap_err()
                .contains("P5")
        );
        assert!(
            parse_pgm(b"P5\n4 4\n255\n\0")
                .unwrap_err()
                .contains("needs 16")
        );
    }
}

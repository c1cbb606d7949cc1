//! A bundle set: variants of one network (cut at different points, or at different bit widths)
//! that the daemons preload so the aggregator can switch the fleet between them live.
//!
//! A set is a directory with `variants.toml` naming bundle directories (relative to it), best
//! first — the order is the preference the switching controller follows when the links allow:
//!
//! ```toml
//! variants = ["front-09", "front-05", "front-01"]
//! ```
//!
//! Every variant must take the same input from the same cameras and answer with the same
//! classes; shapes, codecs and tails may differ. The set's digest pins every variant (it hashes
//! their digests in order), so sensors and aggregator agree on the whole set in the Hello.
//! A plain bundle directory loads as a set of one that is not switchable: its frames carry no
//! variant field and its digest is the bundle's own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use splitnets_cost_model::LinkBudget;

use crate::bundle::{Bundle, BundleError, sha256_hex};

pub const SET_FILE: &str = "variants.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetManifest {
    /// Bundle directories relative to the set's directory, best first.
    pub variants: Vec<String>,
}

/// Verified variants in memory.
#[derive(Debug, Clone)]
pub struct BundleSet {
    pub dir: PathBuf,
    pub variants: Vec<Bundle>,
    /// A set: sha256 over its variants' digests in order. A single bundle: the bundle's digest.
    pub digest: String,
    /// Whether this is a set (`variants.toml`): its frames name their variant.
    pub switchable: bool,
}

impl From<Bundle> for BundleSet {
    fn from(b: Bundle) -> Self {
        Self {
            dir: b.dir.clone(),
            digest: b.digest.clone(),
            variants: vec![b],
            switchable: false,
        }
    }
}

impl BundleSet {
    /// Loads `dir`: a set when it holds `variants.toml`, otherwise a single bundle.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let set_file = dir.join(SET_FILE);
        if !set_file.exists() {
            return Bundle::load(dir).map(Self::from);
        }
        let d = dir.display().to_string();
        let invalid = |reason: String| BundleError::Invalid {
            dir: d.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&set_file).map_err(|cause| BundleError::Io {
            dir: d.clone(),
            file: SET_FILE.into(),
            cause,
        })?;
        let set: SetManifest = toml::from_str(&text).map_err(|e| BundleError::Manifest {
            dir: d.clone(),
            file: SET_FILE.into(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        if set.variants.is_empty() {
            return Err(invalid(format!("{SET_FILE} names no variants")));
        }
        if set.variants.len() > 64 {
            return Err(invalid(format!(
                "{SET_FILE} names {} variants; at most 64",
                set.variants.len()
            )));
        }
        let variants = set
            .variants
            .iter()
            .map(|v| Bundle::load(&dir.join(v)))
            .collect::<Result<Vec<_>, _>>()?;
        let first = &variants[0].manifest;
        for (name, b) in set.variants.iter().zip(&variants).skip(1) {
            let m = &b.manifest;
            let differs = if m.input != first.input {
                Some("input specification")
            } else if m.cameras.views != first.cameras.views {
                Some("camera count")
            } else if m.classes != first.classes {
                Some("classes")
            } else {
                None
            };
            if let Some(what) = differs {
                return Err(invalid(format!(
                    "variant {name:?} has another {what} than {:?}: the variants of a set must see the same cameras and answer the same classes",
                    set.variants[0]
                )));
            }
        }
        let mut chain = String::from("splitnets bundle set v1\n");
        for b in &variants {
            chain.push_str(&b.digest);
            chain.push('\n');
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            digest: sha256_hex(chain.as_bytes()),
            variants,
            switchable: true,
        })
    }

    /// The variant the fleet starts with (the set's first, its best).
    pub fn primary(&self) -> &Bundle {
        &self.variants[0]
    }

    /// Bytes one view's frame of `variant` occupies on the stream (the variant field included
    /// in a set): exact.
    pub fn frame_wire_bytes(&self, variant: usize) -> usize {
        self.variants[variant]
            .manifest
            .frame_layout()
            .wire_bytes(self.switchable)
    }

    /// The link budget of `variant` as it runs in this set (a set's frames carry the variant
    /// field, so its budgets are 5 bytes per frame above the bundle's own).
    pub fn link_budget(&self, variant: usize) -> LinkBudget {
        let m = &self.variants[variant].manifest;
        crate::bundle::link_budget_with_framing(
            &m.frame_layout(),
            self.frame_wire_bytes(variant),
            m.cameras.views,
            m.link_budget.target_fps,
            m.input.raw_frame_bytes(),
        )
    }

    /// Writes `variants.toml` into `dir` naming `variants` (paths relative to `dir`, best first).
    pub fn write_set_file(dir: &Path, variants: &[String]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let text = toml::to_string_pretty(&SetManifest {
            variants: variants.to_vec(),
        })
        .map_err(std::io::Error::other)?;
        std::fs::write(
            dir.join(SET_FILE),
            format!(
                "# A bundle set for live split switching: variants best first (see splitnets_proto::bundle_set).\n{text}"
            ),
        )
    }
}

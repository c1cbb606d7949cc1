//! Fashion-MNIST (Xiao et al. 2017) in IDX format, as Debian's `dataset-fashion-mnist` installs it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's package puts the files.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The ten classes, in label order.
pub const CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(
        "cannot read {path}: {cause} (install Debian's dataset-fashion-mnist: scripts/setup.sh)"
    )]
    Io { path: String, cause: std::io::Error },
    #[error("{path} is not a valid IDX file: {reason}")]
    Format { path: String, reason: String },
}

/// Images (row-major `u8`, `rows × cols` each) and labels of one split.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub rows: usize,
    pub cols: usize,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.pixels();
        &self.images[i * n..(i + 1) * n]
    }
}

fn read_gz(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let io = |cause| DatasetError::Io {
        path: path.display().to_string(),
        cause,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .map_err(io)?;
    Ok(out)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Loads one split from `dir` (see [`DEFAULT_DIR`]).
pub fn load(dir: &Path, split: Split) -> Result<ImageSet, DatasetError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let img_path: PathBuf = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let lbl_path: PathBuf = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let img = read_gz(&img_path)?;
    let lbl = read_gz(&lbl_path)?;
    let bad = |p: &Path, reason: String| DatasetError::Format {
        path: p.display().to_string(),
        reason,
    };
    if img.len() < 16 || be_u32(&img, 0) != 0x0803 {
        return Err(bad(&img_path, "missing image magic 0x00000803".into()));
    }
    if lbl.len() < 8 || be_u32(&lbl, 0) != 0x0801 {
        return Err(bad(&lbl_path, "missing label magic 0x00000801".into()));
    }
    let (n, rows, cols) = (
        be_u32(&img, 4) as usize,
        be_u32(&img, 8) as usize,
        be_u32(&img, 12) as usize,
    );
    if img.len() != 16 + n * rows * cols {
        return Err(bad(
            &img_path,
            format!("{} bytes for {n} images of {rows}x{cols}", img.len()),
        ));
    }
    let nl = be_u32(&lbl, 4) as usize;
    if nl != n || lbl.len() != 8 + n {
        return Err(bad(&lbl_path, format!("{nl} labels for {n} images")));
    }
    Ok(ImageSet {
        rows,
        cols,
        images: img[16..].to_vec(),
        labels: lbl[8..].to_vec(),
    })
}

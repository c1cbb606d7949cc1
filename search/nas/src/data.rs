//! The three data sets, as multi-view batches, produced off the training thread.
//!
//! - `fashion-mnist`: one clean 28×28 view.
//! - `fashion-mnist-4view`: the headset rig of `splitnets_camera::rig` (four cameras, each with
//!   its own occluder and noise); training captures use a salted rig seed and a new frame number
//!   every epoch, so noise and occluder jitter never repeat; test frames are exactly what the
//!   sensor daemons replay (`rig::replay_frame`, frame = index).
//! - `shapes`: `splitnets_camera::shapes`, rendered once and cached on disk.
//!
//! Validation is the last `val` items of Fashion-MNIST's training split (never trained on) and
//! the shape set's own validation split. Pixels become `(p / 255 - MEAN) / STD`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use serde::{Deserialize, Serialize};
use splitnets_camera::dataset::{self, ImageSet};
use splitnets_camera::rig::{CameraRig, capture_into};
use splitnets_camera::shapes::{self, ShapeSetConfig, ShapeSplit};

use crate::{NasError, Rng};

/// Input normalisation: `(pixel / 255 - MEAN) / STD`.
pub const MEAN: f32 = 0.5;
pub const STD: f32 = 0.5;

const TRAIN_SALT: u64 = 0x7EA1_7EA1;
const VAL_SALT: u64 = 0x7A11_DA7E;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    FashionMnist,
    FashionMnist4View,
    Shapes,
}

impl DataKind {
    pub fn name(self) -> &'static str {
        match self {
            DataKind::FashionMnist => "fashion-mnist",
            DataKind::FashionMnist4View => "fashion-mnist-4view",
            DataKind::Shapes => "shapes",
        }
    }
}

/// Where the data comes from and how much of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    pub kind: DataKind,
    pub fashion_mnist_dir: PathBuf,
    /// Cache directory of the rendered shapes.
    pub cache_dir: PathBuf,
    pub shapes: ShapeSetConfig,
    /// Validation items taken from the end of Fashion-MNIST's training split.
    pub fashion_val: usize,
    /// At most this many test items (all when `None`).
    pub test_limit: Option<usize>,
}

/// Frames of fixed items: `[n][views][side²]` bytes and labels.
#[derive(Debug, Clone)]
pub struct ViewSet {
    pub side: usize,
    pub views: usize,
    pub frames: Vec<u8>,
    pub labels: Vec<u8>,
}

impl ViewSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    fn item(&self, i: usize) -> &[u8] {
        let n = self.views * self.side * self.side;
        &self.frames[i * n..(i + 1) * n]
    }
    /// Items `range` as a normalised `[n, views, 1, side, side]` batch with every view present.
    pub fn batch(&self, range: std::ops::Range<usize>) -> Batch {
        let mut inputs = Vec::with_capacity(range.len() * self.views * self.side * self.side);
        let mut labels = Vec::with_capacity(range.len());
        for i in range.clone() {
            inputs.extend(self.item(i).iter().map(|&p| normalise(p)));
            labels.push(i64::from(self.labels[i]));
        }
        Batch {
            inputs,
            labels,
            view_mask: vec![1.0; range.len() * self.views],
            batch: range.len(),
        }
    }
}

fn normalise(p: u8) -> f32 {
    (f32::from(p) / 255.0 - MEAN) / STD
}

/// One batch: `[batch, views, 1, H, W]` inputs, labels and a `[batch, views]` mask.
#[derive(Debug, Clone)]
pub struct Batch {
    pub inputs: Vec<f32>,
    pub labels: Vec<i64>,
    pub view_mask: Vec<f32>,
    pub batch: usize,
}

/// What training draws from.
#[derive(Debug)]
pub enum TrainSource {
    /// Pre-rendered frames.
    Fixed(ViewSet),
    /// Clean images captured by the rig afresh every epoch.
    Rig {
        set: ImageSet,
        count: usize,
        rig: CameraRig,
        /// Every capture JPEG-encoded at this quality and decoded (the JPEG baseline).
        jpeg_quality: Option<u8>,
    },
}

impl TrainSource {
    pub fn len(&self) -> usize {
        match self {
            TrainSource::Fixed(v) => v.len(),
            TrainSource::Rig { count, .. } => *count,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn views(&self) -> usize {
        match self {
            TrainSource::Fixed(v) => v.views,
            TrainSource::Rig { rig, .. } => rig.views as usize,
        }
    }
    fn push_item(&self, idx: usize, epoch: u64, out: &mut Vec<f32>, tmp: &mut Vec<u8>) -> u8 {
        match self {
            TrainSource::Fixed(v) => {
                out.extend(v.item(idx).iter().map(|&p| normalise(p)));
                v.labels[idx]
            }
            TrainSource::Rig {
                set,
                count,
                rig,
                jpeg_quality,
            } => {
                let frame = epoch * *count as u64 + idx as u64;
                for view in 0..rig.views {
                    capture_into(rig, view, frame, set.image(idx), set.rows, set.cols, tmp);
                    if let Some(q) = *jpeg_quality {
                        // A frame that fails to round-trip stays raw: the size is validated
                        // when the data is made, so this does not happen.
                        if let Ok((back, _)) = jpeg_roundtrip(tmp, set.cols, set.rows, q) {
                            *tmp = back;
                        }
                    }
                    out.extend(tmp.iter().map(|&p| normalise(p)));
                }
                set.labels[idx]
            }
        }
    }
}

/// The loaded data: training source, validation and test frames, and the input geometry.
#[derive(Debug)]
pub struct Data {
    pub kind: DataKind,
    pub train: Arc<TrainSource>,
    pub val: ViewSet,
    pub test: ViewSet,
    pub side: usize,
    pub views: usize,
    pub classes: usize,
}

fn rig_frames(set: &ImageSet, range: std::ops::Range<usize>, rig: &CameraRig) -> ViewSet {
    let mut frames = Vec::with_capacity(range.len() * rig.views as usize * set.pixels());
    let mut labels = Vec::with_capacity(range.len());
    let mut tmp = Vec::new();
    for (k, i) in range.enumerate() {
        for v in 0..rig.views {
            capture_into(rig, v, k as u64, set.image(i), set.rows, set.cols, &mut tmp);
            frames.extend_from_slice(&tmp);
        }
        labels.push(set.labels[i]);
    }
    ViewSet {
        side: set.rows,
        views: rig.views as usize,
        frames,
        labels,
    }
}

fn clean_frames(set: &ImageSet, range: std::ops::Range<usize>) -> ViewSet {
    let px = set.pixels();
    ViewSet {
        side: set.rows,
        views: 1,
        frames: set.images[range.start * px..range.end * px].to_vec(),
        labels: set.labels[range].to_vec(),
    }
}

/// Loads (or renders) the data set.
pub fn load(cfg: &DataConfig) -> Result<Data, NasError> {
    let limit = |n: usize| cfg.test_limit.map_or(n, |l| l.min(n));
    match cfg.kind {
        DataKind::FashionMnist | DataKind::FashionMnist4View => {
            let train = dataset::load(&cfg.fashion_mnist_dir, dataset::Split::Train)?;
            let test = dataset::load(&cfg.fashion_mnist_dir, dataset::Split::Test)?;
            if train.len() <= cfg.fashion_val + 1 {
                return Err(NasError::Config(format!(
                    "{} validation items leave no training item",
                    cfg.fashion_val
                )));
            }
            let n_train = train.len() - cfg.fashion_val;
            let n_test = limit(test.len());
            let side = train.rows;
            if cfg.kind == DataKind::FashionMnist {
                let val = clean_frames(&train, n_train..train.len());
                let test = clean_frames(&test, 0..n_test);
                let fixed = clean_frames(&train, 0..n_train);
                Ok(Data {
                    kind: cfg.kind,
                    train: Arc::new(TrainSource::Fixed(fixed)),
                    val,
                    test,
                    side,
                    views: 1,
                    classes: 10,
                })
            } else {
                let rig = CameraRig::default();
                let val_rig = CameraRig {
                    seed: rig.seed ^ VAL_SALT,
                    ..rig
                };
                let val = rig_frames(&train, n_train..train.len(), &val_rig);
                let test = rig_frames(&test, 0..n_test, &rig);
                let views = rig.views as usize;
                Ok(Data {
                    kind: cfg.kind,
                    train: Arc::new(TrainSource::Rig {
                        set: train,
                        count: n_train,
                        rig: CameraRig {
                            seed: rig.seed ^ TRAIN_SALT,
                            ..rig
                        },
                        jpeg_quality: None,
                    }),
                    val,
                    test,
                    side,
                    views,
                    classes: 10,
                })
            }
        }
        DataKind::Shapes => {
            let get = |split| -> Result<ViewSet, NasError> {
                let s = shapes::load_or_generate(&cfg.shapes, split, &cfg.cache_dir)?;
                Ok(ViewSet {
                    side: s.size,
                    views: s.views,
                    frames: s.images,
                    labels: s.labels,
                })
            };
            let train = get(ShapeSplit::Train)?;
            let val = get(ShapeSplit::Val)?;
            let mut test = get(ShapeSplit::Test)?;
            let n_test = limit(test.len());
            test.frames
                .truncate(n_test * test.views * test.side * test.side);
            test.labels.truncate(n_test);
            Ok(Data {
                kind: cfg.kind,
                side: train.side,
                views: train.views,
                classes: shapes::CLASSES.len(),
                train: Arc::new(TrainSource::Fixed(train)),
                val,
                test,
            })
        }
    }
}

/// A grey frame JPEG-encoded at `quality` and decoded again: the pixels the aggregator gets,
/// and the compressed size.
pub fn jpeg_roundtrip(
    frame: &[u8],
    width: usize,
    height: usize,
    quality: u8,
) -> Result<(Vec<u8>, usize), String> {
    let (w, h) = (
        u16::try_from(width).map_err(|_| format!("frame width {width} too large for JPEG"))?,
        u16::try_from(height).map_err(|_| format!("frame height {height} too large for JPEG"))?,
    );
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(frame, w, h, jpeg_encoder::ColorType::Luma)
        .map_err(|e| format!("JPEG encode: {e}"))?;
    let back = image::load_from_memory_with_format(&out, image::ImageFormat::Jpeg)
        .map_err(|e| format!("JPEG decode: {e}"))?
        .into_luma8()
        .into_raw();
    if back.len() != frame.len() {
        return Err(format!(
            "JPEG decode gave {} pixels for {}",
            back.len(),
            frame.len()
        ));
    }
    Ok((back, out.len()))
}

/// What JPEG does to the test split's frames.
#[derive(Debug, Clone, Copy)]
pub struct JpegStats {
    pub mean_bytes: u64,
    /// Median encode time of one frame on this machine.
    pub median_encode_seconds: f64,
}

fn jpeg_set(set: &ViewSet, quality: u8, sizes: Option<&mut Vec<usize>>) -> Result<ViewSet, String> {
    let px = set.side * set.side;
    let mut frames = Vec::with_capacity(set.frames.len());
    let mut sizes = sizes;
    for f in set.frames.chunks_exact(px) {
        let (back, n) = jpeg_roundtrip(f, set.side, set.side, quality)?;
        frames.extend_from_slice(&back);
        if let Some(s) = sizes.as_deref_mut() {
            s.push(n);
        }
    }
    Ok(ViewSet {
        frames,
        ..set.clone()
    })
}

/// `data` as the aggregator sees it when every frame crosses JPEG-encoded at `quality`:
/// training, validation and test frames all round-tripped; the mean size and encode time are
/// measured on the test split.
pub fn jpeg_degraded(data: &Data, quality: u8) -> Result<(Data, JpegStats), String> {
    let mut sizes = Vec::new();
    let test = jpeg_set(&data.test, quality, Some(&mut sizes))?;
    let val = jpeg_set(&data.val, quality, None)?;
    let train = match &*data.train {
        TrainSource::Fixed(v) => TrainSource::Fixed(jpeg_set(v, quality, None)?),
        TrainSource::Rig {
            set, count, rig, ..
        } => TrainSource::Rig {
            set: set.clone(),
            count: *count,
            rig: rig.clone(),
            jpeg_quality: Some(quality),
        },
    };
    let px = data.side * data.side;
    let mut times: Vec<f64> = data
        .test
        .frames
        .chunks_exact(px)
        .take(500)
        .map(|f| {
            let t = std::time::Instant::now();
            let mut out = Vec::new();
            let _ = jpeg_encoder::Encoder::new(&mut out, quality).encode(
                f,
                data.side as u16,
                data.side as u16,
                jpeg_encoder::ColorType::Luma,
            );
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let stats = JpegStats {
        mean_bytes: (sizes.iter().sum::<usize>() / sizes.len().max(1)) as u64,
        median_encode_seconds: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
    };
    Ok((
        Data {
            kind: data.kind,
            train: Arc::new(train),
            val,
            test,
            side: data.side,
            views: data.views,
            classes: data.classes,
        },
        stats,
    ))
}

/// Random training batches from a producer thread (the trainer never waits on data generation
/// unless the producer falls behind).
#[derive(Debug)]
pub struct BatchStream {
    rx: Receiver<Batch>,
}

impl BatchStream {
    /// Starts a producer of `batch`-item batches; each view is kept with `keep_prob` (at least
    /// one per item). The thread ends when the stream is dropped.
    pub fn spawn(source: Arc<TrainSource>, batch: usize, keep_prob: f64, seed: u64) -> Self {
        let (tx, rx) = sync_channel::<Batch>(4);
        std::thread::Builder::new()
            .name("nas-batches".into())
            .spawn(move || produce(&source, batch, keep_prob, seed, &tx))
            .ok();
        Self { rx }
    }

    /// The next batch (`None` if the producer died).
    pub fn next(&self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

fn produce(src: &TrainSource, batch: usize, keep_prob: f64, seed: u64, tx: &SyncSender<Batch>) {
    let mut rng = Rng::new(seed);
    let n = src.len();
    let views = src.views();
    let mut order: Vec<usize> = (0..n).collect();
    let mut epoch = 0u64;
    let mut cursor = n;
    let mut tmp = Vec::new();
    loop {
        let mut inputs = Vec::new();
        let mut labels = Vec::with_capacity(batch);
        let mut view_mask = Vec::with_capacity(batch * views);
        for _ in 0..batch {
            if cursor >= n {
                for i in (1..n).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    order.swap(i, j);
                }
                cursor = 0;
                epoch += 1;
            }
            let idx = order[cursor];
            cursor += 1;
            labels.push(i64::from(src.push_item(idx, epoch, &mut inputs, &mut tmp)));
            let mut m: Vec<f32> = (0..views)
                .map(|_| f32::from(u8::from(rng.next_f64() < keep_prob)))
                .collect();
            if m.iter().all(|&x| x == 0.0) {
                m[rng.below(views as u64) as usize] = 1.0;
            }
            view_mask.extend(m);
        }
        let b = Batch {
            inputs,
            labels,
            view_mask,
            batch,
        };
        if tx.send(b).is_err() {
            return;
        }
    }
}

//! What the simulated cameras of a headset see.
//!
//! - [`rig`]: the camera rig simulation: each view sees the same item through its own occluder
//!   and its own sensor noise, deterministic from (rig seed, view, frame).
//! - [`dataset`]: Fashion-MNIST in IDX format, the images the rig replays.
//! - [`shapes`]: a rendered multi-view 3-D shape data set (12 classes, software z-buffer), deterministic from a seed.
//! - [`images`]: real PNG/JPEG/PGM images of any size as frames of a bundle's input (resized,
//!   centre-cropped, gray or RGB).
//!
//! Training (`search`), the sensor daemons and the reference pipeline all call these functions,
//! so a network meets at run time exactly the frames it was trained on.

pub mod dataset;
pub mod images;
pub mod rig;
pub mod shapes;

//! The cost model of split inference on a headset: pure arithmetic, no I/O.
//!
//! This first slice holds the link budget a bundle manifest records: how many bytes one view's
//! feature costs per frame on the sensor → aggregator link and what bandwidth that needs at a
//! target frame rate. Latency, memory and energy per split come with the planner.

pub mod link;

pub use link::{LinkBudget, LinkBudgetInput, link_budget};

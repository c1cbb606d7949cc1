//! The cost model of split inference on a headset: pure arithmetic, no I/O.
//!
//! - [`graph`]: shapes, multiply-accumulates, parameter and activation bytes per node of a CNN.
//! - [`profile`]: hardware profiles (sensor, link, aggregator), with presets.
//! - [`split`]: a cut's sensor/link/aggregator latency, sensor peak memory, link bytes, sustained
//!   frame rate and energy.
//! - [`link`]: the link budget a bundle manifest records.
//! - [`sim`]: a discrete-event what-if simulation of N sensors, their links and the aggregator.

pub mod graph;
pub mod link;
pub mod profile;
pub mod sim;
pub mod split;

pub use link::{
    LinkBudget, LinkBudgetInput, feature_message_bytes, feature_message_bytes_in_set, link_budget,
};

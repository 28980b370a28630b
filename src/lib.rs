//! hybrid-tui's engine: settings, model preparation (bake), shard A on
//! OpenVINO, and the reference forward pass. The binaries are thin front ends.

pub mod bake;
pub mod config;
pub mod executive;
pub mod firstrun;
pub mod model;
pub mod paths;
pub mod reference;
pub mod shard_b;

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::print_stdout,
        clippy::print_stderr
    )
)]
//! hybrid-tui's engine: settings, model preparation (bake), shard A on
//! OpenVINO, and the reference forward pass. The binaries are thin front ends.

pub mod affinity;
pub mod bake;
pub mod bench;
pub mod catalog;
pub mod config;
pub mod embed;
pub mod engine;
pub mod executive;
pub mod generate;
pub mod hub;
pub mod hw;
pub mod logging;
pub mod model;
pub mod paths;
pub mod pipeline;
pub mod reference;
pub mod ring;
pub mod serve;
pub mod shard_b;
pub mod supervisor;
pub mod tui;

//! The workbench's state: what events change (`app` with the chat,
//! `check`, `telemetry`, the bench screen's `bench`, the API server's pane
//! `server`); the views read it and never write it.

pub mod app;
pub mod bench;
pub mod check;
pub mod server;
pub mod telemetry;

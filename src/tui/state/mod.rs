//! The workbench's state: what events change (`app`, the bench
//! screen's `bench`, the API server's pane `server`); the views read it and never write it.

pub mod app;
pub mod bench;
pub mod server;

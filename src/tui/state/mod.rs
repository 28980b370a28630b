//! The workbench's state: what events change (`app`, and the bench
//! screen's `bench`); the views read it and never write it.

pub mod app;
pub mod bench;

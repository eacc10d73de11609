//! # chop-controller
//!
//! Reconciles chop.dev resources: reads a custom resource, asks the `ca` core to
//! compute, writes the outcome to status by server-side apply. The binary
//! (`src/main.rs`) is a thin shell over this library.

pub mod error;
pub mod leader;

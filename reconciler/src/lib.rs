//! kfd: turns YAML files in a config directory into running chains of eBPF
//! kernel functions (KFs), and keeps them converged.
//!
//! The data flow is one call per arrow:
//! `config::load` → `state::observe` → `plan::plan` → `apply::execute` → `status`.
#![deny(missing_docs)]

pub mod apply;
pub mod btf;
pub mod builtin;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod entries;
pub mod kernel;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod state;
pub mod status;

//! The SALT reproductions: `salt/kd-phase` (P2).

pub mod kd_phase;

use report::DynExperiment;

pub use kd_phase::{KdPhase, KdPhaseConfig, RunRow};

/// The reproductions of this crate, for the `strata` runner.
pub fn all() -> Vec<Box<dyn DynExperiment>> {
    vec![Box::new(KdPhase)]
}

//! The growth reproductions, one file each: `growth/midas` (P4).

pub mod midas;

use report::DynExperiment;

pub use midas::{Midas, MidasConfig, RunRow};

/// The reproductions of this crate, for the `strata` runner.
pub fn all() -> Vec<Box<dyn DynExperiment>> {
    vec![Box::new(Midas)]
}

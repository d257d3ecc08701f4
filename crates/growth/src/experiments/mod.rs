//! The growth reproductions, one file each: `growth/midas` (P4), `growth/lag` (P5), `growth/raptr` (P6).

pub mod lag;
pub mod midas;
pub mod raptr;

use report::DynExperiment;

pub use lag::{Lag, LagExperimentConfig};
pub use midas::{Midas, MidasConfig, RunRow};
pub use raptr::{Raptr, RaptrExperimentConfig, RaptrRow};

/// The reproductions of this crate, for the `strata` runner.
pub fn all() -> Vec<Box<dyn DynExperiment>> {
    vec![Box::new(Midas), Box::new(Lag), Box::new(Raptr)]
}

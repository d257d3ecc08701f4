//! The MWP reproductions: `mwp/svamp-sym` (P7).

pub mod svamp_sym;

use report::DynExperiment;

pub use svamp_sym::{BackendConfig, SvampSym, SvampSymConfig};

/// The reproductions of this crate, for the `strata` runner.
pub fn all() -> Vec<Box<dyn DynExperiment>> {
    vec![Box::new(SvampSym)]
}

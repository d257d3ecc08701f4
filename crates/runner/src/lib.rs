//! The list of every Strata reproduction, gathered from each domain crate's `experiments::all()`, for the
//! `strata` binary and for tests that go through every experiment (config parsers under mutation, ...).

pub mod foundations;

use report::DynExperiment;

/// Every reproduction of every crate.
pub fn experiments() -> Vec<Box<dyn DynExperiment>> {
    [
        foundations::all(),
        icl::experiments::all(),
        saliency::experiments::all(),
        train::experiments::all(),
        growth::experiments::all(),
        salt::experiments::all(),
        mwp::experiments::all(),
        grafting::experiments::all(),
        datamodels::experiments::all(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

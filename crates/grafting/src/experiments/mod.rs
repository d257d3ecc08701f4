//! The grafting reproductions.

pub mod localize;
pub mod multitask;

/// Every reproduction of this crate, for the runner.
pub fn all() -> Vec<Box<dyn report::DynExperiment>> {
    vec![Box::new(localize::Localize), Box::new(multitask::Multitask)]
}

//! Reproductions of P10, one file each: `datamodels/exact` (the identities by enumeration), `datamodels/estimate`
//! (residual from correlated pairs against regression as N grows) and `datamodels/groups` (linear group-effect
//! predictions as groups grow). [`synthetic`] holds the functions with known spectra they are checked on.

pub mod estimate;
pub mod exact;
pub mod groups;
pub mod synthetic;

use rayon::prelude::*;
use report::{DynExperiment, RunCtx};

pub use estimate::{Estimate, EstimateConfig};
pub use exact::{Exact, ExactConfig, IdentityCheck, check_identities};
pub use groups::{Groups, GroupsConfig};

use crate::Result;
use crate::runs::{BinaryTask, LOGISTIC_BLOCK, LogisticConfig, train_logistic_block};

/// The reproductions of this crate, for the `strata` runner.
pub fn all() -> Vec<Box<dyn DynExperiment>> {
    vec![Box::new(Exact), Box::new(Estimate), Box::new(Groups)]
}

/// The subset with bit `i` of `x` set for every point `i` in it.
pub(crate) fn mask_of(x: usize, n: usize) -> Vec<bool> {
    (0..n).map(|i| (x >> i) & 1 == 1).collect()
}

/// The table of test margins of a logistic regression trained on every subset of the `n`-point pool, one table
/// per test point.
pub fn trained_tables(task: &BinaryTask, cfg: &LogisticConfig, ctx: &RunCtx) -> Result<Vec<Vec<f64>>> {
    let n = task.n_train();
    let len = 1usize << n;
    let bar = ctx.progress(len as u64, "train every subset");
    let blocks: Vec<usize> = (0..len).step_by(LOGISTIC_BLOCK).collect();
    let rows: Vec<Vec<f64>> = blocks
        .into_par_iter()
        .map(|first| {
            let masks: Vec<Vec<bool>> = (first..len.min(first + LOGISTIC_BLOCK)).map(|x| mask_of(x, n)).collect();
            let r = train_logistic_block(task, &masks, cfg);
            bar.inc(masks.len() as u64);
            r
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    bar.finish_and_clear();
    Ok((0..task.test_y.len()).map(|t| rows.iter().map(|r| r[t]).collect()).collect())
}

/// The binary MNIST task of a config: `pool` training images and `tests` test images of two digits.
pub(crate) fn mnist_task(ctx: &RunCtx, digits: (u8, u8), pool: usize, tests: usize) -> Result<BinaryTask> {
    let dir = data::fetch::obtain("mnist", ctx.data_dir.as_deref())?;
    let mnist = data::mnist::Mnist::load(&dir)?;
    BinaryTask::mnist(&mnist, digits.0, digits.1, pool, tests)
}

//! `growth/lag` (P5): a small model is trained for the first stage, then grown to the full depth by every operator
//! of a pool (independent forks). Every candidate is trained to the end (the ground truth); the validation loss at
//! each lag k is ranked against the final loss (Spearman and Kendall, pooled over seeds, bootstrap intervals).
//! LAG picks by the loss at `pick_lag`; adaptive stacking (the pick, charged every candidate's lag steps) and
//! fixed top-copy stacking are compared with a baseline trained at full depth, by FLOPs to reach its loss.

use report::figure::{Chart, Series};
use report::stats::{Interval, bootstrap, first_reach, kendall_tau_b, spearman};
use report::{Check, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};
use train::Trainer;
use train::lm::{Corpus, LmConfig, LmObjective, TokenizedCorpus, TokenizerChoice};
use transformer::{DecoderConfig, flops};

use crate::lag::{LagConfig, grow_candidates};
use crate::operators::{MomentPolicy, Operator};
use crate::schedule::StageLengths;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagExperimentConfig {
    /// The full-depth run (its steps are the whole run, both stages); seeds replaced per seed replicate.
    pub lm: LmConfig,
    /// Depth of the first stage; the candidates grow it to `lm.model.n_layers` in blocks of `block`.
    pub small_layers: usize,
    pub block: usize,
    /// Where the growth happens (two stages).
    pub lengths: StageLengths,
    pub operators: Vec<Operator>,
    pub moments: MomentPolicy,
    /// Lags (steps after growing) at which every candidate's validation loss is ranked against its final loss.
    pub lags: Vec<u64>,
    /// The lag LAG picks by.
    pub pick_lag: u64,
    pub seeds: usize,
    /// "Weak" correlation at k = 0: Spearman's rho at most this.
    pub weak_correlation: f64,
    /// LAG's pick is within this gap (nats) of the best candidate's final loss.
    pub pick_gap: f64,
    pub bootstrap_resamples: usize,
}

fn lm(model: DecoderConfig, corpus: Corpus, steps: u64, eval_batches: usize) -> LmConfig {
    let mut lm = LmConfig::small_pretraining(model, corpus, steps, eval_batches);
    // Finer evaluations: the candidates' curves are read off at the baseline's loss.
    lm.train.eval_interval = (steps / 15).max(1);
    lm
}

impl Presets for LagExperimentConfig {
    fn smoke() -> Self {
        let model = DecoderConfig {
            vocab_size: 0,
            context: 32,
            d_model: 32,
            n_layers: 4,
            n_heads: 2,
            ..DecoderConfig::default()
        };
        LagExperimentConfig {
            lm: lm(model, Corpus::Synthetic { tokens: 20_000, vocab: 64, seed: 1 }, 30, 2),
            small_layers: 2,
            block: 2,
            lengths: StageLengths::Starts { starts: vec![10] },
            lags: vec![0, 2, 5],
            pick_lag: 5,
            bootstrap_resamples: 200,
            ..Self::quick()
        }
    }
    fn quick() -> Self {
        let model = DecoderConfig::rotary(64, 64, 6, 4);
        LagExperimentConfig {
            lm: lm(model, Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bytes }, 750, 20),
            small_layers: 4,
            block: 2,
            lengths: StageLengths::Starts { starts: vec![250] },
            operators: vec![
                Operator::CopyTop,
                Operator::CopyMiddle,
                Operator::CopyBottom,
                Operator::Interleave,
                Operator::FreshTop,
            ],
            moments: MomentPolicy::Fresh,
            lags: vec![0, 10, 50, 100, 300],
            pick_lag: 100,
            seeds: 2,
            weak_correlation: 0.5,
            pick_gap: 0.02,
            bootstrap_resamples: 2000,
        }
    }
    fn full() -> Self {
        let quick = Self::quick();
        let model = DecoderConfig { d_model: 128, ..quick.lm.model.clone() };
        LagExperimentConfig {
            lm: lm(model, Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bytes }, 2000, 30),
            lengths: StageLengths::Starts { starts: vec![500] },
            operators: Operator::ALL.to_vec(),
            ..quick
        }
    }
}

/// `growth/lag`.
#[derive(Debug, Clone, Copy)]
pub struct Lag;

/// One candidate of one seed, trained to the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateRow {
    pub operator: Operator,
    pub seed_index: usize,
    /// `(lag, validation loss)`.
    pub lag_losses: Vec<(u64, f64)>,
    pub final_val_loss: f64,
    /// `(cumulative FLOPs, validation loss)` from the growth on (the small stage's FLOPs included).
    pub curve: Vec<(f64, f64)>,
    pub flops_total: f64,
    /// FLOPs of one training step at the grown depth.
    pub grown_step_flops: f64,
}

/// The full-depth baseline of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineRow {
    pub seed_index: usize,
    pub curve: Vec<(f64, f64)>,
    pub final_val_loss: f64,
    pub flops_total: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    pub lag: u64,
    pub points: usize,
    pub spearman: Option<Interval>,
    pub kendall: Option<Interval>,
}

impl Experiment for Lag {
    type Config = LagExperimentConfig;
    type Error = Error;
    const ID: &'static str = "growth/lag";
    const ABOUT: &'static str = "P5: does the loss after a short lag rank growth operators by their final loss? LAG's pick and \
         adaptive stacking vs fixed stacking, selection compute included";

    fn run(&self, ctx: &RunCtx, cfg: &LagExperimentConfig) -> Result<Report> {
        let starts = cfg.lengths.starts(2, cfg.lm.train.steps)?;
        let grow_at = starts[1];
        let full = cfg.lm.model.n_layers;
        let longest = cfg.lags.iter().copied().max().unwrap_or(0).max(cfg.pick_lag);
        if cfg.small_layers >= full
            || (full - cfg.small_layers) % cfg.block != 0
            || cfg.seeds == 0
            || !cfg.lags.contains(&cfg.pick_lag)
            || grow_at + longest >= cfg.lm.train.steps
        {
            return Err(Error::Config(format!(
                "growing {} -> {full} layers in blocks of {} at step {grow_at}, lags {:?} (pick {}) within {} steps, \
                 seeds {}: does not fit",
                cfg.small_layers, cfg.block, cfg.lags, cfg.pick_lag, cfg.lm.train.steps, cfg.seeds
            )));
        }
        let mut report = Report::new(ctx, cfg);
        let corpus = cfg.lm.corpus.load(ctx.data_dir.as_deref(), None)?;
        let bar = ctx.progress((cfg.seeds * (cfg.operators.len() + 1)) as u64, "runs");
        let (mut candidates, mut baselines) = (Vec::new(), Vec::new());
        for seed_index in 0..cfg.seeds {
            let seed = ctx.seed_for(&format!("replicate {seed_index}"));
            let started = std::time::Instant::now();
            candidates.extend(measure_candidates(cfg, &corpus, seed_index, seed, grow_at)?);
            report.timing(&format!("seconds candidates seed {seed_index}"), started.elapsed().as_secs_f64());
            bar.inc(cfg.operators.len() as u64);
            baselines.push(baseline(cfg, &corpus, seed_index, seed)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        report.metric("candidates", &candidates);
        report.metric("baselines", &baselines);
        let correlations = correlations(cfg, &candidates, ctx.seed_for("bootstrap"));
        report.metric("correlations", &correlations);
        claims(&mut report, cfg, &candidates, &baselines, &correlations);
        figures(ctx, &mut report, &candidates, &baselines, &correlations)?;
        report.note(format!(
            "Correlations pool the (loss at k, final loss) pairs of every candidate of every seed ({} points); \
             intervals are 90% percentile bootstraps over those points. FLOPs are matrix products of the training \
             steps; adaptive stacking is charged every candidate's {} lag steps at the grown depth (the pick is then \
             re-grown and continued, which is its candidate's curve).",
            candidates.len(),
            cfg.pick_lag
        ));
        Ok(report)
    }
}

fn measure_candidates(
    cfg: &LagExperimentConfig,
    corpus: &TokenizedCorpus,
    seed_index: usize,
    seed: u64,
    grow_at: u64,
) -> Result<Vec<CandidateRow>> {
    let mut small_lm = cfg.lm.with_seed(seed);
    small_lm.model.n_layers = cfg.small_layers;
    let mut small = Trainer::new(small_lm.train.clone(), LmObjective::from_corpus(&small_lm, corpus.clone())?, None)?;
    while small.step_count() < grow_at {
        small.train_step()?;
    }
    let small_flops = small.flops_run() as f64;
    let lag_cfg = LagConfig { operators: cfg.operators.clone(), pick_lag: cfg.pick_lag, moments: cfg.moments, seed };
    let growths = (cfg.lm.model.n_layers - cfg.small_layers) / cfg.block;
    let forks = grow_candidates(&small, &lag_cfg, 1, cfg.block, growths, &cfg.lags)?;
    let longest = cfg.lags.iter().copied().max().unwrap_or(0);
    let mut rows = Vec::new();
    for mut fork in forks {
        let report = fork.trainer.run()?;
        let (b, t) = (fork.trainer.objective.train.batch_size(), fork.trainer.objective.train.context());
        let step_flops = flops::decoder_step(&fork.trainer.objective.model.config, b, t, cfg.lm.model.n_layers).total();
        let at = |step: u64| small_flops + (step - grow_at) as f64 * step_flops as f64;
        let mut curve: Vec<(f64, f64)> = fork.losses.iter().map(|&(k, l)| (at(grow_at + k), l)).collect();
        curve.extend(report.evals.iter().filter_map(|(s, m)| Some((at(*s), *m.get("val_loss")?))));
        if fork.trainer.flops_run() as f64 + small_flops != at(cfg.lm.train.steps) {
            return Err(Error::Config("FLOP accounting of a candidate disagrees with its step count".into()));
        }
        debug_assert!(report.steps_run == cfg.lm.train.steps - grow_at - longest);
        rows.push(CandidateRow {
            operator: fork.operator,
            seed_index,
            lag_losses: fork.losses.clone(),
            final_val_loss: report.final_eval.get("val_loss").copied().unwrap_or(f64::NAN),
            curve,
            flops_total: at(cfg.lm.train.steps),
            grown_step_flops: step_flops as f64,
        });
    }
    Ok(rows)
}

fn baseline(cfg: &LagExperimentConfig, corpus: &TokenizedCorpus, seed_index: usize, seed: u64) -> Result<BaselineRow> {
    let lm = cfg.lm.with_seed(seed);
    let mut trainer = Trainer::new(lm.train.clone(), LmObjective::from_corpus(&lm, corpus.clone())?, None)?;
    let report = trainer.run()?;
    let per_step = trainer.flops_run() as f64 / lm.train.steps as f64;
    Ok(BaselineRow {
        seed_index,
        curve: report.evals.iter().filter_map(|(s, m)| Some((*s as f64 * per_step, *m.get("val_loss")?))).collect(),
        final_val_loss: report.final_eval.get("val_loss").copied().unwrap_or(f64::NAN),
        flops_total: trainer.flops_run() as f64,
    })
}

fn lag_loss(row: &CandidateRow, lag: u64) -> f64 {
    row.lag_losses.iter().find(|x| x.0 == lag).map_or(f64::NAN, |x| x.1)
}

fn correlations(cfg: &LagExperimentConfig, rows: &[CandidateRow], seed: u64) -> Vec<Correlation> {
    let finals: Vec<f64> = rows.iter().map(|r| r.final_val_loss).collect();
    cfg.lags
        .iter()
        .map(|&lag| {
            let at: Vec<f64> = rows.iter().map(|r| lag_loss(r, lag)).collect();
            let interval = |f: fn(&[f64], &[f64]) -> report::stats::Result<f64>| {
                bootstrap(at.len(), cfg.bootstrap_resamples, 0.9, seed ^ lag, |idx| {
                    let x: Vec<f64> = idx.iter().map(|&i| at[i]).collect();
                    let y: Vec<f64> = idx.iter().map(|&i| finals[i]).collect();
                    f(&x, &y).unwrap_or(f64::NAN)
                })
                .ok()
            };
            Correlation { lag, points: at.len(), spearman: interval(spearman), kendall: interval(kendall_tau_b) }
        })
        .collect()
}

fn claims(
    report: &mut Report,
    cfg: &LagExperimentConfig,
    rows: &[CandidateRow],
    baselines: &[BaselineRow],
    corr: &[Correlation],
) {
    let rho = |lag: u64| {
        corr.iter().find(|c| c.lag == lag).and_then(|c| c.spearman.as_ref()).map_or(f64::NAN, |i| i.estimate)
    };
    let first = cfg.lags.iter().copied().min().unwrap_or(0);
    let last = cfg.lags.iter().copied().max().unwrap_or(0);
    report.check(
        "loss-at-k0-predicts-weakly",
        &format!(
            "ranking candidates by their loss right after growing (k = {first}) does not rank them by final loss \
             (P5: function preservation predicts the result poorly; a negative rho ranks them backwards)"
        ),
        &format!("Spearman rho(loss at k = {first}, final loss), pooled over seeds (at most weak positive)"),
        rho(first),
        Check::AtMost(cfg.weak_correlation),
    );
    report.check(
        "correlation-rises-with-lag",
        "the rank correlation with the final loss rises with the lag",
        &format!("rho(k = {last}) - rho(k = {first})"),
        rho(last) - rho(first),
        Check::Above(0.0),
    );
    // LAG's pick per seed, against the best candidate's final loss.
    let mut gaps = Vec::new();
    let mut adaptive_vs_stacking = Vec::new();
    let mut misses = Vec::new();
    for s in 0..cfg.seeds {
        let seed_rows: Vec<&CandidateRow> = rows.iter().filter(|r| r.seed_index == s).collect();
        let picked =
            seed_rows.iter().min_by(|a, b| lag_loss(a, cfg.pick_lag).total_cmp(&lag_loss(b, cfg.pick_lag))).copied();
        let best = seed_rows.iter().map(|r| r.final_val_loss).fold(f64::INFINITY, f64::min);
        let Some(picked) = picked else { continue };
        gaps.push(picked.final_val_loss - best);
        let Some(base) = baselines.iter().find(|b| b.seed_index == s) else { continue };
        let stacking = seed_rows.iter().find(|r| r.operator == Operator::CopyTop);
        // Adaptive stacking: the pick's curve after every candidate's lag steps at the grown depth.
        let lag_flops = seed_rows.len() as f64 * picked.grown_step_flops * cfg.pick_lag as f64;
        let adaptive: Vec<(f64, f64)> = picked.curve.iter().map(|&(f, l)| (f + lag_flops, l)).collect();
        let reach = |curve: &[(f64, f64)]| first_reach(curve, base.final_val_loss).map(|f| f / base.flops_total);
        let a = reach(&adaptive);
        let st = stacking.and_then(|r| reach(&r.curve));
        misses.push(serde_json::json!({
            "seed": s,
            "picked": picked.operator,
            "adaptive_flop_fraction": a,
            "stacking_flop_fraction": st,
            "adaptive_final_minus_baseline": picked.final_val_loss - base.final_val_loss,
            "stacking_final_minus_baseline": stacking.map(|r| r.final_val_loss - base.final_val_loss),
            "selection_flops": lag_flops,
        }));
        // An adaptive run that never reaches the loss needed more than its whole budget: that lower bound
        // already decides the comparison when it exceeds stacking's fraction.
        let adaptive_bound = (picked.flops_total + lag_flops) / base.flops_total;
        adaptive_vs_stacking.push(match (a, st) {
            (Some(a), Some(st)) => a - st,
            (None, Some(st)) if adaptive_bound >= st => adaptive_bound - st,
            _ => f64::NAN,
        });
    }
    report.metric("lag_pick_gap_per_seed", &gaps);
    report.metric("adaptive_vs_stacking_per_seed", &misses);
    let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    report.check(
        "lag-pick-near-best",
        &format!(
            "LAG's pick at k = {} ends within {} nats of the best candidate's final loss",
            cfg.pick_lag, cfg.pick_gap
        ),
        "final loss(pick) - min final loss over candidates, mean over seeds",
        mean(&gaps),
        Check::AtMost(cfg.pick_gap),
    );
    report.check(
        "adaptive-beats-fixed-stacking",
        "adaptive stacking (selection compute included) reaches the baseline's final loss with fewer FLOPs than \
         fixed top-copy stacking",
        "FLOP fraction(adaptive) - FLOP fraction(stacking), mean over seeds (adaptive not reaching: its whole \
         budget as a lower bound; stacking not reaching: not measured; see adaptive_vs_stacking_per_seed)",
        mean(&adaptive_vs_stacking),
        Check::Below(0.0),
    );
}

fn figures(
    ctx: &RunCtx,
    report: &mut Report,
    rows: &[CandidateRow],
    baselines: &[BaselineRow],
    corr: &[Correlation],
) -> Result<()> {
    let points = |f: fn(&Interval) -> f64, kendall: bool| -> Vec<(f64, f64)> {
        corr.iter()
            .filter_map(|c| Some((c.lag as f64, f(if kendall { c.kendall.as_ref()? } else { c.spearman.as_ref()? }))))
            .collect()
    };
    let chart = Chart::new("Rank correlation of the loss at lag k with the final loss", "lag k (steps)", "correlation")
        .series(Series::line("Spearman", points(|i| i.estimate, false)))
        .series(Series::reference("Spearman 90% low", points(|i| i.low, false)))
        .series(Series::reference("Spearman 90% high", points(|i| i.high, false)))
        .series(Series::line("Kendall", points(|i| i.estimate, true)));
    report.line_figure(ctx, "correlation_vs_lag.png", "rank correlation against lag, pooled over seeds", &chart)?;
    let mut curves =
        Chart::new("Validation loss of every candidate (seed 0)", "matrix-product FLOPs", "validation loss (nats)")
            .log_x();
    for r in rows.iter().filter(|r| r.seed_index == 0) {
        curves = curves.series(Series::line(r.operator.name(), r.curve.clone()));
    }
    if let Some(b) = baselines.first() {
        curves = curves.series(Series::line("baseline (full depth)", b.curve.clone()));
    }
    report.line_figure(
        ctx,
        "candidates.png",
        "validation loss after growing, per operator, and the baseline",
        &curves,
    )?;
    Ok(())
}

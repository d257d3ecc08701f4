//! `growth/raptr` (P6): a baseline trained at full depth against RaPTr (random paths of growing length, first and
//! last layers kept, kept layers rescaled) and two ablations (no fixed first/last layers; no rescaling), on the
//! same batches, compared at equal steps and at equal FLOPs, with the training loss around each stage transition.

use report::figure::{Chart, Series};
use report::stats::first_reach;
use report::{Check, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};
use train::Trainer;
use train::lm::{Corpus, LmConfig, LmObjective, TokenizedCorpus, TokenizerChoice};
use transformer::DecoderConfig;

use crate::raptr::{PathSampler, PathScaling, RaptrConfig, RaptrHook, RaptrPlan};
use crate::schedule::StageLengths;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaptrExperimentConfig {
    /// The full model's run; every method uses its data, optimizer and learning-rate schedule. Its seeds are
    /// replaced per replicate by seeds derived from `--seed`.
    pub lm: LmConfig,
    /// Path length of each RaPTr stage (the last is the full depth).
    pub path_lengths: Vec<usize>,
    pub lengths: StageLengths,
    pub sampler: PathSampler,
    pub replicates: usize,
    /// Training-loss steps averaged on each side of a stage transition.
    pub transition_window: u64,
    /// The bound on the training-loss jump at a stage transition (nats), stated before measuring.
    pub max_transition_jump: f64,
    /// RaPTr "matches" the baseline at equal steps when its final validation loss is at most this much higher.
    pub match_tolerance: f64,
}

fn lm(model: DecoderConfig, corpus: Corpus, steps: u64, eval_batches: usize) -> LmConfig {
    let mut lm = LmConfig::small_pretraining(model, corpus, steps, eval_batches);
    // Every step's training loss, for the transitions.
    lm.train.log_interval = 1;
    lm
}

impl Presets for RaptrExperimentConfig {
    fn smoke() -> Self {
        let model = DecoderConfig {
            vocab_size: 0,
            context: 32,
            d_model: 32,
            n_layers: 4,
            n_heads: 2,
            ..DecoderConfig::default()
        };
        RaptrExperimentConfig {
            lm: lm(model, Corpus::Synthetic { tokens: 20_000, vocab: 64, seed: 1 }, 24, 2),
            path_lengths: vec![2, 3, 4],
            transition_window: 2,
            ..Self::quick()
        }
    }
    fn quick() -> Self {
        let model = DecoderConfig::rotary(64, 128, 6, 4);
        RaptrExperimentConfig {
            lm: lm(model, Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bytes }, 600, 20),
            path_lengths: vec![3, 4, 5, 6],
            lengths: StageLengths::PropAlpha { alpha: 0.0 },
            sampler: PathSampler::FixedSize,
            replicates: 1,
            transition_window: 10,
            max_transition_jump: 0.1,
            match_tolerance: 0.02,
        }
    }
    fn full() -> Self {
        let quick = Self::quick();
        let model = DecoderConfig { n_layers: 12, context: 128, ..quick.lm.model.clone() };
        RaptrExperimentConfig {
            lm: lm(model, Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bpe { vocab_size: 2048 } }, 1600, 40),
            path_lengths: vec![6, 8, 10, 12],
            replicates: 2,
            ..quick
        }
    }
}

/// The RaPTr variants run beside the baseline: (name, first and last layers kept, scaling).
pub const VARIANTS: [(&str, bool, PathScaling); 3] = [
    ("raptr", true, PathScaling::InverseKeep),
    ("raptr-no-fixed-ends", false, PathScaling::InverseKeep),
    ("raptr-no-scaling", true, PathScaling::None),
];

/// `growth/raptr`.
#[derive(Debug, Clone, Copy)]
pub struct Raptr;

impl Experiment for Raptr {
    type Config = RaptrExperimentConfig;
    type Error = Error;
    const ID: &'static str = "growth/raptr";
    const ABOUT: &'static str = "P6: RaPTr (random paths of growing length) vs the full model at equal steps and FLOPs, loss at \
         stage transitions, ablations of fixed end layers and scaling";

    fn run(&self, ctx: &RunCtx, cfg: &RaptrExperimentConfig) -> Result<Report> {
        if cfg.path_lengths.last() != Some(&cfg.lm.model.n_layers) || cfg.replicates == 0 {
            return Err(Error::Config(format!(
                "the last path length ({:?}) must be the full depth {}, and replicates {} positive",
                cfg.path_lengths.last(),
                cfg.lm.model.n_layers,
                cfg.replicates
            )));
        }
        let starts = plan(cfg, VARIANTS[0], 0)?.starts;
        let mut report = Report::new(ctx, cfg);
        report.metric("stage_starts", &starts);
        let corpus = cfg.lm.corpus.load(ctx.data_dir.as_deref(), None)?;
        let bar = ctx.progress((cfg.replicates * (1 + VARIANTS.len())) as u64, "runs");
        let mut rows = Vec::new();
        for replicate in 0..cfg.replicates {
            let seed = ctx.seed_for(&format!("replicate {replicate}"));
            for variant in std::iter::once(None).chain(VARIANTS.iter().copied().map(Some)) {
                let row = train_one(cfg, &corpus, variant, replicate, seed)?;
                report.timing(&format!("seconds {} replicate {replicate}", row.method), row.train_seconds);
                rows.push(row);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        report.metric("runs", &rows);
        claims(&mut report, cfg, &rows, &starts);
        figures(ctx, &mut report, &rows, &starts)?;
        report.note(
            "FLOPs are the matrix products of the layers each step actually ran (forward and backward, embeddings and \
             head included), counted by the trainer. Validation always runs the full, unscaled model. Scaling: kept \
             layers' residual branches are multiplied by 1 / keep probability (Strata's default rule, stochastic \
             depth's); the paper's own rule is not public and is not claimed here. Transition jumps are of the \
             training loss (the sampled path's), averaged over a window of steps on each side.",
        );
        Ok(report)
    }
}

fn plan(cfg: &RaptrExperimentConfig, variant: (&str, bool, PathScaling), seed: u64) -> Result<RaptrPlan> {
    RaptrConfig {
        n_layers: cfg.lm.model.n_layers,
        path_lengths: cfg.path_lengths.clone(),
        lengths: cfg.lengths.clone(),
        sampler: cfg.sampler,
        keep_first_last: variant.1,
        scaling: variant.2,
        seed,
    }
    .plan(cfg.lm.train.steps)
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: u64,
    pub flops: f64,
    pub val_loss: f64,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaptrRow {
    /// `baseline` or the variant's name.
    pub method: String,
    pub replicate: usize,
    pub curve: Vec<CurvePoint>,
    /// Training loss of every step (1-based step, loss).
    pub train_loss: Vec<(u64, f64)>,
    pub final_val_loss: f64,
    pub flops_total: u64,
    /// Machine-dependent: reported under timings, not in the metrics.
    #[serde(skip)]
    pub train_seconds: f64,
}

fn train_one(
    cfg: &RaptrExperimentConfig,
    corpus: &TokenizedCorpus,
    variant: Option<(&str, bool, PathScaling)>,
    replicate: usize,
    seed: u64,
) -> Result<RaptrRow> {
    let lm = cfg.lm.with_seed(seed);
    let mut trainer = Trainer::new(lm.train.clone(), LmObjective::from_corpus(&lm, corpus.clone())?, None)?;
    if let Some(v) = variant {
        trainer.add_hook(Box::new(RaptrHook { plan: plan(cfg, v, seed)? }));
    }
    // Cumulative FLOPs after every step, read off the trainer (paths are random, so no closed form).
    let flops = std::rc::Rc::new(std::cell::RefCell::new(vec![0.0]));
    trainer.add_hook(Box::new(FlopLog(flops.clone())));
    let out = trainer.run()?;
    let flops = flops.borrow();
    let curve = out
        .evals
        .iter()
        .filter_map(|(s, m)| Some(CurvePoint { step: *s, flops: flops[*s as usize], val_loss: *m.get("val_loss")? }))
        .collect();
    Ok(RaptrRow {
        method: variant.map_or("baseline", |v| v.0).to_string(),
        replicate,
        curve,
        train_loss: out.train_loss.clone(),
        final_val_loss: out.final_eval.get("val_loss").copied().unwrap_or(f64::NAN),
        flops_total: trainer.flops_run(),
        train_seconds: out.train_seconds,
    })
}

struct FlopLog(std::rc::Rc<std::cell::RefCell<Vec<f64>>>);

impl train::Hook<LmObjective> for FlopLog {
    fn after_step(
        &mut self,
        r: &train::StepRecord,
        _: &mut LmObjective,
        _: &mut dyn train::Optimizer<f32>,
    ) -> train::Result<()> {
        self.0.borrow_mut().push(r.flops_total as f64);
        Ok(())
    }
}

fn find<'a>(rows: &'a [RaptrRow], method: &str, replicate: usize) -> Option<&'a RaptrRow> {
    rows.iter().find(|r| r.method == method && r.replicate == replicate)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Mean over replicates of `f(baseline, run)`.
fn paired(
    rows: &[RaptrRow],
    cfg: &RaptrExperimentConfig,
    method: &str,
    f: impl Fn(&RaptrRow, &RaptrRow) -> f64,
) -> f64 {
    let v: Vec<f64> = (0..cfg.replicates)
        .map(|r| match (find(rows, "baseline", r), find(rows, method, r)) {
            (Some(b), Some(x)) => f(b, x),
            _ => f64::NAN,
        })
        .collect();
    mean(&v)
}

/// FLOPs to reach the baseline's final validation loss / the baseline's FLOPs (NaN when never reached).
pub fn flop_fraction(baseline: &RaptrRow, run: &RaptrRow) -> f64 {
    let curve: Vec<(f64, f64)> = run.curve.iter().map(|p| (p.flops, p.val_loss)).collect();
    first_reach(&curve, baseline.final_val_loss).map_or(f64::NAN, |f| f / baseline.flops_total as f64)
}

/// The baseline's validation loss at `flops`, interpolated linearly on its curve (NaN outside it).
fn baseline_loss_at(baseline: &RaptrRow, flops: f64) -> f64 {
    let c = &baseline.curve;
    let i = match c.iter().position(|p| p.flops >= flops) {
        Some(i) => i,
        None => return f64::NAN,
    };
    if i == 0 {
        return if c[0].flops == flops { c[0].val_loss } else { f64::NAN };
    }
    let (a, b) = (&c[i - 1], &c[i]);
    a.val_loss + (b.val_loss - a.val_loss) * (flops - a.flops) / (b.flops - a.flops)
}

/// Mean training loss over the `window` steps after each transition minus over the `window` steps before.
pub fn transition_jumps(row: &RaptrRow, starts: &[u64], window: u64) -> Vec<f64> {
    let mean_over = |lo: u64, hi: u64| {
        let v: Vec<f64> = row.train_loss.iter().filter(|(s, _)| *s > lo && *s <= hi).map(|(_, l)| *l).collect();
        mean(&v)
    };
    // Step s (1-based) in train_loss is the step that ran at 0-based index s - 1; stage k starts at index starts[k].
    starts.iter().skip(1).map(|&s| mean_over(s, s + window) - mean_over(s.saturating_sub(window), s)).collect()
}

fn claims(report: &mut Report, cfg: &RaptrExperimentConfig, rows: &[RaptrRow], starts: &[u64]) {
    let fraction = paired(rows, cfg, "raptr", flop_fraction);
    report.check(
        "raptr-fewer-flops",
        "RaPTr reaches the baseline's final validation loss with 20-33% fewer FLOPs (at least 20% fewer)",
        "FLOPs to reach it / baseline FLOPs, mean over replicates (never reached: not measured)",
        fraction,
        Check::AtMost(0.8),
    );
    let equal_steps = paired(rows, cfg, "raptr", |b, x| x.final_val_loss - b.final_val_loss);
    report.check(
        "raptr-matches-at-equal-steps",
        "at equal steps RaPTr's final validation loss is equal or better",
        "final val loss(RaPTr) - final val loss(baseline), mean over replicates",
        equal_steps,
        Check::AtMost(cfg.match_tolerance),
    );
    let equal_flops = paired(rows, cfg, "raptr", |b, x| x.final_val_loss - baseline_loss_at(b, x.flops_total as f64));
    report.metric("raptr_minus_baseline_at_equal_flops", equal_flops);
    let jumps: Vec<Vec<f64>> = (0..cfg.replicates)
        .filter_map(|r| find(rows, "raptr", r).map(|row| transition_jumps(row, starts, cfg.transition_window)))
        .collect();
    report.metric("raptr_transition_jumps", &jumps);
    report.check(
        "small-transition-jumps",
        &format!(
            "the training loss jumps by at most {} nats at each stage transition (bound stated before measuring)",
            cfg.max_transition_jump
        ),
        "largest (mean loss over the window after - before) over transitions and replicates",
        report::max_or_nan(jumps.iter().flatten().copied()),
        Check::AtMost(cfg.max_transition_jump),
    );
    for (name, _, _) in &VARIANTS[1..] {
        report.metric(
            &format!("{name}_minus_raptr_final_val_loss"),
            paired(rows, cfg, name, |_, x| {
                x.final_val_loss - find(rows, "raptr", x.replicate).map_or(f64::NAN, |r| r.final_val_loss)
            }),
        );
    }
}

fn figures(ctx: &RunCtx, report: &mut Report, rows: &[RaptrRow], starts: &[u64]) -> Result<()> {
    let first: Vec<&RaptrRow> = rows.iter().filter(|r| r.replicate == 0).collect();
    let mut by_flops =
        Chart::new("Validation loss against FLOPs (replicate 0)", "matrix-product FLOPs", "validation loss (nats)")
            .log_x();
    let mut by_step = Chart::new("Validation loss against steps (replicate 0)", "step", "validation loss (nats)");
    for r in &first {
        by_flops = by_flops.series(Series::line(&r.method, r.curve.iter().map(|p| (p.flops, p.val_loss)).collect()));
        by_step =
            by_step.series(Series::line(&r.method, r.curve.iter().map(|p| (p.step as f64, p.val_loss)).collect()));
    }
    report.line_figure(ctx, "val_loss_vs_flops.png", "validation loss (full model) against FLOPs", &by_flops)?;
    report.line_figure(ctx, "val_loss_vs_steps.png", "validation loss (full model) against steps", &by_step)?;
    let mut train = Chart::new(
        "Training loss of the sampled paths around stage transitions (replicate 0)",
        "step",
        "training loss (nats)",
    );
    for r in first.iter().filter(|r| r.method == "raptr" || r.method == "baseline") {
        // A 10-step moving average keeps the transitions visible through batch noise.
        let smoothed: Vec<(f64, f64)> =
            r.train_loss.windows(10).map(|w| (w[9].0 as f64, w.iter().map(|x| x.1).sum::<f64>() / 10.0)).collect();
        train = train.series(Series::line(&r.method, smoothed));
    }
    let (lo, hi) = first
        .iter()
        .flat_map(|r| r.train_loss.iter().map(|x| x.1))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l), b.max(l)));
    for &s in starts.iter().skip(1) {
        train = train.series(Series::reference(&format!("stage start {s}"), vec![(s as f64, lo), (s as f64, hi)]));
    }
    report.line_figure(
        ctx,
        "train_loss_transitions.png",
        "training loss (10-step mean); vertical lines: stage starts",
        &train,
    )?;
    Ok(())
}

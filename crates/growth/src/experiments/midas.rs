//! `growth/midas` (P4): a baseline trained at full depth throughout against runs that grow to the same depth in
//! Prop-alpha stages (gradual stacking, MIDAS, and fresh layers where MIDAS puts its copies), on the same tokens,
//! compared by validation loss against FLOPs counted exactly.

use report::figure::{Chart, Series};
use report::{Check, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};
use train::Trainer;
use train::lm::{AnswerProbe, Corpus, LmConfig, LmObjective, TokenizedCorpus, TokenizerChoice};
use transformer::{DecoderConfig, flops};

use crate::compute::flops_to_reach;
use crate::hook::GrowthHook;
use crate::operators::{MomentPolicy, Operator};
use crate::primitives;
use crate::schedule::{GrowthConfig, GrowthPlan, StageLengths};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MidasConfig {
    /// The run at full depth (`lm.model.n_layers`); grown runs use the same data, batch, optimizer and global
    /// learning-rate schedule. Its seeds are replaced per replicate by seeds derived from `--seed`.
    pub lm: LmConfig,
    /// Depth of each stage of the grown runs; the last is the full depth.
    pub stage_layers: Vec<usize>,
    /// Prop-alpha stage lengths.
    pub alpha: f64,
    pub block: usize,
    pub moments: MomentPolicy,
    /// The grown runs, one per operator.
    pub operators: Vec<Operator>,
    /// Independent replicates (seeds); every method of a replicate shares its seed, data order included.
    pub replicates: usize,
    /// MIDAS "matches" stacking when its final validation loss is at most this much higher (nats).
    pub match_tolerance: f64,
    /// Reasoning primitives mixed into the training stream and probed at every evaluation (byte tokens only).
    pub primitives: Option<PrimitiveMix>,
}

/// How reasoning primitives enter a run: at CPU scale few-shot primitives sit at chance, so a fraction of the
/// training stream is generated primitive text, and held-out examples (test names and values) are scored by
/// teacher-forced exact match at every evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimitiveMix {
    /// Share of training tokens that are primitives.
    pub fraction: f64,
    /// Held-out examples per primitive kind (8 kinds).
    pub test_per_kind: usize,
    /// Below this accuracy for both runs, the isoplot comparison is not measured (both at chance).
    pub min_accuracy: f64,
    /// MIDAS's accuracy at matched loss may be this much below the baseline's and still "at least match".
    pub tolerance: f64,
}

fn primitive_mix() -> Option<PrimitiveMix> {
    Some(PrimitiveMix { fraction: 0.15, test_per_kind: 25, min_accuracy: 0.05, tolerance: 0.02 })
}

fn lm(model: DecoderConfig, corpus: Corpus, steps: u64, eval_batches: usize) -> LmConfig {
    LmConfig::small_pretraining(model, corpus, steps, eval_batches)
}

impl Presets for MidasConfig {
    fn smoke() -> Self {
        let model = DecoderConfig {
            vocab_size: 0,
            context: 64,
            d_model: 32,
            n_layers: 3,
            n_heads: 2,
            ..DecoderConfig::default()
        };
        MidasConfig {
            lm: lm(model, Corpus::Synthetic { tokens: 20_000, vocab: 256, seed: 1 }, 24, 2),
            stage_layers: vec![1, 2, 3],
            block: 1,
            primitives: Some(PrimitiveMix { test_per_kind: 2, ..primitive_mix().expect("some") }),
            ..Self::quick()
        }
    }
    fn quick() -> Self {
        let model = DecoderConfig::rotary(64, 128, 6, 4);
        MidasConfig {
            lm: lm(model, Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bytes }, 600, 20),
            stage_layers: vec![2, 4, 6],
            alpha: 1.0,
            block: 2,
            moments: MomentPolicy::Fresh,
            operators: vec![Operator::CopyTop, Operator::CopyMiddle, Operator::FreshMiddle],
            replicates: 1,
            match_tolerance: 0.02,
            primitives: primitive_mix(),
        }
    }
    fn full() -> Self {
        let quick = Self::quick();
        let model = DecoderConfig { n_layers: 8, context: 128, ..quick.lm.model.clone() };
        MidasConfig {
            // Byte tokens (not BPE): the primitives are byte-level text.
            lm: lm(model, Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bytes }, 1600, 40),
            stage_layers: vec![2, 4, 6, 8],
            replicates: 2,
            ..quick
        }
    }
}

/// `growth/midas`.
#[derive(Debug, Clone, Copy)]
pub struct Midas;

impl Experiment for Midas {
    type Config = MidasConfig;
    type Error = Error;
    const ID: &'static str = "growth/midas";
    const ABOUT: &'static str =
        "P4: baseline vs gradual stacking vs MIDAS vs fresh layers, same tokens, validation loss against exact FLOPs";

    fn run(&self, ctx: &RunCtx, cfg: &MidasConfig) -> Result<Report> {
        let plan = growth(cfg, Operator::CopyMiddle).plan(cfg.lm.train.steps)?;
        if cfg.stage_layers.last() != Some(&cfg.lm.model.n_layers) || cfg.replicates == 0 {
            return Err(Error::Config(format!(
                "the last stage ({:?}) must be the full depth {}, and replicates {} positive",
                cfg.stage_layers.last(),
                cfg.lm.model.n_layers,
                cfg.replicates
            )));
        }
        let mut report = Report::new(ctx, cfg);
        report.metric("stage_starts", &plan.starts);
        let rows = measure(ctx, cfg, &mut report)?;
        report.metric("runs", &rows);
        claims(&mut report, cfg, &rows);
        figures(ctx, &mut report, &rows)?;
        report.note(
            "FLOPs are the matrix products of forward and backward passes of the layers actually run (embeddings and \
             the output head included), counted by the trainer step by step; elementwise work is not counted. Every \
             method of a replicate sees the same batches in the same order. Primitives: a fraction of the training \
             stream is generated primitive text (assignment of depth 0-2 in math and code form, induction, \
             arithmetic; training names a-m and values 10-54), and held-out examples (names n-z, values 55-99) are \
             scored by teacher-forced exact match of the answer bytes at every evaluation.",
        );
        Ok(report)
    }
}

fn growth(cfg: &MidasConfig, operator: Operator) -> GrowthConfig {
    GrowthConfig {
        stage_layers: cfg.stage_layers.clone(),
        lengths: StageLengths::PropAlpha { alpha: cfg.alpha },
        operator,
        block: cfg.block,
        moments: cfg.moments,
        seed: 0,
    }
}

/// One evaluation of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: u64,
    /// Cumulative matrix-product FLOPs at this step.
    pub flops: f64,
    pub val_loss: f64,
    /// Held-out reasoning-primitive accuracy (when primitives are mixed in).
    pub primitive_accuracy: Option<f64>,
}

/// One training run: its method, replicate and validation curve against compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// `"baseline"` or the operator's name.
    pub method: String,
    pub operator: Option<Operator>,
    pub replicate: usize,
    /// Every evaluation.
    pub curve: Vec<CurvePoint>,
    pub final_val_loss: f64,
    pub flops_total: u64,
    /// Cumulative FLOPs when each stage began (grown runs).
    pub stage_start_flops: Vec<f64>,
}

/// The corpus with primitives mixed into its training stream, and the held-out probe (shared by every run).
fn corpus_and_probe(ctx: &RunCtx, cfg: &MidasConfig) -> Result<(TokenizedCorpus, Option<AnswerProbe>)> {
    let mut corpus = cfg.lm.corpus.load(ctx.data_dir.as_deref(), None)?;
    let Some(mix) = &cfg.primitives else { return Ok((corpus, None)) };
    if corpus.vocab_size < 256 || !(0.0..1.0).contains(&mix.fraction) {
        return Err(Error::Config(format!(
            "primitives need byte tokens (vocabulary 256, got {}) and a fraction in [0, 1) (got {})",
            corpus.vocab_size, mix.fraction
        )));
    }
    let kinds = primitives::all_kinds();
    let mut rng = ctx.rng("primitive training mix");
    corpus.train = primitives::mix_into_bytes(&corpus.train, &kinds, mix.fraction, &mut rng);
    let probe = primitives::byte_probe("primitive", &kinds, mix.test_per_kind, &mut ctx.rng("primitive test set"));
    Ok((corpus, Some(probe)))
}

fn measure(ctx: &RunCtx, cfg: &MidasConfig, report: &mut Report) -> Result<Vec<RunRow>> {
    let (corpus, probe) = corpus_and_probe(ctx, cfg)?;
    let methods: Vec<Option<Operator>> = std::iter::once(None).chain(cfg.operators.iter().copied().map(Some)).collect();
    let bar = ctx.progress((cfg.replicates * methods.len()) as u64, "runs");
    let mut rows = Vec::new();
    for replicate in 0..cfg.replicates {
        let seed = ctx.seed_for(&format!("replicate {replicate}"));
        for &operator in &methods {
            let started = std::time::Instant::now();
            let row = train_one(cfg, &corpus, probe.as_ref(), operator, replicate, seed)?;
            report.timing(&format!("seconds {} replicate {replicate}", row.method), started.elapsed().as_secs_f64());
            rows.push(row);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// Cumulative FLOPs after each step count `0..=steps` of a run whose depth at each step is `layers_at(step)`.
fn cumulative_flops(
    model: &DecoderConfig,
    batch: usize,
    t: usize,
    steps: u64,
    layers_at: impl Fn(u64) -> usize,
) -> Vec<f64> {
    let mut total = 0u64;
    std::iter::once(0.0)
        .chain((0..steps).map(|s| {
            total += flops::decoder_step(model, batch, t, layers_at(s)).total();
            total as f64
        }))
        .collect()
}

fn train_one(
    cfg: &MidasConfig,
    corpus: &TokenizedCorpus,
    probe: Option<&AnswerProbe>,
    operator: Option<Operator>,
    replicate: usize,
    seed: u64,
) -> Result<RunRow> {
    let plan: Option<GrowthPlan> = operator.map(|op| growth(cfg, op).plan(cfg.lm.train.steps)).transpose()?;
    let mut lm = cfg.lm.with_seed(seed);
    if let Some(p) = &plan {
        lm.model.n_layers = p.config.stage_layers[0];
    }
    let mut objective = LmObjective::from_corpus(&lm, corpus.clone())?;
    objective.probes.extend(probe.cloned());
    let full_model = DecoderConfig { n_layers: cfg.lm.model.n_layers, ..objective.model.config.clone() };
    let (batch, t) = (objective.train.batch_size(), objective.train.context());
    let mut trainer = Trainer::new(lm.train.clone(), objective, None)?;
    if let Some(p) = &plan {
        let mut hook = GrowthHook::new(p.clone());
        hook.plan.config.seed = seed;
        trainer.add_hook(Box::new(hook));
    }
    let report = trainer.run()?;
    let layers_at = |s: u64| plan.as_ref().map_or(cfg.lm.model.n_layers, |p| p.layers_at(s));
    let flops = cumulative_flops(&full_model, batch, t, cfg.lm.train.steps, layers_at);
    if flops[flops.len() - 1] as u64 != trainer.flops_run() {
        return Err(Error::Config(format!(
            "FLOP accounting: the trainer counted {}, the plan gives {}",
            trainer.flops_run(),
            flops[flops.len() - 1]
        )));
    }
    let curve = report
        .evals
        .iter()
        .filter_map(|(s, m)| {
            let val_loss = *m.get("val_loss")?;
            let primitive_accuracy = m.get("primitive_accuracy").copied();
            Some(CurvePoint { step: *s, flops: flops[*s as usize], val_loss, primitive_accuracy })
        })
        .collect();
    Ok(RunRow {
        method: operator.map_or("baseline", |o| o.name()).to_string(),
        operator,
        replicate,
        curve,
        final_val_loss: report.final_eval.get("val_loss").copied().unwrap_or(f64::NAN),
        flops_total: trainer.flops_run(),
        stage_start_flops: plan.map(|p| p.starts.iter().map(|&s| flops[s as usize]).collect()).unwrap_or_default(),
    })
}

/// Mean over replicates of `f(baseline row, row of method)`; NaN when a replicate lacks the method.
fn paired_mean(rows: &[RunRow], cfg: &MidasConfig, op: Operator, f: impl Fn(&RunRow, &RunRow) -> f64) -> f64 {
    let values: Vec<f64> = (0..cfg.replicates)
        .map(|r| {
            let base = rows.iter().find(|x| x.replicate == r && x.operator.is_none());
            let run = rows.iter().find(|x| x.replicate == r && x.operator == Some(op));
            match (base, run) {
                (Some(b), Some(x)) => f(b, x),
                _ => f64::NAN,
            }
        })
        .collect();
    values.iter().sum::<f64>() / values.len() as f64
}

fn claims(report: &mut Report, cfg: &MidasConfig, rows: &[RunRow]) {
    // FLOPs to reach the baseline's final validation loss, as a fraction of the baseline's FLOPs (not reached
    // within the run's own budget: not measured).
    let fraction = |b: &RunRow, x: &RunRow| {
        let curve: Vec<(f64, f64)> = x.curve.iter().map(|p| (p.flops, p.val_loss)).collect();
        flops_to_reach(&curve, b.final_val_loss).map_or(f64::NAN, |f| f / b.flops_total as f64)
    };
    for (id, op) in [("stacking-fewer-flops", Operator::CopyTop), ("midas-fewer-flops", Operator::CopyMiddle)] {
        report.check(
            id,
            &format!("{} reaches the baseline's final validation loss with fewer FLOPs", op.name()),
            "FLOPs to reach it / baseline FLOPs (mean over replicates)",
            paired_mean(rows, cfg, op, fraction),
            Check::Below(1.0),
        );
    }
    let loss = |op: Operator| paired_mean(rows, cfg, op, |_, x| x.final_val_loss);
    report.check(
        "midas-matches-stacking",
        "MIDAS's final validation loss is at least as good as gradual stacking's",
        "final val loss(MIDAS) - final val loss(stacking), mean over replicates",
        loss(Operator::CopyMiddle) - loss(Operator::CopyTop),
        Check::AtMost(cfg.match_tolerance),
    );
    report.check(
        "copying-beats-fresh",
        "growing by copying layers beats growing with freshly initialised ones at the same places",
        "final val loss(fresh middle) - final val loss(MIDAS), mean over replicates",
        loss(Operator::FreshMiddle) - loss(Operator::CopyMiddle),
        Check::Above(0.0),
    );
    if let Some(mix) = &cfg.primitives {
        let gap = |b: &RunRow, x: &RunRow| isoplot_gap(b, x, mix.min_accuracy);
        report.check(
            "midas-primitives-at-matched-loss",
            "at matched validation loss (log-perplexity), MIDAS's held-out primitive accuracy is at least the baseline's (isoplot)",
            "accuracy(MIDAS) - accuracy(baseline) at the lowest loss both reach, mean over replicates",
            paired_mean(rows, cfg, Operator::CopyMiddle, gap),
            Check::AtLeast(-mix.tolerance),
        );
    }
}

/// Accuracy at the first evaluation reaching `loss`, interpolated linearly in loss from the one before.
fn accuracy_at_loss(row: &RunRow, loss: f64) -> Option<f64> {
    let points: Vec<(f64, f64)> = row.curve.iter().filter_map(|p| Some((p.val_loss, p.primitive_accuracy?))).collect();
    let i = points.iter().position(|&(l, _)| l <= loss)?;
    if i == 0 {
        return Some(points[0].1);
    }
    let ((l0, a0), (l1, a1)) = (points[i - 1], points[i]);
    Some(a0 + (a1 - a0) * (l0 - loss) / (l0 - l1))
}

/// `accuracy(run) - accuracy(baseline)` at the lowest validation loss both runs reach; NaN when either never
/// reaches it or both are below `floor` there (both at chance: the isoplot cannot tell them apart).
pub fn isoplot_gap(baseline: &RunRow, run: &RunRow, floor: f64) -> f64 {
    let best = |r: &RunRow| r.curve.iter().map(|p| p.val_loss).fold(f64::INFINITY, f64::min);
    let matched = best(baseline).max(best(run));
    match (accuracy_at_loss(baseline, matched), accuracy_at_loss(run, matched)) {
        (Some(b), Some(x)) if b.max(x) >= floor => x - b,
        _ => f64::NAN,
    }
}

fn figures(ctx: &RunCtx, report: &mut Report, rows: &[RunRow]) -> Result<()> {
    let mut chart = Chart::new(
        "Validation loss against training compute (replicate 0)",
        "matrix-product FLOPs",
        "validation loss (nats)",
    )
    .log_x();
    let mut boundaries = Vec::new();
    for row in rows.iter().filter(|r| r.replicate == 0) {
        chart = chart.series(Series::line(&row.method, row.curve.iter().map(|p| (p.flops, p.val_loss)).collect()));
        // Mark each stage start on the run's curve at the nearest evaluation.
        for &start in row.stage_start_flops.iter().skip(1) {
            if let Some(p) = row.curve.iter().find(|p| p.flops >= start) {
                boundaries.push((p.flops, p.val_loss));
            }
        }
    }
    chart = chart.series(Series::scatter("stage starts (grown runs)", boundaries));
    report.line_figure(
        ctx,
        "val_loss_vs_flops.png",
        "validation loss against FLOPs; markers: first evaluation of each new stage",
        &chart,
    )?;
    let mut iso = Chart::new(
        "Isoplot: held-out primitive accuracy against validation loss (replicate 0)",
        "validation loss (nats)",
        "primitive accuracy (exact match)",
    );
    for row in rows.iter().filter(|r| r.replicate == 0) {
        let pts = row.curve.iter().filter_map(|p| Some((p.val_loss, p.primitive_accuracy?))).collect();
        iso = iso.series(Series::line(&row.method, pts));
    }
    report.line_figure(ctx, "isoplot.png", "primitive accuracy against validation loss at every evaluation", &iso)?;
    Ok(())
}

//! `salt/kd-phase` (P2): a small teacher is trained first on the corpus; then a larger student trains from
//! scratch five ways on the same batches: plain cross-entropy (baseline), SALT (distillation for the first
//! `kd_fraction` of the steps), distillation for the whole run, SALT with a much weaker teacher, and SALT_DS
//! (SALT whose distillation phase draws the teacher-selected windows). Compared by validation loss against
//! steps and against FLOPs with the teacher's forward passes (and SALT_DS's scoring pass) included.

use report::figure::{Chart, Series};
use report::stats::first_reach;
use report::{Check, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};
use train::Trainer;
use train::lm::{Corpus, LmConfig, LmObjective, TokenizedCorpus, TokenizerChoice};
use transformer::{Decoder, DecoderConfig, flops};

use crate::distill::{DistillConfig, KdSchedule};
use crate::objective::SaltObjective;
use crate::select::{Selection, SelectionConfig, select};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdPhaseConfig {
    /// The student's run (model, corpus, batching, optimizer, schedule). Its seeds are replaced per seed
    /// replicate by seeds derived from `--seed`; every method of a replicate sees the same batches.
    pub student: LmConfig,
    /// The teacher's own run on the same corpus (trained once, before the students).
    pub teacher: LmConfig,
    /// The much weaker teacher's run.
    pub weak_teacher: LmConfig,
    /// SALT distils for the first `kd_fraction` of the student's steps (`n_KD`).
    pub kd_fraction: f64,
    /// Distillation weight `w` while distilling.
    pub kd_weight: f64,
    pub temperature: f64,
    /// Steps over which `w` anneals linearly to 0 ending at `n_KD` (0: a step transition).
    pub anneal_steps: u64,
    /// SALT_DS's selection.
    pub selection: SelectionConfig,
    /// Student seed replicates (2 or more measure the seed-to-seed spread).
    pub seeds: usize,
    /// SALT_DS "adds little": its FLOP saving exceeds SALT's by at most this (fraction of baseline FLOPs).
    pub selection_tolerance: f64,
}

fn lm(model: DecoderConfig, corpus: Corpus, steps: u64, eval_batches: usize) -> LmConfig {
    LmConfig::small_pretraining(model, corpus, steps, eval_batches)
}

impl Presets for KdPhaseConfig {
    fn smoke() -> Self {
        let corpus = Corpus::Synthetic { tokens: 20_000, vocab: 64, seed: 1 };
        KdPhaseConfig {
            student: lm(DecoderConfig::rotary(32, 32, 2, 2), corpus.clone(), 20, 2),
            teacher: lm(DecoderConfig::rotary(32, 16, 1, 2), corpus.clone(), 20, 2),
            weak_teacher: lm(DecoderConfig::rotary(32, 8, 1, 1), corpus, 4, 2),
            selection: SelectionConfig { pool_windows: 64, score_batch: 16, ..Self::quick().selection },
            ..Self::quick()
        }
    }
    fn quick() -> Self {
        let corpus = Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bytes };
        KdPhaseConfig {
            student: lm(DecoderConfig::rotary(64, 128, 4, 4), corpus.clone(), 600, 20),
            teacher: lm(DecoderConfig::rotary(64, 64, 2, 4), corpus.clone(), 600, 20),
            weak_teacher: lm(DecoderConfig::rotary(64, 32, 1, 2), corpus, 600, 20),
            kd_fraction: 0.2,
            kd_weight: 0.5,
            temperature: 1.0,
            anneal_steps: 0,
            selection: SelectionConfig { top_k: 10, keep_fraction: 0.25, pool_windows: 6_000, score_batch: 64 },
            seeds: 1,
            selection_tolerance: 0.1,
        }
    }
    fn full() -> Self {
        let corpus = Corpus::Wikitext2 { tokenizer: TokenizerChoice::Bpe { vocab_size: 2048 } };
        KdPhaseConfig {
            student: lm(DecoderConfig::rotary(128, 128, 6, 4), corpus.clone(), 1200, 40),
            teacher: lm(DecoderConfig::rotary(128, 64, 2, 4), corpus.clone(), 1200, 40),
            weak_teacher: lm(DecoderConfig::rotary(128, 32, 1, 2), corpus, 1200, 40),
            selection: SelectionConfig { pool_windows: 12_000, ..Self::quick().selection },
            seeds: 2,
            ..Self::quick()
        }
    }
}

impl KdPhaseConfig {
    /// `n_KD`: the last step (exclusive) with distillation in SALT.
    pub fn kd_steps(&self) -> u64 {
        (self.kd_fraction * self.student.train.steps as f64).round() as u64
    }

    fn salt_schedule(&self) -> KdSchedule {
        let until = self.kd_steps();
        if self.anneal_steps == 0 {
            KdSchedule::Step { weight: self.kd_weight, until }
        } else {
            KdSchedule::Linear { weight: self.kd_weight, from: until.saturating_sub(self.anneal_steps), until }
        }
    }

    fn validate(&self) -> Result<()> {
        if self.teacher.corpus != self.student.corpus || self.weak_teacher.corpus != self.student.corpus {
            return Err(Error::Config("teachers and student must train on the same corpus and tokenizer".into()));
        }
        if !(self.kd_fraction > 0.0 && self.kd_fraction <= 1.0) || self.kd_steps() == 0 || self.seeds == 0 {
            return Err(Error::Config(format!(
                "kd_fraction {} must give at least one distillation step, and seeds {} be positive",
                self.kd_fraction, self.seeds
            )));
        }
        if self.anneal_steps > self.kd_steps() {
            return Err(Error::Config(format!("anneal_steps {} exceed n_KD {}", self.anneal_steps, self.kd_steps())));
        }
        self.selection.validate()?;
        DistillConfig { schedule: self.salt_schedule(), temperature: self.temperature }.validate()
    }
}

/// `salt/kd-phase`.
#[derive(Debug, Clone, Copy)]
pub struct KdPhase;

/// The student runs of each replicate.
pub const METHODS: [&str; 5] = ["baseline", "salt", "kd-whole-run", "salt-weak-teacher", "salt-ds"];

impl Experiment for KdPhase {
    type Config = KdPhaseConfig;
    type Error = Error;
    const ID: &'static str = "salt/kd-phase";
    const ABOUT: &'static str = "P2: distillation from a small teacher in an early phase (SALT) vs baseline, KD throughout, a weak \
         teacher and SALT_DS, by validation loss against steps and FLOPs with the teacher included";

    fn run(&self, ctx: &RunCtx, cfg: &KdPhaseConfig) -> Result<Report> {
        cfg.validate()?;
        let mut report = Report::new(ctx, cfg);
        let corpus = cfg.student.corpus.load(ctx.data_dir.as_deref(), None)?;
        let bar = ctx.progress((2 + cfg.seeds * METHODS.len()) as u64, "runs");
        let teacher_seed = ctx.seed_for("teacher");
        let (teacher, teacher_row) = train_teacher("teacher", &cfg.teacher, &corpus, teacher_seed, &mut report)?;
        bar.inc(1);
        let (weak, weak_row) = train_teacher("weak teacher", &cfg.weak_teacher, &corpus, teacher_seed, &mut report)?;
        bar.inc(1);
        report.metric("teachers", [&teacher_row, &weak_row]);
        let s = &cfg.student;
        let student_batcher =
            data::batch::LmBatcher::new(corpus.train.clone(), s.model.context, s.batch, s.sampling, s.data_seed)?;
        let selection = select(&teacher, &student_batcher, &cfg.selection, ctx.seed_for("selection pool"))?;
        report.metric("selection", selection_summary(&selection));
        report.metric("n_kd", cfg.kd_steps());
        let mut rows = Vec::new();
        for replicate in 0..cfg.seeds {
            let seed = ctx.seed_for(&format!("replicate {replicate}"));
            for method in METHODS {
                let (teacher, schedule, sel) = match method {
                    "baseline" => (&teacher, KdSchedule::Off, None),
                    "salt" => (&teacher, cfg.salt_schedule(), None),
                    "kd-whole-run" => (&teacher, KdSchedule::Constant { weight: cfg.kd_weight }, None),
                    "salt-weak-teacher" => (&weak, cfg.salt_schedule(), None),
                    _ => (&teacher, cfg.salt_schedule(), Some(&selection)),
                };
                let row = train_student(cfg, &corpus, teacher, schedule, sel, method, replicate, seed)?;
                report.timing(&format!("seconds {method} replicate {replicate}"), row.train_seconds);
                report.timing(&format!("teacher seconds {method} replicate {replicate}"), row.teacher_seconds);
                rows.push(row);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        report.metric("runs", &rows);
        claims(&mut report, cfg, &rows, &teacher_row);
        figures(ctx, &mut report, &rows, &teacher_row, &weak_row, &selection)?;
        report.note(format!(
            "FLOPs are matrix products (forward and backward of the student; forward of the teacher on every \
             distillation step; SALT_DS's scoring pass of {} windows added at step 0), counted by the trainer and \
             checked against the schedule. The teachers' own training ({:.3e} and {:.3e} FLOPs) is not charged to \
             the students: in P2 the small model exists already. Every method of a replicate shares the student's \
             initialisation and batch order (SALT_DS draws its distillation batches from the selection). Gains are \
             1 - FLOPs to reach the baseline's final validation loss / the baseline's FLOPs; a run that never reaches \
             it has a gain of at most 1 - its own FLOPs / the baseline's.",
            selection.pool.len(),
            teacher_row.train_flops,
            weak_row.train_flops,
        ));
        Ok(report)
    }
}

/// A trained teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherRow {
    pub name: String,
    pub parameters: usize,
    pub final_val_loss: f64,
    pub train_flops: u64,
}

fn train_teacher(
    name: &str,
    lm: &LmConfig,
    corpus: &TokenizedCorpus,
    seed: u64,
    report: &mut Report,
) -> Result<(Decoder<f32>, TeacherRow)> {
    let lm = lm.with_seed(seed);
    let mut trainer = Trainer::new(lm.train.clone(), LmObjective::from_corpus(&lm, corpus.clone())?, None)?;
    let out = trainer.run()?;
    report.timing(&format!("seconds training the {name}"), out.train_seconds);
    let model = trainer.objective.model;
    let row = TeacherRow {
        name: name.to_string(),
        parameters: model.num_parameters(),
        final_val_loss: out.final_eval.get("val_loss").copied().unwrap_or(f64::NAN),
        train_flops: out.flops_total,
    };
    Ok((model, row))
}

/// The selection in numbers (the windows themselves are long lists).
fn selection_summary(s: &Selection) -> serde_json::Value {
    let mut scored: Vec<f64> = s.scores.iter().flatten().copied().collect();
    scored.sort_by(f64::total_cmp);
    let q = |p: f64| if scored.is_empty() { f64::NAN } else { report::stats::quantile_sorted(&scored, p) };
    let threshold = s
        .selected
        .last()
        .and_then(|last| s.pool.iter().position(|p| p == last))
        .and_then(|i| s.scores[i])
        .unwrap_or(f64::NAN);
    serde_json::json!({
        "pool_windows": s.pool.len(),
        "scored_windows": scored.len(),
        "selected_windows": s.selected.len(),
        "score_quantiles": {"0.1": q(0.1), "0.25": q(0.25), "0.5": q(0.5), "0.75": q(0.75), "0.9": q(0.9)},
        "selection_threshold": threshold,
        "flops": s.flops,
    })
}

/// One evaluation of a student run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: u64,
    /// Cumulative FLOPs (student, teacher, selection) at this step.
    pub flops: f64,
    pub val_loss: f64,
    /// Seconds of training steps so far (teacher forwards included; evaluation excluded). Machine-dependent, so
    /// kept out of the report's metrics (reported under timings).
    #[serde(skip)]
    pub seconds: f64,
}

/// One student run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub method: String,
    pub replicate: usize,
    pub schedule: KdSchedule,
    pub curve: Vec<CurvePoint>,
    pub final_val_loss: f64,
    pub flops_total: u64,
    pub teacher_flops: u64,
    pub selection_flops: u64,
    /// Machine-dependent: reported under timings, not in the metrics.
    #[serde(skip)]
    pub train_seconds: f64,
    #[serde(skip)]
    pub teacher_seconds: f64,
}

fn train_student(
    cfg: &KdPhaseConfig,
    corpus: &TokenizedCorpus,
    teacher: &Decoder<f32>,
    schedule: KdSchedule,
    selection: Option<&Selection>,
    method: &str,
    replicate: usize,
    seed: u64,
) -> Result<RunRow> {
    let lm = cfg.student.with_seed(seed);
    let student = LmObjective::from_corpus(&lm, corpus.clone())?;
    let (config, batch, t) = (student.model.config.clone(), student.train.batch_size(), student.train.context());
    let distill = DistillConfig { schedule, temperature: cfg.temperature };
    let mut objective = SaltObjective::new(student, teacher.clone(), distill)?;
    if let Some(s) = selection {
        let batcher = s.batcher(&objective.student.train, lm.sampling, seed)?;
        objective = objective.with_selection(batcher)?;
    }
    let selection_flops = selection.map_or(0, |s| s.flops);
    let mut trainer = Trainer::new(lm.train.clone(), objective, None)?;
    trainer.add_flops(selection_flops);
    let seconds = std::rc::Rc::new(std::cell::RefCell::new(vec![0.0]));
    trainer.add_hook(Box::new(SecondsLog(seconds.clone())));
    let out = trainer.run()?;
    let seconds = seconds.borrow();
    // The same count from the schedule alone: student steps, teacher forwards on distillation steps.
    let student_step = flops::decoder_step(&config, batch, t, config.n_layers).total();
    let teacher_forward = flops::decoder_forward(&teacher.config, batch, t, teacher.n_layers());
    let mut cumulative = vec![selection_flops as f64];
    let mut total = selection_flops;
    for s in 0..lm.train.steps {
        total += student_step + if schedule.weight(s) > 0.0 { teacher_forward } else { 0 };
        cumulative.push(total as f64);
    }
    if total != trainer.flops_run() {
        return Err(Error::Config(format!(
            "FLOP accounting: the trainer counted {}, the schedule gives {total}",
            trainer.flops_run()
        )));
    }
    let curve = out
        .evals
        .iter()
        .filter_map(|(s, m)| {
            let (flops, seconds) = (cumulative[*s as usize], seconds[*s as usize]);
            Some(CurvePoint { step: *s, flops, val_loss: *m.get("val_loss")?, seconds })
        })
        .collect();
    Ok(RunRow {
        method: method.to_string(),
        replicate,
        schedule,
        curve,
        final_val_loss: out.final_eval.get("val_loss").copied().unwrap_or(f64::NAN),
        flops_total: trainer.flops_run(),
        teacher_flops: trainer.objective.teacher_flops(),
        selection_flops,
        train_seconds: out.train_seconds,
        teacher_seconds: trainer.objective.teacher_seconds(),
    })
}

/// Cumulative step seconds after every step.
struct SecondsLog(std::rc::Rc<std::cell::RefCell<Vec<f64>>>);

impl train::Hook<SaltObjective> for SecondsLog {
    fn after_step(
        &mut self,
        r: &train::StepRecord,
        _: &mut SaltObjective,
        _: &mut dyn train::Optimizer<f32>,
    ) -> train::Result<()> {
        let mut v = self.0.borrow_mut();
        let last = v.last().copied().unwrap_or(0.0);
        v.push(last + r.seconds);
        Ok(())
    }
}

/// Seconds to reach the baseline's final validation loss / the baseline's seconds (NaN when never reached).
pub fn seconds_fraction(baseline: &RunRow, run: &RunRow) -> f64 {
    let curve: Vec<(f64, f64)> = run.curve.iter().map(|p| (p.seconds, p.val_loss)).collect();
    let total = baseline.curve.last().map_or(f64::NAN, |p| p.seconds);
    first_reach(&curve, baseline.final_val_loss).map_or(f64::NAN, |s| s / total)
}

fn find<'a>(rows: &'a [RunRow], method: &str, replicate: usize) -> Option<&'a RunRow> {
    rows.iter().find(|r| r.method == method && r.replicate == replicate)
}

/// `1 - FLOPs to reach the baseline's final validation loss / baseline FLOPs`. A run that never reaches it
/// gets its upper bound, `1 - own FLOPs / baseline FLOPs`, and `reached = false`.
pub fn flop_gain(baseline: &RunRow, run: &RunRow) -> (f64, bool) {
    let curve: Vec<(f64, f64)> = run.curve.iter().map(|p| (p.flops, p.val_loss)).collect();
    let base = baseline.flops_total as f64;
    match first_reach(&curve, baseline.final_val_loss) {
        Some(f) => (1.0 - f / base, true),
        None => (1.0 - run.flops_total as f64 / base, false),
    }
}

/// Steps to reach the baseline's final validation loss / the baseline's steps (NaN when never reached).
pub fn step_fraction(baseline: &RunRow, run: &RunRow) -> f64 {
    let curve: Vec<(f64, f64)> = run.curve.iter().map(|p| (p.step as f64, p.val_loss)).collect();
    let steps = baseline.curve.last().map_or(f64::NAN, |p| p.step as f64);
    first_reach(&curve, baseline.final_val_loss).map_or(f64::NAN, |s| s / steps)
}

/// Per replicate `f(baseline, run of method)`.
fn per_replicate<T>(rows: &[RunRow], cfg: &KdPhaseConfig, method: &str, f: impl Fn(&RunRow, &RunRow) -> T) -> Vec<T> {
    (0..cfg.seeds).filter_map(|r| Some(f(find(rows, "baseline", r)?, find(rows, method, r)?))).collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn claims(report: &mut Report, cfg: &KdPhaseConfig, rows: &[RunRow], teacher: &TeacherRow) {
    let salt = per_replicate(rows, cfg, "salt", flop_gain);
    let reached = |g: &[(f64, bool)]| g.iter().all(|x| x.1) && !g.is_empty();
    let gains = |g: &[(f64, bool)]| g.iter().map(|x| x.0).collect::<Vec<_>>();
    let salt_gain = if reached(&salt) { mean(&gains(&salt)) } else { f64::NAN };
    report.metric("salt_flop_gain_per_replicate", gains(&salt));
    report.check(
        "salt-fewer-flops",
        "SALT reaches the baseline's final validation loss with fewer FLOPs, teacher included",
        "FLOPs to reach it / baseline FLOPs, mean over replicates (not reached: not measured)",
        1.0 - salt_gain,
        Check::Below(1.0),
    );
    // Wall-clock (teacher included), as a timing: it depends on the machine and on what else runs on it.
    for method in ["salt", "salt-ds"] {
        let wall = per_replicate(rows, cfg, method, seconds_fraction);
        report.timing(&format!("{method} seconds to reach the baseline's final loss / baseline seconds"), &wall);
    }
    let fractions = per_replicate(rows, cfg, "salt", step_fraction);
    report.metric("salt_step_fraction_per_replicate", &fractions);
    report.check(
        "salt-under-70pct-steps",
        "SALT matches the baseline with under 70% of its steps (the paper's figure)",
        "steps to reach the baseline's final validation loss / baseline steps, mean over replicates",
        mean(&fractions),
        Check::Below(0.7),
    );
    let g = gains(&salt);
    let spread = if g.len() >= 2 && reached(&salt) {
        g.iter().copied().fold(f64::NEG_INFINITY, f64::max) - g.iter().copied().fold(f64::INFINITY, f64::min)
    } else {
        f64::NAN
    };
    report.metric("salt_flop_gain_spread", spread);
    report.check(
        "salt-gain-beyond-spread",
        "SALT's FLOP saving exceeds its seed-to-seed spread (otherwise the gain is not established)",
        "mean FLOP gain - (max - min) of the per-replicate gains (one replicate: not measured)",
        salt_gain - spread,
        Check::Above(0.0),
    );

    // KD throughout vs SALT, once the student has overtaken the teacher.
    let crossings: Vec<Option<u64>> = (0..cfg.seeds)
        .map(|r| {
            let run = find(rows, "kd-whole-run", r)?;
            run.curve.iter().find(|p| p.val_loss < teacher.final_val_loss).map(|p| p.step)
        })
        .collect();
    report.metric("kd_whole_run_crosses_teacher_at_step", &crossings);
    let worse = per_replicate(rows, cfg, "kd-whole-run", |_, kd| {
        let salt = find(rows, "salt", kd.replicate).map_or(f64::NAN, |s| s.final_val_loss);
        kd.final_val_loss - salt
    });
    let crossed = crossings.iter().all(Option::is_some);
    report.check(
        "kd-whole-run-ends-worse",
        "distilling for the whole run ends worse than SALT once the student's loss has crossed the teacher's",
        "final val loss(KD whole run) - final val loss(SALT), mean over replicates (no crossing: not measured)",
        if crossed { mean(&worse) } else { f64::NAN },
        Check::Above(0.0),
    );

    let weak = per_replicate(rows, cfg, "salt-weak-teacher", flop_gain);
    report.metric("weak_teacher_flop_gain_per_replicate", gains(&weak));
    report.check(
        "weak-teacher-removes-gain",
        "a much weaker teacher removes most of SALT's gain",
        "FLOP gain(weak teacher) / FLOP gain(SALT), means over replicates (SALT without a gain: not measured)",
        if salt_gain > 0.0 { mean(&gains(&weak)) / salt_gain } else { f64::NAN },
        Check::AtMost(0.5),
    );

    let ds = per_replicate(rows, cfg, "salt-ds", flop_gain);
    report.metric("salt_ds_flop_gain_per_replicate", gains(&ds));
    report.check(
        "selection-adds-little",
        &format!(
            "SALT_DS's data selection adds little to SALT (at most {} of the baseline's FLOPs)",
            cfg.selection_tolerance
        ),
        "FLOP gain(SALT_DS) - FLOP gain(SALT), mean over replicates (either not reaching: not measured)",
        if reached(&ds) { mean(&gains(&ds)) - salt_gain } else { f64::NAN },
        Check::AtMost(cfg.selection_tolerance),
    );
}

fn figures(
    ctx: &RunCtx,
    report: &mut Report,
    rows: &[RunRow],
    teacher: &TeacherRow,
    weak: &TeacherRow,
    selection: &Selection,
) -> Result<()> {
    let first: Vec<&RunRow> = rows.iter().filter(|r| r.replicate == 0).collect();
    let steps = first.iter().flat_map(|r| r.curve.last()).map(|p| p.step as f64).fold(0.0, f64::max);
    let flops = first.iter().map(|r| r.flops_total as f64).fold(0.0, f64::max);
    let hline =
        |name: &str, loss: f64, x_max: f64, x_min: f64| Series::reference(name, vec![(x_min, loss), (x_max, loss)]);
    let mut by_step = Chart::new("Validation loss against steps (replicate 0)", "step", "validation loss (nats)");
    let mut by_flops = Chart::new(
        "Validation loss against FLOPs, teacher included (replicate 0)",
        "matrix-product FLOPs",
        "validation loss (nats)",
    )
    .log_x();
    for r in &first {
        by_step =
            by_step.series(Series::line(&r.method, r.curve.iter().map(|p| (p.step as f64, p.val_loss)).collect()));
        by_flops = by_flops.series(Series::line(&r.method, r.curve.iter().map(|p| (p.flops, p.val_loss)).collect()));
    }
    let min_flops = first.iter().flat_map(|r| r.curve.first()).map(|p| p.flops).fold(f64::INFINITY, f64::min);
    by_step = by_step.series(hline("teacher (final)", teacher.final_val_loss, steps, 0.0)).series(hline(
        "weak teacher (final)",
        weak.final_val_loss,
        steps,
        0.0,
    ));
    by_flops = by_flops.series(hline("teacher (final)", teacher.final_val_loss, flops, min_flops)).series(hline(
        "weak teacher (final)",
        weak.final_val_loss,
        flops,
        min_flops,
    ));
    report.line_figure(
        ctx,
        "val_loss_vs_steps.png",
        "validation loss against steps; lines: the teachers' final loss",
        &by_step,
    )?;
    report.line_figure(
        ctx,
        "val_loss_vs_flops.png",
        "validation loss against FLOPs (teacher forward passes and SALT_DS scoring included)",
        &by_flops,
    )?;
    let mut scores: Vec<f64> = selection.scores.iter().flatten().copied().collect();
    scores.sort_by(f64::total_cmp);
    let n = scores.len().max(1) as f64;
    let cut = 1.0 - selection.selected.len() as f64 / n;
    let chart =
        Chart::new("SALT_DS window scores (teacher)", "quantile", "median teacher loss over top-k tokens (nats)")
            .series(Series::line("score", scores.iter().enumerate().map(|(i, &s)| ((i as f64 + 0.5) / n, s)).collect()))
            .series(Series::reference(
                "selected above",
                vec![(cut, scores.first().copied().unwrap_or(0.0)), (cut, scores.last().copied().unwrap_or(0.0))],
            ));
    report.line_figure(
        ctx,
        "selection_scores.png",
        "distribution of SALT_DS scores; right of the line: selected",
        &chart,
    )?;
    Ok(())
}

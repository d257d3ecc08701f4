//! `grafting/multitask` (P8): one MiniLM fine-tuned on several sentence tasks at once (each with its own
//! parameter-free head), then each task's region learned from the multi-task delta on that task's few-shot set.
//! Reported: the overlap matrix `|g_i & g_j| / |g_j|` per seed, the overlap of a task's regions across seeds, and
//! each task's accuracy with its own region and with every other task's region grafted.

use report::{Check, Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};
use train::Trainer;

use crate::experiments::localize::FinetuneRun;
use crate::mask::{Mask, Weights, set_weights};
use crate::model::{
    Classifier, FinetuneObjective, MultitaskObjective, PromptHead, few_shot, region_gradient, subsample,
};
use crate::search::{SearchConfig, learn_mask};
use crate::{Error, Result};
use data::text::Labelled;

/// One task: a registered dataset and a description per class (in label order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// `sst2`, `mr`, `cr`, `subj`, `mpqa`, `trec` or `cola`.
    pub dataset: String,
    pub descriptions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultitaskConfig {
    pub tasks: Vec<TaskSpec>,
    /// At least two: same-task overlaps are across seeds.
    pub data_seeds: Vec<u64>,
    pub per_class: usize,
    pub min_words: usize,
    pub scale: f32,
    pub max_len: usize,
    /// Steps and batch are per task (every step takes one batch of each task).
    pub finetune: FinetuneRun,
    /// Each task's region, as a fraction of the layers' parameters.
    pub sparsity: f64,
    pub search: SearchConfig,
    /// Test sentences per task (seeded sample of its dev/test split, or of the 10% held out of a single file).
    pub test_examples: usize,
    pub eval_batch: usize,
}

fn task(dataset: &str, descriptions: &[&str]) -> TaskSpec {
    TaskSpec { dataset: dataset.into(), descriptions: descriptions.iter().map(|d| d.to_string()).collect() }
}

impl Presets for MultitaskConfig {
    fn smoke() -> Self {
        MultitaskConfig {
            per_class: 2,
            finetune: FinetuneRun { steps: 2, ..Self::quick().finetune },
            search: SearchConfig { steps: 1, ..Self::quick().search },
            test_examples: 8,
            ..Self::quick()
        }
    }
    fn quick() -> Self {
        MultitaskConfig {
            tasks: vec![
                task("sst2", &["It was terrible.", "It was great."]),
                task("subj", &["It is a plot summary.", "It is an opinion."]),
            ],
            data_seeds: vec![13, 42],
            per_class: 16,
            min_words: 5,
            scale: 50.0,
            max_len: 64,
            finetune: FinetuneRun {
                name: "sgd".into(),
                optimizer: tensor::optim::SgdConfig { lr: 1e-3, ..Default::default() }.into(),
                steps: 500,
                batch: 2,
                l1: 0.0,
                data_seeds: None,
            },
            sparsity: 0.01,
            search: SearchConfig { steps: 10, lr: 1e9, bias: 10.0, batch: 16 },
            test_examples: 500,
            eval_batch: 50,
        }
    }
    fn full() -> Self {
        MultitaskConfig {
            tasks: vec![
                task("sst2", &["It was terrible.", "It was great."]),
                task("mr", &["It was terrible.", "It was great."]),
                task("subj", &["It is a plot summary.", "It is an opinion."]),
                task(
                    "trec",
                    &[
                        "It asks for an abbreviation.",
                        "It asks for an entity.",
                        "It asks for a description.",
                        "It asks for a person.",
                        "It asks for a location.",
                        "It asks for a number.",
                    ],
                ),
            ],
            data_seeds: vec![13, 42, 100],
            finetune: FinetuneRun { steps: 1000, ..Self::quick().finetune },
            search: SearchConfig { steps: 50, ..Self::quick().search },
            test_examples: 1000,
            ..Self::quick()
        }
    }
}

impl MultitaskConfig {
    fn validate(&self) -> Result<()> {
        if self.tasks.len() < 2 || self.data_seeds.len() < 2 {
            return Err(Error::Config("multitask needs at least 2 tasks and 2 data seeds".into()));
        }
        if !(self.sparsity > 0.0 && self.sparsity < 1.0) || self.test_examples == 0 || self.per_class == 0 {
            return Err(Error::Config(format!("sparsity {} in (0, 1), positive sizes", self.sparsity)));
        }
        let mut seeds = self.data_seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != self.data_seeds.len() {
            return Err(Error::Config("data seeds must be distinct".into()));
        }
        if self.finetune.data_seeds.is_some() {
            return Err(Error::Config("finetune.data_seeds: every multitask run uses all of data_seeds".into()));
        }
        self.search.validate()
    }
}

/// The few-shot pool, the test set and the class count of a registered task.
fn load_task(dataset: &str, data_dir: Option<&std::path::Path>) -> Result<(Vec<Labelled>, Vec<Labelled>, u32)> {
    let dir = data::fetch::obtain(dataset, data_dir)?;
    let held_out = |all: Vec<Labelled>| {
        // Single-file sets: a fixed 10% is the test split, the rest the pool.
        let order = tensor::permutation(all.len(), &mut tensor::seeded(0));
        let cut = all.len() / 10;
        let test = order[..cut].iter().map(|&i| all[i].clone()).collect();
        let pool = order[cut..].iter().map(|&i| all[i].clone()).collect();
        (pool, test)
    };
    Ok(match dataset {
        "sst2" => {
            let (a, b) = data::text::sst2(&dir)?;
            (a, b, 2)
        }
        "trec" => {
            let (a, b) = data::text::trec(&dir)?;
            (a, b, 6)
        }
        "cola" => {
            let (a, b) = data::text::cola(&dir)?;
            (a, b, 2)
        }
        "mr" | "subj" | "mpqa" | "cr" => {
            let all = match dataset {
                "mr" => data::text::mr(&dir)?,
                "subj" => data::text::subj(&dir)?,
                "mpqa" => data::text::mpqa(&dir)?,
                _ => data::text::cr(&dir)?,
            };
            let (p, t) = held_out(all);
            (p, t, 2)
        }
        other => {
            return Err(Error::Config(format!(
                "unknown task dataset `{other}` (sst2, mr, cr, subj, mpqa, trec, cola)"
            )));
        }
    })
}

/// `grafting/multitask`.
#[derive(Debug, Clone, Copy)]
pub struct Multitask;

/// One task's accuracy with one region grafted (or the pretrained / fine-tuned model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyRow {
    pub seed: u64,
    pub task: String,
    /// `pretrained`, `fine-tuned`, or `region:<task>`.
    pub model: String,
    pub accuracy: f64,
}

/// Overlap `|a & b| / |b|` of two regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlapRow {
    pub task_a: String,
    pub seed_a: u64,
    pub task_b: String,
    pub seed_b: u64,
    pub overlap: f64,
}

impl Experiment for Multitask {
    type Config = MultitaskConfig;
    type Error = Error;
    const ID: &'static str = "grafting/multitask";
    const ABOUT: &'static str = "P8: one MiniLM fine-tuned on several tasks; per-task regions, their overlaps within and across seeds, \
         accuracy under own and other tasks' regions";

    fn run(&self, ctx: &RunCtx, cfg: &MultitaskConfig) -> Result<Report> {
        cfg.validate()?;
        let mut report = Report::new(ctx, cfg);
        let model_dir = data::fetch::obtain("all-MiniLM-L6-v2", ctx.data_dir.as_deref())?;
        let mut sets = Vec::new();
        for t in &cfg.tasks {
            let (pool, test, classes) = load_task(&t.dataset, ctx.data_dir.as_deref())?;
            if t.descriptions.len() != classes as usize {
                return Err(Error::Config(format!(
                    "{}: {} descriptions for {classes} classes",
                    t.dataset,
                    t.descriptions.len()
                )));
            }
            sets.push((
                pool,
                subsample(&test, cfg.test_examples, ctx.seed_for(&format!("{} test", t.dataset))),
                classes,
            ));
        }
        let encoder0 = transformer::Encoder::from_pretrained(&model_dir)?;
        let tokenizer = data::hf::HfTokenizer::from_file(&model_dir.join("tokenizer.json"))?;
        let heads: Vec<PromptHead> = cfg
            .tasks
            .iter()
            .map(|t| PromptHead::new(&encoder0, &tokenizer, &t.descriptions, cfg.scale))
            .collect::<Result<_>>()?;
        let bar = ctx.progress(cfg.data_seeds.len() as u64, "seeds");
        let (mut accuracy, mut regions): (Vec<AccuracyRow>, Vec<(String, u64, Mask)>) = (Vec::new(), Vec::new());
        for &seed in &cfg.data_seeds {
            let encoder = transformer::Encoder::from_pretrained(&model_dir)?;
            let classifier = |i: usize| Classifier {
                encoder: encoder.clone(),
                tokenizer: tokenizer.clone(),
                head: heads[i].clone(),
                max_len: cfg.max_len,
            };
            let pre = classifier(0).region_weights();
            let trains: Vec<Vec<Labelled>> = sets
                .iter()
                .map(|(pool, _, classes)| few_shot(pool, *classes, cfg.per_class, cfg.min_words, seed))
                .collect::<Result<_>>()?;
            let mut record = |task: usize, model: &str, acc: f64| {
                accuracy.push(AccuracyRow {
                    seed,
                    task: cfg.tasks[task].dataset.clone(),
                    model: model.into(),
                    accuracy: acc,
                })
            };
            for (i, (_, test, _)) in sets.iter().enumerate() {
                record(i, "pretrained", classifier(i).evaluate(test, cfg.eval_batch)?.accuracy);
            }
            encoder.params.set_trainable("embeddings", false);
            let objectives = (0..cfg.tasks.len())
                .map(|i| {
                    let o = FinetuneObjective::new(
                        classifier(i),
                        trains[i].clone(),
                        cfg.finetune.batch,
                        seed + i as u64,
                        0.0,
                    )?;
                    Ok((cfg.tasks[i].dataset.clone(), o))
                })
                .collect::<Result<Vec<_>>>()?;
            Trainer::new(cfg.finetune.train_config(seed), MultitaskObjective::new(objectives)?, None)?.run()?;
            let ft: Weights = classifier(0).region_weights();
            for (i, (_, test, _)) in sets.iter().enumerate() {
                record(i, "fine-tuned", classifier(i).evaluate(test, cfg.eval_batch)?.accuracy);
            }
            let total: usize = pre.values().map(|w| w.len()).sum();
            let k = ((cfg.sparsity * total as f64).round() as usize).max(1);
            let mut rng = tensor::derived(seed, 11);
            let mut seed_regions = Vec::new();
            for i in 0..cfg.tasks.len() {
                // The task's own start: the k coordinates whose grafting lowers its loss most to first order,
                // -dL_i/dtheta(pre) * delta (a shared top-|delta| start would make every region the same).
                set_weights(&encoder.params, &pre)?;
                let (_, g) = region_gradient(&classifier(i), &trains[i], cfg.search.batch)?;
                let gain: Weights = g.iter().map(|(n, g)| (n.clone(), -(g * &(&ft[n] - &pre[n])))).collect();
                let base = Mask::top_scores(&gain, k)?;
                let search = learn_mask(&classifier(i), &pre, &ft, &base, &trains[i], &cfg.search, &mut rng)?;
                seed_regions.push(search.best);
            }
            for (j, region) in seed_regions.iter().enumerate() {
                set_weights(&encoder.params, &region.graft(&pre, &ft)?)?;
                for (i, (_, test, _)) in sets.iter().enumerate() {
                    let acc = classifier(i).evaluate(test, cfg.eval_batch)?.accuracy;
                    record(i, &format!("region:{}", cfg.tasks[j].dataset), acc);
                }
            }
            for (i, r) in seed_regions.into_iter().enumerate() {
                regions.push((cfg.tasks[i].dataset.clone(), seed, r));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mut overlaps = Vec::new();
        for (ta, sa, a) in &regions {
            for (tb, sb, b) in &regions {
                if (ta, sa) != (tb, sb) {
                    let row = OverlapRow {
                        task_a: ta.clone(),
                        seed_a: *sa,
                        task_b: tb.clone(),
                        seed_b: *sb,
                        overlap: a.overlap(b),
                    };
                    overlaps.push(row);
                }
            }
        }
        report.metric("accuracy", &accuracy);
        report.metric("overlaps", &overlaps);
        report.metric("region_size", regions.first().map(|(_, _, m)| m.count()));
        claims(&mut report, cfg, &accuracy, &overlaps);
        report.note(overlap_table(cfg, &overlaps));
        report.note(
            "Every task's region starts from its own first-order choice (the coordinates with the largest \
             -dL_task/dtheta at the pretrained weights times the multi-task delta) and is learned on that task's \
             few-shot set with that task's head; regions keep the size budget. Overlap(a, b) = |a & b| / |b|.",
        );
        Ok(report)
    }
}

fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.into_iter().collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn claims(report: &mut Report, cfg: &MultitaskConfig, accuracy: &[AccuracyRow], overlaps: &[OverlapRow]) {
    let different = mean(overlaps.iter().filter(|o| o.task_a != o.task_b && o.seed_a == o.seed_b).map(|o| o.overlap));
    let same = mean(overlaps.iter().filter(|o| o.task_a == o.task_b).map(|o| o.overlap));
    // The same-task overlaps differ from task to task; a difference inside their range is not a finding.
    let same_values: Vec<f64> = overlaps.iter().filter(|o| o.task_a == o.task_b).map(|o| o.overlap).collect();
    let spread = same_values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        - same_values.iter().copied().fold(f64::INFINITY, f64::min);
    report.metric("mean_overlap_different_tasks_same_seed", different);
    report.metric("mean_overlap_same_task_across_seeds", same);
    report.metric("same_task_overlap_spread", spread);
    report.check(
        "regions-of-different-tasks-overlap-less",
        "regions of different tasks (same model) overlap less than regions of the same task across seeds",
        "mean overlap(different tasks) - mean overlap(same task, other seed); not measured when its size is \
         within the spread (max - min) of the same-task overlaps",
        if (different - same).abs() > spread { different - same } else { f64::NAN },
        Check::Below(0.0),
    );
    let acc = |task: &str, model: &str| {
        mean(accuracy.iter().filter(|r| r.task == task && r.model == model).map(|r| r.accuracy))
    };
    let mut own_minus_other = Vec::new();
    for t in &cfg.tasks {
        let own = acc(&t.dataset, &format!("region:{}", t.dataset));
        for o in cfg.tasks.iter().filter(|o| o.dataset != t.dataset) {
            own_minus_other.push(own - acc(&t.dataset, &format!("region:{}", o.dataset)));
        }
    }
    report.metric("own_minus_other_region_accuracy", &own_minus_other);
    report.check(
        "own-region-serves-its-task-best",
        "a task is more accurate with its own region grafted than with another task's region of the same size",
        "mean over ordered task pairs of accuracy(own region) - accuracy(other's region), mean over seeds",
        mean(own_minus_other.iter().copied()),
        Check::Above(0.0),
    );
}

fn overlap_table(cfg: &MultitaskConfig, overlaps: &[OverlapRow]) -> String {
    let names: Vec<&str> = cfg.tasks.iter().map(|t| t.dataset.as_str()).collect();
    let mut s = format!(
        "Overlap |row & column| / |column|, mean over seeds (diagonal: the same task across seeds):\n\n| | {} |\n|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for a in &names {
        let cells: Vec<String> = names
            .iter()
            .map(|b| {
                let v = mean(
                    overlaps
                        .iter()
                        .filter(|o| o.task_a == *a && o.task_b == *b && ((a == b) || o.seed_a == o.seed_b))
                        .map(|o| o.overlap),
                );
                format!("{v:.3}")
            })
            .collect();
        s.push_str(&format!("| {a} | {} |\n", cells.join(" | ")));
    }
    s
}

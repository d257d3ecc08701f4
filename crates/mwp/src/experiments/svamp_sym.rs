//! `mwp/svamp-sym`: numeric, symbolic and self-prompted zero-shot runs of a model on SVAMP_Sym (P7).
//!
//! 1. Symbolise SVAMP (every exception listed in the report) and pick the problems.
//! 2. Ask the model (any [`BackendConfig`]; replies cached on disk) in three ways, each a reasoning turn and
//!    an answer turn.
//! 3. Score exactly; accuracies and alignments with bootstrap intervals, per problem type.
//! 4. Claims: self-prompting raises alignment, and lifts symbolic accuracy to at least the better of the plain
//!    numeric and symbolic accuracies. Each is decided by its paired bootstrap interval; with too few correct or
//!    aligned answers to tell (a small model) the claim is "not measured" and the report names the model.

use std::path::PathBuf;

use rand::seq::SliceRandom;
use report::stats::{Interval, bootstrap};
use report::{Experiment, Presets, Report, RunCtx};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Cached, OpenAiBackend, OpenAiConfig};
use crate::decoder::{DecoderBackend, TokenizerSpec};
use crate::eval::{Generation, ProblemRow, evaluate, summarize, summarize_by_kind};
use crate::prompts::PromptSet;
use crate::symbolic::{VariableStyle, symbolize_all};
use crate::{Error, Result};

/// The model to ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendConfig {
    /// An OpenAI-compatible server (llama.cpp, vLLM, Ollama, a hosted API).
    OpenAi(OpenAiConfig),
    /// A Strata decoder saved by `Decoder::save` (e.g. `strata-train`'s `model.safetensors`).
    Strata { weights: PathBuf, tokenizer: TokenizerSpec },
}

/// The reproduction's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvampSymConfig {
    pub backend: BackendConfig,
    /// Problems asked: a seeded sample of this many (0: all 1,000), in the file's order.
    pub problems: usize,
    pub selection_seed: u64,
    pub style: VariableStyle,
    pub generation: Generation,
    /// Random rational points at which expressions are compared.
    pub equivalence_points: usize,
    pub bootstrap_resamples: usize,
    /// A claim needs at least this many correct (or aligned) answers among the runs it compares; below, it
    /// is not measured.
    pub min_events: usize,
    /// A folder with the five prompt files (`None`: the built-in `crates/mwp/prompts/`).
    pub prompts: Option<PathBuf>,
    /// Where replies are cached (`None`: `$STRATA_CACHE_DIR/mwp-replies`, else the user cache
    /// `~/.cache/strata/mwp-replies`).
    pub cache_dir: Option<PathBuf>,
}

impl SvampSymConfig {
    fn preset(problems: usize, max_tokens: usize) -> Self {
        SvampSymConfig {
            backend: BackendConfig::OpenAi(OpenAiConfig::default()),
            problems,
            selection_seed: 0,
            style: VariableStyle::Wxyz,
            generation: Generation {
                max_tokens,
                answer_tokens: 32,
                temperature: 0.0,
                stop: vec!["\nQ:".into()],
                concurrency: 2,
            },
            equivalence_points: 8,
            bootstrap_resamples: 2000,
            min_events: 5,
            prompts: None,
            cache_dir: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.generation.validate()?;
        if self.equivalence_points < 2 || self.bootstrap_resamples < 100 || self.problems > 1000 {
            return Err(Error::Config(format!(
                "equivalence_points {} must be >= 2, bootstrap_resamples {} >= 100, problems {} <= 1000",
                self.equivalence_points, self.bootstrap_resamples, self.problems
            )));
        }
        if let BackendConfig::OpenAi(settings) = &self.backend {
            settings.validate()?;
        }
        Ok(())
    }

    fn cache_dir(&self) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("STRATA_CACHE_DIR").filter(|v| !v.is_empty()) {
            return PathBuf::from(d).join("mwp-replies");
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        base.join("strata").join("mwp-replies")
    }
}

impl Presets for SvampSymConfig {
    fn smoke() -> Self {
        SvampSymConfig {
            generation: Generation { answer_tokens: 16, ..Self::preset(3, 32).generation },
            ..Self::preset(3, 32)
        }
    }

    fn quick() -> Self {
        Self::preset(25, 128)
    }

    fn full() -> Self {
        Self::preset(300, 192)
    }
}

/// The `mwp/svamp-sym` reproduction.
#[derive(Debug, Clone, Copy)]
pub struct SvampSym;

impl Experiment for SvampSym {
    type Config = SvampSymConfig;
    type Error = Error;
    const ID: &'static str = "mwp/svamp-sym";
    const ABOUT: &'static str =
        "P7: numeric, symbolic and self-prompted accuracy and alignment of a language model on SVAMP_Sym";

    fn run(&self, ctx: &RunCtx, cfg: &SvampSymConfig) -> Result<Report> {
        cfg.validate()?;
        let mut report = Report::new(ctx, cfg);
        let svamp = data::text::svamp(&data::fetch::obtain("svamp", ctx.data_dir.as_deref())?)?;
        let all = symbolize_all(&svamp, cfg.style)?;
        let exceptions: Vec<String> =
            all.iter().flat_map(|p| p.exceptions.iter().map(move |e| format!("{}: {}", p.id, e.describe()))).collect();
        report.metric("exceptions", &exceptions);

        let mut order: Vec<usize> = (0..all.len()).collect();
        if cfg.problems > 0 && cfg.problems < all.len() {
            order.shuffle(&mut tensor::seeded(cfg.selection_seed));
            order.truncate(cfg.problems);
            order.sort_unstable();
        }
        let problems: Vec<_> = order.iter().map(|&i| all[i].clone()).collect();
        let prompts = match &cfg.prompts {
            Some(dir) => PromptSet::load(dir)?,
            None => PromptSet::default(),
        };
        prompts.validate()?;

        let mut served = Vec::new();
        let inner: Box<dyn Backend> = match &cfg.backend {
            BackendConfig::OpenAi(settings) => {
                let client = OpenAiBackend::new(settings.clone())?;
                // What the server says it serves (llama.cpp: the GGUF file), for the report; best effort.
                served = client.list_models().unwrap_or_default();
                Box::new(client)
            }
            BackendConfig::Strata { weights, tokenizer } => Box::new(DecoderBackend::load(weights, tokenizer)?),
        };
        let model_name = inner.identity();
        let cache_dir = cfg.cache_dir();
        let backend = Cached::new(inner, &cache_dir)?;
        let bar = ctx.progress((problems.len() * 6) as u64, "model requests");
        let rows =
            evaluate(&backend, &problems, &prompts, &cfg.generation, ctx.seed, cfg.equivalence_points, &|| bar.inc(1))?;
        bar.finish_and_clear();
        let (hits, calls) = backend.counts();
        report.timing("cache hits", hits);
        report.timing("model calls", calls);
        report.metric("model", &model_name);
        // Full texts go to rows.jsonl (for re-scoring and reading); the report keeps the scored answers.
        let out = ctx.out_dir()?;
        let mut jsonl = String::new();
        for r in &rows {
            jsonl.push_str(&serde_json::to_string(r).expect("rows serialize"));
            jsonl.push('\n');
        }
        let path = out.join("rows.jsonl");
        tensor::write_atomic(&path, jsonl.as_bytes())
            .map_err(|e| Error::Backend(format!("writing {}: {e}", path.display())))?;
        report.metric("answers", rows.iter().map(compact).collect::<Vec<_>>());
        report.metric("summary", summarize(&rows));
        report.metric("by_type", summarize_by_kind(&rows));
        let named = served.first().cloned().unwrap_or_else(|| model_name.clone());
        claims(&mut report, cfg, &rows, ctx.seed_for("bootstrap"), &named)?;
        report.note(format!(
            "Model: {model_name}{}. Replies are cached in {} by a SHA-256 of (backend, request): a rerun with the same \
             config re-scores without calling the model.",
            if served.is_empty() { String::new() } else { format!(" (the server lists: {})", served.join(", ")) },
            cache_dir.display()
        ));
        report.note(format!(
            "SVAMP_Sym: {} problems symbolised with style {:?}; {} exceptions in the source data (metric \
             `exceptions`). The numeric gold answer is the equation's value (chal-680's given answer disagrees \
             with its equation).",
            all.len(),
            cfg.style,
            exceptions.len()
        ));
        report.note(
            "Scoring: a number matches when equal to the gold value, or when it is the gold value rounded to the \
             decimal places the model wrote; an expression is correct when it equals the gold equation at every \
             one of `equivalence_points` random rational points (exact arithmetic); alignment compares the \
             expression's value at the problem's numbers with the model's own numeric answer. Answers are read \
             from the answer turn, else from the reasoning; unparsed answers are counted in `summary`.",
        );
        Ok(report)
    }
}

/// One problem's scored answers, without the texts.
fn compact(r: &ProblemRow) -> serde_json::Value {
    let stage = |s: &crate::eval::StageResult| serde_json::json!({"answer": s.extracted, "correct": s.correct, "aligned": s.aligned, "parsed": s.parsed});
    serde_json::json!({
        "id": r.id, "type": r.kind, "gold": r.gold_answer, "gold_expression": r.gold_expression,
        "numeric": stage(&r.numeric), "symbolic": stage(&r.symbolic), "self_prompt": stage(&r.self_prompt),
    })
}

/// A paired bootstrap interval of `statistic` over problems.
fn interval(
    rows: &[ProblemRow],
    resamples: usize,
    seed: u64,
    statistic: impl Fn(&[&ProblemRow]) -> f64,
) -> Result<Interval> {
    Ok(bootstrap(rows.len(), resamples, 0.95, seed, |idx| {
        let picked: Vec<&ProblemRow> = idx.iter().map(|&i| &rows[i]).collect();
        statistic(&picked)
    })?)
}

fn mean(rows: &[&ProblemRow], f: impl Fn(&ProblemRow) -> bool) -> f64 {
    rows.iter().filter(|r| f(r)).count() as f64 / rows.len().max(1) as f64
}

/// The claim's measured value: the interval's lower end when the whole interval is on the claimed side, the
/// upper end when it is wholly on the other side, NaN (not measured) when it straddles the threshold or there
/// are too few events to tell.
fn decided(iv: &Interval, events: usize, min_events: usize, strict: bool) -> f64 {
    let above = if strict { iv.low > 0.0 } else { iv.low >= 0.0 };
    if events < min_events {
        f64::NAN
    } else if above {
        iv.low
    } else if iv.high < 0.0 || (strict && iv.high <= 0.0) {
        iv.high
    } else {
        f64::NAN
    }
}

fn claims(report: &mut Report, cfg: &SvampSymConfig, rows: &[ProblemRow], seed: u64, model: &str) -> Result<()> {
    let n = cfg.bootstrap_resamples;
    let gain = interval(rows, n, seed, |r| mean(r, |p| p.self_prompt.aligned) - mean(r, |p| p.symbolic.aligned))?;
    let lift = interval(rows, n, seed ^ 1, |r| {
        mean(r, |p| p.self_prompt.correct) - mean(r, |p| p.numeric.correct).max(mean(r, |p| p.symbolic.correct))
    })?;
    let measures: [(&str, fn(&ProblemRow) -> bool); 5] = [
        ("numeric accuracy", |p| p.numeric.correct),
        ("symbolic accuracy", |p| p.symbolic.correct),
        ("self-prompt symbolic accuracy", |p| p.self_prompt.correct),
        ("alignment", |p| p.symbolic.aligned),
        ("self-prompt alignment", |p| p.self_prompt.aligned),
    ];
    for (name, f) in measures {
        let iv = interval(rows, n, seed ^ 2, |r| mean(r, f))?;
        report.metric(&format!("{name} (95% interval)"), iv);
    }
    // The same per problem type.
    let mut kinds: std::collections::BTreeMap<&str, Vec<ProblemRow>> = Default::default();
    for r in rows {
        kinds.entry(r.kind.as_str()).or_default().push(r.clone());
    }
    let mut by_type = std::collections::BTreeMap::new();
    for (kind, rs) in &kinds {
        let mut m = std::collections::BTreeMap::new();
        for (name, f) in measures {
            m.insert(name, interval(rs, n, seed ^ 3, |r| mean(r, f))?);
        }
        by_type.insert(kind.to_string(), m);
    }
    report.metric("by_type (95% intervals)", by_type);
    report.metric("alignment gain (95% interval)", gain);
    report.metric("symbolic lift over max(numeric, symbolic) (95% interval)", lift);
    let aligned = rows.iter().filter(|r| r.self_prompt.aligned || r.symbolic.aligned).count();
    let correct = rows.iter().filter(|r| r.numeric.correct || r.symbolic.correct || r.self_prompt.correct).count();
    let v1 = report.check(
        "self_prompt_raises_alignment",
        "Self-prompting raises the alignment between the model's symbolic and numeric answers",
        "95% interval of alignment(self-prompt) - alignment(plain), its end on the decided side",
        decided(&gain, aligned, cfg.min_events, true),
        report::Check::Above(0.0),
    );
    let v2 = report.check(
        "self_prompt_lifts_symbolic_accuracy",
        "Symbolic accuracy with self-prompting is at least the better of plain numeric and plain symbolic accuracy",
        "95% interval of acc(self-prompt) - max(acc(numeric), acc(symbolic)), its end on the decided side",
        decided(&lift, correct, cfg.min_events, false),
        report::Check::AtLeast(0.0),
    );
    if v1 == report::Verdict::NotMeasured || v2 == report::Verdict::NotMeasured {
        report.note(format!(
            "Not measured means the data cannot decide: the 95% interval contains 0, or fewer than {} problems \
             had an aligned ({aligned}) or correct ({correct}) answer in the runs compared. With {model} on {} \
             problems the claims are not established at this model size or sample.",
            cfg.min_events,
            rows.len()
        ));
    }
    Ok(())
}

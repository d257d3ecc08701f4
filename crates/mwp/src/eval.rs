//! The evaluation: numeric, symbolic and self-prompted runs of a model on SVAMP_Sym problems, each a reasoning
//! turn then an answer turn, scored exactly; rows out, metrics with bootstrap intervals computed from the rows.

use std::collections::BTreeMap;

use num_rational::BigRational;
use num_traits::Signed;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::backend::{Backend, Message, Reply, Request, generate_all};
use crate::expr::{Equivalence, to_f64};
use crate::extract::{Extracted, Extraction, Rule, extract_expression, extract_number};
use crate::prompts::{PromptSet, render};
use crate::symbolic::SymProblem;

/// Generation settings shared by every stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// Token limit of a reasoning turn.
    pub max_tokens: usize,
    /// Token limit of an answer turn.
    pub answer_tokens: usize,
    /// 0: greedy.
    pub temperature: f64,
    /// Stop strings of a reasoning turn (e.g. `"\nQ:"`, so a completion model does not invent the next
    /// question).
    pub stop: Vec<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Generation {
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 || self.answer_tokens == 0 || self.concurrency == 0 {
            return Err(crate::Error::Config("max_tokens, answer_tokens and concurrency must be at least 1".into()));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(crate::Error::Config(format!("temperature {} must be finite and >= 0", self.temperature)));
        }
        Ok(())
    }
}

/// One stage's outcome for one problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    pub reasoning: String,
    pub answer_text: String,
    /// The extracted answer as text (`""` when unparsed).
    pub extracted: String,
    pub rule: Rule,
    /// Where the answer was read: the answer turn, or the reasoning when the answer turn had none.
    pub from_reasoning: bool,
    pub parsed: bool,
    /// Numeric runs: the answer equals the gold one. Symbolic runs: the expression is equivalent to the gold
    /// symbolic equation.
    pub correct: bool,
    /// Symbolic runs: the expression uses a variable and, evaluated at the problem's numbers, equals the
    /// model's own numeric answer (from the numeric run). Always false for numeric runs.
    pub aligned: bool,
    /// Symbolic runs: the expression's value at the problem's numbers (when defined).
    pub value: Option<f64>,
    pub truncated: bool,
    /// Symbolic runs: the answer is a number without variables.
    #[serde(default)]
    pub constant: bool,
}

/// Everything about one problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemRow {
    pub id: String,
    pub kind: String,
    pub variables: usize,
    pub gold_answer: f64,
    pub gold_expression: String,
    pub numeric: StageResult,
    pub symbolic: StageResult,
    pub self_prompt: StageResult,
}

/// Whether a model's number matches the gold one: exactly, or, for a decimal the model wrote with k >= 1
/// places, when it is the gold value rounded to k places (`33.33` for 100/3).
pub fn numbers_match(model: &BigRational, gold: &BigRational) -> bool {
    if model == gold {
        return true;
    }
    let ten = num_bigint::BigInt::from(10);
    // The decimal places the model wrote: the least k with model * 10^k an integer.
    let Some(places) =
        (0..=12usize).find(|&k| (model * BigRational::from_integer(num_traits::pow(ten.clone(), k))).is_integer())
    else {
        return false;
    };
    if places == 0 {
        return false;
    }
    let half_ulp = BigRational::new(5.into(), num_traits::pow(ten, places + 1));
    (model - gold).abs() <= half_ulp
}

fn messages_numeric(prompts: &PromptSet, p: &SymProblem) -> Result<Vec<Message>> {
    Ok(vec![Message::user(render(&prompts.numeric, &[("problem", &p.text)])?)])
}

fn messages_symbolic(prompts: &PromptSet, p: &SymProblem) -> Result<Vec<Message>> {
    let vars = p.variable_list();
    Ok(vec![Message::user(render(&prompts.symbolic, &[("problem", &p.symbolic_text), ("variables", &vars)])?)])
}

fn messages_self(prompts: &PromptSet, p: &SymProblem, numeric_solution: &str) -> Result<Vec<Message>> {
    let vars = p.variable_list();
    Ok(vec![Message::user(render(
        &prompts.self_prompt,
        &[
            ("numeric_problem", &p.text),
            ("numeric_solution", numeric_solution),
            ("problem", &p.symbolic_text),
            ("variables", &vars),
        ],
    )?)])
}

/// The answer turn after a reasoning turn.
fn answer_turn(mut messages: Vec<Message>, reasoning: &str, answer_prompt: String) -> Vec<Message> {
    messages.push(Message::assistant(reasoning.trim()));
    messages.push(Message::user(answer_prompt));
    messages
}

/// Runs the three evaluations on `problems` and scores them. `progress` is called after every request.
pub fn evaluate(
    backend: &dyn Backend,
    problems: &[SymProblem],
    prompts: &PromptSet,
    generation: &Generation,
    seed: u64,
    equivalence_points: usize,
    progress: &(dyn Fn() + Sync),
) -> Result<Vec<ProblemRow>> {
    generation.validate()?;
    let request = |messages: Vec<Message>, answer: bool| Request {
        messages,
        max_tokens: if answer { generation.answer_tokens } else { generation.max_tokens },
        temperature: generation.temperature,
        stop: if answer { vec!["\n\n".into()] } else { generation.stop.clone() },
        seed,
    };
    let run = |reqs: Vec<Request>| generate_all(backend, &reqs, generation.concurrency, progress);

    // Wave 1: numeric and symbolic reasoning (independent).
    let numeric_msgs: Vec<Vec<Message>> =
        problems.iter().map(|p| messages_numeric(prompts, p)).collect::<Result<_>>()?;
    let symbolic_msgs: Vec<Vec<Message>> =
        problems.iter().map(|p| messages_symbolic(prompts, p)).collect::<Result<_>>()?;
    let wave1 = run(numeric_msgs.iter().chain(&symbolic_msgs).map(|m| request(m.clone(), false)).collect())?;
    let (num_reason, sym_reason) = wave1.split_at(problems.len());

    // Wave 2: the answer turns of both.
    let numeric_answer_msgs: Vec<Vec<Message>> = numeric_msgs
        .iter()
        .zip(num_reason)
        .map(|(m, r)| Ok(answer_turn(m.clone(), &r.text, render(&prompts.numeric_answer, &[])?)))
        .collect::<Result<_>>()?;
    let symbolic_answer_msgs: Vec<Vec<Message>> = symbolic_msgs
        .iter()
        .zip(sym_reason)
        .zip(problems)
        .map(|((m, r), p)| {
            let prompt = render(&prompts.symbolic_answer, &[("variables", &p.variable_list())])?;
            Ok(answer_turn(m.clone(), &r.text, prompt))
        })
        .collect::<Result<_>>()?;
    let wave2 =
        run(numeric_answer_msgs.iter().chain(&symbolic_answer_msgs).map(|m| request(m.clone(), true)).collect())?;
    let (num_answer, sym_answer) = wave2.split_at(problems.len());

    // Wave 3: self-prompted symbolic reasoning, after the model's own numeric solution (reasoning and answer).
    let answer_line = render(&prompts.numeric_answer, &[])?;
    let self_msgs: Vec<Vec<Message>> = problems
        .iter()
        .zip(num_reason.iter().zip(num_answer))
        .map(|(p, (r, a))| {
            let solution = format!("{}\n{} {}", r.text.trim(), answer_line.trim(), a.text.trim());
            messages_self(prompts, p, &solution)
        })
        .collect::<Result<_>>()?;
    let self_reason = run(self_msgs.iter().map(|m| request(m.clone(), false)).collect())?;
    // Wave 4: its answer turn.
    let self_answer_msgs: Vec<Vec<Message>> = self_msgs
        .iter()
        .zip(&self_reason)
        .zip(problems)
        .map(|((m, r), p)| {
            let prompt = render(&prompts.symbolic_answer, &[("variables", &p.variable_list())])?;
            Ok(answer_turn(m.clone(), &r.text, prompt))
        })
        .collect::<Result<_>>()?;
    let self_answer = run(self_answer_msgs.iter().map(|m| request(m.clone(), true)).collect())?;

    Ok(problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (numeric, own) = score_numeric(p, &num_reason[i], &num_answer[i]);
            let points_seed = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let symbolic =
                score_symbolic(p, &sym_reason[i], &sym_answer[i], own.as_ref(), equivalence_points, points_seed);
            let self_prompt =
                score_symbolic(p, &self_reason[i], &self_answer[i], own.as_ref(), equivalence_points, points_seed);
            ProblemRow {
                id: p.id.clone(),
                kind: p.kind.clone(),
                variables: p.variables.len(),
                gold_answer: to_f64(&p.answer),
                gold_expression: p.symbolic_equation.to_string(),
                numeric,
                symbolic,
                self_prompt,
            }
        })
        .collect())
}

/// The answer turn's extraction, or the reasoning's when the answer turn has none.
fn extract_with_fallback(reasoning: &str, answer: &str, f: impl Fn(&str) -> Extraction) -> (Extraction, bool) {
    let first = f(answer);
    if first.value != Extracted::Unparsed {
        return (first, false);
    }
    let second = f(reasoning);
    let from_reasoning = second.value != Extracted::Unparsed;
    (second, from_reasoning)
}

impl StageResult {
    /// What was read from a stage's two turns; the scores start false and are set by the caller.
    fn read(reasoning: &Reply, answer: &Reply, ex: &Extraction, from_reasoning: bool) -> StageResult {
        StageResult {
            reasoning: reasoning.text.clone(),
            answer_text: answer.text.clone(),
            extracted: ex.display(),
            rule: ex.rule,
            from_reasoning,
            parsed: ex.value != Extracted::Unparsed,
            correct: false,
            aligned: false,
            value: None,
            truncated: reasoning.finish == crate::backend::Finish::Length,
            constant: false,
        }
    }
}

/// The numeric stage's result and the model's own number (for alignment).
fn score_numeric(p: &SymProblem, reasoning: &Reply, answer: &Reply) -> (StageResult, Option<BigRational>) {
    let (ex, from_reasoning) = extract_with_fallback(&reasoning.text, &answer.text, extract_number);
    let mut r = StageResult::read(reasoning, answer, &ex, from_reasoning);
    let own = match ex.value {
        Extracted::Number(v) => Some(v),
        _ => None,
    };
    r.correct = own.as_ref().is_some_and(|v| numbers_match(v, &p.answer));
    (r, own)
}

fn score_symbolic(
    p: &SymProblem,
    reasoning: &Reply,
    answer: &Reply,
    own: Option<&BigRational>,
    points: usize,
    seed: u64,
) -> StageResult {
    let names: Vec<String> = p.variables.iter().map(|(v, _)| v.clone()).collect();
    let (ex, from_reasoning) = extract_with_fallback(&reasoning.text, &answer.text, |t| extract_expression(t, &names));
    let mut r = StageResult::read(reasoning, answer, &ex, from_reasoning);
    if let Extracted::Expression(e) = &ex.value {
        r.correct = e.equivalent(&p.symbolic_equation, points, seed) == Equivalence::Equal;
        let value = e.eval(&p.values()).ok();
        // A bare number (often the numeric answer copied) is not a symbolic answer: never aligned.
        r.constant = e.variables().is_empty();
        r.aligned = !r.constant && matches!((&value, own), (Some(v), Some(o)) if numbers_match(o, v));
        r.value = value.map(|v| to_f64(&v));
    }
    r
}

/// Accuracy-type summaries of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub problems: usize,
    pub numeric_accuracy: f64,
    pub symbolic_accuracy: f64,
    pub self_prompt_symbolic_accuracy: f64,
    pub alignment: f64,
    pub self_prompt_alignment: f64,
    pub unparsed_numeric: usize,
    pub unparsed_symbolic: usize,
    pub unparsed_self_prompt: usize,
    /// Symbolic answers that are bare numbers (plain, self-prompted).
    pub constant_symbolic: usize,
    pub constant_self_prompt: usize,
    pub truncated_reasoning: usize,
}

pub fn summarize(rows: &[ProblemRow]) -> Summary {
    let n = rows.len().max(1) as f64;
    let frac = |f: &dyn Fn(&ProblemRow) -> bool| rows.iter().filter(|r| f(r)).count() as f64 / n;
    let count = |f: &dyn Fn(&ProblemRow) -> bool| rows.iter().filter(|r| f(r)).count();
    Summary {
        problems: rows.len(),
        numeric_accuracy: frac(&|r| r.numeric.correct),
        symbolic_accuracy: frac(&|r| r.symbolic.correct),
        self_prompt_symbolic_accuracy: frac(&|r| r.self_prompt.correct),
        alignment: frac(&|r| r.symbolic.aligned),
        self_prompt_alignment: frac(&|r| r.self_prompt.aligned),
        unparsed_numeric: count(&|r| !r.numeric.parsed),
        unparsed_symbolic: count(&|r| !r.symbolic.parsed),
        unparsed_self_prompt: count(&|r| !r.self_prompt.parsed),
        constant_symbolic: count(&|r| r.symbolic.constant),
        constant_self_prompt: count(&|r| r.self_prompt.constant),
        truncated_reasoning: count(&|r| r.numeric.truncated)
            + count(&|r| r.symbolic.truncated)
            + count(&|r| r.self_prompt.truncated),
    }
}

/// The summary of each problem type.
pub fn summarize_by_kind(rows: &[ProblemRow]) -> BTreeMap<String, Summary> {
    let mut kinds: BTreeMap<String, Vec<ProblemRow>> = BTreeMap::new();
    for r in rows {
        kinds.entry(r.kind.clone()).or_default().push(r.clone());
    }
    kinds.into_iter().map(|(k, rs)| (k, summarize(&rs))).collect()
}

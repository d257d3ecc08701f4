//! SVAMP_Sym: SVAMP problems with their numbers replaced by variables, and the gold equation rewritten in those
//! variables. Every irregularity of the source data is recorded on the problem as an [`Exception`], never
//! silently fixed or dropped.

use std::collections::BTreeMap;

use num_rational::BigRational;
use serde::{Deserialize, Serialize};

use crate::expr::{self, Expr, to_f64};
use crate::{Error, Result};

/// How numbers become variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableStyle {
    /// w, x, y, z (then v, u for a fifth and sixth distinct number).
    Wxyz,
    /// p, q, r, s (then t, u).
    Pqrs,
    /// i, j, k, l (then m, n).
    Ijkl,
    /// `<1>`, `<2>`, ... (the tags of the anchor's SVAMP_Sym.csv).
    Tags,
}

impl VariableStyle {
    /// The name of the `k`-th distinct number (0-based), and whether it lies beyond the style's four letters.
    pub fn name(self, k: usize) -> (String, bool) {
        let (base, extra): (&[&str], &[&str]) = match self {
            VariableStyle::Wxyz => (&["w", "x", "y", "z"], &["v", "u", "t", "s"]),
            VariableStyle::Pqrs => (&["p", "q", "r", "s"], &["t", "u", "v", "w"]),
            VariableStyle::Ijkl => (&["i", "j", "k", "l"], &["m", "n", "o", "h"]),
            VariableStyle::Tags => return (format!("<{}>", k + 1), false),
        };
        match base.get(k) {
            Some(v) => (v.to_string(), false),
            None => (extra.get(k - base.len()).map(|s| s.to_string()).unwrap_or_else(|| format!("v{k}")), true),
        }
    }
}

/// A number written in a text: its byte span and exact value.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberSpan {
    pub start: usize,
    pub end: usize,
    pub value: BigRational,
}

/// Every number in `text`, in order: digits with an optional decimal part; a comma is a thousands separator
/// only when exactly three digits follow it (`"4, 5"` is two numbers, `"1,000"` one).
pub fn numbers_in(text: &str) -> Vec<NumberSpan> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let plain: Vec<char> = chars.iter().map(|&(_, c)| c).collect();
    let byte_at = |i: usize| chars.get(i).map(|&(b, _)| b).unwrap_or(text.len());
    let mut out = Vec::new();
    let mut i = 0;
    while i < plain.len() {
        let starts = plain[i].is_ascii_digit() && !(i > 0 && (plain[i - 1].is_ascii_digit() || plain[i - 1] == '.'));
        if starts && let Some((value, next)) = expr::read_number(&plain, i) {
            out.push(NumberSpan { start: byte_at(i), end: byte_at(next), value });
            i = next;
        } else {
            i += 1;
        }
    }
    out
}

/// An irregularity of one problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Exception {
    /// The equation uses a number that is not in the text; it stays a constant in the symbolic equation.
    ConstantInEquation { value: f64 },
    /// The equation's value differs from the given answer; the equation's value is the gold answer.
    AnswerDisagreesWithEquation { equation: f64, answer: f64 },
    /// A number occurs more than once in the text; its occurrences share one variable.
    RepeatedNumber { value: f64, occurrences: usize },
    /// More distinct numbers than the style's four letters: the extra variables are named beyond the set.
    BeyondLetterSet { variables: usize },
    /// The `Type` field is misspelt in the source; the corrected name is used.
    TypeTypo { given: String, corrected: String },
}

impl Exception {
    /// One line for reports.
    pub fn describe(&self) -> String {
        match self {
            Exception::ConstantInEquation { value } => {
                format!("the equation uses {value}, which is not in the text (kept as a constant)")
            }
            Exception::AnswerDisagreesWithEquation { equation, answer } => {
                format!("the answer {answer} disagrees with the equation's value {equation} (the equation is gold)")
            }
            Exception::RepeatedNumber { value, occurrences } => {
                format!("{value} occurs {occurrences} times; the occurrences share one variable")
            }
            Exception::BeyondLetterSet { variables } => {
                format!("{variables} distinct numbers: variables beyond the four-letter set")
            }
            Exception::TypeTypo { given, corrected } => format!("type `{given}` is a typo for `{corrected}`"),
        }
    }
}

/// One SVAMP problem in numeric and symbolic form.
#[derive(Debug, Clone, PartialEq)]
pub struct SymProblem {
    pub id: String,
    /// The problem type (`Subtraction`, `Addition`, `Common-Division`, `Multiplication`), typo corrected.
    pub kind: String,
    /// Body and question, numbers as written.
    pub text: String,
    /// The same text with every number replaced by its variable.
    pub symbolic_text: String,
    /// Variable names in order of first appearance, and the number each stands for.
    pub variables: Vec<(String, BigRational)>,
    /// Number occurrences in the text (counting repeats).
    pub occurrences: usize,
    /// The source equation over numbers.
    pub equation: Expr,
    /// The equation over the variables.
    pub symbolic_equation: Expr,
    /// The gold numeric answer: the equation's value.
    pub answer: BigRational,
    pub exceptions: Vec<Exception>,
}

impl SymProblem {
    /// The variables' values, for evaluating an expression at the problem's numbers.
    pub fn values(&self) -> BTreeMap<String, BigRational> {
        self.variables.iter().cloned().collect()
    }

    /// The variable names, comma separated (`"w, x, y"`), for prompts.
    pub fn variable_list(&self) -> String {
        self.variables.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// An `f64` from the data as the exact decimal it prints as (`0.1` is 1/10, not the binary fraction).
pub fn exact_decimal(v: f64) -> Result<BigRational> {
    if !v.is_finite() {
        return Err(Error::Data(format!("non-finite number {v}")));
    }
    let text = format!("{}", v.abs());
    let (value, end) = expr::read_number(&text.chars().collect::<Vec<_>>(), 0)
        .ok_or_else(|| Error::Data(format!("cannot read {v} as a decimal")))?;
    if end != text.len() {
        return Err(Error::Data(format!("cannot read {v} as a decimal")));
    }
    Ok(if v < 0.0 { -value } else { value })
}

/// Symbolic form of one problem.
pub fn symbolize(problem: &data::text::SvampProblem, style: VariableStyle) -> Result<SymProblem> {
    let text = format!("{} {}", problem.body.trim(), problem.question.trim());
    let spans = numbers_in(&text);
    let mut variables: Vec<(String, BigRational)> = Vec::new();
    let mut var_of_value: BTreeMap<BigRational, String> = BTreeMap::new();
    let mut counts: BTreeMap<BigRational, usize> = BTreeMap::new();
    let mut exceptions = Vec::new();
    let mut symbolic_text = String::with_capacity(text.len());
    let mut last = 0;
    for span in &spans {
        *counts.entry(span.value.clone()).or_default() += 1;
        let name = var_of_value
            .entry(span.value.clone())
            .or_insert_with(|| {
                let (name, _) = style.name(variables.len());
                variables.push((name.clone(), span.value.clone()));
                name
            })
            .clone();
        symbolic_text.push_str(&text[last..span.start]);
        symbolic_text.push_str(&name);
        last = span.end;
    }
    symbolic_text.push_str(&text[last..]);
    for (value, &n) in &counts {
        if n > 1 {
            exceptions.push(Exception::RepeatedNumber { value: to_f64(value), occurrences: n });
        }
    }
    if variables.len() > 4 && style != VariableStyle::Tags {
        exceptions.push(Exception::BeyondLetterSet { variables: variables.len() });
    }
    let equation = Expr::parse(&problem.equation)
        .map_err(|e| Error::Data(format!("problem {}: equation `{}`: {e}", problem.id, problem.equation)))?;
    let mut constants = std::collections::BTreeSet::new();
    collect_numbers(&equation, &mut constants);
    for c in &constants {
        if !var_of_value.contains_key(c) {
            exceptions.push(Exception::ConstantInEquation { value: to_f64(c) });
        }
    }
    let symbolic_equation = replace_numbers(&equation, &var_of_value);
    let value = equation
        .eval(&BTreeMap::new())
        .map_err(|e| Error::Data(format!("problem {}: equation `{}`: {e}", problem.id, problem.equation)))?;
    let given = exact_decimal(problem.answer)?;
    if given != value {
        exceptions.push(Exception::AnswerDisagreesWithEquation { equation: to_f64(&value), answer: problem.answer });
    }
    let kind = if problem.kind == "Common-Divison" {
        let corrected = "Common-Division".to_string();
        exceptions.push(Exception::TypeTypo { given: problem.kind.clone(), corrected: corrected.clone() });
        corrected
    } else {
        problem.kind.clone()
    };
    Ok(SymProblem {
        id: problem.id.clone(),
        kind,
        text,
        symbolic_text,
        occurrences: spans.len(),
        variables,
        equation,
        symbolic_equation,
        answer: value,
        exceptions,
    })
}

/// Every problem of SVAMP in symbolic form, in the file's order.
pub fn symbolize_all(problems: &[data::text::SvampProblem], style: VariableStyle) -> Result<Vec<SymProblem>> {
    problems.iter().map(|p| symbolize(p, style)).collect()
}

fn collect_numbers(e: &Expr, out: &mut std::collections::BTreeSet<BigRational>) {
    match e {
        Expr::Num(v) => {
            out.insert(v.clone());
        }
        Expr::Var(_) => {}
        Expr::Neg(a) => collect_numbers(a, out),
        Expr::Bin(_, a, b) => {
            collect_numbers(a, out);
            collect_numbers(b, out);
        }
    }
}

fn replace_numbers(e: &Expr, vars: &BTreeMap<BigRational, String>) -> Expr {
    match e {
        Expr::Num(v) => vars.get(v).map(|name| Expr::Var(name.clone())).unwrap_or_else(|| e.clone()),
        Expr::Var(_) => e.clone(),
        Expr::Neg(a) => Expr::Neg(Box::new(replace_numbers(a, vars))),
        Expr::Bin(op, a, b) => Expr::bin(*op, replace_numbers(a, vars), replace_numbers(b, vars)),
    }
}

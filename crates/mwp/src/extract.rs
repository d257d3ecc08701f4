//! Reading a model's final answer from its text: a number, or an expression over the problem's variables.
//!
//! Candidates are tried in order: the last `\boxed{...}`; the text after the last final-answer phrase
//! ("the answer is", "final answer:", ...); the last `\( ... \)` / `\[ ... \]`; then the whole text (the
//! answer stage's reply is usually just the answer, possibly with trailing prose). In a candidate, LaTeX is
//! normalised (`\times`, `\cdot`, `\div`, `\frac{a}{b}`, `\text{...}`), `$` and thousands commas are dropped,
//! and the first run of expression tokens that parses is taken (for an expression, the first that uses a
//! variable; after an `=`, the side that does). Nothing parseable is [`Extracted::Unparsed`]: counted in the
//! metrics, never dropped.

use num_rational::BigRational;
use serde::{Deserialize, Serialize};

use crate::expr::{Expr, decimal_string};

/// What was read.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    Number(BigRational),
    Expression(Expr),
    Unparsed,
}

/// Which rule found the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Boxed,
    AnswerPhrase,
    MathDelimiters,
    /// The first line of the text (a short answer, possibly with trailing prose): its first expression.
    WholeText,
    /// Anywhere in a longer text: its last expression.
    LastInText,
    None,
}

/// An extracted answer with the rule and the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Extraction {
    pub value: Extracted,
    pub rule: Rule,
    pub source: String,
}

impl Extraction {
    /// The answer as text for reports (`"51"`, `"w - x"`, `""` when unparsed).
    pub fn display(&self) -> String {
        match &self.value {
            Extracted::Number(v) => decimal_string(v).unwrap_or_else(|| format!("{}/{}", v.numer(), v.denom())),
            Extracted::Expression(e) => e.to_string(),
            Extracted::Unparsed => String::new(),
        }
    }
}

const ANSWER_PHRASES: &[&str] = &[
    "final answer is",
    "final answer:",
    "final answer",
    "the answer is",
    "answer is",
    "answer:",
    "answer =",
    "result is",
    "therefore,",
    "so the answer",
];

/// The final numeric answer in `text`.
pub fn extract_number(text: &str) -> Extraction {
    extract(text, None)
}

/// The final expression over `variables` in `text` (a bare number counts as a constant expression).
pub fn extract_expression(text: &str, variables: &[String]) -> Extraction {
    extract(text, Some(variables))
}

fn extract(text: &str, variables: Option<&[String]>) -> Extraction {
    for (rule, candidate) in candidates(text) {
        if let Some(value) = read_candidate(&candidate, variables, rule == Rule::LastInText) {
            return Extraction { value, rule, source: candidate.trim().to_string() };
        }
    }
    Extraction { value: Extracted::Unparsed, rule: Rule::None, source: String::new() }
}

fn candidates(text: &str) -> Vec<(Rule, String)> {
    let mut out = Vec::new();
    if let Some(b) = last_braced(text, "\\boxed{") {
        out.push((Rule::Boxed, b));
    }
    let lower = text.to_lowercase();
    // Byte positions of the lowercased text match the original's only when lowercasing kept lengths.
    if lower.len() == text.len() {
        // Every occurrence of every phrase, last first (the longest phrase at a position first); a phrase
        // with nothing after it on its line (a reply cut off, "The answer is" then a blank) is skipped.
        let mut found: Vec<(usize, usize)> = Vec::new();
        for p in ANSWER_PHRASES {
            found.extend(lower.match_indices(p).map(|(pos, _)| (pos, p.len())));
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        found.dedup_by_key(|f| f.0);
        let mut taken = 0;
        for (pos, len) in found {
            let rest = &text[pos + len..];
            let line = rest.trim_start_matches([' ', '\t', ':']).lines().next().unwrap_or("").to_string();
            if !line.trim().is_empty() {
                out.push((Rule::AnswerPhrase, line));
                taken += 1;
                if taken == 3 {
                    break;
                }
            }
        }
    }
    for (open, close) in [("\\(", "\\)"), ("\\[", "\\]")] {
        if let Some(start) = text.rfind(open)
            && let Some(end) = text[start + open.len()..].find(close)
        {
            out.push((Rule::MathDelimiters, text[start + open.len()..start + open.len() + end].to_string()));
        }
    }
    // A short reply (one or two lines): its first line is the answer, trailing prose aside.
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 2
        && let Some(first) = lines.first()
    {
        out.push((Rule::WholeText, first.to_string()));
    }
    out.push((Rule::LastInText, text.to_string()));
    out
}

/// The contents of the last `open ... }` with balanced braces.
fn last_braced(text: &str, open: &str) -> Option<String> {
    let start = text.rfind(open)? + open.len();
    let mut depth = 1;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(text[start..start + i].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// LaTeX and currency normalised to plain expression text.
fn normalize(s: &str) -> String {
    let mut t = s.to_string();
    // \frac{a}{b} -> (a)/(b), innermost first.
    while let Some(pos) = t.find("\\frac{") {
        let Some(a) = last_braced(&t[pos..], "\\frac{") else { break };
        let after_a = pos + "\\frac{".len() + a.len() + 1;
        if !t[after_a..].starts_with('{') {
            break;
        }
        let Some(b) = last_braced(&t[after_a..], "{") else { break };
        let end = after_a + b.len() + 2;
        t = format!("{}(({a})/({b})){}", &t[..pos], &t[end..]);
    }
    while let Some(pos) = t.find("\\text{") {
        let Some(inner) = last_braced(&t[pos..], "\\text{") else { break };
        let end = pos + "\\text{".len() + inner.len() + 1;
        t = format!("{} {}", &t[..pos], &t[end..]);
    }
    for (from, to) in [
        ("\\times", "*"),
        ("\\cdot", "*"),
        ("\\div", "/"),
        ("\\left", ""),
        ("\\right", ""),
        ("\\,", " "),
        ("\\!", ""),
        ("\\$", " "),
        ("$", " "),
        ("**", " "),
    ] {
        t = t.replace(from, to);
    }
    t
}

/// One piece of candidate text: part of an expression or not.
#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Expr(String),
    Break,
}

fn atoms(s: &str, variables: Option<&[String]>) -> Vec<Atom> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let is_var = variables.is_some_and(|vs| vs.contains(&word));
            let is_mul = word == "x" && !is_var && variables.is_none_or(|vs| !vs.iter().any(|v| v == "x"));
            out.push(if is_var {
                Atom::Expr(word)
            } else if is_mul && i > 0 {
                Atom::Expr("*".into())
            } else {
                Atom::Break
            });
            continue;
        }
        if c == '<' {
            if let Some(end) = chars[i..].iter().position(|&d| d == '>') {
                let tag: String = chars[i..=i + end].iter().collect();
                if variables.is_some_and(|vs| vs.contains(&tag)) {
                    out.push(Atom::Expr(tag));
                    i += end + 1;
                    continue;
                }
            }
            out.push(Atom::Break);
            i += 1;
            continue;
        }
        let keep = c.is_ascii_digit() || " \t+-−–*×·/÷()[].,".contains(c);
        out.push(if keep { Atom::Expr(c.to_string()) } else { Atom::Break });
        i += 1;
    }
    out
}

/// Maximal runs of expression atoms, trimmed of what cannot end or start an expression.
fn runs(s: &str, variables: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for a in atoms(s, variables).into_iter().chain([Atom::Break]) {
        match a {
            Atom::Expr(t) => {
                // Words stay apart from each other and from numbers.
                if t.chars().next().is_some_and(|c| c.is_alphabetic() || c == '<') {
                    cur.push(' ');
                }
                cur.push_str(&t);
            }
            Atom::Break => {
                let t = cur
                    .trim_matches(|c: char| c.is_whitespace() || ".,+*/×÷·".contains(c))
                    .trim_end_matches(['-', '−', '–'])
                    .trim()
                    .to_string();
                if t.chars().any(|c| c.is_ascii_digit() || c.is_alphabetic() || c == '<') {
                    out.push(t);
                }
                cur.clear();
            }
        }
    }
    out
}

/// Parses a run, dropping unbalanced outer parentheses and a trailing sentence period.
fn parse_run(run: &str) -> Option<Expr> {
    let mut t = run.trim().trim_end_matches('.').trim().to_string();
    for _ in 0..4 {
        if let Ok(e) = Expr::parse(&t) {
            return Some(e);
        }
        let opens = t.matches(['(', '[']).count();
        let closes = t.matches([')', ']']).count();
        if opens > closes && t.starts_with(['(', '[']) {
            t.remove(0);
        } else if closes > opens && t.ends_with([')', ']']) {
            t.pop();
        } else {
            return None;
        }
        t = t.trim().to_string();
    }
    None
}

/// The answer in one candidate: the first parseable run (the last with `last`).
fn read_candidate(candidate: &str, variables: Option<&[String]>, last: bool) -> Option<Extracted> {
    let text = normalize(candidate);
    if last {
        // Read line by line from the end, so the last statement's answer wins.
        return text.lines().rev().find_map(|line| read_candidate(line, variables, false));
    }
    let sides: Vec<&str> = text.split(['=', '≈']).collect();
    match variables {
        None => {
            // A number: the last side of an equation that holds one (`76 - 25 = 51` gives 51).
            for side in sides.iter().rev() {
                for run in runs(side, None) {
                    if let Some(e) = parse_run(&run)
                        && let Ok(v) = e.eval(&Default::default())
                    {
                        return Some(Extracted::Number(v));
                    }
                }
            }
            None
        }
        Some(vars) => {
            // The side (last first) whose first parseable run uses a variable; else the last constant.
            let mut constant = None;
            for side in sides.iter().rev() {
                for run in runs(side, Some(vars)) {
                    if let Some(e) = parse_run(&run) {
                        if !e.variables().is_empty() {
                            return Some(Extracted::Expression(e));
                        }
                        if constant.is_none() {
                            constant = Some(e);
                        }
                    }
                }
            }
            constant.map(Extracted::Expression)
        }
    }
}

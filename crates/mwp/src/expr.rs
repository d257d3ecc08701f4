//! Arithmetic expressions over numbers and variables: a parser for `+ - * /`, unary minus and parentheses,
//! printing that parses back to the same tree, exact rational evaluation, and equivalence by exact evaluation
//! at random rational points.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};
use rand::RngExt;

use crate::{Error, Result};

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn precedence(self) -> u8 {
        match self {
            Op::Add | Op::Sub => 1,
            Op::Mul | Op::Div => 2,
        }
    }

    fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }
}

/// An expression tree. The parser makes [`Expr::Num`] only from unsigned decimal literals; a sign is
/// [`Expr::Neg`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    Num(BigRational),
    Var(String),
    Neg(Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
}

/// Why an expression has no value at a point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("division by zero")]
    DivisionByZero,
    #[error("variable `{0}` has no value")]
    Unbound(String),
}

/// The outcome of comparing two expressions at random points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Equivalence {
    /// Equal values at every sampled point.
    Equal,
    /// Different values at some point (where both are defined).
    Different,
    /// Too few points where both are defined (division by zero almost everywhere).
    Undecided,
}

impl Expr {
    pub fn num(v: i64) -> Expr {
        Expr::Num(BigRational::from_integer(v.into()))
    }

    pub fn var(name: &str) -> Expr {
        Expr::Var(name.to_string())
    }

    pub fn bin(op: Op, a: Expr, b: Expr) -> Expr {
        Expr::Bin(op, Box::new(a), Box::new(b))
    }

    /// Parses `text` (see [`parse`]).
    pub fn parse(text: &str) -> Result<Expr> {
        parse(text)
    }

    /// The distinct variable names, sorted.
    pub fn variables(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect_vars(&mut out);
        out
    }

    fn collect_vars(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(v) => {
                out.insert(v.clone());
            }
            Expr::Neg(e) => e.collect_vars(out),
            Expr::Bin(_, a, b) => {
                a.collect_vars(out);
                b.collect_vars(out);
            }
        }
    }

    /// The exact value with the variables bound by `env`.
    pub fn eval(&self, env: &BTreeMap<String, BigRational>) -> std::result::Result<BigRational, EvalError> {
        match self {
            Expr::Num(v) => Ok(v.clone()),
            Expr::Var(name) => env.get(name).cloned().ok_or_else(|| EvalError::Unbound(name.clone())),
            Expr::Neg(e) => Ok(-e.eval(env)?),
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.eval(env)?, b.eval(env)?);
                Ok(match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div => {
                        if b.is_zero() {
                            return Err(EvalError::DivisionByZero);
                        }
                        a / b
                    }
                })
            }
        }
    }

    /// Replaces every variable named in `values` by that number.
    pub fn substitute(&self, values: &BTreeMap<String, BigRational>) -> Expr {
        match self {
            Expr::Var(name) => values.get(name).map(|v| Expr::Num(v.clone())).unwrap_or_else(|| self.clone()),
            Expr::Num(_) => self.clone(),
            Expr::Neg(e) => Expr::Neg(Box::new(e.substitute(values))),
            Expr::Bin(op, a, b) => Expr::bin(*op, a.substitute(values), b.substitute(values)),
        }
    }

    /// Renames variables by `map` (names not in it are kept).
    pub fn rename(&self, map: &BTreeMap<String, String>) -> Expr {
        match self {
            Expr::Var(name) => Expr::Var(map.get(name).cloned().unwrap_or_else(|| name.clone())),
            Expr::Num(_) => self.clone(),
            Expr::Neg(e) => Expr::Neg(Box::new(e.rename(map))),
            Expr::Bin(op, a, b) => Expr::bin(*op, a.rename(map), b.rename(map)),
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Bin(op, ..) => op.precedence(),
            Expr::Neg(_) => 3,
            // A rational that is not a decimal literal prints as `(p/q)`, a negative one as `(-n)`.
            Expr::Num(_) | Expr::Var(_) => 4,
        }
    }

    /// Compares with `other` by exact evaluation at `points` random rational points (numerators in
    /// [-60, 60] without 0, denominators in [1, 9]), drawn from `seed`, over the variables of both. Points where
    /// either side divides by zero are redrawn, up to 8x `points` draws in all.
    pub fn equivalent(&self, other: &Expr, points: usize, seed: u64) -> Equivalence {
        let vars: BTreeSet<String> = self.variables().union(&other.variables()).cloned().collect();
        let mut rng = tensor::seeded(seed);
        let (mut agreed, mut draws) = (0, 0);
        while agreed < points && draws < 8 * points.max(1) {
            draws += 1;
            let env: BTreeMap<String, BigRational> = vars
                .iter()
                .map(|v| {
                    let mut n: i64 = rng.random_range(1..=60);
                    if rng.random_bool(0.5) {
                        n = -n;
                    }
                    let d: i64 = rng.random_range(1..=9);
                    (v.clone(), BigRational::new(n.into(), d.into()))
                })
                .collect();
            match (self.eval(&env), other.eval(&env)) {
                (Ok(a), Ok(b)) if a == b => agreed += 1,
                (Ok(_), Ok(_)) => return Equivalence::Different,
                // Defined on one side only: the expressions differ as functions unless both are undefined.
                (Ok(_), Err(EvalError::DivisionByZero)) | (Err(EvalError::DivisionByZero), Ok(_)) => {
                    return Equivalence::Different;
                }
                _ => {}
            }
        }
        if agreed >= points { Equivalence::Equal } else { Equivalence::Undecided }
    }
}

/// Whether a rational has a finite decimal expansion (its reduced denominator is 2^a 5^b).
fn is_decimal(v: &BigRational) -> bool {
    let mut d = v.denom().clone();
    for p in [2u32, 5] {
        let p = BigInt::from(p);
        while (&d % &p).is_zero() {
            d /= &p;
        }
    }
    d.is_one()
}

/// A rational as exact decimal text (`"12"`, `"0.125"`), or `None` when it has no finite expansion.
pub fn decimal_string(v: &BigRational) -> Option<String> {
    if !is_decimal(v) {
        return None;
    }
    let neg = v.is_negative();
    let v = v.abs();
    let int = v.to_integer();
    let mut frac = v - BigRational::from_integer(int.clone());
    let mut digits = String::new();
    let ten = BigRational::from_integer(10.into());
    while !frac.is_zero() {
        frac *= &ten;
        let d = frac.to_integer();
        digits.push_str(&d.to_string());
        frac -= BigRational::from_integer(d);
    }
    let sign = if neg { "-" } else { "" };
    Some(if digits.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{digits}") })
}

/// A rational as an `f64` (for display and tolerant comparison only).
pub fn to_f64(v: &BigRational) -> f64 {
    v.to_f64().unwrap_or(f64::NAN)
}

impl fmt::Display for Expr {
    /// Minimal parentheses; parsing the text gives back the same tree (binary operators are left-associative,
    /// so a right operand of equal precedence keeps its parentheses).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Num(v) => match decimal_string(v) {
                Some(s) if !v.is_negative() => write!(f, "{s}"),
                Some(s) => write!(f, "({s})"),
                None => write!(f, "({}/{})", v.numer(), v.denom()),
            },
            Expr::Var(name) => write!(f, "{name}"),
            Expr::Neg(e) => {
                if e.precedence() < 3 {
                    write!(f, "-({e})")
                } else {
                    write!(f, "-{e}")
                }
            }
            Expr::Bin(op, a, b) => {
                let p = op.precedence();
                if a.precedence() < p {
                    write!(f, "({a})")?;
                } else {
                    write!(f, "{a}")?;
                }
                write!(f, " {} ", op.symbol())?;
                if b.precedence() <= p { write!(f, "({b})") } else { write!(f, "{b}") }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(BigRational),
    Ident(String),
    Op(Op),
    Open,
    Close,
}

/// Splits expression text into tokens. Numbers: digits with an optional decimal part and thousands commas
/// (`1,000`); identifiers: a letter or `_` then letters, digits, `_`; tags `<n>` are identifiers too.
/// Brackets `[] {}` count as parentheses; `x`-like multiplication signs `×`, `·`, `÷` are accepted.
fn tokenize(text: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |msg: String| Error::Parse { text: text.to_string(), message: msg };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '+' => push_op(&mut out, Op::Add, &mut i),
            '-' | '−' | '–' => push_op(&mut out, Op::Sub, &mut i),
            '*' | '×' | '·' | '⋅' => push_op(&mut out, Op::Mul, &mut i),
            '/' | '÷' => push_op(&mut out, Op::Div, &mut i),
            '(' | '[' | '{' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' | ']' | '}' => {
                out.push(Token::Close);
                i += 1;
            }
            '<' => {
                let end = chars[i..].iter().position(|&c| c == '>').map(|p| i + p);
                match end {
                    Some(end) if end > i + 1 && chars[i + 1..end].iter().all(|c| c.is_ascii_alphanumeric()) => {
                        out.push(Token::Ident(chars[i..=end].iter().collect()));
                        i = end + 1;
                    }
                    _ => return Err(err(format!("unexpected `<` at {i}"))),
                }
            }
            c if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                let (value, next) = read_number(&chars, i).ok_or_else(|| err(format!("bad number at {i}")))?;
                out.push(Token::Num(value));
                i = next;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(err(format!("unexpected `{other}` at {i}"))),
        }
    }
    Ok(out)
}

fn push_op(out: &mut Vec<Token>, op: Op, i: &mut usize) {
    out.push(Token::Op(op));
    *i += 1;
}

/// Reads `123`, `1,234,567`, `12.5`, `.5` starting at `i`; a comma counts only when exactly three digits
/// follow it (so `4, 5` is two numbers).
pub(crate) fn read_number(chars: &[char], mut i: usize) -> Option<(BigRational, usize)> {
    let mut int = String::new();
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            int.push(chars[i]);
            i += 1;
        } else if chars[i] == ','
            && !int.is_empty()
            && chars.len() >= i + 4
            && chars[i + 1..i + 4].iter().all(|c| c.is_ascii_digit())
            && !chars.get(i + 4).is_some_and(|c| c.is_ascii_digit())
        {
            i += 1;
        } else {
            break;
        }
    }
    let mut frac = String::new();
    if i + 1 < chars.len() + 1 && chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
        i += 1;
        while i < chars.len() && chars[i].is_ascii_digit() {
            frac.push(chars[i]);
            i += 1;
        }
    }
    let digits = format!("{}{frac}", if int.is_empty() { "0" } else { &int });
    let numer: BigInt = digits.parse().ok()?;
    let denom = num_traits::pow(BigInt::from(10), frac.len());
    Some((BigRational::new(numer, denom), i))
}

/// Parses an expression: `+ - * /` with the usual precedence (left-associative), unary `+`/`-`, parentheses,
/// and implicit multiplication between adjacent operands (`2x`, `3(w + x)`, `(a)(b)`).
pub fn parse(text: &str) -> Result<Expr> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(Error::Parse { text: text.to_string(), message: "empty expression".into() });
    }
    let mut p = Parser { tokens: &tokens, pos: 0, text };
    let e = p.sum()?;
    if p.pos != tokens.len() {
        return Err(p.error("unexpected trailing input"));
    }
    Ok(e)
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> Error {
        Error::Parse { text: self.text.to_string(), message: format!("{message} (token {})", self.pos) }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn sum(&mut self) -> Result<Expr> {
        let mut left = self.product()?;
        while let Some(Token::Op(op @ (Op::Add | Op::Sub))) = self.peek() {
            let op = *op;
            self.pos += 1;
            let right = self.product()?;
            left = Expr::bin(op, left, right);
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some(Token::Op(op @ (Op::Mul | Op::Div))) => {
                    let op = *op;
                    self.pos += 1;
                    let right = self.unary()?;
                    left = Expr::bin(op, left, right);
                }
                // Implicit multiplication: an operand directly after an operand.
                Some(Token::Num(_) | Token::Ident(_) | Token::Open) => {
                    let right = self.unary()?;
                    left = Expr::bin(Op::Mul, left, right);
                }
                _ => return Ok(left),
            }
        }
    }

    fn unary(&mut self) -> Result<Expr> {
        match self.peek() {
            Some(Token::Op(Op::Sub)) => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.unary()?)))
            }
            Some(Token::Op(Op::Add)) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr> {
        match self.peek().cloned() {
            Some(Token::Num(v)) => {
                self.pos += 1;
                Ok(Expr::Num(v))
            }
            Some(Token::Ident(name)) => {
                self.pos += 1;
                Ok(Expr::Var(name))
            }
            Some(Token::Open) => {
                self.pos += 1;
                let e = self.sum()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.error("missing `)`"));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(_) => Err(self.error("expected a number, a variable or `(`")),
            None => Err(self.error("expression ends early")),
        }
    }
}

//! Reasoning primitives (P4): small synthetic tasks that probe a model's inductive bias, generated from a seed,
//! labelled by the generator and checked by independent brute-force solvers that only read the prompt.
//!
//! - **Variable assignment** of depth k: `a=3, b=a, c=b, ...; c=?` needs k hops from the queried variable to a
//!   literal; distractor variables hold other values. Math (`a=3, b=a, c=?`) and code (`a = 3\nb = a\nprint(b)`)
//!   surface forms.
//! - **Induction copying**: a random sequence of symbols, then the start of a subsequence that occurred earlier;
//!   the answer continues it.
//! - **Arithmetic**: `23+45=` answered `68`.
//!
//! Training and test examples draw names and values from disjoint pools ([`Split`]), so a test answer cannot be
//! memorised from training text.

use serde::{Deserialize, Serialize};
use tensor::Rng;

/// A primitive task family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Primitive {
    /// Depth-k variable assignment (k = 0: the queried variable holds a literal).
    Assignment { depth: usize, code: bool },
    /// Continue a subsequence seen earlier in the context.
    Induction,
    /// Two-operand addition.
    Arithmetic,
}

/// Which pool of names and values an example draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

/// A prompt and the answer a model must continue it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub answer: String,
}

impl Split {
    /// Variable names: `a`-`m` for training, `n`-`z` for tests.
    pub fn names(self) -> Vec<char> {
        match self {
            Split::Train => ('a'..='m').collect(),
            Split::Test => ('n'..='z').collect(),
        }
    }

    /// Literal values and addends: 10-54 for training, 55-99 for tests.
    pub fn values(self) -> std::ops::Range<u32> {
        match self {
            Split::Train => 10..55,
            Split::Test => 55..100,
        }
    }

    /// Induction symbols: upper-case letters A-M for training, N-Z for tests.
    pub fn symbols(self) -> Vec<char> {
        match self {
            Split::Train => ('A'..='M').collect(),
            Split::Test => ('N'..='Z').collect(),
        }
    }
}

fn below(rng: &mut Rng, n: usize) -> usize {
    let u = tensor::uniform::<f64>(&[1], 0.0, 1.0, rng)[[0]];
    ((u * n as f64) as usize).min(n - 1)
}

fn shuffled<T: Clone>(items: &[T], rng: &mut Rng) -> Vec<T> {
    tensor::permutation(items.len(), rng).into_iter().map(|i| items[i].clone()).collect()
}

impl Primitive {
    /// One example from `rng`, names and values from `split`.
    pub fn generate(&self, split: Split, rng: &mut Rng) -> Example {
        match *self {
            Primitive::Assignment { depth, code } => assignment(depth, code, split, rng),
            Primitive::Induction => induction(split, rng),
            Primitive::Arithmetic => {
                let v = split.values();
                let span = (v.end - v.start) as usize;
                let (a, b) = (v.start + below(rng, span) as u32, v.start + below(rng, span) as u32);
                Example { prompt: format!("{a}+{b}="), answer: format!("{}", a + b) }
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            Primitive::Assignment { depth, code } => {
                format!("assignment depth {depth} ({})", if *code { "code" } else { "math" })
            }
            Primitive::Induction => "induction".into(),
            Primitive::Arithmetic => "arithmetic".into(),
        }
    }
}

/// A chain `x0 = literal, x1 = x0, ..., x_depth = x_{depth-1}` queried at `x_depth`, plus a distractor chain
/// with another literal, statements in a random order that keeps each chain's definitions before their uses.
fn assignment(depth: usize, code: bool, split: Split, rng: &mut Rng) -> Example {
    let names = shuffled(&split.names(), rng);
    let values = split.values();
    let span = (values.end - values.start) as usize;
    let value = values.start + below(rng, span) as u32;
    let other = values.start + ((value - values.start) as usize + 1 + below(rng, span - 1)) as u32 % span as u32;
    let chain: Vec<char> = names[..=depth].to_vec();
    let distractor: Vec<char> = names[depth + 1..2 * depth + 2].to_vec();
    let statements = |c: &[char], literal: u32| -> Vec<String> {
        (0..c.len())
            .map(|i| if i == 0 { format!("{}={literal}", c[0]) } else { format!("{}={}", c[i], c[i - 1]) })
            .collect()
    };
    let (mut a, mut b) = (statements(&chain, value).into_iter(), statements(&distractor, other).into_iter());
    // Merge the two chains in a random interleaving (each chain stays in order).
    let mut lines = Vec::new();
    let (mut left_a, mut left_b) = (depth + 1, depth + 1);
    while left_a + left_b > 0 {
        let take_a = left_b == 0 || (left_a > 0 && below(rng, 2) == 0);
        lines.push(
            if take_a {
                left_a -= 1;
                a.next()
            } else {
                left_b -= 1;
                b.next()
            }
            .expect("counted"),
        );
    }
    let query = chain[depth];
    let prompt = if code {
        let body: Vec<String> = lines.iter().map(|l| l.replace('=', " = ")).collect();
        format!("{}\nprint({query})\n# ", body.join("\n"))
    } else {
        format!("{}, {query}=?", lines.join(", "))
    };
    Example { prompt, answer: value.to_string() }
}

/// Twelve random symbols containing a run of three that is repeated at the end without its last symbol.
fn induction(split: Split, rng: &mut Rng) -> Example {
    let symbols = split.symbols();
    loop {
        let seq: Vec<char> = (0..12).map(|_| symbols[below(rng, symbols.len())]).collect();
        let start = below(rng, 9);
        let (key, answer) = (&seq[start..start + 2], seq[start + 2]);
        // Keep examples whose two-symbol key occurs once before the repeat at the end (the seam included), so
        // the continuation is unambiguous.
        let text: Vec<char> = seq.iter().chain(key).copied().collect();
        if text.windows(2).filter(|w| *w == key).count() == 2 {
            return Example { prompt: text.into_iter().collect(), answer: answer.to_string() };
        }
    }
}

/// Examples of every primitive in `kinds`, `per_kind` each, from the streams `rng`.
pub fn generate_set(kinds: &[Primitive], per_kind: usize, split: Split, rng: &mut Rng) -> Vec<(Primitive, Example)> {
    kinds.iter().flat_map(|k| (0..per_kind).map(|_| (*k, k.generate(split, rng))).collect::<Vec<_>>()).collect()
}

/// Solves a primitive's prompt by brute force, reading only the prompt (an independent check of the generator).
pub fn solve(kind: Primitive, prompt: &str) -> Option<String> {
    match kind {
        Primitive::Assignment { code, .. } => {
            let (statements, query): (Vec<String>, String) = if code {
                let lines: Vec<&str> = prompt.lines().collect();
                let query = lines.iter().find_map(|l| l.strip_prefix("print(")?.strip_suffix(')'))?.to_string();
                (lines.iter().filter(|l| l.contains(" = ")).map(|l| l.replace(' ', "")).collect(), query)
            } else {
                let parts: Vec<&str> = prompt.split(", ").collect();
                let (last, rest) = parts.split_last()?;
                (rest.iter().map(|s| s.to_string()).collect(), last.strip_suffix("=?")?.to_string())
            };
            let mut env = std::collections::HashMap::new();
            for s in statements {
                let (lhs, rhs) = s.split_once('=')?;
                let value = match rhs.parse::<u32>() {
                    Ok(v) => v,
                    Err(_) => *env.get(rhs)?,
                };
                env.insert(lhs.to_string(), value);
            }
            env.get(&query).map(|v| v.to_string())
        }
        Primitive::Induction => {
            let chars: Vec<char> = prompt.chars().collect();
            let key = &chars[chars.len().checked_sub(2)?..];
            (0..chars.len() - 2).find(|&i| &chars[i..i + 2] == key).map(|i| chars[i + 2].to_string())
        }
        Primitive::Arithmetic => {
            let (a, b) = prompt.strip_suffix('=')?.split_once('+')?;
            Some((a.parse::<u64>().ok()? + b.parse::<u64>().ok()?).to_string())
        }
    }
}

/// Every primitive P4 names: assignment of depth 0, 1 and 2 in math and code form, induction, arithmetic.
pub fn all_kinds() -> Vec<Primitive> {
    let mut kinds: Vec<Primitive> =
        (0..3).flat_map(|depth| [false, true].map(|code| Primitive::Assignment { depth, code })).collect();
    kinds.extend([Primitive::Induction, Primitive::Arithmetic]);
    kinds
}

/// Byte-tokenizer ids of a text.
pub fn byte_tokens(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

/// `base` (byte tokens) with training examples (`prompt answer\n`, kinds drawn at random) spliced in between
/// base chunks so that about `fraction` of the tokens are primitives, spread evenly through the stream (random
/// LM windows then see them at that rate).
pub fn mix_into_bytes(base: &[u32], kinds: &[Primitive], fraction: f64, rng: &mut Rng) -> Vec<u32> {
    const CHUNK: usize = 1024;
    let ratio = fraction / (1.0 - fraction);
    let mut out = Vec::with_capacity((base.len() as f64 * (1.0 + ratio)) as usize + CHUNK);
    let mut inserted = 0usize;
    for (i, chunk) in base.chunks(CHUNK).enumerate() {
        out.extend_from_slice(chunk);
        let due = (((i + 1) * CHUNK).min(base.len()) as f64 * ratio) as usize;
        while inserted < due {
            let ex = kinds[below(rng, kinds.len())].generate(Split::Train, rng);
            let tokens = byte_tokens(&format!("{}{}\n", ex.prompt, ex.answer));
            inserted += tokens.len();
            out.extend(tokens);
        }
    }
    out
}

/// A held-out probe (test names and values) of `per_kind` examples of every kind, in byte tokens.
pub fn byte_probe(name: &str, kinds: &[Primitive], per_kind: usize, rng: &mut Rng) -> train::lm::AnswerProbe {
    let examples = generate_set(kinds, per_kind, Split::Test, rng)
        .into_iter()
        .map(|(_, ex)| (byte_tokens(&ex.prompt), byte_tokens(&ex.answer)))
        .collect();
    train::lm::AnswerProbe { name: name.to_string(), examples }
}

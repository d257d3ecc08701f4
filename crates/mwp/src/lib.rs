//! # strata-mwp
//!
//! Symbolic math word problems (P7): SVAMP with its numbers replaced by variables (SVAMP_Sym), asked of a
//! language model three ways (the numeric problem; the symbolic problem, whose answer is an expression; the
//! symbolic problem after the model's own numeric solution, "self-prompting"), and scored exactly: numeric
//! accuracy, symbolic accuracy (the expression equivalent to the gold equation) and alignment (the
//! expression, evaluated at the problem's numbers, equals the model's own numeric answer).
//!
//! - [`expr`]: a parser for `+ - * /`, parentheses and variables, printing that parses back to the same tree,
//!   exact rational evaluation (`num-rational`), and equivalence by exact evaluation at random rational points.
//! - [`symbolic`]: SVAMP_Sym from the data crate's SVAMP loader, every irregularity of the source listed.
//! - [`extract`]: the final number or expression in a model's text (`\boxed{}`, answer phrases, `\( \)`,
//!   trailing prose), or an "unparsed" outcome that is counted.
//! - [`prompts`]: the prompt templates, as files (`crates/mwp/prompts/`).
//! - [`backend`]: one [`Backend`] trait; an OpenAI-compatible client (llama.cpp's server, vLLM, Ollama, hosted
//!   APIs) with timeouts, retries and bounded concurrency; a disk [`Cached`] layer; [`decoder`] runs a Strata
//!   decoder.
//! - [`eval`]: the three runs and their scoring; [`experiments`]: the `mwp/svamp-sym` reproduction.
//!
//! ```
//! use strata_mwp::expr::{Equivalence, Expr};
//!
//! let gold = Expr::parse("( w - ( x - y ) )")?;
//! let model = Expr::parse("w + y - x")?;
//! assert_eq!(model.equivalent(&gold, 8, 0), Equivalence::Equal);
//! assert_eq!(Expr::parse("w - x - y")?.equivalent(&gold, 8, 0), Equivalence::Different);
//!
//! // The model's final answer, read from its text.
//! let vars = ["w".to_string(), "x".to_string(), "y".to_string()];
//! let said = strata_mwp::extract::extract_expression("So the answer is \\boxed{w - x + y}.", &vars);
//! assert_eq!(said.display(), "w - x + y");
//! # Ok::<(), strata_mwp::Error>(())
//! ```
//!
//! Talking to a model (a server on 127.0.0.1:8080, e.g. `cargo xtask llm-server`), replies cached on disk:
//!
//! ```no_run
//! use strata_mwp::backend::{Backend, Cached, Message, OpenAiBackend, OpenAiConfig, Request};
//!
//! let client = OpenAiBackend::new(OpenAiConfig::default())?;
//! let model = Cached::new(client, std::path::Path::new("replies"))?;
//! let reply = model.generate(&Request {
//!     messages: vec![Message::user("What is 2 + 3?")],
//!     max_tokens: 32,
//!     temperature: 0.0,
//!     stop: vec![],
//!     seed: 0,
//! })?;
//! println!("{}", reply.text);
//! # Ok::<(), strata_mwp::Error>(())
//! ```
//!
//! The lower crates are re-exported ([`data`], [`report`], [`transformer`]).

pub mod backend;
pub mod decoder;
pub mod eval;
pub mod experiments;
pub mod expr;
pub mod extract;
pub mod prompts;
pub mod symbolic;

pub use backend::{Backend, Cached, OpenAiBackend, OpenAiConfig};
pub use expr::{Equivalence, Expr};
pub use symbolic::{SymProblem, VariableStyle};
pub use {data, report, transformer};

use std::path::PathBuf;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot parse `{text}`: {message}")]
    Parse { text: String, message: String },
    #[error("config: {0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("model backend: {0}")]
    Backend(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    DataCrate(#[from] data::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
    #[error(transparent)]
    Stats(#[from] report::stats::StatsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! MWP: the expression parser and exact evaluator (hand-written and property-generated), SVAMP_Sym over all
//! 1,000 problems, answer extraction on real model outputs, prompts, the scoring pipeline, the Strata decoder's
//! stop sequences, and the HTTP client against a real llama.cpp server (started here, killed and restarted).

mod backend;
mod decoder;
mod eval;
mod expr;
mod extract;
mod symbolic;

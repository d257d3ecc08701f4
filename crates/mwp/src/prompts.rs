//! Prompt templates as data: five text files (see `prompts/README.md`), the defaults compiled in from
//! `crates/mwp/prompts/`, or a folder of the same files given at run time.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The five templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSet {
    pub numeric: String,
    pub numeric_answer: String,
    pub symbolic: String,
    pub symbolic_answer: String,
    pub self_prompt: String,
}

const FILES: [&str; 5] = ["numeric", "numeric_answer", "symbolic", "symbolic_answer", "self_prompt"];

impl Default for PromptSet {
    fn default() -> Self {
        PromptSet {
            numeric: include_str!("../prompts/numeric.txt").into(),
            numeric_answer: include_str!("../prompts/numeric_answer.txt").into(),
            symbolic: include_str!("../prompts/symbolic.txt").into(),
            symbolic_answer: include_str!("../prompts/symbolic_answer.txt").into(),
            self_prompt: include_str!("../prompts/self_prompt.txt").into(),
        }
    }
}

impl PromptSet {
    /// Reads `<dir>/<name>.txt` for each template; a missing file is an error naming it.
    pub fn load(dir: &Path) -> Result<PromptSet> {
        let read = |name: &str| {
            let path = dir.join(format!("{name}.txt"));
            std::fs::read_to_string(&path).map_err(|e| Error::Io { path: path.clone(), source: e })
        };
        let [a, b, c, d, e] = FILES.map(read);
        let set = PromptSet { numeric: a?, numeric_answer: b?, symbolic: c?, symbolic_answer: d?, self_prompt: e? };
        set.validate()?;
        Ok(set)
    }

    /// Every template renders with the placeholders its stage provides.
    pub fn validate(&self) -> Result<()> {
        let all = ["problem", "variables", "numeric_problem", "numeric_solution"];
        let dummy: Vec<(&str, &str)> = all.iter().map(|k| (*k, "_")).collect();
        let none: &[&str] = &[];
        let allowed: [(&str, &[&str]); 5] = [
            (self.numeric.as_str(), &["problem"]),
            (self.numeric_answer.as_str(), none),
            (self.symbolic.as_str(), &["problem", "variables"]),
            (self.symbolic_answer.as_str(), &["variables"]),
            (self.self_prompt.as_str(), &all),
        ];
        for ((template, keys), name) in allowed.iter().zip(FILES) {
            let vars: Vec<(&str, &str)> = dummy.iter().filter(|(k, _)| keys.contains(k)).copied().collect();
            render(template, &vars).map_err(|e| Error::Config(format!("prompt `{name}`: {e}")))?;
        }
        Ok(())
    }
}

/// Replaces each `{key}` by its value; a `{word}` with no value is an error (so a typo in a template cannot
/// reach the model). Other braces (`{` not followed by a word and `}`) are kept.
pub fn render(template: &str, vars: &[(&str, &str)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}');
        let key = close.map(|c| &after[..c]);
        match key {
            Some(k) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                let value = vars.iter().find(|(name, _)| *name == k).map(|(_, v)| *v).ok_or_else(|| {
                    Error::Config(format!("template uses `{{{k}}}`, which this stage does not provide"))
                })?;
                out.push_str(value);
                rest = &after[k.len() + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out.trim_end_matches('\n').to_string())
}

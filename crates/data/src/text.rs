//! Text datasets: raw corpora (TinyShakespeare, WikiText-2), labelled sentence TSVs (SST-2, CR) and SVAMP's JSON.
//! Malformed input is an error naming the file and the line (or byte offset), never a panic.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, format_err};

/// Reads a UTF-8 text file; invalid UTF-8 is an error naming the line and byte offset.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        format_err(path, format!("invalid UTF-8 at byte {at} (line {line})"))
    })
}

/// TinyShakespeare: one text (`input.txt`).
pub fn tinyshakespeare(dir: &Path) -> Result<String> {
    read_text(&dir.join("input.txt"))
}

/// WikiText-2 (raw tokens as distributed, with `<unk>`): the three splits.
#[derive(Debug, Clone)]
pub struct WikiText {
    pub train: String,
    pub valid: String,
    pub test: String,
}

pub fn wikitext2(dir: &Path) -> Result<WikiText> {
    Ok(WikiText {
        train: read_text(&dir.join("train.txt"))?,
        valid: read_text(&dir.join("valid.txt"))?,
        test: read_text(&dir.join("test.txt"))?,
    })
}

/// A sentence with an integer label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labelled {
    pub text: String,
    pub label: u32,
}

/// Reads `sentence<TAB>label` lines after a `sentence<TAB>label` header (SST-2 and CR as distributed here).
/// Labels must be below `classes`.
pub fn read_labelled_tsv(path: &Path, classes: u32) -> Result<Vec<Labelled>> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim_end() == "sentence\tlabel" => {}
        Some((_, header)) => {
            return Err(format_err(path, format!("line 1: expected header `sentence<TAB>label`, found {header:?}")));
        }
        None => return Err(format_err(path, "empty file".into())),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (sentence, label) = line
            .rsplit_once('\t')
            .ok_or_else(|| format_err(path, format!("line {}: no TAB between sentence and label", i + 1)))?;
        let label: u32 = label
            .trim()
            .parse()
            .map_err(|_| format_err(path, format!("line {}: label {label:?} is not an integer", i + 1)))?;
        if label >= classes {
            return Err(format_err(path, format!("line {}: label {label} outside 0..{classes}", i + 1)));
        }
        out.push(Labelled { text: sentence.trim().to_string(), label });
    }
    Ok(out)
}

/// SST-2 (binary sentiment): train and dev.
pub fn sst2(dir: &Path) -> Result<(Vec<Labelled>, Vec<Labelled>)> {
    Ok((read_labelled_tsv(&dir.join("train.tsv"), 2)?, read_labelled_tsv(&dir.join("dev.tsv"), 2)?))
}

/// CR (customer reviews, binary sentiment): one file, no official split.
pub fn cr(dir: &Path) -> Result<Vec<Labelled>> {
    read_labelled_tsv(&dir.join("cr.tsv"), 2)
}

/// MR (movie-review snippets, binary sentiment): one file, no official split.
pub fn mr(dir: &Path) -> Result<Vec<Labelled>> {
    read_labelled_tsv(&dir.join("mr.tsv"), 2)
}

/// SUBJ (1 subjective, 0 objective): one file, no official split.
pub fn subj(dir: &Path) -> Result<Vec<Labelled>> {
    read_labelled_tsv(&dir.join("subj.tsv"), 2)
}

/// MPQA (opinion polarity of phrases): one file, no official split.
pub fn mpqa(dir: &Path) -> Result<Vec<Labelled>> {
    read_labelled_tsv(&dir.join("mpqa.tsv"), 2)
}

/// TREC-6 (question types, labels index [`crate::TREC_CLASSES`]): train and test.
pub fn trec(dir: &Path) -> Result<(Vec<Labelled>, Vec<Labelled>)> {
    Ok((read_labelled_tsv(&dir.join("train.tsv"), 6)?, read_labelled_tsv(&dir.join("test.tsv"), 6)?))
}

/// CoLA (1 acceptable, 0 unacceptable): train and dev.
pub fn cola(dir: &Path) -> Result<(Vec<Labelled>, Vec<Labelled>)> {
    Ok((read_labelled_tsv(&dir.join("train.tsv"), 2)?, read_labelled_tsv(&dir.join("dev.tsv"), 2)?))
}

/// One SVAMP math word problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvampProblem {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Body")]
    pub body: String,
    #[serde(rename = "Question")]
    pub question: String,
    #[serde(rename = "Equation")]
    pub equation: String,
    #[serde(rename = "Answer")]
    pub answer: f64,
    #[serde(rename = "Type")]
    pub kind: String,
}

/// SVAMP (`SVAMP.json`): 1,000 problems. JSON errors name the line and column.
pub fn svamp(dir: &Path) -> Result<Vec<SvampProblem>> {
    let path = dir.join("SVAMP.json");
    let text = read_text(&path)?;
    let problems: Vec<SvampProblem> = serde_json::from_str(&text)
        .map_err(|e| format_err(&path, format!("line {}, column {}: {e}", e.line(), e.column())))?;
    if let Some(p) = problems.iter().find(|p| !p.answer.is_finite()) {
        return Err(format_err(&path, format!("problem {}: non-finite answer", p.id)));
    }
    Ok(problems)
}

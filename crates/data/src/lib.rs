//! Datasets for Strata: a registry of every dataset a reproduction reads (files, sizes, SHA-256, canonical source,
//! license), resolution of where the files live on this machine, checksum verification, and loaders.
//!
//! Resolution order, as in most ML tooling: an explicit directory, then the `STRATA_DATA` environment variable, then
//! the user cache (`$XDG_CACHE_HOME/strata/data` or `~/.cache/strata/data`). Each dataset lives in a subfolder named
//! after it (`mnist/`, `tinyshakespeare/`, ...). [`resolve`] never downloads; [`fetch::obtain`] (what reproductions
//! call) fetches a dataset that is nowhere on the machine into the user cache, checked against the registry's
//! SHA-256 before it is used, unless `STRATA_OFFLINE=1`; `strata data list|fetch` is the command-line side.
//!
//! ```
//! use strata_data::tokenize::{ByteTokenizer, CharVocab};
//! // Every dataset a reproduction reads is in the registry, with its files, sizes, checksums and license.
//! let mnist = strata_data::dataset("mnist")?;
//! assert!(mnist.files.iter().all(|f| f.sha256.len() == 64));
//! // Found through `--data`, STRATA_DATA or the user cache, and checked against the SHA-256 sums:
//! if let Ok(dir) = strata_data::resolve("mnist", None) {
//!     let mnist = strata_data::mnist::Mnist::load(&dir)?;
//!     let (images, labels) = mnist.test.batch(&[0, 1, 2]); // [3, 1, 28, 28] in [0, 1], and the labels
//!     assert_eq!((images.shape(), labels.len()), (&[3, 1, 28, 28][..], 3));
//! }
//! let vocab = CharVocab::from_corpus("to be or not to be");
//! assert_eq!(vocab.decode(&vocab.encode("be not")?)?, "be not");
//! assert_eq!(ByteTokenizer.encode("hi"), [104, 105]);
//! # Ok::<(), strata_data::Error>(())
//! ```
//!
//! - [`fetch`]: downloads through `.part` files with HTTP range resume, retries and a checksum before the rename;
//!   canonical URLs per file, or a mirror laid out like a data folder (`STRATA_DATA_URL`).
//! - [`mnist`]: IDX files (gzipped or not) with every header and size checked.
//! - [`text`]: TinyShakespeare, WikiText-2, SST-2/CR TSV and SVAMP JSON loaders.
//! - [`tokenize`]: bytes and characters; [`hf`]: HuggingFace `tokenizer.json` (MiniLM's WordPiece, with
//!   [`hf::MINILM_MAX_LEN`]) and byte-level BPE training.
//! - [`testing`]: how tests find the shared datasets (fail when `STRATA_DATA` lacks one, skip loudly without it).
//! - [`batch`]: seeded LM windows (random or shuffled) whose position is one checkpointable number,
//!   sequential evaluation batches, padding with masks.

pub mod batch;
pub mod fetch;
pub mod hf;
pub mod mnist;
mod registry;
pub mod testing;
pub mod text;
pub mod tokenize;

pub use registry::{
    DataFile, Dataset, REGISTRY, Source, TREC_CLASSES, build_cr_tsv, cache_root, dataset, resolve, resolve_unverified,
    search_roots, verify,
};

use std::path::PathBuf;

/// Errors from finding, verifying and parsing dataset files. Each names the file (and line or byte offset) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unknown dataset `{0}` (known: {1})")]
    UnknownDataset(String, String),
    #[error(
        "dataset `{name}` not found; looked in {searched}. Run `strata data fetch {name}` (or `cargo xtask data \
             fetch {name}`), or fetch {files} from {url} into <dir>/{name}/ and pass --data <dir> or set \
             STRATA_DATA=<dir>"
    )]
    NotFound { name: String, searched: String, files: String, url: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: checksum mismatch: expected sha256 {expected}, found {found} (a corrupt or different file)")]
    Checksum { path: PathBuf, expected: String, found: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{url}: {message}")]
    Download { url: String, message: String },
    #[error(
        "STRATA_OFFLINE is set, so nothing is downloaded; unset it, or put the files in place (`strata data list` \
             shows where they are looked for)"
    )]
    Offline,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A malformed-file error for `path`.
pub(crate) fn format_err(path: &std::path::Path, message: String) -> Error {
    Error::Format { path: path.to_path_buf(), message }
}

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// One file of a dataset, relative to the dataset's folder.
#[derive(Debug, Clone, Copy)]
pub struct DataFile {
    pub path: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
    /// Where [`crate::fetch`] gets it when no mirror is set.
    pub source: Source,
}

/// Where a file comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Downloaded byte for byte from this URL (pinned to a commit or revision where the host allows it).
    Url(&'static str),
    /// Built from other files of the same dataset (fetched first) by `build`, which reads the dataset's folder;
    /// `how` says what it does. The result is checked against the registered SHA-256 like a download.
    Derived { from: &'static [&'static str], how: &'static str, build: fn(&Path) -> Result<Vec<u8>> },
    /// No canonical copy of this exact file is published (it was rebuilt for Strata; the reason is given): it
    /// comes from a mirror (`STRATA_DATA_URL`) or is placed by hand.
    MirrorOnly(&'static str),
}

/// A registered dataset: where it comes from and what its files must be.
#[derive(Debug, Clone, Copy)]
pub struct Dataset {
    pub name: &'static str,
    pub url: &'static str,
    pub license: &'static str,
    pub files: &'static [DataFile],
}

const fn file(path: &'static str, bytes: u64, sha256: &'static str, url: &'static str) -> DataFile {
    DataFile { path, bytes, sha256, source: Source::Url(url) }
}

// Canonical sources, pinned to a commit or revision where the host allows it.
macro_rules! minilm {
    ($f:literal) => {
        concat!("https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/1110a243fdf4706b3f48f1d95db1a4f5529b4d41/", $f)
    };
}
// torchvision's mirror of the original MNIST files (the same bytes; yann.lecun.com refuses most clients).
macro_rules! mnist {
    ($f:literal) => {
        concat!("https://ossci-datasets.s3.amazonaws.com/mnist/", $f)
    };
}
// PyTorch's word_language_model copy of WikiText-2 (byte-identical to the tokenised release).
macro_rules! wikitext2 {
    ($f:literal) => {
        concat!(
            "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2/",
            $f
        )
    };
}
macro_rules! sst2 {
    ($f:literal) => {
        concat!(
            "https://raw.githubusercontent.com/eyalbd2/Reproducing-AutoPrompt/6288fb5bec9c572f2492875ae0111df5b6daed11/glue_data/SST-2/",
            $f
        )
    };
}
macro_rules! cr {
    ($f:literal) => {
        concat!(
            "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/d61ded09c99c0199d8c5bca946cd65864de2b296/data/raw/",
            $f
        )
    };
}

/// Windows-1252 bytes as text (the raw MR, SUBJ and TREC files are not UTF-8); the five bytes the code page leaves
/// undefined are an error naming the file.
fn decode_cp1252(path: &Path, bytes: &[u8]) -> Result<String> {
    const HIGH: [char; 32] = [
        '\u{20ac}', '\0', '\u{201a}', '\u{0192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{02c6}',
        '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\0', '\u{017d}', '\0', '\0', '\u{2018}', '\u{2019}',
        '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02dc}', '\u{2122}', '\u{0161}', '\u{203a}',
        '\u{0153}', '\0', '\u{017e}', '\u{0178}',
    ];
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        let c = match b {
            0x80..=0x9f => HIGH[(b - 0x80) as usize],
            _ => b as char, // ASCII and Latin-1 agree with Windows-1252 outside 0x80-0x9f
        };
        if c == '\0' && b != 0 {
            return Err(crate::format_err(path, format!("byte {i}: 0x{b:02x} is not Windows-1252")));
        }
        out.push(c);
    }
    Ok(out)
}

/// A `sentence\tlabel` TSV from raw files of one sentence a line: every non-empty line (decoded as Windows-1252,
/// stripped) of each file with that file's label, files in order. CR, MR, SUBJ and MPQA are built this way.
fn labelled_tsv_from_lines(dir: &Path, files: &[(&str, u32)]) -> Result<Vec<u8>> {
    let mut out = String::from("sentence\tlabel\n");
    for (file, label) in files {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        for line in decode_cp1252(&path, &bytes)?.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
            if line.contains('\t') {
                return Err(crate::format_err(&path, format!("a sentence holds a tab: {line:?}")));
            }
            out.push_str(&format!("{line}\t{label}\n"));
        }
    }
    Ok(out.into_bytes())
}

/// `cr.tsv` from `custrev.pos` (label 1) and `custrev.neg` (label 0).
pub fn build_cr_tsv(dir: &Path) -> Result<Vec<u8>> {
    labelled_tsv_from_lines(dir, &[("custrev.pos", 1), ("custrev.neg", 0)])
}

fn build_mr_tsv(dir: &Path) -> Result<Vec<u8>> {
    labelled_tsv_from_lines(dir, &[("rt-polarity.pos", 1), ("rt-polarity.neg", 0)])
}

fn build_subj_tsv(dir: &Path) -> Result<Vec<u8>> {
    labelled_tsv_from_lines(dir, &[("subj.subjective", 1), ("subj.objective", 0)])
}

fn build_mpqa_tsv(dir: &Path) -> Result<Vec<u8>> {
    labelled_tsv_from_lines(dir, &[("mpqa.pos", 1), ("mpqa.neg", 0)])
}

/// TREC's coarse classes in the order of the HuggingFace `trec` dataset's `coarse_label`.
pub const TREC_CLASSES: [&str; 6] = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"];

/// `COARSE:fine question` lines to `question\tcoarse index`.
fn trec_tsv(dir: &Path, raw: &str) -> Result<Vec<u8>> {
    let path = dir.join(raw);
    let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    let mut out = String::from("sentence\tlabel\n");
    for (n, line) in decode_cp1252(&path, &bytes)?.split('\n').enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = || crate::format_err(&path, format!("line {}: expected `COARSE:fine question`", n + 1));
        let (tag, text) = line.split_once(' ').ok_or_else(bad)?;
        let coarse = tag.split(':').next().ok_or_else(bad)?;
        let label = TREC_CLASSES.iter().position(|c| *c == coarse).ok_or_else(bad)?;
        out.push_str(&format!("{}\t{label}\n", text.trim()));
    }
    Ok(out.into_bytes())
}

fn build_trec_train(dir: &Path) -> Result<Vec<u8>> {
    trec_tsv(dir, "TREC.train")
}

fn build_trec_test(dir: &Path) -> Result<Vec<u8>> {
    trec_tsv(dir, "TREC.test")
}

/// GLUE's CoLA layout (source, label, mark, sentence; no header) to `sentence\tlabel`.
fn cola_tsv(dir: &Path, raw: &str) -> Result<Vec<u8>> {
    let path = dir.join(raw);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    let mut out = String::from("sentence\tlabel\n");
    for (n, line) in text.split('\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != 4 || !matches!(cols[1], "0" | "1") {
            return Err(crate::format_err(&path, format!("line {}: expected 4 columns with a 0/1 label", n + 1)));
        }
        out.push_str(&format!("{}\t{}\n", cols[3], cols[1]));
    }
    Ok(out.into_bytes())
}

fn build_cola_train(dir: &Path) -> Result<Vec<u8>> {
    cola_tsv(dir, "glue/train.tsv")
}

fn build_cola_dev(dir: &Path) -> Result<Vec<u8>> {
    cola_tsv(dir, "glue/dev.tsv")
}

const fn derived(
    path: &'static str,
    bytes: u64,
    sha256: &'static str,
    from: &'static [&'static str],
    how: &'static str,
    build: fn(&Path) -> Result<Vec<u8>>,
) -> DataFile {
    DataFile { path, bytes, sha256, source: Source::Derived { from, how, build } }
}

const LINES_TSV: &str = "the non-empty lines of the raw files (Windows-1252, stripped) with their labels, under a \
                         `sentence<TAB>label` header";

/// Every dataset Strata knows. Checksums are those of the canonical files (see each folder's README in
/// `../shared/data`).
pub const REGISTRY: &[Dataset] = &[
    Dataset {
        name: "all-MiniLM-L6-v2",
        url: "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2 (revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41)",
        license: "Apache-2.0",
        files: &[
            file(
                "model.safetensors",
                90868376,
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                minilm!("model.safetensors"),
            ),
            file(
                "tokenizer.json",
                466247,
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                minilm!("tokenizer.json"),
            ),
            file(
                "config.json",
                612,
                "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                minilm!("config.json"),
            ),
        ],
    },
    Dataset {
        name: "mnist",
        url: "http://yann.lecun.com/exdb/mnist/",
        license: "CC BY-SA 3.0 (as commonly cited; Y. LeCun and C. Cortes)",
        files: &[
            file(
                "train-images-idx3-ubyte.gz",
                9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                mnist!("train-images-idx3-ubyte.gz"),
            ),
            file(
                "train-labels-idx1-ubyte.gz",
                28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                mnist!("train-labels-idx1-ubyte.gz"),
            ),
            file(
                "t10k-images-idx3-ubyte.gz",
                1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                mnist!("t10k-images-idx3-ubyte.gz"),
            ),
            file(
                "t10k-labels-idx1-ubyte.gz",
                4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                mnist!("t10k-labels-idx1-ubyte.gz"),
            ),
        ],
    },
    Dataset {
        name: "tinyshakespeare",
        url: "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        license: "public domain text; char-rnn repository MIT",
        files: &[file(
            "input.txt",
            1115394,
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        )],
    },
    Dataset {
        name: "wikitext-2",
        url: "https://blog.salesforceairesearch.com/the-wikitext-long-term-dependency-language-modeling-dataset/",
        license: "CC BY-SA 3.0 (Merity et al. 2016, Wikipedia)",
        files: &[
            file(
                "train.txt",
                10797148,
                "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
                wikitext2!("train.txt"),
            ),
            file(
                "valid.txt",
                1121681,
                "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
                wikitext2!("valid.txt"),
            ),
            file(
                "test.txt",
                1256449,
                "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
                wikitext2!("test.txt"),
            ),
        ],
    },
    Dataset {
        name: "sst2",
        url: "https://gluebenchmark.com/tasks (SST-2)",
        license: "no explicit license (research use)",
        files: &[
            file(
                "train.tsv",
                3806081,
                "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
                sst2!("train_full.tsv"),
            ),
            file(
                "dev.tsv",
                94931,
                "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
                sst2!("dev.tsv"),
            ),
        ],
    },
    Dataset {
        name: "cr",
        url: "https://github.com/harvardnlp/sent-conv-torch (CR)",
        license: "no explicit license (research use)",
        files: &[
            file(
                "custrev.pos",
                225449,
                "15eeb0b9424043bb3755488e2d8ed97bdaeba464a5c230f213bad075125d2192",
                cr!("custrev.pos"),
            ),
            file(
                "custrev.neg",
                141095,
                "8f29d7fa39f9862764b71f36b193f0674e0056287ffc5bf170edf6db42cc8f83",
                cr!("custrev.neg"),
            ),
            derived(
                "cr.tsv",
                374097,
                "3c86e71501ccbc156ade0e8eb32e839dafd080347a1369d18314074e530c2224",
                &["custrev.pos", "custrev.neg"],
                LINES_TSV,
                build_cr_tsv,
            ),
        ],
    },
    Dataset {
        name: "svamp",
        url: "https://github.com/arkilpatel/SVAMP",
        license: "MIT",
        files: &[file(
            "SVAMP.json",
            339970,
            "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e",
            "https://raw.githubusercontent.com/arkilpatel/SVAMP/689d7ccac74b9983a2ac7cc3b264f441b99e7c53/SVAMP.json",
        )],
    },
    Dataset {
        name: "mr",
        url: "https://github.com/harvardnlp/sent-conv-torch (MR, Pang & Lee 2005)",
        license: "no explicit license (research use)",
        files: &[
            file(
                "rt-polarity.pos",
                626139,
                "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0",
                cr!("rt-polarity.pos"),
            ),
            file(
                "rt-polarity.neg",
                612256,
                "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca",
                cr!("rt-polarity.neg"),
            ),
            derived(
                "mr.tsv",
                1249489,
                "42e24f5d7a605c5449a0238da3393da7ff1ff2b7a19bee44ccd3c36c2ee3f736",
                &["rt-polarity.pos", "rt-polarity.neg"],
                LINES_TSV,
                build_mr_tsv,
            ),
        ],
    },
    Dataset {
        name: "subj",
        url: "https://github.com/harvardnlp/sent-conv-torch (SUBJ, Pang & Lee 2004)",
        license: "no explicit license (research use)",
        files: &[
            file(
                "subj.subjective",
                630790,
                "73a2dcf8dc3cbcc7f068a70ef9f021c86b2a8e4dac81566b7fd015b3e938f2c5",
                cr!("subj.subjective"),
            ),
            file(
                "subj.objective",
                669456,
                "5ddc9b44dc60d64d651347fcd7bdd489b0c70661e3f768215c16eea36f51204a",
                cr!("subj.objective"),
            ),
            derived(
                "subj.tsv",
                1310432,
                "553d0d259ab21c0da21366d943fa7735629890321771108a24f3fca9a6ca4cf0",
                &["subj.subjective", "subj.objective"],
                LINES_TSV,
                build_subj_tsv,
            ),
        ],
    },
    Dataset {
        name: "mpqa",
        url: "https://github.com/harvardnlp/sent-conv-torch (MPQA polarity)",
        license: "no explicit license (research use)",
        files: &[
            file(
                "mpqa.pos",
                57239,
                "f4aaafdd63c439fd2d056149f3b5d200416dabb200a8b7d8f4bf9903981ff8a5",
                cr!("mpqa.pos"),
            ),
            file(
                "mpqa.neg",
                151521,
                "02e193d98c7715bc6200bb23dc6d2903482bd80c0432c53c3f3738c636df3f72",
                cr!("mpqa.neg"),
            ),
            derived(
                "mpqa.tsv",
                229939,
                "c7572792cf7bced65e8cafcaf0c97119fd0307ab0b6387d653cbf94ad7d95ac4",
                &["mpqa.pos", "mpqa.neg"],
                LINES_TSV,
                build_mpqa_tsv,
            ),
        ],
    },
    Dataset {
        name: "trec",
        url: "https://github.com/harvardnlp/sent-conv-torch (TREC-6, Li & Roth 2002)",
        license: "no explicit license (research use)",
        files: &[
            file(
                "TREC.train",
                335858,
                "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3",
                cr!("TREC.train"),
            ),
            file(
                "TREC.test",
                23354,
                "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e",
                cr!("TREC.test"),
            ),
            derived(
                "train.tsv",
                292418,
                "c5765d4a5de649c25eaf7b3ee0073a6098372fbd69c0a3f3eacde0eb1b9abe9b",
                &["TREC.train"],
                "the question after the tag, stripped, with the coarse class's index in TREC_CLASSES",
                build_trec_train,
            ),
            derived(
                "test.tsv",
                19494,
                "0a8636a0bd871298b968abd403ffb521165fb39bcc02f22eb64210672b6dd593",
                &["TREC.test"],
                "the question after the tag, stripped, with the coarse class's index in TREC_CLASSES",
                build_trec_test,
            ),
        ],
    },
    Dataset {
        name: "cola",
        url: "https://nyu-mll.github.io/CoLA/ (GLUE CoLA)",
        license: "no explicit license (research use)",
        files: &[
            DataFile {
                path: "glue/train.tsv",
                bytes: 428590,
                sha256: "cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624",
                source: Source::MirrorOnly(
                    "GLUE's CoLA train split, rebuilt from two halves of a public copy (see the data folder's README)",
                ),
            },
            file(
                "glue/dev.tsv",
                53717,
                "8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd",
                "https://raw.githubusercontent.com/amrnag/Specialized-Transformers/cae3514a52b66977974bfedd7ecc2efd029a72e9/data/CoLA/dev.tsv",
            ),
            derived(
                "train.tsv",
                373721,
                "0ba9dbd2ba2a297b208df1612fcf96a94bf4d80f0c02430598d46b3dd8c0247f",
                &["glue/train.tsv"],
                "GLUE's columns 4 (sentence) and 2 (label) under a header",
                build_cola_train,
            ),
            derived(
                "dev.tsv",
                46778,
                "6ebf1ad9b6502cc88b3a1122edb344e7be567bd3010577bbd4cbe07edc62e867",
                &["glue/dev.tsv"],
                "GLUE's columns 4 (sentence) and 2 (label) under a header",
                build_cola_dev,
            ),
        ],
    },
];

/// Looks a dataset up by name.
pub fn dataset(name: &str) -> Result<&'static Dataset> {
    REGISTRY.iter().find(|d| d.name == name).ok_or_else(|| {
        Error::UnknownDataset(name.into(), REGISTRY.iter().map(|d| d.name).collect::<Vec<_>>().join(", "))
    })
}

/// The roots searched, in order: `explicit`, `$STRATA_DATA`, the user cache.
pub fn search_roots(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    roots.extend(explicit.map(Path::to_path_buf));
    if let Some(env) = std::env::var_os("STRATA_DATA").filter(|v| !v.is_empty()) {
        roots.push(PathBuf::from(env));
    }
    roots.extend(cache_root());
    roots
}

/// The user cache, where `strata data fetch` and fetch-on-first-use put datasets: `$XDG_CACHE_HOME/strata/data`,
/// else `~/.cache/strata/data`.
pub fn cache_root() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    cache.map(|c| c.join("strata").join("data"))
}

/// Finds the dataset's folder (the first root holding all its files with the right sizes) without hashing.
/// An explicit root (`--data DIR`) is the only place looked: a dataset missing from it, or a file of the wrong
/// size there, is an error naming the file, never a silent fall-back to `STRATA_DATA` or the user cache.
pub fn resolve_unverified(name: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    let ds = dataset(name)?;
    if let Some(root) = explicit {
        let dir = root.join(ds.name);
        for f in ds.files {
            let path = dir.join(f.path);
            match std::fs::metadata(&path) {
                Ok(m) if m.len() == f.bytes => {}
                Ok(m) => {
                    return Err(Error::Format {
                        path,
                        message: format!("{} bytes, expected {} (a partial or different file)", m.len(), f.bytes),
                    });
                }
                Err(_) => {
                    return Err(Error::NotFound {
                        name: ds.name.into(),
                        searched: format!("{} (given explicitly; {} is missing)", dir.display(), f.path),
                        files: ds.files.iter().map(|f| f.path).collect::<Vec<_>>().join(", "),
                        url: ds.url.into(),
                    });
                }
            }
        }
        return Ok(dir);
    }
    let roots = search_roots(None);
    for root in &roots {
        let dir = root.join(ds.name);
        let complete = ds.files.iter().all(|f| std::fs::metadata(dir.join(f.path)).is_ok_and(|m| m.len() == f.bytes));
        if complete {
            return Ok(dir);
        }
    }
    Err(Error::NotFound {
        name: ds.name.into(),
        searched: roots.iter().map(|r| r.join(ds.name).display().to_string()).collect::<Vec<_>>().join(", "),
        files: ds.files.iter().map(|f| f.path).collect::<Vec<_>>().join(", "),
        url: ds.url.into(),
    })
}

/// Finds the dataset's folder and checks every file's SHA-256.
pub fn resolve(name: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    let dir = resolve_unverified(name, explicit)?;
    verify(dataset(name)?, &dir)?;
    Ok(dir)
}

/// Checks every file of `ds` under `dir` against its size and SHA-256.
pub fn verify(ds: &Dataset, dir: &Path) -> Result<()> {
    for f in ds.files {
        let path = dir.join(f.path);
        let found = sha256_file(&path)?;
        if found != f.sha256 {
            return Err(Error::Checksum { path, expected: f.sha256.into(), found });
        }
    }
    Ok(())
}

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

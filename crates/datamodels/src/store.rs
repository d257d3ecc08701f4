//! A datamodels store in the layout of MadryLab's `datamodels` package: one row per model in `.npy` arrays
//! (`masks.npy`: bool [models, N]; `margins.npy`: f32 [models, T]) plus a completion bitmap (`done.npy`: bool
//! [models]) and `meta.json`. Files are preallocated; a worker given an index range writes each row in place
//! (positional writes, so workers on disjoint ranges can share one store, as Slurm or Kubernetes job arrays do),
//! syncs it, then marks it done. A killed worker resumes where it stopped: a row is only marked done after its data
//! is on disk, and rows are deterministic functions of (seed, index), so a row redone after a kill is identical.
//! Separate stores (one per node) merge by copying their done rows.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Element types of `.npy` arrays this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    F16,
    F32,
    F64,
}

impl Dtype {
    fn descr(self) -> &'static str {
        match self {
            Dtype::Bool => "|b1",
            Dtype::U8 => "|u1",
            Dtype::F16 => "<f2",
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 => 1,
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
    fn parse(descr: &str) -> Option<Dtype> {
        Some(match descr {
            "|b1" | "b1" | "?" | "|?" => Dtype::Bool,
            "|u1" | "u1" | "<u1" => Dtype::U8,
            "<f2" | "f2" => Dtype::F16,
            "<f4" | "f4" => Dtype::F32,
            "<f8" | "f8" => Dtype::F64,
            _ => return None,
        })
    }
}

/// The header of a 2-D (or 1-D) C-ordered `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyHeader {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte offset of the data.
    pub data_offset: u64,
}

fn file_err(path: &Path, message: impl Into<String>) -> Error {
    Error::File { path: path.to_path_buf(), message: message.into() }
}

/// Writes a `.npy` header (format 1.0, padded so the data starts on a 64-byte boundary) and returns its length.
fn header_bytes(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let shape_str = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape_str}, }}", dtype.descr());
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.next_multiple_of(64);
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend(((total - 10) as u16).to_le_bytes());
    h.extend(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', total - unpadded));
    h.push(b'\n');
    h
}

/// The data bytes of an array, or `None` when the element count or byte size overflows.
pub fn array_bytes(shape: &[usize], dtype: Dtype) -> Option<u64> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    (count as u64).checked_mul(dtype.size() as u64)
}

/// The largest store array `create_or_open` makes (1 TiB): beyond it a typo in `--models` or `--pool` would
/// fill a disk with sparse files before anything fails.
pub const MAX_STORE_ARRAY_BYTES: u64 = 1 << 40;

/// Reads and checks a `.npy` header: magic, version, little-endian supported dtype, C order, data size.
pub fn read_header(path: &Path) -> Result<NpyHeader> {
    let mut f = File::open(path).map_err(|e| file_err(path, e.to_string()))?;
    let mut pre = [0u8; 12];
    f.read_exact(&mut pre[..10]).map_err(|_| file_err(path, "too short for a .npy header"))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(file_err(path, "not a .npy file (bad magic)"));
    }
    let (len, start) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
        2 | 3 => {
            f.read_exact(&mut pre[10..12]).map_err(|_| file_err(path, "truncated header"))?;
            (u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as usize, 12)
        }
        v => return Err(file_err(path, format!("unsupported .npy version {v}"))),
    };
    if len > 1 << 20 {
        return Err(file_err(path, format!("header of {len} bytes is implausible")));
    }
    let mut dict = vec![0u8; len];
    f.read_exact(&mut dict).map_err(|_| file_err(path, "truncated header"))?;
    let dict = String::from_utf8_lossy(&dict);
    let field = |key: &str| -> Option<String> {
        let at = dict.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = dict[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr").and_then(|r| r.strip_prefix('\'').and_then(|r| r.split('\'').next().map(String::from)));
    let descr = descr.ok_or_else(|| file_err(path, "header has no descr"))?;
    let dtype = Dtype::parse(&descr)
        .ok_or_else(|| file_err(path, format!("dtype {descr} is not one of bool, uint8, <f2, <f4, <f8")))?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(file_err(path, "Fortran-ordered arrays are not supported (save with C order)"));
    }
    let shape_src = field("shape").ok_or_else(|| file_err(path, "header has no shape"))?;
    let inner =
        shape_src.strip_prefix('(').and_then(|r| r.split(')').next()).ok_or_else(|| file_err(path, "bad shape"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<usize>().map_err(|_| file_err(path, format!("bad shape entry {t}"))))
        .collect::<Result<Vec<_>>>()?;
    let data_offset = (start + len) as u64;
    // Sizes computed from a header are checked: a crafted shape must not wrap around.
    let expected = array_bytes(&shape, dtype)
        .ok_or_else(|| file_err(path, format!("shape {shape:?} of {descr} overflows the addressable size")))?;
    let file_len = f.metadata().map_err(|e| file_err(path, e.to_string()))?.len();
    let actual = file_len
        .checked_sub(data_offset)
        .ok_or_else(|| file_err(path, format!("file of {file_len} bytes ends before its data offset {data_offset}")))?;
    if actual != expected {
        return Err(file_err(
            path,
            format!("shape {shape:?} of {descr} needs {expected} data bytes, file has {actual}"),
        ));
    }
    Ok(NpyHeader { dtype, shape, data_offset })
}

fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 => {
            if frac == 0.0 {
                f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// A 2-D array read as f64 (rows x cols), from bool, uint8 or float `.npy` files.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The rows whose `keep` flag is set, in order.
    pub fn select_rows(&self, keep: &[bool]) -> Matrix {
        let data: Vec<f64> = (0..self.rows)
            .filter(|&r| keep.get(r).copied().unwrap_or(false))
            .flat_map(|r| self.row(r).to_vec())
            .collect();
        Matrix { rows: data.len() / self.cols.max(1), cols: self.cols, data }
    }
}

/// The completed rows of a store's arrays: a store whose run is incomplete has pending all-zero rows, which are
/// not data. `done` is the store's completion bitmap (`done.npy`, one 0/1 value per row). Returns the masks and
/// outputs of the completed rows; no completed row is an error.
pub fn completed_rows(masks: &Matrix, outputs: &Matrix, done: &Matrix) -> Result<(Matrix, Matrix)> {
    if done.rows * done.cols != masks.rows || masks.rows != outputs.rows {
        return Err(Error::Shape(format!(
            "done has {} values for {} mask rows and {} output rows",
            done.rows * done.cols,
            masks.rows,
            outputs.rows
        )));
    }
    let keep: Vec<bool> = done.data.iter().map(|&d| d != 0.0).collect();
    if !keep.iter().any(|&k| k) {
        return Err(Error::InvalidArgument("no row of the store is complete yet".into()));
    }
    Ok((masks.select_rows(&keep), outputs.select_rows(&keep)))
}

/// Reads a 2-D `.npy` array (a 1-D array is one column).
pub fn read_matrix(path: &Path) -> Result<Matrix> {
    let h = read_header(path)?;
    let (rows, cols) = match h.shape[..] {
        [r] => (r, 1),
        [r, c] => (r, c),
        _ => return Err(file_err(path, format!("expected a 1-D or 2-D array, shape {:?}", h.shape))),
    };
    let mut bytes = Vec::new();
    let mut f = File::open(path).map_err(|e| file_err(path, e.to_string()))?;
    f.read_to_end(&mut bytes).map_err(|e| file_err(path, e.to_string()))?;
    let raw = &bytes[h.data_offset as usize..];
    let data: Vec<f64> = match h.dtype {
        Dtype::Bool | Dtype::U8 => raw.iter().map(|&b| b as f64).collect(),
        Dtype::F16 => raw.chunks_exact(2).map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64).collect(),
        Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4")) as f64).collect(),
        Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8"))).collect(),
    };
    Ok(Matrix { rows, cols, data })
}

/// Writes a whole array as `.npy` atomically (f32 or bool data given as f64 / 0-1 values).
pub fn write_npy(path: &Path, dtype: Dtype, shape: &[usize], values: &[f64]) -> Result<()> {
    if shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) != Some(values.len()) {
        return Err(Error::Shape(format!("{} values for shape {shape:?}", values.len())));
    }
    let mut bytes = header_bytes(dtype, shape);
    for &v in values {
        match dtype {
            Dtype::Bool | Dtype::U8 => bytes.push(v as u8),
            Dtype::F16 => return Err(Error::InvalidArgument("writing f16 is not supported".into())),
            Dtype::F32 => bytes.extend((v as f32).to_le_bytes()),
            Dtype::F64 => bytes.extend(v.to_le_bytes()),
        }
    }
    tensor::write_atomic(path, &bytes)?;
    Ok(())
}

/// How a row's subset is drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Sampling {
    /// Each point in with probability p.
    Iid { p: f64 },
    /// Exactly round(alpha N) points (the datamodels papers' alpha-subsets).
    Alpha { alpha: f64 },
    /// Rows 2k and 2k+1 are a rho-correlated pair under mu_p.
    Pairs { p: f64, rho: f64 },
}

impl Sampling {
    /// Probabilities in range: p in (0, 1), alpha in (0, 1], rho in [0, 1] (NaN is out of every range).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        match *self {
            Sampling::Iid { p } | Sampling::Pairs { p, .. } if !(p > 0.0 && p < 1.0) => {
                bad(format!("p = {p} must be in (0, 1)"))
            }
            Sampling::Alpha { alpha } if !(alpha > 0.0 && alpha <= 1.0) => {
                bad(format!("alpha = {alpha} must be in (0, 1]"))
            }
            Sampling::Pairs { rho, .. } if !(0.0..=1.0).contains(&rho) => bad(format!("rho = {rho} must be in [0, 1]")),
            _ => Ok(()),
        }
    }

    /// The subset of row `row` (deterministic in seed and row).
    pub fn mask(&self, n: usize, seed: u64, row: usize) -> Vec<bool> {
        match *self {
            Sampling::Iid { p } => {
                let u = tensor::uniform::<f64>(&[n], 0.0, 1.0, &mut tensor::derived(seed, row as u64));
                u.iter().map(|v| *v < p).collect()
            }
            Sampling::Alpha { alpha } => {
                let order = tensor::permutation(n, &mut tensor::derived(seed, row as u64));
                let k = ((alpha * n as f64).round() as usize).min(n);
                let mut m = vec![false; n];
                order[..k].iter().for_each(|&i| m[i] = true);
                m
            }
            Sampling::Pairs { p, rho } => {
                let u = tensor::uniform::<f64>(&[n, 3], 0.0, 1.0, &mut tensor::derived(seed, (row / 2) as u64));
                (0..n)
                    .map(|i| {
                        let x = u[[i, 0]] < p;
                        if row % 2 == 0 || u[[i, 1]] < rho { x } else { u[[i, 2]] < p }
                    })
                    .collect()
            }
        }
    }
}

/// What a store holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreMeta {
    pub models: usize,
    pub pool: usize,
    pub outputs: usize,
    pub sampling: Sampling,
    pub seed: u64,
    /// Free-form description of the model and task.
    pub task: String,
}

/// An open store directory.
#[derive(Debug)]
pub struct Store {
    pub dir: PathBuf,
    pub meta: StoreMeta,
    masks: File,
    margins: File,
    done: File,
    offsets: [u64; 3],
}

const FILES: [&str; 3] = ["masks.npy", "margins.npy", "done.npy"];

impl Store {
    /// Creates a store with every row pending, or opens an existing one with the same metadata.
    pub fn create_or_open(dir: &Path, meta: StoreMeta) -> Result<Store> {
        meta.sampling.validate()?;
        if meta.models == 0 || meta.pool == 0 || meta.outputs == 0 {
            return Err(Error::InvalidArgument(format!(
                "models {}, pool {} and outputs {} must each be at least 1",
                meta.models, meta.pool, meta.outputs
            )));
        }
        // Every size is checked before anything is created.
        for (name, (dtype, shape)) in FILES.iter().zip(&Self::array_specs(&meta)) {
            if array_bytes(shape, *dtype).is_none_or(|b| b > MAX_STORE_ARRAY_BYTES) {
                return Err(Error::InvalidArgument(format!(
                    "{name} of shape {shape:?} would exceed {MAX_STORE_ARRAY_BYTES} bytes (1 TiB), the largest \
                     array a store makes; check --models, --pool and the number of outputs"
                )));
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e.to_string()))?;
        let meta_path = dir.join("meta.json");
        if meta_path.exists() {
            let store = Store::open(dir)?;
            if store.meta != meta {
                return Err(file_err(&meta_path, format!("store holds {:?}, asked for {meta:?}", store.meta)));
            }
            return Ok(store);
        }
        let specs = Self::array_specs(&meta);
        for (name, (dtype, shape)) in FILES.iter().zip(&specs) {
            let path = dir.join(name);
            let header = header_bytes(*dtype, shape);
            let f = File::create(&path).map_err(|e| file_err(&path, e.to_string()))?;
            f.write_all_at(&header, 0).map_err(|e| file_err(&path, e.to_string()))?;
            f.set_len(header.len() as u64 + array_bytes(shape, *dtype).expect("checked above"))
                .map_err(|e| file_err(&path, e.to_string()))?;
            f.sync_all().map_err(|e| file_err(&path, e.to_string()))?;
        }
        // meta.json last: its presence means the arrays exist.
        tensor::write_atomic(&meta_path, serde_json::to_string_pretty(&meta).expect("serializes").as_bytes())?;
        Store::open(dir)
    }

    /// The dtype and shape of each array file, in `FILES` order.
    fn array_specs(meta: &StoreMeta) -> [(Dtype, Vec<usize>); 3] {
        [
            (Dtype::Bool, vec![meta.models, meta.pool]),
            (Dtype::F32, vec![meta.models, meta.outputs]),
            (Dtype::Bool, vec![meta.models]),
        ]
    }

    /// Opens an existing store, checking the arrays against its metadata.
    pub fn open(dir: &Path) -> Result<Store> {
        let meta_path = dir.join("meta.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| file_err(&meta_path, e.to_string()))?;
        let meta: StoreMeta = serde_json::from_str(&text).map_err(|e| file_err(&meta_path, e.to_string()))?;
        let expected = [vec![meta.models, meta.pool], vec![meta.models, meta.outputs], vec![meta.models]];
        let mut offsets = [0u64; 3];
        for (k, name) in FILES.iter().enumerate() {
            let h = read_header(&dir.join(name))?;
            if h.shape != expected[k] {
                return Err(file_err(
                    &dir.join(name),
                    format!("shape {:?}, meta.json says {:?}", h.shape, expected[k]),
                ));
            }
            offsets[k] = h.data_offset;
        }
        let open = |name: &str| -> Result<File> {
            let p = dir.join(name);
            OpenOptions::new().read(true).write(true).open(&p).map_err(|e| file_err(&p, e.to_string()))
        };
        Ok(Store {
            dir: dir.to_path_buf(),
            masks: open(FILES[0])?,
            margins: open(FILES[1])?,
            done: open(FILES[2])?,
            meta,
            offsets,
        })
    }

    fn io(&self, name: &str, e: std::io::Error) -> Error {
        file_err(&self.dir.join(name), e.to_string())
    }

    /// The completion bitmap.
    pub fn done(&self) -> Result<Vec<bool>> {
        let mut buf = vec![0u8; self.meta.models];
        self.done.read_exact_at(&mut buf, self.offsets[2]).map_err(|e| self.io(FILES[2], e))?;
        Ok(buf.iter().map(|&b| b != 0).collect())
    }

    /// Writes the rows of a block: every row's data, one flush of the data files, then every row's done flag and
    /// one flush of the done file (a flag is never durable before its row; three syncs per block, not per row).
    pub fn write_rows(&self, rows: &[usize], masks: &[Vec<bool>], outputs: &[Vec<f32>]) -> Result<()> {
        if rows.len() != masks.len() || rows.len() != outputs.len() {
            return Err(Error::Shape(format!(
                "{} rows with {} masks and {} outputs",
                rows.len(),
                masks.len(),
                outputs.len()
            )));
        }
        for ((&row, mask), margins) in rows.iter().zip(masks).zip(outputs) {
            self.write_data(row, mask, margins)?;
        }
        self.masks.sync_data().map_err(|e| self.io(FILES[0], e))?;
        self.margins.sync_data().map_err(|e| self.io(FILES[1], e))?;
        for &row in rows {
            self.done.write_all_at(&[1], self.offsets[2] + row as u64).map_err(|e| self.io(FILES[2], e))?;
        }
        self.done.sync_data().map_err(|e| self.io(FILES[2], e))?;
        Ok(())
    }

    /// A row's mask and outputs, unflushed and not yet marked done.
    fn write_data(&self, row: usize, mask: &[bool], margins: &[f32]) -> Result<()> {
        if row >= self.meta.models || mask.len() != self.meta.pool || margins.len() != self.meta.outputs {
            return Err(Error::Shape(format!(
                "row {row}: mask {} / outputs {} for a store of {} models x {} points x {} outputs",
                mask.len(),
                margins.len(),
                self.meta.models,
                self.meta.pool,
                self.meta.outputs
            )));
        }
        let mbytes: Vec<u8> = mask.iter().map(|&b| b as u8).collect();
        self.masks
            .write_all_at(&mbytes, self.offsets[0] + (row * self.meta.pool) as u64)
            .map_err(|e| self.io(FILES[0], e))?;
        let obytes: Vec<u8> = margins.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.margins
            .write_all_at(&obytes, self.offsets[1] + (row * self.meta.outputs * 4) as u64)
            .map_err(|e| self.io(FILES[1], e))?;
        Ok(())
    }

    /// Writes one row, syncs it, then marks it done (in that order, so a kill never leaves a row marked done
    /// without its data).
    pub fn write_row(&self, row: usize, mask: &[bool], margins: &[f32]) -> Result<()> {
        self.write_rows(&[row], &[mask.to_vec()], &[margins.to_vec()])
    }

    /// Reads one row (mask, outputs).
    pub fn read_row(&self, row: usize) -> Result<(Vec<bool>, Vec<f32>)> {
        let mut m = vec![0u8; self.meta.pool];
        self.masks
            .read_exact_at(&mut m, self.offsets[0] + (row * self.meta.pool) as u64)
            .map_err(|e| self.io(FILES[0], e))?;
        let mut o = vec![0u8; self.meta.outputs * 4];
        self.margins
            .read_exact_at(&mut o, self.offsets[1] + (row * self.meta.outputs * 4) as u64)
            .map_err(|e| self.io(FILES[1], e))?;
        Ok((
            m.iter().map(|&b| b != 0).collect(),
            o.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect(),
        ))
    }

    /// Runs rows `range` that are not done yet with `compute(row, mask) -> outputs`, in parallel; returns how many
    /// rows it computed. Rows already done (by this or an earlier, killed worker) are skipped.
    pub fn run<F>(&self, range: std::ops::Range<usize>, compute: F) -> Result<usize>
    where
        F: Fn(usize, &[bool]) -> Result<Vec<f32>> + Sync,
    {
        use rayon::prelude::*;
        if range.end > self.meta.models || range.start > range.end {
            return Err(Error::InvalidArgument(format!("rows {range:?} of a store of {}", self.meta.models)));
        }
        let done = self.done()?;
        let todo: Vec<usize> = range.filter(|&r| !done[r]).collect();
        todo.par_iter().try_for_each(|&row| {
            let mask = self.meta.sampling.mask(self.meta.pool, self.meta.seed, row);
            let out = compute(row, &mask)?;
            self.write_row(row, &mask, &out)
        })?;
        Ok(todo.len())
    }

    /// As [`Store::run`], but hands the pending rows of `range` to `compute` in blocks of up to `block` rows
    /// (blocks in parallel), for models trained many at a time ([`crate::runs::train_logistic_many`]). A block's
    /// rows are written and flushed, then marked done, after the whole block is computed; a killed worker redoes
    /// at most its blocks in flight.
    pub fn run_blocks<F>(&self, range: std::ops::Range<usize>, block: usize, compute: F) -> Result<usize>
    where
        F: Fn(&[usize], &[Vec<bool>]) -> Result<Vec<Vec<f32>>> + Sync,
    {
        use rayon::prelude::*;
        if range.end > self.meta.models || range.start > range.end || block == 0 {
            return Err(Error::InvalidArgument(format!(
                "rows {range:?} in blocks of {block} of a store of {}",
                self.meta.models
            )));
        }
        let done = self.done()?;
        let todo: Vec<usize> = range.filter(|&r| !done[r]).collect();
        todo.par_chunks(block).try_for_each(|rows| {
            let masks: Vec<Vec<bool>> =
                rows.iter().map(|&r| self.meta.sampling.mask(self.meta.pool, self.meta.seed, r)).collect();
            let outs = compute(rows, &masks)?;
            if outs.len() != rows.len() {
                return Err(Error::Shape(format!("{} outputs for a block of {} rows", outs.len(), rows.len())));
            }
            self.write_rows(rows, &masks, &outs)
        })?;
        Ok(todo.len())
    }

    /// Copies every done row of `shards` (stores with the same metadata) into this store.
    pub fn merge_from(&self, shards: &[Store]) -> Result<usize> {
        // Every shard is checked (metadata, completion bitmap, every completed row readable) before anything is
        // written, so a bad shard leaves the target untouched. A write that fails later (a full disk) leaves only
        // complete rows behind (a row's done flag is written after its data): rerunning the merge finishes it.
        let mut plan = Vec::with_capacity(shards.len());
        for shard in shards {
            if shard.meta != self.meta {
                return Err(file_err(&shard.dir, "metadata differs from the merge target"));
            }
            let rows: Vec<usize> = shard.done()?.into_iter().enumerate().filter(|(_, d)| *d).map(|(r, _)| r).collect();
            for &row in &rows {
                shard.read_row(row)?;
            }
            plan.push((shard, rows));
        }
        let mut copied = 0;
        for (shard, rows) in plan {
            for row in rows {
                let (m, o) = shard.read_row(row)?;
                self.write_row(row, &m, &o)?;
                copied += 1;
            }
        }
        Ok(copied)
    }
}

/// One task of a job array: its index and the number of tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `"K/N"` (task K of N, 0-based), or `"auto"`: the scheduler's variables, read through `env` (so tests
    /// can pass their own): Slurm's `SLURM_ARRAY_TASK_ID` (minus `SLURM_ARRAY_TASK_MIN`, default 0) of
    /// `SLURM_ARRAY_TASK_COUNT`, or Kubernetes' `JOB_COMPLETION_INDEX` of `count` (`--shards`, else
    /// `STRATA_SHARDS`; an Indexed Job does not export its completion count).
    pub fn parse(spec: &str, count: Option<usize>, env: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
        let num = |name: &str, v: String| {
            v.trim().parse::<usize>().map_err(|_| Error::InvalidArgument(format!("{name}={v} is not a number")))
        };
        let shard = if spec == "auto" {
            if let Some(id) = env("SLURM_ARRAY_TASK_ID") {
                let id = num("SLURM_ARRAY_TASK_ID", id)?;
                let min = env("SLURM_ARRAY_TASK_MIN").map(|v| num("SLURM_ARRAY_TASK_MIN", v)).transpose()?.unwrap_or(0);
                let n = env("SLURM_ARRAY_TASK_COUNT")
                    .map(|v| num("SLURM_ARRAY_TASK_COUNT", v))
                    .transpose()?
                    .or(count)
                    .ok_or_else(|| {
                        Error::InvalidArgument("SLURM_ARRAY_TASK_COUNT is not set; pass --shards N".into())
                    })?;
                Shard {
                    index: id.checked_sub(min).ok_or_else(|| {
                        Error::InvalidArgument(format!("task id {id} is below SLURM_ARRAY_TASK_MIN {min}"))
                    })?,
                    count: n,
                }
            } else if let Some(id) = env("JOB_COMPLETION_INDEX") {
                let n =
                    count.or(env("STRATA_SHARDS").map(|v| num("STRATA_SHARDS", v)).transpose()?).ok_or_else(|| {
                        Error::InvalidArgument(
                            "JOB_COMPLETION_INDEX is set but not the count: pass --shards N or set STRATA_SHARDS"
                                .into(),
                        )
                    })?;
                Shard { index: num("JOB_COMPLETION_INDEX", id)?, count: n }
            } else {
                return Err(Error::InvalidArgument(
                    "--shard auto needs SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX (not in a job array?)".into(),
                ));
            }
        } else {
            let (k, n) = spec
                .split_once('/')
                .ok_or_else(|| Error::InvalidArgument(format!("--shard {spec}: expected K/N or auto")))?;
            Shard { index: num("K", k.to_string())?, count: num("N", n.to_string())? }
        };
        if shard.count == 0 || shard.index >= shard.count {
            return Err(Error::InvalidArgument(format!("shard {} of {} does not exist", shard.index, shard.count)));
        }
        Ok(shard)
    }

    /// This task's contiguous rows of `models`: the ranges of all tasks partition `0..models`.
    pub fn rows(&self, models: usize) -> std::ops::Range<usize> {
        let at = |k: usize| (k as u128 * models as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// The store folder of this task under `root`: `shard-K-of-N`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(format!("shard-{}-of-{}", self.index, self.count))
    }
}

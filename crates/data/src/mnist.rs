//! MNIST from its four IDX files (gzipped, as distributed, or already decompressed).

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use crate::{Error, Result, format_err};

/// Grey-scale images with integer labels, stored as bytes (`images[i]` is `rows * cols` pixels).
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`, row-major.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// A batch `[len, 1, rows, cols]` scaled to [0, 1], and its labels. Panics on an index out of range (a caller
    /// bug, like slice indexing).
    pub fn batch(&self, indices: &[usize]) -> (ArrayD<f32>, Vec<usize>) {
        let n = self.rows * self.cols;
        let mut data = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            data.extend(self.image(i).iter().map(|&p| p as f32 / 255.0));
        }
        let images = ArrayD::from_shape_vec(IxDyn(&[indices.len(), 1, self.rows, self.cols]), data)
            .expect("length matches shape");
        (images, indices.iter().map(|&i| self.labels[i] as usize).collect())
    }

    /// The first `n` examples (all of them if `n` is larger).
    pub fn truncated(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            rows: self.rows,
            cols: self.cols,
            pixels: self.pixels[..n * self.rows * self.cols].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Mean pixel value in [0, 1] (the "dataset mean" replacement value of saliency metrics).
    pub fn mean_pixel(&self) -> f32 {
        let sum: u64 = self.pixels.iter().map(|&p| p as u64).sum();
        (sum as f64 / self.pixels.len().max(1) as f64 / 255.0) as f32
    }
}

/// The MNIST training (60,000) and test (10,000) sets.
#[derive(Debug, Clone)]
pub struct Mnist {
    pub train: ImageSet,
    pub test: ImageSet,
}

impl Mnist {
    /// Loads the four files from `dir` (`*-ubyte.gz`, or the decompressed `*-ubyte`).
    pub fn load(dir: &Path) -> Result<Mnist> {
        let train = load_set(dir, "train")?;
        let test = load_set(dir, "t10k")?;
        Ok(Mnist { train, test })
    }
}

fn load_set(dir: &Path, prefix: &str) -> Result<ImageSet> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    if images.dims.len() != 3 {
        return Err(format_err(&images_path, format!("expected 3 dimensions, found {:?}", images.dims)));
    }
    if labels.dims.len() != 1 {
        return Err(format_err(&labels_path, format!("expected 1 dimension, found {:?}", labels.dims)));
    }
    if images.dims[0] != labels.dims[0] {
        return Err(format_err(
            &labels_path,
            format!("{} labels for {} images in {}", labels.dims[0], images.dims[0], images_path.display()),
        ));
    }
    if let Some(pos) = labels.data.iter().position(|&l| l > 9) {
        return Err(format_err(&labels_path, format!("label {} at index {pos} is not a digit", labels.data[pos])));
    }
    Ok(ImageSet { rows: images.dims[1], cols: images.dims[2], pixels: images.data, labels: labels.data })
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for candidate in [dir.join(format!("{stem}.gz")), dir.join(stem)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Io {
        path: dir.join(format!("{stem}.gz")),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "missing MNIST file (also tried without .gz)"),
    })
}

/// An unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (type 0x08), gzipped when the name ends in `.gz`. Truncated files, bad
/// magic numbers, other element types and trailing bytes are errors naming the file and the byte offset.
pub fn read_idx(path: &Path) -> Result<Idx> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| format_err(path, format!("not a valid gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|m| format_err(path, m))
}

/// Parses IDX bytes (see [`read_idx`]).
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<Idx, String> {
    if bytes.len() < 4 {
        return Err(format!("file of {} bytes is too short for an IDX header", bytes.len()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!("bad magic number {:02x}{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2], bytes[3]));
    }
    if bytes[2] != 0x08 {
        return Err(format!("element type 0x{:02x} is not unsigned byte (0x08)", bytes[2]));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err("IDX header declares 0 dimensions".into());
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format!("truncated header: {} bytes, need {header}", bytes.len()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or("dimensions overflow")?;
    let have = bytes.len() - header;
    if have < count {
        return Err(format!("truncated: dims {dims:?} need {count} data bytes after offset {header}, found {have}"));
    }
    if have > count {
        return Err(format!("{} trailing bytes after the {count} data bytes", have - count));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

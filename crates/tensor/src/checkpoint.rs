//! safetensors files: read any file HuggingFace writes (f32, f64, f16, bf16, i64 ...), write atomically.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, TensorView};

use crate::{Error, Float, Result};

/// A tensor as stored in a file, in its own dtype.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StoredTensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I64(ArrayD<i64>),
    /// f16 or bf16, widened to f32 on read.
    Half(ArrayD<f32>),
}

impl StoredTensor {
    /// Stores a float array in its own precision.
    pub fn from_float<F: Float>(a: &ArrayD<F>) -> Self {
        if F::DTYPE_NAME == "F32" {
            StoredTensor::F32(a.mapv(|x| x.to_f64_lossy() as f32))
        } else {
            StoredTensor::F64(a.mapv(|x| x.to_f64_lossy()))
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            StoredTensor::F32(a) | StoredTensor::Half(a) => a.shape(),
            StoredTensor::F64(a) => a.shape(),
            StoredTensor::I64(a) => a.shape(),
        }
    }

    /// As a float array of element type `F` (integers are refused: they are indices, not weights).
    pub fn to_float<F: Float>(&self) -> std::result::Result<ArrayD<F>, String> {
        match self {
            StoredTensor::F32(a) | StoredTensor::Half(a) => Ok(a.mapv(|x| F::of(x as f64))),
            StoredTensor::F64(a) => Ok(a.mapv(F::of)),
            StoredTensor::I64(_) => Err("stored as i64, expected floats".into()),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            StoredTensor::F32(_) | StoredTensor::Half(_) => Dtype::F32,
            StoredTensor::F64(_) => Dtype::F64,
            StoredTensor::I64(_) => Dtype::I64,
        }
    }

    fn le_bytes(&self) -> Vec<u8> {
        match self {
            StoredTensor::F32(a) | StoredTensor::Half(a) => a.iter().flat_map(|x| x.to_le_bytes()).collect(),
            StoredTensor::F64(a) => a.iter().flat_map(|x| x.to_le_bytes()).collect(),
            StoredTensor::I64(a) => a.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// The contents of a safetensors file.
#[derive(Debug, Clone)]
pub struct StoredTensors {
    /// In file order.
    pub tensors: Vec<(String, StoredTensor)>,
    pub metadata: HashMap<String, String>,
}

impl StoredTensors {
    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let frac = (bits & 0x3ff) as u32;
    let out = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(out)
}

/// Reads a safetensors file. A truncated or corrupt file, or an unsupported dtype, is an error naming the
/// file and the problem.
pub fn read_safetensors(path: &Path) -> Result<StoredTensors> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_safetensors(&bytes, path)
}

/// Parses safetensors bytes (`path` is only used in error messages).
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<StoredTensors> {
    let bad = |reason: String| Error::BadCheckpoint { path: path.to_path_buf(), reason };
    if bytes.len() < 8 {
        return Err(bad(format!("{} bytes is too short for a header", bytes.len())));
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<(usize, String)> =
        st.names().into_iter().map(|n| (meta.info(n).map(|i| i.data_offsets.0).unwrap_or(0), n.to_string())).collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for (_, name) in names {
        let view = st.tensor(&name).map_err(|e| bad(e.to_string()))?;
        let shape = IxDyn(view.shape());
        let data = view.data();
        let t = match view.dtype() {
            Dtype::F32 => StoredTensor::F32(
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
                )
                .map_err(|e| bad(e.to_string()))?,
            ),
            Dtype::F64 => StoredTensor::F64(
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
                )
                .map_err(|e| bad(e.to_string()))?,
            ),
            Dtype::I64 => StoredTensor::I64(
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
                )
                .map_err(|e| bad(e.to_string()))?,
            ),
            Dtype::F16 => StoredTensor::Half(
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
                )
                .map_err(|e| bad(e.to_string()))?,
            ),
            Dtype::BF16 => StoredTensor::Half(
                ArrayD::from_shape_vec(
                    shape,
                    data.chunks_exact(2)
                        .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                        .collect(),
                )
                .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(Error::UnsupportedDtype { path: path.to_path_buf(), name, dtype: format!("{other:?}") });
            }
        };
        tensors.push((name, t));
    }
    Ok(StoredTensors { tensors, metadata: meta.metadata().clone().unwrap_or_default() })
}

/// Writes tensors to a safetensors file atomically: a temporary file in the same directory is written,
/// fsynced and renamed over `path`, so a crash leaves either the old file or the new one.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, StoredTensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.dtype(), t.shape().to_vec(), t.le_bytes())).collect();
    let views: Vec<(String, TensorView<'_>)> = bufs
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(*d, s.clone(), b)
                    .map_err(|e| Error::BadValue { name: n.clone(), reason: e.to_string() })?,
            ))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| Error::BadCheckpoint { path: path.to_path_buf(), reason: e.to_string() })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    // On any failure (a full disk mid-write, a failed rename) the temporary file is removed, not left behind.
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

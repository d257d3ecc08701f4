//! Every file loader (safetensors models and graft masks, npy, idx, configs) against random byte mutations of a valid file (flipped bytes, truncation, insertion, a
//! rewritten length field): an error or a value, never a panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use proptest::prelude::*;

/// A mutation of `valid`: the kind and its random parameters.
fn mutate(valid: &[u8], kind: u8, at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = valid.to_vec();
    let pos = if v.is_empty() { 0 } else { at % v.len() };
    match kind % 5 {
        0 => {
            for (i, b) in bytes.iter().enumerate() {
                if let Some(x) = v.get_mut((pos + i * 7) % valid.len().max(1)) {
                    *x ^= b | 1;
                }
            }
        }
        1 => v.truncate(pos),
        2 => {
            v.splice(pos..pos, bytes.iter().copied());
        }
        // The length/shape fields at the front: where size arithmetic starts.
        3 => {
            for (i, b) in bytes.iter().take(8).enumerate() {
                if let Some(x) = v.get_mut(i + (at % 16)) {
                    *x = *b;
                }
            }
        }
        _ => {
            v.extend_from_slice(bytes);
        }
    }
    v
}

fn no_panic(what: &str, f: impl FnOnce()) {
    assert!(catch_unwind(AssertUnwindSafe(f)).is_ok(), "{what} panicked");
}

fn valid_safetensors() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = transformer::DecoderConfig {
        vocab_size: 8,
        context: 4,
        d_model: 4,
        n_layers: 1,
        n_heads: 1,
        ..transformer::DecoderConfig::default()
    };
    let path = dir.path().join("m.safetensors");
    transformer::Decoder::<f32>::new(&cfg, 0).unwrap().save(&path).unwrap();
    std::fs::read(path).unwrap()
}

fn valid_mask() -> Vec<u8> {
    use grafting::tensor::ndarray::{ArrayD, IxDyn};
    let dir = tempfile::tempdir().unwrap();
    let w = |v: f32| ArrayD::from_elem(IxDyn(&[3, 4]), v);
    let pre = std::collections::BTreeMap::from([("encoder.layer.0.w".to_string(), w(0.0))]);
    let mut ft = pre.clone();
    ft.get_mut("encoder.layer.0.w").unwrap()[[1, 2]] = 1.0;
    let path = dir.path().join("mask.safetensors");
    grafting::Mask::top_delta(&pre, &ft, 3).unwrap().save(&path).unwrap();
    std::fs::read(path).unwrap()
}

fn valid_npy() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.npy");
    datamodels::store::write_npy(&path, datamodels::store::Dtype::F32, &[3, 4], &[0.5; 12]).unwrap();
    std::fs::read(path).unwrap()
}

fn valid_idx() -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    v.extend(0..18u8);
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn safetensors_loaders_never_panic(kind in 0u8..5, at in 0usize..4096, bytes in prop::collection::vec(any::<u8>(), 1..24)) {
        let m = mutate(&valid_safetensors(), kind, at, &bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "m.safetensors", &m);
        no_panic("parse_safetensors", || { let _ = tensor::parse_safetensors(&m, &path); });
        no_panic("Decoder::load", || { let _ = transformer::Decoder::<f32>::load(&path); });
    }

    #[test]
    fn graft_mask_loader_never_panics(kind in 0u8..5, at in 0usize..1024, bytes in prop::collection::vec(any::<u8>(), 1..24)) {
        let m = mutate(&valid_mask(), kind, at, &bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "mask.safetensors", &m);
        no_panic("Mask::load", || { let _ = grafting::Mask::load(&path); });
    }

    #[test]
    fn npy_loaders_never_panic(kind in 0u8..5, at in 0usize..512, bytes in prop::collection::vec(any::<u8>(), 1..24)) {
        let m = mutate(&valid_npy(), kind, at, &bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a.npy", &m);
        no_panic("read_header", || { let _ = datamodels::store::read_header(&path); });
        no_panic("read_matrix", || { let _ = datamodels::store::read_matrix(&path); });
    }

    #[test]
    fn idx_parser_never_panics(kind in 0u8..5, at in 0usize..64, bytes in prop::collection::vec(any::<u8>(), 1..24)) {
        let m = mutate(&valid_idx(), kind, at, &bytes);
        no_panic("parse_idx", || { let _ = data::mnist::parse_idx(&m); });
    }

    /// Every experiment's config parser, and the LM run config, on mutated JSON.
    #[test]
    fn config_parsers_never_panic(kind in 0u8..5, at in 0usize..4096, bytes in prop::collection::vec(any::<u8>(), 1..12), which in 0usize..64) {
        let all = strata_runner::experiments();
        let e = &all[which % all.len()];
        let valid = e.config_json(report::Scale::Smoke).to_string().into_bytes();
        let m = mutate(&valid, kind, at, &bytes);
        let text = String::from_utf8_lossy(&m);
        no_panic(e.id(), || { let _ = e.parse_config(&text); });
        no_panic("LmConfig", || { let _ = serde_json::from_str::<train::lm::LmConfig>(&text); });
    }
}

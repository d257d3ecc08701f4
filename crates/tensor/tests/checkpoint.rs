//! safetensors: exact round trips, HuggingFace files, and corrupt files as errors.

use std::path::PathBuf;

use strata_tensor::ndarray::{ArrayD, IxDyn};
use strata_tensor::{Error, Params, StoredTensor, read_safetensors, write_safetensors};

#[test]
fn params_round_trip_exactly() {
    let params = Params::<f32>::new();
    let mut rng = strata_tensor::seeded(9);
    params.insert("a.weight", strata_tensor::normal(&[3, 4], 0.0, 1.0, &mut rng)).unwrap();
    params.insert("a.bias", strata_tensor::normal(&[4], 0.0, 1.0, &mut rng)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    params.save(&path, None).unwrap();
    let other = Params::<f32>::new();
    other.insert("a.weight", ArrayD::zeros(IxDyn(&[3, 4]))).unwrap();
    other.insert("a.bias", ArrayD::zeros(IxDyn(&[4]))).unwrap();
    other.load(&path).unwrap();
    assert_eq!(other.snapshot(), params.snapshot());
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn f64_and_i64_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    let f = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0f64 / 3.0, -1e300]).unwrap();
    let i = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1i64, -7, i64::MAX]).unwrap();
    write_safetensors(
        &path,
        &[("f".into(), StoredTensor::F64(f.clone())), ("i".into(), StoredTensor::I64(i.clone()))],
        None,
    )
    .unwrap();
    let back = read_safetensors(&path).unwrap();
    assert_eq!(back.get("f"), Some(&StoredTensor::F64(f)));
    assert_eq!(back.get("i"), Some(&StoredTensor::I64(i)));
}

#[test]
fn shape_mismatch_and_missing_names_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let p = Params::<f32>::new();
    p.insert("w", ArrayD::zeros(IxDyn(&[2, 2]))).unwrap();
    p.save(&path, None).unwrap();
    let q = Params::<f32>::new();
    q.insert("w", ArrayD::zeros(IxDyn(&[3]))).unwrap();
    assert!(matches!(q.load(&path), Err(Error::ShapeMismatch { .. })));
    let r = Params::<f32>::new();
    r.insert("w", ArrayD::zeros(IxDyn(&[2, 2]))).unwrap();
    r.insert("extra", ArrayD::zeros(IxDyn(&[1]))).unwrap();
    assert!(matches!(r.load(&path), Err(Error::MissingParams(m)) if m == ["extra"]));
}

#[test]
fn corrupt_and_truncated_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let p = Params::<f32>::new();
    p.insert("w", ArrayD::ones(IxDyn(&[16, 16]))).unwrap();
    p.save(&good, None).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("short", bytes[..5].to_vec()),
        ("truncated", bytes[..bytes.len() - 10].to_vec()),
        ("huge-header", {
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("garbage-header", {
            let mut b = bytes.clone();
            b[8..20].fill(b'#');
            b
        }),
    ];
    for (name, data) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        std::fs::write(&path, data).unwrap();
        let err = read_safetensors(&path).expect_err(name);
        assert!(err.to_string().contains(&format!("{name}.safetensors")), "{name}: {err}");
    }
    let missing = read_safetensors(&dir.path().join("nope.safetensors")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }));
}

/// `STRATA_DATA` points at the shared data folder (CI sets it): a missing model fails the test; without the
/// variable the test is skipped loudly. (strata-data's `testing::shared_data` does the same; the tensor crate
/// sits below it.)
fn data_dir(test: &str, dataset: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("STRATA_DATA").map(PathBuf::from) else {
        let line = format!("SKIPPED {test}: STRATA_DATA is not set (needs {dataset})");
        eprintln!("{line}");
        if let Some(log) = std::env::var_os("STRATA_SKIP_LOG") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("skip log");
            writeln!(f, "{line}").expect("skip log");
        }
        return None;
    };
    assert!(dir.join(dataset).is_dir(), "{test}: STRATA_DATA={} has no {dataset}/ folder", dir.display());
    Some(dir)
}

#[test]
fn loads_huggingface_minilm() {
    let Some(dir) = data_dir("loads_huggingface_minilm", "all-MiniLM-L6-v2") else { return };
    let path = dir.join("all-MiniLM-L6-v2").join("model.safetensors");
    let st = read_safetensors(&path).unwrap_or_else(|e| panic!("{e}"));
    let emb =
        st.tensors.iter().find(|(n, _)| n.ends_with("embeddings.word_embeddings.weight")).expect("word embeddings");
    assert_eq!(emb.1.shape(), [30522, 384]);
    let q = st
        .tensors
        .iter()
        .find(|(n, _)| n.ends_with("encoder.layer.0.attention.self.query.weight"))
        .expect("layer 0 query");
    assert_eq!(q.1.shape(), [384, 384]);
    let w = q.1.to_float::<f32>().unwrap();
    assert!(w.iter().all(|x| x.is_finite()) && w.iter().any(|&x| x != 0.0));
}

/// A safetensors file holding one f16 tensor `w` of two values (1.0 and 0.333 rounded to f16), written by hand.
fn f16_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut header = r#"{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#.to_string();
    while (header.len() + 8) % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(0x3c00u16.to_le_bytes()); // 1.0
    bytes.extend(0x3555u16.to_le_bytes()); // 0.33325
    let path = dir.join("half.safetensors");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn half_precision_weights_are_refused_by_load_and_listed_by_load_partial() {
    let dir = tempfile::tempdir().unwrap();
    let path = f16_file(dir.path());
    let params = Params::<f32>::new();
    params.insert("w", ArrayD::from_elem(IxDyn(&[2]), 7.0f32)).unwrap();
    let err = params.load(&path).unwrap_err().to_string();
    assert!(err.contains("half precision") && err.contains("half.safetensors"), "{err}");
    assert_eq!(params.get("w").unwrap().value().iter().copied().collect::<Vec<_>>(), [7.0, 7.0], "unchanged");
    let report = params.load_partial(&path).unwrap();
    assert_eq!(report.half_precision, ["w"]);
    let w: Vec<f32> = params.get("w").unwrap().value().iter().copied().collect();
    assert_eq!(w[0], 1.0);
    assert!((w[1] - 0.33325).abs() < 1e-4);
}

/// A failed atomic write (here the rename fails: the target is a non-empty folder) leaves no temporary file.
#[test]
fn a_failed_atomic_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"x").unwrap();
    assert!(strata_tensor::write_atomic(&target, b"data").is_err());
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["out"], "a temporary file was left behind");
}

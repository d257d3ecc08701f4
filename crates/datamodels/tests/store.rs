//! Store round trips, interrupted and killed workers, shard merges, `.npy` validation, the analyzer.

use std::path::Path;

use strata_datamodels::Error;
use strata_datamodels::analyze::{AnalyzeOptions, analyze};
use strata_datamodels::store::{Dtype, Sampling, Store, StoreMeta, read_header, read_matrix, write_npy};

fn meta(models: usize, sampling: Sampling) -> StoreMeta {
    StoreMeta { models, pool: 12, outputs: 3, sampling, seed: 9, task: "synthetic".into() }
}

/// A deterministic "model": outputs depend on the mask only.
fn compute(_row: usize, mask: &[bool]) -> strata_datamodels::Result<Vec<f32>> {
    let k = mask.iter().filter(|b| **b).count() as f32;
    Ok(vec![k, mask[0] as u8 as f32 * 2.0 - k / 3.0, (k * k).sqrt()])
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    ["masks.npy", "margins.npy", "done.npy"].iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect()
}

#[test]
fn interrupted_worker_resumes_without_losing_or_duplicating_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = Store::create_or_open(&tmp.path().join("clean"), meta(50, Sampling::Iid { p: 0.4 })).unwrap();
    assert_eq!(clean.run(0..50, compute).unwrap(), 50);
    let dir = tmp.path().join("resumed");
    let st = Store::create_or_open(&dir, meta(50, Sampling::Iid { p: 0.4 })).unwrap();
    // The worker dies at row 30 (rows before it in the parallel order may or may not be done).
    let failing = |row: usize, mask: &[bool]| {
        if row == 30 { Err(Error::InvalidArgument("killed".into())) } else { compute(row, mask) }
    };
    assert!(st.run(0..50, failing).is_err());
    let done_before = st.done().unwrap().iter().filter(|d| **d).count();
    assert!(done_before < 50);
    // A row written but not marked done (a kill between data and bitmap) is simply redone.
    drop(st);
    let st = Store::create_or_open(&dir, meta(50, Sampling::Iid { p: 0.4 })).unwrap();
    let redone = st.run(0..50, compute).unwrap();
    assert_eq!(redone, 50 - done_before);
    assert_eq!(st.run(0..50, compute).unwrap(), 0, "nothing left to do");
    assert_eq!(files(&dir), files(&tmp.path().join("clean")));
    // Opening with different metadata is an error.
    assert!(Store::create_or_open(&dir, meta(51, Sampling::Iid { p: 0.4 })).is_err());
}

#[test]
fn shards_merge_into_the_same_store_as_one_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let m = meta(40, Sampling::Alpha { alpha: 0.5 });
    let whole = Store::create_or_open(&tmp.path().join("whole"), m.clone()).unwrap();
    whole.run(0..40, compute).unwrap();
    let a = Store::create_or_open(&tmp.path().join("a"), m.clone()).unwrap();
    let b = Store::create_or_open(&tmp.path().join("b"), m.clone()).unwrap();
    a.run(0..15, compute).unwrap();
    b.run(15..40, compute).unwrap();
    let merged = Store::create_or_open(&tmp.path().join("merged"), m.clone()).unwrap();
    assert_eq!(merged.merge_from(&[a, b]).unwrap(), 40);
    assert_eq!(files(&tmp.path().join("merged")), files(&tmp.path().join("whole")));
    // Alpha subsets have exactly alpha N points.
    let (mask, _) = merged.read_row(7).unwrap();
    assert_eq!(mask.iter().filter(|b| **b).count(), 6);
    let other = Store::create_or_open(&tmp.path().join("other"), meta(40, Sampling::Iid { p: 0.5 })).unwrap();
    assert!(merged.merge_from(&[other]).is_err());
    assert!(merged.run(0..41, compute).is_err());
    // A good shard then a bad one: the bad one is found before anything is written.
    let fresh = Store::create_or_open(&tmp.path().join("fresh"), m.clone()).unwrap();
    let good = Store::open(&tmp.path().join("a")).unwrap();
    let bad = Store::create_or_open(&tmp.path().join("bad"), meta(40, Sampling::Iid { p: 0.5 })).unwrap();
    assert!(fresh.merge_from(&[good, bad]).is_err());
    assert_eq!(fresh.done().unwrap().iter().filter(|d| **d).count(), 0, "the target is untouched");
}

#[test]
fn npy_files_round_trip_and_bad_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.npy");
    write_npy(&p, Dtype::F64, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
    let m = read_matrix(&p).unwrap();
    assert_eq!((m.rows, m.cols), (2, 3));
    assert_eq!(m.row(1), &[4.0, 5.0, 6.5]);
    write_npy(&p, Dtype::Bool, &[4], &[1.0, 0.0, 1.0, 1.0]).unwrap();
    assert_eq!(read_header(&p).unwrap().shape, vec![4]);
    // Truncated data.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    assert!(read_matrix(&p).unwrap_err().to_string().contains("data bytes"));
    // Bad magic, unsupported dtype, Fortran order.
    std::fs::write(&p, b"not numpy at all").unwrap();
    assert!(read_matrix(&p).unwrap_err().to_string().contains("magic"));
    let fake = |descr: &str, fortran: &str| {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': (1, 1), }}");
        let mut h = b"\x93NUMPY\x01\x00".to_vec();
        h.extend((dict.len() as u16 + 1).to_le_bytes());
        h.extend(dict.as_bytes());
        h.push(b'\n');
        h.extend([0u8; 8]);
        h
    };
    std::fs::write(&p, fake("<i8", "False")).unwrap();
    assert!(read_matrix(&p).unwrap_err().to_string().contains("dtype"));
    std::fs::write(&p, fake("<f8", "True")).unwrap();
    assert!(read_matrix(&p).unwrap_err().to_string().contains("Fortran"));
    // A shape whose element count times the item size overflows: an error, not a wrapped size check.
    let huge = |shape: &str| {
        let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
        let mut h = b"\x93NUMPY\x01\x00".to_vec();
        h.extend((dict.len() as u16 + 1).to_le_bytes());
        h.extend(dict.as_bytes());
        h.push(b'\n');
        h.extend([0u8; 8]);
        h
    };
    std::fs::write(&p, huge("(4294967296, 4294967296)")).unwrap();
    assert!(read_matrix(&p).unwrap_err().to_string().contains("overflows"));
    std::fs::write(&p, huge("(2305843009213693952,)")).unwrap();
    assert!(read_matrix(&p).unwrap_err().to_string().contains("overflows"));
}

/// `--models` or `--pool` far too large: refused before any file or folder is created, saying the limit.
#[test]
fn a_store_too_large_to_write_is_refused_before_anything_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut m = meta(8, Sampling::Iid { p: 0.5 });
    m.models = 1 << 40;
    m.pool = 1 << 20;
    let err = Store::create_or_open(&dir, m.clone()).unwrap_err().to_string();
    assert!(err.contains("1 TiB") && err.contains("--models"), "{err}");
    assert!(!dir.exists(), "nothing is created");
    m.models = usize::MAX;
    assert!(Store::create_or_open(&dir, m).is_err());
    assert!(!dir.exists());
    // Out-of-range sampling parameters and empty sizes: refused, naming the value, nothing created.
    for (sampling, named) in [
        (Sampling::Iid { p: 2.0 }, "p = 2"),
        (Sampling::Iid { p: f64::NAN }, "p = NaN"),
        (Sampling::Alpha { alpha: 5.0 }, "alpha = 5"),
        (Sampling::Pairs { p: 0.5, rho: 7.0 }, "rho = 7"),
    ] {
        let err = Store::create_or_open(&dir, meta(8, sampling)).unwrap_err().to_string();
        assert!(err.contains(named), "{err}");
    }
    let mut empty = meta(8, Sampling::Iid { p: 0.5 });
    empty.pool = 0;
    assert!(Store::create_or_open(&dir, empty).unwrap_err().to_string().contains("pool 0"));
    assert!(!dir.exists());
    // The analyzer's options too.
    let masks = strata_datamodels::store::Matrix { rows: 2, cols: 1, data: vec![1.0, 0.0] };
    let outputs = strata_datamodels::store::Matrix { rows: 2, cols: 1, data: vec![0.5, 0.25] };
    for opts in [
        AnalyzeOptions { ridge: -1.0, ..AnalyzeOptions::default() },
        AnalyzeOptions { ridge: f64::NAN, ..AnalyzeOptions::default() },
        AnalyzeOptions { pairs_rho: Some(7.0), ..AnalyzeOptions::default() },
    ] {
        assert!(matches!(analyze(&masks, &outputs, &opts), Err(Error::InvalidArgument(_))), "{opts:?}");
    }
}

#[test]
fn analyzer_recovers_a_linear_datamodel_and_rejects_bad_inputs() {
    let (m, n) = (400, 10);
    let mut rng = tensor::seeded(2);
    let u = tensor::uniform::<f64>(&[m, n], 0.0, 1.0, &mut rng);
    let noise = tensor::normal::<f64>(&[m], 0.0, 0.1, &mut rng);
    let masks: Vec<f64> = u.iter().map(|v| (*v < 0.5) as u8 as f64).collect();
    let w: Vec<f64> = (0..n).map(|i| i as f64 / 5.0).collect();
    let outputs: Vec<f64> =
        (0..m).map(|r| 1.0 + (0..n).map(|i| masks[r * n + i] * w[i]).sum::<f64>() + noise[r]).collect();
    let tmp = tempfile::tempdir().unwrap();
    write_npy(&tmp.path().join("m.npy"), Dtype::Bool, &[m, n], &masks).unwrap();
    write_npy(&tmp.path().join("o.npy"), Dtype::F32, &[m, 1], &outputs).unwrap();
    let mm = read_matrix(&tmp.path().join("m.npy")).unwrap();
    let oo = read_matrix(&tmp.path().join("o.npy")).unwrap();
    let a = analyze(&mm, &oo, &AnalyzeOptions::default()).unwrap();
    let o = &a.outputs[0];
    assert!(o.weights.iter().zip(&w).all(|(a, b)| (a - b).abs() < 0.05), "{:?}", o.weights);
    assert!(o.residual_ci95.0 < 0.01 && 0.01 < o.residual_ci95.1, "noise variance 0.01 in {:?}", o.residual_ci95);
    // Mismatched rows, NaN outputs, masks that are not 0/1, too few models.
    let short = strata_datamodels::store::Matrix { rows: m - 1, cols: 1, data: outputs[..m - 1].to_vec() };
    assert!(matches!(analyze(&mm, &short, &AnalyzeOptions::default()), Err(Error::Shape(_))));
    let mut nan = oo.clone();
    nan.data[17] = f64::NAN;
    assert!(analyze(&mm, &nan, &AnalyzeOptions::default()).unwrap_err().to_string().contains("row 17"));
    let mut bad = mm.clone();
    bad.data[5] = 2.0;
    assert!(matches!(analyze(&bad, &oo, &AnalyzeOptions::default()), Err(Error::InvalidArgument(_))));
    let few = strata_datamodels::store::Matrix { rows: 5, cols: n, data: masks[..5 * n].to_vec() };
    let few_o = strata_datamodels::store::Matrix { rows: 5, cols: 1, data: outputs[..5].to_vec() };
    assert!(analyze(&few, &few_o, &AnalyzeOptions::default()).is_err());
    // Outputs scaled by 1e150: the same fit in other units (r2 unchanged, variance scaled by 1e300), not nulls.
    let big = strata_datamodels::store::Matrix { rows: m, cols: 1, data: oo.data.iter().map(|v| v * 1e150).collect() };
    let b = analyze(&mm, &big, &AnalyzeOptions::default()).unwrap();
    let ob = &b.outputs[0];
    assert!((ob.r2 - o.r2).abs() < 1e-9, "r2 {} vs {}", ob.r2, o.r2);
    assert!((ob.variance / 1e300 / o.variance - 1.0).abs() < 1e-9);
    assert!(ob.residual.is_finite() && ob.w1.is_finite());
    // Beyond f64 (variance ~1e320): an error naming the output, not a null in the JSON.
    let huge = strata_datamodels::store::Matrix { rows: m, cols: 1, data: oo.data.iter().map(|v| v * 1e160).collect() };
    let err = analyze(&mm, &huge, &AnalyzeOptions::default()).unwrap_err().to_string();
    assert!(err.contains("output 0") && err.contains("does not fit"), "{err}");
}

/// An incomplete store: its pending all-zero rows are not data; only completed rows reach the analyzer.
#[test]
fn only_completed_rows_of_a_store_are_analyzed() {
    use strata_datamodels::store::{Matrix, completed_rows};
    let masks = Matrix { rows: 3, cols: 2, data: vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0] };
    let outputs = Matrix { rows: 3, cols: 1, data: vec![0.5, 0.0, 0.25] };
    let done = Matrix { rows: 3, cols: 1, data: vec![1.0, 0.0, 1.0] };
    let (m, o) = completed_rows(&masks, &outputs, &done).unwrap();
    assert_eq!((m.rows, m.data.clone()), (2, vec![1.0, 0.0, 0.0, 1.0]));
    assert_eq!(o.data, [0.5, 0.25]);
    let none = Matrix { rows: 3, cols: 1, data: vec![0.0; 3] };
    assert!(completed_rows(&masks, &outputs, &none).unwrap_err().to_string().contains("no row"));
    let short = Matrix { rows: 2, cols: 1, data: vec![1.0; 2] };
    assert!(completed_rows(&masks, &outputs, &short).is_err());
}

#[test]
fn job_array_shards_come_from_the_scheduler_and_partition_the_rows() {
    use strata_datamodels::store::Shard;
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    };
    let slurm = Shard::parse(
        "auto",
        None,
        &env(&[("SLURM_ARRAY_TASK_ID", "7"), ("SLURM_ARRAY_TASK_MIN", "5"), ("SLURM_ARRAY_TASK_COUNT", "4")]),
    );
    assert_eq!(slurm.unwrap(), Shard { index: 2, count: 4 });
    let k8s = Shard::parse("auto", Some(3), &env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap();
    assert_eq!(k8s, Shard { index: 1, count: 3 });
    let k8s_env = Shard::parse("auto", None, &env(&[("JOB_COMPLETION_INDEX", "0"), ("STRATA_SHARDS", "2")])).unwrap();
    assert_eq!(k8s_env, Shard { index: 0, count: 2 });
    assert!(
        Shard::parse("auto", None, &env(&[("JOB_COMPLETION_INDEX", "1")]))
            .unwrap_err()
            .to_string()
            .contains("--shards")
    );
    assert!(Shard::parse("auto", None, &env(&[])).unwrap_err().to_string().contains("job array"));
    assert!(Shard::parse("4/4", None, &env(&[])).is_err());
    assert!(Shard::parse("x/4", None, &env(&[])).is_err());
    assert_eq!(Shard::parse("1/3", None, &env(&[])).unwrap(), Shard { index: 1, count: 3 });
    // Every row belongs to exactly one shard, whatever the counts.
    for (models, count) in [(10, 3), (7, 7), (1000, 16), (3, 5)] {
        let mut next = 0;
        for index in 0..count {
            let r = Shard { index, count }.rows(models);
            assert_eq!(r.start, next);
            next = r.end;
        }
        assert_eq!(next, models);
    }
}

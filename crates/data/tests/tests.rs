use std::io::Write;
use std::path::{Path, PathBuf};

use strata_data::mnist::{Mnist, parse_idx, read_idx};
use strata_data::{Error, dataset, resolve, resolve_unverified, verify};

fn shared_data(test: &str, datasets: &[&str]) -> Option<PathBuf> {
    strata_data::testing::shared_data(test, datasets)
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

fn write_gz(path: &Path, bytes: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap();
}

#[test]
fn idx_round_trip_and_errors() {
    let ok = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    let idx = parse_idx(&ok).unwrap();
    assert_eq!(idx.dims, vec![2, 3]);
    assert_eq!(idx.data, vec![1, 2, 3, 4, 5, 6]);
    // Truncated data, trailing data, wrong type, bad magic, short header.
    assert!(parse_idx(&ok[..ok.len() - 1]).unwrap_err().contains("truncated"));
    assert!(parse_idx(&[ok.clone(), vec![0]].concat()).unwrap_err().contains("trailing"));
    let mut wrong_type = ok.clone();
    wrong_type[2] = 0x0d;
    assert!(parse_idx(&wrong_type).unwrap_err().contains("element type"));
    let mut bad_magic = ok.clone();
    bad_magic[0] = 1;
    assert!(parse_idx(&bad_magic).unwrap_err().contains("magic"));
    assert!(parse_idx(&ok[..6]).unwrap_err().contains("header"));
}

#[test]
fn malformed_mnist_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_gz(&dir.path().join("train-images-idx3-ubyte.gz"), &idx_bytes(&[2, 2, 2], &[0, 255, 0, 255, 1, 2, 3, 4]));
    write_gz(&dir.path().join("train-labels-idx1-ubyte.gz"), &idx_bytes(&[2], &[3, 7]));
    write_gz(&dir.path().join("t10k-images-idx3-ubyte.gz"), &idx_bytes(&[1, 2, 2], &[9, 9, 9, 9]));
    // Label count mismatch in the test set.
    write_gz(&dir.path().join("t10k-labels-idx1-ubyte.gz"), &idx_bytes(&[2], &[1, 2]));
    let err = Mnist::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("t10k-labels") && err.contains("2 labels for 1 images"), "{err}");
    // A label that is not a digit.
    write_gz(&dir.path().join("t10k-labels-idx1-ubyte.gz"), &idx_bytes(&[1], &[12]));
    let err = Mnist::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a digit"), "{err}");
    // A corrupt gzip stream.
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), b"not gzip at all").unwrap();
    let err = Mnist::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("t10k-labels-idx1-ubyte.gz") && err.contains("gzip"), "{err}");
    // A valid tiny set loads and scales to [0, 1].
    write_gz(&dir.path().join("t10k-labels-idx1-ubyte.gz"), &idx_bytes(&[1], &[5]));
    let m = Mnist::load(dir.path()).unwrap();
    let (x, y) = m.train.batch(&[0, 1]);
    assert_eq!(x.shape(), &[2, 1, 2, 2]);
    assert_eq!(y, vec![3, 7]);
    assert_eq!(x[[0, 0, 0, 1]], 1.0);
    assert_eq!(m.test.labels, vec![5]);
    // Missing file.
    std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert!(matches!(Mnist::load(dir.path()), Err(Error::Io { .. })));
}

#[test]
fn unknown_and_missing_datasets_say_what_to_do() {
    assert!(matches!(dataset("imagenet"), Err(Error::UnknownDataset(..))));
    let empty = tempfile::tempdir().unwrap();
    // An explicit root is the only place looked (even when STRATA_DATA or the cache holds MNIST); the error
    // names it and the files to fetch.
    match resolve_unverified("mnist", Some(empty.path())) {
        Err(Error::NotFound { searched, files, url, .. }) => {
            assert!(searched.contains(&empty.path().join("mnist").display().to_string()));
            assert!(files.contains("train-images-idx3-ubyte.gz") && url.starts_with("http"));
        }
        Ok(dir) => panic!("an empty --data folder fell back to {}", dir.display()),
        Err(e) => panic!("unexpected {e}"),
    }
    // A file of the wrong size in the explicit root is an error naming it, not a fall-back.
    let ds = dataset("tinyshakespeare").unwrap();
    std::fs::create_dir_all(empty.path().join("tinyshakespeare")).unwrap();
    std::fs::write(empty.path().join("tinyshakespeare").join(ds.files[0].path), b"partial").unwrap();
    match resolve_unverified("tinyshakespeare", Some(empty.path())) {
        Err(Error::Format { path, message }) => {
            assert!(path.ends_with("input.txt") && message.contains("7 bytes"), "{message}");
        }
        other => panic!("expected a size error, got {other:?}"),
    }
}

#[test]
fn checksum_mismatch_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset("tinyshakespeare").unwrap();
    std::fs::write(dir.path().join("input.txt"), vec![b'a'; ds.files[0].bytes as usize]).unwrap();
    assert!(matches!(verify(ds, dir.path()), Err(Error::Checksum { .. })));
}

#[test]
fn shared_mnist_verifies_and_loads() {
    let Some(root) = shared_data("shared_mnist_verifies_and_loads", &["mnist"]) else { return };
    let dir = resolve("mnist", Some(&root)).unwrap();
    let m = Mnist::load(&dir).unwrap();
    assert_eq!((m.train.len(), m.test.len(), m.train.rows, m.train.cols), (60000, 10000, 28, 28));
    // The first training labels of MNIST are 5, 0, 4, 1, 9.
    assert_eq!(&m.train.labels[..5], &[5, 0, 4, 1, 9]);
    let mean = m.train.mean_pixel();
    assert!((mean - 0.1307).abs() < 1e-3, "MNIST mean pixel {mean}");
    assert!(read_idx(&dir.join("t10k-labels-idx1-ubyte.gz")).is_ok());
}

mod text {
    use strata_data::text::*;

    #[test]
    fn tsv_and_json_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tsv");
        std::fs::write(&p, "sentence\tlabel\ngood movie\t1\nbad\t0\n").unwrap();
        let rows = read_labelled_tsv(&p, 2).unwrap();
        assert_eq!(
            rows,
            vec![Labelled { text: "good movie".into(), label: 1 }, Labelled { text: "bad".into(), label: 0 }]
        );
        std::fs::write(&p, "sentence\tlabel\ngood movie\t1\nno tab here\n").unwrap();
        let e = read_labelled_tsv(&p, 2).unwrap_err().to_string();
        assert!(e.contains("x.tsv") && e.contains("line 3"), "{e}");
        std::fs::write(&p, "sentence\tlabel\nok\t7\n").unwrap();
        assert!(read_labelled_tsv(&p, 2).unwrap_err().to_string().contains("line 2"));
        std::fs::write(&p, "text,label\n").unwrap();
        assert!(read_labelled_tsv(&p, 2).unwrap_err().to_string().contains("header"));
        std::fs::write(&p, b"sentence\tlabel\nbad \xff byte\t1\n").unwrap();
        assert!(read_labelled_tsv(&p, 2).unwrap_err().to_string().contains("line 2"));
        std::fs::write(dir.path().join("SVAMP.json"), "[{\"ID\": \"a\",\n \"Body\": 3}]").unwrap();
        let e = svamp(dir.path()).unwrap_err().to_string();
        assert!(e.contains("SVAMP.json") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn shared_text_datasets_load() {
        let needs = ["tinyshakespeare", "sst2", "cr", "svamp"];
        let Some(root) = super::shared_data("shared_text_datasets_load", &needs) else { return };
        let shakespeare = tinyshakespeare(&strata_data::resolve("tinyshakespeare", Some(&root)).unwrap()).unwrap();
        assert_eq!(shakespeare.len(), 1_115_394);
        assert!(shakespeare.starts_with("First Citizen:"));
        let (train, dev) = sst2(&root.join("sst2")).unwrap();
        assert_eq!((train.len(), dev.len()), (67_349, 872));
        assert!(cr(&root.join("cr")).unwrap().len() > 3000);
        let problems = svamp(&root.join("svamp")).unwrap();
        assert_eq!(problems.len(), 1000);
        assert_eq!(problems[0].answer, 51.0);
        let wiki = wikitext2(&root.join("wikitext-2")).unwrap();
        assert!(wiki.train.len() > 10 * wiki.valid.len() / 2);
    }
}

mod tokenize {
    use proptest::prelude::*;
    use strata_data::tokenize::{ByteTokenizer, CharVocab};

    proptest! {
        #[test]
        fn byte_and_char_tokenizers_round_trip(text in "\\PC{0,200}") {
            let b = ByteTokenizer;
            prop_assert_eq!(b.decode(&b.encode(&text)).unwrap(), text.clone());
            let vocab = CharVocab::from_corpus(&text);
            prop_assert_eq!(vocab.decode(&vocab.encode(&text).unwrap()).unwrap(), text);
        }
    }

    #[test]
    fn unknown_characters_and_tokens_are_errors() {
        let vocab = CharVocab::from_corpus("hello world");
        assert_eq!(vocab.len(), 8);
        assert_eq!(vocab.encode("hold").unwrap(), vec![3, 5, 4, 1]); // " dehlorw"
        assert!(vocab.encode("help!").unwrap_err().to_string().contains("'p'"));
        assert!(vocab.decode(&[99]).is_err());
        assert!(ByteTokenizer.decode(&[300]).is_err());
        assert!(ByteTokenizer.decode(&[0xff]).is_err());
    }
}

mod hf_tokenizers {
    use proptest::prelude::*;
    use strata_data::hf::HfTokenizer;

    fn corpus() -> Vec<String> {
        let base = "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. \
                    You are all resolved rather to die than to famish? Resolved. resolved.";
        (0..20).map(|i| format!("{base} {i}")).collect()
    }

    fn trained() -> HfTokenizer {
        HfTokenizer::train_bpe(corpus().into_iter(), 400, &["<|endoftext|>"]).unwrap()
    }

    #[test]
    fn minilm_wordpiece_matches_bert_uncased_ids() {
        let test = "minilm_wordpiece_matches_bert_uncased_ids";
        let Some(root) = super::shared_data(test, &["all-MiniLM-L6-v2"]) else { return };
        let dir = strata_data::resolve("all-MiniLM-L6-v2", Some(&root)).unwrap();
        let tok = HfTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        assert_eq!(tok.vocab_size(), 30_522);
        // bert-base-uncased: [CLS] hello world [SEP]; the file's fixed padding to 128 is switched off.
        assert_eq!(tok.encode("Hello world", true).unwrap(), vec![101, 7592, 2088, 102]);
        let batch = tok.encode_batch(&["Hello world", "Hello", "a b c d e f g"], true, 5).unwrap();
        assert_eq!((batch.batch, batch.len), (3, 5));
        assert_eq!(batch.row(1), vec![101, 7592, 102]);
        assert_eq!(&batch.mask[5..10], &[true, true, true, false, false]);
        assert_eq!(&batch.ids[8..10], &[0, 0]);
        // Truncation keeps the closing [SEP].
        assert_eq!(batch.row(2).len(), 5);
        assert_eq!(batch.row(2)[4], 102);
        assert_eq!(tok.decode(&batch.row(0), true).unwrap(), "hello world");
        let pairs = tok.encode_pairs(&[("Hello", "world")], 16).unwrap();
        assert_eq!(pairs.row(0), vec![101, 7592, 102, 2088, 102]);
        assert_eq!(&pairs.type_ids[..5], &[0, 0, 0, 1, 1]);
        assert!(HfTokenizer::from_file(&root.join("nope.json")).is_err());
    }

    #[test]
    fn bpe_training_is_deterministic_and_compresses() {
        let a = trained();
        let b = trained();
        let text = "Before we proceed any further, hear me speak.";
        assert_eq!(a.encode(text, false).unwrap(), b.encode(text, false).unwrap());
        assert!(a.encode(text, false).unwrap().len() < text.len() / 2, "BPE merges frequent pairs");
        assert_eq!(a.token_to_id("<|endoftext|>"), Some(0));
        let dir = tempfile::tempdir().unwrap();
        a.save(&dir.path().join("tokenizer.json")).unwrap();
        let c = HfTokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(c.encode(text, false).unwrap(), a.encode(text, false).unwrap());
        assert!(HfTokenizer::train_bpe(corpus().into_iter(), 100, &[]).is_err());
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{ not json").unwrap();
        assert!(HfTokenizer::from_file(&bad).unwrap_err().to_string().contains("bad.json"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn byte_level_bpe_round_trips_any_text(text in "\\PC{0,120}") {
            let tok = trained();
            let ids = tok.encode(&text, false).unwrap();
            prop_assert_eq!(tok.decode(&ids, false).unwrap(), text);
        }
    }
}

mod batching {
    use strata_data::batch::{LmBatcher, WindowSampling, pad_sequences};

    fn stream() -> Vec<u32> {
        (0..1000u32).collect()
    }

    #[test]
    fn windows_are_contiguous_and_targets_shifted() {
        for sampling in [WindowSampling::Random, WindowSampling::Shuffled] {
            let mut b = LmBatcher::new(stream(), 16, 4, sampling, 7).unwrap();
            let batch = b.next_batch();
            assert_eq!(batch.inputs.len(), 64);
            for row in 0..4 {
                let x = &batch.inputs[row * 16..(row + 1) * 16];
                let y = &batch.targets[row * 16..(row + 1) * 16];
                assert!(x.windows(2).all(|w| w[1] == w[0] + 1));
                assert!(x.iter().zip(y).all(|(a, b)| *b == a + 1));
            }
        }
    }

    #[test]
    fn restored_position_continues_the_same_stream() {
        for sampling in [WindowSampling::Random, WindowSampling::Shuffled] {
            let mut full = LmBatcher::new(stream(), 8, 5, sampling, 3).unwrap();
            let all: Vec<_> = (0..40).map(|_| full.next_batch()).collect();
            let mut first = LmBatcher::new(stream(), 8, 5, sampling, 3).unwrap();
            for _ in 0..17 {
                first.next_batch();
            }
            let saved = serde_json::to_string(&first.state()).unwrap();
            let mut resumed = LmBatcher::new(stream(), 8, 5, sampling, 3).unwrap();
            resumed.restore(serde_json::from_str(&saved).unwrap()).unwrap();
            let rest: Vec<_> = (17..40).map(|_| resumed.next_batch()).collect();
            assert_eq!(&all[17..], &rest[..]);
            let mut other_seed = LmBatcher::new(stream(), 8, 5, sampling, 4).unwrap();
            assert!(other_seed.restore(first.state()).is_err());
        }
    }

    #[test]
    fn shuffled_epochs_visit_every_window_once() {
        // 999 / 9 = 111 windows; batch 37 -> exactly 3 batches per epoch.
        let mut b = LmBatcher::new(stream(), 9, 37, WindowSampling::Shuffled, 1).unwrap();
        for _ in 0..2 {
            let mut starts: Vec<usize> =
                (0..3).flat_map(|_| b.next_batch().inputs.chunks(9).map(|w| w[0]).collect::<Vec<_>>()).collect();
            starts.sort();
            assert_eq!(starts, (0..111).map(|w| w * 9).collect::<Vec<_>>());
        }
        let seq: Vec<_> = b.sequential_batches().collect();
        assert_eq!(seq.len(), 3);
        assert_eq!(seq[2].batch, 37);
    }

    #[test]
    fn a_selection_draws_only_its_windows_and_resumes() {
        let base = LmBatcher::new(stream(), 8, 4, WindowSampling::Shuffled, 3).unwrap();
        let chosen = vec![3, 100, 517, 990];
        for sampling in [WindowSampling::Random, WindowSampling::Shuffled] {
            let mut sel = base.select_windows(chosen.clone(), sampling, 9).unwrap();
            assert_eq!(sel.windows_per_epoch(), 4);
            let batches: Vec<_> = (0..12).map(|_| sel.next_batch()).collect();
            let mut seen = std::collections::BTreeSet::new();
            for b in &batches {
                for row in b.inputs.chunks(8) {
                    assert!(chosen.contains(&row[0]), "{} not selected", row[0]);
                    seen.insert(row[0]);
                }
            }
            assert_eq!(seen.len(), 4, "{sampling:?} should reach every selected window in 48 draws");
            let mut resumed = base.select_windows(chosen.clone(), sampling, 9).unwrap();
            resumed.restore(sel.state()).unwrap();
            let mut again = base.select_windows(chosen.clone(), sampling, 9).unwrap();
            for _ in 0..12 {
                again.next_batch();
            }
            assert_eq!(resumed.next_batch(), again.next_batch());
        }
        // Shuffled: each epoch is a permutation of the selection.
        let mut sel = base.select_windows(chosen.clone(), WindowSampling::Shuffled, 1).unwrap();
        let mut epoch: Vec<usize> = sel.next_batch().inputs.chunks(8).map(|w| w[0]).collect();
        epoch.sort();
        assert_eq!(epoch, chosen);
        let seq: Vec<usize> =
            sel.sequential_batches().flat_map(|b| b.inputs.chunks(8).map(|w| w[0]).collect::<Vec<_>>()).collect();
        assert_eq!(seq, chosen);
        assert!(base.select_windows(vec![], WindowSampling::Random, 0).is_err());
        assert!(base.select_windows(vec![992], WindowSampling::Random, 0).is_err());
        assert!(base.select_windows(vec![991], WindowSampling::Random, 0).is_ok());
    }

    #[test]
    fn bad_batcher_configs_are_errors_and_padding_masks() {
        assert!(LmBatcher::new(vec![1, 2, 3], 3, 1, WindowSampling::Random, 0).is_err());
        assert!(LmBatcher::new(stream(), 0, 1, WindowSampling::Random, 0).is_err());
        assert!(LmBatcher::new(stream(), 4, 0, WindowSampling::Random, 0).is_err());
        let (ids, mask, len) = pad_sequences(&[vec![5, 6, 7], vec![8]], 0, 2);
        assert_eq!(len, 2);
        assert_eq!(ids, vec![5, 6, 8, 0]);
        assert_eq!(mask, vec![true, true, true, false]);
    }
}

/// A data test must fail when `STRATA_DATA` is set but lacks its dataset (CI), and skip loudly and countably when
/// it is not set. Runs this test binary again as a child on one data test.
#[test]
fn data_tests_fail_when_data_is_missing_and_record_skips() {
    if std::env::var_os("STRATA_CHILD").is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let child = |data: Option<&Path>, log: &Path| {
        let mut c = std::process::Command::new(&exe);
        c.args(["shared_mnist_verifies_and_loads", "--exact", "--test-threads", "1"])
            .env("STRATA_CHILD", "1")
            .env("STRATA_SKIP_LOG", log);
        match data {
            Some(d) => c.env("STRATA_DATA", d),
            None => c.env_remove("STRATA_DATA"),
        };
        c.output().unwrap()
    };
    let log = empty.path().join("skips.log");
    let missing = child(Some(empty.path()), &log);
    assert!(!missing.status.success(), "passed without its data: {}", String::from_utf8_lossy(&missing.stdout));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("has no mnist/ folder"));
    let unset = child(None, &log);
    assert!(unset.status.success());
    let skips = std::fs::read_to_string(&log).unwrap();
    assert!(skips.contains("SKIPPED shared_mnist_verifies_and_loads"), "{skips}");
}

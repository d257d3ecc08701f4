//! Fetching datasets over HTTP from a real server on 127.0.0.1 (never the internet): resume after a dropped
//! connection, restart when ranges are ignored, checksum failures that leave nothing behind, and the shared
//! datasets served as a mirror.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use strata_data::fetch::{Fetcher, FileOutcome};
use strata_data::testing::{FileServer, Misbehaviour, ServedRequest};
use strata_data::{DataFile, Dataset, Error, Source, verify};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A two-file dataset `toy` under `mirror/toy/`, and its registry entry.
fn toy_dataset(mirror: &Path) -> (&'static Dataset, Vec<u8>) {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let small = b"a small second file\n".to_vec();
    std::fs::create_dir_all(mirror.join("toy")).unwrap();
    std::fs::write(mirror.join("toy/big.bin"), &big).unwrap();
    std::fs::write(mirror.join("toy/small.txt"), &small).unwrap();
    let files = vec![
        DataFile {
            path: "big.bin",
            bytes: big.len() as u64,
            sha256: leak(sha256(&big)),
            source: Source::Url("https://example.invalid/big.bin"),
        },
        DataFile {
            path: "small.txt",
            bytes: small.len() as u64,
            sha256: leak(sha256(&small)),
            source: Source::Url("https://example.invalid/small.txt"),
        },
    ];
    let ds = Dataset { name: "toy", url: "test", license: "test", files: Box::leak(files.into_boxed_slice()) };
    (Box::leak(Box::new(ds)), big)
}

fn fetcher(server: &FileServer) -> Fetcher {
    Fetcher::new().with_mirror(&server.url).with_retries(3, Duration::from_millis(10)).with_progress(false)
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ds, big) = toy_dataset(mirror.path());
    let server =
        FileServer::start(mirror.path(), Misbehaviour { drop_first_at: Some(0.4), ..Default::default() }).unwrap();
    let report = fetcher(&server).fetch(ds, cache.path()).unwrap();
    let cut = (big.len() as f64 * 0.4) as u64;
    match &report.files[0].1 {
        FileOutcome::Downloaded { resumed_from, attempts, .. } => assert_eq!((*resumed_from, *attempts), (cut, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(report.dir.join("big.bin")).unwrap(), big);
    verify(ds, &report.dir).unwrap();
    assert_eq!(leftovers(&report.dir), ["big.bin", "small.txt"], "no .part or lock file is left");
    let asked: Vec<ServedRequest> = server.requests().into_iter().filter(|r| r.path == "/toy/big.bin").collect();
    assert_eq!(asked.iter().map(|r| r.range_start).collect::<Vec<_>>(), [None, Some(cut)]);
    // A second fetch finds everything in place and asks for nothing.
    let before = server.requests().len();
    let again = fetcher(&server).fetch(ds, cache.path()).unwrap();
    assert!(again.files.iter().all(|(_, o)| *o == FileOutcome::Present));
    assert_eq!(server.requests().len(), before);
}

#[test]
fn a_server_that_ignores_ranges_gets_the_file_from_the_start() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ds, big) = toy_dataset(mirror.path());
    let misbehaviour = Misbehaviour { drop_first_at: Some(0.5), ignore_ranges: true, ..Default::default() };
    let server = FileServer::start(mirror.path(), misbehaviour).unwrap();
    let report = fetcher(&server).fetch(ds, cache.path()).unwrap();
    assert!(matches!(report.files[0].1, FileOutcome::Downloaded { resumed_from: 0, attempts: 2, .. }));
    assert_eq!(std::fs::read(report.dir.join("big.bin")).unwrap(), big);
}

#[test]
fn a_corrupt_file_is_an_error_naming_it_and_both_sums_and_nothing_is_kept() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ds, big) = toy_dataset(mirror.path());
    let server = FileServer::start(mirror.path(), Misbehaviour { corrupt: true, ..Default::default() }).unwrap();
    let err = fetcher(&server).fetch(ds, cache.path()).unwrap_err();
    let mut corrupted = big.clone();
    corrupted[big.len() / 2] ^= 0x5a;
    match &err {
        Error::Checksum { path, expected, found } => {
            assert!(path.ends_with("toy/big.bin"), "{}", path.display());
            assert_eq!(expected, ds.files[0].sha256);
            assert!(found.starts_with(&sha256(&corrupted)), "{found}");
        }
        other => panic!("{other}"),
    }
    let message = err.to_string();
    assert!(message.contains("big.bin") && message.contains(ds.files[0].sha256), "{message}");
    assert!(leftovers(&cache.path().join("toy")).is_empty(), "{:?}", leftovers(&cache.path().join("toy")));
}

#[test]
fn a_part_file_left_by_a_killed_fetch_is_resumed_and_a_wrong_one_is_caught() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ds, big) = toy_dataset(mirror.path());
    let server = FileServer::start(mirror.path(), Misbehaviour::default()).unwrap();
    let dir = cache.path().join("toy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big.bin.part"), &big[..1000]).unwrap();
    let report = fetcher(&server).fetch(ds, cache.path()).unwrap();
    assert!(matches!(report.files[0].1, FileOutcome::Downloaded { resumed_from: 1000, attempts: 1, .. }));
    assert_eq!(std::fs::read(dir.join("big.bin")).unwrap(), big);

    // A .part file whose bytes are not the file's: resumed, caught by the checksum, removed; the next fetch
    // starts over and succeeds.
    std::fs::remove_file(dir.join("big.bin")).unwrap();
    std::fs::write(dir.join("big.bin.part"), vec![7u8; 1000]).unwrap();
    assert!(matches!(fetcher(&server).fetch(ds, cache.path()), Err(Error::Checksum { .. })));
    assert!(!dir.join("big.bin.part").exists() && !dir.join("big.bin").exists());
    fetcher(&server).fetch(ds, cache.path()).unwrap();
    verify(ds, &dir).unwrap();
}

#[test]
fn a_file_that_keeps_breaking_is_an_error_that_keeps_the_part_for_later() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ds, big) = toy_dataset(mirror.path());
    let server =
        FileServer::start(mirror.path(), Misbehaviour { drop_first_at: Some(0.3), ..Default::default() }).unwrap();
    let once = Fetcher::new().with_mirror(&server.url).with_retries(1, Duration::ZERO).with_progress(false);
    let err = once.fetch(ds, cache.path()).unwrap_err().to_string();
    assert!(err.contains("/toy/big.bin") && err.contains("after 1 tries"), "{err}");
    let part = cache.path().join("toy/big.bin.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), (big.len() as f64 * 0.3) as u64);
    // The next fetch resumes it (small.txt breaks once too, hence two tries).
    let report = fetcher(&server).fetch(ds, cache.path()).unwrap();
    assert!(matches!(report.files[0].1, FileOutcome::Downloaded { resumed_from, attempts: 1, .. } if resumed_from > 0));
    assert!(!part.exists());
}

#[test]
fn missing_files_are_errors_naming_the_url() {
    let (mirror, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ds, _) = toy_dataset(mirror.path());
    std::fs::remove_file(mirror.path().join("toy/small.txt")).unwrap();
    let server = FileServer::start(mirror.path(), Misbehaviour::default()).unwrap();
    let err = fetcher(&server).fetch(ds, cache.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Download { url, message } if url.ends_with("/toy/small.txt") && message == "HTTP 404")
    );
    assert_eq!(leftovers(&cache.path().join("toy")), ["big.bin"], "the good file stays, nothing of the missing one");
}

#[test]
fn every_registered_file_has_a_source_and_derived_files_come_after_their_inputs() {
    for ds in strata_data::REGISTRY {
        for (i, f) in ds.files.iter().enumerate() {
            match f.source {
                Source::Url(u) => assert!(u.starts_with("https://"), "{}/{}: {u}", ds.name, f.path),
                Source::MirrorOnly(why) => assert!(!why.is_empty()),
                Source::Derived { from, .. } => {
                    for input in from {
                        assert!(ds.files[..i].iter().any(|g| g.path == *input), "{}/{}: {input}", ds.name, f.path);
                    }
                }
            }
        }
    }
}

/// Every derived file (CR, MR, SUBJ, MPQA, TREC, CoLA TSVs) rebuilt from the shared raw files has its registered
/// size and SHA-256; an undefined Windows-1252 byte is an error naming the file.
#[test]
fn every_derived_file_rebuilds_to_its_registered_checksum() {
    let names: Vec<&str> = strata_data::REGISTRY.iter().map(|d| d.name).collect();
    let derived: Vec<&str> =
        ["cr", "mr", "subj", "mpqa", "trec", "cola"].into_iter().filter(|n| names.contains(n)).collect();
    assert_eq!(derived.len(), 6);
    let Some(root) = strata_data::testing::shared_data("every_derived_file_rebuilds", &derived) else { return };
    let mut built = 0;
    for name in derived {
        let ds = strata_data::dataset(name).unwrap();
        for f in ds.files {
            if let Source::Derived { build, .. } = f.source {
                let bytes = build(&root.join(name)).unwrap();
                assert_eq!((bytes.len() as u64, sha256(&bytes)), (f.bytes, f.sha256.to_string()), "{name}/{}", f.path);
                built += 1;
            }
        }
    }
    assert_eq!(built, 8);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("custrev.pos"), b"fine\n\x81 odd byte\n").unwrap();
    std::fs::write(dir.path().join("custrev.neg"), b"bad\n").unwrap();
    let err = strata_data::build_cr_tsv(dir.path()).unwrap_err().to_string();
    assert!(err.contains("custrev.pos") && err.contains("0x81"), "{err}");
}

#[test]
fn a_file_without_a_canonical_copy_needs_a_mirror_and_nested_paths_are_created() {
    let Some(root) = strata_data::testing::shared_data("mirror_only_files", &["cola"]) else { return };
    let cola = strata_data::dataset("cola").unwrap();
    let plain = Fetcher::new().with_progress(false);
    let err = plain.fetch(cola, tempfile::tempdir().unwrap().path()).unwrap_err().to_string();
    assert!(err.contains("glue/train.tsv") && err.contains("STRATA_DATA_URL"), "{err}");
    let server = FileServer::start(&root, Misbehaviour::default()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let report = fetcher(&server).fetch(cola, cache.path()).unwrap();
    verify(cola, &report.dir).unwrap();
    assert_eq!(data_text_rows(&report.dir), (8551, 1043));
}

fn data_text_rows(dir: &Path) -> (usize, usize) {
    let (train, dev) = strata_data::text::cola(dir).unwrap();
    (train.len(), dev.len())
}

#[test]
fn the_shared_datasets_fetch_from_a_local_mirror_and_cr_builds_from_its_raw_files() {
    let Some(root) = strata_data::testing::shared_data("shared_datasets_fetch", &["tinyshakespeare", "cr"]) else {
        return;
    };
    let server = FileServer::start(&root, Misbehaviour { drop_first_at: Some(0.5), ..Default::default() }).unwrap();
    let cache = tempfile::tempdir().unwrap();
    for name in ["tinyshakespeare", "cr"] {
        let ds = strata_data::dataset(name).unwrap();
        let report = fetcher(&server).fetch(ds, cache.path()).unwrap();
        verify(ds, &report.dir).unwrap();
    }
    // cr.tsv as the canonical source gives it: built from custrev.pos/neg (served here), then checked.
    let cr = strata_data::dataset("cr").unwrap();
    assert_eq!(sha256(&strata_data::build_cr_tsv(&root.join("cr")).unwrap()), cr.files[2].sha256);
    let files: Vec<DataFile> = cr
        .files
        .iter()
        .map(|f| match f.source {
            Source::Url(_) => DataFile { source: Source::Url(leak(format!("{}/cr/{}", server.url, f.path))), ..*f },
            Source::Derived { .. } | Source::MirrorOnly(_) => *f,
        })
        .collect();
    let canonical = Dataset { files: Box::leak(files.into_boxed_slice()), ..*cr };
    let plain = Fetcher::new().with_retries(2, Duration::from_millis(10)).with_progress(false);
    let elsewhere = tempfile::tempdir().unwrap();
    let report = plain.fetch(&canonical, elsewhere.path()).unwrap();
    assert_eq!(report.files[2].1, FileOutcome::Built);
    verify(cr, &report.dir).unwrap();
}

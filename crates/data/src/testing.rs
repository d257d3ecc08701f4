//! For tests that read the shared datasets: found through `STRATA_DATA`, never by a machine path.
//!
//! When `STRATA_DATA` is set (as in CI), a dataset missing from it fails the test: a test must not pass because
//! its data was not there. When it is not set, the test is skipped, loudly: a line `SKIPPED <test>: ...` on
//! stderr, and the same line appended to the file named by `STRATA_SKIP_LOG` when that is set (`cargo xtask
//! test` sets it and prints the count at the end).

use std::io::Write;
use std::path::PathBuf;

/// The `STRATA_DATA` root when it holds `datasets` (subfolders), `None` (a recorded skip) when `STRATA_DATA` is
/// not set.
///
/// # Panics
/// When `STRATA_DATA` is set but a dataset folder is missing.
pub fn shared_data(test: &str, datasets: &[&str]) -> Option<PathBuf> {
    let Some(root) = std::env::var_os("STRATA_DATA").map(PathBuf::from) else {
        record_skip(test, &format!("STRATA_DATA is not set (needs {})", datasets.join(", ")));
        return None;
    };
    for d in datasets {
        assert!(root.join(d).is_dir(), "{test}: STRATA_DATA={} has no {d}/ folder", root.display());
    }
    Some(root)
}

fn record_skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("STRATA_SKIP_LOG") {
        let appended =
            std::fs::OpenOptions::new().create(true).append(true).open(&log).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            eprintln!("could not record the skip in {}: {e}", PathBuf::from(log).display());
        }
    }
}

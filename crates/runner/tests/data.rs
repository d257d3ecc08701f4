//! `strata data list|fetch` and fetch-on-first-use as a new user meets them: an empty cache, no `--data` and no
//! `STRATA_DATA`, the datasets served over HTTP from 127.0.0.1 (a mirror of `../shared/data`; never the
//! internet), a connection that drops halfway, and `STRATA_OFFLINE=1`.

use std::path::Path;
use std::process::{Command, Output};

use data::testing::{FileServer, Misbehaviour};

fn strata(args: &[&str], cache: &Path, mirror: &str, offline: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.args(args).env_remove("STRATA_DATA").env("XDG_CACHE_HOME", cache).env("STRATA_DATA_URL", mirror);
    if offline {
        c.env("STRATA_OFFLINE", "1");
    } else {
        c.env_remove("STRATA_OFFLINE");
    }
    c.output().expect("runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn an_empty_cache_is_filled_from_a_mirror_on_first_use_and_by_data_fetch() {
    let Some(root) = data::testing::shared_data("empty_cache_filled_from_a_mirror", &["tinyshakespeare", "cr"]) else {
        return;
    };
    let server = FileServer::start(&root, Misbehaviour { drop_first_at: Some(0.5), ..Default::default() }).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    let reproduce = ["reproduce", "lm/shakespeare-char", "--smoke", "--out", out_dir];

    // Offline: the usual clear error, and nothing is fetched.
    let offline = strata(&reproduce, cache.path(), &server.url, true);
    assert!(!offline.status.success());
    let message = text(&offline);
    assert!(message.contains("`tinyshakespeare` not found") && message.contains("strata data fetch"), "{message}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    let refused = strata(&["data", "fetch", "cr"], cache.path(), &server.url, true);
    assert!(!refused.status.success() && text(&refused).contains("STRATA_OFFLINE"), "{}", text(&refused));

    let listed = text(&strata(&["data", "list"], cache.path(), &server.url, false));
    let line = |listing: &str, name: &str| listing.lines().find(|l| l.starts_with(name)).unwrap_or("").to_string();
    assert!(line(&listed, "tinyshakespeare").ends_with("missing"), "{listed}");

    // First use: fetched into the user cache (resuming the dropped transfer), checked, then trained on.
    let first = strata(&reproduce, cache.path(), &server.url, false);
    assert!(first.status.success(), "{}", text(&first));
    let fetched = cache.path().join("strata/data/tinyshakespeare");
    data::verify(data::dataset("tinyshakespeare").unwrap(), &fetched).unwrap();
    assert!(out.path().join("lm/shakespeare-char/report.md").is_file());
    let ranged = server.requests().iter().filter(|r| r.range_start.is_some_and(|s| s > 0)).count();
    assert_eq!(ranged, 1, "the dropped transfer resumed with a range request: {:?}", server.requests());

    // `data fetch`, then `data list --verify` shows both in the cache with good sums.
    let fetch = strata(&["data", "fetch", "cr"], cache.path(), &server.url, false);
    assert!(fetch.status.success(), "{}", text(&fetch));
    let listed = text(&strata(&["data", "list", "--verify"], cache.path(), &server.url, false));
    for name in ["tinyshakespeare", "cr"] {
        let l = line(&listed, name);
        assert!(l.contains(&cache.path().join("strata/data").join(name).display().to_string()), "{listed}");
        assert!(l.ends_with("(sha256 ok)"), "{listed}");
    }
    assert!(line(&listed, "mnist").ends_with("missing"), "{listed}");

    // Fetched ahead of time, then used offline by a reproduction that needs three datasets.
    if root.join("all-MiniLM-L6-v2").is_dir() && root.join("sst2").is_dir() {
        let fetch = strata(&["data", "fetch", "all-MiniLM-L6-v2", "sst2"], cache.path(), &server.url, false);
        assert!(fetch.status.success(), "{}", text(&fetch));
        let ran =
            strata(&["reproduce", "grafting/localize", "--smoke", "--out", out_dir], cache.path(), &server.url, true);
        assert!(ran.status.success(), "{}", text(&ran));
        assert!(out.path().join("grafting/localize/report.md").is_file());
    }

    let unknown = strata(&["data", "fetch", "imagenet"], cache.path(), &server.url, false);
    assert!(!unknown.status.success() && text(&unknown).contains("unknown dataset `imagenet`"), "{}", text(&unknown));
}

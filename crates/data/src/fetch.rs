//! Downloading registered datasets into the user cache (or any folder), checked before they are used.
//!
//! Each file goes through `<file>.part` and is renamed into place only after its size and SHA-256 match the
//! registry, so a folder never holds a file that failed its check. A dropped connection resumes from the `.part`
//! file with an HTTP range request (or restarts when the server ignores ranges), a few times, with a pause between
//! tries; a `.part` left by a killed process is resumed the same way by the next fetch. A checksum mismatch is an
//! error naming the file and both sums, and removes the `.part` file.
//!
//! Sources: each file's canonical URL in the registry ([`crate::Source::Url`]); files that the canonical source
//! only has in another form (CR's `cr.tsv`) are built from the fetched originals ([`crate::Source::Derived`]) and
//! checked the same way. `STRATA_DATA_URL=<url>` replaces every canonical URL by a mirror laid out like a data
//! folder (`<url>/<dataset>/<file>`, for example `../shared/data` served over HTTP). `STRATA_OFFLINE=1` forbids
//! the network: [`obtain`] then stops at the usual "not found" error, and [`Fetcher::from_env`] refuses.
//!
//! ```no_run
//! // What `strata data fetch mnist` does: into the user cache, through STRATA_DATA_URL when it is set.
//! let fetcher = strata_data::fetch::Fetcher::from_env()?;
//! let root = strata_data::cache_root().expect("HOME or XDG_CACHE_HOME is set");
//! let report = fetcher.fetch(strata_data::dataset("mnist")?, &root)?;
//! println!("{}", report.dir.display());
//! // What reproductions do: use the local copy, or fetch it on first use.
//! let dir = strata_data::fetch::obtain("mnist", None)?;
//! # Ok::<(), strata_data::Error>(())
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::registry::sha256_file;
use crate::{DataFile, Dataset, Error, Result, Source, cache_root, dataset, resolve};

/// True when `STRATA_OFFLINE` is set to anything but `0` or the empty string.
pub fn offline() -> bool {
    std::env::var("STRATA_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The dataset's checked folder: found locally as [`resolve`] finds it, or, when it is nowhere (and neither an
/// explicit folder was given nor `STRATA_OFFLINE` is set), fetched into the user cache first.
pub fn obtain(name: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    match resolve(name, explicit) {
        Err(Error::NotFound { .. }) if explicit.is_none() && !offline() => {
            let root = cache_root().ok_or_else(|| Error::Download {
                url: name.into(),
                message: "neither XDG_CACHE_HOME nor HOME is set, so there is no cache to fetch into".into(),
            })?;
            eprintln!(
                "dataset `{name}` is not on this machine; fetching it into {} (set STRATA_OFFLINE=1 to forbid this)",
                root.display()
            );
            Fetcher::from_env()?.fetch(dataset(name)?, &root)?;
            resolve(name, None)
        }
        other => other,
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Already there with the right size and SHA-256.
    Present,
    /// Downloaded; `resumed_from` is the byte offset the last (successful) request started at.
    Downloaded { url: String, resumed_from: u64, attempts: u32 },
    /// Built from other files of the dataset.
    Built,
}

/// The folder a dataset was fetched into and what happened to each file.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub dir: PathBuf,
    pub files: Vec<(String, FileOutcome)>,
}

/// Downloads datasets. [`Fetcher::from_env`] is what the CLI uses; tests build one with a mirror.
#[derive(Debug, Clone)]
pub struct Fetcher {
    agent: ureq::Agent,
    mirror: Option<String>,
    attempts: u32,
    retry_pause: Duration,
    progress: bool,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    /// Canonical URLs, 4 tries per file, a progress bar on a terminal.
    pub fn new() -> Fetcher {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            // A stalled transfer is an error (and the next try resumes); a slow one is not.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("strata-data/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Fetcher { agent, mirror: None, attempts: 4, retry_pause: Duration::from_secs(2), progress: true }
    }

    /// [`Fetcher::new`] with `STRATA_DATA_URL` as the mirror when set; an error when `STRATA_OFFLINE` is set.
    pub fn from_env() -> Result<Fetcher> {
        if offline() {
            return Err(Error::Offline);
        }
        let mirror = std::env::var("STRATA_DATA_URL").ok().filter(|u| !u.is_empty());
        Ok(Fetcher { mirror, ..Fetcher::new() })
    }

    /// Fetch every file from `<url>/<dataset>/<file>` instead of the canonical URLs.
    pub fn with_mirror(mut self, url: impl Into<String>) -> Fetcher {
        self.mirror = Some(url.into());
        self
    }

    /// Tries per file (at least 1) and the pause between them.
    pub fn with_retries(mut self, attempts: u32, pause: Duration) -> Fetcher {
        self.attempts = attempts.max(1);
        self.retry_pause = pause;
        self
    }

    /// Show a progress bar (on a terminal) and one line per file; on by default.
    pub fn with_progress(mut self, on: bool) -> Fetcher {
        self.progress = on;
        self
    }

    pub fn mirror(&self) -> Option<&str> {
        self.mirror.as_deref()
    }

    /// Where `file` of `ds` is downloaded from, or `None` when it is built from other files.
    pub fn url_for(&self, ds: &Dataset, file: &DataFile) -> Option<String> {
        match (&self.mirror, file.source) {
            (Some(m), _) => Some(format!("{}/{}/{}", m.trim_end_matches('/'), ds.name, file.path)),
            (None, Source::Url(u)) => Some(u.to_string()),
            (None, Source::Derived { .. } | Source::MirrorOnly(_)) => None,
        }
    }

    /// Fetches every file of `ds` into `root/<ds.name>/`, leaving files that already check out alone.
    pub fn fetch(&self, ds: &Dataset, root: &Path) -> Result<FetchReport> {
        let dir = root.join(ds.name);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        let _lock = FetchLock::acquire(&dir)?;
        let mut files = Vec::new();
        for f in ds.files {
            let target = dir.join(f.path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.to_path_buf(), source })?;
            }
            let outcome = if matches_registry(&target, f)? {
                FileOutcome::Present
            } else {
                match (self.url_for(ds, f), f.source) {
                    (Some(url), _) => self.download(&url, &target, f)?,
                    (None, Source::Derived { from, build, .. }) => {
                        for input in from {
                            if !dir.join(input).is_file() {
                                return Err(Error::Format {
                                    path: target,
                                    message: format!("is built from {input}, which is missing"),
                                });
                            }
                        }
                        let bytes = build(&dir)?;
                        let part = part_path(&target);
                        std::fs::write(&part, bytes).map_err(|source| Error::Io { path: part.clone(), source })?;
                        check_and_place(&part, &target, f)?;
                        FileOutcome::Built
                    }
                    (None, Source::MirrorOnly(why)) => {
                        return Err(Error::Download {
                            url: format!("{}/{}", ds.name, f.path),
                            message: format!(
                                "no canonical copy of this file is published ({why}); set STRATA_DATA_URL to a \
                                 mirror laid out like a data folder, or place it by hand"
                            ),
                        });
                    }
                    (None, Source::Url(_)) => unreachable!("url_for gives a URL for every Source::Url"),
                }
            };
            if self.progress && outcome != FileOutcome::Present {
                eprintln!("  {}/{}: {} ({} bytes, sha256 ok)", ds.name, f.path, describe(&outcome), f.bytes);
            }
            files.push((f.path.to_string(), outcome));
        }
        Ok(FetchReport { dir, files })
    }

    /// Downloads `url` into `target` through `target.part`, resuming and retrying, then checks and renames it.
    pub fn download(&self, url: &str, target: &Path, f: &DataFile) -> Result<FileOutcome> {
        let part = part_path(target);
        let bar = self.progress_bar(f);
        let mut attempt = 0;
        let resumed_from = loop {
            attempt += 1;
            match self.download_once(url, &part, f.bytes, &bar) {
                Ok(start) => break start,
                Err(Failure::Retry(message)) if attempt < self.attempts => {
                    bar.suspend(|| {
                        eprintln!("  {url}: {message}; trying again ({} of {})", attempt + 1, self.attempts)
                    });
                    std::thread::sleep(self.retry_pause);
                }
                Err(Failure::Retry(message)) => {
                    bar.abandon();
                    return Err(Error::Download {
                        url: url.into(),
                        message: format!(
                            "{message} (after {attempt} tries; {} keeps what arrived and the next fetch resumes it)",
                            part.display()
                        ),
                    });
                }
                Err(Failure::Fatal(e)) => {
                    bar.abandon();
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
            }
        };
        bar.finish_and_clear();
        check_and_place(&part, target, f)?;
        Ok(FileOutcome::Downloaded { url: url.into(), resumed_from, attempts: attempt })
    }

    /// One request: continues `part` from its length when it has one. Returns the offset it started at.
    fn download_once(
        &self,
        url: &str,
        part: &Path,
        expected: u64,
        bar: &indicatif::ProgressBar,
    ) -> Result<u64, Failure> {
        let io = |source| Failure::Fatal(Error::Io { path: part.to_path_buf(), source });
        let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > expected {
            std::fs::remove_file(part).map_err(io)?;
            have = 0;
        }
        if have == expected {
            return Ok(have);
        }
        let mut request = self.agent.get(url);
        if have > 0 {
            request = request.header("Range", &format!("bytes={have}-"));
        }
        let response = request.call().map_err(|e| Failure::Retry(e.to_string()))?;
        let status = response.status().as_u16();
        let start = match status {
            206 if have > 0 && content_range_start(&response) == Some(have) => have,
            200 => 0,
            206 => 0, // a range we did not ask for: start over below
            416 => {
                std::fs::remove_file(part).map_err(io)?;
                return Err(Failure::Retry("the server refused to resume the partial file; starting over".into()));
            }
            s if s == 408 || s == 429 || s >= 500 => return Err(Failure::Retry(format!("HTTP {s}"))),
            s => {
                return Err(Failure::Fatal(Error::Download { url: url.into(), message: format!("HTTP {s}") }));
            }
        };
        if status == 206 && start == 0 {
            std::fs::remove_file(part).map_err(io)?;
            return Err(Failure::Retry("the server answered a range that was not asked for; starting over".into()));
        }
        let file =
            if start == 0 { std::fs::File::create(part) } else { std::fs::OpenOptions::new().append(true).open(part) };
        let mut file = file.map_err(io)?;
        bar.set_position(start);
        // One byte more than the rest of the file is enough to tell that the server sends something else.
        let mut body = response.into_body().into_with_config().limit(expected - start + 1).reader();
        let mut written = start;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    file.flush().map_err(io)?;
                    return Err(Failure::Retry(format!(
                        "the transfer broke after {written} of {expected} bytes ({e})"
                    )));
                }
            };
            written += n as u64;
            if written > expected {
                return Err(Failure::Fatal(Error::Download {
                    url: url.into(),
                    message: format!("more than the registered {expected} bytes: not the registered file"),
                }));
            }
            file.write_all(&buf[..n]).map_err(io)?;
            bar.set_position(written);
        }
        file.sync_all().map_err(io)?;
        if written < expected {
            return Err(Failure::Retry(format!("the connection closed after {written} of {expected} bytes")));
        }
        Ok(start)
    }

    fn progress_bar(&self, f: &DataFile) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        // Drawn on stderr only when it is a terminal (indicatif hides it otherwise).
        let bar = indicatif::ProgressBar::new(f.bytes);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "  {msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(f.path.to_string());
        bar
    }
}

enum Failure {
    /// Worth another try (the `.part` file keeps what arrived).
    Retry(String),
    /// Not worth another try; the `.part` file is removed.
    Fatal(Error),
}

fn describe(outcome: &FileOutcome) -> String {
    match outcome {
        FileOutcome::Present => "present".into(),
        FileOutcome::Built => "built from the files above".into(),
        FileOutcome::Downloaded { url, resumed_from: 0, .. } => format!("downloaded from {url}"),
        FileOutcome::Downloaded { url, resumed_from, .. } => {
            format!("downloaded from {url} (resumed at byte {resumed_from})")
        }
    }
}

fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}

/// The `<start>` of a `Content-Range: bytes <start>-<end>/<total>` header.
fn content_range_start(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    value.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// Whether `path` exists with the registered size and SHA-256 (a missing file is `false`, not an error).
fn matches_registry(path: &Path, f: &DataFile) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == f.bytes => Ok(sha256_file(path)? == f.sha256),
        _ => Ok(false),
    }
}

/// Checks `part` against the registry and renames it to `target`; on a mismatch removes it and names both sums.
fn check_and_place(part: &Path, target: &Path, f: &DataFile) -> Result<()> {
    let len = std::fs::metadata(part).map_err(|source| Error::Io { path: part.to_path_buf(), source })?.len();
    let found = sha256_file(part)?;
    if len != f.bytes || found != f.sha256 {
        let _ = std::fs::remove_file(part);
        return Err(Error::Checksum {
            path: target.to_path_buf(),
            expected: f.sha256.into(),
            found: format!("{found} ({len} bytes, expected {}; nothing was kept)", f.bytes),
        });
    }
    std::fs::rename(part, target).map_err(|source| Error::Io { path: target.to_path_buf(), source })
}

/// One fetch per dataset folder at a time (job-array tasks may all fetch on first use): the others wait. A lock
/// left by a process that no longer runs is taken over.
struct FetchLock(PathBuf);

impl FetchLock {
    fn acquire(dir: &Path) -> Result<FetchLock> {
        let path = dir.join(".fetch.lock");
        let mut announced = false;
        loop {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id()).map_err(|source| Error::Io { path: path.clone(), source })?;
                    return Ok(FetchLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner: Option<u32> = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
                    let alive = owner.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    // No pid yet: the owner is between creating and writing it, unless that was long ago.
                    let stale_empty = owner.is_none()
                        && std::fs::metadata(&path)
                            .and_then(|m| m.modified())
                            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(10)));
                    if (!alive && owner.is_some()) || stale_empty {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if !announced {
                        eprintln!("waiting for another fetch into {} ({})", dir.display(), path.display());
                        announced = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(source) => return Err(Error::Io { path, source }),
            }
        }
    }
}

impl Drop for FetchLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

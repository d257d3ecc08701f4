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

/// A small HTTP/1.1 file server on 127.0.0.1 for tests of [`crate::fetch`]: serves a folder (for example
/// `STRATA_DATA`, laid out as a mirror is) with range requests, and can misbehave on purpose.
pub struct FileServer {
    pub url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<ServedRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

/// How a [`FileServer`] misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Misbehaviour {
    /// The first request for each file gets the full `Content-Length`, then only this fraction of the body before
    /// the connection is closed.
    pub drop_first_at: Option<f64>,
    /// Answer range requests with the whole file (status 200), as some servers do.
    pub ignore_ranges: bool,
    /// Flip one byte in the middle of every file.
    pub corrupt: bool,
}

/// One request the server saw: the path and the start of the range asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRequest {
    pub path: String,
    pub range_start: Option<u64>,
}

impl FileServer {
    /// Serves `root` on a free port until dropped.
    pub fn start(root: &std::path::Path, misbehaviour: Misbehaviour) -> std::io::Result<FileServer> {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (root, log, halt) = (root.to_path_buf(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let served_once = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
            for stream in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, log, served_once) = (root.clone(), log.clone(), served_once.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &root, misbehaviour, &log, &served_once);
                });
            }
        });
        Ok(FileServer { url: format!("http://{addr}"), requests, stop, addr })
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ServedRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve_one(
    mut stream: std::net::TcpStream,
    root: &std::path::Path,
    misbehaviour: Misbehaviour,
    log: &std::sync::Mutex<Vec<ServedRequest>>,
    served_once: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range_start = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range_start =
                    value.trim().strip_prefix("bytes=").and_then(|r| r.split('-').next()?.parse::<u64>().ok());
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    if let Ok(mut l) = log.lock() {
        l.push(ServedRequest { path: path.clone(), range_start });
    }
    let relative = path.trim_start_matches('/');
    let file = root.join(relative);
    let bytes = if relative.split('/').any(|c| c == ".." || c.is_empty()) { None } else { std::fs::read(&file).ok() };
    let Some(mut bytes) = bytes else {
        return stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    if misbehaviour.corrupt && !bytes.is_empty() {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
    }
    let first_time = served_once.lock().map(|mut s| s.insert(path.clone())).unwrap_or(false);
    let total = bytes.len() as u64;
    match range_start.filter(|_| !misbehaviour.ignore_ranges) {
        Some(start) if start >= total => stream.write_all(
            format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
        Some(start) => {
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                total - 1,
                total - start
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(&bytes[start as usize..])
        }
        None => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes())?;
            match misbehaviour.drop_first_at.filter(|_| first_time) {
                Some(fraction) => {
                    let cut = ((total as f64 * fraction) as usize).min(bytes.len());
                    stream.write_all(&bytes[..cut])?;
                    stream.flush()?;
                    stream.shutdown(std::net::Shutdown::Both)
                }
                None => stream.write_all(&bytes),
            }
        }
    }
}

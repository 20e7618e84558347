//! Harness for end-to-end tests: starts the real `engramd` binary on a free port with a temp data
//! directory, talks HTTP to it, and stops it gracefully (SIGTERM) or brutally (SIGKILL).
//!
//! The binary is looked up next to the test executable (`target/<profile>/engramd`), or taken
//! from `ENGRAM_BIN`. `cargo nextest run --workspace` builds it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a daemon may take to answer its first health check.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the `engramd` binary under test.
/// The environment that starts a daemon on an adjustable clock, for
/// [`Daemon::start_with_env`] and [`Daemon::advance_clock`].
pub const TEST_CLOCK: (&str, &str) = ("ENGRAM_TEST_CLOCK", "adjustable");

pub fn engramd_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ENGRAM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/engramd
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join("engramd");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p engram-server` or set ENGRAM_BIN",
        bin.display()
    );
    bin
}

/// Path of the `engramctl` binary under test (beside `engramd`, or `ENGRAMCTL_BIN`).
pub fn engramctl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ENGRAMCTL_BIN") {
        return PathBuf::from(p);
    }
    engramd_path().with_file_name("engramctl")
}

/// A free TCP port on 127.0.0.1 (the kernel's choice; released before the daemon binds it).
/// Runs engramctl with `args`.
pub fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(engramctl_path())
        .args(args)
        .output()
        .expect("run engramctl")
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A running `engramd`.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    agent: ureq::Agent,
    log_path: PathBuf,
}

/// An HTTP answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error code of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Daemon {
    /// Starts a daemon on `data_dir` with extra `--set key=value` settings and environment.
    pub fn start(data_dir: &Path, settings: &[(&str, &str)]) -> Daemon {
        Daemon::start_with_env(data_dir, settings, &[])
    }

    pub fn start_with_env(
        data_dir: &Path,
        settings: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_as(data_dir, settings, env, None)
    }

    /// A daemon whose open-file limit (soft and hard) is `limit`, as `ulimit -n` sets it.
    pub fn start_with_open_file_limit(
        data_dir: &Path,
        settings: &[(&str, &str)],
        limit: u64,
    ) -> Daemon {
        Daemon::start_as(data_dir, settings, &[], Some(limit))
    }

    fn start_as(
        data_dir: &Path,
        settings: &[(&str, &str)],
        env: &[(&str, &str)],
        open_file_limit: Option<u64>,
    ) -> Daemon {
        let mut errors = String::new();
        for _ in 0..5 {
            let port = free_port();
            match Daemon::try_start(data_dir, port, settings, env, open_file_limit) {
                Ok(d) => return d,
                // Every attempt's error: a failed start can change what the next one finds.
                Err(e) => errors.push_str(&format!("\n--- attempt on port {port}:\n{e}")),
            }
        }
        panic!("engramd did not start: {errors}");
    }

    fn try_start(
        data_dir: &Path,
        port: u16,
        settings: &[(&str, &str)],
        env: &[(&str, &str)],
        open_file_limit: Option<u64>,
    ) -> Result<Daemon, String> {
        let log_path = data_dir.with_extension(format!("{port}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut cmd = match open_file_limit {
            None => Command::new(engramd_path()),
            Some(limit) => {
                // `exec` keeps the pid, so kill -9 and SIGTERM still reach engramd.
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(engramd_path());
                sh
            }
        };
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("ENGRAM_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // The daemon refuses unknown ENGRAM_* variables; the tests' own (ENGRAM_CRASH_SEED, …)
        // are not for it.
        for (k, _) in std::env::vars() {
            if k.starts_with("ENGRAM_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in settings {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut d = Daemon {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            agent,
            log_path,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                d.child = None;
                return Err(format!("exited with {status} before serving: {}", d.log()));
            }
            if let Ok(r) = d.agent.get(&format!("{}/api/v1/health", d.url)).call() {
                if r.status() == 200 {
                    return Ok(d);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no healthy answer within {START_TIMEOUT:?}: {}",
                    d.log()
                ));
            }
            // Polling for readiness of a separate process, bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves the engine's clock forward by `by`; the daemon must have been started with
    /// `ENGRAM_TEST_CLOCK=adjustable` (see [`TEST_CLOCK`]).
    pub fn advance_clock(&self, by: Duration) {
        let r = self.post(
            "/api/v1/admin/test-clock",
            &serde_json::json!({"advance_ms": by.as_millis() as u64}),
        );
        assert_eq!(r.status, 200, "advancing the test clock: {}", r.text);
    }

    /// What the daemon wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        c.wait().expect("wait for engramd")
    }

    /// Sends a request; `body` is JSON text or empty.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut with_type = headers.to_vec();
        if body.is_some() {
            with_type.push(("content-type", "application/json"));
        }
        let resp = self.send(method, path, body.map(str::as_bytes), &with_type);
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_owned())))
            .collect();
        let mut text = String::new();
        resp.into_reader()
            .take(256 << 20)
            .read_to_string(&mut text)
            .expect("read body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            headers,
        }
    }

    /// Sends a request; an error status is an answer too, a transport error a panic.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> ureq::Response {
        let mut req = self.agent.request(method, &format!("{}{}", self.url, path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: transport error {e}"),
        }
    }

    /// Sends a request with a body of any bytes: (status, body bytes, content type).
    pub fn request_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<u8>, String) {
        let resp = self.send(method, path, body, headers);
        let status = resp.status();
        let content_type = resp.header("content-type").unwrap_or("").to_owned();
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(1 << 30)
            .read_to_end(&mut bytes)
            .expect("read body");
        (status, bytes, content_type)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, Some(&body.to_string()), &[])
    }

    pub fn patch(&self, path: &str, body: &Value) -> Reply {
        self.request("PATCH", path, Some(&body.to_string()), &[])
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None, &[])
    }

    /// Every memory visible through the list API (all namespaces), following cursors.
    pub fn list_all(&self, extra_query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/memories?limit=1000{extra_query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = self.get(&path);
            assert_eq!(r.status, 200, "list: {}", r.text);
            out.extend(
                r.body["memories"]
                    .as_array()
                    .expect("memories array")
                    .iter()
                    .cloned(),
            );
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Where `scripts/setup.sh` put the all-MiniLM-L6-v2 files (`ENGRAM_EMBEDDING_MODEL_DIR` overrides).
/// `us` (µs since the Unix epoch) as an RFC 3339 time in UTC, to the microsecond.
pub fn rfc3339(us: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .expect("a time this century")
        .format(&Rfc3339)
        .expect("formats")
}

/// An RFC 3339 time as the API writes it, in µs since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> i64 {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339).expect("an RFC 3339 time");
    i64::try_from(t.unix_timestamp_nanos() / 1000).expect("in range")
}

/// Now plus `ms` milliseconds (system clock), as [`rfc3339`] writes it.
pub fn rfc3339_in(ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    rfc3339(now + ms * 1000)
}

pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("ENGRAM_EMBEDDING_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/engram/models/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the embedding model is not in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// Polls `/metrics` until the HNSW graph holds every warm vector.
pub fn wait_for_vector_index(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = d.get("/metrics");
        let lagging = r
            .text
            .lines()
            .find(|l| l.starts_with("engram_vector_index_vectors{state=\"lagging\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        if lagging == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "vector index still {lagging} behind"
        );
        // Waiting for another process's background thread, bounded by the deadline.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls health until no memory waits for the embedder.
pub fn wait_for_embeddings(d: &Daemon, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let h = d.get("/api/v1/health");
        if h.body["embedding"]["pending"].as_u64() == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "embeddings still pending: {}",
            h.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A deterministic pseudo-random embedding for `seed`.
pub fn embedding(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dimensions)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// A request the stub saw: path, headers, JSON body.
pub type Seen = (String, String, Value);

/// A one-thread HTTP server (imitating a third-party service's wire format, e.g. an
/// embedding provider's) answering every request with `respond(path, headers, body)`.
pub fn stub_server(
    respond: impl Fn(&str, &str, &Value) -> (u16, Value) + Send + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let mut headers = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push_str(&line);
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, reply) = respond(&path, &headers, &body);
            log.lock().expect("log").push((path, headers, body));
            let text = reply.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

/// The vector a stand-in OpenAI-compatible provider ([`openai_stub`]) gives `text`: 24 numbers
/// from its bytes, so a test can compute what the provider answered.
pub fn stub_vector(text: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..24)
        .map(|i| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            ((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5 + (i % 3) as f32 * 0.01
        })
        .collect()
}

/// A stand-in for an OpenAI-compatible embeddings service (its wire format only), answering
/// every call with [`stub_vector`] of each input after `delay`; its URL.
pub fn openai_stub(delay: Duration) -> String {
    let (url, _seen) = stub_server(move |_, _, body| {
        std::thread::sleep(delay);
        let data: Vec<Value> = body["input"]
            .as_array()
            .expect("input")
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": stub_vector(t.as_str().expect("text"))}))
            .collect();
        (
            200,
            json!({"object": "list", "data": data, "model": body["model"]}),
        )
    });
    url
}

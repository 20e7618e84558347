//! `engram-client`: Engram's HTTP API from Rust.
//!
//! - [`Client`]: typed calls (`remember`, `recall`, `get`, `update`, `forget`, `batch`, `list`,
//!   `health`, snapshots, and a raw MCP post), each over a pooled keep-alive connection, with
//!   errors as [`Error`] and retries on 429 (after `Retry-After`), 503 and refused connections.
//! - [`Connection`]: one keep-alive HTTP/1.1 connection sending requests back to back, for load
//!   generators that must control their connections (`engram-bench`).
//!
//! Used by `engramctl` (`backup --url`, `mcp`) and `engram-bench`.

mod types;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;

pub use types::{
    BatchItem, Deleted, Health, ItemError, ListPage, ListQuery, Memory, NewMemory, SearchHit,
    SearchResults, Snapshot,
};

/// What the daemon said about a refused request.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    /// `INVALID_REQUEST`, `MEMORY_NOT_FOUND`, `DUPLICATE_CONTENT`, …
    pub code: String,
    pub message: String,
    /// The request field the error names, if any.
    pub field: Option<String>,
    pub request_id: Option<String>,
    pub details: Value,
    /// Seconds to wait (429).
    pub retry_after: Option<u64>,
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon answered with an error.
    #[error("{} {}: {}", .0.status, .0.code, .0.message)]
    Api(Box<ApiError>),
    /// No answer: the connection could not be opened or broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The URL is not one this client can use.
    #[error("bad URL {0:?}: only http://host:port is supported")]
    Url(String),
}

impl Error {
    /// What the daemon said, if it answered.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The daemon's error code, if the daemon answered.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|e| e.code.as_str())
    }

    /// The HTTP status, if the daemon answered.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|e| e.status)
    }

    fn from_answer(status: u16, body: &[u8], retry_after: Option<u64>) -> Error {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let e = &v["error"];
        Error::Api(Box::new(ApiError {
            status,
            code: e["code"].as_str().unwrap_or("").to_owned(),
            message: e["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect()),
            field: e["details"]["field"].as_str().map(str::to_owned),
            request_id: e["request_id"].as_str().map(str::to_owned),
            details: e["details"].clone(),
            retry_after,
        }))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// When to retry: 429 (after `Retry-After`, at most `max_backoff`), 503, and connections that
/// could not be opened; waits double from `backoff`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    fn delay(&self, attempt: u32, error: &Error) -> Duration {
        if let Some(s) = error.api().and_then(|e| e.retry_after) {
            return Duration::from_secs(s).min(self.max_backoff);
        }
        self.backoff
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_backoff)
    }
}

/// `host:port` of an `http://` URL (with or without a trailing `/`).
fn authority(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Error::Url(url.to_owned()))?
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(Error::Url(url.to_owned()));
    }
    Ok(rest.to_owned())
}

/// A typed client over a pool of keep-alive connections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    authority: String,
    api_key: Option<String>,
    retry: RetryPolicy,
    timeout: Duration,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

/// A raw answer: status, content type and body (for the MCP bridge).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Client {
    /// A client for the daemon at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Client> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Client {
            authority: authority(url)?,
            api_key: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(60),
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build(connector),
        })
    }

    /// Sends `Authorization: Bearer KEY` with every request.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Client {
        self.api_key = Some(key.into());
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Client {
        self.retry = retry;
        self
    }

    /// Longest one attempt may take (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The daemon's `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: &Bytes,
        headers: &[(&str, &str)],
    ) -> std::result::Result<RawAnswer, (Error, bool)> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{path}", self.authority))
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|e| (Error::Transport(e.to_string()), false))?;
        let sent = tokio::time::timeout(self.timeout, async {
            let resp = self.http.request(req).await.map_err(|e| {
                // Refused before anything was sent: safe to try again.
                let refused = e.is_connect();
                (Error::Transport(e.to_string()), refused)
            })?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let content_type = header("content-type");
            let retry_after = header("retry-after").and_then(|s| s.parse().ok());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| (Error::Transport(e.to_string()), false))?
                .to_bytes();
            Ok((status, content_type, retry_after, body))
        })
        .await
        .map_err(|_| {
            (
                Error::Transport(format!("no answer within {:?}", self.timeout)),
                false,
            )
        })??;
        let (status, content_type, retry_after, body) = sent;
        if status >= 400 && !path.starts_with("/mcp") {
            let e = Error::from_answer(status, &body, retry_after);
            let retry = status == 429 || status == 503;
            return Err((e, retry));
        }
        Ok(RawAnswer {
            status,
            content_type,
            body,
        })
    }

    /// Sends a request, retrying as the policy says; an error answer is [`Error::Api`] (except
    /// on `/mcp`, whose answers are returned as they are).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<RawAnswer> {
        let body = Bytes::from(body.unwrap_or_default());
        let mut attempt = 0;
        loop {
            match self.attempt(&method, path, &body, headers).await {
                Ok(a) => return Ok(a),
                Err((e, retry)) if retry && attempt < self.retry.max_retries => {
                    tokio::time::sleep(self.retry.delay(attempt, &e)).await;
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        let body = body
            .map(|b| serde_json::to_vec(b).map_err(|e| Error::Decode(e.to_string())))
            .transpose()?;
        let a = self.send(method, path, body, &[]).await?;
        serde_json::from_slice(&a.body).map_err(|e| {
            Error::Decode(format!(
                "{path}: {e}: {}",
                String::from_utf8_lossy(&a.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        })
    }

    /// Stores a memory.
    pub async fn remember(&self, memory: &NewMemory) -> Result<Memory> {
        self.json(Method::POST, "/api/v1/memories", Some(memory))
            .await
    }

    /// Searches: `request` is the body of `POST /api/v1/search` (see docs/api.md), e.g.
    /// `json!({"namespace": "agent-7", "query_text": "…", "limit": 5})`.
    pub async fn recall(&self, request: &Value) -> Result<SearchResults> {
        self.json(Method::POST, "/api/v1/search", Some(request))
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Memory> {
        self.json(Method::GET, &format!("/api/v1/memories/{id}"), None::<&()>)
            .await
    }

    /// Changes the fields `patch` names (`null` clears `expires_at`, `parent_id`, `embedding`).
    pub async fn update(&self, id: &str, patch: &Value) -> Result<Memory> {
        self.json(
            Method::PATCH,
            &format!("/api/v1/memories/{id}"),
            Some(patch),
        )
        .await
    }

    /// Soft-deletes a memory, or removes it for good with `purge`.
    pub async fn forget(&self, id: &str, purge: bool) -> Result<Deleted> {
        let q = if purge { "?purge=true" } else { "" };
        self.json(
            Method::DELETE,
            &format!("/api/v1/memories/{id}{q}"),
            None::<&()>,
        )
        .await
    }

    /// Stores up to 1,000 memories: one result per item, in order.
    pub async fn batch(&self, memories: &[NewMemory]) -> Result<Vec<BatchItem>> {
        #[derive(serde::Deserialize)]
        struct Out {
            results: Vec<BatchItem>,
        }
        let out: Out = self
            .json(
                Method::POST,
                "/api/v1/memories/batch",
                Some(&serde_json::json!({ "memories": memories })),
            )
            .await?;
        Ok(out.results)
    }

    /// One page of a list; pass `next_cursor` back in `query.cursor` for the next.
    pub async fn list_page(&self, query: &ListQuery) -> Result<ListPage> {
        self.json(
            Method::GET,
            &format!("/api/v1/memories{}", query.to_query_string()),
            None::<&()>,
        )
        .await
    }

    /// Every matching memory, following cursors.
    pub async fn list_all(&self, query: &ListQuery) -> Result<Vec<Memory>> {
        let mut q = query.clone();
        let mut out = Vec::new();
        loop {
            let page = self.list_page(&q).await?;
            out.extend(page.memories);
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// The health report. An unhealthy daemon answers 503, which is [`Error::Api`].
    pub async fn health(&self) -> Result<Health> {
        self.json(Method::GET, "/api/v1/health", None::<&()>).await
    }

    /// Takes an online snapshot (admin key).
    pub async fn create_snapshot(&self) -> Result<Snapshot> {
        self.json(Method::POST, "/api/v1/admin/snapshots", None::<&()>)
            .await
    }

    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        #[derive(serde::Deserialize)]
        struct Out {
            snapshots: Vec<Snapshot>,
        }
        let out: Out = self
            .json(Method::GET, "/api/v1/admin/snapshots", None::<&()>)
            .await?;
        Ok(out.snapshots)
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        let _: Value = self
            .json(
                Method::DELETE,
                &format!("/api/v1/admin/snapshots/{id}"),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    /// Every memory of `namespace` with its kept versions: the export stream as it is (JSON
    /// lines, or one zstd stream with `zstd`), for [`Client::import_namespace`] or a file that
    /// `engramctl import` reads.
    pub async fn export_namespace(&self, namespace: &str, zstd: bool) -> Result<Bytes> {
        self.export_namespace_with(namespace, zstd, false).await
    }

    /// [`Client::export_namespace`], with `base64_vectors`: vectors as `embedding_b64`
    /// (base64 of little-endian f32s; the header says `"engram_export":2`), about half the
    /// bytes and much faster to write and to read back.
    pub async fn export_namespace_with(
        &self,
        namespace: &str,
        zstd: bool,
        base64_vectors: bool,
    ) -> Result<Bytes> {
        let query = match (zstd, base64_vectors) {
            (false, false) => "",
            (true, false) => "?compress=zstd",
            (false, true) => "?embedding_format=base64",
            (true, true) => "?compress=zstd&embedding_format=base64",
        };
        let a = self
            .send(
                Method::GET,
                &format!("/api/v1/namespaces/{namespace}/export{query}"),
                None,
                &[],
            )
            .await?;
        Ok(a.body)
    }

    /// Stores an export into `namespace` (`on_conflict`: `skip`, `replace` or `fail`); the
    /// reply counts what was imported, replaced and skipped.
    pub async fn import_namespace(
        &self,
        namespace: &str,
        export: Vec<u8>,
        zstd: bool,
        on_conflict: &str,
    ) -> Result<Value> {
        let headers: &[(&str, &str)] = if zstd {
            &[("content-encoding", "zstd")]
        } else {
            &[]
        };
        let a = self
            .send(
                Method::POST,
                &format!("/api/v1/namespaces/{namespace}/import?on_conflict={on_conflict}"),
                Some(export),
                headers,
            )
            .await?;
        serde_json::from_slice(&a.body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Deletes every memory of `namespace`; with `purge`, removes them for good and scrubs the
    /// live data (admin key).
    pub async fn delete_namespace(&self, namespace: &str, purge: bool) -> Result<Value> {
        let path = if purge {
            format!("/api/v1/namespaces/{namespace}?purge=true")
        } else {
            format!("/api/v1/namespaces/{namespace}")
        };
        self.json(Method::DELETE, &path, None::<&()>).await
    }

    /// Posts one JSON-RPC message to `/mcp` and returns the answer as it is (status, content
    /// type, body), with `MCP-Protocol-Version` when given.
    pub async fn mcp(&self, message: Vec<u8>, protocol_version: Option<&str>) -> Result<RawAnswer> {
        let mut headers = vec![("accept", "application/json, text/event-stream")];
        if let Some(v) = protocol_version {
            headers.push(("mcp-protocol-version", v));
        }
        self.send(Method::POST, "/mcp", Some(message), &headers)
            .await
    }
}

/// One keep-alive HTTP/1.1 connection, requests sent back to back on it: what a load
/// generator needs to control how many connections it holds.
#[derive(Debug)]
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    api_key: Option<String>,
}

impl Connection {
    /// Opens a connection to `url` (`http://host:port`).
    pub async fn open(url: &str) -> Result<Connection> {
        let host = authority(url)?;
        let stream = TcpStream::connect(&host)
            .await
            .map_err(|e| Error::Transport(format!("connecting to {host}: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| Error::Transport(e.to_string()))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            host,
            api_key: None,
        })
    }

    /// Sends `Authorization: Bearer KEY` with every request.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Connection {
        self.api_key = Some(key.into());
        self
    }

    /// Sends a request and returns (status, body), whatever the status.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Bytes)> {
        self.sender
            .ready()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/json");
        if path == "/mcp" {
            req = req
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18");
        }
        if let Some(k) = &self.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = req
            .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
            .map_err(|e| Error::Transport(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends a request that must answer 200 and returns its JSON body; anything else is
    /// [`Error::Api`].
    pub async fn call(&mut self, method: &str, path: &str, body: Option<String>) -> Result<Value> {
        let (status, reply) = self.send(method, path, body).await?;
        if status != StatusCode::OK.as_u16() {
            return Err(Error::from_answer(status, &reply, None));
        }
        serde_json::from_slice(&reply).map_err(|e| Error::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            authority("http://127.0.0.1:3333/").expect("ok"),
            "127.0.0.1:3333"
        );
        assert!(authority("https://x").is_err());
        assert!(authority("http://x/api").is_err());
    }

    #[test]
    fn errors_read_the_daemon_body() {
        let e = Error::from_answer(
            400,
            br#"{"error":{"code":"INVALID_REQUEST","message":"importance_score must be between 0.0 and 1.0, got 2","details":{"field":"importance_score"},"request_id":"req-1"}}"#,
            None,
        );
        assert_eq!(e.code(), Some("INVALID_REQUEST"));
        let api = e.api().expect("an API error");
        assert_eq!(api.field.as_deref(), Some("importance_score"));
        assert_eq!(api.request_id.as_deref(), Some("req-1"));
        let e = Error::from_answer(502, b"bad gateway", None);
        assert_eq!((e.status(), e.code()), (Some(502), Some("")));
    }

    #[test]
    fn retry_waits_grow_and_honour_retry_after() {
        let p = RetryPolicy::default();
        let t = Error::Transport("x".into());
        assert_eq!(p.delay(0, &t), Duration::from_millis(100));
        assert_eq!(p.delay(2, &t), Duration::from_millis(400));
        assert_eq!(p.delay(30, &t), Duration::from_secs(5));
        let limited = Error::from_answer(429, b"{}", Some(2));
        assert_eq!(p.delay(0, &limited), Duration::from_secs(2));
    }
}

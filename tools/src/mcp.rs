//! `engramctl mcp`: MCP over stdio for clients that spawn a command. It reads JSON-RPC messages,
//! one per line, from stdin, posts each to a running daemon's `/mcp` endpoint (Streamable HTTP,
//! served statelessly) and writes the replies, one per line, to stdout. The daemon does all the
//! work; this process holds no engine and never opens a data directory.
//!
//! `--namespace` fills in the namespace of `remember`, `recall` and `list_memories` calls that
//! name none, so one agent configuration can be pointed at its own namespace.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

/// Tools whose calls take a `namespace` argument.
const NAMESPACED_TOOLS: &[&str] = &["remember", "recall", "list_memories"];
/// JSON-RPC error code for a failure of the HTTP hop (server-defined range).
const TRANSPORT_ERROR: i64 = -32000;

pub struct Bridge {
    client: engram_client::Client,
    namespace: Option<String>,
    /// The protocol version `initialize` settled on, sent on every later request.
    protocol_version: Option<String>,
    runtime: tokio::runtime::Runtime,
}

impl Bridge {
    pub fn new(
        url: &str,
        api_key: Option<String>,
        namespace: Option<String>,
    ) -> anyhow::Result<Bridge> {
        let mut client = engram_client::Client::new(url)?
            .with_timeout(Duration::from_secs(120))
            // Messages are not all safe to repeat: the MCP client decides about retries.
            .with_retry(engram_client::RetryPolicy::NONE);
        if let Some(k) = api_key {
            client = client.with_api_key(k);
        }
        Ok(Bridge {
            client,
            namespace,
            protocol_version: None,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// Serves `input` until it ends, writing replies to `output`.
    pub fn run(&mut self, input: impl BufRead, mut output: impl Write) -> anyhow::Result<()> {
        for line in input.lines() {
            let line = line.context("reading stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            for reply in self.forward(&line) {
                writeln!(output, "{reply}").context("writing stdout")?;
                output.flush().context("writing stdout")?;
            }
        }
        Ok(())
    }

    /// Forwards one message; the replies to write (none for a notification or a response).
    pub fn forward(&mut self, line: &str) -> Vec<String> {
        let mut message: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                return vec![json!({
                    "jsonrpc": "2.0",
                    "id": null,
                    "error": { "code": -32700, "message": format!("parse error: {e}") }
                })
                .to_string()]
            }
        };
        if !message.is_object() {
            return vec![json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": { "code": -32600, "message": "invalid request: a message is a JSON object" }
            })
            .to_string()];
        }
        let id = message.get("id").cloned();
        let is_request = id.is_some() && message.get("method").is_some();
        let is_initialize = message["method"] == "initialize";
        self.fill_namespace(&mut message);
        let fail = |detail: String| -> Vec<String> {
            match &id {
                Some(id) if is_request => vec![json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": { "code": TRANSPORT_ERROR, "message": detail }
                })
                .to_string()],
                _ => {
                    eprintln!("engramctl mcp: {detail}");
                    Vec::new()
                }
            }
        };
        let answer = match self.runtime.block_on(self.client.mcp(
            message.to_string().into_bytes(),
            self.protocol_version.as_deref(),
        )) {
            Ok(a) => a,
            Err(e) => {
                return fail(format!(
                    "cannot reach engramd at {}: {e}",
                    self.client.authority()
                ))
            }
        };
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        if answer.status >= 400 {
            // The daemon's REST-style error (401, 403, 429, 503) or rmcp's JSON-RPC error.
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                if v.get("jsonrpc").is_some() {
                    return vec![v.to_string()];
                }
                if let Some(m) = v["error"]["message"].as_str() {
                    return fail(format!("engramd answered {}: {m}", answer.status));
                }
            }
            return fail(format!("engramd answered {}: {body}", answer.status));
        }
        let event_stream = answer
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let replies: Vec<String> = if event_stream {
            body.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        } else if body.trim().is_empty() {
            Vec::new()
        } else {
            vec![body.trim().to_owned()]
        };
        if is_initialize {
            for r in &replies {
                if let Some(v) = serde_json::from_str::<Value>(r)
                    .ok()
                    .and_then(|v| v["result"]["protocolVersion"].as_str().map(str::to_owned))
                {
                    self.protocol_version = Some(v);
                }
            }
        }
        replies
    }

    fn fill_namespace(&self, message: &mut Value) {
        let Some(ns) = &self.namespace else {
            return;
        };
        if message["method"] != "tools/call" {
            return;
        }
        let params = &mut message["params"];
        let is_namespaced = params["name"]
            .as_str()
            .is_some_and(|n| NAMESPACED_TOOLS.contains(&n));
        if !is_namespaced {
            return;
        }
        if !params["arguments"].is_object() {
            params["arguments"] = json!({});
        }
        if let Some(args) = params["arguments"].as_object_mut() {
            args.entry("namespace").or_insert_with(|| json!(ns));
        }
    }
}

/// `engramctl mcp`: stdin/stdout until stdin closes.
pub fn serve_stdio(
    url: &str,
    api_key: Option<String>,
    namespace: Option<String>,
) -> anyhow::Result<()> {
    let mut bridge = Bridge::new(url, api_key, namespace)?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    bridge.run(stdin.lock(), stdout.lock())
}

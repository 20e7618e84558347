//! The MCP endpoint of a real engramd: raw JSON-RPC over Streamable HTTP (exact codes, fields,
//! auth, metrics), `engramctl mcp` over stdio, and the official Python SDK over both transports.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engram_tests::{engramctl_path, model_dir, Daemon};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "mcp-admin-key-1";
const TEAM_KEY: &str = "mcp-team-key-1";

fn keyed_settings() -> Vec<(&'static str, String)> {
    vec![("auth.api_keys", format!("{ADMIN_KEY},{TEAM_KEY}:team-a"))]
}

fn start(dir: &std::path::Path, local_model: bool) -> Daemon {
    let model = model_dir();
    let mut settings = keyed_settings();
    if local_model {
        settings.push(("embedding.provider", "local".to_owned()));
        settings.push((
            "embedding.model_dir",
            model.to_str().expect("utf-8 path").to_owned(),
        ));
    }
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start(&dir.join("data"), &settings)
}

/// One JSON-RPC exchange over HTTP: (status, body).
fn rpc(d: &Daemon, key: Option<&str>, message: &Value) -> (u16, Value) {
    let mut req = ureq::post(&format!("{}/mcp", d.url))
        .set("content-type", "application/json")
        .set("accept", "application/json, text/event-stream")
        .set("mcp-protocol-version", "2025-06-18");
    if let Some(k) = key {
        req = req.set("authorization", &format!("Bearer {k}"));
    }
    let (status, text) = match req.send_string(&message.to_string()) {
        Ok(r) => (r.status(), r.into_string().expect("body")),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().expect("body")),
        Err(e) => panic!("transport: {e}"),
    };
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn call(d: &Daemon, key: &str, tool: &str, args: Value) -> Value {
    let (status, body) = rpc(
        d,
        Some(key),
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": args}}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// A successful tool call's structured result.
fn ok(d: &Daemon, tool: &str, args: Value) -> Value {
    let body = call(d, ADMIN_KEY, tool, args);
    let result = &body["result"];
    assert_eq!(result["isError"], false, "{tool}: {body}");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().expect("text"))
        .expect("the text block is the JSON result");
    assert_eq!(result["structuredContent"], text, "the two forms agree");
    text
}

fn initialize(d: &Daemon) -> Value {
    let (status, body) = rpc(
        d,
        Some(ADMIN_KEY),
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "engram-tests", "version": "1"}
        }}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn tools_resources_errors_auth_and_metrics_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path(), false);

    let init = initialize(&d);
    assert_eq!(init["result"]["serverInfo"]["name"], "engram");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert!(init["result"]["capabilities"]["tools"].is_object());
    assert!(init["result"]["capabilities"]["resources"].is_object());

    let (_, tools) = rpc(
        &d,
        Some(ADMIN_KEY),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    let tools = tools["result"]["tools"].as_array().expect("tools").clone();
    let names: Vec<&str> = tools
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "remember",
            "recall",
            "get_memory",
            "memory_history",
            "update_memory",
            "forget",
            "list_memories",
            "memory_status"
        ]
    );
    for t in &tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert!(
            t["description"].as_str().expect("description").len() > 60,
            "{t}"
        );
    }
    let recall = &tools[1]["inputSchema"];
    assert_eq!(recall["required"], json!(["query"]));
    assert!(recall["properties"]["mode"]
        .to_string()
        .contains("semantic"));
    assert_eq!(tools[5]["annotations"]["destructiveHint"], true);

    // remember, and a duplicate that is not an error.
    let first = ok(
        &d,
        "remember",
        json!({"content": "The office wifi password rotates every Monday.", "namespace": "ops", "tags": ["it"], "importance": 0.7}),
    );
    assert_eq!(first["duplicate"], false);
    let id = first["id"].as_str().expect("id").to_owned();
    let dup = ok(
        &d,
        "remember",
        json!({"content": "The office wifi password rotates every Monday.", "namespace": "ops"}),
    );
    assert_eq!(
        (dup["duplicate"].clone(), dup["id"].clone()),
        (json!(true), json!(id))
    );
    // The REST API sees the same memory.
    let auth = format!("Bearer {ADMIN_KEY}");
    let rest = d.request(
        "GET",
        &format!("/api/v1/memories/{id}"),
        None,
        &[("authorization", &auth)],
    );
    assert_eq!(rest.status, 200);
    assert_eq!(
        rest.body["importance_score"]
            .as_f64()
            .map(|x| (x * 10.0).round()),
        Some(7.0)
    );
    assert_eq!(rest.body["namespace"], "ops");

    // recall by words (no embedder in this daemon: hybrid falls back to text, with a warning).
    let found = ok(
        &d,
        "recall",
        json!({"query": "wifi password", "namespace": "ops", "mode": "text"}),
    );
    assert_eq!(found["count"], 1);
    assert_eq!(found["memories"][0]["id"], json!(id));
    assert_eq!(found["memories"][0]["tags"], json!(["it"]));
    let filtered = ok(
        &d,
        "recall",
        json!({"query": "wifi password", "namespace": "ops", "mode": "text", "min_importance": 0.9}),
    );
    assert_eq!(filtered["count"], 0, "min_importance filters");

    // Invalid arguments: JSON-RPC invalid params naming the argument.
    for (tool, args, field) in [
        (
            "remember",
            json!({"content": "x", "importance": 7}),
            "importance",
        ),
        ("remember", json!({"content": "x", "ttl": "soon"}), "ttl"),
        (
            "remember",
            json!({"content": "x", "ttl": "1d", "expires_at": "2030-01-01T00:00:00Z"}),
            "ttl",
        ),
        (
            "remember",
            json!({"content": "x", "colour": "red"}),
            "colour",
        ),
        ("remember", json!({"content": 5}), "content"),
        (
            "remember",
            json!({"content": "x", "namespace": "bad namespace!"}),
            "namespace",
        ),
        ("recall", json!({"query": "x", "limit": 51}), "limit"),
        ("recall", json!({"query": "x", "mode": "telepathy"}), "mode"),
        (
            "recall",
            json!({"query": "x", "since": "last week"}),
            "since",
        ),
        ("get_memory", json!({"id": "nope"}), "id"),
        ("memory_history", json!({"id": id, "limit": 21}), "limit"),
        (
            "memory_history",
            json!({"id": id, "cursor": "zzz"}),
            "cursor",
        ),
        (
            "recall",
            json!({"query": "x", "as_of": "yesterday"}),
            "as_of",
        ),
        ("list_memories", json!({"limit": 0}), "limit"),
        ("list_memories", json!({"cursor": "zzz"}), "cursor"),
        ("update_memory", json!({"id": id}), "arguments"),
        (
            "update_memory",
            json!({"id": id, "importance": -1}),
            "importance",
        ),
        ("forget", json!({"id": "42"}), "id"),
        ("forget", json!({"id": id, "purge": "yes"}), "purge"),
        ("memory_status", json!({"verbose": true}), "verbose"),
    ] {
        let body = call(&d, ADMIN_KEY, tool, args.clone());
        assert_eq!(body["error"]["code"], -32602, "{tool} {args}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{tool} {args}: {message}");
    }
    let unknown = call(&d, ADMIN_KEY, "telepathy", json!({}));
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    // Operation failures: tool results with isError and the REST code.
    let missing = call(
        &d,
        ADMIN_KEY,
        "get_memory",
        json!({"id": "0190f0f0-0000-7000-8000-000000000000"}),
    );
    assert_eq!(missing["result"]["isError"], true, "{missing}");
    assert_eq!(
        missing["result"]["structuredContent"]["error"]["code"],
        "MEMORY_NOT_FOUND"
    );

    // update, list with cursors, forget (soft, then purge).
    let updated = ok(
        &d,
        "update_memory",
        json!({"id": id, "content": "The office wifi password rotates every Tuesday.", "tags": ["it", "office"]}),
    );
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["tags"], json!(["it", "office"]));
    // The history: newest first, what changed, the content each version had.
    let history = ok(&d, "memory_history", json!({"id": id}));
    let versions = history["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2, "{history}");
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(
        versions[0]["changed"],
        json!(["content", "tags"]),
        "{history}"
    );
    assert!(versions[0]["valid_to"].is_null());
    assert_eq!(versions[1]["version"], 1);
    assert_eq!(versions[1]["valid_to"], versions[0]["valid_from"]);
    assert_ne!(versions[1]["content"], updated["content"]);
    assert!(history["next_cursor"].is_null());
    let page = ok(&d, "memory_history", json!({"id": id, "limit": 1}));
    assert_eq!(page["versions"].as_array().map(Vec::len), Some(1));
    let older = ok(
        &d,
        "memory_history",
        json!({"id": id, "limit": 1, "cursor": page["next_cursor"]}),
    );
    assert_eq!(older["versions"][0]["version"], 1, "{older}");
    // Recall as of the first version's time finds what was remembered then.
    let then = ok(
        &d,
        "recall",
        json!({"query": "wifi password", "namespace": "ops", "mode": "text", "as_of": versions[1]["valid_from"]}),
    );
    assert_eq!(
        then["memories"][0]["content"], versions[1]["content"],
        "{then}"
    );
    for i in 0..4 {
        ok(
            &d,
            "remember",
            json!({"content": format!("ops note {i}"), "namespace": "ops"}),
        );
    }
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut args = json!({"namespace": "ops", "limit": 2});
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = ok(&d, "list_memories", args);
        seen.extend(
            page["memories"]
                .as_array()
                .expect("memories")
                .iter()
                .map(|m| m["id"].clone()),
        );
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen.len(), 5);
    let status = ok(&d, "memory_status", json!({}));
    assert_eq!(status["status"], "healthy");
    assert_eq!(status["tiers"]["working"], 5);
    assert_eq!(ok(&d, "forget", json!({"id": id}))["purged"], false);
    let purged = ok(&d, "forget", json!({"id": seen[1], "purge": true}));
    assert_eq!(purged["purged"], true);

    // Resources.
    let (_, listed) = rpc(
        &d,
        Some(ADMIN_KEY),
        &json!({"jsonrpc": "2.0", "id": 3, "method": "resources/list"}),
    );
    assert_eq!(
        listed["result"]["resources"][0]["uri"],
        "engram://namespaces"
    );
    let (_, templates) = rpc(
        &d,
        Some(ADMIN_KEY),
        &json!({"jsonrpc": "2.0", "id": 4, "method": "resources/templates/list"}),
    );
    assert_eq!(
        templates["result"]["resourceTemplates"][0]["uriTemplate"],
        "engram://memories/{id}"
    );
    let read = |key: &str, uri: &str| {
        rpc(
            &d,
            Some(key),
            &json!({"jsonrpc": "2.0", "id": 5, "method": "resources/read", "params": {"uri": uri}}),
        )
        .1
    };
    ok(
        &d,
        "remember",
        json!({"content": "team a retro notes", "namespace": "team-a"}),
    );
    let namespaces = read(ADMIN_KEY, "engram://namespaces");
    let text: Value = serde_json::from_str(
        namespaces["result"]["contents"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("json");
    assert_eq!(text["namespaces"], json!(["ops", "team-a"]));
    let team_view = read(TEAM_KEY, "engram://namespaces");
    let text: Value = serde_json::from_str(
        team_view["result"]["contents"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("json");
    assert_eq!(
        text["namespaces"],
        json!(["team-a"]),
        "a limited key sees its namespaces"
    );
    let one = read(
        ADMIN_KEY,
        &format!("engram://memories/{}", seen[2].as_str().expect("id")),
    );
    assert!(one["result"]["contents"][0]["text"]
        .as_str()
        .expect("text")
        .contains("ops note"));
    let nothing = read(
        ADMIN_KEY,
        "engram://memories/0190f0f0-0000-7000-8000-000000000000",
    );
    assert_eq!(nothing["error"]["code"], -32002, "{nothing}");
    let foreign = read(
        TEAM_KEY,
        &format!("engram://memories/{}", seen[2].as_str().expect("id")),
    );
    assert!(
        foreign["error"].is_object(),
        "a limited key cannot read another namespace: {foreign}"
    );

    // Auth: no key and a wrong key are refused before MCP; a limited key stays limited.
    let tools_list = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"});
    let (status, body) = rpc(&d, None, &tools_list);
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("UNAUTHORIZED"))
    );
    assert_eq!(rpc(&d, Some("wrong-key-123"), &tools_list).0, 401);
    let body = call(
        &d,
        TEAM_KEY,
        "remember",
        json!({"content": "not mine", "namespace": "ops"}),
    );
    assert_eq!(body["result"]["isError"], true);
    assert_eq!(
        body["result"]["structuredContent"]["error"]["code"],
        "FORBIDDEN"
    );
    let body = call(&d, TEAM_KEY, "list_memories", json!({}));
    assert_eq!(
        body["result"]["structuredContent"]["error"]["code"],
        "FORBIDDEN"
    );
    let body = call(
        &d,
        TEAM_KEY,
        "recall",
        json!({"query": "notes", "namespace": "team-a", "mode": "text"}),
    );
    assert_eq!(body["result"]["structuredContent"]["count"], 1, "{body}");

    // Metrics: the route and the per-tool counter.
    let metrics = d.get("/metrics").text;
    assert!(
        metrics.contains(r#"engram_http_requests_total{route="/mcp",status="200"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"engram_http_requests_total{route="/mcp",status="401"}"#));
    assert!(metrics.contains(r#"engram_mcp_tool_calls_total{outcome="ok",tool="remember"}"#));
    assert!(
        metrics.contains(r#"engram_mcp_tool_calls_total{outcome="invalid_params",tool="recall"}"#)
    );
    assert!(metrics.contains(r#"engram_mcp_tool_calls_total{outcome="error",tool="get_memory"}"#));
    assert!(
        metrics.contains(r#"engram_mcp_tool_calls_total{outcome="invalid_params",tool="unknown"}"#)
    );
    assert!(metrics.contains(r#"engram_memory_operations_total{operation="create"}"#));
}

/// `engramctl mcp` as an MCP client sees it: lines in, lines out, through the daemon.
#[test]
fn engramctl_mcp_bridges_stdio_to_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path(), false);
    let mut child = Command::new(engramctl_path())
        .args(["mcp", "--url", &d.url, "--namespace", "bridge"])
        .env("ENGRAM_API_KEY", ADMIN_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn engramctl mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    fn send(stdin: &mut impl Write, line: &str) {
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
    }
    fn receive(stdout: &mut impl BufRead) -> String {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        line
    }
    let mut exchange = |message: Value| -> Value {
        send(&mut stdin, &message.to_string());
        let line = receive(&mut stdout);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let init = exchange(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}
        }}),
    );
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["serverInfo"]["name"], "engram");
    // A notification gets no reply: the next line read is the answer to request 2.
    let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let stored_request = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "remember", "arguments": {"content": "bridged memory"}
    }});
    send(&mut stdin, &notification.to_string());
    send(&mut stdin, &stored_request.to_string());
    let stored: Value = serde_json::from_str(&receive(&mut stdout)).expect("json");
    let mut exchange = |message: Value| -> Value {
        send(&mut stdin, &message.to_string());
        let line = receive(&mut stdout);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };

    assert_eq!(stored["id"], 2, "the notification got no reply: {stored}");
    let id = stored["result"]["structuredContent"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let got = exchange(
        json!({"jsonrpc": "2.0", "id": "three", "method": "tools/call", "params": {
            "name": "get_memory", "arguments": {"id": id}
        }}),
    );
    assert_eq!(got["id"], "three");
    assert_eq!(
        got["result"]["structuredContent"]["namespace"], "bridge",
        "--namespace fills it in"
    );
    let bad = exchange(
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
            "name": "recall", "arguments": {"query": "x", "limit": 999}
        }}),
    );
    assert_eq!(bad["error"]["code"], -32602);
    let garbage = exchange(json!("not a message"));
    assert_eq!(garbage["error"]["code"], -32600, "{garbage}");
    send(&mut stdin, "{not json");
    let raw = receive(&mut stdout);
    assert!(raw.contains("-32700"), "{raw}");
    drop(stdin);
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "engramctl mcp exits cleanly when stdin closes"
    );

    // A wrong key: the bridge answers the request with an error naming the HTTP status.
    let out = Command::new(engramctl_path())
        .args(["mcp", "--url", &d.url, "--api-key", "wrong-key-123"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            writeln!(
                c.stdin.take().expect("stdin"),
                "{}",
                json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"})
            )?;
            c.wait_with_output()
        })
        .expect("run engramctl mcp");
    let reply: Value = serde_json::from_slice(&out.stdout).expect("one JSON reply");
    assert_eq!(reply["id"], 9);
    assert!(
        reply["error"]["message"]
            .as_str()
            .expect("message")
            .contains("401"),
        "{reply}"
    );
}

/// The official Rust SDK's client (rmcp) spawning `engramctl mcp`, as a code editor would.
#[test]
fn rmcp_client_over_stdio() {
    use rmcp::model::{CallToolRequestParams, ReadResourceRequestParams};
    use rmcp::transport::TokioChildProcess;
    use rmcp::ServiceExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path(), false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut cmd = tokio::process::Command::new(engramctl_path());
        cmd.args([
            "mcp",
            "--url",
            &d.url,
            "--api-key",
            ADMIN_KEY,
            "--namespace",
            "rmcp",
        ]);
        let client =
            ().serve(TokioChildProcess::new(cmd).expect("spawn engramctl mcp"))
                .await
                .expect("initialize");
        let info = client.peer_info().expect("server info");
        assert_eq!(
            info.server_info.as_ref().map(|i| i.name.as_str()),
            Some("engram")
        );
        let tools = client.list_all_tools().await.expect("tools/list");
        assert_eq!(tools.len(), 8);
        let args = |v: Value| v.as_object().expect("object").clone();
        let stored = client
            .call_tool(CallToolRequestParams::new("remember").with_arguments(args(
                json!({"content": "rmcp remembers the blue door", "tags": ["door"]}),
            )))
            .await
            .expect("remember");
        assert_eq!(stored.is_error, Some(false));
        let id = stored.structured_content.as_ref().expect("structured")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let found = client
            .call_tool(
                CallToolRequestParams::new("recall")
                    .with_arguments(args(json!({"query": "blue door", "mode": "text"}))),
            )
            .await
            .expect("recall");
        let found = found.structured_content.expect("structured");
        assert_eq!(found["memories"][0]["id"], json!(id), "{found}");
        let bad = client
            .call_tool(CallToolRequestParams::new("forget").with_arguments(args(json!({}))))
            .await
            .expect_err("forget without an id");
        assert!(bad.to_string().contains("id"), "{bad}");
        let resource = client
            .read_resource(ReadResourceRequestParams::new(format!(
                "engram://memories/{id}"
            )))
            .await
            .expect("read");
        assert_eq!(resource.contents.len(), 1);
        client.cancel().await.expect("close");
    });
}

/// rmcp's Streamable HTTP client transport needs an HTTP client; this one is engram-client
/// (rmcp's own is reqwest, which the workspace does not build).
#[derive(Clone)]
struct EngramHttp(engram_client::Client);

#[derive(Debug)]
struct EngramHttpError(String);

impl std::fmt::Display for EngramHttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EngramHttpError {}

impl rmcp::transport::streamable_http_client::StreamableHttpClient for EngramHttp {
    type Error = EngramHttpError;

    async fn post_message(
        &self,
        _uri: std::sync::Arc<str>,
        message: rmcp::model::ClientJsonRpcMessage,
        _session_id: Option<std::sync::Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: std::collections::HashMap<
            hyper::header::HeaderName,
            hyper::header::HeaderValue,
        >,
    ) -> Result<
        rmcp::transport::streamable_http_client::StreamableHttpPostResponse,
        rmcp::transport::streamable_http_client::StreamableHttpError<EngramHttpError>,
    > {
        use rmcp::transport::streamable_http_client::{
            StreamableHttpError, StreamableHttpPostResponse,
        };
        let body = serde_json::to_vec(&message)?;
        let extra: Vec<(String, String)> = custom_headers
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect();
        let mut headers = vec![("accept", "application/json, text/event-stream")];
        headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let answer = self
            .0
            .send(hyper::Method::POST, "/mcp", Some(body), &headers)
            .await
            .map_err(|e| StreamableHttpError::Client(EngramHttpError(e.to_string())))?;
        match answer.status {
            202 => Ok(StreamableHttpPostResponse::Accepted),
            200 => Ok(StreamableHttpPostResponse::Json(
                serde_json::from_slice(&answer.body)?,
                None,
            )),
            status => Err(StreamableHttpError::UnexpectedServerResponse(
                format!("{status}: {}", String::from_utf8_lossy(&answer.body)).into(),
            )),
        }
    }

    async fn delete_session(
        &self,
        _uri: std::sync::Arc<str>,
        _session_id: std::sync::Arc<str>,
        _auth_header: Option<String>,
        _custom_headers: std::collections::HashMap<
            hyper::header::HeaderName,
            hyper::header::HeaderValue,
        >,
    ) -> Result<(), rmcp::transport::streamable_http_client::StreamableHttpError<EngramHttpError>>
    {
        Ok(())
    }

    async fn get_stream(
        &self,
        _uri: std::sync::Arc<str>,
        _session_id: Option<std::sync::Arc<str>>,
        _last_event_id: Option<String>,
        _auth_header: Option<String>,
        _custom_headers: std::collections::HashMap<
            hyper::header::HeaderName,
            hyper::header::HeaderValue,
        >,
    ) -> Result<
        rmcp::transport::common::client_side_sse::BoxedSseResponse,
        rmcp::transport::streamable_http_client::StreamableHttpError<EngramHttpError>,
    > {
        // Stateless MCP: no server-to-client stream.
        Err(rmcp::transport::streamable_http_client::StreamableHttpError::ServerDoesNotSupportSse)
    }
}

/// The official Rust SDK's client (rmcp) over Streamable HTTP, straight to /mcp.
#[test]
fn rmcp_client_over_streamable_http() {
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::ServiceExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path(), false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let http = engram_client::Client::new(&d.url)
            .expect("url")
            .with_api_key(ADMIN_KEY);
        let transport = StreamableHttpClientTransport::with_client(
            EngramHttp(http),
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", d.url)),
        );
        let client = ().serve(transport).await.expect("initialize over HTTP");
        assert_eq!(
            client
                .peer_info()
                .and_then(|i| i.server_info.as_ref().map(|s| s.name.clone()))
                .as_deref(),
            Some("engram")
        );
        assert_eq!(client.list_all_tools().await.expect("tools").len(), 8);
        let args = |v: Value| v.as_object().expect("object").clone();
        let stored = client
            .call_tool(CallToolRequestParams::new("remember").with_arguments(args(
                json!({"content": "rmcp over http remembers the red kite", "namespace": "rmcp-http"}),
            )))
            .await
            .expect("remember");
        let id = stored.structured_content.expect("structured")["id"].clone();
        let again = client
            .call_tool(CallToolRequestParams::new("remember").with_arguments(args(
                json!({"content": "rmcp over http remembers the red kite", "namespace": "rmcp-http"}),
            )))
            .await
            .expect("duplicate remember");
        let again = again.structured_content.expect("structured");
        assert_eq!((again["duplicate"].clone(), again["id"].clone()), (json!(true), id.clone()));
        let found = client
            .call_tool(CallToolRequestParams::new("recall").with_arguments(args(
                json!({"query": "red kite", "namespace": "rmcp-http", "mode": "text"}),
            )))
            .await
            .expect("recall");
        assert_eq!(found.structured_content.expect("structured")["memories"][0]["id"], id);
        let bad = client
            .call_tool(CallToolRequestParams::new("recall").with_arguments(args(json!({"query": 7}))))
            .await
            .expect_err("a number is not a query");
        assert!(bad.to_string().contains("query"), "{bad}");
        client.cancel().await.expect("close");
    });
}

/// The official Python SDK over Streamable HTTP and over `engramctl mcp`, with the local model
/// so that recall finds by meaning (tests/python/mcp_sdk_client.py holds the checks).
#[test]
fn mcp_python_sdk() {
    let venv = std::env::var("ENGRAM_VENV").unwrap_or_else(|_| {
        let home = std::env::var("HOME").expect("HOME");
        format!("{home}/.cache/engram/venv")
    });
    let python = format!("{venv}/bin/python");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(dir.path(), true);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mcp_sdk_client.py");
    let started = Instant::now();
    let out = Command::new(&python)
        .arg(&script)
        .args([&d.url, ADMIN_KEY, TEAM_KEY])
        .arg(engramctl_path())
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("run {python} (scripts/setup.sh makes this venv): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python SDK client failed after {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\ndaemon:\n{}",
        started.elapsed(),
        d.log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(300));
}

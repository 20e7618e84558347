//! The Model Context Protocol endpoint, `/mcp` on engramd's own listener: rmcp's Streamable HTTP
//! transport, served statelessly with JSON replies (every POST carries one JSON-RPC message and
//! gets its answer in the response body, so no session state lives in the daemon).
//!
//! The HTTP side (`http::serve`) authenticates and rate-limits the request exactly as for the
//! REST API, then hands it here with a [`Caller`] in the request's extensions; rmcp passes the
//! request parts on to the handler, which reads the caller back. Arguments that are not what a
//! tool takes are JSON-RPC invalid-params errors naming the argument; a failure of the operation
//! itself is a tool result with `isError` and the REST API's code and message.

pub mod tools;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::config::Role;

use crate::api::{self, MemoryOut};
use crate::config::ApiKey;
use crate::error::ApiError;
use crate::handlers::memories;
use crate::http::body::BODY_READ_TIMEOUT;
use crate::http::AppState;
use tools::TOOLS;

/// URI of the resource listing the namespaces a caller may read.
pub const NAMESPACES_URI: &str = "engram://namespaces";
/// URI template of one memory.
pub const MEMORY_URI_TEMPLATE: &str = "engram://memories/{id}";
const MEMORY_URI_PREFIX: &str = "engram://memories/";

/// Who is calling, put in the HTTP request's extensions by the HTTP layer.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub state: Arc<AppState>,
    pub key: Option<ApiKey>,
}

/// The `/mcp` endpoint.
pub(crate) struct McpEndpoint {
    service: StreamableHttpService<EngramMcp, LocalSessionManager>,
}

impl std::fmt::Debug for McpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpEndpoint").finish_non_exhaustive()
    }
}

impl McpEndpoint {
    /// An endpoint for a daemon listening on `listen`, taking request bodies up to
    /// `max_body_bytes`.
    pub fn new(listen: std::net::SocketAddr, max_body_bytes: usize) -> McpEndpoint {
        let mut config = StreamableHttpServerConfig::default();
        config.legacy_session_mode = false;
        config.json_response = true;
        config.sse_keep_alive = None;
        config.max_request_body_bytes = max_body_bytes;
        // rmcp refuses Host headers that are not loopback names, against DNS rebinding of a
        // daemon on 127.0.0.1. A daemon listening on all interfaces is reached by whatever name
        // the network gives it (and is protected by API keys); one bound to a specific address
        // is also reached by that address.
        config = if listen.ip().is_unspecified() {
            config.disable_allowed_hosts()
        } else {
            let mut hosts = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            hosts.push(listen.ip().to_string());
            config.with_allowed_hosts(hosts)
        };
        McpEndpoint {
            service: StreamableHttpService::new(
                || Ok(EngramMcp),
                Arc::new(LocalSessionManager::default()),
                config,
            ),
        }
    }

    /// Serves one HTTP request to `/mcp` for an authenticated caller. rmcp reads the body
    /// itself, so the REST API's body timeout is applied to the whole exchange: a client that
    /// trickles its body cannot hold a connection for ever (tools answer in milliseconds).
    pub async fn serve(
        &self,
        mut req: Request<Incoming>,
        caller: Caller,
    ) -> Result<Response<BoxBody<Bytes, Infallible>>, ApiError> {
        req.extensions_mut().insert(caller);
        tokio::time::timeout(BODY_READ_TIMEOUT, self.service.handle(req))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "REQUEST_TIMEOUT",
                    format!(
                        "the MCP request was not received and answered within {} s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                )
            })
    }
}

/// The MCP server handler. Stateless: everything a call needs comes with its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngramMcp;

fn caller(context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
    context
        .extensions
        .get::<hyper::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("request without a caller", None))
}

/// Parses a tool's arguments; a mismatch is invalid-params naming the argument.
fn arguments<T: DeserializeOwned>(args: Option<rmcp::model::JsonObject>) -> Result<T, ErrorData> {
    let value = Value::Object(args.unwrap_or_default());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { None } else { Some(path) };
        let inner = e.into_inner().to_string();
        // serde names missing and unknown fields in its message; for wrong types the path does.
        let message = match &field {
            Some(f) => format!("{f}: {inner}"),
            None => inner,
        };
        ErrorData::invalid_params(message, Some(json!({ "field": field })))
    })
}

/// An API error as MCP reports it: an argument problem (400/413) is invalid-params naming the
/// argument; anything else is a tool result with `isError`, carrying the REST code and message.
fn tool_failure(e: ApiError) -> Result<CallToolResult, ErrorData> {
    if e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::PAYLOAD_TOO_LARGE {
        let mut data = e.details.clone();
        if let Some(o) = data.as_object_mut() {
            o.insert("code".to_owned(), Value::from(e.code));
        }
        return Err(ErrorData::invalid_params(e.message, Some(data)));
    }
    let body = json!({
        "error": { "code": e.code, "message": e.message, "details": e.details }
    });
    let mut result = CallToolResult::error(vec![ContentBlock::text(body.to_string())]);
    result.structured_content = Some(body);
    Ok(result)
}

fn tool_success(value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    result.structured_content = Some(value);
    result
}

/// The tools as `tools/list` shows them, built once (rmcp also asks for a tool by name on
/// every call).
fn tool_list() -> &'static [Tool] {
    static LIST: std::sync::OnceLock<Vec<Tool>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        TOOLS
            .iter()
            .map(|t| {
                let schema = (t.schema)().expect("tool argument types have object schemas");
                Tool::new(t.name, t.description, schema)
                    .with_title(t.title)
                    .with_annotations(
                        ToolAnnotations::new()
                            .read_only(t.read_only)
                            .destructive(t.destructive)
                            .open_world(false),
                    )
            })
            .collect()
    })
}

impl EngramMcp {
    async fn call(
        &self,
        request: CallToolRequestParams,
        caller: &Caller,
    ) -> Result<CallToolResult, ErrorData> {
        let state = &caller.state;
        let key = caller.key.as_ref();
        let args = request.arguments;
        let needed = match request.name.as_ref() {
            "remember" | "update_memory" | "forget" => Role::Write,
            _ => Role::Read,
        };
        let allowed =
            crate::http::auth::require(key, needed, || format!("the {} tool", request.name));
        let outcome = match request.name.as_ref() {
            _ if allowed.is_err() => allowed.map(|()| Value::Null),
            "remember" => tools::remember(state, key, arguments(args)?).await,
            "recall" => tools::recall(state, key, arguments(args)?).await,
            "get_memory" => tools::get_memory(state, key, arguments(args)?).await,
            "memory_history" => tools::memory_history(state, key, arguments(args)?).await,
            "update_memory" => tools::update_memory(state, key, arguments(args)?).await,
            "forget" => tools::forget(state, key, arguments(args)?).await,
            "list_memories" => tools::list_memories(state, key, arguments(args)?).await,
            "memory_status" => {
                let _: tools::StatusArgs = arguments(args)?;
                tools::memory_status(state)
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool named {other:?}"),
                    Some(json!({ "field": "name" })),
                ))
            }
        };
        match outcome {
            Ok(v) => Ok(tool_success(v)),
            Err(e) => tool_failure(e),
        }
    }

    async fn read(&self, uri: &str, caller: &Caller) -> Result<ReadResourceResult, ErrorData> {
        let key = caller.key.as_ref();
        let text = if uri == NAMESPACES_URI {
            let engine = Arc::clone(&caller.state.engine);
            let all = crate::http::body::blocking(move || engine.namespaces())
                .await
                .map_err(resource_error)?
                .map_err(|e| resource_error(ApiError::from(e)))?;
            let visible: Vec<String> = all
                .into_iter()
                .filter(|ns| key.is_none_or(|k| k.allows(ns)))
                .collect();
            json!({ "namespaces": visible }).to_string()
        } else if let Some(id) = uri.strip_prefix(MEMORY_URI_PREFIX) {
            let id = api::parse_id("id", id).map_err(resource_error)?;
            let m = memories::get_one(&caller.state, id, key)
                .await
                .map_err(resource_error)?;
            serde_json::to_string(&MemoryOut::new(m, None)).expect("memories serialize")
        } else {
            return Err(ErrorData::resource_not_found(
                format!("no resource {uri:?}; see resources/list and resources/templates/list"),
                Some(json!({ "uri": uri })),
            ));
        };
        Ok(ReadResourceResult::new(vec![ResourceContents::text(
            text, uri,
        )
        .with_mime_type("application/json")]))
    }
}

/// An API error while reading a resource: not found (and, as for any resource a key may not
/// see, forbidden) is resource-not-found, a bad id invalid params, anything else the REST code
/// and message as an internal error.
fn resource_error(e: ApiError) -> ErrorData {
    let data = Some(json!({ "code": e.code, "details": e.details }));
    match e.status {
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => {
            ErrorData::resource_not_found(e.message, data)
        }
        StatusCode::BAD_REQUEST => ErrorData::invalid_params(e.message, data),
        _ => ErrorData::internal_error(e.message, data),
    }
}

impl ServerHandler for EngramMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("engram", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Engram is long-term memory. Call `recall` before answering anything that may \
             depend on earlier conversations; call `remember` when you learn something worth \
             keeping (a fact, preference, decision or event), one self-contained statement per \
             memory. Use one namespace per user or project.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tool_list().to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tool_list().iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = caller(&context)?;
        let tool = request.name.to_string();
        let result = self.call(request, &caller).await;
        let outcome = match &result {
            Ok(r) if r.is_error == Some(true) => "error",
            Ok(_) => "ok",
            Err(_) => "invalid_params",
        };
        // Unknown names are counted under one label, so a client cannot grow the series.
        let label = if TOOLS.iter().any(|t| t.name == tool) {
            tool.as_str()
        } else {
            "unknown"
        };
        caller
            .state
            .metrics
            .mcp_tool_calls
            .with_label_values(&[label, outcome])
            .inc();
        result.map(CallToolResponse::from)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new(
            NAMESPACES_URI,
            "namespaces",
        )
        .with_description("The namespaces that hold memories (those this API key may read).")
        .with_mime_type("application/json")]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(MEMORY_URI_TEMPLATE, "memory")
                .with_description("One memory by id, with all its fields.")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller = caller(&context)?;
        self.read(&request.uri, &caller)
            .await
            .map(ReadResourceResponse::from)
    }
}

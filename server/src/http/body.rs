//! Reading a request: query parameters, the body (bounded, with a drain before 413), JSON
//! parsing that names the failing field, and running engine calls on blocking threads.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::Object;
use crate::error::ApiError;

/// Most bytes of an oversized body read and thrown away before answering 413.
const MAX_DRAIN_BYTES: u64 = 256 << 20;
/// A client has this long to send a whole body (the largest, a 64 MiB batch, takes well under
/// a second on loopback), so a stalled upload cannot hold a connection and its buffer for ever.
pub(crate) const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Query parameters, each allowed at most once; unknown names are refused per route.
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Result<Query, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ApiError::invalid(&k, "is given more than once"));
            }
        }
        Ok(Query(map))
    }

    pub(crate) fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(
                k,
                format!(
                    "is not a query parameter here (allowed: {})",
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub(crate) fn flag(&self, k: &'static str) -> Result<bool, ApiError> {
        match self.get(k) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(ApiError::invalid(
                k,
                format!("must be true or false, got {other:?}"),
            )),
        }
    }
}

/// Reads the body up to `limit` bytes. A larger body is read on and discarded (up to
/// [`MAX_DRAIN_BYTES`]) before the 413, so a client still sending gets the answer rather than a
/// reset connection.
pub(crate) async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    tokio::time::timeout(BODY_READ_TIMEOUT, read_body_untimed(req, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                format!(
                    "the body was not received within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
        })?
}

async fn read_body_untimed(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    let mut buf =
        bytes::BytesMut::with_capacity(declared.map_or(8192, |d| d.min(limit as u64) as usize));
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::invalid("body", format!("could not be read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen <= limit as u64 {
                buf.extend_from_slice(&data);
            } else if seen > MAX_DRAIN_BYTES {
                break;
            }
        }
    }
    if seen > limit as u64 {
        let size = declared.unwrap_or(seen);
        return Err(ApiError::too_large(
            "body",
            format!("is {size} bytes; the limit is {limit}"),
        ));
    }
    Ok(buf.freeze())
}

/// Reads the rest of a body and drops it (up to [`MAX_DRAIN_BYTES`], each frame within
/// [`BODY_READ_TIMEOUT`]): a request refused before its body was read is answered to a client
/// that is still sending, instead of resetting the connection under it.
pub(crate) async fn drain(body: &mut Incoming) {
    let mut seen = 0u64;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(BODY_READ_TIMEOUT, body.frame()).await {
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > MAX_DRAIN_BYTES {
                return;
            }
        }
    }
}

/// Parses a JSON body. The fast path is plain serde_json; only a failing body is parsed again
/// with path tracking, to name the field in the error.
/// Every body is a JSON object: an array is refused even where serde would read it as a struct's
/// fields in order.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(Object(value)) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Object(value): Object<T> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // "." is the whole body; "?" a position the path tracker could not name.
        let path = match e.path().to_string() {
            p if p == "?" => ".".to_owned(),
            p => p,
        };
        let inner = e.into_inner();
        if (inner.is_syntax() || inner.is_eof()) && path == "." {
            ApiError::invalid("body", format!("is not valid JSON: {inner}"))
        } else if inner.is_syntax() {
            ApiError::invalid(&path, format!("is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::invalid("body", inner)
        } else {
            ApiError::invalid(&path, inner)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(
            "body",
            format!("has trailing characters after the JSON value: {e}"),
        )
    })?;
    Ok(value)
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "engine task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "engine task failed",
        )
    })
}

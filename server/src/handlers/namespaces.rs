//! Whole namespaces: the list with counts per tier, one namespace, and deleting or purging all
//! of one.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::api::check_namespace;
use crate::api::namespaces::{NamespaceDeletedOut, NamespaceOut, NamespacesOut};
use crate::config::{ApiKey, Role};
use crate::error::ApiError;
use crate::handlers::memories::{actor_header, count};
use crate::http::auth::{authorize, require};
use crate::http::body::{blocking, Query};
use crate::http::{json_reply, AppState, Reply};

fn not_found(namespace: &str) -> ApiError {
    ApiError {
        details: serde_json::json!({ "namespace": namespace }),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "NAMESPACE_NOT_FOUND",
            format!("namespace {namespace:?} holds no memory"),
        )
    }
}

pub(crate) async fn list(state: &Arc<AppState>, key: Option<&ApiKey>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let counts = blocking(move || engine.namespace_counts(None)).await??;
    let namespaces = counts
        .into_iter()
        .filter(|c| key.is_none_or(|k| k.allows(&c.namespace)))
        .map(NamespaceOut::from)
        .collect();
    Ok(json_reply(StatusCode::OK, &NamespacesOut { namespaces }))
}

pub(crate) async fn get(
    state: &Arc<AppState>,
    namespace: &str,
    key: Option<&ApiKey>,
) -> Result<Reply, ApiError> {
    check_namespace(namespace)?;
    authorize(key, namespace)?;
    let engine = Arc::clone(&state.engine);
    let ns = namespace.to_owned();
    let counts = blocking(move || engine.namespace_counts(Some(&ns))).await??;
    let one = counts
        .into_iter()
        .next()
        .ok_or_else(|| not_found(namespace))?;
    Ok(json_reply(StatusCode::OK, &NamespaceOut::from(one)))
}

/// Deletes every memory of the namespace (soft, as single deletes), or with `purge=true` (an
/// admin key) purges them with their versions and scrubs the live data files.
pub(crate) async fn delete(
    state: &Arc<AppState>,
    req: &Request<Incoming>,
    namespace: &str,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    check_namespace(namespace)?;
    authorize(key, namespace)?;
    let purge = query.flag("purge")?;
    if purge {
        require(key, Role::Admin, || "purging a namespace".to_owned())?;
    }
    let actor = actor_header(req.headers())?;
    let engine = Arc::clone(&state.engine);
    let ns = namespace.to_owned();
    let exists = {
        let engine = Arc::clone(&engine);
        let ns = ns.clone();
        blocking(move || engine.namespace_counts(Some(&ns))).await??
    };
    if exists.is_empty() {
        return Err(not_found(namespace));
    }
    let started = Instant::now();
    let out = if purge {
        let report = blocking(move || engine.purge_namespace(&ns)).await??;
        count(state, "namespace_purge");
        NamespaceDeletedOut::from(report)
    } else {
        let deleted = blocking(move || engine.delete_namespace(&ns, actor.as_deref())).await??;
        count(state, "namespace_delete");
        NamespaceDeletedOut {
            namespace: namespace.to_owned(),
            deleted: Some(deleted),
            purged: None,
            scrub: None,
            took_ms: started.elapsed().as_millis() as u64,
        }
    };
    Ok(json_reply(StatusCode::OK, &out))
}

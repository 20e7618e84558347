//! The web console: static files compiled into the binary (`server/console/`), served at
//! `/console` with validators for caching and headers that keep the pages to their own
//! origin. The pages call the public API with the user's key like any client; nothing here
//! reads the engine.

use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{HeaderMap, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::Reply;

/// One embedded file: its path under `/console/`, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $media:expr) => {
        Asset {
            path: $path,
            media_type: $media,
            bytes: include_bytes!(concat!("../console/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("chart.js", JS),
    asset!("metrics.js", JS),
    asset!("pages/overview.js", JS),
    asset!("pages/memories.js", JS),
    asset!("pages/search.js", JS),
    asset!("pages/tiers.js", JS),
    asset!("pages/backups.js", JS),
    asset!("pages/models.js", JS),
];

/// The pages load only their own files and talk only to this daemon; they cannot be framed.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Strong validators, one per asset: a hash of its bytes.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.bytes);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// The file at `path` (relative to `/console/`; empty for the page itself), or 304 when the
/// client's copy is current. Files are revalidated on every load (`no-cache`), so a new
/// binary's console is never mixed with an old one's cached modules.
pub(crate) fn serve(path: &str, headers: &HeaderMap) -> Result<Reply, ApiError> {
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ROUTE_NOT_FOUND",
            format!("no console file {path}"),
        ));
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(asset.bytes)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.media_type));
        r
    };
    let h = r.headers_mut();
    h.insert(
        ETAG,
        HeaderValue::from_str(etag).expect("a quoted hex digest is a valid header"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(r)
}

/// Bytes of the first load: the page, its stylesheet and every module it imports.
pub fn first_load_bytes() -> usize {
    ASSETS.iter().map(|a| a.bytes.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_pages_reference_is_embedded() {
        // Each `/console/…` or relative module path named in a page or module must be served.
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.bytes).expect("text assets");
            for quote in ['\'', '"'] {
                for piece in text.split(quote) {
                    let referenced = if let Some(p) = piece.strip_prefix("/console/") {
                        p.to_owned()
                    } else if let Some(p) = piece.strip_prefix("./") {
                        let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
                        if dir.is_empty() {
                            p.to_owned()
                        } else {
                            format!("{dir}/{p}")
                        }
                    } else if let Some(p) = piece.strip_prefix("../") {
                        p.to_owned()
                    } else {
                        continue;
                    };
                    if referenced.ends_with(".js")
                        || referenced.ends_with(".css")
                        || referenced.ends_with(".svg")
                    {
                        assert!(
                            ASSETS.iter().any(|a| a.path == referenced),
                            "{} references {referenced}, which is not embedded",
                            asset.path
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_current_copy_is_answered_304_and_others_the_file() {
        let r = serve("", &HeaderMap::new()).expect("index");
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()[ETAG].clone();
        assert_eq!(r.headers()[X_FRAME_OPTIONS], "DENY");
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, etag.clone());
        assert_eq!(
            serve("index.html", &h).expect("304").status(),
            StatusCode::NOT_MODIFIED
        );
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"stale\""));
        assert_eq!(
            serve("index.html", &h).expect("200").status(),
            StatusCode::OK
        );
        assert_eq!(
            serve("nope.js", &h).expect_err("404").status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_first_load_is_under_200_kb() {
        assert!(first_load_bytes() < 200_000, "{} bytes", first_load_bytes());
    }
}

//! The cheaper wire forms, against a real `engramd`: vectors as base64 of little-endian f32s
//! (`embedding_b64`, `query_embedding_b64`, `embedding_format=base64`) and `return=minimal`
//! replies (the `Prefer` header or the query parameter).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use engram_tests::{embedding, Daemon};
use serde_json::{json, Value};

const DIMS: usize = 8;

fn start() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &[("embedding.dimensions", "8")]);
    (dir, d)
}

/// Base64 of little-endian f32s, written here independently of the server's encoder.
fn b64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Vec<f32> {
    let bytes = STANDARD.decode(s).expect("base64");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn vectors_travel_as_base64_both_ways_bit_for_bit() {
    let (_dir, d) = start();
    // Values a decimal round trip would be tempted to shorten.
    let mut emb = embedding(7, DIMS);
    emb[0] = 0.1;
    emb[1] = -1.0e-30;
    emb[2] = 0.333_333_34;
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "sent as base64", "embedding_b64": b64(&emb)}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["has_embedding"], true);
    assert_eq!(r.body["embedding_status"], "ready");
    let id = r.body["id"]
        .as_str()
        .expect("as the API documents")
        .to_owned();

    // Out as base64: exactly the bits sent.
    let got = d.get(&format!(
        "/api/v1/memories/{id}?include_embedding=true&embedding_format=base64"
    ));
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(got.body.get("embedding").is_none(), "{}", got.text);
    let back = unb64(got.body["embedding_b64"].as_str().expect("embedding_b64"));
    assert_eq!(bits(&back), bits(&emb));
    // Out as numbers (the default form): the same vector.
    let got = d.get(&format!("/api/v1/memories/{id}?include_embedding=true"));
    let floats: Vec<f32> =
        serde_json::from_value(got.body["embedding"].clone()).expect("as the API documents");
    assert_eq!(bits(&floats), bits(&emb));
    assert!(got.body.get("embedding_b64").is_none());
    // The format alone includes nothing.
    let got = d.get(&format!("/api/v1/memories/{id}?embedding_format=base64"));
    assert!(got.body.get("embedding_b64").is_none() && got.body.get("embedding").is_none());

    // Batch items and updates take it too; list replies give it.
    let other = embedding(8, DIMS);
    let r = d.post(
        "/api/v1/memories/batch?include_embedding=true&embedding_format=base64",
        &json!({"memories": [
            {"content": "batch item as base64", "embedding_b64": b64(&other)},
            {"content": "batch item as numbers", "embedding": other},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    for item in r.body["results"].as_array().expect("as the API documents") {
        let v = unb64(item["embedding_b64"].as_str().expect("embedding_b64"));
        assert_eq!(bits(&v), bits(&other), "{item}");
    }
    let patched = embedding(9, DIMS);
    let r = d.patch(
        &format!("/api/v1/memories/{id}"),
        &json!({"embedding_b64": b64(&patched)}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 2);
    let listed = d.get("/api/v1/memories?include_embedding=true&embedding_format=base64");
    let mine = listed.body["memories"]
        .as_array()
        .expect("as the API documents")
        .iter()
        .find(|m| m["id"] == id.as_str())
        .expect("listed")
        .clone();
    assert_eq!(
        bits(&unb64(
            mine["embedding_b64"]
                .as_str()
                .expect("as the API documents")
        )),
        bits(&patched)
    );

    // Search by a base64 query vector ranks the same as by numbers, and returns base64 vectors.
    let by_numbers = d.post(
        "/api/v1/search",
        &json!({"search_type": "semantic", "query_embedding": patched}),
    );
    let by_b64 = d.post(
        "/api/v1/search",
        &json!({"search_type": "semantic", "query_embedding_b64": b64(&patched),
                "include_embedding": true, "embedding_format": "base64"}),
    );
    assert_eq!(by_b64.status, 200, "{}", by_b64.text);
    let ids = |r: &Value| -> Vec<String> {
        r["results"]
            .as_array()
            .expect("as the API documents")
            .iter()
            .map(|h| {
                h["memory"]["id"]
                    .as_str()
                    .expect("as the API documents")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(ids(&by_b64.body), ids(&by_numbers.body));
    let top = &by_b64.body["results"][0]["memory"];
    assert_eq!(top["id"], id.as_str());
    assert_eq!(
        bits(&unb64(
            top["embedding_b64"].as_str().expect("as the API documents")
        )),
        bits(&patched)
    );
}

#[test]
fn bad_base64_vectors_are_a_400_naming_the_field() {
    let (_dir, d) = start();
    let good = b64(&embedding(1, DIMS));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/api/v1/memories",
            json!({"content": "a", "embedding_b64": "***"}),
            "embedding_b64",
        ),
        (
            "/api/v1/memories",
            json!({"content": "b", "embedding_b64": b64(&embedding(1, 3))}),
            "embedding",
        ),
        (
            "/api/v1/memories",
            json!({"content": "c", "embedding_b64": STANDARD.encode([0u8; 6])}),
            "embedding_b64",
        ),
        (
            "/api/v1/memories",
            json!({"content": "d", "embedding_b64": b64(&[f32::NAN; DIMS])}),
            "embedding_b64",
        ),
        (
            "/api/v1/memories",
            json!({"content": "e", "embedding_b64": good, "embedding": embedding(1, DIMS)}),
            "embedding_b64",
        ),
        (
            "/api/v1/memories",
            json!({"content": "f", "embedding_b64": 12}),
            "embedding_b64",
        ),
        (
            "/api/v1/search",
            json!({"query_embedding_b64": "@@"}),
            "query_embedding_b64",
        ),
        (
            "/api/v1/search",
            json!({"query_embedding": embedding(1, DIMS), "embedding_format": "hex"}),
            "embedding_format",
        ),
        (
            "/api/v1/memories/batch",
            json!({"memories": [{"content": "g", "embedding_b64": "%%"}]}),
            "memories[0].embedding_b64",
        ),
    ];
    for (path, body, field) in cases {
        let r = d.post(path, &body);
        if path.ends_with("batch") {
            assert_eq!(r.status, 200, "{body}: {}", r.text);
            let item = &r.body["results"][0]["error"];
            assert_eq!(item["details"]["field"], field, "{body}: {}", r.text);
            continue;
        }
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(
            r.body["error"]["details"]["field"], field,
            "{body}: {}",
            r.text
        );
    }
    let r = d.get("/api/v1/memories?embedding_format=base32");
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["details"]["field"], "embedding_format");
    assert!(
        d.list_all("").is_empty(),
        "nothing was stored by a refused request"
    );
}

#[test]
fn return_minimal_answers_id_version_and_status_only() {
    let (_dir, d) = start();
    let minimal_keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .expect("as the API documents")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    let want = vec!["id".to_owned(), "status".to_owned(), "version".to_owned()];

    // By header (RFC 7240, among other preferences and with odd spacing and case).
    let r = d.request(
        "POST",
        "/api/v1/memories",
        Some(&json!({"content": "minimal by header", "embedding": embedding(1, DIMS)}).to_string()),
        &[("Prefer", "respond-async, RETURN = minimal; foo=bar")],
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(minimal_keys(&r.body), want, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.header("preference-applied"), Some("return=minimal"));
    let id = r.body["id"]
        .as_str()
        .expect("as the API documents")
        .to_owned();
    // It was stored whole.
    let got = d.get(&format!("/api/v1/memories/{id}"));
    assert_eq!(got.body["content"], "minimal by header");

    // By query, on an update and a batch.
    let r = d.patch(
        &format!("/api/v1/memories/{id}?return=minimal"),
        &json!({"importance_score": 0.9}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(minimal_keys(&r.body), want);
    assert_eq!(r.body["version"], 2);
    let r = d.post(
        "/api/v1/memories/batch?return=minimal",
        &json!({"memories": [{"content": "one"}, {"content": "minimal by header"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(minimal_keys(&r.body["results"][0]), want, "{}", r.text);
    assert_eq!(
        r.body["results"][1]["error"]["code"], "DUPLICATE_CONTENT",
        "a refused item still says why: {}",
        r.text
    );
    assert_eq!(r.header("preference-applied"), Some("return=minimal"));

    // Without the preference, or with the query overriding it, the whole memory comes back.
    let r = d.request(
        "POST",
        "/api/v1/memories?return=representation",
        Some(&json!({"content": "whole"}).to_string()),
        &[("Prefer", "return=minimal")],
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.body["content"], "whole");
    assert_eq!(r.header("preference-applied"), None);
    let r = d.post("/api/v1/memories?return=nothing", &json!({"content": "x"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"]["field"], "return");
}

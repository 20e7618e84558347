//! The v1 HTTP API contract, checked against a real `engramd` with real RocksDB and files.
//!
//! Each test starts its own daemon on a free port with a temp data directory and drives it over
//! HTTP: the memory lifecycle, batch create, cursor listing, every error code with the field it
//! names, auth and rate limiting, storage-full and poisoned states, and reported corruption.

use engram_tests::{embedding, Daemon};
use serde_json::{json, Value};

fn start(settings: &[(&str, &str)]) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), settings);
    (dir, d)
}

fn create(d: &Daemon, body: &Value) -> Value {
    let r = d.post("/api/v1/memories", body);
    assert_eq!(r.status, 201, "create: {}", r.text);
    r.body
}

#[test]
fn memory_lifecycle_create_get_update_delete_purge() {
    let (_dir, d) = start(&[("embedding.dimensions", "8")]);
    let emb = embedding(1, 8);
    let m = create(
        &d,
        &json!({
            "namespace": "agent-1",
            "content": "Caroline went to the LGBTQ support group",
            "embedding": emb,
            "importance_score": 0.8,
            "metadata": {"speaker": "Caroline", "session": 1},
            "tags": ["support", "caroline"],
            "created_at": "2023-05-08T13:56:00Z",
            "expires_at": "2030-01-01T00:00:00Z"
        }),
    );
    let id = m["id"].as_str().expect("id").to_owned();
    assert_eq!(uuid_version(&id), 7, "ids are UUIDv7");
    assert_eq!(m["namespace"], "agent-1");
    assert_eq!(m["tier"], "working");
    assert_eq!(m["status"], "active");
    assert_eq!(m["version"], 1);
    assert_eq!(m["created_at"], "2023-05-08T13:56:00Z");
    assert_eq!(m["expires_at"], "2030-01-01T00:00:00Z");
    assert_eq!(m["metadata"], json!({"speaker": "Caroline", "session": 1}));
    assert_eq!(
        m["content_hash"],
        sha256_hex("Caroline went to the LGBTQ support group")
    );
    assert!(m.get("embedding").is_none(), "embedding omitted by default");
    assert_eq!(m["has_embedding"], true);

    let got = d.get(&format!("/api/v1/memories/{id}?include_embedding=true"));
    assert_eq!(got.status, 200);
    let got_emb: Vec<f32> =
        serde_json::from_value(got.body["embedding"].clone()).expect("embedding");
    assert_eq!(got_emb, emb, "embedding round-trips exactly");
    assert_eq!(got.body["access_count"], 1, "a GET counts an access");
    assert!(got.body["last_accessed_at"].is_string());
    let again = d.get(&format!("/api/v1/memories/{id}"));
    assert_eq!(again.body["access_count"], 2);
    // A plain GET reads the memory without its vector, and still says it has one.
    assert_eq!(again.body["has_embedding"], true);
    assert!(again.body.get("embedding").is_none());
    assert_eq!(again.body["content"], m["content"]);

    let patched = d.patch(
        &format!("/api/v1/memories/{id}"),
        &json!({"importance_score": 0.3, "tags": ["x"], "expires_at": null}),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["version"], 2);
    assert_eq!(patched.body["importance_score"], 0.3);
    assert_eq!(patched.body["tags"], json!(["x"]));
    assert_eq!(patched.body["expires_at"], Value::Null);
    assert_eq!(
        patched.body["content"], m["content"],
        "unpatched fields stay"
    );

    let put = d.request(
        "PUT",
        &format!("/api/v1/memories/{id}"),
        Some(&json!({"content": "Caroline went to a support group"}).to_string()),
        &[],
    );
    assert_eq!(put.status, 200, "PUT is an alias of PATCH: {}", put.text);
    assert_eq!(put.body["version"], 3);
    assert_eq!(
        put.body["has_embedding"], false,
        "changing content drops the stale vector"
    );
    let plain = d.get(&format!("/api/v1/memories/{id}"));
    assert_eq!(plain.body["has_embedding"], false, "{}", plain.text);
    assert_eq!(
        put.body["content_hash"],
        sha256_hex("Caroline went to a support group")
    );

    let del = d.delete(&format!("/api/v1/memories/{id}"));
    assert_eq!(del.status, 200, "{}", del.text);
    assert_eq!(del.body["id"], id.as_str());
    assert!(del.body["deleted_at"].is_string());
    let soft = d.get(&format!("/api/v1/memories/{id}"));
    assert_eq!(soft.body["status"], "deleted");
    assert!(
        d.list_all("").is_empty(),
        "deleted memories are hidden from lists"
    );
    assert_eq!(d.list_all("&status=deleted").len(), 1);
    assert_eq!(
        d.delete(&format!("/api/v1/memories/{id}")).status,
        404,
        "deleting twice"
    );
    // The content is free again for a new memory once the old one is deleted.
    create(
        &d,
        &json!({"namespace": "agent-1", "content": "Caroline went to a support group"}),
    );

    let purge = d.delete(&format!("/api/v1/memories/{id}?purge=true"));
    assert_eq!(purge.status, 200, "{}", purge.text);
    let gone = d.get(&format!("/api/v1/memories/{id}"));
    assert_eq!(gone.status, 404);
    assert_eq!(gone.code(), "MEMORY_NOT_FOUND");
}

#[test]
fn duplicate_content_in_a_namespace_is_409_with_the_existing_id() {
    let (_dir, d) = start(&[]);
    let first = create(&d, &json!({"content": "same words"}));
    let dup = d.post("/api/v1/memories", &json!({"content": "same words"}));
    assert_eq!(dup.status, 409);
    assert_eq!(dup.code(), "DUPLICATE_CONTENT");
    assert_eq!(dup.body["error"]["details"]["existing_id"], first["id"]);
    // Another namespace may hold the same content.
    create(&d, &json!({"content": "same words", "namespace": "other"}));
    // Updating another memory to that content is a duplicate too.
    let second = create(&d, &json!({"content": "different words"}));
    let r = d.patch(
        &format!("/api/v1/memories/{}", second["id"].as_str().expect("id")),
        &json!({"content": "same words"}),
    );
    assert_eq!(r.status, 409, "{}", r.text);
}

#[test]
fn batch_create_reports_each_item() {
    let (_dir, d) = start(&[("embedding.dimensions", "4")]);
    create(&d, &json!({"content": "already here"}));
    let r = d.post(
        "/api/v1/memories/batch",
        &json!({"memories": [
            {"content": "one", "tags": ["b"]},
            {"content": "two", "embedding": [1, 2, 3]},
            {"content": "already here"},
            {"content": "three", "importance_score": 0.9},
            {"content": "one"}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["content"], "one");
    assert_eq!(results[1]["error"]["code"], "INVALID_REQUEST");
    assert_eq!(
        results[1]["error"]["details"]["field"],
        "memories[1].embedding"
    );
    assert_eq!(results[2]["error"]["code"], "DUPLICATE_CONTENT");
    assert_eq!(results[3]["importance_score"], 0.9);
    assert_eq!(
        results[4]["error"]["code"], "DUPLICATE_CONTENT",
        "duplicates inside one batch"
    );
    assert_eq!(d.list_all("").len(), 3);

    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"content": format!("m{i}")}))
        .collect();
    let r = d.post("/api/v1/memories/batch", &json!({ "memories": too_many }));
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"]["field"], "memories");
    let exactly: Vec<Value> = (0..1000)
        .map(|i| json!({"content": format!("m{i}")}))
        .collect();
    let r = d.post("/api/v1/memories/batch", &json!({ "memories": exactly }));
    assert_eq!(r.status, 200, "1000 is the limit");
    assert_eq!(d.list_all("").len(), 1003);
}

#[test]
fn list_cursor_walks_every_memory_exactly_once_with_filters() {
    let (_dir, d) = start(&[]);
    let mut ids = Vec::new();
    for i in 0..250 {
        let ns = if i % 3 == 0 { "a" } else { "b" };
        let tags = if i % 5 == 0 {
            json!(["five"])
        } else {
            json!([])
        };
        let m = create(
            &d,
            &json!({"namespace": ns, "content": format!("memory {i}"), "tags": tags}),
        );
        ids.push((m["id"].as_str().expect("id").to_owned(), ns));
    }
    // Walk with a small page size.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/memories?limit=7&cursor={c}"),
            None => "/api/v1/memories?limit=7".to_owned(),
        };
        let r = d.get(&path);
        assert_eq!(r.status, 200, "{}", r.text);
        for m in r.body["memories"].as_array().expect("array") {
            seen.push(m["id"].as_str().expect("id").to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(seen, expected, "every memory once, in creation order");
    let a = d.list_all("&namespace=a");
    assert_eq!(a.len(), ids.iter().filter(|(_, ns)| *ns == "a").count());
    assert!(a.iter().all(|m| m["namespace"] == "a"));
    assert_eq!(d.list_all("&tag=five").len(), 50);
    assert_eq!(d.list_all("&tier=working").len(), 250);
    assert_eq!(
        d.list_all("&tier=WARM").len(),
        0,
        "tier is case-insensitive"
    );
    assert_eq!(d.list_all("&status=archived").len(), 0);
}

#[test]
fn bad_input_gets_a_4xx_naming_the_field_and_changes_nothing() {
    let (_dir, d) = start(&[("embedding.dimensions", "4")]);
    let keep = create(&d, &json!({"content": "keep me", "tags": ["t"]}));
    let keep_id = keep["id"].as_str().expect("id").to_owned();
    let big = "x".repeat(1024 * 1024 + 1);
    let cases: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        (
            "POST",
            "/api/v1/memories",
            "{not json".into(),
            400,
            "INVALID_REQUEST",
            "body",
        ),
        (
            "POST",
            "/api/v1/memories",
            "[]".into(),
            400,
            "INVALID_REQUEST",
            "body",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({}).to_string(),
            400,
            "INVALID_REQUEST",
            "content",
        ),
        // serde reads a struct from an array of its fields in order; a body and every object
        // inside one must be an object (schemathesis found `[true]` accepted by migrate).
        (
            "POST",
            "/api/v1/memories",
            json!(["an array is not a memory"]).to_string(),
            400,
            "INVALID_REQUEST",
            "body",
        ),
        (
            "POST",
            "/api/v1/admin/migrate",
            json!([true]).to_string(),
            400,
            "INVALID_REQUEST",
            "body",
        ),
        (
            "PATCH",
            "/api/v1/memories/KEEP",
            json!(["changed"]).to_string(),
            400,
            "INVALID_REQUEST",
            "body",
        ),
        (
            "POST",
            "/api/v1/search",
            json!({"query_text": "a", "hybrid_weights": [1, 0, 0, 0]}).to_string(),
            400,
            "INVALID_REQUEST",
            "hybrid_weights",
        ),
        (
            "POST",
            "/api/v1/search",
            json!({"query_text": "a", "tags": [["t"]]}).to_string(),
            400,
            "INVALID_REQUEST",
            "tags",
        ),
        (
            "POST",
            "/api/v1/search",
            json!({"query_text": "a", "importance_range": [0, 1]}).to_string(),
            400,
            "INVALID_REQUEST",
            "importance_range",
        ),
        (
            "POST",
            "/api/v1/search",
            json!({"query_text": "a", "date_range": ["2020-01-01T00:00:00Z"]}).to_string(),
            400,
            "INVALID_REQUEST",
            "date_range",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": 5}).to_string(),
            400,
            "INVALID_REQUEST",
            "content",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": ""}).to_string(),
            400,
            "INVALID_REQUEST",
            "content",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "colour": "red"}).to_string(),
            400,
            "INVALID_REQUEST",
            "colour",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "importance_score": 1.5}).to_string(),
            400,
            "INVALID_REQUEST",
            "importance_score",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "importance_score": "high"}).to_string(),
            400,
            "INVALID_REQUEST",
            "importance_score",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "embedding": [0.0, 0.0, 0.0, 0.0]}).to_string(),
            400,
            "INVALID_REQUEST",
            "embedding",
        ),
        (
            "POST",
            "/api/v1/memories",
            r#"{"content":"a","embedding":[18446744073709551616,1,1,1]}"#.into(),
            400,
            "INVALID_REQUEST",
            "embedding",
        ),
        (
            "POST",
            "/api/v1/memories",
            r#"{"content":"a","importance_score":NaN}"#.into(),
            400,
            "INVALID_REQUEST",
            "importance_score",
        ),
        (
            "POST",
            "/api/v1/memories",
            r#"{"content":"a","importance_score":1e999}"#.into(),
            400,
            "INVALID_REQUEST",
            "importance_score",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "embedding": [1, 2, 3]}).to_string(),
            400,
            "INVALID_REQUEST",
            "embedding",
        ),
        (
            "POST",
            "/api/v1/memories",
            r#"{"content":"a","embedding":[1,2,3,1e39]}"#.into(),
            400,
            "INVALID_REQUEST",
            "embedding",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "embedding": [1, 2, "x", 4]}).to_string(),
            400,
            "INVALID_REQUEST",
            "embedding[2]",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "namespace": "has space"}).to_string(),
            400,
            "INVALID_REQUEST",
            "namespace",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "namespace": "n".repeat(129)}).to_string(),
            400,
            "INVALID_REQUEST",
            "namespace",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "metadata": [1]}).to_string(),
            400,
            "INVALID_REQUEST",
            "metadata",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "metadata": {"k": "v".repeat(65 * 1024)}}).to_string(),
            413,
            "CONTENT_TOO_LARGE",
            "metadata",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "tags": vec!["t"; 65]}).to_string(),
            400,
            "INVALID_REQUEST",
            "tags",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "tags": ["x".repeat(129)]}).to_string(),
            400,
            "INVALID_REQUEST",
            "tags",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "parent_id": "nope"}).to_string(),
            400,
            "INVALID_REQUEST",
            "parent_id",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": "a", "created_at": "yesterday"}).to_string(),
            400,
            "INVALID_REQUEST",
            "created_at",
        ),
        (
            "POST",
            "/api/v1/memories",
            json!({"content": big}).to_string(),
            413,
            "CONTENT_TOO_LARGE",
            "content",
        ),
        (
            "POST",
            "/api/v1/memories",
            format!("{{\"content\":\"{}\"}}", "y".repeat(9 << 20)),
            413,
            "CONTENT_TOO_LARGE",
            "body",
        ),
        (
            "GET",
            "/api/v1/memories/not-a-uuid",
            String::new(),
            400,
            "INVALID_REQUEST",
            "id",
        ),
        (
            "GET",
            "/api/v1/memories?limit=0",
            String::new(),
            400,
            "INVALID_REQUEST",
            "limit",
        ),
        (
            "GET",
            "/api/v1/memories?limit=1001",
            String::new(),
            400,
            "INVALID_REQUEST",
            "limit",
        ),
        (
            "GET",
            "/api/v1/memories?limit=ten",
            String::new(),
            400,
            "INVALID_REQUEST",
            "limit",
        ),
        (
            "GET",
            "/api/v1/memories?cursor=garbage",
            String::new(),
            400,
            "INVALID_REQUEST",
            "cursor",
        ),
        (
            "GET",
            "/api/v1/memories?tier=hot",
            String::new(),
            400,
            "INVALID_REQUEST",
            "tier",
        ),
        (
            "GET",
            "/api/v1/memories?status=gone",
            String::new(),
            400,
            "INVALID_REQUEST",
            "status",
        ),
        (
            "GET",
            "/api/v1/memories?sort=asc",
            String::new(),
            400,
            "INVALID_REQUEST",
            "sort",
        ),
        (
            "PATCH",
            "/api/v1/memories/KEEP",
            json!({}).to_string(),
            400,
            "INVALID_REQUEST",
            "body",
        ),
        (
            "PATCH",
            "/api/v1/memories/KEEP",
            json!({"tier": "lukewarm"}).to_string(),
            400,
            "INVALID_REQUEST",
            "tier",
        ),
        (
            "PATCH",
            "/api/v1/memories/KEEP",
            json!({"status": "gone"}).to_string(),
            400,
            "INVALID_REQUEST",
            "status",
        ),
        (
            "PATCH",
            "/api/v1/memories/KEEP",
            json!({"namespace": "elsewhere"}).to_string(),
            400,
            "INVALID_REQUEST",
            "namespace",
        ),
        (
            "PATCH",
            "/api/v1/memories/KEEP",
            json!({"importance_score": -0.1}).to_string(),
            400,
            "INVALID_REQUEST",
            "importance_score",
        ),
        (
            "PATCH",
            "/api/v1/memories/KEEP",
            json!({"tags": "t"}).to_string(),
            400,
            "INVALID_REQUEST",
            "tags",
        ),
        (
            "DELETE",
            "/api/v1/memories/KEEP?purge=maybe",
            String::new(),
            400,
            "INVALID_REQUEST",
            "purge",
        ),
        (
            "POST",
            "/api/v1/memories/batch",
            json!({"memories": []}).to_string(),
            400,
            "INVALID_REQUEST",
            "memories",
        ),
        (
            "POST",
            "/api/v1/memories/batch",
            json!({"items": []}).to_string(),
            400,
            "INVALID_REQUEST",
            "items",
        ),
    ];
    for (method, path, body, status, code, field) in &cases {
        let path = path.replace("KEEP", &keep_id);
        let r = d.request(
            method,
            &path,
            (!body.is_empty()).then_some(body.as_str()),
            &[],
        );
        assert_eq!(
            r.status,
            *status,
            "{method} {path} {}: {}",
            &body[..body.len().min(80)],
            r.text
        );
        assert_eq!(r.code(), *code, "{method} {path}: {}", r.text);
        let message = r.body["error"]["message"].as_str().expect("message");
        let named = r.body["error"]["details"]["field"].as_str().unwrap_or("");
        assert!(
            named.contains(field) || message.contains(field),
            "{method} {path}: error does not name {field}: {}",
            r.text
        );
        assert!(r.body["error"]["request_id"].is_string());
    }
    let missing = d.get(&format!("/api/v1/memories/{}", uuid_v7_like()));
    assert_eq!((missing.status, missing.code()), (404, "MEMORY_NOT_FOUND"));
    let route = d.get("/api/v2/nothing");
    assert_eq!((route.status, route.code()), (404, "ROUTE_NOT_FOUND"));
    let method = d.request("DELETE", "/api/v1/health", None, &[]);
    assert_eq!(method.status, 405);
    // A batch item that is an array is that item's error, in its place.
    let batch = d.request(
        "POST",
        "/api/v1/memories/batch",
        Some(&json!({"memories": [["an array is not a memory"]]}).to_string()),
        &[],
    );
    assert_eq!(batch.status, 200, "{}", batch.text);
    let item = &batch.body["results"][0]["error"];
    assert_eq!(item["code"], "INVALID_REQUEST", "{}", batch.text);
    assert_eq!(item["details"]["index"], 0, "{}", batch.text);
    // Nothing stored changed.
    let all = d.list_all("");
    assert_eq!(all.len(), 1);
    let kept = d.get(&format!("/api/v1/memories/{keep_id}"));
    assert_eq!(kept.body["version"], 1);
    assert_eq!(kept.body["tags"], json!(["t"]));
}

#[test]
fn api_keys_namespaces_and_rate_limit() {
    let (_dir, d) = start(&[
        ("auth.api_keys", "admin-key-123,agent-key-456:team-a|team-b"),
        ("rate_limit.requests_per_second", "5"),
        ("rate_limit.burst", "20"),
    ]);
    let admin = [("authorization", "Bearer admin-key-123")];
    let agent = [("x-api-key", "agent-key-456")];
    let body = json!({"content": "secret", "namespace": "team-c"}).to_string();
    let none = d.request("POST", "/api/v1/memories", Some(&body), &[]);
    assert_eq!((none.status, none.code()), (401, "UNAUTHORIZED"));
    let wrong = d.request(
        "POST",
        "/api/v1/memories",
        Some(&body),
        &[("x-api-key", "wrong-key-000")],
    );
    assert_eq!((wrong.status, wrong.code()), (401, "UNAUTHORIZED"));
    let forbidden = d.request("POST", "/api/v1/memories", Some(&body), &agent);
    assert_eq!((forbidden.status, forbidden.code()), (403, "FORBIDDEN"));
    let ok = d.request("POST", "/api/v1/memories", Some(&body), &admin);
    assert_eq!(ok.status, 201, "{}", ok.text);
    let id = ok.body["id"].as_str().expect("id");
    // Another namespace's memory by id is unknown to a limited key (no probing which ids
    // exist), for reads, updates and deletes alike.
    let read = d.request("GET", &format!("/api/v1/memories/{id}"), None, &agent);
    assert_eq!((read.status, read.code()), (404, "MEMORY_NOT_FOUND"));
    assert!(!read.text.contains("team-c"), "{}", read.text);
    let patch = d.request(
        "PATCH",
        &format!("/api/v1/memories/{id}"),
        Some(r#"{"tags":["x"]}"#),
        &agent,
    );
    assert_eq!(patch.status, 404);
    let delete = d.request("DELETE", &format!("/api/v1/memories/{id}"), None, &agent);
    assert_eq!(delete.status, 404);
    assert_eq!(
        d.request("GET", &format!("/api/v1/memories/{id}"), None, &admin)
            .body["version"],
        1,
        "untouched"
    );
    let list = d.request("GET", "/api/v1/memories", None, &agent);
    assert_eq!(list.status, 403, "a limited key must name a namespace");
    let list = d.request("GET", "/api/v1/memories?namespace=team-a", None, &agent);
    assert_eq!(list.status, 200);
    assert_eq!(d.get("/api/v1/health").status, 200, "health needs no key");
    // Exhaust the burst: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..60 {
        let r = d.request("GET", "/api/v1/memories?namespace=team-a", None, &agent);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the rate limit must trigger within 60 requests");
    assert_eq!(limited.code(), "RATE_LIMIT_EXCEEDED");
    assert!(limited.header("retry-after").is_some());
}

#[test]
fn low_disk_space_is_507_and_stores_nothing() {
    let (_dir, d) = start(&[("storage.min_free_disk_bytes", "9223372036854775807")]);
    let r = d.post("/api/v1/memories", &json!({"content": "no room"}));
    assert_eq!(
        (r.status, r.code()),
        (507, "INSUFFICIENT_STORAGE"),
        "{}",
        r.text
    );
    assert!(d.list_all("").is_empty());
    assert_eq!(d.get("/api/v1/health").status, 200, "reads still work");
}

#[test]
fn failed_fsync_poisons_writes_until_restart_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = Daemon::start_with_env(&data, &[], &[("ENGRAM_FAULT_FSYNC_FAIL_AFTER", "3")]);
    let mut acked = Vec::new();
    let mut poisoned = None;
    for i in 0..10 {
        let r = d.post(
            "/api/v1/memories",
            &json!({"content": format!("write {i}")}),
        );
        match r.status {
            201 => acked.push(r.body["id"].as_str().expect("id").to_owned()),
            _ => {
                poisoned = Some(r);
                break;
            }
        }
    }
    let r = poisoned.expect("the injected fsync failure must surface");
    assert_eq!(
        (r.status, r.code()),
        (503, "SERVICE_UNAVAILABLE"),
        "{}",
        r.text
    );
    assert_eq!(acked.len(), 3);
    let again = d.post("/api/v1/memories", &json!({"content": "after the failure"}));
    assert_eq!(
        again.status, 503,
        "writes stay refused: a failed fsync is never retried"
    );
    let health = d.get("/api/v1/health");
    assert_eq!(health.status, 503);
    assert_eq!(health.body["status"], "unhealthy");
    let metrics = d.get("/metrics");
    assert!(
        metrics.text.contains("engram_engine_poisoned 1"),
        "{}",
        metrics.text
    );
    for id in &acked {
        assert_eq!(
            d.get(&format!("/api/v1/memories/{id}")).status,
            200,
            "reads still work"
        );
    }
    d.kill9();
    let d = Daemon::start(&data, &[]);
    for id in &acked {
        assert_eq!(
            d.get(&format!("/api/v1/memories/{id}")).status,
            200,
            "acknowledged before the failure"
        );
    }
    assert_eq!(
        d.post("/api/v1/memories", &json!({"content": "healthy again"}))
            .status,
        201
    );
}

#[test]
fn corrupt_working_tier_bytes_are_a_500_never_data() {
    use std::os::unix::fs::FileExt;
    let (_dir, d) = start(&[]);
    let m = create(&d, &json!({"content": "the only memory on the heap"}));
    // The first heap entry starts at offset 0 of heap-0.bin: 8 bytes of header, then the image.
    let heap = d.data_dir.join("working").join("heap-0.bin");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&heap)
        .expect("heap file");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 30).expect("read");
    b[0] ^= 0x40;
    f.write_all_at(&b, 30).expect("flip a bit");
    let r = d.get(&format!(
        "/api/v1/memories/{}",
        m["id"].as_str().expect("id")
    ));
    assert_eq!((r.status, r.code()), (500, "INTERNAL_ERROR"), "{}", r.text);
    assert!(r.body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("checksum"));
}

#[test]
fn health_and_metrics_tell_the_truth() {
    let (_dir, d) = start(&[]);
    for i in 0..5 {
        create(&d, &json!({"content": format!("m{i}")}));
    }
    let h = d.get("/api/v1/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "healthy");
    assert_eq!(h.body["database_connected"], true);
    assert_eq!(h.body["embedding_service_available"], false);
    assert_eq!(h.body["tiers"]["working"], 5);
    assert!(h.body["wal"]["durable_lsn"].as_u64().expect("lsn") >= 5);
    assert!(h.body["version"].is_string());
    assert!(h.body["uptime_seconds"].is_u64());
    for path in ["/metrics", "/api/v1/metrics"] {
        let m = d.get(path);
        assert_eq!(m.status, 200);
        for needle in [
            "engram_memory_operations_total{operation=\"create\"} 5",
            "engram_http_request_duration_seconds_bucket{route=\"create\",status=\"201\"",
            "engram_http_requests_total{route=\"create\",status=\"201\"} 5",
            "engram_tier_memories{tier=\"working\"} 5",
            "engram_wal_fsync_duration_seconds_count",
            "engram_wal_durable_lsn",
            "engram_engine_checkpoints_total",
        ] {
            assert!(
                m.text.contains(needle),
                "{path} lacks {needle}:\n{}",
                m.text
            );
        }
    }
}

#[test]
fn full_working_tier_moves_the_least_valuable_to_warm() {
    let (_dir, d) = start(&[("working.capacity", "20"), ("embedding.dimensions", "4")]);
    let mut ids = Vec::new();
    for i in 0..60u64 {
        let importance = if i < 10 { 0.9 } else { 0.1 };
        let m = create(
            &d,
            &json!({"content": format!("m{i}"), "importance_score": importance, "embedding": embedding(i, 4)}),
        );
        ids.push(m["id"].as_str().expect("id").to_owned());
    }
    let h = d.get("/api/v1/health");
    let working = h.body["tiers"]["working"].as_u64().expect("count");
    let warm = h.body["tiers"]["warm"].as_u64().expect("count");
    assert!(working <= 20, "working {working}");
    assert_eq!(working + warm, 60);
    // The important ones stayed in the working tier.
    for id in &ids[..10] {
        assert_eq!(
            d.get(&format!("/api/v1/memories/{id}")).body["tier"],
            "working"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let r = d.get(&format!("/api/v1/memories/{id}?include_embedding=true"));
        assert_eq!(r.body["content"], format!("m{i}"));
        let e: Vec<f32> = serde_json::from_value(r.body["embedding"].clone()).expect("embedding");
        assert_eq!(e, embedding(i as u64, 4));
    }
    // A client can move a memory between working and warm.
    let low = &ids[59];
    let moved = d.patch(&format!("/api/v1/memories/{low}"), &json!({"tier": "warm"}));
    assert_eq!(moved.body["tier"], "warm", "{}", moved.text);
    assert_eq!(
        d.get(&format!("/api/v1/memories/{low}")).body["tier"],
        "warm"
    );
    assert_eq!(d.list_all("").len(), 60);
    assert_eq!(
        d.list_all("&tier=warm").len() as u64 + d.list_all("&tier=working").len() as u64,
        60
    );
}

fn uuid_version(id: &str) -> u32 {
    id.chars()
        .nth(14)
        .and_then(|c| c.to_digit(16))
        .expect("uuid version digit")
}

fn uuid_v7_like() -> String {
    "01890a5d-ac96-774b-bcce-b302099a8057".to_owned()
}

fn sha256_hex(s: &str) -> String {
    // Computed independently of the server with the system's sha256sum.
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8(out.stdout).expect("utf8")[..64].to_owned()
}

#[test]
fn the_test_clock_answers_only_when_switched_on_and_checks_its_input() {
    let (_dir, d) = start(&[]);
    let r = d.post("/api/v1/admin/test-clock", &json!({"advance_ms": 1000}));
    assert_eq!((r.status, r.code()), (404, "ROUTE_NOT_FOUND"), "{}", r.text);

    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with_env(
        &dir.path().join("data"),
        &[("embedding.dimensions", "4")],
        &[engram_tests::TEST_CLOCK],
    );
    for (body, field) in [
        (json!({"advance_ms": -5}), "advance_ms"),
        (json!({"advance_ms": 1e300}), "advance_ms"),
        (json!({"advance_ms": 31_622_400_001u64}), "advance_ms"),
        (json!({"advance_ms": 5, "backwards": true}), "backwards"),
    ] {
        let r = d.post("/api/v1/admin/test-clock", &body);
        assert_eq!(
            (r.status, r.code()),
            (400, "INVALID_REQUEST"),
            "{body}: {}",
            r.text
        );
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }
    let r = d.request("GET", "/api/v1/admin/test-clock", None, &[]);
    assert_eq!(r.status, 405, "{}", r.text);
    // Moves add up; the clock never goes back.
    for (advance, total) in [(3_600_000, 3_600_000), (0, 3_600_000), (500, 3_600_500)] {
        let r = d.post("/api/v1/admin/test-clock", &json!({"advance_ms": advance}));
        assert_eq!(r.status, 200, "{}", r.text);
        let ahead = r.body["ahead_ms"].as_i64().expect("ahead_ms");
        assert_eq!(ahead, total, "{}", r.text);
    }
}

#[test]
fn a_reachable_address_without_keys_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(engram_tests::engramd_path());
    cmd.args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ENGRAM_")) {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("engramd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("listen") && stderr.contains("auth.allow_unauthenticated"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn roles_limit_what_a_key_may_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let new_key = |role: &str, name: &str| -> Value {
        let out = engram_tests::ctl(&["key", "new", "--name", name, "--role", role, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let (reader, writer, admin) = (
        new_key("read", "dashboard"),
        new_key("write", "agent"),
        new_key("admin", "ops"),
    );
    let config = dir.path().join("engram.toml");
    let entries: String = [&reader, &writer, &admin]
        .iter()
        .map(|k| k["config"].as_str().expect("entry").to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !entries.contains(reader["key"].as_str().expect("key")),
        "no key in the clear"
    );
    std::fs::write(&config, format!("[embedding]\ndimensions = 4\n\n{entries}")).expect("write");
    let d = Daemon::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("ENGRAM_CONFIG", config.to_str().expect("utf8"))],
    );
    let as_key = |k: &Value, method: &str, path: &str, body: Option<&str>| {
        let bearer = format!("Bearer {}", k["key"].as_str().expect("key"));
        d.request(
            method,
            path,
            body,
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
        )
    };
    let create = r#"{"content":"a fact","embedding":[1,0,0,0]}"#;
    // read: get, list, search; not create.
    let r = as_key(&reader, "POST", "/api/v1/memories", Some(create));
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{}", r.text);
    assert_eq!(r.body["error"]["details"]["needed"], "write", "{}", r.text);
    // write: create and soft delete; not purge, not admin.
    let r = as_key(&writer, "POST", "/api/v1/memories", Some(create));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().expect("id").to_owned();
    let r = as_key(&reader, "GET", &format!("/api/v1/memories/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = as_key(
        &reader,
        "POST",
        "/api/v1/search",
        Some(r#"{"query_text":"fact"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = as_key(
        &writer,
        "DELETE",
        &format!("/api/v1/memories/{id}?purge=true"),
        None,
    );
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{}", r.text);
    let r = as_key(&writer, "POST", "/api/v1/admin/snapshots", Some("{}"));
    assert_eq!(r.status, 403, "{}", r.text);
    // Importing with replace purges what it replaces: admin only; exporting needs read.
    let line = r#"{"engram_export":1,"dimensions":4}"#;
    let r = as_key(
        &writer,
        "POST",
        "/api/v1/namespaces/default/import?on_conflict=replace",
        Some(line),
    );
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{}", r.text);
    let r = as_key(
        &writer,
        "POST",
        "/api/v1/namespaces/default/import",
        Some(line),
    );
    assert_eq!(r.status, 400, "a header alone holds no export: {}", r.text);
    let r = as_key(
        &reader,
        "POST",
        "/api/v1/namespaces/default/import",
        Some(line),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = as_key(&reader, "GET", "/api/v1/namespaces/default/export", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = as_key(&reader, "DELETE", &format!("/api/v1/memories/{id}"), None);
    assert_eq!(r.status, 403, "{}", r.text);
    // admin: purge and snapshots.
    let r = as_key(&admin, "POST", "/api/v1/admin/snapshots", Some("{}"));
    assert_eq!(r.status, 201, "{}", r.text);
    let r = as_key(
        &admin,
        "DELETE",
        &format!("/api/v1/memories/{id}?purge=true"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // MCP: a read key may recall but not remember.
    let call = |tool: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}})
            .to_string()
    };
    let mcp = |k: &Value, body: &str| {
        let bearer = format!("Bearer {}", k["key"].as_str().expect("key"));
        d.request(
            "POST",
            "/mcp",
            Some(body),
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ],
        )
    };
    let r = mcp(
        &reader,
        &call("remember", json!({"content": "not allowed"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["result"]["isError"], true, "{}", r.text);
    assert!(r.text.contains("needs a write key"), "{}", r.text);
    let r = mcp(&reader, &call("recall", json!({"query": "fact"})));
    assert_eq!(r.body["result"]["isError"], false, "{}", r.text);
    // One character more is another key, and unknown.
    let r = d.request(
        "GET",
        "/api/v1/memories",
        None,
        &[(
            "x-api-key",
            &format!("{}x", reader["key"].as_str().expect("key")),
        )],
    );
    assert_eq!(r.status, 401, "{}", r.text);
}

/// Sends raw bytes on a fresh connection; returns the status line's code (0 when the daemon
/// closed the connection without answering) and the whole reply.
fn raw(d: &Daemon, request: &[u8]) -> (u16, String) {
    raw_then(d, request, false)
}

/// As [`raw`]; with `hang_up`, the client closes its side once it has sent the bytes.
fn raw_then(d: &Daemon, request: &[u8], hang_up: bool) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = d.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    // The daemon may answer (and close) before it has read everything.
    let _ = s.write_all(request);
    if hang_up {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn post_raw(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn hostile_requests_get_a_4xx_and_change_nothing() {
    let (_dir, d) = start(&[("embedding.dimensions", "4")]);
    let keep = create(&d, &json!({"content": "keep me"}));
    // Invalid UTF-8 inside a JSON string, and as the whole body.
    let mut bad_utf8 = b"{\"content\": \"caf".to_vec();
    bad_utf8.extend_from_slice(&[0xc3, 0x28, 0xff]);
    bad_utf8.extend_from_slice(b"\"}");
    // Nesting far past any parser's recursion limit, in metadata and as the body.
    let deep = format!(
        "{{\"content\":\"deep\",\"metadata\":{{\"a\":{}{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge_number = "{\"content\":\"n\",\"importance_score\":1e999999}".to_owned();
    let long_int_vector = format!(
        "{{\"content\":\"v\",\"embedding\":[{},1,1,1]}}",
        "9".repeat(5000)
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("/api/v1/memories", bad_utf8.clone()),
        ("/api/v1/memories", vec![0xff, 0xfe, 0x00, 0x01]),
        ("/api/v1/memories", deep.clone().into_bytes()),
        ("/api/v1/memories", "[".repeat(200_000).into_bytes()),
        ("/api/v1/memories", huge_number.into_bytes()),
        ("/api/v1/memories", long_int_vector.into_bytes()),
        ("/api/v1/memories/batch", deep.into_bytes()),
        ("/api/v1/memories/batch", bad_utf8.clone()),
        ("/api/v1/search", bad_utf8),
        (
            "/api/v1/search",
            b"{\"query_text\":\"x\",\"limit\":18446744073709551616}".to_vec(),
        ),
        ("/api/v1/admin/migrate", b"\r\n".to_vec()),
    ];
    for (path, body) in &bodies {
        let (code, reply) = raw(&d, &post_raw(path, body));
        assert!(
            (400..500).contains(&code),
            "POST {path} {:?}: {reply}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        assert!(reply.contains("\"error\""), "POST {path}: {reply}");
        assert!(reply.contains("request_id"), "POST {path}: {reply}");
    }
    // Garbage in the query string and the path.
    for path in [
        "/api/v1/memories?limit=abc",
        "/api/v1/memories?limit=99999999999999999999999",
        "/api/v1/memories?cursor=%ff%fe",
        "/api/v1/memories?tier=%00",
        "/api/v1/memories/%ff%00",
        "/api/v1/memories/..%2f..%2fetc%2fpasswd",
    ] {
        let r = d.get(path);
        assert!((400..500).contains(&r.status), "GET {path}: {}", r.text);
        assert!(
            r.body["error"]["code"].is_string(),
            "GET {path}: {}",
            r.text
        );
    }
    // What hyper answers itself, before routing: a status, no crash, the daemon serves on.
    let big_header = format!(
        "GET /api/v1/health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (code, _) = raw(&d, big_header.as_bytes());
    assert!(code == 431 || code == 0, "a 1 MiB header: {code}");
    let long_uri = format!(
        "GET /api/v1/memories/{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let (code, _) = raw(&d, long_uri.as_bytes());
    assert!(
        code == 414 || code == 431 || code == 400,
        "a 70 KB URI: {code}"
    );
    let (code, _) = raw(&d, b"NOT AN HTTP REQUEST\r\n\r\n");
    assert_eq!(code, 400);
    // A body shorter than its content-length, then the client goes away.
    let (code, _) = raw_then(
        &d,
        b"POST /api/v1/memories HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{\"content\":",
        true,
    );
    assert!(
        code == 0 || (400..500).contains(&code),
        "a truncated body: {code}"
    );
    // Nothing stored changed, and the daemon still answers.
    let all = d.list_all("");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["id"], keep["id"]);
    assert_eq!(d.get("/api/v1/health").status, 200);
}

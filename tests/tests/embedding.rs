//! Embeddings: the built-in all-MiniLM-L6-v2 model (real files from scripts/setup.sh) embeds in
//! the background and search finds by meaning; the queue survives kill -9; the Ollama and
//! OpenAI clients speak their wire formats to a local stub server, and provider failures leave
//! memories pending (unreachable) or failed (refused). The built-in model's vectors match an
//! independent reference forward pass (`scripts/golden_embeddings.py`, numpy) to 1e-5.

use std::sync::Arc;
use std::time::Duration;

use engram_tests::{model_dir, stub_server, wait_for_embeddings, Daemon};
use serde_json::{json, Value};

fn local_settings(model: &str) -> Vec<(&str, &str)> {
    vec![
        ("embedding.provider", "local"),
        ("embedding.model_dir", model),
    ]
}

fn vector(m: &Value) -> Vec<f32> {
    serde_json::from_value(m["embedding"].clone()).expect("embedding")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The first values of all-MiniLM-L6-v2's vectors for three sentences, from
/// `scripts/golden_embeddings.py` (numpy, exact-erf GELU, mean pooling, L2 normalization, in f64).
const GOLDEN: [(&str, [f32; 8]); 3] = [
    (
        "Caroline went to the LGBTQ support group on 7 May",
        [
            -0.0163864, 0.0081694, -0.0140627, 0.0960660, -0.0254206, 0.0311673, -0.0181191,
            -0.0882120,
        ],
    ),
    (
        "When did Melanie paint a sunrise?",
        [
            0.0030983, 0.0892194, 0.0595634, 0.0346383, 0.0412484, 0.0719010, 0.0779390, -0.0030713,
        ],
    ),
    (
        "See you!",
        [
            -0.0522333, -0.0332969, 0.0207558, 0.0140162, 0.0619897, 0.0228095, -0.0013434,
            -0.0070439,
        ],
    ),
];

#[test]
fn the_built_in_model_matches_an_independent_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = model_dir();
    let d = Daemon::start(
        &dir.path().join("data"),
        &local_settings(model.to_str().expect("utf-8 path")),
    );
    for (text, golden) in GOLDEN {
        let r = d.post(
            "/api/v1/memories?wait_for_embedding=true&include_embedding=true",
            &json!({ "content": text }),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["embedding_status"], "ready");
        let v = vector(&r.body);
        assert_eq!(v.len(), 384);
        for (i, (got, want)) in v.iter().zip(golden).enumerate() {
            assert!(
                (got - want).abs() <= 1e-5,
                "{text:?}: value {i} is {got}, the reference says {want}"
            );
        }
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?}: norm {norm}");
    }
}

/// A waited-for batch with repeated content (conversations repeat "See you!") answers with
/// every stored memory embedded and each repeat reported in place. Waiting used to cost a poll
/// (200 ms) per memory, so 500 memories took 100 s, past the harness's 60 s request timeout.
#[test]
fn waited_batch_with_repeats_answers_embedded_and_names_the_repeats() {
    let model = model_dir();
    let model = model.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &local_settings(model));
    let items: Vec<serde_json::Value> = (0..500)
        .map(|i| {
            let content = if i % 100 == 0 {
                "See you!".to_owned()
            } else {
                format!("turn {i}: we talked about the garden and the weather")
            };
            json!({"namespace": "chat", "content": content})
        })
        .collect();
    let r = d.post(
        "/api/v1/memories/batch?wait_for_embedding=true",
        &json!({ "memories": items }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 500);
    let first = results[0]["id"]
        .as_str()
        .expect("the first See you! is stored");
    for (i, item) in results.iter().enumerate() {
        if i % 100 == 0 && i > 0 {
            assert_eq!(item["error"]["code"], "DUPLICATE_CONTENT", "item {i}");
            assert_eq!(item["error"]["details"]["existing_id"], first);
            assert_eq!(item["error"]["details"]["index"], i);
        } else {
            assert_eq!(item["embedding_status"], "ready", "item {i}: {item}");
        }
    }
}

/// `embedding.wait_timeout` bounds the wait: past it the write answers with what is still
/// `pending`, and the embedder finishes the rest in the background.
#[test]
fn a_waited_write_answers_pending_at_the_wait_timeout() {
    let model = model_dir();
    let model = model.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = local_settings(model);
    settings.push(("embedding.wait_timeout", "1ms"));
    let d = Daemon::start(&dir.path().join("data"), &settings);
    let items: Vec<serde_json::Value> = (0..200)
        .map(|i| json!({"namespace": "w", "content": format!("note {i} about the tides and the moon")}))
        .collect();
    let r = d.post(
        "/api/v1/memories/batch?wait_for_embedding=true",
        &json!({ "memories": items }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.body["results"].as_array().expect("results");
    let pending = results
        .iter()
        .filter(|m| m["embedding_status"] == "pending")
        .count();
    assert!(
        pending > 0,
        "200 memories cannot be embedded within 1 ms: {pending} pending"
    );
    wait_for_embeddings(&d, Duration::from_secs(120));
    let id = results[199]["id"].as_str().expect("id");
    let m = d.get(&format!("/api/v1/memories/{id}")).body;
    assert_eq!(m["embedding_status"], "ready", "{m}");
}

#[test]
fn local_model_embeds_in_the_background_and_search_finds_by_meaning() {
    let model = model_dir();
    let model = model.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &local_settings(model));
    let h = d.get("/api/v1/health").body;
    assert_eq!(h["embedding_service_available"], true, "{h}");
    assert_eq!(h["embedding"]["model"], "all-MiniLM-L6-v2");

    // Without waiting: durable at once, pending.
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "The quarterly stock market report showed losses"}),
    );
    assert_eq!(r.status, 201);
    assert!(["pending", "ready"].contains(&r.body["embedding_status"].as_str().expect("status")));
    // Waiting: ready, with the model recorded and a unit vector.
    let r = d.post(
        "/api/v1/memories?wait_for_embedding=true&include_embedding=true",
        &json!({"content": "I adopted a golden retriever puppy last week"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["embedding_status"], "ready", "{}", r.text);
    assert_eq!(r.body["embedding_model"], "all-MiniLM-L6-v2");
    let puppy = vector(&r.body);
    assert_eq!(puppy.len(), 384);
    let norm: f32 = puppy.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "normalized, got {norm}");
    let puppy_id = r.body["id"].as_str().expect("id").to_owned();
    for text in [
        "We baked sourdough bread on Sunday",
        "My favourite band played a concert downtown",
        "The train to Boston was delayed by snow",
    ] {
        assert_eq!(
            d.post("/api/v1/memories", &json!({"content": text})).status,
            201
        );
    }
    wait_for_embeddings(&d, Duration::from_secs(60));
    // Search by meaning: the query shares no word with the memory.
    let r = d.post(
        "/api/v1/search",
        &json!({"query_text": "dog", "search_type": "semantic", "limit": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["results"][0]["memory"]["id"], puppy_id);
    let r = d.post(
        "/api/v1/search",
        &json!({"query_text": "finance", "limit": 1, "explain_score": true}),
    );
    assert!(r.body["results"][0]["memory"]["content"]
        .as_str()
        .expect("content")
        .contains("stock"));
    // Deterministic: the same text gives the same vector.
    let again = d.post(
        "/api/v1/memories?wait_for_embedding=true&include_embedding=true",
        &json!({"namespace": "other", "content": "I adopted a golden retriever puppy last week"}),
    );
    assert!(cosine(&vector(&again.body), &puppy) > 0.9999);
    // New content: pending again, then a new vector.
    let r = d.patch(
        &format!("/api/v1/memories/{puppy_id}?wait_for_embedding=true&include_embedding=true"),
        &json!({"content": "Quarterly earnings fell sharply"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body["embedding_status"], "ready");
    assert!(cosine(&vector(&r.body), &puppy) < 0.5);
    // A client vector is kept as sent, and mixing dimensions is refused.
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "x", "embedding": [1.0, 2.0]}),
    );
    assert_eq!(r.status, 400);
    let m = d.get("/metrics").text;
    assert!(
        m.contains("engram_embeddings_total{outcome=\"ready\"}"),
        "{m}"
    );
}

#[test]
fn the_embedding_queue_survives_kill9() {
    let model = model_dir();
    let model = model.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let settings = local_settings(model);
    let mut d = Daemon::start(&data, &settings);
    let items: Vec<Value> = (0..300)
        .map(|i| json!({"content": format!("Conversation turn number {i} about hiking, cooking and music")}))
        .collect();
    let r = d.post("/api/v1/memories/batch", &json!({"memories": items}));
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|x| x["id"].as_str().expect("id").to_owned())
        .collect();
    d.kill9();
    let d = Daemon::start(&data, &settings);
    wait_for_embeddings(&d, Duration::from_secs(120));
    for id in &ids {
        let m = d.get(&format!("/api/v1/memories/{id}")).body;
        assert_eq!(m["embedding_status"], "ready", "{m}");
        assert_eq!(m["has_embedding"], true);
    }
}

/// The stub's vector for a text: 16 numbers from its bytes.
fn stub_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 16];
    for (i, b) in text.bytes().enumerate() {
        v[i % 16] += f32::from(b) / 100.0;
    }
    v
}

fn texts(body: &Value) -> Vec<String> {
    body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ollama_and_openai_clients_speak_their_wire_formats() {
    let (ollama_url, ollama_seen) = stub_server(|path, _, body| {
        if path != "/api/embed" {
            return (404, json!({"error": "not found"}));
        }
        let t = texts(body);
        if t.iter().any(|x| x.contains("poison")) {
            return (400, json!({"error": "input rejected"}));
        }
        (
            200,
            json!({"model": body["model"], "embeddings": t.iter().map(|x| stub_vector(x)).collect::<Vec<_>>()}),
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            ("embedding.provider", "ollama"),
            ("embedding.url", &ollama_url),
            ("embedding.model", "nomic-stub"),
            ("embedding.dimensions", "16"),
        ],
    );
    let r = d.post(
        "/api/v1/memories?wait_for_embedding=true&include_embedding=true",
        &json!({"content": "hello ollama"}),
    );
    assert_eq!(r.body["embedding_status"], "ready", "{}", r.text);
    assert_eq!(r.body["embedding_model"], "nomic-stub");
    assert_eq!(vector(&r.body), stub_vector("hello ollama"));
    let seen = ollama_seen.lock().expect("log").clone();
    assert_eq!(seen[0].2["model"], "nomic-stub");
    // A refused input fails that memory alone, with the reason.
    let r = d.post(
        "/api/v1/memories/batch?wait_for_embedding=true",
        &json!({"memories": [{"content": "fine text"}, {"content": "poison pill"}]}),
    );
    assert_eq!(
        r.body["results"][0]["embedding_status"], "ready",
        "{}",
        r.text
    );
    assert_eq!(r.body["results"][1]["embedding_status"], "failed");
    assert!(r.body["results"][1]["embedding_error"]
        .as_str()
        .expect("reason")
        .contains("400"));

    let (openai_url, openai_seen) = stub_server(|path, _, body| {
        if path != "/v1/embeddings" {
            return (404, json!({"error": "not found"}));
        }
        let data: Vec<Value> = texts(body)
            .iter()
            .enumerate()
            .rev()
            .map(|(i, x)| json!({"object": "embedding", "index": i, "embedding": stub_vector(x)}))
            .collect();
        (
            200,
            json!({"object": "list", "data": data, "model": body["model"]}),
        )
    });
    let dir2 = tempfile::tempdir().expect("tempdir");
    let d2 = Daemon::start_with_env(
        &dir2.path().join("data"),
        &[
            ("embedding.provider", "openai"),
            ("embedding.url", &openai_url),
            ("embedding.model", "text-embedding-stub"),
            ("embedding.api_key_env", "STUB_OPENAI_KEY"),
            ("embedding.dimensions", "16"),
        ],
        &[("STUB_OPENAI_KEY", "sk-test-123")],
    );
    let r = d2.post(
        "/api/v1/memories/batch?wait_for_embedding=true&include_embedding=true",
        &json!({"memories": [{"content": "first text"}, {"content": "second text"}]}),
    );
    for (i, text) in ["first text", "second text"].iter().enumerate() {
        assert_eq!(
            r.body["results"][i]["embedding_status"], "ready",
            "{}",
            r.text
        );
        assert_eq!(
            vector(&r.body["results"][i]),
            stub_vector(text),
            "answers are matched by index"
        );
    }
    let seen = openai_seen.lock().expect("log").clone();
    assert!(seen[0].1.contains("Bearer sk-test-123"), "{}", seen[0].1);
    assert_eq!(seen[0].2["model"], "text-embedding-stub");
}

#[test]
fn an_unreachable_provider_leaves_memories_pending_and_health_says_so() {
    // A port nothing listens on.
    let port = engram_tests::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            ("embedding.provider", "ollama"),
            ("embedding.url", &format!("http://127.0.0.1:{port}")),
            ("embedding.model", "absent"),
            ("embedding.dimensions", "16"),
            ("embedding.timeout", "2s"),
        ],
    );
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "waits for a provider"}),
    );
    assert_eq!(r.status, 201, "writes never wait for the model");
    let id = r.body["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let h = d.get("/api/v1/health").body;
        if h["embedding_service_available"] == false {
            assert_eq!(h["embedding"]["pending"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{h}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        d.get(&format!("/api/v1/memories/{id}")).body["embedding_status"],
        "pending"
    );
    // Text search still works without vectors; a semantic search says the provider is down.
    let r = d.post(
        "/api/v1/search",
        &json!({"query_text": "provider", "search_type": "text"}),
    );
    assert_eq!(r.body["total_count"], 1);
    let r = d.post(
        "/api/v1/search",
        &json!({"query_text": "provider", "search_type": "semantic"}),
    );
    assert_eq!(r.status, 503, "{}", r.text);
    let r = d.post("/api/v1/search", &json!({"query_text": "provider"}));
    assert_eq!(r.status, 200);
    assert!(r.body["warnings"].is_array());
}

/// Concurrent searches have their query texts embedded together in one model call
/// (`query_embed.rs`): each must still get its own text's vector. Every query is one of the
/// stored sentences, so its own memory must come first with a similarity of 1.
#[test]
fn concurrent_query_texts_are_embedded_in_batches_each_getting_its_own_vector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = model_dir();
    let d = Arc::new(Daemon::start(
        &dir.path().join("data"),
        &local_settings(model.to_str().expect("utf-8 path")),
    ));
    let mut texts: Vec<String> = GOLDEN.iter().map(|(t, _)| (*t).to_owned()).collect();
    texts.extend(
        [
            "The quarterly budget review is moved to Thursday afternoon",
            "My cat knocked the tomato plants off the balcony again",
            "Melanie ran a charity race for mental health last Saturday",
            "How to tune the HNSW expansion factor for better recall",
            "We adopted a golden retriever puppy named Oscar",
        ]
        .map(str::to_owned),
    );
    let mut ids = Vec::new();
    for t in &texts {
        let r = d.post(
            "/api/v1/memories?wait_for_embedding=true",
            &json!({ "content": t }),
        );
        assert_eq!(r.body["embedding_status"], "ready", "{}", r.text);
        ids.push(r.body["id"].as_str().expect("id").to_owned());
    }
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let (d, text, id) = (
                Arc::clone(&d),
                texts[i % texts.len()].clone(),
                ids[i % ids.len()].clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let r = d.post(
                        "/api/v1/search",
                        &json!({"query_text": text, "search_type": "semantic", "limit": 1,
                                "explain_score": true}),
                    );
                    assert_eq!(r.status, 200, "{}", r.text);
                    let top = &r.body["results"][0];
                    assert_eq!(top["memory"]["id"], id.as_str(), "{text:?}: {}", r.text);
                    let sim = top["explanation"]["similarity"]
                        .as_f64()
                        .expect("similarity");
                    assert!(sim > 0.9999, "{text:?}: similarity {sim}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a search thread failed");
    }
}

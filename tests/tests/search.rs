//! Search against the real daemon: vector recall against brute force in the working tier and
//! through the warm tier's HNSW graph, namespace isolation under concurrent writes, every
//! filter, BM25 ranking on a hand-checked corpus, hybrid explanations, no stale results after
//! updates and deletes, identical results across a restart, and a kill -9 while the graph is
//! still indexing.

use std::collections::HashSet;

use engram_tests::{embedding, wait_for_vector_index, Daemon};
use serde_json::{json, Value};

const DIMS: usize = 16;

fn dimensions_settings(working: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("embedding.dimensions", "16"),
        ("working.capacity", working),
    ]
}

/// As [`dimensions_settings`], with every warm vector search walking the HNSW graph (these test
/// namespaces are small enough to be scored directly otherwise).
fn graph_settings(working: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut s = dimensions_settings(working);
    s.push(("search.exact_candidates_max", "0"));
    s
}

fn search(d: &Daemon, body: Value) -> Value {
    let r = d.post("/api/v1/search", &body);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn ids(reply: &Value) -> Vec<String> {
    reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["memory"]["id"].as_str().expect("id").to_owned())
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn create_batch(d: &Daemon, items: Vec<Value>) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in items.chunks(500) {
        let r = d.post("/api/v1/memories/batch", &json!({ "memories": chunk }));
        assert_eq!(r.status, 200, "{}", r.text);
        for item in r.body["results"].as_array().expect("results") {
            out.push(
                item["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{item}"))
                    .to_owned(),
            );
        }
    }
    out
}

/// Mean recall@10 of `queries` against brute force over `corpus`.
fn recall_at_10(d: &Daemon, ns: &str, corpus: &[(String, Vec<f32>)], queries: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for q in queries {
        let mut exact: Vec<(f32, &str)> = corpus
            .iter()
            .map(|(id, v)| (cosine(q, v), id.as_str()))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: HashSet<&str> = exact.iter().take(10).map(|x| x.1).collect();
        let got = ids(&search(
            d,
            json!({"namespace": ns, "query_embedding": q, "search_type": "semantic", "limit": 10}),
        ));
        assert_eq!(got.len(), 10);
        total += got.iter().filter(|g| truth.contains(g.as_str())).count() as f64 / 10.0;
    }
    total / queries.len() as f64
}

/// Stores `n` memories in `namespace` with vectors `embedding(0..n)`; returns (id, vector) of
/// each, in order.
fn store_vectors(d: &Daemon, namespace: &str, n: u64) -> Vec<(String, Vec<f32>)> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"namespace": namespace, "content": format!("vector {i}"), "embedding": embedding(i, DIMS)}))
        .collect();
    create_batch(d, items)
        .into_iter()
        .zip(0..)
        .map(|(id, i)| (id, embedding(i, DIMS)))
        .collect()
}

#[test]
fn vector_recall_matches_brute_force_in_both_tiers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 100 memories fit in the working tier; the rest are evicted to warm and its HNSW graph.
    let d = Daemon::start(&dir.path().join("data"), &graph_settings("100"));
    let corpus = store_vectors(&d, "a", 3000);
    wait_for_vector_index(&d);
    let health = d.get("/api/v1/health").body;
    assert!(
        health["tiers"]["warm"].as_u64().expect("warm") > 2500,
        "{health}"
    );
    let queries: Vec<Vec<f32>> = (0..50u64).map(|i| embedding(1_000_000 + i, DIMS)).collect();
    let recall = recall_at_10(&d, "a", &corpus, &queries);
    assert!(recall >= 0.95, "recall@10 through the graph {recall}");
    // A memory's own vector finds it first, with distance ~0.
    for (id, v) in corpus.iter().step_by(97) {
        let r = search(
            &d,
            json!({"namespace": "a", "query_embedding": v, "search_type": "semantic", "limit": 1}),
        );
        assert_eq!(ids(&r), vec![id.clone()]);
        assert!(r["results"][0]["distance"].as_f64().expect("distance") < 1e-3);
    }
    // The same store with direct scoring (a 3,000-memory namespace is scored from the i8
    // codes, then f32) finds the same neighbours.
    let mut d = d;
    assert!(d.terminate().success());
    let d = Daemon::start(&dir.path().join("data"), &dimensions_settings("100"));
    let recall = recall_at_10(&d, "a", &corpus, &queries);
    assert!(recall >= 0.99, "recall@10 scoring directly {recall}");
}

/// A namespace of 3,000 working-tier memories is past the f32 scan (2,048 rows): it is ranked
/// by its i8 codes and the best re-scored in f32, and still finds what brute force finds.
#[test]
fn a_large_working_namespace_ranked_by_codes_matches_brute_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &dimensions_settings("5000"));
    let corpus = store_vectors(&d, "w", 3000);
    let health = d.get("/api/v1/health").body;
    assert_eq!(health["tiers"]["working"], 3000, "{health}");
    let queries: Vec<Vec<f32>> = (0..50u64).map(|i| embedding(2_000_000 + i, DIMS)).collect();
    let recall = recall_at_10(&d, "w", &corpus, &queries);
    assert!(
        recall >= 0.99,
        "recall@10 from the working tier's codes {recall}"
    );
    for (id, v) in corpus.iter().step_by(131) {
        let r = search(
            &d,
            json!({"namespace": "w", "query_embedding": v, "search_type": "semantic", "limit": 1}),
        );
        assert_eq!(ids(&r), vec![id.clone()]);
        // The score is the f32 one, not the codes' approximation.
        assert!(r["results"][0]["distance"].as_f64().expect("distance") < 1e-6);
    }
}

#[test]
fn namespaces_stay_isolated_under_concurrent_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &dimensions_settings("200"));
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let d = &d;
            s.spawn(move || {
                for i in 0..300u64 {
                    let ns = if i % 2 == 0 { "left" } else { "right" };
                    let r = d.post(
                        "/api/v1/memories",
                        &json!({"namespace": ns, "content": format!("shared words apple {w} {i}"), "embedding": embedding(w * 1000 + i, DIMS)}),
                    );
                    assert_eq!(r.status, 201, "{}", r.text);
                }
            });
        }
        for _ in 0..2 {
            let d = &d;
            s.spawn(move || {
                for i in 0..150u64 {
                    for (ns, mode) in [("left", "hybrid"), ("right", "semantic"), ("left", "text")] {
                        let r = search(
                            d,
                            json!({"namespace": ns, "query_text": "apple words", "query_embedding": embedding(i, DIMS), "search_type": mode, "limit": 50}),
                        );
                        for hit in r["results"].as_array().expect("results") {
                            assert_eq!(hit["memory"]["namespace"], ns, "{hit}");
                        }
                    }
                }
            });
        }
    });
    let r = search(
        &d,
        json!({"namespace": "nobody", "query_text": "apple", "limit": 10}),
    );
    assert_eq!(r["total_count"], 0);
}

#[test]
fn filters_every_operator_and_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &dimensions_settings("1000"));
    for i in 0..40u64 {
        let r = d.post(
            "/api/v1/memories",
            &json!({
                "namespace": "f",
                "content": format!("orchard apple note number {i}"),
                "importance_score": (i as f64) / 40.0,
                "tags": [format!("t{}", i % 4), if i % 2 == 0 { "even" } else { "odd" }],
                "metadata": {"n": i, "color": if i % 3 == 0 { "red" } else { "green" }},
                "created_at": format!("2024-01-{:02}T00:00:00Z", 1 + i % 28),
                "embedding": embedding(i, DIMS),
            }),
        );
        assert_eq!(r.status, 201);
    }
    let count = |body: Value| -> (u64, Vec<u64>) {
        let mut b = body;
        b["namespace"] = json!("f");
        b["query_text"] = json!("apple");
        b["limit"] = json!(1000);
        let r = search(&d, b);
        let mut ns: Vec<u64> = r["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|h| h["memory"]["metadata"]["n"].as_u64().expect("n"))
            .collect();
        ns.sort_unstable();
        (r["total_count"].as_u64().expect("total"), ns)
    };
    let all: Vec<u64> = (0..40).collect();
    let want =
        |f: &dyn Fn(u64) -> bool| -> Vec<u64> { all.iter().copied().filter(|i| f(*i)).collect() };
    assert_eq!(count(json!({})).1, all);
    assert_eq!(
        count(json!({"tags": {"all_of": ["t1", "odd"]}})).1,
        want(&|i| i % 4 == 1)
    );
    assert_eq!(
        count(json!({"tags": {"any_of": ["t1", "t2"]}})).1,
        want(&|i| i % 4 == 1 || i % 4 == 2)
    );
    assert_eq!(
        count(json!({"tags": {"all_of": ["even"], "any_of": ["t2", "t3"]}})).1,
        want(&|i| i % 4 == 2)
    );
    assert_eq!(
        count(json!({"metadata_filters": {"color": "red"}})).1,
        want(&|i| i % 3 == 0)
    );
    assert_eq!(
        count(json!({"metadata_filters": {"n": {"$in": [1, 5, 39, 77]}}})).1,
        vec![1, 5, 39]
    );
    assert_eq!(
        count(json!({"metadata_filters": {"n": {"$gt": 30}}})).1,
        want(&|i| i > 30)
    );
    assert_eq!(
        count(json!({"metadata_filters": {"n": {"$gte": 30, "$lt": 33}}})).1,
        vec![30, 31, 32]
    );
    assert_eq!(
        count(json!({"metadata_filters": {"n": {"$lte": 2}}})).1,
        vec![0, 1, 2]
    );
    assert_eq!(
        count(json!({"metadata_filters": {"n": {"$eq": 7}}})).1,
        vec![7]
    );
    assert_eq!(
        count(json!({"importance_range": {"min": 0.5, "max": 0.6}})).1,
        want(&|i| (0.5..=0.6).contains(&(i as f64 / 40.0)))
    );
    assert_eq!(
        count(
            json!({"date_range": {"start": "2024-01-03T00:00:00Z", "end": "2024-01-04T00:00:00Z"}})
        )
        .1,
        want(&|i| (2..=3).contains(&(i % 28)))
    );
    // Filters combine; a filter that excludes everything gives an empty page, not an error.
    assert_eq!(
        count(json!({"metadata_filters": {"color": "red"}, "tags": {"all_of": ["even"]}})).1,
        want(&|i| i % 3 == 0 && i % 2 == 0)
    );
    assert_eq!(
        count(json!({"metadata_filters": {"color": "blue"}})),
        (0, vec![])
    );
    assert_eq!(count(json!({"tags": {"all_of": ["missing"]}})), (0, vec![]));
    // Filters apply to vector search too (inside the walk, not after it).
    let r = search(
        &d,
        json!({"namespace": "f", "query_embedding": embedding(3, DIMS), "search_type": "semantic", "limit": 5, "tags": {"all_of": ["t3"]}}),
    );
    assert_eq!(r["results"].as_array().expect("results").len(), 5);
    assert_eq!(r["results"][0]["memory"]["metadata"]["n"], 3);
    for h in r["results"].as_array().expect("results") {
        assert_eq!(h["memory"]["metadata"]["n"].as_u64().expect("n") % 4, 3);
    }
    // Paging: offset continues where limit stopped.
    let page = |offset: u64| {
        ids(&search(
            &d,
            json!({"namespace": "f", "query_text": "apple", "limit": 7, "offset": offset}),
        ))
    };
    let (p1, p2) = (page(0), page(7));
    assert_eq!(p1.len(), 7);
    assert!(p1.iter().all(|x| !p2.contains(x)));
    // similarity_threshold drops what is not similar enough.
    let r = search(
        &d,
        json!({"namespace": "f", "query_embedding": embedding(3, DIMS), "search_type": "semantic", "limit": 40, "similarity_threshold": 0.99}),
    );
    assert_eq!(r["total_count"], 1);

    // Bad input: 400 INVALID_REQUEST naming the field.
    for (body, field) in [
        (json!({"query_text": "x", "limit": 0}), "limit"),
        (json!({"query_text": "x", "limit": 1001}), "limit"),
        (json!({"query_text": "x", "offset": -1}), "offset"),
        (
            json!({"query_text": "x", "search_type": "fuzzy"}),
            "search_type",
        ),
        (json!({"query_text": "x", "tiers": ["hot"]}), "tiers"),
        (
            json!({"query_text": "x", "namespace": "bad ns"}),
            "namespace",
        ),
        (
            json!({"query_text": "x", "metadata_filters": {"n": {"$regex": "a"}}}),
            "metadata_filters.n",
        ),
        (
            json!({"query_text": "x", "metadata_filters": {"n": {"$gt": "a"}}}),
            "metadata_filters.n",
        ),
        (
            json!({"query_text": "x", "importance_range": {"min": 0.9, "max": 0.1}}),
            "importance_range",
        ),
        (
            json!({"query_text": "x", "importance_range": {"min": 2}}),
            "importance_range.min",
        ),
        (
            json!({"query_text": "x", "date_range": {"start": "yesterday"}}),
            "date_range.start",
        ),
        (
            json!({"query_text": "x", "similarity_threshold": 3}),
            "similarity_threshold",
        ),
        (
            json!({"query_text": "x", "hybrid_weights": {"semantic": -1}}),
            "hybrid_weights.semantic",
        ),
        (
            json!({"query_text": "x", "hybrid_weights": {"semantic": 0, "text": 0, "importance": 0, "recency": 0}}),
            "hybrid_weights",
        ),
        (
            json!({"query_text": "x", "recency_half_life_hours": 0}),
            "recency_half_life_hours",
        ),
        (json!({"query_embedding": [1.0, 2.0]}), "query_embedding"),
        (json!({"search_type": "text"}), "query_text"),
        (
            json!({"query_text": "x", "search_type": "semantic"}),
            "query_embedding",
        ),
        (json!({}), "query_text"),
        (json!({"query_text": "x", "colour": 1}), "colour"),
        (json!({"query_text": 5}), "query_text"),
    ] {
        let r = d.post("/api/v1/search", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.code(), "INVALID_REQUEST");
        let named = r.body["error"]["details"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            named.contains(field),
            "{body}: named {named:?}, want {field}: {}",
            r.text
        );
    }
    assert_eq!(d.get("/api/v1/search").status, 405);
}

#[test]
fn bm25_ranks_a_hand_checked_corpus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &dimensions_settings("1000"));
    let docs = [
        "the cat sat on the mat",
        "cat cat cat",
        "dogs chase cats in the park",
        "a very long document that mentions a cat once among many other words about gardens and weather and trains",
        "nothing relevant here at all",
    ];
    let mut idmap = Vec::new();
    for doc in docs {
        let r = d.post(
            "/api/v1/memories",
            &json!({"namespace": "bm", "content": doc}),
        );
        assert_eq!(r.status, 201);
        idmap.push(r.body["id"].as_str().expect("id").to_owned());
    }
    let r = search(
        &d,
        json!({"namespace": "bm", "query_text": "Cats", "search_type": "text", "explain_score": true}),
    );
    let got = ids(&r);
    // "cats" stems to "cat": four documents match, the fifth does not.
    assert_eq!(got.len(), 4, "{r}");
    assert_eq!(
        got[0], idmap[1],
        "highest term frequency in the shortest document wins"
    );
    assert_eq!(got[3], idmap[3], "the long document ranks last");
    assert!(!got.contains(&idmap[4]));
    // The score by hand: N=5, df=4, idf = ln(1 + (5-4+0.5)/(4+0.5)); doc 1 has tf=3, len=3;
    // average length = (6+3+6+19+5)/5.
    let avg = (6.0 + 3.0 + 6.0 + 19.0 + 5.0) / 5.0;
    let idf = (1.0f64 + (5.0 - 4.0 + 0.5) / (4.0 + 0.5)).ln();
    let norm = 1.0 - 0.75 + 0.75 * 3.0 / avg;
    let want = idf * 3.0 * 2.2 / (3.0 + 1.2 * norm);
    let score = r["results"][0]["score"].as_f64().expect("score");
    assert!((score - want).abs() < 1e-4, "bm25 {score}, by hand {want}");
    // Two query terms: a document with both outranks documents with one.
    let r = search(
        &d,
        json!({"namespace": "bm", "query_text": "cat mat", "search_type": "text"}),
    );
    assert_eq!(ids(&r)[0], idmap[0]);
    // Stemming off: "cats" no longer matches "cat".
    let d2dir = tempfile::tempdir().expect("tempdir");
    let mut settings = dimensions_settings("1000");
    settings.push(("search.stemming", "false"));
    let d2 = Daemon::start(&d2dir.path().join("data"), &settings);
    for doc in docs {
        assert_eq!(
            d2.post(
                "/api/v1/memories",
                &json!({"namespace": "bm", "content": doc})
            )
            .status,
            201
        );
    }
    let r = search(
        &d2,
        json!({"namespace": "bm", "query_text": "cats", "search_type": "text"}),
    );
    assert_eq!(r["total_count"], 1);
}

#[test]
fn hybrid_explanation_sums_to_the_score() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &dimensions_settings("20"));
    for i in 0..60u64 {
        let r = d.post(
            "/api/v1/memories",
            &json!({"namespace": "h", "content": format!("river stone {} walk", if i % 3 == 0 { "mountain" } else { "valley" }),
                    "embedding": embedding(i, DIMS), "importance_score": (i % 10) as f64 / 10.0}),
        );
        // Every third content repeats; dedup refuses those after the first.
        assert!(r.status == 201 || r.status == 409, "{}", r.text);
    }
    for i in 0..40u64 {
        let r = d.post(
            "/api/v1/memories",
            &json!({"namespace": "h", "content": format!("unique mountain note {i}"), "embedding": embedding(500 + i, DIMS)}),
        );
        assert_eq!(r.status, 201);
    }
    let r = search(
        &d,
        json!({"namespace": "h", "query_text": "mountain", "query_embedding": embedding(501, DIMS), "explain_score": true,
               "hybrid_weights": {"semantic": 0.5, "text": 0.3, "importance": 0.1, "recency": 0.1}, "limit": 20}),
    );
    let results = r["results"].as_array().expect("results");
    assert!(!results.is_empty());
    let mut last = f64::INFINITY;
    for h in results {
        let e = &h["explanation"];
        let sum: f64 = ["semantic", "text", "importance", "recency", "context"]
            .iter()
            .map(|k| {
                let c = &e[k];
                let (v, w) = (
                    c["value"].as_f64().expect("value"),
                    c["weight"].as_f64().expect("weight"),
                );
                assert!((c["contribution"].as_f64().expect("contribution") - v * w).abs() < 1e-5);
                v * w
            })
            .sum();
        let score = h["score"].as_f64().expect("score");
        assert!(
            (sum - score).abs() < 1e-4,
            "{e} sums to {sum}, score {score}"
        );
        assert!(score <= last + 1e-6, "sorted by score");
        last = score;
        assert_eq!(e["semantic"]["weight"], 0.5);
    }
    assert!(results[0]["memory"]["content"]
        .as_str()
        .expect("content")
        .contains("note 1"));
    // Explanations only when asked.
    let r = search(&d, json!({"namespace": "h", "query_text": "mountain"}));
    assert!(r["results"][0].get("explanation").is_none());
    assert!(r["query_time_ms"].as_f64().is_some());
}

#[test]
fn hybrid_context_brings_in_the_neighbouring_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &dimensions_settings("20"));
    let turn = |content: &str, at: &str, tags: Value| {
        let r = d.post(
            "/api/v1/memories",
            &json!({"namespace": "conv", "content": content, "created_at": at, "tags": tags}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_str().expect("id").to_owned()
    };
    turn(
        "Caroline: Morning! Off to the gym.",
        "2024-02-29T10:00:00Z",
        json!(["t"]),
    );
    let question = turn(
        "Melanie: What did you paint last weekend?",
        "2024-03-01T10:00:00Z",
        json!(["t"]),
    );
    let answer = turn(
        "Caroline: A sunrise over the lake, with my kids.",
        "2024-03-01T10:00:30Z",
        json!([]),
    );
    let later = turn(
        "Caroline: Then we went hiking in the hills.",
        "2024-03-01T12:00:00Z",
        json!([]),
    );
    let query = |extra: Value| {
        let mut body = json!({"namespace": "conv", "query_text": "paint", "explain_score": true});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        search(&d, body)
    };
    // The question matches the words; the answer, 30 s later, joins by the context component.
    let r = query(json!({}));
    assert_eq!(ids(&r), vec![question.clone(), answer.clone()], "{r}");
    let (q, a) = (&r["results"][0], &r["results"][1]);
    let e = &a["explanation"];
    assert_eq!(e["text"]["value"], 0.0, "{e}");
    assert_eq!(e["semantic"]["value"], 0.0, "{e}");
    let weight = e["context"]["weight"].as_f64().expect("weight");
    assert!((weight - 0.4).abs() < 1e-6, "{e}");
    let lent = e["context"]["value"].as_f64().expect("context");
    let q_score = q["score"].as_f64().expect("score");
    assert!(
        (lent - q_score).abs() < 1e-5,
        "lent {lent}, question scored {q_score}"
    );
    // The question's neighbours are a day before and the answer, which is no candidate.
    assert_eq!(q["explanation"]["context"]["value"], 0.0);
    let parts: f64 = ["semantic", "text", "importance", "recency", "context"]
        .iter()
        .map(|k| e[k]["contribution"].as_f64().expect("contribution"))
        .sum();
    assert!((parts - a["score"].as_f64().expect("score")).abs() < 1e-5);
    assert!(!ids(&r).contains(&later), "two hours later is no neighbour");
    // Off by weight, by window, in the single-signal modes, and filtered like any candidate.
    for extra in [
        json!({"hybrid_weights": {"context": 0}}),
        json!({"context_window_seconds": 10}),
        json!({"context_window_seconds": 0}),
        json!({"search_type": "text"}),
        json!({"tags": {"all_of": ["t"]}}),
    ] {
        assert_eq!(
            ids(&query(extra.clone())),
            vec![question.clone()],
            "{extra}"
        );
    }
    // Only candidates lend: the answer, in by context alone, lends nothing on, so the later
    // turn stays out even within a day's window.
    let wide = query(json!({"context_window_seconds": 86400}));
    assert!(!ids(&wide).contains(&later), "{wide}");
    for (body, field) in [
        (
            json!({"context_window_seconds": -1}),
            "context_window_seconds",
        ),
        (
            json!({"context_window_seconds": 604801}),
            "context_window_seconds",
        ),
        (
            json!({"hybrid_weights": {"context": 1001}}),
            "hybrid_weights.context",
        ),
        (
            json!({"hybrid_weights": {"semantic": 0, "text": 0, "importance": 0, "recency": 0, "context": 1}}),
            "hybrid_weights",
        ),
    ] {
        let mut b = body.clone();
        b["namespace"] = json!("conv");
        b["query_text"] = json!("paint");
        let r = d.post("/api/v1/search", &b);
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.text);
    }
}

#[test]
fn updated_and_deleted_memories_never_match_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &dimensions_settings("50"));
    let mut ids_by_tier = Vec::new();
    for i in 0..120u64 {
        let r = d.post(
            "/api/v1/memories",
            &json!({"namespace": "s", "content": format!("zebra stripes {i}"), "embedding": embedding(i, DIMS)}),
        );
        assert_eq!(r.status, 201);
        ids_by_tier.push(r.body["id"].as_str().expect("id").to_owned());
    }
    wait_for_vector_index(&d);
    // The first memories were evicted to warm; the last are in working. Check both.
    let first = d.get(&format!("/api/v1/memories/{}", ids_by_tier[0])).body;
    let last = d
        .get(&format!("/api/v1/memories/{}", ids_by_tier[119]))
        .body;
    assert_eq!(first["tier"], "warm");
    assert_eq!(last["tier"], "working");
    for (n, id) in [(0u64, &ids_by_tier[0]), (119, &ids_by_tier[119])] {
        // Update content and vector: the old words and the old vector stop matching.
        let r = d.patch(
            &format!("/api/v1/memories/{id}"),
            &json!({"content": format!("giraffe neck {n}"), "embedding": embedding(9000 + n, DIMS)}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        let r = search(
            &d,
            json!({"namespace": "s", "query_text": "zebra stripes", "search_type": "text", "limit": 200}),
        );
        assert!(!ids(&r).contains(id), "old text still matches");
        let r = search(
            &d,
            json!({"namespace": "s", "query_text": "giraffe", "search_type": "text"}),
        );
        assert!(ids(&r).contains(id));
        let r = search(
            &d,
            json!({"namespace": "s", "query_embedding": embedding(n, DIMS), "search_type": "semantic", "limit": 1}),
        );
        assert_ne!(ids(&r).first(), Some(id), "old vector still matches");
        let r = search(
            &d,
            json!({"namespace": "s", "query_embedding": embedding(9000 + n, DIMS), "search_type": "semantic", "limit": 1}),
        );
        assert_eq!(ids(&r).first(), Some(id));
        // Archived, then deleted: gone from every mode.
        assert_eq!(
            d.patch(
                &format!("/api/v1/memories/{id}"),
                &json!({"status": "archived"})
            )
            .status,
            200
        );
        let r = search(
            &d,
            json!({"namespace": "s", "query_text": "giraffe", "query_embedding": embedding(9000 + n, DIMS)}),
        );
        assert!(!ids(&r).contains(id));
        assert_eq!(
            d.patch(
                &format!("/api/v1/memories/{id}"),
                &json!({"status": "active"})
            )
            .status,
            200
        );
        assert!(ids(&search(
            &d,
            json!({"namespace": "s", "query_text": "giraffe"})
        ))
        .contains(id));
        assert_eq!(d.delete(&format!("/api/v1/memories/{id}")).status, 200);
        for mode in ["text", "semantic", "hybrid"] {
            let r = search(
                &d,
                json!({"namespace": "s", "query_text": "giraffe neck", "query_embedding": embedding(9000 + n, DIMS), "search_type": mode, "limit": 200}),
            );
            assert!(!ids(&r).contains(id), "{mode} returned a deleted memory");
        }
    }
    // Searching counts as an access: one more for the one hit returned. Listing does not count
    // (a GET would count its own) and shows the accesses not yet flushed to the log.
    let accesses = |id: &str| {
        d.list_all("&namespace=s")
            .iter()
            .find(|m| m["id"] == id)
            .expect("the memory is listed")["access_count"]
            .as_u64()
            .expect("count")
    };
    let query = json!({"namespace": "s", "query_text": "zebra 5", "limit": 1});
    let hit = ids(&search(&d, query.clone()))[0].clone();
    let before = accesses(&hit);
    assert_eq!(ids(&search(&d, query))[0], hit);
    assert_eq!(accesses(&hit), before + 1);
}

#[test]
fn restart_keeps_search_results_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let settings = graph_settings("100");
    let mut d = Daemon::start(&data, &settings);
    let items: Vec<Value> = (0..1500u64)
        .map(|i| json!({"namespace": "r", "content": format!("memory about topic {} and {}", i % 37, i), "embedding": embedding(i, DIMS), "created_at": "2024-03-01T00:00:00Z"}))
        .collect();
    create_batch(&d, items);
    wait_for_vector_index(&d);
    let queries: Vec<Value> = (0..20u64)
        .map(|i| json!({"namespace": "r", "query_text": format!("topic {}", i % 37), "query_embedding": embedding(7000 + i, DIMS), "limit": 10, "recency_half_life_hours": 1e9}))
        .collect();
    let scores = |d: &Daemon| -> Vec<Vec<(String, String)>> {
        queries
            .iter()
            .map(|q| {
                search(d, q.clone())["results"]
                    .as_array()
                    .expect("results")
                    .iter()
                    .map(|h| {
                        (
                            h["memory"]["id"].as_str().expect("id").to_owned(),
                            format!("{:.5}", h["score"].as_f64().expect("score")),
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let before = scores(&d);
    assert!(d.terminate().success());
    let d = Daemon::start(&data, &settings);
    wait_for_vector_index(&d);
    assert_eq!(scores(&d), before);
}

#[test]
fn kill9_while_indexing_loses_nothing_and_the_graph_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let settings = graph_settings("50");
    let mut d = Daemon::start(&data, &settings);
    let items: Vec<Value> = (0..4000u64)
        .map(|i| json!({"namespace": "k", "content": format!("kill test {i}"), "embedding": embedding(i, DIMS)}))
        .collect();
    let created = create_batch(&d, items);
    d.kill9();
    let d = Daemon::start(&data, &settings);
    // Before the graph catches up, lagging vectors are scanned exactly: nothing is missing.
    for (i, id) in created.iter().enumerate().step_by(199) {
        let r = search(
            &d,
            json!({"namespace": "k", "query_embedding": embedding(i as u64, DIMS), "search_type": "semantic", "limit": 1}),
        );
        assert_eq!(ids(&r).first(), Some(id));
    }
    wait_for_vector_index(&d);
    for (i, id) in created.iter().enumerate().step_by(97) {
        let r = search(
            &d,
            json!({"namespace": "k", "query_embedding": embedding(i as u64, DIMS), "search_type": "semantic", "limit": 1}),
        );
        assert_eq!(ids(&r).first(), Some(id), "item {i}: {r}");
    }
    let r = search(
        &d,
        json!({"namespace": "k", "query_text": "kill test", "search_type": "text", "limit": 1}),
    );
    assert_eq!(r["total_count"], 4000);
}

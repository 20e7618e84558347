use super::*;

/// Deterministic vectors spread over the sphere.
fn vector(seed: u64, dimensions: usize) -> Arc<[f32]> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dimensions)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Waits until the indexer has put every queued vector in the graph.
fn wait_for_indexer(hnsw: &Hnsw) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while hnsw.sizes().1 > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the indexer fell behind"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every vector the graph holds is found by a search for itself: none is stored but
/// unreachable (what concurrent adds did, unum-cloud/USearch#735). Rounds of 512 fill the
/// graph past a load and a capacity growth, as after a restart.
#[test]
fn every_added_vector_is_found_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dimensions = 16;
    let config = super::super::SearchConfig::default();
    let ids: Vec<Uuid> = (0..4000).map(|_| Uuid::now_v7()).collect();
    let fill = |hnsw: &Hnsw, range: std::ops::Range<usize>| {
        for i in range {
            hnsw.upsert(ids[i], i as u32, vector(i as u64, dimensions));
        }
        wait_for_indexer(hnsw);
    };
    {
        let hnsw = Hnsw::open(dir.path(), dimensions, &config).expect("open");
        fill(&hnsw, 0..1500);
        hnsw.close().expect("close");
    }
    let hnsw = Hnsw::open(dir.path(), dimensions, &config).expect("reopen");
    assert_eq!(hnsw.graph_len(), 1500, "the saved graph is loaded");
    fill(&hnsw, 1500..ids.len());
    let lost: Vec<usize> = (0..ids.len())
        .filter(|&i| {
            let hits = hnsw
                .search_unfiltered(&vector(i as u64, dimensions), 1)
                .expect("search");
            hits.first().map(|h| h.0) != Some(ids[i])
        })
        .collect();
    assert!(lost.is_empty(), "unreachable: {lost:?}");
}

/// An i8 graph (the default settings otherwise) in `dir`.
fn open_i8(dir: &std::path::Path, dimensions: usize) -> Hnsw {
    let config = super::super::SearchConfig {
        quantization: Quantization::I8,
        ..Default::default()
    };
    Hnsw::open(dir, dimensions, &config).expect("open")
}

/// An i8 graph holds Engram's codes, not usearch's `trunc(127·x/‖x‖)`: stored vectors are
/// scaled to one common norm and walked by inner product, queries keep a scale of their own,
/// and the cosine distances handed back stay within 0.005 of the f32 ones for vectors of 384
/// dimensions whatever their norms (usearch's own casts were off by up to 0.011, 0.004 on
/// average, which cost a fifth of recall@10 at 100k).
#[test]
fn an_i8_graph_keeps_cosine_close_to_f32() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dimensions = 384;
    let hnsw = open_i8(dir.path(), dimensions);
    let ids: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();
    for (i, id) in ids.iter().enumerate() {
        // Scaled by 0.3 to 3,000: the graph's order must not depend on the norm.
        let norm = 0.3 * 10f32.powi((i % 5) as i32);
        let v: Arc<[f32]> = vector(i as u64, dimensions)
            .iter()
            .map(|x| x * norm)
            .collect();
        hnsw.upsert(*id, i as u32, v);
    }
    wait_for_indexer(&hnsw);
    let unit = |v: &[f32]| -> Vec<f32> {
        let n = crate::vector::norm(v);
        v.iter().map(|x| x / n).collect()
    };
    let query: Vec<f32> = vector(0, dimensions).iter().map(|x| x * 0.01).collect();
    let hits = hnsw.search_unfiltered(&query, 100).expect("search");
    assert_eq!(hits.len(), 100);
    for (id, _, distance) in hits {
        let i = ids.iter().position(|x| *x == id).expect("a stored id");
        let exact =
            1.0 - crate::vector::cosine(&unit(&query), &unit(&vector(i as u64, dimensions)));
        assert!(
            (distance - exact).abs() < 0.005,
            "vector {i}: graph distance {distance}, f32 {exact}"
        );
    }
}

/// A component past what the common scale holds is clipped, not wrapped: such a vector is
/// still stored and found first by a search for itself.
#[test]
fn an_i8_graph_clips_a_component_too_large_for_its_scale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dimensions = 384;
    let hnsw = open_i8(dir.path(), dimensions);
    let ids: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    let mut spiky: Vec<f32> = vector(7, dimensions).iter().map(|x| x * 0.02).collect();
    spiky[3] = 0.9;
    for (i, id) in ids.iter().enumerate() {
        let v = if i == 7 {
            Arc::from(spiky.clone())
        } else {
            vector(i as u64, dimensions)
        };
        hnsw.upsert(*id, i as u32, v);
    }
    wait_for_indexer(&hnsw);
    if let GraphVector::I8(codes, _) = GraphVector::stored(&spiky, &hnsw.shared.options) {
        assert_eq!(codes[3], 127, "clipped at the top of the range");
    } else {
        panic!("an i8 graph stores codes");
    }
    let hits = hnsw.search_unfiltered(&spiky, 5).expect("search");
    assert_eq!(hits[0].0, ids[7]);
}

//! `engramctl segment inspect` on a real cold segment: the summary and every block, then a
//! flipped bit reported as a failure naming the segment and the block.

use std::process::Command;

use engram_engine::cold::write_segment;
use engram_engine::{content_hash, EmbeddingStatus, Lsn, Memory, Status, Tier, Uuid};
use engram_tests::engramctl_path;
use serde_json::Value;

fn memory(i: u64) -> Memory {
    let content = format!("turn {i}: we talked about the lighthouse and the storm");
    Memory {
        id: Uuid::now_v7(),
        namespace: "seg".into(),
        content_hash: content_hash(&content),
        content,
        embedding: Some((0..8).map(|d| (i + d) as f32).collect()),
        embedding_status: EmbeddingStatus::Ready,
        embedding_model: Some("test".into()),
        tier: Tier::Cold,
        status: Status::Active,
        importance: 0.5,
        access_count: 0,
        last_accessed_at_us: None,
        metadata_json: "{}".into(),
        tags: vec![],
        parent_id: None,
        created_at_us: 1,
        updated_at_us: 2,
        expires_at_us: None,
        version: 1,
        superseded_by: None,
        actor: None,
        lsn: Lsn::new(i + 1),
    }
}

fn inspect(path: &std::path::Path) -> std::process::Output {
    Command::new(engramctl_path())
        .args(["segment", "inspect", path.to_str().expect("utf8"), "--json"])
        .output()
        .expect("engramctl runs")
}

#[test]
fn segment_inspect_reports_blocks_and_names_a_damaged_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("0000000000000007.cold");
    let memories: Vec<Memory> = (0..3000).map(memory).collect();
    let info = write_segment(&path, 7, 8, 3, &memories).expect("write");
    let out = inspect(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["segment_id"], 7);
    assert_eq!(v["memories"], 3000);
    assert_eq!(v["ok"], true);
    let blocks = v["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), info.blocks);
    assert!(blocks.len() > 2);
    let total: u64 = blocks
        .iter()
        .map(|b| b["records"].as_u64().expect("records"))
        .sum();
    assert_eq!(total, 3000);

    // Flip one bit inside block 2's compressed bytes.
    let offset = blocks[2]["offset"].as_u64().expect("offset") as usize + 16 + 5;
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[offset] ^= 0x04;
    std::fs::write(&path, &bytes).expect("write");
    let out = inspect(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0000000000000007.cold") && stderr.contains("block 2"),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["blocks"][2]["ok"], false);
    assert_eq!(v["blocks"][1]["ok"], true);

    // Not a segment at all.
    let other = dir.path().join("not.cold");
    std::fs::write(&other, vec![7u8; 100]).expect("write");
    let out = inspect(&other);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a cold segment"));
}

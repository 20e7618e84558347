//! Metadata filters: conditions on a memory's top-level metadata keys, checked against each
//! candidate during a search.

/// A condition on one top-level metadata key.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataCondition {
    Eq(serde_json::Value),
    In(Vec<serde_json::Value>),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetadataFilter {
    pub key: String,
    pub condition: MetadataCondition,
}

impl MetadataFilter {
    pub(crate) fn matches(&self, metadata: &serde_json::Map<String, serde_json::Value>) -> bool {
        let Some(v) = metadata.get(&self.key) else {
            return false;
        };
        match &self.condition {
            MetadataCondition::Eq(want) => json_eq(v, want),
            MetadataCondition::In(set) => set.iter().any(|w| json_eq(v, w)),
            MetadataCondition::Gt(x) => v.as_f64().is_some_and(|n| n > *x),
            MetadataCondition::Gte(x) => v.as_f64().is_some_and(|n| n >= *x),
            MetadataCondition::Lt(x) => v.as_f64().is_some_and(|n| n < *x),
            MetadataCondition::Lte(x) => v.as_f64().is_some_and(|n| n <= *x),
        }
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_operators() {
        let map = json!({"speaker": "Caroline", "session": 3, "score": 0.5})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let f = |key: &str, condition| MetadataFilter {
            key: key.to_owned(),
            condition,
        };
        assert!(f("speaker", MetadataCondition::Eq(json!("Caroline"))).matches(&map));
        assert!(!f("speaker", MetadataCondition::Eq(json!("Mel"))).matches(&map));
        assert!(f("session", MetadataCondition::Eq(json!(3.0))).matches(&map));
        assert!(f("session", MetadataCondition::In(vec![json!(1), json!(3)])).matches(&map));
        assert!(!f("session", MetadataCondition::In(vec![])).matches(&map));
        assert!(f("session", MetadataCondition::Gt(2.0)).matches(&map));
        assert!(!f("session", MetadataCondition::Gt(3.0)).matches(&map));
        assert!(f("session", MetadataCondition::Gte(3.0)).matches(&map));
        assert!(f("score", MetadataCondition::Lt(1.0)).matches(&map));
        assert!(f("score", MetadataCondition::Lte(0.5)).matches(&map));
        assert!(!f("score", MetadataCondition::Lte(0.4)).matches(&map));
        assert!(!f("speaker", MetadataCondition::Gt(0.0)).matches(&map));
        assert!(!f("missing", MetadataCondition::Eq(json!(null))).matches(&map));
    }
}

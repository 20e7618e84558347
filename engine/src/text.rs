//! Text analysis for BM25: Unicode word segmentation (UAX #29), case folding, and optional
//! English Snowball stemming.

use std::collections::HashMap;

use unicode_segmentation::UnicodeSegmentation;

/// Longest term kept, in bytes; longer "words" (hashes, base64) are dropped.
pub const MAX_TERM_BYTES: usize = 64;

/// BM25 term-frequency saturation.
pub const BM25_K1: f32 = 1.2;
/// BM25 length normalization.
pub const BM25_B: f32 = 0.75;

/// Turns text into terms.
pub struct Analyzer {
    stemmer: Option<rust_stemmers::Stemmer>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("stemming", &self.stemmer.is_some())
            .finish()
    }
}

impl Analyzer {
    pub fn new(stemming: bool) -> Analyzer {
        Analyzer {
            stemmer: stemming
                .then(|| rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English)),
        }
    }

    /// Every term of `text` in order, repeats included.
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for word in text.unicode_words() {
            let folded = word.to_lowercase();
            let term = match &self.stemmer {
                Some(s) => s.stem(&folded).into_owned(),
                None => folded,
            };
            if !term.is_empty() && term.len() <= MAX_TERM_BYTES {
                out.push(term);
            }
        }
        out
    }

    /// Distinct terms with their frequency, sorted by term, and the document length in terms.
    pub fn frequencies(&self, text: &str) -> (Vec<(String, u32)>, u32) {
        let terms = self.terms(text);
        let len = u32::try_from(terms.len()).unwrap_or(u32::MAX);
        let mut counts: HashMap<String, u32> = HashMap::new();
        for t in terms {
            *counts.entry(t).or_default() += 1;
        }
        let mut v: Vec<(String, u32)> = counts.into_iter().collect();
        v.sort_unstable();
        (v, len)
    }

    /// Distinct query terms (a repeated query word counts once).
    pub fn query_terms(&self, text: &str) -> Vec<String> {
        let mut terms = self.terms(text);
        terms.sort_unstable();
        terms.dedup();
        terms
    }
}

/// Inverse document frequency (the BM25+ variant that never goes negative).
pub fn idf(docs: u64, df: u64) -> f32 {
    let n = docs as f32;
    let df = df as f32;
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// One term's BM25 contribution.
pub fn bm25_term(idf: f32, tf: u32, doc_len: u32, avg_len: f32) -> f32 {
    let tf = tf as f32;
    let norm = 1.0 - BM25_B + BM25_B * (doc_len as f32) / avg_len.max(1.0);
    idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmentation_folding_and_stemming() {
        let a = Analyzer::new(true);
        assert_eq!(
            a.terms("Caroline's PAINTINGS were painted; café—naïve 42"),
            vec!["carolin", "paint", "were", "paint", "café", "naïv", "42"]
        );
        let plain = Analyzer::new(false);
        assert_eq!(plain.terms("Running runs"), vec!["running", "runs"]);
        assert_eq!(a.terms("Running runs"), vec!["run", "run"]);
        let (f, len) = a.frequencies("the cat and the hat");
        assert_eq!(len, 5);
        assert_eq!(f.iter().find(|(t, _)| t == "the").map(|x| x.1), Some(2));
        assert!(a.terms(&"x".repeat(65)).is_empty());
    }

    #[test]
    fn bm25_prefers_rare_terms_and_short_documents() {
        assert!(idf(1000, 1) > idf(1000, 500));
        assert!(idf(10, 10) > 0.0);
        let short = bm25_term(1.0, 1, 5, 10.0);
        let long = bm25_term(1.0, 1, 50, 10.0);
        assert!(short > long);
        // Saturation: ten times the frequency is far less than ten times the score.
        assert!(bm25_term(1.0, 10, 10, 10.0) < 3.0 * bm25_term(1.0, 1, 10, 10.0));
    }
}

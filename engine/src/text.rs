//! Text analysis for BM25: Unicode word segmentation (UAX #29), case folding, and optional
//! English Snowball stemming.
//!
//! Analysis runs for every stored memory (on the commit thread) and every text query. The
//! Snowball stemmer was most of its cost, so stems are remembered in a bounded cache (a word's
//! stem never changes; the terms are the same either way).

use std::collections::HashMap;

use parking_lot::Mutex;
use unicode_segmentation::UnicodeSegmentation;

/// Longest term kept, in bytes; longer "words" (hashes, base64) are dropped.
pub const MAX_TERM_BYTES: usize = 64;

/// BM25 term-frequency saturation.
pub const BM25_K1: f32 = 1.2;
/// BM25 length normalization.
pub const BM25_B: f32 = 0.75;

/// Words whose stems are remembered; the cache is emptied when it holds this many (a few MB).
const STEM_CACHE_WORDS: usize = 1 << 16;

/// Turns text into terms.
pub struct Analyzer {
    stemmer: Option<rust_stemmers::Stemmer>,
    /// Folded word → its stem. Natural text repeats a small vocabulary, and the Snowball
    /// stemmer costs far more than a lookup.
    stems: Mutex<HashMap<Box<str>, Box<str>>>,
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
            stems: Mutex::new(HashMap::new()),
        }
    }

    /// Every term of `text` in order, repeats included.
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for word in text.unicode_words() {
            let folded = word.to_lowercase();
            let term = match &self.stemmer {
                Some(s) => self.stem(s, folded),
                None => folded,
            };
            if !term.is_empty() && term.len() <= MAX_TERM_BYTES {
                out.push(term);
            }
        }
        out
    }

    fn stem(&self, stemmer: &rust_stemmers::Stemmer, word: String) -> String {
        if let Some(stem) = self.stems.lock().get(word.as_str()) {
            return String::from(&**stem);
        }
        let stem = stemmer.stem(&word).into_owned();
        if word.len() <= MAX_TERM_BYTES {
            let mut stems = self.stems.lock();
            if stems.len() >= STEM_CACHE_WORDS {
                stems.clear();
            }
            stems.insert(word.into_boxed_str(), Box::from(stem.as_str()));
        }
        stem
    }

    /// Distinct terms with their frequency, sorted by term, and the document length in terms.
    pub fn frequencies(&self, text: &str) -> (Vec<(String, u32)>, u32) {
        let mut terms = self.terms(text);
        let len = u32::try_from(terms.len()).unwrap_or(u32::MAX);
        terms.sort_unstable();
        let mut counted: Vec<(String, u32)> = Vec::with_capacity(terms.len());
        for t in terms {
            match counted.last_mut() {
                Some((last, n)) if *last == t => *n += 1,
                _ => counted.push((t, 1)),
            }
        }
        (counted, len)
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
    fn cached_stems_and_counts_match_a_fresh_analysis() {
        let cached = Analyzer::new(true);
        let text = "Running runs ran; the runner's RUNS, Σίσυφος ΣΊΣΥΦΟΣ naïve naïvety";
        let first = cached.frequencies(text);
        assert_eq!(
            cached.frequencies(text),
            first,
            "a cache hit gives the same terms"
        );
        assert_eq!(Analyzer::new(true).frequencies(text), first);
        let words: Vec<String> = text
            .unicode_words()
            .map(|w| {
                let s = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
                s.stem(&w.to_lowercase()).into_owned()
            })
            .collect();
        assert_eq!(cached.terms(text), words);
        // The final sigma folds as a whole word does.
        assert!(cached.terms("ΣΊΣΥΦΟΣ").iter().all(|t| t.ends_with('ς')));
        let (counts, len) = first;
        assert_eq!(len as usize, words.len());
        assert!(
            counts.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, distinct"
        );
        assert_eq!(
            counts.iter().map(|c| c.1 as usize).sum::<usize>(),
            words.len()
        );
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

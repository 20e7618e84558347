//! Vectors on the wire. A vector is a JSON array of numbers (`embedding`), or the base64 of its
//! little-endian `f32`s (`embedding_b64`, as OpenAI's `encoding_format: "base64"`): 384
//! dimensions are 2,048 characters that decode in about a microsecond, against ~4 KB of decimal
//! text that costs a float parse per number. Replies carry vectors in the form the request asks
//! (`embedding_format`).

use engram_engine::transfer;

use crate::error::ApiError;

/// How a reply writes vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VectorFormat {
    /// `embedding`: an array of numbers.
    #[default]
    Float,
    /// `embedding_b64`: base64 of little-endian `f32`s.
    Base64,
}

impl VectorFormat {
    /// Parses `float` or `base64` (the value of `embedding_format`).
    pub fn parse(field: &'static str, s: &str) -> Result<VectorFormat, ApiError> {
        match s {
            "float" => Ok(VectorFormat::Float),
            "base64" => Ok(VectorFormat::Base64),
            other => Err(ApiError::invalid(
                field,
                format!("must be float or base64, got {other:?}"),
            )),
        }
    }
}

/// Checks a vector sent as numbers: every value must be a finite 32-bit float (serde reads a
/// JSON number into an `f32` by rounding its `f64`, so 1e39 arrives as infinity).
pub fn from_floats(field: &'static str, v: Vec<f32>) -> Result<Vec<f32>, ApiError> {
    check_finite(field, &v)?;
    Ok(v)
}

/// Decodes a vector sent as base64 of little-endian `f32`s (the codec exports use too).
pub fn from_base64(field: &'static str, s: &str) -> Result<Vec<f32>, ApiError> {
    transfer::vector_from_base64(s).map_err(|message| ApiError::invalid(field, message))
}

/// The vector a request gives in either form; both at once is refused, naming the second.
pub fn either(
    (float_field, floats): (&'static str, Option<Vec<f32>>),
    (b64_field, b64): (&'static str, Option<String>),
) -> Result<Option<Vec<f32>>, ApiError> {
    match (floats, b64) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            b64_field,
            format!("cannot be given together with {float_field}"),
        )),
        (Some(v), None) => from_floats(float_field, v).map(Some),
        (None, Some(s)) => from_base64(b64_field, &s).map(Some),
        (None, None) => Ok(None),
    }
}

/// Base64 of a vector's little-endian `f32`s.
pub fn to_base64(v: &[f32]) -> String {
    transfer::vector_base64(v)
}

fn check_finite(field: &'static str, v: &[f32]) -> Result<(), ApiError> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ApiError::invalid(
            field,
            format!("value at index {i} is not a finite 32-bit float"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_bit() {
        let v = vec![0.1f32, -2.5, 1e-30, f32::MAX, -0.0, 0.333_333_34];
        let back = from_base64("embedding_b64", &to_base64(&v)).expect("valid");
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn base64_matches_the_openai_layout() {
        // 1.0f32 is 00 00 80 3f little-endian; 2.0f32 is 00 00 00 40.
        assert_eq!(to_base64(&[1.0, 2.0]), "AACAPwAAAEA=");
    }

    #[test]
    fn bad_vectors_are_refused_naming_the_field() {
        let e = from_base64("embedding_b64", "not base64!").expect_err("refused");
        assert!(e.message.contains("embedding_b64"), "{}", e.message);
        let e = from_base64("embedding_b64", "AACAPwAA").expect_err("refused");
        assert!(e.message.contains("6 bytes"), "{}", e.message);
        let nan = to_base64(&[0.5, f32::NAN]);
        let e = from_base64("embedding_b64", &nan).expect_err("refused");
        assert!(e.message.contains("index 1"), "{}", e.message);
        assert!(from_floats("embedding", vec![0.5, f32::INFINITY]).is_err());
        let e = either(("embedding", Some(vec![1.0])), ("embedding_b64", Some(nan)))
            .expect_err("refused");
        assert!(e
            .message
            .contains("embedding_b64 cannot be given together with embedding"));
        assert_eq!(either(("a", None), ("b", None)).expect("valid"), None);
    }
}

//! Vector arithmetic shared by the tiers and search: dot products and norms over `f32`, the
//! CRC that names a vector's content, and i8 quantization with integer dot products.
//!
//! A leaf module: it depends on nothing else in the crate, so every tier and the search code
//! can use it without the module graph pointing back up.

/// CRC32 of a vector's little-endian bytes: tells whether the HNSW copy is current.
pub fn vector_crc(v: &[f32]) -> u32 {
    // The bytes go to the hasher 256 at a time: fed a float at a time it took crc32fast's
    // 4-byte path (2–4% of a create's CPU at 64 clients), not its folding one.
    let mut h = crc32fast::Hasher::new();
    let mut buf = [0u8; 256];
    for chunk in v.chunks(64) {
        for (b, x) in buf.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&x.to_le_bytes());
        }
        h.update(&buf[..chunk.len() * 4]);
    }
    h.finalize()
}

/// Σ a·b of two slices of equal length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen independent lanes over exact chunks (no bounds checks): the compiler turns this
    // into SIMD multiply-adds.
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// Euclidean length.
pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Cosine similarity of a unit query with `v`.
pub(crate) fn cosine(unit_query: &[f32], v: &[f32]) -> f32 {
    let n = norm(v);
    if n == 0.0 {
        0.0
    } else {
        dot(unit_query, v) / n
    }
}

/// i8 codes and the scale that maps them back: `x ≈ code × scale`.
pub fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (0.0, vec![0; v.len()]);
    }
    let scale = max / 127.0;
    (
        scale,
        v.iter()
            .map(|x| round_half_away(x / scale).clamp(-127, 127) as i8)
            .collect(),
    )
}

/// `y.round() as i32` for |y| ≤ 2²³, without a call to libm's `roundf` for every element (the
/// baseline x86-64 target has no rounding instruction; a truncating conversion it has). The
/// fraction `y - trunc(y)` is exact at these magnitudes, so ties go away from zero as `round`'s.
fn round_half_away(y: f32) -> i32 {
    let t = y as i32;
    let frac = y - t as f32;
    t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)
}

/// Bytes as i8 codes (same size and alignment; every bit pattern is a valid `i8`).
pub(crate) fn as_i8(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}

/// Σ c·q over i8 codes (see [`i8_dot_norm`]).
pub(crate) fn i8_dot(c: &[i8], q: &[i8]) -> i32 {
    i8_dot_and::<false>(c, q).0
}

/// (Σ c·q, Σ c·c) over i8 codes, with integer multiply-adds in 32 lanes.
pub(crate) fn i8_dot_norm(c: &[i8], q: &[i8]) -> (i32, i32) {
    i8_dot_and::<true>(c, q)
}

/// |c·q| ≤ 127² per term and codes are at most a few thousand long, so i32 cannot overflow:
/// wrapping arithmetic only spares the overflow checks that would keep the loop from
/// vectorizing. `NORM`: also Σ c·c (compiled out when false).
fn i8_dot_and<const NORM: bool>(c: &[i8], q: &[i8]) -> (i32, i32) {
    let mut dot = [0i32; 32];
    let mut norm = [0i32; 32];
    for (c, x) in c.chunks_exact(32).zip(q.chunks_exact(32)) {
        for l in 0..32 {
            let cl = i32::from(c[l]);
            dot[l] = dot[l].wrapping_add(cl.wrapping_mul(i32::from(x[l])));
            if NORM {
                norm[l] = norm[l].wrapping_add(cl.wrapping_mul(cl));
            }
        }
    }
    let tail = c.len().min(q.len()) - c.len().min(q.len()) % 32;
    let mut d = dot.iter().fold(0i32, |a, b| a.wrapping_add(*b));
    let mut n = norm.iter().fold(0i32, |a, b| a.wrapping_add(*b));
    for (c, x) in c[tail..].iter().zip(&q[tail..]) {
        d = d.wrapping_add(i32::from(*c).wrapping_mul(i32::from(*x)));
        if NORM {
            n = n.wrapping_add(i32::from(*c).wrapping_mul(i32::from(*c)));
        }
    }
    (d, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_is_f32_round() {
        let mut ys: Vec<f32> = (-2600..=2600).map(|i| i as f32 * 0.05).collect();
        ys.extend([
            0.5,
            -0.5,
            1.5,
            -1.5,
            126.5,
            -126.5,
            0.49999997,
            -0.49999997,
            127.0,
            -127.0,
        ]);
        ys.extend([
            f32::EPSILON,
            -f32::EPSILON,
            0.0,
            -0.0,
            2.5000002,
            8_388_607.5,
        ]);
        for y in ys {
            assert_eq!(round_half_away(y), y.round() as i32, "{y}");
        }
    }

    #[test]
    fn vector_crc_is_the_crc_of_the_little_endian_bytes_at_every_length() {
        // Stored CRCs (search attributes, saved graphs) were computed a float at a time; the
        // chunked hashing must give the same value for every length.
        for n in [0usize, 1, 3, 63, 64, 65, 128, 384, 1000] {
            let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(vector_crc(&v), crc32fast::hash(&bytes), "length {n}");
        }
    }
}

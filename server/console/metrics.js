// Prometheus text exposition, read in the browser: sums over label sets and quantiles from the
// difference of two histogram scrapes (what happened between them).

/** Every sample of a scrape: [{name, labels, value}]. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of `name` over the label sets `keep` accepts; null when the metric is absent. */
export function total(samples, name, keep = () => true) {
  let found = false;
  let sum = 0;
  for (const s of samples) {
    if (s.name === name && keep(s.labels)) {
      found = true;
      sum += s.value;
    }
  }
  return found ? sum : null;
}

/** Cumulative bucket counts of histogram `name` (summed over label sets): Map(le → count). */
export function buckets(samples, name, keep = () => true) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !keep(s.labels)) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    out.set(le, (out.get(le) ?? 0) + s.value);
  }
  return out;
}

/**
 * The q-quantile of what was observed between two bucket scrapes, interpolated inside its
 * bucket as Prometheus's histogram_quantile does; null when nothing was observed.
 */
export function quantile(q, now, before = new Map()) {
  const bounds = [...now.keys()].sort((a, b) => a - b);
  const counts = bounds.map((le) => now.get(le) - (before.get(le) ?? 0));
  const observed = counts[counts.length - 1] ?? 0;
  if (observed <= 0) return null;
  const rank = q * observed;
  for (let i = 0; i < bounds.length; i += 1) {
    if (counts[i] >= rank) {
      if (bounds[i] === Infinity) return bounds[i - 1] ?? null;
      const lower = i === 0 ? 0 : bounds[i - 1];
      const below = i === 0 ? 0 : counts[i - 1];
      const inBucket = counts[i] - below;
      return inBucket > 0 ? lower + (bounds[i] - lower) * ((rank - below) / inBucket) : bounds[i];
    }
  }
  return null;
}

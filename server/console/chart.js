// Charts drawn as SVG elements (no library, nothing inline that the CSP would refuse).

const NS = 'http://www.w3.org/2000/svg';

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.append(e);
  return e;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/**
 * A line chart: `series` is [{name, points: [[x, y], …]}] (x in whatever unit `xFormat`
 * writes), `thresholds` dashed horizontal lines [{y, name}]. Returns an <svg>.
 */
export function lineChart(series, { xFormat = String, yFormat = String, yMax = null, thresholds = [], width = 560, height = 170, xRange = null, invert = false } = {}) {
  const pad = { l: 46, r: 10, t: 10, b: 22 };
  const svg = el('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img' });
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter((y) => y !== null && Number.isFinite(y));
  const [x0, x1] = xRange ?? [Math.min(...xs), Math.max(...xs)];
  const top = yMax ?? niceMax(Math.max(0, ...ys, ...thresholds.map((t) => t.y)));
  const w = width - pad.l - pad.r;
  const hgt = height - pad.t - pad.b;
  const px = (x) => pad.l + (x1 > x0 ? ((x - x0) / (x1 - x0)) * w : 0);
  // `invert`: 0 at the top (a quantity that grows downward, like decades below 1).
  const py = (y) => (invert ? pad.t + (Math.min(y, top) / top) * hgt : pad.t + hgt - (Math.min(y, top) / top) * hgt);
  for (let i = 0; i <= 4; i += 1) {
    const y = (top * i) / 4;
    el('line', { class: 'axis', x1: pad.l, x2: width - pad.r, y1: py(y), y2: py(y) }, svg);
    el('text', { x: pad.l - 6, y: py(y) + 3, 'text-anchor': 'end' }, svg).textContent = yFormat(y);
  }
  if (xs.length && Number.isFinite(x0) && Number.isFinite(x1)) {
    for (const [x, anchor] of [[x0, 'start'], [(x0 + x1) / 2, 'middle'], [x1, 'end']]) {
      el('text', { x: px(x), y: height - 6, 'text-anchor': anchor }, svg).textContent = xFormat(x);
    }
  }
  for (const t of thresholds) {
    el('line', { class: 'threshold', x1: pad.l, x2: width - pad.r, y1: py(t.y), y2: py(t.y) }, svg);
    el('text', { x: width - pad.r - 2, y: py(t.y) - 3, 'text-anchor': 'end' }, svg).textContent = t.name;
  }
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (!pts.length) return;
    el('path', { class: `line s${i}`, d: pts.map((p, k) => `${k ? 'L' : 'M'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join('') }, svg);
  });
  return svg;
}

/** A legend for `lineChart` series (same colours by position). */
export function legend(names) {
  const wrap = document.createElement('div');
  wrap.className = 'legend';
  names.forEach((name, i) => {
    const item = document.createElement('span');
    const svg = el('svg', { width: 10, height: 10, viewBox: '0 0 10 10' });
    el('rect', { width: 10, height: 10, rx: 2, class: `fill-s${i}` }, svg);
    item.append(svg, ` ${name}`);
    wrap.append(item);
  });
  return wrap;
}

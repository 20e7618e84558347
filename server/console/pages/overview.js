// Overview: health, tiers, WAL, embedding queue, snapshots and disk at a glance, and request
// rate, errors and p99 latency charted from /metrics every 2 s over the last 10 minutes.

import { api, getText } from '../api.js';
import { lineChart, legend } from '../chart.js';
import { buckets, parseMetrics, quantile, total } from '../metrics.js';
import { ageOf, errorBox, fill, fmtBytes, fmtDuration, fmtNumber, h } from '../ui.js';

const SAMPLE_MS = 2000;
const KEEP = 300; // 10 minutes of 2 s samples
const SNAPSHOTS_EVERY = 15; // samples between snapshot list reads (30 s)

// Kept across visits to the page, so the charts do not start empty each time.
const history = [];
let previous = null;
let snapshots = { at: 0, value: null, error: null };

function card(label, value, sub, extra) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub ? h('div', { class: 'sub' }, sub) : null, extra);
}

function tierBars(tiers) {
  const max = Math.max(1, ...Object.values(tiers));
  return h('div', { class: 'bars' }, ['working', 'warm', 'cold'].map((t) => {
    const fillEl = h('div', { class: `bar-fill ${t}` });
    fillEl.style.width = `${(100 * (tiers[t] ?? 0)) / max}%`;
    return h('div', { class: 'bar-row' }, h('span', {}, t), h('div', { class: 'bar-track' }, fillEl), h('span', { class: 'num' }, fmtNumber(tiers[t] ?? 0)));
  }));
}

/** One point of the charts from two scrapes. */
function point(now, before, seconds) {
  const isError = (l) => Number(l.status) >= 500;
  const isClient = (l) => Number(l.status) >= 400 && Number(l.status) < 500;
  const reqs = (m, keep) => total(m, 'engram_http_requests_total', keep) ?? 0;
  const p99 = quantile(0.99, buckets(now, 'engram_http_request_duration_seconds'), buckets(before, 'engram_http_request_duration_seconds'));
  return {
    t: Date.now(),
    rate: (reqs(now) - reqs(before)) / seconds,
    errors5xx: (reqs(now, isError) - reqs(before, isError)) / seconds,
    errors4xx: (reqs(now, isClient) - reqs(before, isClient)) / seconds,
    p99ms: p99 === null ? null : p99 * 1000,
  };
}

function charts() {
  const minutes = (t) => {
    const s = Math.round((Date.now() - t) / 1000);
    if (s < 5) return 'now';
    return s < 120 ? `-${s} s` : `-${Math.round(s / 60)} min`;
  };
  // From the first sample (at least the last minute) to now, at most the last 10 minutes.
  const first = history.length ? history[0].t : Date.now();
  const span = [Math.min(first, Date.now() - 60000), Date.now()];
  const series = (key) => history.map((p) => [p.t, p[key]]);
  return h('div', { class: 'grid wide' },
    h('div', { class: 'card' }, h('h2', {}, 'Requests per second'),
      lineChart([{ points: series('rate') }], { xFormat: minutes, yFormat: (y) => fmtNumber(y, y < 10 ? 1 : 0), xRange: span })),
    h('div', { class: 'card' }, h('h2', {}, 'Errors per second'),
      lineChart([{ points: series('errors4xx') }, { points: series('errors5xx') }], { xFormat: minutes, yFormat: (y) => fmtNumber(y, 1), xRange: span }),
      legend(['4xx', '5xx'])),
    h('div', { class: 'card' }, h('h2', {}, 'p99 latency (ms)'),
      lineChart([{ points: series('p99ms') }], { xFormat: minutes, yFormat: (y) => fmtNumber(y, y < 10 ? 1 : 0), xRange: span })));
}

async function readSnapshots(tick) {
  if (tick % SNAPSHOTS_EVERY !== 0 && snapshots.at) return;
  try {
    snapshots = { at: Date.now(), value: await api('GET', '/api/v1/admin/snapshots'), error: null };
  } catch (e) {
    snapshots = { at: Date.now(), value: null, error: e };
  }
}

function render(root, health, metrics, fsyncP99) {
  const last = history[history.length - 1];
  const snaps = snapshots.value?.snapshots ?? [];
  const newest = snaps[snaps.length - 1];
  const snapshotCard = snapshots.error
    ? card('Last snapshot', '–', snapshots.error.status === 403 || snapshots.error.status === 401 ? 'needs an admin key' : snapshots.error.message)
    : card('Last snapshot', newest ? `${fmtDuration(ageOf(newest.created_at))} ago` : 'none', newest ? `${snaps.length} kept · ${fmtBytes(snaps.reduce((a, s) => a + s.bytes, 0))}` : 'take one on the Backups page');
  const free = total(metrics, 'engram_storage_free_bytes');
  fill(root,
    h('h1', {}, 'Overview'),
    h('div', { class: 'grid' },
      card('Status', h('span', { class: `pill ${health.status === 'healthy' ? 'good' : 'bad'}` }, health.status), `version ${health.version} · up ${fmtDuration(health.uptime_seconds)}`),
      card('Memories', fmtNumber(Object.values(health.tiers).reduce((a, b) => a + b, 0)), null, tierBars(health.tiers)),
      card('WAL durable LSN', fmtNumber(health.wal.durable_lsn), `fsync p99 ${fsyncP99 === null ? '–' : `${fmtNumber(fsyncP99 * 1000, 2)} ms`} · ${fmtNumber(total(metrics, 'engram_wal_active_segments'))} segments`),
      card('Embedding queue', fmtNumber(health.embedding?.pending ?? 0), health.embedding ? `${health.embedding.provider}${health.embedding.model ? ` · ${health.embedding.model}` : ''}` : 'no embedder configured'),
      snapshotCard,
      card('Disk free', fmtBytes(free), 'on the data directory\'s file system'),
      card('Requests', last ? `${fmtNumber(last.rate, 1)}/s` : '–', last ? `p99 ${last.p99ms === null ? '–' : `${fmtNumber(last.p99ms, 1)} ms`} · 5xx ${fmtNumber(last.errors5xx, 2)}/s` : 'measuring…')),
    charts());
}

export function mount(root) {
  let stopped = false;
  let tick = 0;
  let firstScrape = null;
  async function sample() {
    try {
      const [health, text] = await Promise.all([api('GET', '/api/v1/health').catch((e) => {
        if (e.status === 503) return { status: 'unhealthy', version: '?', uptime_seconds: null, tiers: {}, wal: {} };
        throw e;
      }), getText('/metrics'), readSnapshots(tick)]);
      if (stopped) return;
      const metrics = parseMetrics(text);
      const now = Date.now();
      if (previous && now - previous.at < 4 * SAMPLE_MS) {
        history.push(point(metrics, previous.metrics, (now - previous.at) / 1000));
        while (history.length > KEEP) history.shift();
      }
      previous = { at: now, metrics };
      firstScrape ??= metrics;
      const fsync = quantile(0.99, buckets(metrics, 'engram_wal_fsync_duration_seconds'), buckets(firstScrape, 'engram_wal_fsync_duration_seconds'))
        ?? quantile(0.99, buckets(metrics, 'engram_wal_fsync_duration_seconds'));
      render(root, health, metrics, fsync);
    } catch (e) {
      if (!stopped) fill(root, h('h1', {}, 'Overview'), errorBox(e, 'Reading the daemon\'s health and metrics failed'));
    }
    tick += 1;
  }
  sample();
  const timer = setInterval(sample, SAMPLE_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

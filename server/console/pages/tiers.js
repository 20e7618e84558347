// Tiers: what each tier holds, the retention curve R = exp(−t/S) drawn from the live
// [tier_migration] settings, a dry-run migration plan, running migration and compaction, and
// the cold segments.

import { api } from '../api.js';
import { lineChart, legend } from '../chart.js';
import { confirmAction, errorBox, fill, fmtBytes, fmtDuration, fmtNumber, fmtTime, h, loading, toast } from '../ui.js';

/** S for a memory with `accesses` and `importance`, as engine/src/policy.rs computes it. */
function strength(policy, accesses, importance) {
  return policy.strength_seconds
    * (1 + policy.access_weight * Math.log(1 + accesses))
    * (1 + policy.importance_weight * Math.min(1, Math.max(0, importance)));
}

function retentionCard(policy) {
  const importance = h('input', { type: 'range', min: 0, max: 1, step: 0.05, value: 0.5, id: 'curve-importance' });
  const accesses = h('input', { type: 'number', min: 0, max: 1000, value: 3, id: 'curve-accesses' });
  const chart = h('div');
  const note = h('p', { class: 'small muted' });
  const warmAt = Math.exp(-policy.working_to_warm_after_seconds / policy.strength_seconds);
  const coldAt = Math.exp(-policy.warm_to_cold_after_seconds / policy.strength_seconds);
  function draw() {
    const imp = Number(importance.value);
    const acc = Math.max(0, Number(accesses.value) || 0);
    const kinds = [[0, 0], [acc, imp], [10, 1]];
    const strengths = kinds.map(([a, i]) => strength(policy, a, i));
    const horizon = 1.15 * policy.warm_to_cold_after_seconds * (strengths[1] / policy.strength_seconds);
    // Decades below 1: log10 of R, so both thresholds show however far apart they are.
    const decades = (t, s) => (t / s) / Math.LN10;
    const bottom = 1.3 * -Math.log10(coldAt);
    // Each line ends where it leaves the chart (the retention only falls further).
    const series = strengths.map((s) => ({
      points: Array.from({ length: 121 }, (_, k) => {
        const t = (horizon * k) / 120;
        return [t, decades(t, s)];
      }).filter(([t, d], k, all) => d <= bottom || (k > 0 && all[k - 1][1] <= bottom))
        .map(([t, d]) => (d <= bottom ? [t, d] : [t * (bottom / d), bottom])),
    }));
    const thresholds = [
      { y: -Math.log10(warmAt), name: `leaves working (R = ${warmAt.toPrecision(2)})` },
      { y: -Math.log10(coldAt), name: `leaves warm (R = ${coldAt.toPrecision(2)})` },
    ];
    fill(chart,
      lineChart(series, {
        invert: true,
        thresholds,
        // Down to a little past the cold threshold: below it nothing changes.
        yMax: bottom,
        xRange: [0, horizon],
        xFormat: (t) => fmtDuration(t),
        yFormat: (d) => (d === 0 ? '1' : `1e-${fmtNumber(d, d < 3 ? 1 : 0)}`),
        width: 960,
        height: 250,
      }),
      legend(['importance 0, never accessed', `importance ${imp}, ${acc} accesses`, 'importance 1, 10 accesses']));
    const s = strengths[1];
    const stays = imp >= policy.min_importance_to_stay_warm;
    note.textContent = `A memory of importance ${imp} read ${acc} times (S = ${fmtDuration(s)}) leaves working after ${fmtDuration(policy.working_to_warm_after_seconds * s / policy.strength_seconds)} idle`
      + (stays ? `, and never goes cold by itself (importance ≥ ${policy.min_importance_to_stay_warm}).` : `, and warm after ${fmtDuration(policy.warm_to_cold_after_seconds * s / policy.strength_seconds)} idle.`);
  }
  importance.addEventListener('input', draw);
  accesses.addEventListener('input', draw);
  draw();
  return h('div', { class: 'card section' },
    h('h2', {}, 'Retention R = exp(−t / S)'),
    h('p', { class: 'small muted' }, `S = ${fmtDuration(policy.strength_seconds)} × (1 + ${policy.access_weight}·ln(1 + accesses)) × (1 + ${policy.importance_weight}·importance); t = time since the last access. Log scale. `,
      policy.enabled ? `The policy runs every ${fmtDuration(policy.interval_seconds)}.` : 'The policy runs only on request (tier_migration.enabled = false).'),
    h('div', { class: 'form' }, h('label', {}, 'Importance', importance), h('label', {}, 'Accesses', accesses)),
    chart, note);
}

function tierTable(tiers) {
  return h('div', { class: 'table-wrap section' }, h('table', { id: 'tier-table' },
    h('thead', {}, h('tr', {}, ['Tier', 'Memories', 'On disk', 'Avg importance', 'Avg accesses', 'Oldest access'].map((c, i) => h('th', { class: i && i < 5 ? 'num' : '' }, c)))),
    h('tbody', {}, ['working', 'warm', 'cold'].map((t) => {
      const x = tiers[t];
      return h('tr', {}, h('td', {}, t), h('td', { class: 'num' }, fmtNumber(x.count)), h('td', { class: 'num' }, fmtBytes(x.bytes_on_disk)),
        h('td', { class: 'num' }, fmtNumber(x.avg_importance, 2)), h('td', { class: 'num' }, fmtNumber(x.avg_access_count, 1)), h('td', {}, fmtTime(x.oldest_access)));
    }))));
}

function segmentTable(segments) {
  if (!segments.length) return h('div', { class: 'card empty' }, 'No cold segments.');
  return h('div', { class: 'table-wrap' }, h('table', { id: 'segment-table' },
    h('thead', {}, h('tr', {}, ['Segment', 'Entries', 'Live', 'Dead', 'Size'].map((c, i) => h('th', { class: i ? 'num' : '' }, c)))),
    h('tbody', {}, segments.map((s) => h('tr', {},
      h('td', { class: 'mono' }, String(s.id)), h('td', { class: 'num' }, fmtNumber(s.entries)), h('td', { class: 'num' }, fmtNumber(s.live)),
      h('td', { class: 'num' }, s.entries ? `${fmtNumber((100 * (s.entries - s.live)) / s.entries, 0)}%` : '–'), h('td', { class: 'num' }, fmtBytes(s.bytes)))))));
}

function planView(plan) {
  const routes = Object.entries(plan.by_route ?? {}).map(([k, v]) => `${k.replaceAll('_', ' ')}: ${fmtNumber(v)}`).join(' · ');
  if (!plan.moves.length) return h('p', { class: 'muted', id: 'plan' }, 'The policy would move nothing now.');
  return h('div', { id: 'plan' },
    h('p', {}, `${fmtNumber(plan.planned)} moves planned${routes ? ` (${routes})` : ''}${plan.moves_truncated ? '; the first 1,000 listed' : ''}.`),
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Memory', 'From', 'To', 'Retention', 'Why'].map((c) => h('th', {}, c)))),
      h('tbody', {}, plan.moves.slice(0, 100).map((m) => h('tr', {},
        h('td', { class: 'mono small' }, h('a', { href: `#/memories?id=${encodeURIComponent(m.id)}` }, m.id)), h('td', {}, m.from), h('td', {}, m.to),
        h('td', { class: 'num' }, m.retention === null || m.retention === undefined ? '–' : Number(m.retention).toPrecision(3)), h('td', { class: 'small' }, m.reason)))))),
    plan.moves.length > 100 ? h('p', { class: 'small muted' }, `…and ${fmtNumber(plan.moves.length - 100)} more.`) : null);
}

export function mount(root) {
  let stopped = false;
  const planBox = h('div');

  async function dryRun() {
    fill(planBox, loading('Planning…'));
    try {
      fill(planBox, planView(await api('POST', '/api/v1/admin/migrate', { dry_run: true })));
    } catch (e) {
      fill(planBox, errorBox(e, 'Planning failed'));
    }
  }

  async function migrate() {
    if (!await confirmAction('Run the tier migration now?', 'Memories move between tiers as the plan says; moves to cold seal new segments.', { action: 'Migrate' })) return;
    try {
      const r = await api('POST', '/api/v1/admin/migrate', { dry_run: false });
      toast(`Moved ${fmtNumber(r.moved)} memories in ${fmtNumber(r.took_ms)} ms.`);
      load();
    } catch (e) {
      toast(`Migration failed: ${e.message}`, 'bad');
    }
  }

  async function compact() {
    if (!await confirmAction('Compact now?', 'Cold segments with dead entries are rewritten and small ones merged; RocksDB is compacted.', { action: 'Compact' })) return;
    try {
      const r = await api('POST', '/api/v1/admin/compact');
      toast(`Compacted: ${r.segments_in} → ${r.segments_out} segments, ${fmtBytes(r.bytes_before)} → ${fmtBytes(r.bytes_after)}.`);
      load();
    } catch (e) {
      toast(`Compaction failed: ${e.message}`, 'bad');
    }
  }

  async function load() {
    try {
      const t = await api('GET', '/api/v1/tiers');
      if (stopped) return;
      fill(root,
        h('h1', {}, 'Tiers'),
        tierTable(t.tiers),
        retentionCard(t.policy),
        h('div', { class: 'card section' },
          h('h2', {}, 'Migration'),
          h('div', { class: 'toolbar' },
            h('button', { id: 'plan-button', onclick: dryRun }, 'Plan (dry run)'),
            h('button', { class: 'primary', id: 'migrate-button', onclick: migrate }, 'Run migration'),
            h('button', { id: 'compact-button', onclick: compact }, 'Compact')),
          planBox),
        h('h2', {}, `Cold segments (${t.cold_segments.length})`),
        segmentTable(t.cold_segments));
    } catch (e) {
      fill(root, h('h1', {}, 'Tiers'), errorBox(e, 'Reading the tiers failed'));
    }
  }

  load();
  return () => { stopped = true; };
}

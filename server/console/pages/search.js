// Search playground: a query, its mode, weights, filters and limit; each result with a stacked
// bar of what made its score (`explain_score`).

import { api } from '../api.js';
import { errorBox, fill, fmtNumber, h, loading, setParams } from '../ui.js';

const COMPONENTS = ['semantic', 'text', 'importance', 'recency', 'context'];
const DEFAULT_WEIGHTS = { semantic: 0.3, text: 0.7, importance: 0.05, recency: 0.05, context: 0.4 };

function slider(name, value) {
  const out = h('span', { class: 'mono' }, Number(value).toFixed(2));
  const input = h('input', { type: 'range', min: 0, max: 1, step: 0.05, value, name: `w_${name}`, id: `weight-${name}` });
  input.addEventListener('input', () => { out.textContent = Number(input.value).toFixed(2); });
  return h('label', {}, h('span', {}, `${name} weight `, out), input);
}

/** The sum of a result's score components. */
function contributions(explanation) {
  return COMPONENTS.reduce((a, c) => a + Math.max(0, explanation?.[c]?.contribution ?? 0), 0);
}

/** A stacked bar of one result's components, as a share of `scale` (the best result's sum). */
function scoreBar(explanation, scale) {
  const bar = h('div', { class: 'stack', title: 'contributions to the score' });
  const parts = [];
  for (const c of COMPONENTS) {
    const part = explanation?.[c];
    if (!part || !(part.contribution > 0)) continue;
    const span = h('span', { class: `c-${c}`, title: `${c}: ${part.value.toFixed(3)} × ${part.weight} = ${part.contribution.toFixed(3)}` });
    span.style.width = `${(100 * part.contribution) / Math.max(scale, 1e-9)}%`;
    bar.append(span);
    parts.push(`${c} ${part.contribution.toFixed(3)}`);
  }
  return [bar, h('div', { class: 'small muted' }, parts.join(' · ') || 'no components')];
}

export function mount(root, params) {
  const text = h('input', { name: 'query_text', id: 'query-text', value: params.get('q') ?? '', placeholder: 'what to recall', required: true });
  const mode = h('select', { name: 'search_type', id: 'search-mode' }, ['hybrid', 'semantic', 'text'].map((m) => h('option', { value: m }, m)));
  mode.value = params.get('mode') ?? 'hybrid';
  const namespace = h('input', { name: 'namespace', id: 'search-namespace', value: params.get('namespace') ?? 'default' });
  const limit = h('input', { name: 'limit', type: 'number', min: 1, max: 1000, value: params.get('limit') ?? 10 });
  const anyTags = h('input', { name: 'tags', placeholder: 'any of, comma separated', value: params.get('tags') ?? '' });
  const minImportance = h('input', { name: 'min_importance', type: 'number', min: 0, max: 1, step: 0.05, placeholder: '0' });
  const cold = h('input', { type: 'checkbox', name: 'include_cold' });
  const sliders = COMPONENTS.map((c) => slider(c, DEFAULT_WEIGHTS[c]));
  const results = h('div', { id: 'search-results' });
  const form = h('form', { class: 'card section' },
    h('div', { class: 'form' },
      h('label', { class: 'grow' }, 'Query', text),
      h('label', {}, 'Mode', mode),
      h('label', {}, 'Namespace', namespace),
      h('label', {}, 'Limit', limit),
      h('button', { class: 'primary', type: 'submit', id: 'search-go' }, 'Search')),
    h('div', { class: 'form' }, sliders),
    h('div', { class: 'form' },
      h('label', {}, 'Tags', anyTags),
      h('label', {}, 'Min importance', minImportance),
      h('label', { class: 'inline' }, cold, 'include cold tier')));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = {
      query_text: text.value,
      search_type: mode.value,
      namespace: namespace.value.trim() || 'default',
      limit: Number(limit.value) || 10,
      explain_score: true,
    };
    if (mode.value === 'hybrid') {
      body.hybrid_weights = Object.fromEntries(COMPONENTS.map((c) => [c, Number(form.querySelector(`[name=w_${c}]`).value)]));
    }
    const tagList = anyTags.value.split(',').map((t) => t.trim()).filter(Boolean);
    if (tagList.length) body.tags = { any_of: tagList };
    if (minImportance.value !== '') body.importance_range = { min: Number(minImportance.value), max: 1 };
    if (cold.checked) body.include_cold = true;
    setParams(new URLSearchParams({ q: text.value, mode: mode.value, namespace: body.namespace, limit: String(body.limit), tags: anyTags.value }));
    fill(results, loading('Searching…'));
    try {
      const r = await api('POST', '/api/v1/search', body);
      show(r);
    } catch (e) {
      fill(results, errorBox(e, 'Search failed'));
    }
  });

  function show(r) {
    const warnings = (r.warnings ?? []).map((w) => h('div', { class: 'error' }, w));
    if (!r.results.length) {
      fill(results, warnings, h('div', { class: 'card empty' }, 'Nothing matched.'));
      return;
    }
    const scale = Math.max(...r.results.map((x) => contributions(x.explanation)));
    fill(results,
      warnings,
      h('div', { class: 'toolbar' },
        h('span', { class: 'muted small' }, `${r.results.length} of ${fmtNumber(r.total_count)} · ${fmtNumber(r.query_time_ms, 2)} ms`),
        h('span', { class: 'spacer' }),
        h('div', { class: 'legend' }, COMPONENTS.map((c) => h('span', {}, h('i', { class: `c-${c}` }), c)))),
      r.results.map((x, i) => h('div', { class: 'result', 'data-id': x.memory.id },
        h('div', { class: 'rank' }, `${i + 1}`),
        h('div', {},
          h('div', { class: 'content' }, x.memory.content),
          h('div', { class: 'small muted' },
            h('a', { href: `#/memories?id=${encodeURIComponent(x.memory.id)}` }, x.memory.id), ` · ${x.memory.tier} · importance ${x.memory.importance_score}`,
            x.distance === null || x.distance === undefined ? '' : ` · distance ${x.distance.toFixed(4)}`)),
        h('div', { class: 'score' }, h('div', {}, h('strong', {}, x.score.toFixed(4))), scoreBar(x.explanation, scale)))));
  }

  fill(root, h('h1', {}, 'Search playground'), form, results);
  if (text.value) form.requestSubmit();
  text.focus();
  return null;
}

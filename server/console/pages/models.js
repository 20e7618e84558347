// Embedding models: the store's own embedder, and its embedding migrations — a new model's
// vector space filled in the background while the store serves, watched here (progress, rate,
// pending changes, errors), paused or resumed, switched to (activate) and back, and dropped;
// once one is active, the store's own (old) vectors can be dropped for good.
// Refreshed every 2 s while shown.

import { api } from '../api.js';
import { confirmAction, errorBox, fill, fmtNumber, fmtTime, h, toast } from '../ui.js';

const BASE = '/api/v1/admin/embedding/migrations';
const OWN = '/api/v1/admin/embedding/own-vectors';

function statePill(m) {
  if (m.active) return h('span', { class: 'pill good' }, 'active');
  const kind = { ready: 'good', paused: 'warn', running: '' }[m.state] ?? '';
  return h('span', { class: `pill ${kind}` }, m.state);
}

function progressBar(m) {
  const pct = Math.round(100 * Math.min(1, m.progress));
  // Widths through the CSSOM: the console's CSP allows no inline style attributes.
  const bar = h('div', { class: 'bar-fill' });
  bar.style.width = `${pct}%`;
  return h('div', { class: 'bar-row' },
    h('span', {}, `${pct}%`),
    h('div', { class: 'bar-track', title: `${fmtNumber(m.vectors)} of ${fmtNumber(m.searchable)} searchable memories` }, bar),
    h('span', { class: 'small muted' }, `${fmtNumber(m.vectors)} / ${fmtNumber(m.searchable)}`));
}

function startForm(onStarted) {
  const provider = h('select', { name: 'provider', id: 'migration-provider' },
    ['local', 'openai', 'ollama'].map((p) => h('option', { value: p }, p)));
  const model = h('input', { name: 'model', id: 'migration-model', placeholder: 'all-MiniLM-L6-v2' });
  const dimensions = h('input', { name: 'dimensions', id: 'migration-dimensions', type: 'number', min: 1, max: 4096, value: 384, required: true });
  const url = h('input', { name: 'url', id: 'migration-url', placeholder: 'https://api.openai.com/v1' });
  const keyEnv = h('input', { name: 'api_key_env', id: 'migration-key-env', placeholder: 'OPENAI_API_KEY' });
  const urlLabel = h('label', { class: 'grow' }, 'URL', url);
  const keyLabel = h('label', {}, 'API key variable', keyEnv);
  const button = h('button', { class: 'primary', type: 'submit', id: 'start-migration' }, 'Start migration');
  // `display` rather than `hidden`: the form's labels are flex boxes, which `hidden` loses to.
  const sync = () => {
    urlLabel.style.display = provider.value === 'local' ? 'none' : '';
    keyLabel.style.display = provider.value === 'openai' ? '' : 'none';
  };
  provider.addEventListener('change', sync);
  sync();
  const form = h('form', { class: 'card section', id: 'migration-form' },
    h('h2', {}, 'Start a migration'),
    h('p', { class: 'small muted' },
      'Every memory is re-embedded with the model into a new vector space in the background, following the writes made meanwhile. '
      + 'Searches keep the current vectors until the new space is ready and activated.'),
    h('div', { class: 'form' },
      h('label', {}, 'Provider', provider),
      h('label', {}, 'Model', model),
      h('label', {}, 'Dimensions', dimensions),
      urlLabel, keyLabel, button));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { provider: provider.value, dimensions: Number(dimensions.value) };
    if (model.value.trim()) body.model = model.value.trim();
    if (provider.value !== 'local' && url.value.trim()) body.url = url.value.trim();
    if (provider.value === 'openai' && keyEnv.value.trim()) body.api_key_env = keyEnv.value.trim();
    button.disabled = true;
    try {
      const m = await api('POST', BASE, body);
      toast(`Migration ${m.id} started (${m.provider} ${m.model}, ${m.dimensions} dimensions).`);
      onStarted();
    } catch (e) {
      toast(`Starting failed: ${e.message}`, 'bad');
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export function mount(root) {
  let stopped = false;
  let timer = null;
  const list = h('div', { id: 'migrations' });

  async function act(m, action, label) {
    try {
      const out = await api('POST', `${BASE}/${m.id}/${action}`, {});
      toast(`Migration ${out.id}: ${label}.`);
    } catch (e) {
      toast(`${label[0].toUpperCase()}${label.slice(1)} failed: ${e.message}`, 'bad');
    }
    load();
  }

  async function drop(m) {
    if (!await confirmAction(`Drop migration ${m.id}?`,
      `Its ${fmtNumber(m.vectors)} vectors (${m.model}, ${m.dimensions} dimensions) and graph are deleted; starting again means embedding every memory again.`,
      { typed: 'drop', action: 'Drop' })) return;
    try {
      await api('DELETE', `${BASE}/${m.id}`);
      toast(`Migration ${m.id} dropped.`);
    } catch (e) {
      toast(`Dropping failed: ${e.message}`, 'bad');
    }
    load();
  }

  async function dropOwn(active) {
    if (!await confirmAction('Drop the store\'s own vectors?',
      `Migration ${active.id} (${active.model}) then holds every vector of the store for good: the old model's graph and vectors are deleted, and searches can no longer switch back to them.`,
      { typed: 'drop', action: 'Drop' })) return;
    try {
      await api('DELETE', OWN);
      toast('The store\'s own vectors were dropped.');
    } catch (e) {
      toast(`Dropping failed: ${e.message}`, 'bad');
    }
    load();
  }

  function row(m, own) {
    const buttons = [];
    if (!m.active) {
      buttons.push(m.state === 'paused'
        ? h('button', { class: 'ghost small', 'data-action': 'resume', onclick: () => act(m, 'resume', 'resumed') }, 'Resume')
        : h('button', { class: 'ghost small', 'data-action': 'pause', onclick: () => act(m, 'pause', 'paused') }, 'Pause'));
      buttons.push(h('button', {
        class: 'primary small', 'data-action': 'activate', disabled: m.state !== 'ready',
        title: m.state === 'ready' ? 'Switch the store\'s searches to this space' : 'Ready once every memory has a vector',
        onclick: () => act(m, 'activate', 'activated'),
      }, 'Activate'));
      buttons.push(h('button', { class: 'ghost small', 'data-action': 'drop', onclick: () => drop(m) }, 'Drop'));
    } else if (!own.dropped) {
      buttons.push(h('button', { class: 'ghost small', 'data-action': 'deactivate', onclick: () => act(m, 'deactivate', 'deactivated') }, 'Deactivate'));
    }
    return h('tr', { 'data-id': m.id },
      h('td', { class: 'num' }, m.id),
      h('td', {}, h('div', {}, `${m.provider} · ${m.model}`), h('div', { class: 'small muted' }, `since ${fmtTime(m.created_at)}`)),
      h('td', { class: 'num' }, m.dimensions),
      h('td', { class: 'state' }, statePill(m)),
      h('td', {}, progressBar(m)),
      h('td', { class: 'num' }, fmtNumber(m.pending_changes)),
      h('td', { class: 'num' }, m.rate_per_second > 0 ? `${fmtNumber(m.rate_per_second, 1)}/s` : '—'),
      h('td', { class: 'small' }, m.last_error ? h('span', { class: 'pill bad', title: m.last_error }, 'error') : ''),
      h('td', { class: 'nowrap' }, buttons));
  }

  async function load() {
    clearTimeout(timer);
    try {
      const [{ migrations }, own] = await Promise.all([api('GET', BASE), api('GET', OWN)]);
      if (stopped) return;
      const active = migrations.find((m) => m.active);
      const errors = migrations.filter((m) => m.last_error);
      let ownNote = null;
      if (own.dropped) {
        ownNote = h('div', { class: 'sub', id: 'own-vectors' }, own.swept
          ? 'The store\'s own vectors were dropped: this migration holds all of them.'
          : `The store's own vectors were dropped; the sweep is rewriting the records (${fmtNumber(own.stripped)} so far).`);
      } else if (active) {
        ownNote = h('div', { class: 'sub', id: 'own-vectors' }, 'The store\'s own vectors are kept until you drop them. ',
          h('button', { class: 'ghost small', 'data-action': 'drop-own', onclick: () => dropOwn(active) }, 'Drop the old vectors'));
      }
      fill(list,
        h('div', { class: 'card section', id: 'search-space' },
          h('div', { class: 'label' }, 'Searches rank'),
          h('div', { class: 'value' }, active ? `migration ${active.id}` : 'the store\'s own vectors'),
          h('div', { class: 'sub' }, active
            ? `${active.provider} · ${active.model}, ${active.dimensions} dimensions: query texts are embedded with it, and vectors sent with writes must have its dimensions.`
            : 'No migration is active.'),
          ownNote),
        errors.map((m) => h('div', { class: 'error' }, h('strong', {}, `Migration ${m.id}: `), m.last_error)),
        migrations.length
          ? h('div', { class: 'table-wrap section' }, h('table', { id: 'migration-table' },
            h('thead', {}, h('tr', {}, ['#', 'Model', 'Dims', 'State', 'Vectors', 'Pending', 'Rate', '', ''].map((c, i) => h('th', { class: [0, 2, 5, 6].includes(i) ? 'num' : '' }, c)))),
            h('tbody', {}, migrations.map((m) => row(m, own)))))
          : h('div', { class: 'card empty' }, 'No embedding migrations.'));
    } catch (e) {
      fill(list, errorBox(e, 'Reading the migrations failed'));
    }
    if (!stopped) timer = setTimeout(load, 2000);
  }

  fill(root, h('h1', {}, 'Embedding models'), list, startForm(load));
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

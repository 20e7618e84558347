// Memories: filter by namespace, tier, status and tag, page with the cursor, open one to see
// every field (and its vector on request), edit importance, tags and content, delete or purge.

import { api } from '../api.js';
import { confirmAction, errorBox, fill, fmtNumber, fmtShort, fmtTime, h, loading, setParams, toast } from '../ui.js';

const RECENT = 'engram.namespaces';
const PAGE = 50;

function recentNamespaces() {
  try {
    return JSON.parse(localStorage.getItem(RECENT)) ?? [];
  } catch {
    return [];
  }
}

function rememberNamespaces(names) {
  const all = [...new Set([...names, ...recentNamespaces()])].slice(0, 50);
  localStorage.setItem(RECENT, JSON.stringify(all));
  return all;
}

function tags(list) {
  return (list ?? []).map((t) => h('span', { class: 'tag' }, t));
}

function filtersForm(params, onApply) {
  const field = (name, control) => h('label', {}, name, control);
  const select = (name, options) => {
    const s = h('select', { name }, options.map(([v, label]) => h('option', { value: v }, label)));
    s.value = params.get(name) ?? '';
    return s;
  };
  const namespace = h('input', { name: 'namespace', list: 'namespaces', placeholder: 'all namespaces', value: params.get('namespace') ?? '' });
  const datalist = h('datalist', { id: 'namespaces' }, recentNamespaces().map((n) => h('option', { value: n })));
  const form = h('form', { class: 'form', id: 'memory-filters' },
    field('Namespace', namespace), datalist,
    field('Tier', select('tier', [['', 'any'], ['working', 'working'], ['warm', 'warm'], ['cold', 'cold']])),
    field('Status', select('status', [['', 'not deleted'], ['active', 'active'], ['archived', 'archived'], ['deleted', 'deleted']])),
    field('Tag', h('input', { name: 'tag', value: params.get('tag') ?? '', placeholder: 'any' })),
    h('button', { class: 'primary', type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    onApply(new URLSearchParams([...data].map(([k, v]) => [k, String(v).trim()])));
  });
  return form;
}

function listQuery(params, cursor) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  for (const k of ['namespace', 'tier', 'status', 'tag']) if (params.get(k)) q.set(k, params.get(k));
  if (cursor) q.set('cursor', cursor);
  return `/api/v1/memories?${q}`;
}

function vectorView(m) {
  const v = m.embedding ?? [];
  const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  return h('div', {}, `${v.length} dimensions, norm ${norm.toFixed(4)}`,
    h('pre', {}, `[${v.slice(0, 8).map((x) => x.toPrecision(5)).join(', ')}${v.length > 8 ? ', …' : ''}]`));
}

export function mount(root, initial) {
  let params = new URLSearchParams(initial);
  let stopped = false;
  const table = h('div');
  const detail = h('div', { class: 'card detail', id: 'memory-detail' });
  let rows = [];
  let cursor = null;

  function layout() {
    fill(root, h('h1', {}, 'Memories'), filtersForm(params, apply), h('div', { class: 'split' }, table, detail));
  }

  function apply(next) {
    next.delete('id');
    params = next;
    setParams(params);
    layout();
    reload();
  }

  function renderTable() {
    if (!rows.length) {
      fill(table, h('div', { class: 'table-wrap' }, h('div', { class: 'empty' }, 'No memories match.')));
      return;
    }
    const selected = params.get('id');
    // With one namespace chosen, its column says nothing.
    const showNamespace = !params.get('namespace');
    const columns = ['Created', showNamespace ? 'Namespace' : null, 'Content', 'Importance', 'Tier', 'Status', 'Tags'].filter(Boolean);
    const body = rows.map((m) => h('tr', {
      class: `clickable${m.id === selected ? ' selected' : ''}`, 'data-id': m.id, onclick: () => open(m.id),
    },
    h('td', { class: 'small muted nowrap', title: fmtTime(m.created_at) }, fmtShort(m.created_at)),
    showNamespace ? h('td', { class: 'nowrap' }, m.namespace) : null,
    h('td', { class: 'ellipsis', title: m.content }, m.content),
    h('td', { class: 'num' }, fmtNumber(m.importance_score, 2)),
    h('td', {}, m.tier),
    h('td', {}, m.status),
    h('td', {}, tags(m.tags))));
    fill(table,
      h('div', { class: 'table-wrap' }, h('table', { id: 'memory-table' },
        h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c === 'Importance' ? 'num' : '' }, c)))),
        h('tbody', {}, body))),
      h('div', { class: 'toolbar' },
        h('span', { class: 'muted small' }, `${rows.length} shown`),
        cursor ? h('button', { onclick: more, id: 'load-more' }, 'Load more') : h('span', { class: 'muted small' }, '· end of list')));
  }

  async function reload() {
    rows = [];
    cursor = null;
    fill(table, loading());
    await more();
    if (params.get('id')) open(params.get('id'));
    else fill(detail, h('p', { class: 'muted' }, 'Select a memory to see every field, edit it or delete it.'));
  }

  async function more() {
    try {
      const page = await api('GET', listQuery(params, cursor));
      if (stopped) return;
      rows.push(...page.memories);
      cursor = page.next_cursor;
      const names = rememberNamespaces(page.memories.map((m) => m.namespace));
      fill(document.getElementById('namespaces') ?? h('datalist'), names.map((n) => h('option', { value: n })));
      renderTable();
    } catch (e) {
      fill(table, errorBox(e, 'Listing memories failed'));
    }
  }

  async function open(id, withVector = false) {
    params.set('id', id);
    setParams(params);
    for (const tr of table.querySelectorAll('tr[data-id]')) tr.classList.toggle('selected', tr.dataset.id === id);
    fill(detail, loading());
    try {
      const m = await api('GET', `/api/v1/memories/${encodeURIComponent(id)}${withVector ? '?include_embedding=true' : ''}`);
      if (!stopped) showDetail(m, withVector);
    } catch (e) {
      fill(detail, errorBox(e, 'Reading the memory failed'));
    }
  }

  function showDetail(m, withVector) {
    const row = (k, v) => [h('dt', {}, k), h('dd', {}, v ?? '–')];
    const importance = h('input', { type: 'number', min: 0, max: 1, step: 0.01, value: m.importance_score, id: 'edit-importance' });
    const tagInput = h('input', { value: (m.tags ?? []).join(', '), id: 'edit-tags', placeholder: 'comma separated' });
    const content = h('textarea', { id: 'edit-content' });
    content.value = m.content;
    const save = h('button', { class: 'primary', type: 'submit', id: 'save-memory' }, 'Save');
    const form = h('form', {},
      h('h3', {}, 'Edit'),
      h('label', {}, 'Importance (0–1)', importance),
      h('label', {}, 'Tags', tagInput),
      h('label', {}, 'Content', content),
      h('div', { class: 'actions' }, save));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const patch = {};
      const imp = Number(importance.value);
      if (importance.value === '' || Number.isNaN(imp) || imp < 0 || imp > 1) {
        toast('Importance must be a number from 0 to 1.', 'bad');
        return;
      }
      if (imp !== m.importance_score) patch.importance_score = imp;
      const newTags = tagInput.value.split(',').map((t) => t.trim()).filter(Boolean);
      if (JSON.stringify(newTags) !== JSON.stringify(m.tags ?? [])) patch.tags = newTags;
      if (content.value !== m.content) patch.content = content.value;
      if (!Object.keys(patch).length) {
        toast('Nothing changed.');
        return;
      }
      save.disabled = true;
      try {
        const updated = await api('PATCH', `/api/v1/memories/${encodeURIComponent(m.id)}`, patch);
        toast(`Saved: version ${updated.version}.`);
        rows = rows.map((r) => (r.id === updated.id ? updated : r));
        renderTable();
        showDetail(updated, false);
      } catch (e) {
        save.disabled = false;
        form.prepend(errorBox(e, 'Saving failed'));
      }
    });
    const actions = h('div', { class: 'actions' },
      m.status === 'deleted'
        ? h('button', { id: 'restore-memory', onclick: () => restore(m) }, 'Restore')
        : h('button', { id: 'delete-memory', onclick: () => remove(m, false) }, 'Delete'),
      h('button', { class: 'danger', id: 'purge-memory', onclick: () => remove(m, true) }, 'Purge'));
    fill(detail,
      h('h2', {}, 'Memory'),
      h('dl', {},
        row('id', h('span', { class: 'mono' }, m.id)),
        row('namespace', m.namespace),
        row('content', h('pre', {}, m.content)),
        row('status', m.status),
        row('tier', m.tier),
        row('importance', String(m.importance_score)),
        row('tags', tags(m.tags)),
        row('metadata', h('pre', {}, JSON.stringify(m.metadata ?? {}, null, 2))),
        row('version', String(m.version)),
        row('created', fmtTime(m.created_at)),
        row('updated', fmtTime(m.updated_at)),
        row('expires', m.expires_at ? fmtTime(m.expires_at) : 'never'),
        row('accesses', `${m.access_count}${m.last_accessed_at ? `, last ${fmtTime(m.last_accessed_at)}` : ''}`),
        row('parent', m.parent_id ? h('span', { class: 'mono' }, m.parent_id) : null),
        row('content hash', h('span', { class: 'mono small' }, m.content_hash)),
        row('embedding', [`${m.embedding_status}${m.embedding_model ? ` · ${m.embedding_model}` : ''}${m.embedding_error ? ` · ${m.embedding_error}` : ''} `,
          m.has_embedding && !withVector ? h('button', { class: 'link', id: 'show-vector', onclick: () => open(m.id, true) }, 'show vector') : null,
          withVector && m.embedding ? vectorView(m) : null])),
      form,
      actions);
  }

  async function remove(m, purge) {
    const ok = purge
      ? await confirmAction('Purge this memory?', `It is removed from every tier and index for good: "${m.content.slice(0, 80)}".`, { typed: 'purge', action: 'Purge' })
      : await confirmAction('Delete this memory?', 'It is soft-deleted: hidden from lists and searches, restorable here (status "deleted").', { action: 'Delete' });
    if (!ok) return;
    try {
      await api('DELETE', `/api/v1/memories/${encodeURIComponent(m.id)}${purge ? '?purge=true' : ''}`);
      toast(purge ? 'Purged.' : 'Deleted.');
      params.delete('id');
      setParams(params);
      reload();
    } catch (e) {
      detail.prepend(errorBox(e, purge ? 'Purging failed' : 'Deleting failed'));
    }
  }

  async function restore(m) {
    try {
      const updated = await api('PATCH', `/api/v1/memories/${encodeURIComponent(m.id)}`, { status: 'active' });
      toast('Restored.');
      showDetail(updated, false);
    } catch (e) {
      detail.prepend(errorBox(e, 'Restoring failed'));
    }
  }

  layout();
  reload();
  return () => { stopped = true; };
}

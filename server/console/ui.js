// Small DOM helpers. Text always goes in as text nodes (never innerHTML), so nothing a memory
// holds can run as markup.

/** `h('div', {class: 'card', onclick: f}, child, 'text', …)` */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function loading(text = 'Loading…') {
  return h('p', { class: 'loading' }, text);
}

/** An error as the user should see it: what failed, the API's code and message. */
export function errorBox(e, what) {
  const code = e?.code ? h('span', { class: 'code' }, ` (${e.status ? `${e.status} ` : ''}${e.code})`) : null;
  let hint = null;
  if (e?.status === 403) hint = h('div', { class: 'small' }, 'This needs a key whose role covers it (admin pages need an admin key not limited to namespaces).');
  return h('div', { class: 'error', role: 'alert' }, h('strong', {}, what ? `${what}: ` : ''), e?.message ?? String(e), code, hint);
}

export function toast(message, kind = '') {
  const el = h('div', { class: `toast ${kind}` }, message);
  document.getElementById('toasts').append(el);
  setTimeout(() => el.remove(), 4000);
}

/**
 * Asks before something that cannot be undone. With `typed`, the user must type that word.
 * Resolves to true to go ahead.
 */
export function confirmAction(title, text, { typed = null, action = 'Confirm' } = {}) {
  const dialog = document.getElementById('confirm-dialog');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  const ok = document.getElementById('confirm-ok');
  ok.textContent = action;
  const label = document.getElementById('confirm-typed-label');
  const input = document.getElementById('confirm-typed');
  label.hidden = !typed;
  input.value = '';
  ok.disabled = Boolean(typed);
  input.oninput = () => { ok.disabled = input.value.trim() !== typed; };
  if (typed) document.getElementById('confirm-word').textContent = typed;
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === 'ok');
    dialog.returnValue = '';
    dialog.showModal();
    (typed ? input : ok).focus();
  });
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${UNITS[i]}`;
}

export function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function fmtTime(rfc3339) {
  if (!rfc3339) return '–';
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? rfc3339 : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** Month-day hours:minutes (UTC), for dense tables; the full time goes in a tooltip. */
export function fmtShort(rfc3339) {
  const full = fmtTime(rfc3339);
  return full.length >= 16 ? full.slice(5, 16) : full;
}

export function ageOf(rfc3339) {
  return rfc3339 ? (Date.now() - new Date(rfc3339).getTime()) / 1000 : null;
}

/** The `#/page?k=v` part of the URL as {page, params}. */
export function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [page, query = ''] = hash.split('?');
  return { page: page || 'overview', params: new URLSearchParams(query) };
}

/** Sets the URL's query for the current page without reloading it. */
export function setParams(params) {
  const { page } = route();
  const q = new URLSearchParams([...params].filter(([, v]) => v !== '' && v !== null && v !== undefined)).toString();
  history.replaceState(null, '', `#/${page}${q ? `?${q}` : ''}`);
}

// The console's shell: the page router (#/page?query), the API-key prompt, the daemon's status
// in the header. Each page is a module exporting `mount(root, params) → cleanup`.

import { api, currentKey, onKeyNeeded, setKey } from './api.js';
import { errorBox, fill, loading, route } from './ui.js';

const PAGES = {
  overview: () => import('./pages/overview.js'),
  memories: () => import('./pages/memories.js'),
  search: () => import('./pages/search.js'),
  tiers: () => import('./pages/tiers.js'),
  backups: () => import('./pages/backups.js'),
  models: () => import('./pages/models.js'),
};

let cleanup = null;

async function show() {
  const { page, params } = route();
  const root = document.getElementById('page');
  const load = PAGES[page];
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
  if (!load) {
    fill(root, errorBox({ message: `No page "${page}".` }));
    return;
  }
  if (cleanup) cleanup();
  cleanup = null;
  fill(root, loading());
  document.title = `Engram · ${page[0].toUpperCase()}${page.slice(1)}`;
  try {
    const module = await load();
    cleanup = module.mount(root, params) ?? null;
  } catch (e) {
    fill(root, errorBox(e, 'This page could not load'));
  }
}

function askKey(reason) {
  const dialog = document.getElementById('key-dialog');
  const input = document.getElementById('key-input');
  document.getElementById('key-reason').textContent = reason;
  input.value = '';
  return new Promise((resolve) => {
    dialog.onclose = () => {
      const ok = dialog.returnValue === 'ok' && input.value.trim() !== '';
      if (ok) setKey(input.value.trim());
      input.value = '';
      keyButton();
      resolve(ok);
    };
    dialog.returnValue = '';
    dialog.showModal();
    input.focus();
  });
}

function keyButton() {
  const b = document.getElementById('key-button');
  b.hidden = !currentKey();
}

async function health() {
  const pill = document.getElementById('daemon');
  try {
    const h = await api('GET', '/api/v1/health');
    pill.textContent = `${h.status} · v${h.version}`;
    pill.className = `pill ${h.status === 'healthy' ? 'good' : 'bad'}`;
  } catch (e) {
    pill.textContent = e.status === 503 ? 'unhealthy' : 'unreachable';
    pill.className = 'pill bad';
  }
}

onKeyNeeded(askKey);
document.getElementById('key-button').addEventListener('click', () => {
  setKey(null);
  keyButton();
  show();
});
window.addEventListener('hashchange', show);
keyButton();
show();
health();
setInterval(health, 10000);

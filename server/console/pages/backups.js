// Backups: the kept snapshots (take, list, delete), the point-in-time window they and the
// archived WAL open, and the archive's size.

import { api } from '../api.js';
import { ageOf, confirmAction, errorBox, fill, fmtBytes, fmtDuration, fmtNumber, fmtTime, h, toast } from '../ui.js';

export function mount(root) {
  let stopped = false;

  async function take(button) {
    button.disabled = true;
    button.textContent = 'Taking…';
    try {
      const s = await api('POST', '/api/v1/admin/snapshots');
      toast(`Snapshot ${s.id} at LSN ${fmtNumber(s.lsn)} (${fmtBytes(s.bytes)}, ${fmtNumber(s.took_ms)} ms).`);
    } catch (e) {
      toast(`Snapshot failed: ${e.message}`, 'bad');
    }
    load();
  }

  async function remove(s) {
    if (!await confirmAction('Delete this snapshot?', `Snapshot ${s.id} (LSN ${fmtNumber(s.lsn)}). A point-in-time restore can then reach back only to the next kept snapshot.`, { action: 'Delete' })) return;
    try {
      await api('DELETE', `/api/v1/admin/snapshots/${encodeURIComponent(s.id)}`);
      toast(`Deleted snapshot ${s.id}.`);
    } catch (e) {
      toast(`Deleting failed: ${e.message}`, 'bad');
    }
    load();
  }

  async function load() {
    try {
      const [list, health] = await Promise.all([api('GET', '/api/v1/admin/snapshots'), api('GET', '/api/v1/health')]);
      if (stopped) return;
      const snaps = list.snapshots;
      const takeButton = h('button', { class: 'primary', id: 'take-snapshot' }, 'Take snapshot');
      takeButton.addEventListener('click', () => take(takeButton));
      const window = list.restorable_from
        ? `from ${fmtTime(list.restorable_from)} (${fmtDuration(ageOf(list.restorable_from))} ago) to the last acknowledged write (LSN ${fmtNumber(health.wal?.durable_lsn)})`
        : 'none: take a snapshot to open one';
      fill(root,
        h('h1', {}, 'Backups'),
        h('div', { class: 'grid' },
          h('div', { class: 'card' }, h('div', { class: 'label' }, 'Snapshots kept'), h('div', { class: 'value' }, fmtNumber(snaps.length)),
            h('div', { class: 'sub' }, fmtBytes(snaps.reduce((a, s) => a + s.bytes, 0)))),
          h('div', { class: 'card' }, h('div', { class: 'label' }, 'WAL archive'), h('div', { class: 'value' }, fmtBytes(list.archive.bytes)),
            h('div', { class: 'sub' }, `${fmtNumber(list.archive.segments)} closed segments · kept ${list.archive.retention_seconds === null ? 'forever' : fmtDuration(list.archive.retention_seconds)}`))),
        h('div', { class: 'card section', id: 'pitr-window' },
          h('h2', {}, 'Point-in-time window'),
          h('p', {}, `Restorable ${window}.`),
          h('p', { class: 'small muted' }, 'With the daemon stopped: ', h('code', {}, 'engramctl restore DATA_DIR --target-dir NEW_DIR --to-time RFC3339'),
            ' (or from a backup made by ', h('code', {}, 'engramctl backup'), '). See docs/operations.md.')),
        h('div', { class: 'toolbar' }, h('h2', {}, 'Snapshots'), h('span', { class: 'spacer' }), takeButton),
        snaps.length
          ? h('div', { class: 'table-wrap' }, h('table', { id: 'snapshot-table' },
            h('thead', {}, h('tr', {}, ['Snapshot', 'LSN', 'Committed', 'Taken', 'Files', 'Size', ''].map((c, i) => h('th', { class: i === 1 || i === 4 || i === 5 ? 'num' : '' }, c)))),
            h('tbody', {}, [...snaps].reverse().map((s) => h('tr', { 'data-id': s.id },
              h('td', { class: 'mono small' }, s.id), h('td', { class: 'num' }, fmtNumber(s.lsn)), h('td', {}, fmtTime(s.commit_time)),
              h('td', {}, `${fmtTime(s.created_at)} (${fmtDuration(ageOf(s.created_at))} ago)`), h('td', { class: 'num' }, fmtNumber(s.files)),
              h('td', { class: 'num' }, fmtBytes(s.bytes)), h('td', {}, h('button', { class: 'ghost small', onclick: () => remove(s) }, 'Delete')))))))
          : h('div', { class: 'card empty' }, 'No snapshots yet.'));
    } catch (e) {
      fill(root, h('h1', {}, 'Backups'), errorBox(e, 'Reading the snapshots failed'));
    }
  }

  load();
  return () => { stopped = true; };
}

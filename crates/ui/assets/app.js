// kubetrail's activity page: what the server-rendered HTML gains with a script. Everything
// here is an enhancement; without it the same links and forms work by full page loads.
//
// - Filters apply without a reload: the form's query is fetched with the header
//   X-Kubetrail-Fragment and only the results part is replaced; the address bar follows.
// - Live updates: the first page of the newest records opens the server-sent event stream
//   named in the table's data-live attribute and puts new rows on top.
// - Raw records open in place (the link still works on its own).
// - Keys: j/k move between rows (and between the steps of a chain of causes), Enter opens
//   the focused row's object, r its raw record, / the filters.
//
// Timings for the benchmark go to the Performance API: the measure "kt-filter" spans a filter
// change from the user's action (the input event's time stamp) to the first frame painted
// with the new rows.
'use strict';

(function () {
  const MAX_ROWS = 2000;
  let live = null;

  function $(sel, root) { return (root || document).querySelector(sel); }

  // ---- filters -------------------------------------------------------------------------
  function formQuery(form) {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (typeof v === 'string' && v.trim() !== '') params.append(k, v.trim());
    }
    return params.toString();
  }

  async function loadResults(query, push, since) {
    const start = typeof since === 'number' ? since : performance.now();
    const url = '/timeline' + (query ? '?' + query : '');
    let resp;
    try {
      resp = await fetch(url, { headers: { 'X-Kubetrail-Fragment': 'results' }, credentials: 'same-origin' });
    } catch (e) {
      location.href = url;
      return;
    }
    if (resp.status === 401) {
      location.href = '/login?next=' + encodeURIComponent(url);
      return;
    }
    const html = await resp.text();
    const old = $('#results');
    if (!old) { location.href = url; return; }
    const tpl = document.createElement('template');
    tpl.innerHTML = html;
    const fresh = tpl.content.firstElementChild;
    if (!fresh || fresh.id !== 'results') { location.href = url; return; }
    stopLive();
    old.replaceWith(fresh);
    if (push) history.pushState({ kt: 1 }, '', url);
    const json = document.querySelector('footer a[href^="/timeline.json"]');
    if (json) json.href = '/timeline.json' + (query ? '?' + query : '');
    startLive();
    // A frame callback runs before that frame's layout and paint; a task queued from it runs
    // once the frame is out.
    requestAnimationFrame(() => setTimeout(() => {
      performance.measure('kt-filter', { start, end: performance.now() });
      document.dispatchEvent(new CustomEvent('kt-results'));
    }, 0));
  }

  function enhanceFilters() {
    const form = $('#filters');
    if (!form) return;
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      loadResults(formQuery(form), true, e.timeStamp);
    });
    form.addEventListener('change', (e) => {
      if (e.target.matches('input[type=checkbox], select')) loadResults(formQuery(form), true, e.timeStamp);
    });
    window.addEventListener('popstate', () => {
      if (location.pathname === '/timeline') {
        syncForm(form, new URLSearchParams(location.search));
        loadResults(location.search.replace(/^\?/, ''), false);
      }
    });
  }

  function syncForm(form, params) {
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.type === 'checkbox') el.checked = params.get(el.name) === 'true';
      else if (el.type !== 'hidden') el.value = params.get(el.name) || '';
    }
  }

  // ---- live updates --------------------------------------------------------------------
  function status(text, on) {
    const s = $('#live-status');
    if (!s) return;
    s.textContent = text;
    s.classList.toggle('on', !!on);
  }

  function startLive() {
    const table = $('#timeline');
    if (!table || !table.dataset.live || !window.EventSource) return;
    const es = new EventSource(table.dataset.live);
    live = es;
    let added = 0;
    es.addEventListener('open', () => status(added ? added + ' new since the page loaded; live.' : 'Live: new records appear at the top.', true));
    es.addEventListener('error', () => status('Live updates interrupted; reconnecting…', false));
    es.addEventListener('failure', (e) => status('Live updates: ' + e.data, false));
    es.addEventListener('rows', (e) => {
      const tbody = $('#rows');
      if (!tbody) return;
      const tpl = document.createElement('template');
      tpl.innerHTML = e.data;
      const rows = Array.from(tpl.content.querySelectorAll('tr.rec'));
      for (const r of rows) r.classList.add('new');
      tbody.insertBefore(tpl.content, tbody.firstChild);
      while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
      if (e.lastEventId) table.dataset.position = e.lastEventId;
      const empty = $('#results .empty');
      if (empty) empty.remove();
      added += rows.length;
      const count = $('#count');
      if (count) count.textContent = String(tbody.querySelectorAll('tr.rec').length);
      status(added + (added === 1 ? ' new record' : ' new records') + ' since the page loaded; live.', true);
      document.dispatchEvent(new CustomEvent('kt-live', { detail: rows.length }));
    });
  }

  function stopLive() {
    if (live) { live.close(); live = null; }
  }

  // ---- raw records ---------------------------------------------------------------------
  let panels = 0;

  async function toggleRaw(link) {
    const open = link.getAttribute('aria-controls');
    if (open) {
      const panel = document.getElementById(open);
      if (panel) panel.remove();
      link.removeAttribute('aria-controls');
      link.setAttribute('aria-expanded', 'false');
      return;
    }
    let resp;
    try {
      resp = await fetch('/record.json?id=' + encodeURIComponent(link.dataset.record), { credentials: 'same-origin' });
    } catch (e) {
      location.href = link.href;
      return;
    }
    if (!resp.ok) { location.href = link.href; return; }
    const rec = await resp.json();
    const pre = document.createElement('pre');
    pre.className = 'json';
    pre.tabIndex = 0;
    pre.setAttribute('aria-label', 'Raw record ' + rec.id);
    pre.textContent = JSON.stringify(rec.record, null, 2);
    const id = 'raw-' + (++panels);
    const row = link.closest('tr');
    let panel;
    if (row) {
      panel = document.createElement('tr');
      panel.className = 'raw-row';
      const td = document.createElement('td');
      td.colSpan = row.cells.length;
      td.appendChild(pre);
      panel.appendChild(td);
      row.after(panel);
    } else {
      panel = pre;
      const anchor = link.closest('.row') || link.parentElement;
      anchor.after(panel);
    }
    panel.id = id;
    link.setAttribute('aria-controls', id);
    link.setAttribute('aria-expanded', 'true');
  }

  function enhanceRaw() {
    document.addEventListener('click', (e) => {
      const link = e.target.closest && e.target.closest('a.raw');
      if (!link || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      toggleRaw(link);
    });
  }

  // ---- keyboard ------------------------------------------------------------------------
  function items() { return Array.from(document.querySelectorAll('tr.rec, li.step')); }

  function current() {
    const a = document.activeElement;
    return a && a.closest ? a.closest('tr.rec, li.step') : null;
  }

  function move(delta) {
    const all = items();
    if (!all.length) return;
    const at = all.indexOf(current());
    const next = all[Math.max(0, Math.min(all.length - 1, at < 0 ? (delta > 0 ? 0 : all.length - 1) : at + delta))];
    next.focus();
    next.scrollIntoView({ block: 'nearest' });
  }

  function ownLink(item, sel) {
    // A chain step's own link, not one of the steps nested in it.
    return item.matches('li.step') ? $(':scope > .row ' + sel, item) : $(sel, item);
  }

  function enhanceKeys() {
    document.addEventListener('keydown', (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const t = e.target;
      if (t && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(t.tagName))) return;
      const item = current();
      if (e.key === 'j') { e.preventDefault(); move(1); }
      else if (e.key === 'k') { e.preventDefault(); move(-1); }
      else if (e.key === '/') {
        const f = $('form.filters input[type=text]');
        if (f) { e.preventDefault(); f.focus(); }
      } else if (e.key === 'Enter' && item && t === item) {
        const link = ownLink(item, 'a.obj');
        if (link) { e.preventDefault(); link.click(); }
      } else if (e.key === 'r' && item) {
        const link = ownLink(item, 'a.raw');
        if (link) { e.preventDefault(); toggleRaw(link); }
      }
    });
  }

  function init() {
    enhanceFilters();
    enhanceRaw();
    enhanceKeys();
    startLive();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();

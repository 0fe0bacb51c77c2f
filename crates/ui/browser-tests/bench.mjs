// The activity page's benchmark in headless Chromium (run by bench/ui-page.sh, which starts
// `kubetrail ui` over a large store and passes KT_URL and KT_TOKEN). Every figure is read from
// the browser's Performance API:
//
// - first meaningful paint of the timeline: the page is rendered on the server in one
//   response, rows included; the first contentful paint counts as the paint of the rows only
//   when it came after the response's last byte (checked in every run, and said). Also the
//   largest contentful paint. Each run is a new page with the browser's cache off (assets
//   fetched again), so every run is a first visit.
// - a filter change: the script's "kt-filter" measure, from the input event's time stamp (a
//   box checked, Enter in a field) to the first frame painted with the new rows, for several
//   filters; each run starts from a freshly loaded, unfiltered page.
//
// Prints each figure's range over RUNS runs (median in brackets).
import { launch } from './lib.mjs';

const URL = process.env.KT_URL;
const TOKEN = process.env.KT_TOKEN;
const RUNS = Number(process.env.RUNS || 10);
if (!URL || !TOKEN) {
  console.error('bench.mjs: KT_URL and KT_TOKEN are required (run bench/ui-page.sh)');
  process.exit(2);
}

const { context, close } = await launch({ extraHTTPHeaders: { Authorization: `Bearer ${TOKEN}` } });

function range(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const med = s[Math.floor(s.length / 2)];
  return `${s[0].toFixed(0)}-${s.at(-1).toFixed(0)} ms (median ${med.toFixed(0)})`;
}

async function firstPaint() {
  const fcp = [];
  const lcp = [];
  const last = [];
  let afterLastByte = 0;
  for (let i = 0; i < RUNS; i++) {
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    await page.goto(`${URL}/timeline`, { waitUntil: 'load' });
    const m = await page.evaluate(async () => {
      const nav = performance.getEntriesByType('navigation')[0];
      // The paint may come after the load event: wait for its entry.
      const observe = (type, pick) => new Promise((resolve) => {
        new PerformanceObserver((list) => {
          const e = pick(list.getEntries());
          if (e) resolve(e.startTime);
        }).observe({ type, buffered: true });
        setTimeout(() => resolve(NaN), 5000);
      });
      const paint = await observe('paint', (es) => es.find((e) => e.name === 'first-contentful-paint'));
      const largest = await observe('largest-contentful-paint', (es) => es.at(-1));
      return {
        fcp: paint,
        lcp: largest,
        responseEnd: nav.responseEnd,
        rows: document.querySelectorAll('#rows tr.rec').length,
      };
    });
    if (m.rows === 0) throw new Error('the timeline has no rows');
    if (Number.isNaN(m.fcp)) throw new Error('no first-contentful-paint entry within 5 s');
    if (m.fcp >= m.responseEnd) afterLastByte += 1;
    fcp.push(m.fcp);
    lcp.push(m.lcp);
    last.push(m.responseEnd);
    await page.close();
  }
  console.log(`timeline, first visit (${RUNS} runs, 100 newest of the store):`);
  console.log(`  last byte of the page          ${range(last)}`);
  console.log(`  first contentful paint         ${range(fcp)} (after the last byte, rows on screen: ${afterLastByte} of ${RUNS} runs)`);
  console.log(`  largest contentful paint       ${range(lcp)}`);
  return Math.max(...fcp, ...lcp.filter((x) => !Number.isNaN(x)));
}

const FILTERS = [
  ['failed requests only', (p) => p.check('#f-failed')],
  ['Warning Events only', (p) => p.check('#f-warnings')],
  ['namespace ns-42', (p) => p.fill('#f-namespace', 'ns-42').then(() => p.press('#f-namespace', 'Enter'))],
  ['user alice', (p) => p.fill('#f-user', 'alice').then(() => p.press('#f-user', 'Enter'))],
  ['verb delete', (p) => p.fill('#f-verb', 'delete').then(() => p.press('#f-verb', 'Enter'))],
  ['reason BackOff', (p) => p.fill('#f-reason', 'BackOff').then(() => p.press('#f-reason', 'Enter'))],
  ['object pods (every pod)', (p) => p.fill('#f-object', 'pods').then(() => p.press('#f-object', 'Enter'))],
  ['object pods, namespace ns-7', (p) => p.fill('#f-namespace', 'ns-7').then(() => p.fill('#f-object', 'pods')).then(() => p.press('#f-object', 'Enter'))],
  ['Events only', (p) => p.selectOption('#f-kind', 'event')],
  ['audit events only', (p) => p.selectOption('#f-kind', 'audit')],
  ['changes only (no reads)', (p) => p.check('#f-writes')],
];

async function filterChanges() {
  const page = await context.newPage();
  let worst = 0;
  const failed = [];
  console.log(`filter change, from the input event to the first frame with the new rows (${RUNS} runs each; 3 when a run takes over 5 s):`);
  for (const [name, act] of FILTERS) {
    const d = [];
    let error = null;
    for (let i = 0; i < RUNS && !(i >= 3 && Math.max(...d) > 5000); i++) {
      await page.goto(`${URL}/timeline`, { waitUntil: 'load' });
      await page.evaluate(() => performance.clearMeasures('kt-filter'));
      await act(page);
      await page.waitForFunction(() => performance.getEntriesByName('kt-filter').length > 0, null, { timeout: 60000 });
      const m = await page.evaluate(() => performance.getEntriesByName('kt-filter').at(-1).duration);
      const rows = await page.$$eval('#rows tr.rec', (r) => r.length);
      d.push(m);
      if (rows === 0) {
        // The page says why (a query past ui.query_timeout, say): a failure, not a figure.
        error = await page.evaluate(() => (document.querySelector('#results') || document.body).innerText.trim().slice(0, 200));
        break;
      }
    }
    worst = Math.max(worst, ...d);
    if (error) {
      failed.push(name);
      console.log(`  ${name.padEnd(30)} FAILED after ${d.at(-1).toFixed(0)} ms: ${error}`);
    } else {
      console.log(`  ${name.padEnd(30)} ${range(d)}`);
    }
  }
  await page.close();
  return { worst, failed };
}

const paint = await firstPaint();
const filter = await filterChanges();
await close();
console.log(`\nslowest first paint ${paint.toFixed(0)} ms (target 1000), slowest filter change ${filter.worst.toFixed(0)} ms (target 300)`);
if (filter.failed.length) console.log(`filters that showed no rows: ${filter.failed.join(', ')}`);
process.exitCode = paint <= 1000 && filter.worst <= 300 && !filter.failed.length ? 0 : 1;

// The README's picture of the activity page, taken from `kubetrail demo`'s data (started by
// crates/kubetrail/tests/ui_page.rs, `browser_demo_picture`, which runs the demo, serves its
// store with `kubetrail ui` and passes KT_URL, KT_TOKEN and KT_ARTIFACTS). As a person would:
// the timeline narrowed to carol, her eviction of a pod, that pod's page. The picture goes to
// KT_ARTIFACTS/readme-activity-page.png and, when $KUBETRAIL_UI_SCREENSHOT is set (run.sh sets
// it to docs/activity-page.png), there too.
import fs from 'node:fs';
import path from 'node:path';
import { launch } from './lib.mjs';

for (const name of ['KT_URL', 'KT_TOKEN', 'KT_ARTIFACTS']) {
  if (!process.env[name]) {
    console.error(`demo-picture.mjs: ${name} is not set (run it through: cargo test -p kubetrail --test ui_page browser -- --ignored)`);
    process.exit(2);
  }
}
const { KT_URL: URL, KT_TOKEN: TOKEN, KT_ARTIFACTS: ARTIFACTS } = process.env;

function fail(message) {
  console.log(`FAIL  the README picture from the demo's data\n      ${message}`);
  process.exit(1);
}

const { context, close } = await launch({
  extraHTTPHeaders: { Authorization: `Bearer ${TOKEN}` },
  viewport: { width: 1280, height: 860 },
});
const page = await context.newPage();

// carol drained node-1: her evictions are on the timeline.
await page.goto(`${URL}/timeline?user=carol&namespace=prod`);
const rows = await page.$$eval('#rows tr.rec', (trs) => trs.map((tr) => ({
  object: tr.querySelector('td.o').innerText.trim(),
  action: tr.querySelector('td.a').innerText.trim(),
  actor: tr.querySelector('td.u').innerText.trim(),
})));
const eviction = rows.find((r) => r.actor === 'carol' && /^Pod prod\/\S+\/eviction$/.test(r.object));
if (!eviction) fail(`no eviction by carol on the timeline: ${JSON.stringify(rows)}`);
const pod = eviction.object.split('/')[1];

const resp = await page.goto(`${URL}/who?object=${encodeURIComponent(`pod/${pod}`)}&namespace=prod`);
if (resp.status() !== 200) fail(`pod/${pod}: status ${resp.status()}`);
const titles = await page.$$eval('#changes .chain h3', (hs) => hs.map((h) => h.innerText.replace(/\s+/g, ' ').trim()));
if (!titles.some((t) => t.includes('evicted') && t.includes('by carol'))) {
  fail(`pod/${pod}'s page does not say carol evicted it: ${JSON.stringify(titles)}`);
}
if (!titles.some((t) => t.includes('created'))) fail(`pod/${pod}'s page has no creation: ${JSON.stringify(titles)}`);

const kept = path.join(ARTIFACTS, 'readme-activity-page.png');
await page.screenshot({ path: kept, fullPage: false });
const out = process.env.KUBETRAIL_UI_SCREENSHOT;
if (out) {
  fs.copyFileSync(kept, out);
  console.log(`      wrote ${out}`);
}
console.log(`ok    the README picture from the demo's data (pod/${pod}, evicted by carol)`);
await close();

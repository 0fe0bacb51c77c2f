// The activity page in headless Chromium against kubetrail fed with the recorded "shop"
// scenario (started by crates/kubetrail/tests/ui_page.rs, which passes KT_URL, KT_TOKEN,
// KT_AUDIT_FILE, KT_LIVE_LINE and KT_ARTIFACTS). Every answer is read from the DOM, as a
// person would read it, and compared with $KUBETRAIL_FIXTURES/scenarios/shop/GROUND-TRUTH.md
// (the numbers below are its questions). Screenshots of each step go to KT_ARTIFACTS (the
// README's picture is taken from the demo's data by demo-picture.mjs).
//
// Every check runs even when an earlier one failed; the exit status says whether all held.
import fs from 'node:fs';
import path from 'node:path';
import { launch, axe } from './lib.mjs';

const URL = need('KT_URL');
const TOKEN = need('KT_TOKEN');
const AUDIT_FILE = need('KT_AUDIT_FILE');
const LIVE_LINE = need('KT_LIVE_LINE');
const ARTIFACTS = need('KT_ARTIFACTS');

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`test.mjs: ${name} is not set (run it through: cargo test -p kubetrail --test ui_page browser -- --ignored)`);
    process.exit(2);
  }
  return v;
}

const failures = [];
let shot = 0;

async function check(name, fn) {
  const start = Date.now();
  try {
    await fn();
    console.log(`ok    ${name} (${((Date.now() - start) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failures.push(name);
    console.log(`FAIL  ${name}\n      ${String(e && e.stack || e).split('\n').slice(0, 4).join('\n      ')}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function screenshot(page, name) {
  shot += 1;
  await page.screenshot({ path: path.join(ARTIFACTS, `${String(shot).padStart(2, '0')}-${name}.png`), fullPage: true });
}

/** The visible text of the elements matching `sel`. */
function texts(page, sel) {
  return page.$$eval(sel, (els) => els.map((e) => e.innerText.replace(/\s+/g, ' ').trim()));
}

/** The rows of the timeline table as objects of their cells' text. */
function rows(page) {
  return page.$$eval('#rows tr.rec', (trs) => trs.map((tr) => ({
    cls: tr.className,
    time: tr.querySelector('td.t').innerText.trim(),
    object: tr.querySelector('td.o').innerText.trim(),
    action: tr.querySelector('td.a').innerText.trim(),
    actor: tr.querySelector('td.u').innerText.trim(),
    result: tr.querySelector('td.r').innerText.trim(),
    message: tr.querySelector('td.m').innerText.trim(),
  })));
}

/** The chains of causes on a story page: each a list of its steps' text, first cause first. */
function chains(page) {
  return page.$$eval('#changes .chain', (cs) => cs.map((c) => ({
    title: c.querySelector('h3').innerText.replace(/\s+/g, ' ').trim(),
    steps: Array.from(c.querySelectorAll('li.step > .row')).map((r) => r.innerText.replace(/\s+/g, ' ').trim()),
    depth: Array.from(c.querySelectorAll('li.step')).map((li) => {
      let d = 0;
      for (let p = li.parentElement; p && !p.classList.contains('chain'); p = p.parentElement) if (p.tagName === 'OL') d += 1;
      return d;
    }),
  })));
}

async function story(page, object, ns) {
  const resp = await page.goto(`${URL}/who?object=${encodeURIComponent(object)}&namespace=${ns}`);
  assert(resp.status() === 200, `${object}: status ${resp.status()}`);
  return chains(page);
}

/** Runs `action` and waits for the script to have put new results in place (no reload). */
async function afterResults(page, action) {
  await page.evaluate(() => {
    window.__ktResults = 0;
    document.addEventListener('kt-results', () => { window.__ktResults += 1; });
  });
  await action();
  await page.waitForFunction(() => window.__ktResults > 0, null, { timeout: 10000 });
}

function findChain(all, pred, what) {
  const c = all.find(pred);
  assert(c, `${what}: not among ${JSON.stringify(all.map((x) => x.title))}`);
  return c;
}

const { context, close } = await launch();
const page = await context.newPage();
const consoleErrors = [];
// The 401s this test asks for show up as failed resource loads; anything else is a fault.
page.on('console', (m) => {
  if (m.type() === 'error' && !/status of 401/.test(m.text())) consoleErrors.push(m.text());
});
page.on('pageerror', (e) => consoleErrors.push(String(e)));

await check('unauthenticated: 401, the sign-in form and no data', async () => {
  const resp = await page.goto(`${URL}/timeline?namespace=shop`);
  assert(resp.status() === 401, `status ${resp.status()}`);
  assert(await page.$('form.login input[name=token]'), 'no sign-in form');
  const body = await page.innerText('body');
  for (const word of ['carol', 'alice', 'web-7d8bcd4698', 'node-1']) {
    assert(!body.includes(word), `the 401 page shows "${word}"`);
  }
  assert((await page.$$('tr.rec')).length === 0, 'records on the 401 page');
  const json = await page.goto(`${URL}/timeline.json`);
  assert(json.status() === 401, `timeline.json: ${json.status()}`);
  assert(!(await json.text()).includes('entries'), 'timeline.json without credentials has entries');
  await page.goto(`${URL}/timeline?namespace=shop`);
  await screenshot(page, 'sign-in');
});

await check('accessibility of the sign-in page (axe-core: no serious or critical violations)', async () => {
  const v = (await axe(page)).filter((x) => x.impact === 'serious' || x.impact === 'critical');
  assert(v.length === 0, JSON.stringify(v));
});

await check('a wrong token is refused', async () => {
  await page.fill('#token', 'not-the-token');
  const refused = page.waitForResponse((r) => r.url().endsWith('/login') && r.request().method() === 'POST');
  await page.click('form.login button');
  assert((await refused).status() === 401, 'the wrong token was not refused with 401');
  assert((await page.innerText('.error')).includes('not accepted'), 'no refusal message');
  assert((await page.$$('tr.rec')).length === 0, 'records after a wrong token');
});

await check('signing in sets an HttpOnly, Secure, SameSite=Strict session cookie and goes on', async () => {
  await page.fill('#token', TOKEN);
  await Promise.all([page.waitForURL(/\/timeline\?namespace=shop$/), page.click('form.login button')]);
  const cookies = await context.cookies(URL);
  const s = cookies.find((c) => c.name === '__Host-kubetrail_session');
  assert(s, `cookies: ${cookies.map((c) => c.name)}`);
  assert(s.httpOnly && s.secure && s.sameSite === 'Strict', JSON.stringify(s));
  assert(!s.value.includes(TOKEN), 'the cookie holds the token');
  assert(!(await page.evaluate(() => document.cookie)).includes('kubetrail_session'), 'scripts can read the cookie');
  assert((await page.$$('#rows tr.rec')).length > 0, 'no records after signing in');
});

await check('accessibility of the timeline (axe-core: no serious or critical violations)', async () => {
  await page.goto(`${URL}/timeline`);
  await screenshot(page, 'timeline');
  const v = (await axe(page)).filter((x) => x.impact === 'serious' || x.impact === 'critical');
  assert(v.length === 0, JSON.stringify(v));
});

await check('filters narrow the timeline without a reload (30: viewer refused; 15: carol refused; 31: bob exec 500)', async () => {
  await page.goto(`${URL}/timeline?namespace=shop`);
  const all = await rows(page);
  await page.evaluate(() => { window.__ktMarker = 'no reload'; });
  await afterResults(page, () => page.check('#f-failed'));
  assert(await page.evaluate(() => window.__ktMarker) === 'no reload', 'the page reloaded');
  assert(page.url().includes('failed=true') && page.url().includes('namespace=shop'), `address bar: ${page.url()}`);
  const failed = await rows(page);
  assert(failed.length > 0 && failed.length < all.length, `${failed.length} failed of ${all.length}`);
  assert(failed.every((r) => r.cls.includes('failed') && Number(r.result) >= 400), JSON.stringify(failed));
  const viewer = failed.find((r) => r.actor === 'viewer');
  assert(viewer && viewer.action === 'delete' && viewer.result === '403'
    && viewer.object === 'Pod shop/web-7d8bcd4698-4vt6j' && viewer.time.endsWith('23:04:34.840'), JSON.stringify(viewer));
  const exec = failed.find((r) => r.actor === 'bob');
  assert(exec && exec.object === 'Pod shop/web-7d8bcd4698-7g9jt/exec' && exec.result === '500'
    && exec.message.includes('no preferred addresses found'), JSON.stringify(exec));
  await screenshot(page, 'failed-requests');
  // Cluster-wide, carol's first drain was refused on the node.
  await page.fill('#f-namespace', '');
  await afterResults(page, () => page.press('#f-namespace', 'Enter'));
  const carol = (await rows(page)).find((r) => r.actor === 'carol' && r.result === '403');
  assert(carol && carol.object === 'Node node-1' && carol.action === 'get' && carol.result === '403'
    && carol.time.endsWith('23:01:48.286'), JSON.stringify(carol));
});

await check('a filter in the URL is the same page (32: alice deleted Deployment web; 9: bob scaled it)', async () => {
  await page.goto(`${URL}/timeline?namespace=shop&user=alice&verb=delete`);
  const r = await rows(page);
  assert(r.length >= 1 && r.every((x) => x.actor === 'alice' && x.action === 'delete'), JSON.stringify(r));
  const d = r.find((x) => x.object === 'Deployment shop/web');
  assert(d && d.result === '200' && d.time.endsWith('23:04:47.582'), JSON.stringify(r));
  assert(await page.inputValue('#f-user') === 'alice', 'the form does not show the filter');
  await page.goto(`${URL}/timeline?object=deploy/web&namespace=shop&user=bob`);
  const s = (await rows(page)).find((x) => x.object === 'Deployment shop/web/scale');
  assert(s && s.action === 'patch' && s.time.endsWith('23:01:18.493'), JSON.stringify(await rows(page)));
});

await check('17: who evicted pod web-7d8bcd4698-8sr6z — carol through the Eviction API, raw record one click away', async () => {
  const all = await story(page, 'pod/web-7d8bcd4698-8sr6z', 'shop');
  const ev = findChain(all, (c) => c.title.includes('evicted'), 'the eviction');
  assert(ev.title.includes('23:02:01.185') && ev.title.includes('by carol'), ev.title);
  assert(ev.steps.at(-1).includes('Eviction API'), JSON.stringify(ev.steps));
  // The removal after it: the kubelet, caused by carol's eviction, drawn under it.
  const gone = findChain(all, (c) => c.title.includes('deleted'), 'the removal');
  assert(gone.steps.length === 2 && gone.steps[0].includes('carol') && gone.steps[1].includes('system:node:node-1'), JSON.stringify(gone));
  assert(gone.depth[1] > gone.depth[0], `not indented under its cause: ${gone.depth}`);
  assert((await page.innerText('#state')).startsWith('deleted'), await page.innerText('#state'));
  // The eviction's record, opened in place.
  const link = page.locator('#changes .chain', { hasText: 'evicted' }).first().locator('li.step.change a.raw').first();
  await link.click();
  const raw = await page.locator('#changes pre.json').first().innerText();
  const rec = JSON.parse(raw);
  const original = rec.object || rec;
  assert(original.objectRef.subresource === 'eviction' && original.user.username === 'carol' && original.verb === 'create', raw.slice(0, 300));
  assert(await link.getAttribute('aria-expanded') === 'true', 'aria-expanded not set');
  await screenshot(page, 'evicted-pod');
});

await check('14: pod web-6b4996b7f9-vdfpw — replicaset-controller ← ReplicaSet scaled down ← alice\'s image change', async () => {
  const all = await story(page, 'pod/web-6b4996b7f9-vdfpw', 'shop');
  const del = findChain(all, (c) => c.title.includes('deletion requested'), 'the deletion');
  assert(del.title.includes('23:01:33.443') && del.title.includes('replicaset-controller'), del.title);
  assert(del.steps.length === 3, JSON.stringify(del.steps));
  assert(del.steps[0].includes('Deployment shop/web') && del.steps[0].includes('alice') && del.steps[0].includes('nginx:1.26'), del.steps[0]);
  assert(del.steps[1].includes('ReplicaSet shop/web-6b4996b7f9') && del.steps[1].includes('deployment-controller'), del.steps[1]);
  assert(del.depth[0] < del.depth[1] && del.depth[1] < del.depth[2], `depths ${del.depth}`);
  await screenshot(page, 'rollout-chain');
});

await check('25, 26: pod web-7d8bcd4698-t9626 — the taint manager after node-2 went unreachable; still Terminating', async () => {
  const all = await story(page, 'pod/web-7d8bcd4698-t9626', 'shop');
  const ev = findChain(all, (c) => c.title.includes('evicted'), 'the taint manager eviction');
  assert(ev.title.includes('23:03:58.574') && ev.title.includes('node-controller'), ev.title);
  assert(ev.steps.some((s) => s.includes('Node node-2') && s.includes('NoExecute')), JSON.stringify(ev.steps));
  assert(ev.steps[0].includes('Node node-2') && ev.steps[0].includes('admin'), ev.steps[0]);
  assert((await page.innerText('#state')).startsWith('terminating'), await page.innerText('#state'));
  await screenshot(page, 'taint-manager');
});

await check('20: pod web-7d8bcd4698-6729k — bob deleted it directly', async () => {
  const all = await story(page, 'pod/web-7d8bcd4698-6729k', 'shop');
  const del = findChain(all, (c) => /deleted|deletion/.test(c.title) && c.title.includes('bob'), 'bob\'s delete');
  assert(del.title.includes('23:02:15.218'), del.title);
});

await check('29: Secret db-pass — bob created it; its content is shown nowhere', async () => {
  const all = await story(page, 'secret/db-pass', 'shop');
  const c = findChain(all, (x) => x.title.includes('created'), 'its creation');
  assert(c.title.includes('bob') && c.title.includes('23:04:25.912'), c.title);
  for (const link of await page.locator('a.raw').all()) await link.click();
  await page.waitForFunction(() => document.querySelectorAll('pre.json').length > 0);
  const html = await page.content();
  assert(!html.includes('hunter2') && !html.includes('aHVudGVyMg'), 'Secret content on the page');
});

await check('accessibility of a story (axe-core: no serious or critical violations)', async () => {
  await story(page, 'deploy/web', 'shop');
  await screenshot(page, 'deployment');
  const v = (await axe(page)).filter((x) => x.impact === 'serious' || x.impact === 'critical');
  assert(v.length === 0, JSON.stringify(v));
});

await check('keyboard: j moves through rows, r opens the raw record, Enter the object\'s story', async () => {
  await page.goto(`${URL}/timeline?namespace=shop&user=carol`);
  await page.keyboard.press('j');
  assert(await page.evaluate(() => document.activeElement.matches('tr.rec')), 'j did not focus a row');
  await page.keyboard.press('j');
  const second = await page.evaluate(() => Array.from(document.querySelectorAll('tr.rec')).indexOf(document.activeElement));
  assert(second === 1, `focus on row ${second}`);
  await page.keyboard.press('k');
  await page.keyboard.press('r');
  await page.waitForSelector('tr.raw-row pre.json');
  await page.keyboard.press('r');
  assert(await page.$('tr.raw-row') === null, 'r did not close the raw record');
  const objectText = await page.evaluate(() => document.activeElement.querySelector('a.obj').innerText);
  await Promise.all([page.waitForURL(/\/who\?/), page.keyboard.press('Enter')]);
  assert((await page.innerText('h1')) === objectText, `${await page.innerText('h1')} vs ${objectText}`);
  await page.keyboard.press('/');
  assert(await page.evaluate(() => document.activeElement.id === 'w-object'), '/ did not focus the form');
  // Tab reaches the skip link first.
  await page.goto(`${URL}/timeline`);
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.className === 'skip'), 'the skip link is not first');
});

await check('a record arriving while the page is open appears without a reload', async () => {
  await page.goto(`${URL}/timeline`);
  await page.waitForFunction(() => (document.getElementById('live-status') || {}).textContent.startsWith('Live'));
  await page.evaluate(() => { window.__ktMarker = 'still here'; });
  fs.appendFileSync(AUDIT_FILE, fs.readFileSync(LIVE_LINE, 'utf8').trim() + '\n');
  const row = page.locator('#rows tr.rec.new', { hasText: 'dave' });
  await row.first().waitFor({ timeout: 20000 });
  const r = (await rows(page))[0];
  assert(r.actor === 'dave' && r.action === 'delete' && r.object === 'ConfigMap shop/web-config', JSON.stringify(r));
  assert(await page.evaluate(() => window.__ktMarker) === 'still here', 'the page reloaded');
  assert((await page.innerText('#live-status')).includes('1 new record'), await page.innerText('#live-status'));
  await screenshot(page, 'live');
});

await check('signing out ends the session', async () => {
  await page.goto(`${URL}/timeline`);
  await Promise.all([page.waitForURL(/\/login$/), page.click('form.signout button')]);
  const resp = await page.goto(`${URL}/timeline`);
  assert(resp.status() === 401, `status ${resp.status()}`);
});

await check('no script errors', async () => {
  assert(consoleErrors.length === 0, consoleErrors.join('\n'));
});

await close();
if (failures.length) {
  console.log(`\n${failures.length} check(s) failed: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('\nall checks passed');

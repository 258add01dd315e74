// The NOVAS console in real headless Chromium (playwright-core, no test
// runner): run by tests/tests/console.rs, which starts NOVAS, agents, sshd
// and the sessions, and talks with this script through stdout lines
// ("STEP name ...") and files in NOVA_CONSOLE_SIGNAL_DIR.
//
// Env (all required): NOVA_PLAYWRIGHT_CORE (the playwright-core module
// directory), NOVA_CONSOLE_URL, NOVA_CONSOLE_USER, NOVA_CONSOLE_PASSWORD,
// NOVA_CONSOLE_AGENT (the agent always present), NOVA_CONSOLE_AGENT_TAG
// (one of its tags, K=V), NOVA_CONSOLE_EXTRA_AGENT (started and killed by
// the test), NOVA_CONSOLE_EXTRA_TAG, NOVA_CONSOLE_MARKER (text of an ssh
// exec command and its output), NOVA_CONSOLE_SCREENSHOTS (a directory),
// NOVA_CONSOLE_SIGNAL_DIR. Optional: NOVA_CHROMIUM (default
// /usr/bin/chromium).
//
// Exit status 0 when every step passed; otherwise 1 with "FAIL: …" and a
// screenshot of the page at the failure.

import { createRequire } from 'node:module';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.log(`FAIL: environment variable ${name} is not set`);
    process.exit(1);
  }
  return v;
}

const moduleDir = env('NOVA_PLAYWRIGHT_CORE');
if (!existsSync(moduleDir)) {
  console.log(`FAIL: NOVA_PLAYWRIGHT_CORE=${moduleDir} does not exist (scripts/test installs playwright-core)`);
  process.exit(1);
}
const { chromium } = createRequire(import.meta.url)(moduleDir);

const base = env('NOVA_CONSOLE_URL');
const user = env('NOVA_CONSOLE_USER');
const password = env('NOVA_CONSOLE_PASSWORD');
const agent = env('NOVA_CONSOLE_AGENT');
const agentTag = env('NOVA_CONSOLE_AGENT_TAG');
const extra = env('NOVA_CONSOLE_EXTRA_AGENT');
const extraTag = env('NOVA_CONSOLE_EXTRA_TAG');
const marker = env('NOVA_CONSOLE_MARKER');
const replayExpect = env('NOVA_CONSOLE_REPLAY_EXPECT');
const shots = env('NOVA_CONSOLE_SCREENSHOTS');
const signals = env('NOVA_CONSOLE_SIGNAL_DIR');
const executablePath = process.env.NOVA_CHROMIUM || '/usr/bin/chromium';
mkdirSync(shots, { recursive: true });

const T = 30000;
let page;
let shotNo = 0;

function step(name, detail) {
  console.log(`STEP ${name}${detail ? ' ' + detail : ''}`);
}

async function shot(name) {
  shotNo += 1;
  const path = join(shots, `${String(shotNo).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`SCREENSHOT ${path}`);
}

// Waits for a file the Rust test creates when it has done its part.
async function signal(name) {
  const path = join(signals, name);
  const deadline = Date.now() + 60000;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`the test never signalled ${name}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function row(table, attr, value) {
  return page.locator(`#${table} tbody tr[data-${attr}="${value}"]`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    // Console messages are reported, not failures: Chromium logs every
    // non-2xx document load (the refused login is a 401 on purpose).
    page.on('console', (m) => { if (m.type() === 'error') console.log('BROWSER ' + m.text()); });

    // Log in.
    await page.goto(base + '/tunnels');
    await page.waitForURL(/\/login$/, { timeout: T });
    await page.fill('#user', user);
    await page.fill('#password', 'certainly-wrong');
    await page.click('#login-submit');
    await page.locator('#login-error').waitFor({ timeout: T });
    step('login-refused', JSON.stringify(await page.locator('#login-error').textContent()));
    await page.fill('#user', user);
    await page.fill('#password', password);
    await page.click('#login-submit');
    await page.waitForURL(/\/tunnels$/, { timeout: T });
    const who = await page.locator('#who').textContent();
    if (who !== user) throw new Error(`signed in as ${who}, expected ${user}`);
    step('logged-in', user);

    // Reverse Tunnels: the agent, live.
    await row('tunnels', 'agent', agent).waitFor({ timeout: T });
    const cells = await row('tunnels', 'agent', agent).locator('td').allTextContents();
    step('agent-listed', JSON.stringify(cells));
    if (!cells[1].includes(agentTag)) throw new Error(`tags cell ${cells[1]} lacks ${agentTag}`);
    if (cells[8] !== 'connected') throw new Error(`status ${cells[8]}`);
    if (cells[12] !== 'single') throw new Error(`replica group ${cells[12]}: the agent's tags are its own`);
    await shot('tunnels');
    step('tunnels-ready');

    // The test starts the extra agent now; the page shows it by itself.
    await row('tunnels', 'agent', extra).waitFor({ timeout: T });
    step('extra-appeared', extra);
    await shot('tunnels-extra-agent');
    await page.fill('#tag-filter', extraTag);
    await row('tunnels', 'agent', agent).waitFor({ state: 'detached', timeout: T });
    await row('tunnels', 'agent', extra).waitFor({ timeout: T });
    step('filter-extra', extraTag);
    await page.fill('#tag-filter', agentTag);
    await row('tunnels', 'agent', extra).waitFor({ state: 'detached', timeout: T });
    await row('tunnels', 'agent', agent).waitFor({ timeout: T });
    step('filter-agent', agentTag);
    await shot('tunnels-filtered');
    await page.fill('#tag-filter', '');
    await row('tunnels', 'agent', extra).waitFor({ timeout: T });
    step('extra-seen');

    // The test kills the extra agent; it disappears, and the history has it.
    await row('tunnels', 'agent', extra).waitFor({ state: 'detached', timeout: T });
    step('extra-gone', extra);
    await page.locator('#history tbody tr', { hasText: extra }).filter({ hasText: 'disconnected' }).first().waitFor({ timeout: T });
    step('history-disconnect', extra);
    await shot('tunnels-after-disconnect');

    // Audit: the ssh exec command, found by its text.
    await page.click('a[href="/audit"]');
    await page.waitForURL(/\/audit$/, { timeout: T });
    await page.selectOption('select[name="kind"]', 'command');
    await page.fill('input[name="q"]', marker);
    await page.click('#audit-search button[type="submit"]');
    const hit = page.locator('#audit tbody tr[data-type="command"]', { hasText: marker });
    await hit.first().waitFor({ timeout: T });
    step('audit-found', JSON.stringify(await hit.first().locator('td').allTextContents()));
    await shot('audit');

    // Recordings: replay the exec's recording; its output appears.
    await page.click('a[href="/recordings"]');
    await page.waitForURL(/\/recordings$/, { timeout: T });
    const rec = page.locator('#recordings tbody tr', { hasText: marker }).first();
    await rec.waitFor({ timeout: T });
    await rec.locator('button.play').click();
    await page.locator('#player[data-state="done"]').waitFor({ timeout: T });
    const screen = await page.locator('#screen').textContent();
    if (!screen.split('\n').includes(replayExpect)) {
      throw new Error(`replayed screen ${JSON.stringify(screen)} lacks the line ${JSON.stringify(replayExpect)}`);
    }
    if (screen.includes('\x1b') || screen.includes('[0m')) throw new Error(`escape codes on screen: ${JSON.stringify(screen)}`);
    step('replayed', JSON.stringify(screen.slice(0, 200)));
    await shot('recording');

    // Sessions: terminate the held TCP session.
    await page.click('a[href="/sessions"]');
    await page.waitForURL(/\/sessions$/, { timeout: T });
    const live = page.locator('#active tbody tr[data-kind="tcp"]').first();
    await live.waitFor({ timeout: T });
    const id = await live.getAttribute('data-session');
    step('session-listed', id);
    await shot('sessions');
    await live.locator('button.terminate').click();
    await page.locator('#session-message.ok').waitFor({ timeout: T });
    await row('active', 'session', id).waitFor({ state: 'detached', timeout: T });
    const past = row('past', 'session', id);
    await past.waitFor({ timeout: T });
    const outcome = await past.locator('td.outcome').textContent();
    if (!outcome.includes('terminated by administrator ' + user)) throw new Error(`past outcome ${outcome}`);
    step('terminated', id);
    await shot('sessions-terminated');
    await signal('client-closed');

    // Log out: the pages are gone for this browser.
    await page.click('#logout');
    await page.waitForURL(/\/login$/, { timeout: T });
    await page.goto(base + '/sessions');
    await page.waitForURL(/\/login$/, { timeout: T });
    step('logged-out');

    if (errors.length) throw new Error('page errors: ' + errors.join(' | '));
    step('done');
  } finally {
    await browser.close();
  }
}

main().catch(async (e) => {
  console.log('FAIL: ' + (e && e.stack ? e.stack : e));
  try { if (page) await shot('failure'); } catch (_) { /* browser gone */ }
  process.exit(1);
});

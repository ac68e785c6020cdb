// Browser tests of the web UI (docs/ui.md, docs/testing.md): Debian's
// chromium, headless, driven by playwright-core from ui/node_modules.
// tests/integration/test_browser.py starts a sluice pair per scenario and runs
//   node tests/browser/ui_test.mjs SCENARIO
// with the scenario's facts as JSON in SLUICE_BROWSER (base URL, users,
// tokens, expected answers, screenshot directory). Every page fails the
// scenario on a console error, an uncaught exception, a CSP violation or a
// request to another origin. The last line printed is "ok SCENARIO" or
// "FAIL SCENARIO: why"; the exit status says the same.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(process.env.SLUICE_BROWSER || '{}');
const scenario = process.argv[2];
const require = createRequire(join(cfg.source, 'ui', 'package.json'));
const pw = await import(pathToFileURL(require.resolve('playwright-core')).href);
const chromium = pw.chromium || pw.default.chromium;

const STEP_MS = 15000;
const problems = [];

function fail(msg) {
  throw new Error(msg);
}

function check(cond, msg) {
  if (!cond) fail(msg);
}

// A fresh profile in a fresh directory; nothing may download a browser.
async function launch() {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return { ctx, dir };
}

// Watches a page for everything that fails a scenario.
function watch(page, name) {
  const origin = new URL(cfg.base).origin;
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (page.expectedErrors && page.expectedErrors.test(m.text())) console.log('tolerated: ' + m.text());
    else problems.push(name + ': console error: ' + m.text());
  });
  page.on('pageerror', (e) => problems.push(name + ': uncaught: ' + e.message));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith('blob:') && !u.startsWith('data:') && new URL(u).origin !== origin)
      problems.push(name + ': request to another origin: ' + u);
  });
  page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI);
    });
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(cfg.shots, scenario + '-' + name + '.png'), fullPage: true });
}

async function login(page, path, who) {
  await page.goto(cfg.base + path);
  await page.waitForSelector('#login-view:not([hidden])', { timeout: STEP_MS });
  await page.fill('#login-user', who[0]);
  await page.fill('#login-pass', who[1]);
  await page.press('#login-pass', 'Enter');
}

async function newConversation(page, model, title) {
  await page.click('#new-conv');
  await page.waitForSelector('#new-dialog[open]');
  await page.selectOption('#new-model', model);
  if (title) await page.fill('#new-title-input', title);
  await page.click('#new-create');
  await page.waitForSelector('#composer:not([hidden])');
  return page.evaluate(() => location.hash.slice(1));
}

async function send(page, text) {
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
}

// The assistant message shown last: its state as the page keeps it.
async function lastAnswer(page) {
  return page.$$eval('li.msg.assistant', (els) => {
    const e = els[els.length - 1];
    if (!e) return null;
    return {
      id: e.dataset.id, seq: Number(e.dataset.seq), status: e.dataset.status || '',
      gaps: Number(e.dataset.gaps), dups: Number(e.dataset.dups),
      raw: e.querySelector('pre.raw').textContent, usage: e.querySelector('.usage').textContent,
      count: els.length,
    };
  });
}

async function waitAnswer(page, pred, what, ms = STEP_MS) {
  const t0 = Date.now();
  for (;;) {
    const a = await lastAnswer(page);
    if (a && pred(a)) return a;
    if (Date.now() - t0 > ms) fail('waiting for ' + what + '; last answer ' + JSON.stringify(a));
    await page.waitForTimeout(50);
  }
}

// Asks the Python driver to do something to the servers (e.g. restart the
// dataplane) and waits until it says it is done.
let stdinLines = null;
async function driver(what) {
  if (!stdinLines) {
    const rl = (await import('node:readline')).createInterface({ input: process.stdin });
    stdinLines = rl[Symbol.asyncIterator]();
  }
  console.log('SIGNAL ' + what);
  const { value } = await stdinLines.next();
  check(value === 'done ' + what, 'driver answered ' + JSON.stringify(value));
}

function answerOf(prompt, n) {
  return cfg.tokens[prompt].slice(0, n).join('');
}

// ---- scenarios --------------------------------------------------------------

// Log in, start a conversation, watch the answer arrive token by token,
// cancel it, then a complete answer with its usage and cost; the list's
// search, archive and delete; log out.
async function chatStreamCancel(ctx) {
  const page = watch(await ctx.newPage(), 'chat');
  await login(page, '/', cfg.user);
  await page.waitForSelector('#app-view:not([hidden])', { timeout: STEP_MS });
  check((await page.textContent('#who')) === cfg.user[0], 'user name shown');
  await newConversation(page, 'synth-slow', 'slow one');
  await send(page, cfg.prompts.slow);
  const seen = new Set();
  const a = await waitAnswer(page, (x) => {
    seen.add(x.raw.length);
    return x.status === 'streaming' && x.seq >= 3;
  }, 'three tokens');
  check(seen.size >= 2, 'the answer grew in steps, saw lengths ' + [...seen]);
  await shot(page, 'streaming');
  await page.click('#cancel');
  const c = await waitAnswer(page, (x) => x.status === 'cancelled' && x.usage.includes('completion'), 'cancelled');
  check(c.seq >= a.seq && c.seq < cfg.tokens[cfg.prompts.slow].length, 'cancelled after ' + c.seq + ' tokens');
  check(c.raw === answerOf(cfg.prompts.slow, c.seq), 'cancelled text ' + JSON.stringify(c.raw));
  check(c.usage.includes(c.seq + ' completion'), 'usage of the cancelled answer: ' + c.usage);
  check(await page.isHidden('#cancel'), 'cancel button gone');

  await newConversation(page, 'synth', 'fast one');
  await send(page, cfg.prompts.fast);
  const done = await waitAnswer(page, (x) => x.status === 'complete' && x.usage.includes('$'), 'complete');
  check(done.raw === answerOf(cfg.prompts.fast, 24), 'complete text ' + JSON.stringify(done.raw));
  check(done.gaps === 0 && done.dups === 0, 'no gap or duplicate');
  // Markdown is rendered, the model's "<html>" never became markup.
  const bodyHtml = await page.$eval('li.msg.assistant:last-of-type .body', (e) => e.innerHTML);
  check(!/<html/i.test(bodyHtml), 'raw HTML from the model reached the DOM: ' + bodyHtml);
  await shot(page, 'complete');

  // The list: two conversations, search, archive, delete.
  await page.waitForFunction(() => document.querySelectorAll('#conv-list li').length === 2);
  await page.fill('#search', 'slow');
  await page.waitForFunction(() => document.querySelectorAll('#conv-list li').length === 1);
  await page.fill('#search', '');
  await page.waitForFunction(() => document.querySelectorAll('#conv-list li').length === 2);
  await page.click('#conv-list li:has-text("slow one") >> text=Archive');
  await page.waitForFunction(() => document.querySelectorAll('#conv-list li').length === 1);
  await page.check('#show-archived');
  await page.waitForFunction(() => document.querySelector('#conv-list li .conv-title')?.textContent === 'slow one');
  await page.click('#conv-list li >> text=Delete');
  await page.click('#conv-list li >> text=Confirm');
  await page.waitForFunction(() => document.querySelectorAll('#conv-list li').length === 0);
  await page.click('#logout');
  await page.waitForSelector('#login-view:not([hidden])');
  await shot(page, 'logged-out');
}

// Reload in the middle of an answer: the conversation reopens and the
// answer continues exactly once, with no text twice and none missing.
async function chatReloadResume(ctx) {
  const page = watch(await ctx.newPage(), 'chat');
  await login(page, '/', cfg.user);
  await page.waitForSelector('#app-view:not([hidden])', { timeout: STEP_MS });
  const sid = await newConversation(page, 'synth-slow', 'reload me');
  await send(page, cfg.prompts.reload);
  const before = await waitAnswer(page, (x) => x.seq >= 5, 'five tokens');
  await page.reload();
  await page.waitForSelector('#composer:not([hidden])', { timeout: STEP_MS });
  check((await page.evaluate(() => location.hash.slice(1))) === sid, 'same conversation after reload');
  const mid = await waitAnswer(page, (x) => x.raw.length > 0, 'the answer back after reload');
  check(mid.id === before.id, 'same answer after reload');
  await shot(page, 'after-reload');
  const end = await waitAnswer(page, (x) => x.status === 'complete', 'complete after reload', 20000);
  const want = answerOf(cfg.prompts.reload, cfg.tokens[cfg.prompts.reload].length);
  check(end.raw === want, 'text after reload ' + JSON.stringify(end.raw) + ' want ' + JSON.stringify(want));
  check(end.gaps === 0 && end.dups === 0, 'gaps ' + end.gaps + ' dups ' + end.dups);
  check(end.count === 1, end.count + ' assistant messages shown');
  await shot(page, 'complete');
}

// The network drops in the middle of an answer (the dataplane is killed
// and started again): the page says it reconnects, waits 1 s, 2 s ... and
// resumes with Last-Event-ID, so the answer ends with nothing twice and
// nothing missing.
async function chatNetworkDrop(ctx) {
  const page = watch(await ctx.newPage(), 'chat');
  await login(page, '/', cfg.user);
  await page.waitForSelector('#app-view:not([hidden])', { timeout: STEP_MS });
  await newConversation(page, 'synth-slow', 'drop me');
  await send(page, cfg.prompts.drop);
  const before = await waitAnswer(page, (x) => x.seq >= 5, 'five tokens');
  // The refused reconnections while the dataplane is down are what this
  // scenario provokes: the only console errors it tolerates, only meanwhile.
  page.expectedErrors = /^Failed to load resource: net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE)$/;
  await driver('restart-dataplane');
  await page.waitForSelector('#conn[data-state="retry"]', { timeout: STEP_MS });
  const says = await page.textContent('#conn');
  check(/reconnecting in \d+ s/.test(says), 'indicator while down: ' + says);
  await shot(page, 'reconnecting');
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 20000 });
  page.expectedErrors = null;
  const end = await waitAnswer(page, (x) => x.status === 'complete', 'complete after the drop', 20000);
  const want = answerOf(cfg.prompts.drop, cfg.tokens[cfg.prompts.drop].length);
  check(end.id === before.id && end.raw === want, 'text after the drop ' + JSON.stringify(end.raw));
  check(end.gaps === 0 && end.dups === 0 && end.count === 1, 'gaps ' + end.gaps + ' dups ' + end.dups);
  await shot(page, 'complete');
}

async function download(page, button) {
  const [d] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
  return { name: d.suggestedFilename(), text: readFileSync(await d.path(), 'utf8') };
}

// Export as JSON and Markdown, replay at 4x, a phone-sized screen and the keyboard.
async function chatExportReplay(ctx) {
  const page = watch(await ctx.newPage(), 'chat');
  await login(page, '/', cfg.user);
  await page.waitForSelector('#app-view:not([hidden])', { timeout: STEP_MS });
  await newConversation(page, 'synth-replay', 'export me');
  await send(page, cfg.prompts.replay);
  const t0 = Date.now();
  const a = await waitAnswer(page, (x) => x.status === 'complete', 'complete');
  const liveMs = Date.now() - t0;
  const want = answerOf(cfg.prompts.replay, cfg.tokens[cfg.prompts.replay].length);
  check(a.raw === want, 'answer text');

  const j = await download(page, '#export-json');
  check(j.name.endsWith('.json'), 'json file name ' + j.name);
  const exp = JSON.parse(j.text);
  check(exp.title === 'export me' && exp.messages.length === 2, 'json export ' + j.text.slice(0, 200));
  check(exp.messages[1].content === want && exp.messages[1].usage.completion_tokens === 20, 'json answer');
  const md = await download(page, '#export-md');
  check(md.name.endsWith('.md'), 'markdown file name ' + md.name);
  check(md.text.startsWith('# export me') && md.text.includes('## Assistant') && md.text.includes(want),
    'markdown export ' + md.text.slice(0, 300));

  await page.selectOption('#replay-speed', '4');
  await page.click('li.msg.assistant:last-of-type button:has-text("Replay")');
  await page.waitForSelector('#replay[data-state="done"]', { timeout: STEP_MS });
  const rp = await page.$eval('#replay', (e) => ({ ms: Number(e.dataset.elapsedMs), speed: e.dataset.speed,
    raw: document.querySelector('#replay-raw').textContent }));
  check(rp.speed === '4' && rp.raw === want, 'replayed text ' + JSON.stringify(rp));
  // 20 tokens at 10/s is about 2 s live; at 4x about half a second.
  check(rp.ms < 1500 && rp.ms < liveMs, 'replay at 4x took ' + rp.ms + ' ms (live ' + liveMs + ' ms)');
  await shot(page, 'replay');
  await page.keyboard.press('Escape');
  check(await page.isHidden('#replay'), 'Escape closes the replay');

  // A phone: the list becomes a drawer, opened with its button or Ctrl+K.
  await page.setViewportSize({ width: 390, height: 844 });
  check(await page.isVisible('#drawer-toggle'), 'drawer button on a phone');
  await page.waitForSelector('#conv-list li', { state: 'hidden', timeout: 2000 });
  await page.keyboard.press('Control+k');
  await page.waitForFunction(() => document.activeElement?.id === 'search', null, { timeout: 3000 });
  await page.waitForSelector('#conv-list li', { state: 'visible' });
  await shot(page, 'phone-drawer');
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.body.classList.contains('drawer-open'));
  await shot(page, 'phone');
}

// Reads an SSE stream with fetch as a second client would.
function sseReader(url, token) {
  const out = { events: [], ended: false, error: null };
  const ctl = new AbortController();
  out.done = (async () => {
    try {
      const res = await fetch(url, { headers: { Authorization: 'Bearer ' + token }, signal: ctl.signal });
      const dec = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = { type: 'message' };
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) ev.type = line.slice(7);
            else if (line.startsWith('data: ')) ev.data = JSON.parse(line.slice(6));
          }
          if (ev.data) out.events.push(ev);
        }
      }
    } catch (e) {
      if (e.name !== 'AbortError') out.error = e.message;
    }
    out.ended = true;
  })();
  out.abort = () => ctl.abort();
  return out;
}

async function apiAs(token, method, path, body) {
  const res = await fetch(cfg.base + path, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  check(res.ok, method + ' ' + path + ': ' + res.status + ' ' + text);
  return text ? JSON.parse(text) : null;
}

async function until(page, fn, what, ms = STEP_MS) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) fail('waiting for ' + what);
    await page.waitForTimeout(50);
  }
}

// The dashboard: a second client's new conversation is a toast within a
// second, the rate chart moves while a stream runs, the streams table's Kill
// ends that stream for its client.
async function adminDashboard(ctx) {
  const page = watch(await ctx.newPage(), 'admin');
  // The socket passes through a route, so the test can cut it like a
  // network drop and refuse reconnections for a while.
  const sock = { allow: true, routes: [] };
  await page.routeWebSocket(/\/ws\/admin$/, (ws) => {
    if (!sock.allow) {
      ws.close({ code: 1011, reason: 'test: unreachable' });
      return;
    }
    sock.routes.push(ws);
    ws.connectToServer();
  });
  await login(page, '/admin', cfg.admin);
  await page.waitForSelector('#dash:not([hidden])', { timeout: STEP_MS });
  await page.waitForSelector('#conn[data-state="live"]', { timeout: STEP_MS });
  await page.waitForSelector('#chart-rate[data-points]', { timeout: STEP_MS });

  const t0 = Date.now();
  const s = await apiAs(cfg.userToken, 'POST', '/api/chat/sessions', { model_id: 'synth', title: 'from afar' });
  await page.waitForSelector(`.toast.good[data-kind="created"][data-session="${s.id}"]`, { timeout: 1000 });
  const toastMs = Date.now() - t0;
  const text = await page.textContent(`.toast[data-session="${s.id}"]`);
  check(/conversations \d+ → \d+/.test(text), 'toast shows the count change: ' + text);
  await shot(page, 'toast');

  const slow = await apiAs(cfg.userToken, 'POST', '/api/chat/sessions', { model_id: 'synth-slow' });
  const reader = sseReader(cfg.base + '/api/chat/stream/' + slow.id, cfg.userToken);
  await apiAs(cfg.userToken, 'POST', '/api/chat/message', { session_id: slow.id, content: cfg.prompts.slow });
  const pointsBefore = Number(await page.getAttribute('#chart-rate', 'data-points'));
  await until(page, async () => Number(await page.getAttribute('#chart-rate', 'data-max-tokens-per-s')) > 0,
    'the rate chart to move');
  check(Number(await page.getAttribute('#chart-rate', 'data-points')) > pointsBefore, 'chart got new points');
  const row = `#streams tr[data-session="${slow.id}"]`;
  await page.waitForSelector(row, { timeout: STEP_MS });
  await shot(page, 'streaming');
  await page.click(row + ' button:has-text("Kill")');
  await until(page, async () => reader.ended, 'the killed stream to end for its client', 8000);
  const kinds = reader.events.map((e) => e.type + ':' + (e.data.status || (e.data.error && e.data.error.code) || ''));
  check(kinds.includes('done:cancelled'), 'client saw done cancelled: ' + kinds.join(' '));
  check(kinds[kinds.length - 1] === 'error:session_killed', 'client saw the kill last: ' + kinds.join(' '));
  await page.waitForSelector(`.toast.bad[data-kind="kicked"][data-session="${slow.id}"]`, { timeout: 3000 });
  await page.waitForSelector(row, { state: 'detached', timeout: 5000 });
  await shot(page, 'killed');

  // The socket drops and cannot come back: the page says so and polls the
  // HTTP API, toasts still arrive; once it can, it is live again.
  sock.allow = false;
  for (const r of sock.routes.splice(0)) await r.close({ code: 1001, reason: 'test: network drop' });
  await page.waitForSelector('#conn[data-state="polling"]', { timeout: 5000 });
  const says = await page.textContent('#conn');
  check(/polling/.test(says), 'indicator while the socket is down: ' + says);
  const s3 = await apiAs(cfg.userToken, 'POST', '/api/chat/sessions', { model_id: 'synth', title: 'while polling' });
  await page.waitForSelector(`.toast.good[data-kind="created"][data-session="${s3.id}"]`, { timeout: 6000 });
  await shot(page, 'polling');
  sock.allow = true;
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 20000 });
  return { toast_ms: toastMs };
}

const SCENARIOS = {
  chat_stream_cancel: chatStreamCancel,
  chat_reload_resume: chatReloadResume,
  chat_network_drop: chatNetworkDrop,
  chat_export_replay: chatExportReplay,
  admin_dashboard: adminDashboard,
};

const run = SCENARIOS[scenario];
if (!run) {
  console.log('FAIL ' + scenario + ': no such scenario (' + Object.keys(SCENARIOS).join(', ') + ')');
  process.exit(2);
}
const { ctx, dir } = await launch();
let code = 0;
try {
  const info = await run(ctx);
  if (problems.length) fail(problems.join('\n'));
  console.log('info ' + JSON.stringify(info || {}));
  console.log('ok ' + scenario);
} catch (e) {
  code = 1;
  for (const p of ctx.pages()) {
    try {
      await p.screenshot({ path: join(cfg.shots, scenario + '-failed.png'), fullPage: true });
    } catch (err) {
      // the page may be gone
    }
  }
  console.log('FAIL ' + scenario + ': ' + e.message + (problems.length ? '\n' + problems.join('\n') : ''));
} finally {
  await ctx.close();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(code);

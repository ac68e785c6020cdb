// The chat app at /: log in, pick or start a conversation, stream answers
// token by token over SSE (resuming with Last-Event-ID after a drop or a
// reload), cancel, export, replay.

import './app.css';
import { api, ApiError, currentSession, login, logout } from './api.js';
import { Backoff, sleep } from './backoff.js';
import { $, clear, download, el, fmtTime, show } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { readSse } from './sse.js';

const ENDED = new Set(['complete', 'cancelled', 'error', 'interrupted']);

const state = {
  user: null,
  sessions: [],
  agents: [],
  models: [],
  current: null, // the open session object
  msgs: new Map(), // message id -> view of an assistant message
  stream: null, // the open Stream
};

// ---- connection indicator -------------------------------------------------

function setConn(kind, text) {
  const c = $('#conn');
  c.dataset.state = kind;
  c.textContent = text;
}

// ---- login ------------------------------------------------------------------

function showLogin(msg) {
  state.user = null;
  closeStream();
  show($('#app-view'), false);
  show($('#logout'), false);
  show($('#drawer-toggle'), false);
  $('#who').textContent = '';
  setConn('idle', '');
  show($('#login-view'), true);
  $('#login-error').textContent = msg || '';
  $('#login-user').focus();
}

async function enter(session) {
  state.user = session.user;
  show($('#login-view'), false);
  show($('#app-view'), true);
  show($('#logout'), true);
  show($('#drawer-toggle'), true);
  $('#who').textContent = session.user.name;
  await Promise.all([loadPickers(), loadList()]);
  const sid = location.hash.slice(1);
  if (sid) await openSession(sid);
}

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('#login-error').textContent = '';
  try {
    const s = await login($('#login-user').value, $('#login-pass').value);
    $('#login-pass').value = '';
    await enter(s);
  } catch (e) {
    $('#login-error').textContent = e.code === 'invalid_credentials' ? 'Wrong user name or password.' : e.message;
  }
});

$('#logout').addEventListener('click', async () => {
  try {
    await logout();
  } catch (e) {
    // the session is gone either way
  }
  history.replaceState(null, '', '/');
  showLogin('Logged out.');
});

// A 401 anywhere means the login ended (logout elsewhere, expiry).
function handleError(e, where) {
  if (e instanceof ApiError && e.status === 401) {
    showLogin('Your login ended; log in again.');
    return;
  }
  (where || $('#conv-error')).textContent = e.message || String(e);
}

// ---- conversation list --------------------------------------------------------

let searchTimer = 0;

async function loadList() {
  const q = $('#search').value.trim();
  const archived = $('#show-archived').checked ? 'true' : 'false';
  const params = new URLSearchParams({ limit: '100', archived });
  if (q) params.set('q', q);
  try {
    const r = await api('GET', '/api/chat/sessions?' + params);
    state.sessions = r.sessions;
    renderList();
  } catch (e) {
    handleError(e);
  }
}

function renderList() {
  const ul = $('#conv-list');
  clear(ul);
  for (const s of state.sessions) {
    const active = state.current && state.current.id === s.id;
    const del = el('button', { type: 'button', class: 'small danger', text: 'Delete', title: 'Delete this conversation' });
    del.addEventListener('click', (ev) => {
      ev.stopPropagation();
      // Two steps instead of a modal confirm: the second click deletes.
      if (del.dataset.armed) deleteSession(s.id);
      else {
        del.dataset.armed = '1';
        del.textContent = 'Confirm';
        setTimeout(() => { delete del.dataset.armed; del.textContent = 'Delete'; }, 4000);
      }
    });
    const arch = el('button', {
      type: 'button', class: 'small', text: s.archived ? 'Unarchive' : 'Archive',
      onclick: (ev) => { ev.stopPropagation(); archiveSession(s.id, !s.archived); },
    });
    const open = el('button', {
      type: 'button', class: 'conv-open', 'aria-current': active ? 'true' : null,
      onclick: () => openSession(s.id),
    }, el('span', { class: 'conv-title', text: s.title || 'Untitled conversation' }),
    el('span', { class: 'muted small-text', text: s.agent_id + ' · ' + s.model_id }));
    ul.append(el('li', { class: active ? 'active' : '', dataset: { id: s.id } }, open, el('span', { class: 'conv-actions' }, arch, del)));
  }
  show($('#conv-empty'), state.sessions.length === 0);
}

$('#search').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(loadList, 200);
});
$('#show-archived').addEventListener('change', loadList);

async function archiveSession(id, archived) {
  try {
    const s = await api('PATCH', '/api/chat/sessions/' + id, { archived });
    if (state.current && state.current.id === id) state.current = { ...state.current, ...s };
    await loadList();
  } catch (e) {
    handleError(e);
  }
}

async function deleteSession(id) {
  try {
    await api('DELETE', '/api/chat/sessions/' + id);
    if (state.current && state.current.id === id) closeSession();
    await loadList();
  } catch (e) {
    handleError(e);
  }
}

// ---- new conversation -----------------------------------------------------------

async function loadPickers() {
  try {
    const [a, m] = await Promise.all([api('GET', '/api/agents'), api('GET', '/api/models')]);
    state.agents = a.agents;
    state.models = m.models;
  } catch (e) {
    handleError(e);
  }
}

function fillPickers() {
  const ag = $('#new-agent');
  clear(ag);
  for (const a of state.agents) ag.append(el('option', { value: a.id, text: a.id }));
  const md = $('#new-model');
  clear(md);
  md.append(el('option', { value: '', text: 'agent default' }));
  for (const m of state.models) md.append(el('option', { value: m.id, text: m.id + ' (' + m.backend + ')' }));
  agentChanged();
}

function agentChanged() {
  const a = state.agents.find((x) => x.id === $('#new-agent').value);
  $('#new-agent-desc').textContent = a ? (a.description || '') + ' Default model: ' + a.model + '.' : '';
}

$('#new-agent').addEventListener('change', agentChanged);
$('#new-conv').addEventListener('click', () => {
  fillPickers();
  $('#new-error').textContent = '';
  $('#new-title-input').value = '';
  $('#new-dialog').showModal();
  $('#new-agent').focus();
});
$('#new-cancel').addEventListener('click', () => $('#new-dialog').close());
$('#new-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const body = { agent_id: $('#new-agent').value };
  if ($('#new-model').value) body.model_id = $('#new-model').value;
  const title = $('#new-title-input').value.trim();
  if (title) body.title = title;
  try {
    const s = await api('POST', '/api/chat/sessions', body);
    $('#new-dialog').close();
    await loadList();
    await openSession(s.id);
    $('#prompt').focus();
  } catch (e) {
    handleError(e, $('#new-error'));
  }
});

// ---- one conversation ------------------------------------------------------------------

function closeSession() {
  closeStream();
  closeReplay();
  state.current = null;
  state.msgs.clear();
  clear($('#messages'));
  show($('#conv-head'), false);
  show($('#composer'), false);
  show($('#conv-none'), true);
  history.replaceState(null, '', '/');
  renderList();
}

function usageText(u) {
  if (!u) return '';
  const cost = typeof u.cost_usd === 'number' ? ' · $' + u.cost_usd.toFixed(6) : '';
  return u.prompt_tokens + ' prompt + ' + u.completion_tokens + ' completion = ' + u.total_tokens + ' tokens' + cost;
}

function userBubble(m) {
  return el('li', { class: 'msg user', dataset: { id: m.id || '' } },
    el('div', { class: 'who-label', text: 'You' }),
    el('div', { class: 'body plain', text: m.content }));
}

// An assistant message: rendered Markdown, the raw text, status and usage.
function assistantView(id) {
  const body = el('div', { class: 'body md' });
  const raw = el('pre', { class: 'raw' });
  const rawBox = el('details', { class: 'raw-box' }, el('summary', { text: 'Raw text' }), raw);
  const status = el('span', { class: 'status' });
  const usage = el('span', { class: 'usage muted' });
  const replay = el('button', { type: 'button', class: 'small', text: 'Replay', hidden: true, onclick: () => startReplay(id) });
  const li = el('li', { class: 'msg assistant', dataset: { id, seq: '0', gaps: '0', dups: '0' } },
    el('div', { class: 'who-label' }, 'Assistant ', status),
    body, el('div', { class: 'foot' }, usage, replay), rawBox);
  const v = { id, li, body, raw, status, usage, replay, text: '', seq: 0, st: '', renderPending: false };
  state.msgs.set(id, v);
  return v;
}

function renderBody(v) {
  v.raw.textContent = v.text;
  if (v.renderPending) return;
  v.renderPending = true;
  // One Markdown pass per frame, however many tokens arrived.
  requestAnimationFrame(() => {
    v.renderPending = false;
    clear(v.body);
    v.body.append(renderMarkdown(v.text));
    const list = $('#messages');
    if (list.scrollHeight - list.scrollTop - list.clientHeight < 200) list.scrollTop = list.scrollHeight;
  });
}

function setStatus(v, st) {
  v.st = st;
  v.status.textContent = st;
  v.li.dataset.status = st;
  const ended = ENDED.has(st);
  show(v.replay, ended);
  updateComposer();
}

function updateComposer() {
  const running = [...state.msgs.values()].some((v) => v.st && !ENDED.has(v.st));
  show($('#cancel'), running);
  $('#send').disabled = running;
}

async function openSession(id) {
  closeStream();
  closeReplay();
  $('#conv-error').textContent = '';
  let s;
  try {
    s = await api('GET', '/api/chat/sessions/' + encodeURIComponent(id));
  } catch (e) {
    if (e.status === 404) {
      history.replaceState(null, '', '/');
      return;
    }
    handleError(e);
    return;
  }
  state.current = s;
  state.msgs.clear();
  history.replaceState(null, '', '#' + s.id);
  $('#conv-title').textContent = s.title || 'Untitled conversation';
  $('#conv-meta').textContent = s.agent_id + ' · ' + s.model_id + ' · ' + fmtTime(s.created_at) + (s.archived ? ' · archived' : '');
  show($('#conv-head'), true);
  show($('#composer'), true);
  show($('#conv-none'), false);
  const list = $('#messages');
  clear(list);
  // Messages up to the first answer still running are final; the running
  // answer and everything after it come from the stream, which resumes
  // right after the last final message (":d"), so nothing shows twice.
  let resume = null;
  let live = false;
  for (const m of s.messages) {
    if (m.role === 'assistant' && !ENDED.has(m.status)) live = true;
    if (live) continue;
    if (m.role === 'user') list.append(userBubble(m));
    else {
      const v = assistantView(m.id);
      v.text = m.content;
      v.seq = -1;
      list.append(v.li);
      setStatus(v, m.status);
      v.usage.textContent = usageText(m.usage);
      renderBody(v);
    }
    resume = m.id + ':d';
  }
  list.scrollTop = list.scrollHeight;
  renderList();
  closeDrawer();
  state.stream = new Stream(s.id, resume);
}

// ---- the live stream of the open conversation -------------------------------------------

class Stream {
  constructor(sid, resume) {
    this.sid = sid;
    this.lastId = resume;
    this.ctl = new AbortController();
    this.backoff = new Backoff(1000, 30000);
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    this.ctl.abort();
  }

  async run() {
    while (!this.stopped) {
      let delivered = false;
      setConn('connecting', 'connecting…');
      try {
        await readSse('/api/chat/stream/' + encodeURIComponent(this.sid), {
          lastEventId: this.lastId,
          signal: this.ctl.signal,
          onOpen: () => setConn('live', 'live'),
          onEvent: (name, data, id) => {
            delivered = true;
            this.backoff.reset();
            if (id) this.lastId = id;
            this.event(name, data);
          },
        });
      } catch (e) {
        if (this.stopped || e.name === 'AbortError') return;
        if (e.status === 401) {
          showLogin('Your login ended; log in again.');
          return;
        }
        if (e.status === 404) {
          setConn('idle', 'conversation gone');
          return;
        }
      }
      if (this.stopped) return;
      if (this.kicked) {
        setConn('idle', 'stopped by the operator');
        return;
      }
      if (delivered) this.backoff.reset();
      const wait = this.backoff.next();
      setConn('retry', 'reconnecting in ' + Math.round(wait / 1000) + ' s');
      await sleep(wait, this.ctl.signal);
    }
  }

  event(name, d) {
    if (name === 'error') {
      const code = d && d.error ? d.error.code : '';
      if (code === 'unauthenticated') this.stop(), showLogin('Your login ended; log in again.');
      else if (code === 'session_killed') {
        this.kicked = true;
        $('#conv-error').textContent = 'This conversation was stopped by an operator.';
      }
      return;
    }
    if (!d || d.session_id !== this.sid) return;
    let v = state.msgs.get(d.message_id);
    if (!v) {
      v = assistantView(d.message_id);
      $('#messages').append(v.li);
    }
    switch (name) {
      case 'status_update':
        if (!ENDED.has(v.st)) setStatus(v, d.status);
        break;
      case 'token': {
        const first = d.seq - d.n + 1;
        if (d.seq <= v.seq) {
          v.li.dataset.dups = String(Number(v.li.dataset.dups) + 1);
          break;
        }
        if (first !== v.seq + 1) v.li.dataset.gaps = String(Number(v.li.dataset.gaps) + 1);
        v.text += d.text;
        v.seq = d.seq;
        v.li.dataset.seq = String(d.seq);
        if (v.st !== 'streaming') setStatus(v, 'streaming');
        renderBody(v);
        break;
      }
      case 'usage':
        v.usage.textContent = usageText(d);
        break;
      case 'done':
        setStatus(v, d.status);
        if (d.error) v.usage.textContent += ' · ' + d.error.message;
        renderBody(v);
        break;
      default:
        break;
    }
  }
}

function closeStream() {
  if (state.stream) state.stream.stop();
  state.stream = null;
}

// ---- composing, cancelling ------------------------------------------------------------

async function send() {
  const text = $('#prompt').value;
  if (!text.trim() || !state.current || $('#send').disabled) return;
  $('#conv-error').textContent = '';
  const s = state.current;
  $('#messages').append(userBubble({ content: text }));
  $('#prompt').value = '';
  try {
    if (state.stream && state.stream.kicked) state.stream = new Stream(s.id, state.stream.lastId);
    const r = await api('POST', '/api/chat/message', { session_id: s.id, content: text });
    if (!state.msgs.has(r.message_id)) {
      const v = assistantView(r.message_id);
      $('#messages').append(v.li);
      setStatus(v, 'queued');
    }
    if (!s.title) {
      const title = text.trim().split('\n')[0].slice(0, 60);
      const u = await api('PATCH', '/api/chat/sessions/' + s.id, { title });
      state.current = { ...s, ...u };
      $('#conv-title').textContent = title;
      loadList();
    }
  } catch (e) {
    handleError(e);
  }
}

$('#composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  send();
});
$('#prompt').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    send();
  }
});
$('#cancel').addEventListener('click', async () => {
  if (!state.current) return;
  try {
    await api('POST', '/api/chat/sessions/' + state.current.id + '/cancel', {});
  } catch (e) {
    if (e.code !== 'not_streaming') handleError(e);
  }
});

// ---- export ---------------------------------------------------------------------------------

async function exportAs(format) {
  const s = state.current;
  if (!s) return;
  try {
    const res = await api('GET', '/api/chat/sessions/' + s.id + '/export?format=' + format, undefined, { raw: true });
    const text = await res.text();
    const base = (s.title || s.id).replace(/[^\w.-]+/g, '_').slice(0, 60) || s.id;
    if (format === 'json') download(base + '.json', 'application/json', text);
    else download(base + '.md', 'text/markdown', text);
  } catch (e) {
    handleError(e);
  }
}

$('#export-json').addEventListener('click', () => exportAs('json'));
$('#export-md').addEventListener('click', () => exportAs('markdown'));

// ---- replay ------------------------------------------------------------------------------------

let replayCtl = null;

function closeReplay() {
  if (replayCtl) replayCtl.abort();
  replayCtl = null;
  show($('#replay'), false);
}

async function startReplay(mid) {
  closeReplay();
  const s = state.current;
  const speed = $('#replay-speed').value;
  const ctl = new AbortController();
  replayCtl = ctl;
  const box = $('#replay');
  const body = $('#replay-body');
  clear(body);
  $('#replay-raw').textContent = '';
  box.dataset.state = 'playing';
  box.dataset.speed = speed;
  show(box, true);
  const t0 = performance.now();
  let text = '';
  $('#replay-info').textContent = mid + ' at ' + speed + '×';
  try {
    await readSse('/api/replay/session/' + s.id + '?speed=' + speed + '&message_id=' + mid, {
      signal: ctl.signal,
      onEvent: (name, d) => {
        if (!d || d.message_id !== mid) return;
        if (name === 'token') {
          text += d.text;
          clear(body);
          body.append(renderMarkdown(text));
          $('#replay-raw').textContent = text;
        } else if (name === 'done') {
          const secs = ((performance.now() - t0) / 1000).toFixed(1);
          box.dataset.state = 'done';
          box.dataset.elapsedMs = String(Math.round(performance.now() - t0));
          $('#replay-info').textContent = mid + ' at ' + speed + '× · ' + d.status + ' in ' + secs + ' s';
          ctl.abort();
        }
      },
    });
  } catch (e) {
    if (e.name !== 'AbortError') handleError(e);
  }
}

$('#replay-close').addEventListener('click', closeReplay);

// ---- phone-sized screens: the list is a drawer ------------------------------------------------

function closeDrawer() {
  document.body.classList.remove('drawer-open');
  $('#drawer-toggle').setAttribute('aria-expanded', 'false');
}

$('#drawer-toggle').addEventListener('click', () => {
  const open = document.body.classList.toggle('drawer-open');
  $('#drawer-toggle').setAttribute('aria-expanded', String(open));
  if (open) $('#search').focus();
});

// ---- keyboard -------------------------------------------------------------------------------------

document.addEventListener('keydown', (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === 'k') {
    ev.preventDefault();
    document.body.classList.add('drawer-open');
    $('#search').focus();
  } else if (ev.key === 'Escape') {
    if ($('#replay').hidden === false) closeReplay();
    closeDrawer();
  }
});

window.addEventListener('hashchange', () => {
  const sid = location.hash.slice(1);
  if (state.user && sid && (!state.current || state.current.id !== sid)) openSession(sid);
});

// ---- start ------------------------------------------------------------------------------------------

(async () => {
  try {
    const s = await currentSession();
    if (s) await enter(s);
    else showLogin();
  } catch (e) {
    showLogin(e.message);
  }
})();

// The operator dashboard at /admin: live numbers and charts, session events
// as toasts, alerts, the live streams with a kill button. Everything comes
// pushed over /ws/admin; while the socket is down the page polls the admin
// HTTP endpoints instead and says so.

import './admin.css';
import uPlot from 'uplot';
import { api, ApiError, currentSession, login, logout } from './api.js';
import { Backoff } from './backoff.js';
import { $, clear, el, fmtAge, fmtNum, show } from './dom.js';

const HISTORY = 120; // chart points kept
const POLL_MS = 2000;
const TOAST_MS = 5000;

const st = {
  user: null,
  ws: null,
  backoff: new Backoff(1000, 30000),
  retryTimer: 0,
  pollTimer: 0,
  watchdog: 0,
  heartbeatMs: 30000,
  lastEventSeq: 0,
  interval: 1,
  charts: {},
  series: { t: [], tps: [], fps: [], conns: [], streams: [] },
};

function setConn(kind, text) {
  const c = $('#conn');
  c.dataset.state = kind;
  c.textContent = text;
}

// ---- login ----------------------------------------------------------------------------------

function showLogin(msg) {
  stopLive();
  st.user = null;
  show($('#dash'), false);
  show($('#logout'), false);
  $('#who').textContent = '';
  setConn('idle', '');
  show($('#login-view'), true);
  $('#login-error').textContent = msg || '';
  $('#login-user').focus();
}

function enter(session) {
  if (session.user.role !== 'admin') {
    showLogin('The dashboard needs the admin role; ' + session.user.name + ' is a user.');
    show($('#logout'), true);
    return;
  }
  st.user = session.user;
  show($('#login-view'), false);
  show($('#dash'), true);
  show($('#logout'), true);
  $('#who').textContent = session.user.name;
  makeCharts();
  connect();
}

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('#login-error').textContent = '';
  try {
    const s = await login($('#login-user').value, $('#login-pass').value);
    $('#login-pass').value = '';
    enter(s);
  } catch (e) {
    $('#login-error').textContent = e.code === 'invalid_credentials' ? 'Wrong user name or password.' : e.message;
  }
});

$('#logout').addEventListener('click', async () => {
  try {
    await logout();
  } catch (e) {
    // gone either way
  }
  showLogin('Logged out.');
});

// ---- the socket --------------------------------------------------------------------------------

function wsUrl() {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/admin';
}

function subscribeMsg() {
  return JSON.stringify({
    type: 'subscribe',
    topics: ['metrics', 'session_events', 'alerts', 'heartbeat'],
    interval_s: st.interval,
  });
}

function connect() {
  clearTimeout(st.retryTimer);
  if (!st.user) return;
  setConn('connecting', 'connecting…');
  let ws;
  try {
    ws = new WebSocket(wsUrl(), ['sluice.v1']);
  } catch (e) {
    socketDown();
    return;
  }
  st.ws = ws;
  ws.addEventListener('message', (ev) => {
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    armWatchdog();
    onMessage(m);
  });
  ws.addEventListener('close', (ev) => {
    if (st.ws !== ws) return;
    st.ws = null;
    if (ev.code === 1008) {
      // Policy: the login ended or the role went away.
      showLogin('The dashboard connection was closed: ' + (ev.reason || 'not allowed') + '.');
      return;
    }
    socketDown(ev.reason);
  });
}

// No heartbeat for 2.5 periods: the socket is dead even if TCP has not noticed.
function armWatchdog() {
  clearTimeout(st.watchdog);
  st.watchdog = setTimeout(() => {
    if (st.ws) st.ws.close();
  }, st.heartbeatMs * 2.5);
}

function socketDown(reason) {
  clearTimeout(st.watchdog);
  if (!st.user) return;
  const wait = st.backoff.next();
  setConn('polling', 'socket down' + (reason ? ' (' + reason + ')' : '') + ': polling HTTP, retry in ' + Math.round(wait / 1000) + ' s');
  startPolling();
  st.retryTimer = setTimeout(connect, wait);
}

function stopLive() {
  clearTimeout(st.retryTimer);
  clearTimeout(st.watchdog);
  stopPolling();
  if (st.ws) {
    const ws = st.ws;
    st.ws = null;
    ws.close();
  }
}

$('#interval').addEventListener('change', () => {
  st.interval = Number($('#interval').value);
  if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(subscribeMsg());
  if (st.pollTimer) startPolling();
});

function onMessage(m) {
  switch (m.type) {
    case 'hello':
      // Also after a control restart: the new control knows no topics yet.
      st.heartbeatMs = m.heartbeat_ms || st.heartbeatMs;
      if (st.ws) st.ws.send(subscribeMsg());
      break;
    case 'subscribed':
      st.backoff.reset();
      stopPolling();
      setConn('live', 'live');
      if (m.events_seq !== undefined) st.lastEventSeq = m.events_seq;
      break;
    case 'metrics':
      renderMetrics(m);
      break;
    case 'session_event':
      st.lastEventSeq = Math.max(st.lastEventSeq, m.seq || 0);
      toast(m);
      break;
    case 'alert':
      st.lastEventSeq = Math.max(st.lastEventSeq, m.seq || 0);
      alertChanged(m);
      break;
    case 'heartbeat':
      $('#heartbeat').textContent = new Date(m.ts * 1000).toLocaleTimeString();
      break;
    case 'response':
      if (m.request === 'kill') toast({ kind: 'kill_sent', session_id: m.session_id });
      break;
    case 'error':
      toast({ kind: 'error', detail: m.error ? m.error.message : 'error' });
      break;
    default:
      break;
  }
}

// ---- polling while the socket is down ----------------------------------------------------------

function startPolling() {
  stopPolling();
  const tick = async () => {
    try {
      const m = await api('GET', '/api/admin/metrics');
      renderMetrics(m);
      const ev = await api('GET', '/api/admin/events?after=' + st.lastEventSeq);
      for (const e of ev.events) {
        st.lastEventSeq = Math.max(st.lastEventSeq, e.seq);
        if (e.type === 'alert') alertChanged(e);
        else toast(e);
      }
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        showLogin('Your login ended; log in again.');
        return;
      }
    }
  };
  tick();
  st.pollTimer = setInterval(tick, Math.max(POLL_MS, st.interval * 1000));
}

function stopPolling() {
  clearInterval(st.pollTimer);
  st.pollTimer = 0;
}

// ---- metrics ---------------------------------------------------------------------------------------

function makeCharts() {
  if (st.charts.rate) return;
  const common = (id, labels, colors) => {
    const target = $(id);
    const opts = {
      width: Math.max(280, target.clientWidth || 480),
      height: 180,
      legend: { show: true },
      scales: { x: { time: true } },
      series: [{}, ...labels.map((label, i) => ({ label, stroke: colors[i], width: 2 }))],
      axes: [{}, { size: 50 }],
    };
    return new uPlot(opts, [[], ...labels.map(() => [])], target);
  };
  st.charts.rate = common('#chart-rate', ['tokens/s', 'frames/s'], ['#1f6feb', '#d29922']);
  st.charts.conns = common('#chart-conns', ['connections', 'streams'], ['#2da44e', '#8250df']);
  window.addEventListener('resize', () => {
    for (const [k, c] of Object.entries(st.charts)) {
      const w = $(k === 'rate' ? '#chart-rate' : '#chart-conns').clientWidth;
      if (w) c.setSize({ width: w, height: 180 });
    }
  });
}

function pushPoint(m) {
  const s = st.series;
  const t = m.totals;
  s.t.push(m.ts);
  s.tps.push(t.tokens_per_s);
  s.fps.push(t.frames_per_s);
  s.conns.push(t.connections);
  s.streams.push(t.streams);
  for (const k of Object.keys(s)) if (s[k].length > HISTORY) s[k].shift();
  st.charts.rate.setData([s.t, s.tps, s.fps]);
  st.charts.conns.setData([s.t, s.conns, s.streams]);
  // What tests and curious operators can read without parsing the canvas.
  const rate = $('#chart-rate');
  rate.dataset.points = String(s.t.length);
  rate.dataset.lastTokensPerS = String(t.tokens_per_s);
  rate.dataset.maxTokensPerS = String(Math.max(...s.tps));
}

function pct(v) {
  return v === undefined || v === null ? '–' : fmtNum(v * 100, 1) + ' %';
}

function us(v) {
  if (v === undefined || v === null) return '–';
  return v >= 1000 ? fmtNum(v / 1000, 1) + ' ms' : fmtNum(v, 0) + ' µs';
}

function renderMetrics(m) {
  if (!m || !m.totals) return;
  const t = m.totals;
  $('#m-connections').textContent = fmtNum(t.connections);
  $('#m-streams').textContent = fmtNum(t.streams);
  $('#m-running').textContent = fmtNum(t.answers_running);
  $('#m-tps').textContent = fmtNum(t.tokens_per_s, 1);
  $('#m-fps').textContent = fmtNum(t.frames_per_s, 1);
  $('#m-fpt').textContent = t.frames_per_token === null ? '–' : fmtNum(t.frames_per_token, 2);
  $('#m-delay').textContent = us(m.delay_us.p50) + ' / ' + us(m.delay_us.p99);
  $('#m-ring').textContent = pct(m.ring_fill_max);
  $('#m-store').textContent = pct(m.store.used_fraction);
  $('#m-conversations').textContent = fmtNum(m.store.conversations);
  if (st.charts.rate) pushPoint(m);

  const wb = $('#workers tbody');
  clear(wb);
  for (const w of m.workers) {
    wb.append(el('tr', {},
      el('td', { text: String(w.worker) }),
      el('td', { text: fmtNum(w.connections) }),
      el('td', { text: fmtNum(w.sse) }),
      el('td', { text: fmtNum(w.ws) }),
      el('td', { text: fmtNum(w.tokens_per_s, 1) }),
      el('td', { text: fmtNum(w.frames_per_s, 1) }),
      el('td', { text: fmtNum(w.pending_bytes) + ' B' }),
      el('td', { text: pct(w.ring_fill) })));
  }

  const sb = $('#streams tbody');
  clear(sb);
  for (const s of m.streams) {
    const kill = el('button', { type: 'button', class: 'small danger', text: 'Kill', 'aria-label': 'Kill the stream of ' + s.session_id });
    kill.addEventListener('click', () => killStream(s.session_id, kill));
    sb.append(el('tr', { dataset: { session: s.session_id } },
      el('td', { text: s.user }),
      el('td', { class: 'mono', text: s.session_id }),
      el('td', { text: fmtNum(s.tokens) }),
      el('td', { text: fmtNum(s.tokens_per_s, 1) + '/s' }),
      el('td', { text: fmtAge(s.age_ms) }),
      el('td', {}, kill)));
  }
  show($('#streams-empty'), m.streams.length === 0);

  const backends = m.backends || [];
  show($('#backends-sec'), backends.length > 0);
  const bb = $('#backends tbody');
  clear(bb);
  for (const b of backends) {
    bb.append(el('tr', { class: b.up === false ? 'bad' : '' },
      el('td', { text: b.name }),
      el('td', { text: b.up === false ? 'down' : 'up' }),
      el('td', { text: fmtNum(b.running) }),
      el('td', { text: b.detail || '' })));
  }
  if (m.alerts) setAlerts(m.alerts);
}

async function killStream(sid, button) {
  button.disabled = true;
  if (st.ws && st.ws.readyState === WebSocket.OPEN) {
    st.ws.send(JSON.stringify({ type: 'kill', session_id: sid }));
    return;
  }
  try {
    await api('POST', '/api/admin/sessions/' + sid + '/kill', {});
    toast({ kind: 'kill_sent', session_id: sid });
  } catch (e) {
    button.disabled = false;
    toast({ kind: 'error', detail: e.message });
  }
}

// ---- alerts ---------------------------------------------------------------------------------------------

const active = new Map();

function alertChanged(a) {
  if (a.state === 'raised') active.set(a.alert + ':' + (a.subject || ''), a);
  else active.delete(a.alert + ':' + (a.subject || ''));
  renderAlerts();
}

function setAlerts(list) {
  active.clear();
  for (const a of list) active.set(a.alert + ':' + (a.subject || ''), a);
  renderAlerts();
}

function renderAlerts() {
  const box = $('#alerts');
  clear(box);
  for (const a of active.values()) {
    box.append(el('div', { class: 'alert ' + (a.level || 'warning'), dataset: { alert: a.alert } },
      el('strong', { text: a.alert.replace(/_/g, ' ') }), ' ', a.message || ''));
  }
  show(box, active.size > 0);
}

// ---- toasts -------------------------------------------------------------------------------------------------

const GOOD = new Set(['created', 'answer_started', 'login']);

function toastText(e) {
  const who = e.user ? ' (' + e.user + ')' : '';
  const sid = e.session_id ? ' ' + e.session_id : '';
  let t;
  switch (e.kind) {
    case 'created': t = 'Conversation created' + sid + who; break;
    case 'deleted': t = 'Conversation deleted' + sid + who; break;
    case 'answer_started': t = 'Answer started' + sid + who; break;
    case 'answer_ended': t = 'Answer ended: ' + e.status + sid + who; break;
    case 'login': t = 'Login' + who; break;
    case 'logout': t = 'Logout' + who; break;
    case 'kicked': t = 'Stream kicked' + sid + (e.reason ? ': ' + e.reason : ''); break;
    case 'kill_sent': t = 'Kill sent for' + sid; break;
    default: t = e.detail || e.kind;
  }
  if (e.change) t += ' · ' + e.change.what.replace(/_/g, ' ') + ' ' + e.change.from + ' → ' + e.change.to;
  return t;
}

function toast(e) {
  const good = GOOD.has(e.kind);
  const t = el('div', {
    class: 'toast ' + (good ? 'good' : 'bad'),
    role: 'status',
    dataset: { kind: e.kind || '', session: e.session_id || '' },
    text: toastText(e),
  });
  $('#toasts').append(t);
  setTimeout(() => t.remove(), TOAST_MS);
}

// ---- start --------------------------------------------------------------------------------------------------

(async () => {
  try {
    const s = await currentSession();
    if (s) enter(s);
    else showLogin();
  } catch (e) {
    showLogin(e.message);
  }
})();

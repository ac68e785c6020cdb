// Server-Sent Events over fetch, so the page chooses Last-Event-ID and the
// reconnect policy itself (EventSource retries on its own schedule).

import { ApiError } from './api.js';

// Reads one stream until it ends. onEvent(name, data, id) gets every event
// with its parsed JSON data. Resolves when the server closes the stream;
// rejects with ApiError for a refused request or a network failure, or
// with an AbortError when signal fires.
export async function readSse(url, { lastEventId, onOpen, onEvent, signal }) {
  const headers = { Accept: 'text/event-stream' };
  if (lastEventId) headers['Last-Event-ID'] = lastEventId;
  let res;
  try {
    res = await fetch(url, { headers, credentials: 'same-origin', cache: 'no-store', signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'the appliance cannot be reached');
  }
  if (!res.ok) {
    let code = 'http_' + res.status;
    let msg = res.statusText;
    try {
      const j = await res.json();
      code = j.error.code;
      msg = j.error.message;
    } catch (e) {
      // not JSON: keep the status
    }
    throw new ApiError(res.status, code, msg);
  }
  if (onOpen) onOpen();
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let ev = { name: 'message', data: [], id: null };
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', 'the stream was cut');
    }
    if (chunk.done) return;
    buf += dec.decode(chunk.value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (ev.data.length) {
          let data;
          try {
            data = JSON.parse(ev.data.join('\n'));
          } catch (e) {
            data = null;
          }
          onEvent(ev.name, data, ev.id);
        }
        ev = { name: 'message', data: [], id: null };
        continue;
      }
      if (line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') ev.name = value;
      else if (field === 'data') ev.data.push(value);
      else if (field === 'id') ev.id = value;
    }
  }
}

'use strict';
// uWebSockets.js: WebSocket fan-out through its native pub/sub (one publish
// per token reaches every subscriber of the topic in C++), SSE through corked
// res.write per subscriber. GET /sub/ID, POST /prompt/ID as node_ws.js.
const uWS = require('@trufflesuite/uws-js-unofficial');
const { runAnswer, sidOf } = require('./peer_common');

const port = parseInt(process.argv[2] || '8091', 10);
const sse = new Map(); // sid -> Set<res>

const app = uWS.App();
app.ws('/sub/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  idleTimeout: 0,
  upgrade: (res, req, ctx) => {
    res.upgrade({ sid: sidOf(req.getUrl()) }, req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), ctx);
  },
  open: (ws) => { ws.subscribe(ws.getUserData().sid); },
});
app.get('/sub/*', (res, req) => {
  const sid = sidOf(req.getUrl());
  let set = sse.get(sid);
  if (!set) {
    set = new Set();
    sse.set(sid, set);
  }
  set.add(res);
  res.onAborted(() => set.delete(res));
  res.writeStatus('200 OK').writeHeader('Content-Type', 'text/event-stream')
    .writeHeader('Cache-Control', 'no-cache').write(':ok\n\n');
});
app.post('/prompt/*', (res, req) => {
  const sid = sidOf(req.getUrl());
  let body = Buffer.alloc(0);
  let aborted = false;
  res.onAborted(() => { aborted = true; });
  res.onData((chunk, last) => {
    body = Buffer.concat([body, Buffer.from(chunk)]);
    if (!last || aborted) return;
    let opts;
    try {
      opts = JSON.parse(body.toString());
    } catch (e) {
      res.writeStatus('400 Bad Request').end();
      return;
    }
    runAnswer(sid, opts, (sseBytes, wsText) => {
      app.publish(sid, wsText, false);
      const set = sse.get(sid);
      if (set) for (const r of set) r.cork(() => r.write(sseBytes));
    });
    res.writeStatus('202 Accepted').writeHeader('Content-Type', 'application/json').end('{"started":true}');
  });
});
app.listen('127.0.0.1', port, (tok) => {
  if (!tok) {
    console.error('uws: cannot listen on ' + port);
    process.exit(1);
  }
});

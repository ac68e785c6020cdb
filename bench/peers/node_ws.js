'use strict';
// Node's own http server for SSE and the `ws` package for WebSocket, one
// process (bench/compare pins it to one core). GET /sub/ID streams session
// ID (SSE, or a WebSocket upgrade), POST /prompt/ID {tokens,rate,ttft_ms}
// starts an answer in it.
const http = require('http');
const { WebSocketServer } = require('ws');
const { runAnswer, sidOf } = require('./peer_common');

const port = parseInt(process.argv[2] || '8090', 10);
const sessions = new Map(); // sid -> { sse: Set<res>, ws: Set<WebSocket> }

function session(sid) {
  let s = sessions.get(sid);
  if (!s) {
    s = { sse: new Set(), ws: new Set() };
    sessions.set(sid, s);
  }
  return s;
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const server = http.createServer((req, res) => {
  const sid = sidOf(req.url);
  if (!sid) {
    res.writeHead(404).end();
    return;
  }
  if (req.method === 'GET') {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    res.write(':ok\n\n');
    res.socket.setNoDelay(true);
    const s = session(sid);
    s.sse.add(res);
    req.on('close', () => s.sse.delete(res));
    return;
  }
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    let opts;
    try {
      opts = JSON.parse(body);
    } catch (e) {
      res.writeHead(400).end();
      return;
    }
    const s = session(sid);
    runAnswer(sid, opts, (sse, ws) => {
      for (const r of s.sse) r.write(sse);
      for (const c of s.ws) c.send(ws);
    });
    res.writeHead(202, { 'Content-Type': 'application/json' }).end('{"started":true}');
  });
});
server.on('upgrade', (req, sock, head) => {
  const sid = sidOf(req.url);
  if (!sid) {
    sock.destroy();
    return;
  }
  wss.handleUpgrade(req, sock, head, (ws) => {
    const s = session(sid);
    s.ws.add(ws);
    ws.on('close', () => s.ws.delete(ws));
  });
});
server.keepAliveTimeout = 3600 * 1000;
server.listen(port, '127.0.0.1');

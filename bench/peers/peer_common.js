'use strict';
// What every Node peer shares: the token stream's shape, byte for byte the
// events sluice sends (docs/api.md "Stream events"), with creation stamps
// ("created_ns", the monotonic clock, as X-Sluice-Timing gives them), and the
// answer generator POST /prompt/ID starts: answer_tokens tokens at `rate`
// tokens/s after ttft_ms. Each event is built once per token and handed to
// every subscriber, as fast as the stack allows.
const WORDS = [' the', ' quick', ' brown', ' fox', ' jumps', ' over', ' lazy', ' dog',
  ' stream', ' token', ' fast', ' bench', ' \u00e9t\u00e9', ' "q"', ' line', ' end'];
let msgCounter = 0;

function mid() {
  msgCounter++;
  return 'm_' + msgCounter.toString(16).padStart(16, '0');
}

function tokenJson(sid, m, seq, type) {
  const text = JSON.stringify(seq === 1 ? WORDS[seq % WORDS.length].slice(1) : WORDS[seq % WORDS.length]);
  return '{' + (type ? '"type":"token",' : '') + '"session_id":"' + sid + '","message_id":"' + m +
    '","seq":' + seq + ',"n":1,"text":' + text + ',"created_ns":[' + process.hrtime.bigint() + ']}';
}

function doneJson(sid, m, type) {
  return '{' + (type ? '"type":"done",' : '') + '"session_id":"' + sid + '","message_id":"' + m +
    '","status":"complete"}';
}

// Runs one answer; emit(sseBytes, wsText) is called once per event.
function runAnswer(sid, opts, emit) {
  const m = mid();
  const n = opts.tokens | 0;
  const period = 1000 / (opts.rate || 20);
  let seq = 0;
  const t0 = Date.now() + (opts.ttft_ms | 0);
  function tick() {
    const now = Date.now();
    while (seq < n && t0 + seq * period <= now) {
      seq++;
      const ws = tokenJson(sid, m, seq, true);
      const sse = 'id: ' + m + ':' + seq + '\nevent: token\ndata: ' + tokenJson(sid, m, seq, false) + '\n\n';
      emit(sse, ws);
    }
    if (seq >= n) {
      emit('id: ' + m + ':d\nevent: done\ndata: ' + doneJson(sid, m, false) + '\n\n', doneJson(sid, m, true));
      return;
    }
    setTimeout(tick, Math.max(0, t0 + seq * period - Date.now()));
  }
  setTimeout(tick, Math.max(0, t0 - Date.now()));
}

function sidOf(url) {
  const m = /^\/(?:sub|prompt)\/([A-Za-z0-9_]+)/.exec(url);
  return m ? m[1] : null;
}

module.exports = { runAnswer, sidOf };

// The official OpenAI SDK against sluice's /v1, used as its users use it.
// Run by tests/integration/test_openai_api.py with:
//   SLUICE_BASE   http://127.0.0.1:PORT/v1
//   SLUICE_KEY    an API key (sk_...)
//   MODEL         a model answering "t1 t2 t3 t4 t5" with usage 7 + 5
//   TOOLS_MODEL   a model answering with a get_weather tool call
//   BUSY_MODEL    a model whose one slot is taken and whose queue is empty
//   LIMITED_KEY   an API key limited to 1 answer token a day (one answer, then 429)
// Prints one JSON line per check and exits 1 when one failed.
import OpenAI, { AuthenticationError, NotFoundError, RateLimitError } from "openai";

const base = process.env.SLUICE_BASE;
const client = new OpenAI({ baseURL: base, apiKey: process.env.SLUICE_KEY, maxRetries: 0, timeout: 20000 });
let failed = 0;

function report(name, ok, detail) {
  console.log(JSON.stringify({ check: name, ok, detail }));
  if (!ok) failed++;
}

async function check(name, fn) {
  try {
    const detail = await fn();
    report(name, true, detail);
  } catch (e) {
    report(name, false, String(e && e.stack ? e.stack : e));
  }
}

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Say five tokens." }];

await check("non_stream_with_usage", async () => {
  const r = await client.chat.completions.create({ model: process.env.MODEL, messages, temperature: 0.2 });
  expect(r.object === "chat.completion", "object " + r.object);
  expect(r.choices[0].message.content === "t1 t2 t3 t4 t5", "content " + JSON.stringify(r.choices[0].message));
  expect(r.choices[0].finish_reason === "stop", "finish_reason " + r.choices[0].finish_reason);
  expect(r.usage && r.usage.prompt_tokens === 7 && r.usage.completion_tokens === 5 && r.usage.total_tokens === 12,
         "usage " + JSON.stringify(r.usage));
  return { id: r.id, usage: r.usage };
});

await check("stream_with_usage", async () => {
  const stream = await client.chat.completions.create({
    model: process.env.MODEL, messages, stream: true, stream_options: { include_usage: true },
  });
  let text = "", finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    expect(chunk.object === "chat.completion.chunk", "object " + chunk.object);
    if (chunk.choices.length) {
      text += chunk.choices[0].delta.content || "";
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  expect(text === "t1 t2 t3 t4 t5", "text " + JSON.stringify(text));
  expect(finish === "stop", "finish_reason " + finish);
  expect(usage && usage.prompt_tokens === 7 && usage.completion_tokens === 5, "usage " + JSON.stringify(usage));
  return { chunks, usage };
});

await check("stream_tool_call", async () => {
  const tools = [{ type: "function", function: { name: "get_weather", description: "Weather of a city",
                   parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
  const stream = await client.chat.completions.create({
    model: process.env.TOOLS_MODEL, messages: [{ role: "user", content: "Weather in Paris?" }], tools,
    tool_choice: "auto", stream: true,
  });
  const calls = [];
  let finish = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    for (const tc of c.delta.tool_calls || []) {
      const t = calls[tc.index] || (calls[tc.index] = { id: "", name: "", arguments: "" });
      if (tc.id) t.id = tc.id;
      if (tc.function && tc.function.name) t.name += tc.function.name;
      if (tc.function && tc.function.arguments) t.arguments += tc.function.arguments;
    }
    if (c.finish_reason) finish = c.finish_reason;
  }
  expect(calls.length === 1 && calls[0].name === "get_weather", "calls " + JSON.stringify(calls));
  expect(JSON.parse(calls[0].arguments).city === "Paris", "arguments " + calls[0].arguments);
  expect(finish === "tool_calls", "finish_reason " + finish);
  return calls[0];
});

await check("bad_key_is_authentication_error", async () => {
  const bad = new OpenAI({ baseURL: base, apiKey: "sk_" + "A".repeat(43), maxRetries: 0 });
  try {
    await bad.chat.completions.create({ model: process.env.MODEL, messages });
  } catch (e) {
    expect(e instanceof AuthenticationError, "raised " + e.constructor.name + ": " + e.message);
    return { status: e.status, message: e.message };
  }
  throw new Error("no error raised");
});

await check("unknown_model_is_not_found", async () => {
  try {
    await client.chat.completions.create({ model: "no-such-model", messages });
  } catch (e) {
    expect(e instanceof NotFoundError, "raised " + e.constructor.name + ": " + e.message);
    return { status: e.status, code: e.code };
  }
  throw new Error("no error raised");
});

await check("full_queue_is_rate_limit", async () => {
  // The one slot of BUSY_MODEL is held by this stream until it is aborted.
  const ctl = new AbortController();
  const first = await client.chat.completions.create(
    { model: process.env.BUSY_MODEL, messages, stream: true }, { signal: ctl.signal });
  try {
    await client.chat.completions.create({ model: process.env.BUSY_MODEL, messages });
  } catch (e) {
    expect(e instanceof RateLimitError, "raised " + e.constructor.name + ": " + e.message);
    const retry = e.headers && (e.headers.get ? e.headers.get("retry-after") : e.headers["retry-after"]);
    expect(retry === "1", "retry-after " + retry);
    return { status: e.status, retry_after: retry };
  } finally {
    ctl.abort();
    try { for await (const _ of first) { /* aborted */ } } catch (_) { /* the abort */ }
  }
  throw new Error("no error raised");
});

await check("over_limit_is_rate_limit", async () => {
  const limited = new OpenAI({ baseURL: base, apiKey: process.env.LIMITED_KEY, maxRetries: 0, timeout: 20000 });
  await limited.chat.completions.create({ model: process.env.MODEL, messages });
  try {
    await limited.chat.completions.create({ model: process.env.MODEL, messages });
  } catch (e) {
    expect(e instanceof RateLimitError, "raised " + e.constructor.name + ": " + e.message);
    expect(e.code === "limit_tokens_per_day" && e.type === "rate_limit_exceeded",
           "code " + e.code + " type " + e.type);
    const retry = e.headers && (e.headers.get ? e.headers.get("retry-after") : e.headers["retry-after"]);
    expect(Number(retry) >= 1 && Number(retry) <= 86400, "retry-after " + retry);
    return { status: e.status, code: e.code, type: e.type, retry_after: retry };
  }
  throw new Error("no error raised");
});

await check("models_list", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  expect(ids.includes(process.env.MODEL), "models " + JSON.stringify(ids));
  return ids;
});

process.exit(failed ? 1 : 0);

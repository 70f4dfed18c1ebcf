// A Sluice tool-runner in JavaScript, written from the tool protocol in Sluice's AsyncAPI document
// (GET /asyncapi.json, operation `serveToolCall`), with the official @nats-io packages. It serves one tool,
// `js_reverse`, side by side with Sluice's Python tool-runner.
//
//   SLUICE_NATS_URL            the NATS server
//   SLUICE_TOOL_RUNNER_ID      this runner's id in the catalog (default js-<pid>)
//   SLUICE_CATALOG_TTL_S       the advertisement's TTL in seconds (default 15)
//   SLUICE_JS_EXIT_BEFORE_ACK  a call id: after its tool.completed is stored, exit without acking (a crash the
//                              tests use to prove the redelivery check)
//
// Logs one JSON object per line: {"msg":"ready"}, {"msg":"ran","call_id"}, {"msg":"skipped","call_id","why"}.
import { connect, headers } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";

const TOOLS_STREAM = "SLUICE_TOOLS";
const TOOL_CONSUMER = "tool-runners";
const EVENTS_STREAM = "SLUICE_EVENTS";
const TASK_ID = /^[A-Za-z0-9_-]{8,64}$/;
const TERMINAL = new Set(["completed", "failed", "canceled"]);
const MAX_DELIVER = 5;
const MAX_OUTPUT_BYTES = 16 * 1024;

const runnerId = process.env.SLUICE_TOOL_RUNNER_ID || `js-${process.pid}`;
const ttlS = Number(process.env.SLUICE_CATALOG_TTL_S || "15");
const exitBeforeAck = process.env.SLUICE_JS_EXIT_BEFORE_ACK || "";

const TOOLS = {
  js_reverse: {
    advert: {
      name: "js_reverse",
      description: "Reverse a piece of text (served by the JavaScript tool-runner).",
      input_schema: {
        type: "object",
        properties: { text: { type: "string", description: "the text to reverse" } },
        required: ["text"],
        additionalProperties: false,
      },
      timeout_s: 5,
    },
    run: (args) => {
      if (typeof args.text !== "string") throw new Error("invalid arguments for js_reverse: text must be a string");
      return [...args.text].reverse().join("");
    },
  },
};

const log = (fields) => console.log(JSON.stringify(fields));
const nc = await connect({ servers: process.env.SLUICE_NATS_URL, name: `sluice-js-tool-runner-${runnerId}` });
const js = jetstream(nc);
const kvm = new Kvm(nc);
const records = await kvm.open("sluice-tasks");
const catalog = await kvm.open("sluice-catalog");
const handbacks = await kvm.open("sluice-handbacks");
const catalogKey = `$KV.sluice-catalog.runners.tool-runner.${runnerId}`;
const startedAt = new Date().toISOString();

async function advertise() {
  const advert = {
    runner: runnerId, kind: "tool-runner", version: "js-0.1", started_at: startedAt, ttl_s: ttlS,
    tools: Object.values(TOOLS).map((t) => t.advert),
  };
  const h = headers();
  h.set("Nats-TTL", `${Math.max(1, Math.round(ttlS))}s`);
  await js.publish(catalogKey, JSON.stringify(advert), { headers: h });
}

async function withdraw() {
  const h = headers();
  h.set("KV-Operation", "DEL");
  await js.publish(catalogKey, "", { headers: h });
}

function envelope(taskId, type, data) {
  return JSON.stringify({ task_id: taskId, type, ts: new Date().toISOString(), source: "tool-runner", trace_id: "", data });
}

async function publishEvent(call, type, data, suffix, traceparent) {
  const h = headers();
  if (traceparent) h.set("traceparent", traceparent);
  await js.publish(`sluice.evt.${call.task_id}.${type}`, envelope(call.task_id, type, data), {
    msgID: `${call.task_id}:tool:${call.call_id}:${suffix}`,
    headers: h,
  });
}

// The task's events of one type for this call id: read with an ordered consumer filtered on that subject.
async function inLog(call, type) {
  const consumer = await js.consumers.get(EVENTS_STREAM, { filter_subjects: [`sluice.evt.${call.task_id}.${type}`] });
  const info = await consumer.info(true);
  if (info.num_pending === 0) return false;
  const batch = await consumer.fetch({ max_messages: info.num_pending, expires: 2000 });
  for await (const m of batch) {
    if (m.json().data?.call_id === call.call_id) return true;
    if (m.info.pending === 0) break;
  }
  return false;
}

async function taskState(taskId) {
  const entry = await records.get(taskId);
  if (!entry || entry.operation !== "PUT") return null;
  return entry.json().state;
}

// Does a live runner other than this one advertise `name`? (Read from the catalog when needed.)
async function servedElsewhere(name) {
  const own = `runners.tool-runner.${runnerId}`;
  for await (const key of await catalog.keys("runners.tool-runner.*")) {
    if (key === own) continue;
    const entry = await catalog.get(key);
    if (entry?.operation === "PUT" && (entry.json().tools || []).some((t) => t.name === name)) return true;
  }
  return false;
}

// A clean hand-back, noted so that the next delivery does not count it as a crash.
async function noteHandBack(m) {
  const key = `${TOOLS_STREAM}.${m.info.streamSequence}`;
  for (let attempt = 0; attempt < 10; attempt++) {
    const entry = await handbacks.get(key);
    const count = entry?.operation === "PUT" ? Number(entry.string() || "0") : 0;
    try {
      if (entry?.operation === "PUT") await handbacks.update(key, String(count + 1), entry.revision);
      else await handbacks.create(key, String(count + 1));
      return;
    } catch {
      /* another writer was first: read again */
    }
  }
}

function cut(text) {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= MAX_OUTPUT_BYTES) return text;
  const marker = `\n…[output truncated by the tool-runner: ${bytes.length} bytes, limit ${MAX_OUTPUT_BYTES}]`;
  return bytes.subarray(0, MAX_OUTPUT_BYTES - Buffer.byteLength(marker)).toString("utf8") + marker;
}

async function handle(m, ackWaitMs) {
  let call;
  try {
    call = m.json();
  } catch {
    m.term();
    return;
  }
  if (!call || !TASK_ID.test(call.task_id || "") || typeof call.call_id !== "string") {
    m.term();
    return;
  }
  const state = await taskState(call.task_id);
  if (state === null || TERMINAL.has(state)) {
    log({ msg: "skipped", call_id: call.call_id, why: state === null ? "no record" : state });
    m.ack();
    return;
  }
  const tool = TOOLS[call.name];
  if (!tool && (await servedElsewhere(call.name))) {
    log({ msg: "passed on", call_id: call.call_id, name: call.name });
    await noteHandBack(m);
    m.nak(200);
    return "passed on";
  }
  const delivered = m.info.deliveryCount;
  let started = false;
  if (delivered > 1) {
    if (await inLog(call, "tool.completed")) {
      log({ msg: "skipped", call_id: call.call_id, why: "completed" });
      m.ack();
      return;
    }
    started = await inLog(call, "tool.started");
  }
  const traceparent = m.headers?.get("traceparent") || "";
  // Crashes behind this delivery: its earlier deliveries less the clean hand-backs noted for it.
  const noted = delivered > 1 ? await handbacks.get(`${TOOLS_STREAM}.${m.info.streamSequence}`) : null;
  const crashes = delivered - 1 - (noted?.operation === "PUT" ? Number(noted.string() || "0") : 0);
  if (crashes >= MAX_DELIVER) {
    const error = `${call.name} was abandoned after ${delivered} attempts that did not finish`;
    await publishEvent(call, "tool.completed", { call_id: call.call_id, name: call.name, ok: false, error, duration_ms: 0 }, "done", traceparent);
    m.term();
    return;
  }
  if (!started) {
    await publishEvent(call, "tool.started", { call_id: call.call_id, name: call.name, arguments: call.arguments }, "start", traceparent);
  }
  const begun = performance.now();
  const beat = setInterval(() => m.working(), Math.max(200, ackWaitMs / 3));
  let data;
  try {
    if (!tool) throw new Error(`unknown tool '${call.name}'`);
    const deadlineS = call.deadline_s > 0 ? Math.min(call.deadline_s, tool.advert.timeout_s) : tool.advert.timeout_s;
    const args = JSON.parse(call.arguments.trim() || "{}");
    const result = await Promise.race([
      Promise.resolve().then(() => tool.run(args)),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`${call.name} timed out after ${deadlineS}s`)), deadlineS * 1000)),
    ]);
    data = { call_id: call.call_id, name: call.name, ok: true, result: cut(String(result)) };
  } catch (err) {
    data = { call_id: call.call_id, name: call.name, ok: false, error: cut(String(err.message || err)) };
  } finally {
    clearInterval(beat);
  }
  data.duration_ms = Math.round((performance.now() - begun) * 1000) / 1000;
  log({ msg: "ran", call_id: call.call_id, delivered });
  await publishEvent(call, "tool.completed", data, "done", traceparent);
  if (exitBeforeAck && exitBeforeAck === call.call_id && delivered === 1) {
    log({ msg: "exiting before the ack", call_id: call.call_id });
    process.exit(7);
  }
  m.ack();
}

await advertise();
const refresh = setInterval(() => advertise().catch((err) => log({ msg: "advertise failed", error: String(err) })), (ttlS * 1000) / 3);
const consumer = await js.consumers.get(TOOLS_STREAM, TOOL_CONSUMER);
const ackWaitMs = (await consumer.info()).config.ack_wait / 1e6;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let stopping = false;
async function stop() {
  stopping = true;
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

log({ msg: "ready", runner: runnerId });
// One message per fetch, fetched only when free (as the protocol asks): a buffered consumer would hold calls that
// another runner could serve. After passing a call on, wait a moment so the runner that serves it asks first.
while (!stopping) {
  const batch = await consumer.fetch({ max_messages: 1, expires: 1000 });
  for await (const m of batch) {
    let outcome;
    try {
      outcome = await handle(m, ackWaitMs);
    } catch (err) {
      log({ msg: "a call failed on the way; it comes back", error: String(err) });
      await noteHandBack(m).catch(() => {});
      m.nak(2000);
    }
    if (outcome === "passed on") await sleep(300);
  }
}
clearInterval(refresh);
await withdraw().catch(() => {});
await nc.drain();

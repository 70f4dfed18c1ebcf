// Sluice's /v1/ag-ui driven by AG-UI's own client: HttpAgent (which verifies every event it applies), and the
// client's SSE parser + verifyEvents on the resume route.
//
// Run by tests/e2e/test_node_clients.py with two edges of one Sluice (EDGE_A, EDGE_B). Asserts with node:assert
// (a failure exits non-zero) and prints one JSON line of figures.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { from, lastValueFrom, toArray } from "rxjs";
import { HttpAgent, runHttpRequest, transformHttpEventStream, verifyEvents } from "@ag-ui/client";

const A = process.env.EDGE_A;
const B = process.env.EDGE_B;
const events = {};
const threadId = randomUUID();

function count(type) {
  events[type] = (events[type] ?? 0) + 1;
}

async function run(url, agentName, text, history = []) {
  const agent = new HttpAgent({ url: `${url}/v1/ag-ui`, threadId, initialMessages: history });
  agent.addMessage({ id: randomUUID(), role: "user", content: text });
  const runId = randomUUID();
  const seen = [];
  const result = await agent.runAgent(
    { runId, forwardedProps: { agent: agentName } },
    { onEvent: ({ event }) => { count(event.type); seen.push(event); } },
  );
  return { agent, result, runId, seen };
}

// 1. A tool call: the assistant asks the calculator; the messages the client assembles show it.
const calc = await run(A, "assistant", "What is 17*23?");
const types = calc.seen.map((e) => e.type);
assert.equal(types[0], "RUN_STARTED");
assert.equal(types.at(-1), "RUN_FINISHED");
assert.equal(calc.seen[0].threadId, threadId);
assert.equal(calc.seen[0].runId, calc.runId);
const withCall = calc.agent.messages.find((m) => m.role === "assistant" && m.toolCalls?.length);
assert.ok(withCall, "an assistant message carries the tool call");
assert.equal(withCall.toolCalls[0].function.name, "calculator");
assert.deepEqual(Object.keys(JSON.parse(withCall.toolCalls[0].function.arguments)).length > 0, true);
const toolMessage = calc.agent.messages.find((m) => m.role === "tool");
assert.match(toolMessage.content, /391/);
assert.match(calc.seen.at(-1).result, /391/);

// 2. A crew: its four stages as steps, each finished by name; the run finishes.
const crew = await run(A, "dev-team", "a function that reverses a string", calc.agent.messages);
const steps = crew.seen.filter((e) => e.type === "STEP_STARTED").map((e) => e.stepName);
assert.deepEqual(steps, ["1/4 architect", "2/4 coder", "3/4 reviewer", "4/4 documenter"]);
assert.equal(crew.seen.at(-1).type, "RUN_FINISHED");

// 3. The resume route on the other edge, through the client's own parser and verifier: from the start, and from
// after an event id in the middle — exactly the events that came after it.
async function resumed(runId, lastEventId) {
  const headers = lastEventId ? { "Last-Event-ID": lastEventId } : {};
  const request = () => fetch(`${B}/v1/ag-ui/runs/${runId}/events`, { headers });
  const stream = transformHttpEventStream(runHttpRequest(request));
  return lastValueFrom(stream.pipe(verifyEvents(false), toArray()));
}
const replay = await resumed(crew.runId);
assert.deepEqual(replay, crew.seen);
let resumedVerified = 1;
// Event ids are the `id:` lines; fetch the raw stream once to pick one in the middle.
const raw = await (await fetch(`${B}/v1/ag-ui/runs/${calc.runId}/events`)).text();
const ids = [...raw.matchAll(/^id: (\d+)$/gm)].map((m) => m[1]);
const middle = ids[Math.floor(ids.length / 2)];
const blocks = raw.split("\n\n").filter((b) => b.includes("data: "));
const cut = blocks.findIndex((b) => b.startsWith(`id: ${middle}\n`));
const tail = blocks.slice(cut + 1).map((b) => JSON.parse(b.slice(b.indexOf("data: ") + 6)));
const rest = await lastValueFrom(
  transformHttpEventStream(
    runHttpRequest(() => fetch(`${B}/v1/ag-ui/runs/${calc.runId}/events`, { headers: { "Last-Event-ID": middle } })),
  ).pipe(toArray()),
);
assert.deepEqual(rest, tail);
// What a client holds after resuming — the events up to its last id, then the rest — is one run the verifier accepts.
const head = blocks.slice(0, cut + 1).map((b) => JSON.parse(b.slice(b.indexOf("data: ") + 6)));
await lastValueFrom(from([...head, ...rest]).pipe(verifyEvents(false), toArray()));
assert.equal(rest.at(-1).type, "RUN_FINISHED");
resumedVerified += 1;

console.log(JSON.stringify({ events, resumedVerified, crewSteps: steps }));

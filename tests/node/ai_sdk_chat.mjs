// Sluice's /v1/chat driven by the AI SDK's own client code: DefaultChatTransport + readUIMessageStream.
//
// Run by tests/integration/test_node_clients.py with two edges of one Sluice: EDGE_A (its pid in EDGE_A_PID, to
// kill -9) and EDGE_B. Asserts with node:assert (a failure exits non-zero) and prints one JSON line of figures.
import assert from "node:assert/strict";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const A = process.env.EDGE_A;
const B = process.env.EDGE_B;
const A_PID = Number(process.env.EDGE_A_PID);
const chatId = `chat${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
const counts = {};

function user(text) {
  return { id: `u-${Math.random().toString(36).slice(2)}`, role: "user", parts: [{ type: "text", text }] };
}

function countChunks(stream, onChunk) {
  return stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        counts[chunk.type] = (counts[chunk.type] ?? 0) + 1;
        onChunk?.(chunk);
        controller.enqueue(chunk);
      },
    }),
  );
}

// The assembled message once the stream ends; `onMessage` sees each snapshot. `cut`: the connection is expected
// to break (the edge is killed), and the message so far is the result.
async function assemble(stream, { onMessage, onChunk, cut = false } = {}) {
  let last;
  try {
    for await (const message of readUIMessageStream({ stream: countChunks(stream, onChunk) })) {
      last = message;
      onMessage?.(message);
    }
  } catch (error) {
    if (!cut) throw error;
  }
  return last;
}

// The text parts, without those a retried step superseded (docs/ai-sdk.md).
function texts(message) {
  return message.parts.filter((p) => p.type === "text" && !p.providerMetadata?.sluice?.superseded).map((p) => p.text);
}
const answerText = (message) => texts(message).join("");
// The answer is the last step's text (a step that calls a tool says something first).
const finalText = (message) => texts(message).filter(Boolean).at(-1) ?? "";

async function send(transport, messages) {
  return transport.sendMessages({ chatId, messages, trigger: "submit-message", messageId: undefined });
}

async function submittedHistory(taskId) {
  const response = await fetch(`${A}/v1/tasks/${taskId}/events?format=ndjson&follow=false`);
  const first = JSON.parse((await response.text()).split("\n")[0]);
  assert.equal(first.type, "task.submitted");
  return first.data.history;
}

async function record(base, taskId) {
  return (await fetch(`${base}/v1/tasks/${taskId}`)).json();
}

const onA = new DefaultChatTransport({ api: `${A}/v1/chat` });
const onB = new DefaultChatTransport({ api: `${B}/v1/chat` });

// 1. A question that needs the calculator: a tool part with its input and output.
const q1 = user("What is 17*23?");
const a1 = await assemble(await send(onA, [q1]));
assert.equal(a1.role, "assistant");
const tool = a1.parts.find((p) => p.type === "tool-calculator");
assert.ok(tool, `no tool part in ${JSON.stringify(a1.parts.map((p) => p.type))}`);
assert.equal(tool.state, "output-available");
assert.ok(tool.input && typeof tool.input === "object", "the tool part has its input");
assert.match(JSON.stringify(tool.output), /391/);
assert.match(finalText(a1), /391/);
const r1 = await record(A, a1.id);
assert.equal(finalText(a1), r1.output);

// 2. A second message in the same chat: the first turn is its history.
const q2 = user("And what is 2 + 2?");
const a2 = await assemble(await send(onA, [q1, a1, q2]));
assert.notEqual(a2.id, a1.id);
assert.equal(finalText(a2), (await record(A, a2.id)).output);
const history = await submittedHistory(a2.id);
assert.deepEqual(
  history.map((m) => [m.role, m.content]),
  [["user", "What is 17*23?"], ["assistant", r1.output]],
);
const context = await (await fetch(`${A}/v1/contexts/${chatId}`)).json();
assert.deepEqual(context.tasks.map((t) => t.id), [a1.id, a2.id]);

// 3. A slow answer: one reader follows it on edge B from the start, uninterrupted; the sender's edge A is killed
// mid-answer, and the sender resumes with reconnectToStream on edge B. Both assemble the same message.
const q3 = user("Tell me how a log makes streams resumable [fault:slow:150]");
const cutStream = await send(onA, [q1, a1, q2, a2, q3]);
let textBeforeKill = "";
let sawText;
const textSeen = new Promise((resolve) => (sawText = resolve));
let chunksBeforeKill = 0;
const cutMessage = assemble(cutStream, {
  cut: true,
  onChunk: () => (chunksBeforeKill += 1),
  onMessage: (message) => {
    const text = answerText(message);
    if (text && !textBeforeKill) {
      textBeforeKill = text;
      sawText();
    }
  },
});
await textSeen;
const watcher = assemble(await onB.reconnectToStream({ chatId }));
process.kill(A_PID, "SIGKILL"); // the serving edge dies mid-answer, the sender still connected
const killedAt = performance.now();
const partial = await cutMessage;
const resumedStream = await onB.reconnectToStream({ chatId });
assert.ok(resumedStream, "the answer is still running: reconnectToStream gets a stream, not a 204");
let firstResumedMs = null;
let replayedChunks = 0;
const resumed = await assemble(resumedStream, {
  onChunk: () => {
    replayedChunks += 1;
    firstResumedMs ??= Math.round(performance.now() - killedAt);
  },
});
const watched = await watcher;
assert.equal(resumed.id, partial.id);
assert.deepEqual(resumed, watched);
const final = await record(B, resumed.id);
assert.equal(final.state, "completed");
assert.equal(finalText(resumed), final.output);
assert.ok(answerText(resumed).startsWith(textBeforeKill), "the resumed message continues what was seen");
assert.ok(answerText(partial).length < answerText(resumed).length, "the kill came mid-answer");

// 4. Nothing running now: reconnectToStream is a 204 (null).
assert.equal(await onB.reconnectToStream({ chatId }), null);

// Figures, not assertions: how far the sender had got, and what the resume on the other edge replayed.
const resume = { chunksBeforeKill, replayedChunks, firstChunkAfterKillMs: firstResumedMs, resumedParts: resumed.parts.length };
console.log(JSON.stringify({ chatId, chunks: counts, resume, partsResumed: resumed.parts.map((p) => p.type) }));

// useChat against Sluice: every message is a Sluice task in one context (the chat id), and `resume: true` picks up
// an answer that is still running after a reload — from whichever edge replica the request reaches.
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useMemo, useState } from "react";
import { createRoot } from "react-dom/client";

const SLUICE_URL = import.meta.env.VITE_SLUICE_URL ?? "http://127.0.0.1:8080";

// One chat per browser tab, kept across reloads so that `resume` has something to resume.
function chatId() {
  const key = "sluice-example-chat";
  const known = sessionStorage.getItem(key);
  if (known) return known;
  const fresh = `chat-${crypto.randomUUID()}`;
  sessionStorage.setItem(key, fresh);
  return fresh;
}

// A retried model step leaves its superseded text part marked; hide it (docs/ai-sdk.md, "Retried steps").
const visible = (part) => !(part.type === "text" && part.providerMetadata?.sluice?.superseded);

function Part({ part }) {
  if (part.type === "text") return <p>{part.text}</p>;
  if (part.type.startsWith("tool-")) {
    return (
      <pre>
        ⚙ {part.type.slice(5)}({JSON.stringify(part.input)}) → {part.state === "output-available"
          ? JSON.stringify(part.output)
          : part.errorText ?? part.state}
      </pre>
    );
  }
  if (part.type === "data-stage") return <p><em>stage {part.data.stage}/{part.data.stages}: {part.data.agent}</em></p>;
  if (part.type === "data-input-request" && part.data.state === "waiting") {
    return <Answer request={part.data} />;
  }
  return null;
}

// A task that waits for a person: answer it on the edge; the stream goes on by itself.
function Answer({ request }) {
  const [text, setText] = useState("");
  const send = (body) =>
    fetch(`${SLUICE_URL}${request.answer}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  if (request.kind === "approval") {
    return (
      <p>
        {request.prompt} <button onClick={() => send({ approve: true })}>Approve</button>{" "}
        <button onClick={() => send({ approve: false })}>Deny</button>
      </p>
    );
  }
  return (
    <form onSubmit={(e) => { e.preventDefault(); send({ input: text }); }}>
      {request.prompt} <input value={text} onChange={(e) => setText(e.target.value)} /> <button>Send</button>
    </form>
  );
}

function Chat() {
  const id = useMemo(chatId, []);
  const [input, setInput] = useState("");
  const { messages, sendMessage, status, error } = useChat({
    id,
    resume: true,
    transport: new DefaultChatTransport({ api: `${SLUICE_URL}/v1/chat`, body: { agent: "assistant" } }),
  });
  return (
    <main style={{ maxWidth: 720, margin: "2em auto", fontFamily: "system-ui" }}>
      <h1>useChat × Sluice</h1>
      <p>conversation <code>{id}</code> · {status}</p>
      {messages.map((m) => (
        <section key={m.id}>
          <strong>{m.role === "user" ? "you" : "agent"}</strong>
          {m.parts.filter(visible).map((part, i) => <Part key={i} part={part} />)}
        </section>
      ))}
      {error && <p role="alert">{error.message}</p>}
      <form onSubmit={(e) => { e.preventDefault(); if (input.trim()) sendMessage({ text: input }); setInput(""); }}>
        <input value={input} onChange={(e) => setInput(e.target.value)} placeholder="What is 17*23?" size={60} />
        <button disabled={status === "streaming" || status === "submitted"}>Send</button>
      </form>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<Chat />);

// Sluice web client: a conversation with an agent — submit, watch each answer stream in, answer, cancel.
//
// A conversation is a Sluice context: the first message starts one, every follow-up is a task with its
// `context_id` (the edge gives the agent the earlier turns), `?context=ID` opens one, and the recent ones are
// listed (kept in this browser's localStorage). Answers render as Markdown through markdown.js (DOM nodes only).
//
// The stream is the browser's own EventSource on /v1/tasks/{id}/events, so reconnecting with Last-Event-ID is
// native; when the browser gives up (an HTTP error while an edge restarts) we open a new one after the last id
// we saw. Events are deduplicated by id, and the deltas of a superseded attempt of a step are dropped.
// Event data only ever reaches the page as text (textContent / text nodes), never as HTML.
//
// An edge that wants credentials answers 401: the page asks for an API key once, keeps it in sessionStorage (this
// tab only, gone when it closes) and sends it as a bearer header on every fetch. EventSource cannot send headers,
// so its URL carries the task's stream token (`?access_token=`, from the record): short-lived, good for that one
// task's events only. The browser's own reconnect reuses the URL (same token, Last-Event-ID); when the token has
// expired or the browser gives up, the record is fetched again and a fresh token comes with it.
"use strict";

(() => {
  const TASK_ID = /^[A-Za-z0-9_-]{8,64}$/;
  const TERMINAL_STATES = new Set(["completed", "failed", "canceled"]);
  const EVENT_TYPES = [
    "task.submitted", "task.started", "agent.started", "agent.completed", "llm.started", "llm.delta",
    "llm.completed", "tool.started", "tool.completed", "budget.warning", "budget.exceeded",
    "task.input_required", "task.resumed", "task.completed", "task.failed", "task.canceled",
    "stream.gap", "task.snapshot",
  ];
  const STATE_LABEL = {
    submitted: "submitted", working: "working", "input-required": "needs input",
    completed: "completed", failed: "failed", canceled: "canceled",
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    ask: $("ask"), prompt: $("prompt"), agent: $("agent"), run: $("run"), error: $("error"),
    task: $("task"), state: $("state"), stage: $("stage"), elapsed: $("elapsed"), usage: $("usage"),
    conn: $("conn"), cancel: $("cancel"), taskAgent: $("task-agent"), taskLink: $("task-link"),
    question: $("question"), timeline: $("timeline"), input: $("input"), inputPrompt: $("input-prompt"),
    inputCall: $("input-call"), answerRow: $("answer-row"), inputText: $("input-text"), send: $("send"),
    approvalRow: $("approval-row"), approve: $("approve"), deny: $("deny"), result: $("result"),
    recent: $("recent"), recentList: $("recent-list"), conversation: $("conversation"), turns: $("turns"),
    contextLabel: $("context-label"), newChat: $("new-chat"),
  };
  const RECENT_KEY = "sluice.recent-contexts";
  const RECENT_MAX = 10;
  let context = null; // the conversation the next message continues

  // ------------------------------------------------------------------ helpers

  // Builds an element; children are nodes or strings (which become text nodes, never markup).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (key === "hidden") el.hidden = Boolean(value);
      else el.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) el.append(child);
    }
    return el;
  }

  function formatDuration(seconds) {
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const m = Math.floor(seconds / 60);
    return `${m} m ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  }

  function formatCost(usd) {
    if (!usd) return "$0";
    if (usd >= 1) return `$${usd.toFixed(2)}`;
    if (usd >= 0.01) return `$${usd.toFixed(4)}`;
    const small = usd.toFixed(6).replace(/0+$/, "");
    return small === "0." ? "<$0.000001" : `$${small}`;
  }

  function formatUsage(u) {
    return `${u.input_tokens} in / ${u.output_tokens} out tokens · ${formatCost(u.cost_usd)}`;
  }

  function prettyJson(text) {
    if (!text) return "";
    try {
      const value = JSON.parse(text);
      const compact = JSON.stringify(value);
      return compact.length <= 60 ? compact : JSON.stringify(value, null, 2);
    } catch {
      return text;
    }
  }

  const KEY_STORAGE = "sluice.apiKey";
  let askedForKey = null; // one prompt at a time, however many requests were refused

  function apiKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE);
    } catch {
      return null; // storage disabled: ask again on the next 401
    }
  }

  function askForKey() {
    if (askedForKey === null) {
      askedForKey = Promise.resolve().then(() => {
        const key = window.prompt("This Sluice edge needs an API key (sluice keys add --tenant T):");
        if (key && key.trim()) {
          try {
            sessionStorage.setItem(KEY_STORAGE, key.trim());
          } catch {
            /* kept for this request only */
          }
          return key.trim();
        }
        return null;
      }).finally(() => { askedForKey = null; });
    }
    return askedForKey;
  }

  // fetch() with the API key, if there is one; a 401 asks for a key (once) and tries again with it.
  async function api(url, options = {}) {
    const send = (key) => {
      const headers = { ...(options.headers || {}) };
      if (key) headers.Authorization = `Bearer ${key}`;
      return fetch(url, { ...options, headers });
    };
    const response = await send(apiKey());
    if (response.status !== 401) return response;
    const key = await askForKey();
    return key ? send(key) : response;
  }

  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes); // works outside secure contexts too (a phone on the LAN)
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch {
      /* not JSON */
    }
    return `The edge answered HTTP ${response.status}.`;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;
  }

  // ------------------------------------------------------------------ one watched task

  class TaskView {
    constructor(id) {
      this.id = id;
      this.lastId = null; // BigInt: event ids are uint64
      this.steps = new Map(); // "stage:step" -> {attempt, node, el}
      this.tools = new Map(); // call_id -> card parts
      this.state = "submitted";
      this.stage = null;
      this.resuming = false;
      this.usage = { input_tokens: 0, output_tokens: 0, cost_usd: 0 };
      this.firstTs = null;
      this.endTs = null;
      this.source = null;
      this.token = null; // the stream token for this task's EventSource (none needed by an open edge)
      this.closed = false;
      this.retryDelay = 500;
      this.retryTimer = null;
      this.clock = setInterval(() => this.renderClock(), 250);
    }

    // -------------------------------------------------------------- connection

    async connect() {
      if (this.closed) return;
      if (this.token === null && !(await this.refresh())) return;
      if (this.closed) return;
      const query = new URLSearchParams();
      if (this.lastId !== null) query.set("after", String(this.lastId));
      if (this.token) query.set("access_token", this.token);
      const base = `/v1/tasks/${encodeURIComponent(this.id)}/events`;
      const qs = query.toString();
      const source = new EventSource(qs ? `${base}?${qs}` : base);
      this.source = source;
      for (const type of EVENT_TYPES) source.addEventListener(type, (m) => this.onMessage(m));
      source.onopen = () => {
        this.retryDelay = 500;
        this.setConnected(true);
      };
      source.onerror = () => {
        if (this.closed) return;
        this.setConnected(false);
        if (source.readyState === EventSource.CLOSED) this.recover(); // the browser gave up: we do not
      };
    }

    // The record again (with a fresh stream token). False: the task cannot be watched (shown, and closed).
    async refresh() {
      try {
        const response = await api(`/v1/tasks/${encodeURIComponent(this.id)}`, { cache: "no-store" });
        if (response.ok) {
          const record = await response.json();
          this.token = record.stream_token || "";
          return true;
        }
        if ([400, 401, 403, 404].includes(response.status)) {
          showError(await errorMessage(response));
          this.close();
          return false;
        }
      } catch {
        /* the edge is away: the caller retries */
      }
      return true;
    }

    async recover() {
      this.source = null;
      if (!(await this.refresh())) return;
      if (this.closed) return;
      this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 5000);
    }

    close() {
      this.closed = true;
      if (this.source) this.source.close();
      clearTimeout(this.retryTimer);
      clearInterval(this.clock);
      this.setConnected(true);
    }

    setConnected(connected) {
      ui.conn.hidden = connected || this.closed || TERMINAL_STATES.has(this.state);
    }

    onMessage(message) {
      let env;
      try {
        env = JSON.parse(message.data);
      } catch {
        return;
      }
      if (env.id !== undefined && env.id !== null) {
        const id = BigInt(env.id);
        if (this.lastId !== null && id <= this.lastId) return; // seen before a reconnect
        this.lastId = id;
      }
      const stick = nearBottom();
      this.apply(env);
      this.renderStatus();
      if (stick) window.scrollTo(0, document.documentElement.scrollHeight);
    }

    // -------------------------------------------------------------- events

    apply(env) {
      const d = env.data || {};
      if (this.firstTs === null && env.type !== "stream.gap") this.firstTs = env.ts;
      switch (env.type) {
        case "task.submitted":
          ui.question.textContent = d.input;
          ui.taskAgent.textContent = d.agent;
          if (d.context_id) joinConversation(d.context_id, this.id, d.input);
          break;
        case "task.started":
          // attempt > 1 after an answer is just the task going on; without one, a runner stopped mid-way
          if (d.attempt > 1 && !this.resuming) this.note(`Another runner took the task over (attempt ${d.attempt})`);
          this.state = "working";
          this.resuming = false;
          break;
        case "agent.started":
          this.stage = d;
          ui.timeline.append(h("div", { class: "stage-head" }, `${d.stage}/${d.stages} · ${d.agent}`));
          break;
        case "agent.completed":
          break;
        case "llm.started":
          this.startStep(d.step, d.attempt);
          break;
        case "llm.delta": {
          const step = this.startStep(d.step, d.attempt);
          if (step && d.text) {
            step.node.appendData(d.text);
            step.el.hidden = false;
          }
          break;
        }
        case "llm.completed": {
          const step = this.startStep(d.step, d.attempt);
          if (step) {
            if (d.content && step.node.data !== d.content) step.node.data = d.content; // deltas we missed
            step.el.hidden = !step.node.data;
            step.el.classList.remove("live");
            if (step.node.data) step.el.firstChild.replaceChildren(window.SluiceMarkdown.render(step.node.data));
          }
          for (const key of ["input_tokens", "output_tokens", "cost_usd"]) this.usage[key] += d.usage[key] || 0;
          for (const call of d.tool_calls || []) this.toolCard(call.call_id, call.name, call.arguments);
          break;
        }
        case "tool.started":
          this.toolCard(d.call_id, d.name, d.arguments).setStatus("running", "running…");
          break;
        case "tool.completed": {
          const card = this.toolCard(d.call_id, d.name, null);
          card.setStatus(d.ok ? "ok" : "error", d.ok ? "done" : "failed");
          card.result.textContent = d.ok ? prettyJson(d.result) : d.error || "";
          card.resultSection.hidden = false;
          card.duration.textContent = formatDuration((d.duration_ms || 0) / 1000);
          break;
        }
        case "budget.warning":
        case "budget.exceeded":
          this.note(`Budget ${env.type === "budget.warning" ? "warning" : "exceeded"}: ${d.kind} ${d.used} of ${d.limit}`,
                    env.type === "budget.exceeded" ? "bad" : "warn");
          break;
        case "task.input_required":
          this.state = "input-required";
          this.note(`? ${d.prompt}`, "ask");
          if (d.call_id && this.tools.has(d.call_id)) {
            this.tools.get(d.call_id).setStatus("waiting", d.kind === "approval" ? "awaiting approval" : "waiting for you");
          }
          this.showInput(d);
          break;
        case "task.resumed":
          this.state = "working";
          this.resuming = true;
          this.hideInput();
          this.note(d.approved === true ? "› approved" : d.approved === false ? "› denied" : `› ${d.input}`, "answer");
          break;
        case "task.completed":
        case "task.failed":
        case "task.canceled":
          this.finish(env);
          break;
        case "stream.gap":
          this.note(`Earlier events are no longer kept (the log starts at ${d.oldest}).`, "warn");
          break;
        case "task.snapshot":
          this.state = d.state;
          ui.question.textContent = d.input;
          ui.taskAgent.textContent = d.agent;
          this.usage = d.usage || this.usage;
          this.firstTs = d.created_at;
          break;
      }
    }

    // The text block of a step; a higher attempt restarts it, a lower one is void (returns null).
    startStep(number, attempt) {
      const key = `${this.stage ? this.stage.stage : 0}:${number}`;
      let step = this.steps.get(key);
      if (!step) {
        const node = document.createTextNode("");
        const el = h("div", { class: "step live", "data-step": number, hidden: true }, h("div", { class: "text" }, node));
        ui.timeline.append(el); // hidden until it has text: a step may only call tools
        step = { attempt, node, el };
        this.steps.set(key, step);
      } else if (attempt < step.attempt) {
        return null;
      } else if (attempt > step.attempt) {
        step.attempt = attempt;
        step.node.data = "";
        step.el.hidden = true;
        step.el.classList.add("live");
        step.el.dataset.attempt = attempt;
      }
      return step;
    }

    toolCard(callId, name, args) {
      let card = this.tools.get(callId);
      if (!card) {
        const status = h("span", { class: "tool-status" }, "queued");
        const duration = h("span", { class: "tool-duration" });
        const argsEl = h("pre", { class: "code tool-args" });
        const result = h("pre", { class: "code tool-result" });
        const resultSection = h("div", { hidden: true }, h("div", { class: "tool-label" }, "result"), result);
        const el = h("div", { class: "tool", "data-call-id": callId, "data-status": "queued" },
          h("div", { class: "tool-head" }, h("span", { class: "tool-icon", "aria-hidden": "true" }, "⚙"),
            h("span", { class: "tool-name" }, name), status, duration),
          h("div", { class: "tool-label" }, "arguments"), argsEl, resultSection);
        ui.timeline.append(el);
        card = {
          el, status, duration, args: argsEl, result, resultSection,
          setStatus(kind, text) {
            el.dataset.status = kind;
            status.textContent = text;
          },
        };
        this.tools.set(callId, card);
      }
      if (args !== null && args !== undefined && !card.args.textContent) card.args.textContent = prettyJson(args) || "{}";
      return card;
    }

    note(text, kind = "info") {
      ui.timeline.append(h("div", { class: `note ${kind}` }, text));
    }

    showInput(d) {
      ui.inputPrompt.textContent = d.prompt;
      const approval = d.kind === "approval";
      ui.inputCall.hidden = !approval || !d.name;
      ui.inputCall.textContent = approval && d.name ? `${d.name}(${prettyJson(d.arguments)})` : "";
      ui.answerRow.hidden = approval;
      ui.approvalRow.hidden = !approval;
      ui.inputText.value = "";
      for (const b of [ui.send, ui.approve, ui.deny, ui.inputText]) b.disabled = false;
      ui.input.hidden = false;
      (approval ? ui.approve : ui.inputText).focus({ preventScroll: true });
    }

    hideInput() {
      ui.input.hidden = true;
    }

    finish(env) {
      const d = env.data || {};
      this.endTs = env.ts;
      this.state = env.type.slice("task.".length);
      if (d.usage) this.usage = d.usage;
      this.hideInput();
      ui.cancel.hidden = true;
      for (const step of this.steps.values()) step.el.classList.remove("live");
      const took = formatDuration(this.elapsed());
      let text;
      if (env.type === "task.completed") text = `✓ Completed in ${took} · ${formatUsage(this.usage)}`;
      else if (env.type === "task.failed") text = `✗ Failed after ${took}: ${d.error.message} (${d.error.code})`;
      else text = `⊘ Canceled after ${took}${d.reason ? `: ${d.reason}` : ""}`;
      ui.result.textContent = text;
      ui.result.dataset.state = this.state;
      ui.result.hidden = false;
      this.close();
      this.renderClock();
    }

    // -------------------------------------------------------------- status bar

    elapsed() {
      if (!this.firstTs) return 0;
      const end = this.endTs ? Date.parse(this.endTs) : Date.now();
      return Math.max(0, (end - Date.parse(this.firstTs)) / 1000);
    }

    renderClock() {
      ui.elapsed.textContent = this.firstTs ? formatDuration(this.elapsed()) : "";
    }

    renderStatus() {
      ui.state.textContent = STATE_LABEL[this.state] || this.state;
      ui.state.dataset.state = this.state;
      ui.stage.hidden = !this.stage;
      if (this.stage) ui.stage.textContent = `${this.stage.stage}/${this.stage.stages} ${this.stage.agent}`;
      ui.usage.textContent = this.usage.input_tokens || this.usage.output_tokens ? formatUsage(this.usage) : "";
      ui.cancel.hidden = TERMINAL_STATES.has(this.state);
      this.renderClock();
    }
  }

  let view = null;

  // ------------------------------------------------------------------ the conversation

  function recentContexts() {
    try {
      const list = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
      return Array.isArray(list) ? list.filter((c) => c && TASK_ID.test(c.id)) : [];
    } catch {
      return [];
    }
  }

  function remember(id, title) {
    const others = recentContexts().filter((c) => c.id !== id);
    const known = recentContexts().find((c) => c.id === id);
    const entry = { id, title: (known && known.title) || String(title || id).slice(0, 80), at: Date.now() };
    try {
      localStorage.setItem(RECENT_KEY, JSON.stringify([entry, ...others].slice(0, RECENT_MAX)));
    } catch {
      /* storage is off: the list is just not kept */
    }
    renderRecent();
  }

  function renderRecent() {
    const list = recentContexts();
    ui.recent.hidden = !list.length;
    ui.recentList.replaceChildren(...list.map((c) => h("li", {},
      h("a", { href: `?context=${encodeURIComponent(c.id)}`, "data-context": c.id }, c.title))));
  }

  // The task being watched belongs to this context: show the earlier turns above it, and continue it.
  async function joinConversation(id, taskId, input) {
    const known = context === id && ui.turns.dataset.upTo === taskId;
    context = id;
    remember(id, input);
    ui.contextLabel.textContent = `Conversation ${id}`;
    ui.conversation.hidden = false;
    if (known) return;
    ui.turns.dataset.upTo = taskId;
    try {
      const response = await fetch(`/v1/contexts/${encodeURIComponent(id)}`, { cache: "no-store" });
      if (!response.ok) return;
      const tasks = (await response.json()).tasks || [];
      const earlier = tasks.slice(0, Math.max(0, tasks.findIndex((t) => t.id === taskId)));
      if (ui.turns.dataset.upTo !== taskId) return; // another task was opened meanwhile
      ui.turns.replaceChildren(...earlier.map(turn));
    } catch {
      /* the earlier turns stay hidden; the conversation goes on */
    }
  }

  function turn(record) {
    const answer = record.state === "completed" && record.output
      ? h("div", { class: "turn-answer" }, window.SluiceMarkdown.render(record.output))
      : h("div", { class: "turn-answer muted" }, `(no answer: the task ${record.state})`);
    return h("div", { class: "turn", "data-task": record.id },
      h("p", { class: "turn-question" }, h("a", { href: `?task=${encodeURIComponent(record.id)}` }, "›"), " ", record.input),
      answer);
  }

  function newConversation() {
    if (view) view.close();
    view = null;
    context = null;
    ui.turns.replaceChildren();
    delete ui.turns.dataset.upTo;
    ui.conversation.hidden = true;
    ui.task.hidden = true;
    history.pushState({}, "", "/");
    ui.prompt.focus();
  }

  async function openContext(id) {
    if (!TASK_ID.test(id)) {
      showError("That is not a conversation id.");
      return;
    }
    try {
      const response = await fetch(`/v1/contexts/${encodeURIComponent(id)}`, { cache: "no-store" });
      if (!response.ok) {
        showError(await errorMessage(response));
        return;
      }
      const tasks = (await response.json()).tasks || [];
      if (tasks.length) watch(tasks[tasks.length - 1].id);
    } catch {
      showError("Cannot reach the Sluice edge. Is it running?");
    }
  }

  // ------------------------------------------------------------------ page actions

  function watch(id, token = null) {
    if (view) view.close();
    view = null;
    showError("");
    if (!TASK_ID.test(id)) {
      showError("That is not a task id.");
      ui.task.hidden = true;
      return;
    }
    ui.timeline.replaceChildren();
    for (const el of [ui.question, ui.taskAgent, ui.result, ui.usage, ui.elapsed]) el.textContent = "";
    ui.result.hidden = true;
    ui.input.hidden = true;
    ui.conn.hidden = true;
    ui.cancel.disabled = false;
    ui.taskLink.textContent = id;
    ui.taskLink.href = `?task=${encodeURIComponent(id)}`;
    ui.task.hidden = false;
    view = new TaskView(id);
    view.token = token;
    view.renderStatus();
    view.connect();
  }

  async function submit(event) {
    event.preventDefault();
    const input = ui.prompt.value.trim();
    if (!input) return;
    ui.run.disabled = true;
    showError("");
    try {
      const response = await api("/v1/tasks", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", "Idempotency-Key": newKey() },
        body: JSON.stringify({ input, agent: ui.agent.value || "assistant", ...(context ? { context_id: context } : {}) }),
      });
      if (!response.ok) {
        showError(await errorMessage(response));
        return;
      }
      const record = await response.json();
      ui.prompt.value = "";
      history.pushState({ task: record.id }, "", `?task=${encodeURIComponent(record.id)}`);
      watch(record.id, record.stream_token);
    } catch {
      showError("Cannot reach the Sluice edge. Is it running?");
    } finally {
      ui.run.disabled = false;
    }
  }

  async function post(path, body, buttons) {
    if (!view) return;
    for (const b of buttons) b.disabled = true;
    showError("");
    try {
      const response = await api(`/v1/tasks/${encodeURIComponent(view.id)}/${path}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        showError(await errorMessage(response));
        for (const b of buttons) b.disabled = false;
      }
    } catch {
      showError("Cannot reach the Sluice edge. Is it running?");
      for (const b of buttons) b.disabled = false;
    }
  }

  async function loadAgents() {
    try {
      const response = await fetch("/v1/agents");
      if (!response.ok) return;
      const body = await response.json();
      const agents = (body.agents || []).filter((a) => a && typeof a.name === "string");
      if (!agents.length) return;
      const chosen = ui.agent.value;
      const label = (a) => (a.runners ? a.name : `${a.name} (no runner now)`);
      ui.agent.replaceChildren(...agents.map((a) => h("option", { value: a.name, title: a.description || "" }, label(a))));
      ui.agent.value = agents.some((a) => a.name === chosen) ? chosen : agents[0].name;
    } catch {
      /* keep the default agent */
    }
  }

  function fromLocation() {
    const params = new URLSearchParams(window.location.search);
    const id = params.get("task");
    if (id) {
      watch(id);
    } else if (params.get("context")) {
      openContext(params.get("context"));
    } else {
      if (view) view.close();
      view = null;
      ui.task.hidden = true;
    }
  }

  ui.ask.addEventListener("submit", submit);
  ui.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.metaKey || e.ctrlKey)) ui.ask.requestSubmit();
  });
  ui.cancel.addEventListener("click", () => post("cancel", {}, [ui.cancel]));
  ui.input.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.inputText.value.trim();
    if (text) post("input", { input: text }, [ui.send, ui.inputText]);
  });
  ui.approve.addEventListener("click", () => post("input", { approve: true }, [ui.approve, ui.deny]));
  ui.deny.addEventListener("click", () => post("input", { approve: false }, [ui.approve, ui.deny]));
  window.addEventListener("popstate", fromLocation);
  ui.newChat.addEventListener("click", newConversation);

  renderRecent();
  loadAgents();
  fromLocation();
})();

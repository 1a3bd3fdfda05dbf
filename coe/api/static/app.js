// coe's web chat page: a conversation with a graph over the OpenAI-compatible API.
// Plain browser JavaScript, no dependencies. Model output is only ever set as text (textContent,
// append of strings), never parsed as HTML.

const KEY_STORAGE = "coe.apiKey"; // sessionStorage only: the key lives as long as this tab
const $ = (id) => document.getElementById(id);
const ui = {
  graph: $("graph"),
  description: $("graph-description"),
  maxTokens: $("max-tokens"),
  newChat: $("new-chat"),
  keyForm: $("key-form"),
  keyMessage: $("key-message"),
  apiKey: $("api-key"),
  conversation: $("conversation"),
  empty: $("empty"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
};

/** The turns sent as `messages`: answered exchanges only (a failed one is left out). */
let dialogue = [];
/** The request under way: {controller, turn}, or null. */
let running = null;
/** The graphs served, by name: {description, experts}. */
let graphs = new Map();

/** An error as the API describes it: {message, type, code, param}. */
class ApiError extends Error {
  constructor(error, status = null) {
    super(error.message || "Unknown error");
    this.error = error;
    this.status = status;
  }
}

// ---------------------------------------------------------------------------- small DOM helpers

/** An element with attributes and children; strings become text nodes (never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const list = (items) => (items && items.length ? items.join(", ") : "—");
const seconds = (s) => (typeof s === "number" ? `${s.toFixed(2)} s` : "—");
const number = (x) => (typeof x === "number" ? String(Math.round(x * 1000) / 1000) : String(x));

function usd(cost) {
  if (typeof cost !== "number") return "—";
  if (cost === 0) return "$0";
  return cost < 0.001 ? `$${cost.toExponential(2)}` : `$${cost.toFixed(4)}`;
}

function scrollToEnd() {
  const c = ui.conversation;
  if (c.scrollHeight - c.scrollTop - c.clientHeight < 160) c.scrollTop = c.scrollHeight;
}

// ---------------------------------------------------------------------------- API access

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

/** The ApiError of a failed response: its OpenAI error body, or its status and text. */
async function errorOf(response) {
  const text = await response.text().catch(() => "");
  let error = null;
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "object" && body.error) error = body.error;
  } catch {
    // not JSON: described below
  }
  error = error || {
    message: `HTTP ${response.status} ${response.statusText}${text ? `: ${text.slice(0, 500)}` : ""}`,
    type: "http_error",
    code: null,
    param: null,
  };
  return new ApiError(error, response.status);
}

/** The `data` of each Server-Sent Event of a response body, as strings. */
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const boundary = /\r\n\r\n|\n\n|\r\r/;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let match;
      while ((match = boundary.exec(buffer))) {
        const data = dataOf(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
        if (data !== null) yield data;
      }
      if (done) break;
    }
    const rest = dataOf(buffer); // a last event without its blank line
    if (rest !== null) yield rest;
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The joined `data:` lines of one event block, or null when it has none (comments, ids). */
function dataOf(block) {
  const lines = block.split(/\r\n|\n|\r/).filter((line) => line.startsWith("data:"));
  if (!lines.length) return null;
  return lines.map((line) => line.slice(line.startsWith("data: ") ? 6 : 5)).join("\n");
}

// ---------------------------------------------------------------------------- graphs and keys

async function loadGraphs() {
  ui.graph.disabled = true;
  let response;
  try {
    response = await fetch("v1/models", { headers: headers() });
  } catch (err) {
    noGraphs(`Could not reach the server: ${err.message}`);
    return;
  }
  if (!response.ok) {
    const err = await errorOf(response);
    if (response.status === 401) {
      noGraphs(null);
      askForKey(err.message);
    } else {
      noGraphs(`Could not list the graphs: ${err.message}`);
    }
    return;
  }
  const previous = ui.graph.value;
  const { data } = await response.json();
  ui.graph.replaceChildren(
    ...data.map((model) =>
      el("option", { value: model.id, title: model.description || null }, model.id),
    ),
  );
  graphs = new Map(data.map((m) => [m.id, m]));
  if (data.some((m) => m.id === previous)) ui.graph.value = previous;
  ui.graph.disabled = !data.length;
  if (!data.length) notice("This server serves no graphs.");
  describeGraph();
}

/** loadGraphs, with anything unexpected (a body that is not the model list) shown, not lost. */
function refreshGraphs() {
  loadGraphs().catch((err) => noGraphs(`Could not list the graphs: ${err.message}`));
}

function noGraphs(reason) {
  graphs = new Map();
  ui.graph.replaceChildren(el("option", { value: "" }, "no graphs"));
  describeGraph();
  if (reason) notice(reason);
}

function describeGraph() {
  const info = graphs.get(ui.graph.value);
  if (!info) {
    ui.description.textContent = "";
    return;
  }
  const experts = info.experts && info.experts.length ? ` (experts: ${info.experts.join(", ")})` : "";
  ui.description.textContent = `${info.description || ""}${experts}`;
}

function askForKey(message) {
  ui.keyMessage.textContent = `${message} This server needs an API key.`;
  ui.keyForm.hidden = false;
  ui.apiKey.focus();
}

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, ui.apiKey.value.trim());
  ui.apiKey.value = "";
  ui.keyForm.hidden = true;
  refreshGraphs();
});

// ---------------------------------------------------------------------------- the conversation

/** A line from the page itself (not an answer), e.g. a failure to list the graphs. */
function notice(text) {
  ui.empty.hidden = true;
  ui.conversation.append(el("p", { class: "notice", role: "alert" }, text));
  scrollToEnd();
}

function userTurn(text) {
  ui.empty.hidden = true;
  const node = el("article", { class: "turn user" }, el("div", { class: "who" }, "You"),
    el("div", { class: "text" }, text));
  ui.conversation.append(node);
  return node;
}

/** One answer as it arrives: its text, its state (streaming, done, stopped, error), its trace. */
class AnswerTurn {
  constructor(graph) {
    this.content = "";
    this.finish = null;
    this.text = el("div", { class: "text" });
    this.status = el("p", { class: "status" }, `${graph} is working…`);
    this.node = el("article", { class: "turn assistant", "data-state": "waiting" },
      el("div", { class: "who" }, graph), this.text, this.status);
    ui.conversation.append(this.node);
    scrollToEnd();
  }

  append(piece) {
    if (!piece) return;
    this.content += piece;
    this.text.textContent = this.content;
    if (this.node.dataset.state === "waiting") {
      this.node.dataset.state = "streaming";
      this.status.textContent = "";
    }
    scrollToEnd();
  }

  settle(state, status) {
    this.node.dataset.state = state;
    this.status.textContent = status;
  }

  fail(err) {
    const e = err.error || { message: String(err.message || err) };
    const detail = [e.type, e.code && `code ${e.code}`, e.param && `param ${e.param}`,
      err.status && `HTTP ${err.status}`].filter(Boolean).join(" · ");
    this.settle("error", "");
    this.node.append(el("div", { class: "error", role: "alert" },
      el("strong", {}, "Error: "), e.message || "unknown error",
      detail ? el("small", {}, ` (${detail})`) : null));
    scrollToEnd();
  }

  showTrace(trace, usage) {
    this.node.append(renderTrace(trace, usage));
  }
}

function applyChunk(turn, chunk) {
  for (const choice of chunk.choices || []) {
    if (choice.delta && typeof choice.delta.content === "string") turn.append(choice.delta.content);
    if (choice.finish_reason) turn.finish = choice.finish_reason;
  }
  if (chunk.coe) turn.trace = chunk.coe;
  if (chunk.usage) turn.usage = chunk.usage;
}

/** Read a streamed answer into `turn`; throws ApiError on an error event or a cut stream. */
async function readAnswer(response, turn) {
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") return;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new ApiError({ message: `Malformed event from the server: ${data.slice(0, 200)}`,
        type: "stream_error" });
    }
    if (chunk.error) throw new ApiError(chunk.error);
    applyChunk(turn, chunk);
  }
  throw new ApiError({ message: "The answer's stream ended before it was complete (no [DONE]).",
    type: "stream_error" });
}

function requestBody(graph, messages) {
  const body = { model: graph, messages: messages.slice(), stream: true };
  const maxTokens = Number.parseInt(ui.maxTokens.value, 10);
  if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
  return body;
}

async function send() {
  const text = ui.prompt.value.trim();
  const graph = ui.graph.value;
  if (!text || running) return;
  if (!graph) {
    notice("No graph to ask: the graph list has not loaded.");
    return;
  }
  ui.prompt.value = "";
  const asked = userTurn(text);
  const conversation = dialogue; // "New chat" replaces `dialogue`; this exchange belongs to this one
  conversation.push({ role: "user", content: text });
  const turn = new AnswerTurn(graph);
  const controller = new AbortController();
  running = { controller, turn };
  setBusy(true);
  let kept = false; // whether this exchange stays in the history sent with the next question
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(requestBody(graph, conversation)),
      signal: controller.signal,
    });
    if (!response.ok) {
      const err = await errorOf(response);
      if (response.status === 401) askForKey(err.message);
      throw err;
    }
    await readAnswer(response, turn);
    kept = true;
    turn.settle("done", turn.finish === "length" ? "Cut at the max tokens limit." : "");
  } catch (err) {
    if (controller.signal.aborted) {
      kept = turn.content.length > 0;
      turn.settle("stopped", "Stopped.");
    } else {
      turn.fail(err instanceof ApiError ? err
        : new ApiError({ message: `Request failed: ${err.message}`, type: "network_error" }));
    }
  } finally {
    running = null;
    setBusy(false);
  }
  if (kept) {
    conversation.push({ role: "assistant", content: turn.content });
  } else {
    conversation.pop();
    asked.classList.add("dropped");
    asked.title = "Left out of the conversation sent with the next question";
  }
  if (turn.trace) turn.showTrace(turn.trace, turn.usage);
  scrollToEnd();
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.hidden = !busy;
  ui.stop.disabled = !busy;
  if (!busy) ui.prompt.focus();
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
ui.stop.addEventListener("click", () => {
  if (running) running.controller.abort();
});
ui.newChat.addEventListener("click", () => {
  if (running) running.controller.abort();
  dialogue = [];
  ui.conversation.replaceChildren(ui.empty);
  ui.empty.hidden = false;
  ui.prompt.focus();
});
ui.graph.addEventListener("change", describeGraph);

// ---------------------------------------------------------------------------- the trace

function renderTrace(trace, usage) {
  const calls = trace.calls || [];
  const total = trace.usage || {};
  const summary = [
    `graph ${trace.graph}`,
    plural(calls.length, "expert call"),
    usage ? `${usage.prompt_tokens} + ${usage.completion_tokens} tokens` : null,
    total.cost !== undefined ? usd(total.cost) : null,
    trace.wall_s !== undefined ? seconds(trace.wall_s) : null,
  ].filter(Boolean).join(" · ");
  return el("details", { class: "trace" },
    el("summary", {}, `Trace: ${summary}`),
    section("Route", "route", trace.route, routeItem),
    section("Expert calls", "calls", calls, callItem),
    section("Judge selections", "selections", trace.selections, selectionItem),
    section("Loop stops", "stops", trace.stops, stopItem),
    section("Aggregation", "aggregate", trace.aggregate, aggregateItem),
    el("p", { class: "totals" },
      `Total: ${total.prompt_tokens ?? "?"} prompt + ${total.completion_tokens ?? "?"} completion tokens, `
      + `${usd(total.cost)}, expert time ${seconds(total.latency_s)}, wall ${seconds(trace.wall_s)}`));
}

/** A titled list of trace events, or nothing when there are none. */
function section(title, name, items, render) {
  if (!items || !items.length) return null;
  return el("section", { class: `trace-${name}` },
    el("h3", {}, title),
    el("ol", {}, items.map((item) => el("li", { class: name === "calls" ? "call" : "event" }, render(item)))));
}

/** `name: value` pairs, skipping empty values. */
function facts(pairs) {
  return el("dl", {}, pairs
    .filter(([, value]) => value !== null && value !== undefined && value !== ""
      && !(Array.isArray(value) && !value.length))
    .map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

function routeItem(r) {
  const weights = r.weights && Object.keys(r.weights).length
    ? Object.entries(r.weights).map(([k, v]) => `${k} ${number(v)}`).join(", ") : null;
  return [
    el("div", { class: "head" }, `${r.node} · router ${r.router || "?"}`),
    facts([
      ["experts", list(r.experts)],
      ["primary", r.primary],
      ["category", r.category],
      ["skills", r.skills && r.skills.length ? list(r.skills) : null],
      ["confidence", typeof r.confidence === "number" ? r.confidence.toFixed(3) : null],
      ["weights", weights],
    ]),
  ];
}

function callItem(c) {
  const head = el("div", { class: "head" }, el("strong", { class: "expert" }, c.expert),
    c.role ? ` · ${c.role}` : "", ` · node ${c.node}`);
  if (c.error) return [head, el("div", { class: "error" }, `failed: ${c.error}`)];
  return [
    head,
    el("div", { class: "meta" },
      `${seconds(c.latency_s)} · ${c.prompt_tokens} + ${c.completion_tokens} tokens · ${usd(c.cost)}`),
    el("pre", { class: "answer" }, c.answer ?? ""),
  ];
}

function selectionItem(s) {
  return [
    el("div", { class: "head" }, `${s.node} · judge ${s.judge} · round ${s.round}`),
    facts([
      ["selected", list(s.selected)],
      ["indices", s.indices ? s.indices.join(", ") : null],
      ["fallback", s.fallback ? "yes (seeded random choice)" : null],
      ["reason", s.reason],
    ]),
  ];
}

function stopItem(s) {
  return [
    el("div", { class: "head" }, `${s.node} · round ${s.round} · ${s.stop ? "stop" : "continue"}`),
    facts([["reason", s.reason]]),
  ];
}

function aggregateItem(a) {
  const rest = Object.entries(a)
    .filter(([k]) => !["node", "aggregator", "chosen"].includes(k))
    .map(([k, v]) => [k, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)]);
  return [
    el("div", { class: "head" }, `${a.node} · aggregator ${a.aggregator}`),
    facts([["chosen", list(a.chosen)], ...rest]),
  ];
}

refreshGraphs();

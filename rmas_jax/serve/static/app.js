// The page: fills the form from /api/status, posts questions to /api/ask, follows a request's server-sent events,
// and draws the answer, the timeline and the latent-thought inspector. All text goes in through textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = { rounds: "rounds", latent_steps: "latent-steps", max_new_tokens: "max-new-tokens",
                 temperature: "temperature", top_p: "top-p", top_k: "top-k", seed: "seed", inspect_k: "inspect-k" };
let styles = {};
let source = null;  // the EventSource of the request being followed
let timeline = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

const seconds = (s) => (s < 0.1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// Whitespace and control characters made visible, so a token like " the" or "\n" reads as what it is.
function showToken(text) {
  let out = "";
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (ch === " ") out += "␣";
    else if (ch === "\n") out += "⏎";
    else if (ch === "\t") out += "⇥";
    else if (c < 32 || c === 127) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out || "∅";
}

async function refreshStatus(first) {
  let s;
  try {
    s = await (await fetch("/api/status")).json();
  } catch (e) {
    $("server").textContent = "server unreachable";
    $("server").dataset.state = "error";
    return;
  }
  if (first) {
    styles = Object.fromEntries(s.styles.map((x) => [x.name, x]));
    for (const x of s.styles) $("style").append(el("option", { value: x.name, text: x.name }));
    const lim = s.limits;
    for (const [key, [lo, hi]] of Object.entries({ rounds: lim.rounds, latent_steps: lim.latent_steps,
                                                   max_new_tokens: lim.max_new_tokens, inspect_k: lim.inspect_k })) {
      $(FIELDS[key]).placeholder = `${lo}–${hi}`;
    }
    applyDefaults(s.styles[0].name);
  }
  const word = s.state.startsWith("error") ? "error" : s.state.split(" ")[0];
  $("server").dataset.state = word;
  $("server").textContent = word === "ready" ? `ready · ${s.style} loaded` : s.state;
  $("queue-length").textContent = s.queue ? `${plural(s.queue, "request")} running or waiting` : "queue empty";
}

function applyDefaults(name) {
  const style = styles[name];
  if (!style) return;
  $("style").value = name;
  for (const [key, id] of Object.entries(FIELDS)) $(id).value = style.defaults[key];
  $("greedy").checked = style.defaults.greedy;
  $("models").textContent = "agents: " + Object.entries(style.models).map(([r, m]) => `${r} = ${m}`).join(" · ");
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function setState(state, note) {
  $("answer").dataset.state = state;
  if (note !== undefined) $("queue").textContent = note;
  $("ask").disabled = state === "queued" || state === "loading" || state === "running";
}

function fieldValue(id) {
  const v = $(id).value.trim();
  if (v === "") return null;
  return Number.isFinite(Number(v)) ? Number(v) : v;  // the server names a field that is not a number
}

async function submit(event) {
  event.preventDefault();
  $("error").hidden = true;
  const body = { question: $("question").value, style: $("style").value, greedy: $("greedy").checked };
  for (const [key, id] of Object.entries(FIELDS)) body[key] = fieldValue(id);
  let response;
  try {
    response = await fetch("/api/ask", { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify(body) });
  } catch (e) {
    showError(`the server did not answer: ${e}`);
    return;
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    showError(`${data.error || response.statusText} (HTTP ${response.status})`);
    $("error").dataset.status = response.status;
    return;
  }
  follow(data.id);
}

function follow(id) {
  if (source) source.close();
  timeline = [];
  $("answer").textContent = "";
  $("answer-meta").textContent = "";
  $("totals").textContent = "";
  $("timeline").tBodies[0].replaceChildren();
  $("spaces").replaceChildren();
  $("turns").replaceChildren(el("p", { class: "muted", text: "waiting for the run…" }));
  $("answer").dataset.job = id;
  setState("queued", "queued…");
  source = new EventSource(`/api/jobs/${id}/events`);
  source.onmessage = (m) => handle(JSON.parse(m.data));
  source.onerror = () => {
    if ($("answer").dataset.state === "done" || $("answer").dataset.state === "error") return;
    source.close();
    showError("lost the connection to the server");
    setState("error");
  };
}

function handle(e) {
  switch (e.type) {
    case "queued":
      setState("queued", e.ahead ? `waiting: ${plural(e.ahead, "request")} ahead of yours` : "next in line");
      break;
    case "loading":
      setState("loading", `loading ${e.style} (the previous style's models are freed first)…`);
      break;
    case "started":
      setState("running", `running on ${e.style}…`);
      break;
    case "turn":
      timeline.push(e);
      drawTimeline();
      break;
    case "text":
      $("answer").textContent = e.text;
      break;
    case "inspecting":
      $("queue").textContent = "finding the nearest tokens of every latent step…";
      break;
    case "done":
      source.close();
      done(e);
      refreshStatus();
      break;
    case "error":
      source.close();
      showError(e.message);
      setState("error", "");
      refreshStatus();
      break;
  }
}

function drawTimeline() {
  const longest = Math.max(...timeline.map((t) => t.wall_s), 1e-9);
  const rows = timeline.map((t) => {
    const bar = el("span", { class: "bar" }, el("span", { class: "compile" }));
    bar.style.width = `${Math.max(0.5, (60 * t.wall_s) / longest)}%`;
    bar.firstChild.style.width = `${(100 * Math.min(t.compile_s, t.wall_s)) / Math.max(t.wall_s, 1e-9)}%`;
    const label = `${seconds(t.wall_s)}` + (t.compile_s > 0.005 ? ` (compile ${seconds(t.compile_s)})` : "");
    return el("tr", { class: "turn", "data-round": t.round, "data-role": t.role, "data-kind": t.kind },
      el("td", { class: "num", text: t.round }), el("td", { text: t.role }),
      el("td", { text: t.kind === "think" ? "thinks" : "writes" }),
      el("td", {}, bar, el("span", { class: "barlabel", text: label })),
      el("td", { class: "num", text: t.latent_steps }), el("td", { class: "num", text: t.decoded_tokens }));
  });
  $("timeline").tBodies[0].replaceChildren(...rows);
}

function done(e) {
  const acc = e.accounting;
  timeline = acc.timeline;
  drawTimeline();
  $("answer").textContent = e.answer.text;
  const tokens = e.answer.decoded_tokens[0];
  $("answer-meta").textContent = `${plural(tokens, "token")} decoded · finished by ${e.answer.finish[0]}`
    + (e.answer.tool_calls[0] ? ` · ${plural(e.answer.tool_calls[0], "tool call")}` : "");
  const w = acc.wall_s;
  const mem = acc.host_peak_bytes ? ` · peak host memory ${(acc.host_peak_bytes / 2 ** 30).toFixed(2)} GiB` : "";
  $("totals").textContent = `prompts ${seconds(w.prompts)} · latent rounds ${seconds(w.latent_rounds)} · `
    + `decode ${seconds(w.decode)} · compile ${seconds(acc.compile_s)} (inside those) · `
    + `inspector ${seconds(e.inspector.wall_s)} · ${plural(acc.latent_steps_total, "latent step")}${mem}`;
  drawInspector(e.inspector);
  setState("done", `done · ${e.request.style}, ${plural(e.request.rounds, "round")}, `
    + `${plural(e.request.latent_steps, "latent step")}`);
}

function lookupCell(found, space) {
  const far = found.norm_ratio > 3 || found.norm_ratio < 1 / 3;
  const norm = el("div", { class: far ? "norm far" : "norm",
                           text: `‖v‖ ${found.norm.toFixed(2)} · ${found.norm_ratio.toFixed(2)}× mean (${space})` });
  const toks = el("div", { class: "toks" }, ...found.nearest.map((n) =>
    el("span", { class: "tok", "data-id": n.id, title: `id ${n.id} · cos ${n.cos.toFixed(4)}` },
      showToken(n.token), el("span", { class: "cos", text: n.cos.toFixed(2) }))));
  return el("td", {}, norm, toks);
}

function drawInspector(ins) {
  const spaceRows = Object.entries(ins.spaces).map(([role, s]) =>
    el("tr", {}, el("td", { text: role }), el("td", { text: s.model }), el("td", { text: s.vocab }),
       el("td", { text: s.width }), el("td", { text: s.mean_token_norm.toFixed(3) })));
  $("spaces").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ...["space", "model", "vocab", "width", "mean token norm"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...spaceRows)));
  const q = ins.questions[0];
  const turns = q.turns.map((t) => {
    const edges = Object.keys(t.steps[0].sent);
    const head = el("tr", {}, el("th", { text: "step" }), el("th", { text: `inner(h) in ${t.role}'s space` }),
      ...edges.map((e) => el("th", { text: `outer ${e} in ${t.steps[0].sent[e].to}'s space` })));
    const rows = t.steps.map((s) => el("tr", { class: "step" }, el("td", { text: s.step }),
      lookupCell(s.inner, t.role), ...edges.map((e) => lookupCell(s.sent[e], s.sent[e].to))));
    const sends = edges.length ? ` → ${edges.map((e) => t.steps[0].sent[e].to).join(", ")}` : "";
    const summary = el("summary", {}, `Round ${t.round} · ${t.role} `,
      el("span", { class: "muted", text: `${plural(t.steps.length, "latent step")}${sends}` }));
    return el("details", { class: "turn", "data-round": t.round, "data-role": t.role, open: t.round === 1 },
      summary, el("table", { class: "steps" }, el("thead", {}, head), el("tbody", {}, ...rows)));
  });
  $("turns").replaceChildren(...turns);
}

document.addEventListener("DOMContentLoaded", () => {
  refreshStatus(true);
  setInterval(refreshStatus, 2000);
  $("ask-form").addEventListener("submit", submit);
  $("style").addEventListener("change", () => applyDefaults($("style").value));
  $("expand-all").addEventListener("click", () => document.querySelectorAll("details.turn").forEach((d) => (d.open = true)));
  $("collapse-all").addEventListener("click", () => document.querySelectorAll("details.turn").forEach((d) => (d.open = false)));
});

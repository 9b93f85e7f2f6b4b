// The Boruta dashboard: one page of each list as a snapshot, then the live feed.
// Events are batched and applied once per animation frame, touching only the rows they
// name; lists that an event may reorder (the queue, the counts) are re-read at most
// every REFRESH_MS. No library, no build step: the farm may be offline.
"use strict";

const PAGE = 100;                 // workers and queue rows shown at a time
const REFRESH_MS = 500;           // the queue is re-read at most this often
const SUMMARY_MS = 2000;          // counts, waits and chart at most this often
const TRANSITIONS_SHOWN = 200;
const TERMINAL = new Set(["DONE", "FAILED", "TIMEOUT", "CANCELLED", "INVALID"]);

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("boruta-token") || "",
  workers: new Map(),             // uuid -> {doc, tr}: the rows on this page only
  page: {after: "", before: "", remaining: 0, first: "", last: ""},
  pending: [],                    // events not applied yet
  frameAsked: false,
  stream: null,                   // AbortController of the live feed
  heartbeatInterval: 5,
  fetchedAt: performance.now(),
};

// ---------------------------------------------------------------- fetching
class Unauthorised extends Error {}

function authHeaders() {
  return state.token ? {"Authorization": "Bearer " + state.token} : {};
}

async function getJSON(path) {
  const response = await fetch(path, {headers: authHeaders(), cache: "no-store"});
  if (response.status === 401) throw new Unauthorised((await response.json()).message);
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function throttled(fn, ms) {
  // Run fn now if it has not run for ms, else once when ms has passed: never a storm.
  let last = 0, timer = null;
  return function () {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => { timer = null; last = Date.now(); fn().catch(failed); }, wait);
  };
}

function failed(error) {
  if (error instanceof Unauthorised) return askForToken(error.message);
  console.warn(error);
}

// ---------------------------------------------------------------- cells
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function capsText(caps) {          // a worker's UUID is shown in its own column
  return Object.keys(caps).filter((k) => k !== "UUID").sort()
    .map((k) => k + "=" + caps[k]).join(" ");
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
  if (seconds < 5400) return (seconds / 60).toFixed(0) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function setState(td, value) {
  td.className = "state s-" + value;
  td.textContent = value;
  td.dataset.state = value;
}

// ---------------------------------------------------------------- workers
function workerRow(doc) {
  const tr = el("tr");
  tr.dataset.uuid = doc.uuid;
  tr.append(el("td", "uuid", doc.uuid), el("td"), el("td", "caps", capsText(doc.caps)),
            el("td", "groups", doc.groups.join(" ")), el("td", "job"), el("td", "heartbeat"));
  const row = {doc, tr};
  paintWorker(row);
  return row;
}

function paintWorker(row) {
  const cells = row.tr.children;
  setState(cells[1], row.doc.state);
  cells[1].title = row.doc.fail_reason || "";
  cells[4].textContent = row.doc.job ? "#" + row.doc.job : "";
  paintHeartbeat(row);
}

function paintHeartbeat(row) {
  const age = row.doc.heartbeat_age;
  row.tr.children[5].textContent =
    age === null ? "—" : ago(age + (performance.now() - state.fetchedAt) / 1000);
}

async function loadWorkers() {
  const q = new URLSearchParams({limit: PAGE});
  if (state.page.before) q.set("before", state.page.before);
  else if (state.page.after) q.set("after", state.page.after);
  const filter = $("state-filter").value;
  if (filter) q.set("state", filter);
  const page = await getJSON("dashboard/workers?" + q);
  state.fetchedAt = performance.now();
  const body = el("tbody");
  state.workers = new Map();
  for (const doc of page.items) {
    const row = workerRow(doc);
    state.workers.set(doc.uuid, row);
    body.append(row.tr);
  }
  $("workers").tBodies[0].replaceWith(body);
  const items = page.items;
  state.page.first = items.length ? items[0].uuid : "";
  state.page.last = items.length ? items[items.length - 1].uuid : "";
  // Going backward, `remaining` counts the rows before this page, not after.
  state.page.more = state.page.before ? true : page.remaining > 0;
  state.page.less = state.page.before ? page.remaining > 0 : Boolean(state.page.after);
  $("workers-total").textContent = "(" + page.total + (filter ? " " + filter : "") + ")";
  $("workers-next").disabled = !state.page.more;
  $("workers-prev").disabled = !state.page.less;
}
const reloadWorkers = throttled(loadWorkers, REFRESH_MS);

function mayBelongHere(uuid) {
  // The page holds a range of UUIDs: a worker we do not show but that sorts inside the
  // range (or past a last page) may have joined it.
  const p = state.page;
  if (!p.first) return !p.less;
  return (uuid > p.first || !p.less) && (uuid < p.last || !p.more);
}

// ---------------------------------------------------------------- queue
async function loadQueue() {
  const page = await getJSON("dashboard/queue?limit=" + PAGE);
  const now = Date.now() / 1000;
  const body = el("tbody");
  page.items.forEach((r, i) => {
    const tr = el("tr");
    tr.dataset.id = r.id;
    tr.append(el("td", "muted", i + 1), el("td", "id", r.id), el("td", "", r.priority),
              el("td", "", r.owner), el("td", "caps", capsText(r.caps)),
              el("td", "age", ago(Math.max(0, now - r.valid_after))));
    tr.dataset.since = r.valid_after;
    body.append(tr);
  });
  $("queue").tBodies[0].replaceWith(body);
  $("queue-total").textContent = "(" + page.total + " waiting" +
    (page.total > page.items.length ? ", first " + page.items.length + " shown" : "") + ")";
}
const reloadQueue = throttled(loadQueue, REFRESH_MS);

// ---------------------------------------------------------------- summary, chart
async function loadSummary() {
  const s = await getJSON("dashboard/summary");
  state.heartbeatInterval = s.heartbeat_interval;
  const counts = $("counts");
  counts.replaceChildren();
  for (const [name, n] of Object.entries(s.workers)) {
    if (n) counts.append(el("span", "state s-" + name, name + " " + n));
  }
  drawWaits(s.waits);
  if (!$("transitions").children.length) {
    for (const doc of s.transitions) addTransition(doc);
  }
}
const reloadSummary = throttled(loadSummary, SUMMARY_MS);

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawWaits(rows) {
  const box = $("waits");
  if (!rows.length) { box.replaceChildren(el("p", "muted", "no jobs yet")); return; }
  const label = 150, width = 520, bar = 9, gap = 10;
  const most = Math.max(1, ...rows.flatMap((r) => [r.p90 || 0, r.oldest || 0]));
  const scale = (v) => Math.max(1, (v / most) * (width - label - 70));
  const height = rows.length * (3 * bar + gap) + 20;
  const chart = svg("svg", {width, height, role: "img",
                            "aria-label": "queue wait by device type"});
  rows.forEach((r, i) => {
    const y = i * (3 * bar + gap);
    chart.append(svg("text", {x: 0, y: y + 2 * bar}, r.device_type + " (" + r.waiting + ")"));
    const bars = [["p50", r.p50, "median"], ["p90", r.p90, "p90"],
                  ["oldest", r.oldest, "oldest waiting"]];
    bars.forEach(([cls, v, name], j) => {
      if (v === null) return;
      const rect = svg("rect", {class: cls, x: label, y: y + j * bar, height: bar - 1,
                                width: scale(v)});
      rect.append(svg("title", {}, r.device_type + " " + name + ": " + ago(v)));
      chart.append(rect, svg("text", {x: label + scale(v) + 4, y: y + j * bar + bar - 1},
                             ago(v)));
    });
  });
  chart.append(svg("text", {x: label, y: height - 4},
                    "dark: median, light: p90, orange: oldest waiting; (n) waiting now"));
  box.replaceChildren(chart);
}

// ---------------------------------------------------------------- transitions
function addTransition(doc) {
  const list = $("transitions");
  const what = doc.kind === "request"
    ? "request " + doc.id + (doc.worker_uuid ? " on " + doc.worker_uuid.slice(0, 8) : "")
    : "worker " + doc.uuid;
  const li = el("li", "", (doc.at || "").replace("T", " ").replace(/\.\d+/, "") + " " + what +
                " → ");
  li.append(el("span", "state s-" + doc.state, doc.state));
  if (doc.reason) li.append(" (" + doc.reason + ")");
  list.prepend(li);
  while (list.children.length > TRANSITIONS_SHOWN) list.lastChild.remove();
}

// ---------------------------------------------------------------- applying events
function queueEvent(doc) {
  state.pending.push(doc);
  if (state.frameAsked) return;
  state.frameAsked = true;
  // One batch per frame; a hidden tab gets no frames, so a timer stands in.
  const fallback = setTimeout(applyPending, 250);
  requestAnimationFrame(() => { clearTimeout(fallback); applyPending(); });
}

function applyPending() {
  if (!state.frameAsked) return;
  state.frameAsked = false;
  const batch = state.pending;
  state.pending = [];
  const changed = new Set();
  let queueMoved = false, pageMoved = false;
  for (const doc of batch) {
    if (doc.kind === "worker") {
      const row = state.workers.get(doc.uuid);
      const filter = $("state-filter").value;
      if (row) {
        row.doc.state = doc.state;
        row.doc.fail_reason = doc.state === "FAILED" ? doc.reason : null;
        changed.add(row);
        if (filter && doc.state !== filter) pageMoved = true;
      } else if ((!filter || doc.state === filter) && mayBelongHere(doc.uuid)) {
        pageMoved = true;
      }
    } else if (doc.kind === "request") {
      queueMoved = true;
      if (doc.state === "IN PROGRESS" && doc.worker_uuid) {
        const row = state.workers.get(doc.worker_uuid);
        if (row) { row.doc.job = doc.id; changed.add(row); }
      } else if (TERMINAL.has(doc.state) && doc.worker_uuid) {
        const row = state.workers.get(doc.worker_uuid);
        if (row && row.doc.job === doc.id) { row.doc.job = null; changed.add(row); }
      }
    } else {
      continue;
    }
    addTransition(doc);
  }
  for (const row of changed) {
    paintWorker(row);
    row.tr.classList.remove("flash");
    void row.tr.offsetWidth;      // restart the highlight
    row.tr.classList.add("flash");
  }
  if (pageMoved) reloadWorkers();
  if (queueMoved) reloadQueue();
  if (batch.length) reloadSummary();
}

// ---------------------------------------------------------------- the live feed
// Server-sent events read with fetch, not EventSource: EventSource cannot send an
// Authorization header, and a token in the URL or in a cookie would end up in logs or be
// sent by other pages' requests. fetch sends the same Bearer header as every other call.
async function follow() {
  const controller = new AbortController();
  state.stream = controller;
  let delay = 1000;
  while (state.stream === controller) {
    try {
      await readFeed(controller);
      delay = 1000;
    } catch (error) {
      if (error instanceof Unauthorised) { askForToken(error.message); return; }
      if (state.stream !== controller) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

async function readFeed(controller) {
  const response = await fetch("dashboard/events", {headers: authHeaders(),
                                                     cache: "no-store",
                                                     signal: controller.signal});
  if (response.status === 401) throw new Unauthorised((await response.json()).message);
  if (!response.ok) throw new Error("feed: " + response.status);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let watchdog = null;
  const arm = () => {        // nothing for three heartbeats: the server or the path is gone
    clearTimeout(watchdog);
    watchdog = setTimeout(() => controller.abort(), 3000 * state.heartbeatInterval + 2000);
  };
  arm();
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      arm();
      text += decoder.decode(value, {stream: true});
      let end;
      while ((end = text.indexOf("\n\n")) >= 0) {
        dispatch(text.slice(0, end));
        text = text.slice(end + 2);
      }
    }
  } finally {
    clearTimeout(watchdog);
  }
}

function dispatch(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;                       // a keep-alive comment
  const doc = JSON.parse(data);
  if (event === "hello") {
    state.heartbeatInterval = doc.heartbeat_interval;
    setLive(true);
    loadAll();                             // whatever happened while we were away
  } else {
    queueEvent(doc);
  }
}

function setLive(on) {
  const live = $("live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = on ? "live" : "reconnecting";
}

// ---------------------------------------------------------------- login, start
function loadAll() {
  return Promise.all([loadWorkers(), loadQueue(), loadSummary()]).catch(failed);
}

function askForToken(message) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  setLive(false);
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = state.token ? message || "" : "";
  $("token").focus();
}

function start() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = !state.token;
  follow();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("boruta-token", state.token);
  start();
});
$("logout").addEventListener("click", () => {
  state.token = "";
  sessionStorage.removeItem("boruta-token");
  askForToken("");
});
$("state-filter").addEventListener("change", () => {
  state.page.after = state.page.before = "";
  loadWorkers().catch(failed);
});
$("workers-next").addEventListener("click", () => {
  state.page.after = state.page.last; state.page.before = "";
  loadWorkers().catch(failed);
});
$("workers-prev").addEventListener("click", () => {
  state.page.before = state.page.first; state.page.after = "";
  loadWorkers().catch(failed);
});
setInterval(() => {               // ages tick on the rows shown (at most a page of each)
  for (const row of state.workers.values()) paintHeartbeat(row);
  const now = Date.now() / 1000;
  for (const tr of $("queue").tBodies[0].rows) {
    tr.querySelector("td.age").textContent = ago(Math.max(0, now - Number(tr.dataset.since)));
  }
}, 1000);
// Heartbeat ages come from the server: re-read the page now and then.
setInterval(() => { if (state.stream) { reloadWorkers(); reloadQueue(); } }, 30000);
start();

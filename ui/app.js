// The raftexample dashboard. It talks only to the member that served it,
// through the /v1 API (docs/API.md), with root-relative URLs, so it works
// the same over http and https. Every request goes through api(), which
// adds the bearer token once the user has logged in and shows the login
// form when the member answers 401.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000; // the cluster panel's refresh period
const HISTORY = 60; // samples kept per chart
const MAX_EVENTS = 200; // watch events kept in the tail
const TOKEN_KEY = "raftexample.token";

// ---- requests and authentication ----

let token = sessionStorage.getItem(TOKEN_KEY);
let loginWaiters = null; // resolved when the user has logged in

// api sends one request to this member, with the token if there is one. A
// 401 shows the login form and, once logged in, sends the request again.
async function api(path, opts = {}) {
  for (;;) {
    const headers = new Headers(opts.headers || {});
    if (token) headers.set("Authorization", "Bearer " + token);
    const resp = await fetch(path, { ...opts, headers, cache: "no-store" });
    if (resp.status !== 401) return resp;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    await login();
  }
}

// login shows the login form (once, however many requests wait for it)
// and resolves when a token has been obtained.
function login() {
  if (!loginWaiters) {
    loginWaiters = [];
    $("login-msg").textContent = "";
    if (!$("login").open) $("login").showModal();
  }
  return new Promise((resolve) => loginWaiters.push(resolve));
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = JSON.stringify({ name: $("login-name").value, password: $("login-password").value });
  let resp;
  try {
    resp = await fetch("/v1/auth/token", { method: "POST", body, headers: { "Content-Type": "application/json" } });
  } catch (e) {
    $("login-msg").textContent = "Cannot reach the member: " + e.message;
    return;
  }
  if (!resp.ok) {
    $("login-msg").textContent = await errorText(resp);
    return;
  }
  token = (await resp.json()).token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login-password").value = "";
  $("login").close();
  $("logout").hidden = false;
  const waiters = loginWaiters || [];
  loginWaiters = null;
  waiters.forEach((resolve) => resolve());
});

// The login form cannot be dismissed: nothing works without a token.
$("login").addEventListener("cancel", (ev) => ev.preventDefault());

$("logout").addEventListener("click", () => {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("logout").hidden = true;
  location.reload();
});
$("logout").hidden = !token;

// errorText is the message of a /v1 error answer.
async function errorText(resp) {
  const text = await resp.text();
  try {
    const e = JSON.parse(text);
    if (e.error) return `${resp.status}: ${e.error}`;
  } catch (_) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}: ${text}`.trim();
}

async function apiJSON(path, opts) {
  const resp = await api(path, opts);
  if (!resp.ok) throw new Error(await errorText(resp));
  return resp.status === 204 ? null : resp.json();
}

// confirmAction asks the user to confirm what a button is about to do.
function confirmAction(text) {
  const dlg = $("confirm");
  $("confirm-text").textContent = text;
  dlg.returnValue = "cancel";
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
  });
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

// present drops the nulls from a list of optional children.
function present(...items) {
  return items.filter((x) => x != null);
}

// ---- panels ----

function showPanel() {
  const data = location.hash === "#data";
  $("panel-cluster").hidden = data;
  $("panel-data").hidden = !data;
  $("tab-cluster").setAttribute("aria-current", data ? "false" : "page");
  $("tab-data").setAttribute("aria-current", data ? "page" : "false");
  if (data && !listed) listKeys();
}
window.addEventListener("hashchange", showPanel);

// ---- cluster panel ----

const cards = new Map(); // member ID -> {root, fields, charts, prev, series}

async function pollCluster() {
  const started = performance.now();
  try {
    const cs = await apiJSON("/v1/cluster/status");
    $("conn").textContent = "";
    $("conn").className = "";
    $("served-by").textContent = `served by member ${cs.id}`;
    renderCluster(cs);
  } catch (e) {
    $("conn").textContent = "Lost contact with the member serving this page: " + e.message;
    $("conn").className = "error";
  }
  setTimeout(pollCluster, Math.max(0, POLL_MS - (performance.now() - started)));
}

function renderCluster(cs) {
  const seen = new Set();
  for (const m of cs.members) {
    seen.add(m.id);
    let card = cards.get(m.id);
    if (!card) {
      card = newCard(m.id);
      cards.set(m.id, card);
    }
    updateCard(card, m, cs);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  // Cards in ID order.
  const box = $("members");
  [...cards.keys()].sort((a, b) => a - b).forEach((id) => box.append(cards.get(id).root));
}

const FIELDS = [
  ["peerURL", "Peer URL"], ["clientURL", "Client URL"], ["raftState", "Raft state"], ["term", "Term"],
  ["commitIndex", "Commit index"], ["appliedIndex", "Applied index"], ["lag", "Lag"], ["keys", "Keys"],
  ["version", "Version"],
];
const CHARTS = [
  ["writes", "Writes/s", "#2563eb"], ["reads", "Reads/s", "#059669"], ["fsync", "WAL fsync p99 (ms)", "#d97706"],
];

function newCard(id) {
  const title = el("h3", {}, `Member ${id}`);
  const badges = el("span", { class: "badges" });
  const dl = el("dl");
  const fields = {};
  for (const [key, label] of FIELDS) {
    fields[key] = el("dd");
    dl.append(el("dt", {}, label), fields[key]);
  }
  const charts = {};
  const chartBox = el("div", { class: "charts" });
  for (const [key, label, color] of CHARTS) {
    const value = el("span", { class: "chart-value" });
    const plot = el("div", { class: "chart", "aria-hidden": "true" });
    chartBox.append(el("div", { class: "chart-box" }, el("span", { class: "chart-label" }, label, " ", value), plot));
    charts[key] = { value, plot, color, u: null };
  }
  const actions = el("div", { class: "buttons" });
  const root = el("article", { class: "member-card", "data-member-id": String(id), "aria-label": `Member ${id}` },
    el("header", {}, title, badges), dl, chartBox, actions);
  $("members").append(root);
  return { id, root, badges, fields, charts, actions, prev: null, series: { t: [], writes: [], reads: [], fsync: [] } };
}

function updateCard(card, m, cs) {
  const st = m.status;
  const leader = m.id === cs.leader;
  card.root.classList.toggle("leader", leader);
  card.root.classList.toggle("learner", m.learner);
  card.root.classList.toggle("unreachable", !m.reachable);
  card.root.classList.toggle("self", m.id === cs.id);
  card.root.dataset.state = st ? st.raftState : "unreachable";
  card.badges.replaceChildren(...present(
    leader ? el("span", { class: "badge leader-badge" }, "leader") : null,
    m.learner ? el("span", { class: "badge" }, "learner") : null,
    !m.reachable ? el("span", { class: "badge down-badge", title: m.error || "" }, "unreachable") : null,
    m.id === cs.id ? el("span", { class: "badge" }, "this page") : null,
  ));
  const values = { peerURL: m.peerURL, lag: m.lag ?? "–" };
  for (const [key] of FIELDS) {
    const v = key in values ? values[key] : st ? st[key] : undefined;
    card.fields[key].textContent = v === undefined || v === "" ? "–" : String(v);
  }
  if (st) sample(card, st);
  else card.prev = null;
  renderActions(card, m, cs);
}

// sample adds one point to each chart: rates from the counters' change
// since the last poll (by the member's own clock, its uptime), and the WAL
// fsync p99 of the fsyncs in between, from the histogram's change.
function sample(card, st) {
  const prev = card.prev;
  card.prev = st;
  if (!prev || st.uptimeSeconds <= prev.uptimeSeconds) return; // first sample, or restarted
  const dt = st.uptimeSeconds - prev.uptimeSeconds;
  const s = card.series;
  s.t.push(Date.now() / 1000);
  s.writes.push((st.writesApplied - prev.writesApplied) / dt);
  s.reads.push((st.readsServed - prev.readsServed) / dt);
  s.fsync.push(fsyncP99(prev.walFsync, st.walFsync));
  for (const k of Object.keys(s)) if (s[k].length > HISTORY) s[k].shift();
  card.root.dataset.samples = String(s.t.length);
  for (const [key] of CHARTS) drawChart(card.charts[key], s.t, s[key]);
}

// fsyncP99 is the 99th percentile of the fsyncs between two histograms, in
// milliseconds (the upper bound of the bucket it falls in), or null if there
// were none.
function fsyncP99(a, b) {
  if (!a || !b) return null;
  const n = b.count - a.count;
  if (n <= 0) return null;
  for (let i = 0; i < b.bounds.length; i++) {
    if (b.counts[i] - (a.counts[i] || 0) >= 0.99 * n) return b.bounds[i] * 1000;
  }
  return b.bounds[b.bounds.length - 1] * 1000;
}

function drawChart(chart, t, ys) {
  const last = ys[ys.length - 1];
  chart.value.textContent = last == null ? "–" : last < 10 ? last.toFixed(1) : Math.round(last).toString();
  if (typeof uPlot === "undefined") return;
  if (!chart.u) {
    chart.u = new uPlot({
      width: 250, height: 56,
      legend: { show: false }, cursor: { show: false },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [{ show: false }, {
        size: 40, font: "10px system-ui", ticks: { show: false }, gap: 2,
        splits: (_u, _i, min, max) => [min, max], // just the range: these are sparklines
        values: (_u, vals) => vals.map((v) => (v < 10 ? +v.toFixed(1) : Math.round(v))),
      }],
      series: [{}, { stroke: chart.color, fill: chart.color + "22", width: 1.5, points: { show: false } }],
    }, [t, ys], chart.plot);
  } else {
    chart.u.setData([t, ys]);
  }
}

// renderActions offers what can be done to the member. The buttons are
// rebuilt only when the set changes, so a poll never pulls a button from
// under the pointer or the keyboard focus.
function renderActions(card, m, cs) {
  const wanted = [];
  if (!m.learner && m.id !== cs.leader && m.reachable) wanted.push("lead");
  if (m.learner) wanted.push("promote");
  wanted.push("remove");
  const sig = wanted.join("|");
  if (card.actions.dataset.sig === sig) return;
  card.actions.dataset.sig = sig;
  card.actions.replaceChildren(...wanted.map((what) => actionButton(m.id, m.peerURL, what)));
}

const ACTIONS = {
  lead: ["Make leader", (id) => `Move leadership to member ${id}?`,
    (id) => apiJSON("/v1/leader", { method: "POST", body: JSON.stringify({ id }) })],
  promote: ["Promote", (id) => `Promote learner ${id} to a voting member?`,
    (id) => apiJSON(`/v1/members/${id}/promote`, { method: "POST" })],
  remove: ["Remove", (id, url) => `Remove member ${id} (${url}) from the cluster? It stops once removed.`,
    (id) => apiJSON(`/v1/members/${id}`, { method: "DELETE" })],
};

function actionButton(id, peerURL, what) {
  const [label, question, run] = ACTIONS[what];
  const b = el("button", { type: "button", class: what === "remove" ? "danger" : "", "data-action": what }, label);
  b.addEventListener("click", async () => {
    if (!(await confirmAction(question(id, peerURL)))) return;
    clusterMessage(`${label} (member ${id}): working…`);
    try {
      await run(id);
      clusterMessage(`${label} (member ${id}): done.`);
    } catch (e) {
      clusterMessage(`${label} (member ${id}): ${e.message}`, true);
    }
  });
  return b;
}

function clusterMessage(text, error) {
  $("cluster-msg").textContent = text;
  $("cluster-msg").className = error ? "error" : "";
}

$("add-learner").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const peerURL = $("learner-url").value.trim();
  if (!(await confirmAction(`Add a learner at ${peerURL}? Start it with --join before promoting it.`))) return;
  try {
    const m = await apiJSON("/v1/members", { method: "POST", body: JSON.stringify({ peerURL, learner: true }) });
    clusterMessage(`Added learner ${m.id} at ${m.peerURL}.`);
    $("learner-url").value = "";
  } catch (e) {
    clusterMessage(`Add learner: ${e.message}`, true);
  }
});

// ---- data panel: key browser ----

let listed = false;
let keys = []; // [{key, rev}] of the current listing
let nextAfter = null; // where "Load more" continues, or null
let current = null; // the key in the editor: {key, rev, bytes} (rev 0: new)

function keyPath(key) {
  return "/v1/kv/" + encodeURIComponent(key);
}

async function listKeys(more) {
  listed = true;
  const prefix = $("prefix").value;
  const q = new URLSearchParams({ prefix, limit: "1000" });
  if (more && nextAfter != null) q.set("after", nextAfter);
  else keys = [];
  try {
    const page = await apiJSON("/v1/kv?" + q);
    const got = page.keys.map((k) => ({ key: k.key ?? "(binary key)", rev: k.rev, binary: k.key == null }));
    keys = keys.concat(got);
    nextAfter = page.more && got.length ? got[got.length - 1].key : null;
    $("more").hidden = nextAfter == null;
    $("list-info").textContent = `${keys.length} key${keys.length === 1 ? "" : "s"}${page.more ? " (more to load)" : ""} at revision ${page.rev}`;
    renderKeys();
  } catch (e) {
    $("list-info").textContent = "List: " + e.message;
  }
}

function renderKeys() {
  const term = $("search").value.toLowerCase();
  const shown = keys.filter((k) => k.key.toLowerCase().includes(term));
  const view = document.querySelector("input[name=view]:checked").value;
  const box = $("keys");
  box.replaceChildren(view === "tree" ? treeView(shown) : flatView(shown));
}

function keyButton(k, label) {
  const b = el("button", { type: "button", class: "key", "data-key": k.key, disabled: k.binary }, label);
  if (current && current.key === k.key) b.classList.add("selected");
  b.addEventListener("click", () => openKey(k.key));
  return b;
}

function flatView(list) {
  const ul = el("ul", { class: "flat" });
  for (const k of list) ul.append(el("li", {}, keyButton(k, k.key), el("span", { class: "muted" }, ` rev ${k.rev}`)));
  return ul;
}

// treeView groups keys by "/" into folders, as <details> elements.
function treeView(list) {
  const root = { dirs: new Map(), leaves: [] };
  for (const k of list) {
    const parts = k.key.split("/");
    let node = root;
    for (const part of parts.slice(0, -1)) {
      if (!node.dirs.has(part)) node.dirs.set(part, { dirs: new Map(), leaves: [] });
      node = node.dirs.get(part);
    }
    node.leaves.push({ k, name: parts[parts.length - 1] });
  }
  const build = (node) => {
    const ul = el("ul", { class: "tree" });
    for (const [name, child] of [...node.dirs].sort()) {
      const d = el("details", { open: true }, el("summary", {}, name + "/"), build(child));
      ul.append(el("li", {}, d));
    }
    for (const { k, name } of node.leaves) ul.append(el("li", {}, keyButton(k, name || "(empty)")));
    return ul;
  };
  return build(root);
}

$("browse").addEventListener("submit", (ev) => {
  ev.preventDefault();
  listKeys(false);
});
$("more").addEventListener("click", () => listKeys(true));
$("search").addEventListener("input", renderKeys);
document.querySelectorAll("input[name=view]").forEach((r) => r.addEventListener("change", renderKeys));

// ---- data panel: the editor ----

const utf8 = new TextDecoder("utf-8", { fatal: true });

function toHex(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");
}

function fromHex(text) {
  const clean = text.replace(/\s+/g, "");
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new Error("hex must be pairs of hex digits");
  return new Uint8Array(clean.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
}

// showValue writes bytes into the editor in the chosen format.
function showValue(bytes) {
  const format = document.querySelector("input[name=format]:checked").value;
  let text;
  if (format === "hex") {
    text = toHex(bytes);
  } else {
    try {
      text = utf8.decode(bytes);
    } catch (_) {
      document.querySelector("input[name=format][value=hex]").checked = true;
      editMessage("The value is not UTF-8 text: shown as hex.");
      $("value").value = toHex(bytes);
      return;
    }
    if (format === "json") {
      try {
        text = JSON.stringify(JSON.parse(text), null, 2);
      } catch (_) {
        editMessage("The value is not JSON: shown as text.");
        document.querySelector("input[name=format][value=text]").checked = true;
      }
    }
  }
  $("value").value = text;
}

// editorBytes reads the editor's value back in its format.
function editorBytes() {
  const format = document.querySelector("input[name=format]:checked").value;
  const text = $("value").value;
  if (format === "hex") return fromHex(text);
  if (format === "json") JSON.parse(text); // refuse what is not JSON
  return new TextEncoder().encode(text);
}

function editMessage(text, error) {
  $("edit-msg").textContent = text;
  $("edit-msg").className = error ? "error" : "";
}

async function openKey(key) {
  hideConflict();
  editMessage("");
  const resp = await api(keyPath(key));
  if (resp.status === 404) {
    editMessage(`Key ${key} no longer exists.`, true);
    return;
  }
  if (!resp.ok) {
    editMessage(await errorText(resp), true);
    return;
  }
  const bytes = new Uint8Array(await resp.arrayBuffer());
  current = { key, rev: revOf(resp), bytes };
  $("key").value = key;
  $("lease").value = resp.headers.get("X-Lease") || "";
  $("key").readOnly = true;
  $("rev").textContent = `revision ${current.rev}`;
  $("delete").disabled = false;
  showValue(bytes);
  document.querySelectorAll("#keys .key").forEach((b) => b.classList.toggle("selected", b.dataset.key === key));
}

function revOf(resp) {
  return Number((resp.headers.get("ETag") || "").replace(/"/g, "")) || 0;
}

$("new-key").addEventListener("click", () => {
  hideConflict();
  current = { key: "", rev: 0, bytes: new Uint8Array() };
  $("key").value = $("prefix").value;
  $("key").readOnly = false;
  $("rev").textContent = "new key";
  $("lease").value = "";
  $("value").value = "";
  $("delete").disabled = true;
  editMessage("");
  $("key").focus();
});

document.querySelectorAll("input[name=format]").forEach((r) =>
  r.addEventListener("change", () => current && showValue(current.bytes)));

// Save writes the editor's value only if the key is still at the revision
// loaded (If-Match), or, for a new key, only if it does not exist
// (If-None-Match: *). A 412 shows the current value and writes nothing.
$("edit").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!current) return;
  const key = $("key").value;
  let body;
  try {
    body = editorBytes();
  } catch (e) {
    editMessage("Not saved: " + e.message, true);
    return;
  }
  const cond = current.rev ? { "If-Match": `"${current.rev}"` } : { "If-None-Match": "*" };
  // The key keeps (or gets) the lease in the form: a PUT without ?lease
  // detaches it from the one it had.
  const lease = $("lease").value.trim();
  const query = lease ? "?lease=" + encodeURIComponent(lease) : "";
  const resp = await api(keyPath(key) + query, { method: "PUT", body, headers: cond });
  if (resp.status === 412) {
    await showConflict(key);
    return;
  }
  if (!resp.ok) {
    editMessage("Not saved: " + (await errorText(resp)), true);
    return;
  }
  current = { key, rev: revOf(resp), bytes: body };
  $("key").readOnly = true;
  $("rev").textContent = `revision ${current.rev}`;
  $("delete").disabled = false;
  hideConflict();
  editMessage(`Saved ${key} at revision ${current.rev}.`);
  listKeys(false);
});

$("delete").addEventListener("click", async () => {
  if (!current || !current.rev) return;
  const key = current.key;
  if (!(await confirmAction(`Delete key ${key} (revision ${current.rev})?`))) return;
  const resp = await api(keyPath(key), { method: "DELETE", headers: { "If-Match": `"${current.rev}"` } });
  if (resp.status === 412) {
    await showConflict(key);
    return;
  }
  if (!resp.ok) {
    editMessage("Not deleted: " + (await errorText(resp)), true);
    return;
  }
  editMessage(`Deleted ${key}.`);
  current = null;
  $("key").value = "";
  $("value").value = "";
  $("rev").textContent = "";
  listKeys(false);
});

// showConflict tells the user the key changed under them, with its value
// now; their edit stays in the editor, unsaved.
async function showConflict(key) {
  const resp = await api(keyPath(key));
  let text, value = "";
  if (resp.status === 404) {
    text = `Conflict: key ${key} was deleted since you loaded it (revision ${current.rev}). Nothing was written.`;
  } else {
    const rev = revOf(resp);
    const bytes = new Uint8Array(await resp.arrayBuffer());
    try { value = utf8.decode(bytes); } catch (_) { value = toHex(bytes); }
    text = current.rev
      ? `Conflict: key ${key} changed since you loaded revision ${current.rev}; it is now at revision ${rev}. Nothing was written.`
      : `Conflict: key ${key} already exists (revision ${rev}). Nothing was written.`;
  }
  $("conflict-text").textContent = text;
  $("conflict-value").textContent = value;
  $("conflict").hidden = false;
  editMessage("");
}

function hideConflict() {
  $("conflict").hidden = true;
}

$("conflict-reload").addEventListener("click", () => openKey($("key").value));

// ---- data panel: the watch tail ----

let watching = null; // the AbortController of the running watch

// The watch reads /v1/watch as a stream with fetch rather than
// EventSource, which cannot send the Authorization header. It resumes
// after the last revision seen when the stream breaks.
async function watch(prefix, ctl) {
  let last = null;
  while (!ctl.signal.aborted) {
    const q = new URLSearchParams({ prefix });
    if (last != null) q.set("rev", String(last));
    try {
      const resp = await api("/v1/watch?" + q, { signal: ctl.signal });
      if (resp.status === 410) {
        // The history was compacted past where this tail stopped: go on
        // from the oldest revision kept (events in between are lost).
        const e = await resp.json();
        $("watch-state").textContent = `missed events before revision ${e.compactRevision}; resuming`;
        last = e.compactRevision;
        continue;
      }
      if (!resp.ok) {
        $("watch-state").textContent = "Watch: " + (await errorText(resp));
        return;
      }
      $("watch-state").textContent = `watching ${prefix || "all keys"}`;
      last = await readEvents(resp.body, last, ctl);
    } catch (e) {
      if (ctl.signal.aborted) return;
      $("watch-state").textContent = "Watch interrupted, reconnecting: " + e.message;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// readEvents parses server-sent events from body until it ends, and
// returns the last revision seen.
async function readEvents(body, last, ctl) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || ctl.signal.aborted) return last;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      const ev = JSON.parse(data);
      if (ev.type === "cutoff") return ev.rev;
      last = ev.rev;
      addEvent(ev);
    }
  }
}

function addEvent(ev) {
  const key = ev.key ?? "(binary key)";
  const value = ev.type === "put" ? (ev.value ?? "(binary value)") : "";
  const li = el("li", { class: "event " + ev.type },
    el("span", { class: "event-rev" }, `#${ev.rev}`), " ",
    el("span", { class: "event-type" }, ev.type), " ",
    el("code", {}, key), value ? " = " : "", value ? el("code", {}, value.length > 200 ? value.slice(0, 200) + "…" : value) : null);
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

$("watch").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (watching) {
    watching.abort();
    watching = null;
    $("watch-toggle").textContent = "Start";
    $("watch-state").textContent = "stopped";
    return;
  }
  watching = new AbortController();
  $("watch-toggle").textContent = "Stop";
  $("events").replaceChildren();
  watch($("watch-prefix").value, watching);
});

// ---- leases and locks ----

const MAX_LEASE_DETAILS = 50; // leases whose keys are fetched, per refresh
const LEASE_POLL_MS = 2000;

// listLeases shows the leases (GET /v1/leases) with the keys on each
// (GET /v1/leases/{id}); locks are keys on leases, so they show there too.
// A member without leases answers 404, and the section says so.
async function listLeases() {
  try {
    const resp = await api("/v1/leases");
    if (!resp.ok) return;
    const leases = (await resp.json()).leases || [];
    const details = await Promise.all(leases.slice(0, MAX_LEASE_DETAILS).map((l) =>
      apiJSON(`/v1/leases/${l.id}`).catch(() => null)));
    $("leases-info").textContent = `${leases.length} lease${leases.length === 1 ? "" : "s"}`;
    $("leases").hidden = leases.length === 0;
    $("leases").tBodies[0].replaceChildren(...leases.map((l, i) => {
      const keys = details[i] ? details[i].keys || [] : null;
      return el("tr", { "data-lease": String(l.id) },
        el("td", {}, String(l.id)), el("td", {}, l.ttl), el("td", {}, l.remaining),
        el("td", {}, keys == null ? "…" : keys.length ? keys.join(", ") : "–"));
    }));
  } catch (_) { /* shown at the next refresh */ }
}

async function pollLeases() {
  if (!$("panel-data").hidden) await listLeases();
  setTimeout(pollLeases, LEASE_POLL_MS);
}

// ---- start ----

showPanel();
pollCluster();
pollLeases();

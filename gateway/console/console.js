// The operator console: plain DOM, no build step. Every value from the server is inserted
// with textContent (never as HTML). Every call is an ordinary operator route carrying the
// admin key, kept in this tab's sessionStorage only.
"use strict";

const KEY = "bookgen-console-key";
const POLL_MS = 4000;
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// -- DOM helpers ----------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function pill(text, tone) {
  return el("span", { class: "pill", "data-tone": tone, text });
}

const TONES = {
  delivered: "ok", enabled: "ok", failed: "bad", disabled: "bad",
  rate_limited: "warn", suppressed: "idle", pending: "idle",
};

function tone(status) {
  return TONES[status] || "idle";
}

function fill(tbody, rows, empty) {
  tbody.replaceChildren(...rows);
  empty.hidden = rows.length > 0;
  tbody.closest(".table-wrap").hidden = rows.length === 0;
}

function when(ms) {
  if (ms === null || ms === undefined) return el("span", { class: "muted", text: "—" });
  const date = new Date(ms);
  return el("time", { datetime: date.toISOString(), title: date.toString(), text: date.toLocaleString() });
}

function age(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function show(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

let toastTimer = null;
function toast(message) {
  const node = $("#toast");
  show(node, message);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, 5000);
}

function confirmAction(title, text, okLabel) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  $("#confirm-cancel").focus(); // the safe choice has the focus
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function showSecret(secret, title) {
  $("#secret-title").textContent = title;
  $("#secret-value").textContent = secret;
  $("#secret-dialog").showModal();
  $("#secret-done").focus();
}

// -- the API --------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const message = (data && (data.detail || data.error)) || `${response.status} ${response.statusText}`;
    if (response.status === 401 || response.status === 403) signOut(message);
    throw new ApiError(response.status, message, data);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

// -- sign in and out ------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const key = $("#admin-key").value.trim();
  if (!key) return show($("#login-error"), "Enter the admin API key.");
  sessionStorage.setItem(KEY, key);
  try {
    await api("GET", "/status");
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) {
      sessionStorage.removeItem(KEY);
      show($("#login-error"), err.message);
    }
    return;
  }
  $("#admin-key").value = "";
  start();
}

function signOut(reason) {
  sessionStorage.removeItem(KEY);
  stopPolling();
  $("#app").hidden = true;
  $("#login").hidden = false;
  show($("#login-error"), reason || "");
  $("#admin-key").focus();
}

// -- views ----------------------------------------------------------------------------------

const VIEWS = ["groups", "endpoints", "dead-letters", "replay", "log"];
const refreshers = {};
let pollTimer = null;
let polling = false;
let pollAgain = false; // asked for while a poll ran: run once more after it

function currentView() {
  const name = location.hash.slice(1);
  return VIEWS.includes(name) ? name : "groups";
}

function route() {
  const view = currentView();
  for (const section of $$(".view")) section.hidden = section.dataset.view !== view;
  for (const link of $$("#nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${$(`#nav a[data-view="${view}"]`).firstChild.textContent.trim()} · bookgen-events console`;
  poll();
}

async function poll() {
  if ($("#app").hidden) return;
  if (polling) { pollAgain = true; return; }
  polling = true;
  const live = $("#live");
  try {
    await refreshStatus();
    const refresh = refreshers[currentView()];
    if (refresh) await refresh();
    live.dataset.state = "live";
    live.textContent = `Live · ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    live.dataset.state = "error";
    live.textContent = `Not updating: ${err.message}`;
  } finally {
    polling = false;
    if (pollAgain) { pollAgain = false; poll(); }
  }
}

function start() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  show($("#login-error"), "");
  route();
  stopPolling();
  pollTimer = setInterval(poll, POLL_MS);
  $("#main").focus();
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
}

// Redraw only when the data changed: a redraw would drop a keyboard user's focus.
const drawn = {};
function changed(name, data) {
  const signature = JSON.stringify(data);
  if (drawn[name] === signature) return false;
  drawn[name] = signature;
  return true;
}

// -- groups ---------------------------------------------------------------------------------

async function refreshStatus() {
  const status = await api("GET", "/status");
  const deadTotal = Object.values(status.dead_letters).reduce((a, b) => a + b, 0);
  const badge = $("#dlq-badge");
  badge.textContent = String(deadTotal);
  badge.hidden = deadTotal === 0;
  badge.setAttribute("aria-label", `${deadTotal} dead letters`);
  drawChannels(Object.keys(status.dead_letters).sort());
  if (currentView() === "groups") drawGroups(status);
}

function drawChannels(channels) {
  const select = $("#dlq-channel");
  const have = Array.from(select.options).map((o) => o.value);
  if (JSON.stringify(have) === JSON.stringify(channels)) return;
  const chosen = select.value;
  select.replaceChildren(...channels.map((c) => el("option", { value: c, text: c })));
  if (channels.includes(chosen)) select.value = chosen;
}

function stat(label, value) {
  return el("div", { class: "stat" }, el("div", { class: "value", text: value }), el("div", { class: "label", text: label }));
}

function drawGroups(status) {
  const rows = [];
  // With several partitions, each partition's streams get their own rows (the totals are
  // in the cards); with one, the streams themselves.
  const streams = status.partitions
    ? status.partitions.flatMap((p) => [
        { ...p.events, label: `partition ${p.partition}` },
        { ...p.deliveries, label: `partition ${p.partition}` },
      ])
    : [status.events, status.deliveries];
  for (const stream of streams) {
    for (const g of stream.groups) {
      const consumers = g.consumers.map((c) => el("span", { class: "tag", title: `idle ${age(c.idle_ms)}`, text: `${c.name} (${c.pending})` }));
      const lagTone = g.lag === null ? "idle" : g.lag > 1000 ? "bad" : g.lag > 0 ? "warn" : "ok";
      rows.push(el("tr", { "data-group": g.group, "data-stream": stream.name },
        el("td", {}, el("span", { class: "mono", text: stream.name }),
          ...(stream.label ? [el("div", { class: "muted partition", text: stream.label })] : [])),
        el("td", {}, el("strong", { text: g.group })),
        el("td", { class: "num" }, pill(g.lag === null ? "?" : String(g.lag), lagTone)),
        el("td", { class: "num", text: String(g.pending) }),
        el("td", { class: "num", text: g.oldest_pending_age_ms === null ? "—" : age(g.oldest_pending_age_ms) }),
        el("td", {}, ...(consumers.length ? consumers : [el("span", { class: "muted", text: "none running" })])),
      ));
    }
  }
  fill($("#groups-table tbody"), rows, $("#groups-empty"));
  $("#stream-cards").replaceChildren(
    stat("events retained", String(status.events.length)),
    stat("outcomes retained", String(status.deliveries.length)),
    stat("dead letters", String(Object.values(status.dead_letters).reduce((a, b) => a + b, 0))),
    stat("Redis memory", status.redis.used_memory_human || "—"),
  );
  const channels = Object.keys(status.dead_letters).sort();
  $("#queues-table tbody").replaceChildren(...channels.map((c) => el("tr", {},
    el("td", { text: c }),
    el("td", { class: "num" }, pill(String(status.dead_letters[c]), status.dead_letters[c] ? "bad" : "ok")),
    el("td", { class: "num", text: String(status.scheduled[c] ?? 0) }),
  )));
}

// -- endpoints ------------------------------------------------------------------------------

let endpoints = [];
let attemptsFor = null;

function splitIds(text) {
  const ids = text.split(",").map((s) => s.trim()).filter(Boolean);
  return ids.length ? ids : null;
}

async function addEndpoint(event) {
  event.preventDefault();
  const error = $("#endpoint-error");
  const types = $$('input[name="ep-type"]:checked').map((box) => box.value);
  const body = { url: $("#ep-url").value.trim(), description: $("#ep-description").value.trim() };
  if (types.length) body.event_types = types;
  const jobs = splitIds($("#ep-jobs").value);
  const users = splitIds($("#ep-users").value);
  if (jobs) body.job_ids = jobs;
  if (users) body.user_ids = users;
  try {
    const created = await api("POST", "/endpoints", body);
    show(error, "");
    $("#endpoint-form").reset();
    $("#add-endpoint").open = false;
    toast(`Endpoint ${created.id} added`);
    await refreshEndpoints();
    showSecret(created.secret, "New endpoint's signing secret");
  } catch (err) {
    show(error, err.message);
  }
}

function endpointRow(e) {
  const state = e.disabled ? "disabled" : "enabled";
  const filters = [
    ...(e.job_ids || []).map((j) => `job ${j}`),
    ...(e.user_ids || []).map((u) => `user ${u}`),
  ];
  const act = (label, handler, cls) => el("button", { type: "button", class: `small ${cls || ""}`, "data-action": label.toLowerCase().replace(/\s+/g, "-"), "aria-label": `${label} ${e.url}`, onclick: handler, text: label });
  return el("tr", { "data-id": e.id, "data-state": state },
    el("td", {}, pill(state, tone(state)), e.disabled_reason ? el("div", { class: "muted", text: e.disabled_reason }) : null),
    el("td", { class: "url" }, el("div", { class: "mono", text: e.url }), e.description ? el("div", { class: "muted", text: e.description }) : null, el("div", { class: "muted mono", text: e.id })),
    el("td", {}, ...(e.event_types ? e.event_types.map((t) => el("span", { class: "tag", text: t })) : [el("span", { class: "muted", text: "all" })])),
    el("td", {}, ...(filters.length ? filters.map((f) => el("span", { class: "tag", text: f })) : [el("span", { class: "muted", text: "none" })])),
    el("td", {}, el("div", { class: "row-actions" },
      act("Attempts", () => openAttempts(e.id)),
      act(e.disabled ? "Enable" : "Disable", () => setDisabled(e, !e.disabled)),
      act("Rotate secret", () => rotate(e)),
    )),
  );
}

function drawEndpoints() {
  const text = $("#ep-filter").value.trim().toLowerCase();
  const state = $("#ep-state").value;
  const shown = endpoints.filter((e) =>
    (!state || (state === "disabled") === e.disabled) &&
    (!text || [e.url, e.description, e.id].some((v) => (v || "").toLowerCase().includes(text))));
  const empty = $("#endpoints-empty");
  empty.textContent = endpoints.length
    ? "No endpoint matches the filter."
    : "No endpoint registered. Add one above: every matching event is signed and delivered to it.";
  fill($("#endpoints-table tbody"), shown.map(endpointRow), empty);
  const select = $("#rp-endpoint");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "every recipient" }),
    ...endpoints.map((e) => el("option", { value: e.id, text: `${e.url} (${e.id})` })));
  select.value = endpoints.some((e) => e.id === chosen) ? chosen : "";
}

async function refreshEndpoints() {
  const data = await api("GET", "/endpoints");
  endpoints = data.endpoints;
  if (changed("endpoints", endpoints)) drawEndpoints();
  if (attemptsFor) await refreshAttempts();
}

async function setDisabled(e, disabled) {
  try {
    await api("PATCH", `/endpoints/${encodeURIComponent(e.id)}`, { disabled });
    toast(`${e.url} ${disabled ? "disabled" : "enabled"}`);
    await refreshEndpoints();
    $(`#endpoints-table tr[data-id="${CSS.escape(e.id)}"] [data-action="${disabled ? "enable" : "disable"}"]`)?.focus();
  } catch (err) {
    toast(err.message);
  }
}

async function rotate(e) {
  const ok = await confirmAction("Rotate the signing secret?",
    `A new secret signs ${e.url} at once; the old one keeps signing beside it for the grace period, so receivers can switch.`,
    "Rotate");
  if (!ok) return;
  try {
    const rotated = await api("POST", `/endpoints/${encodeURIComponent(e.id)}/rotate-secret`);
    showSecret(rotated.secret, "New signing secret");
    await refreshEndpoints();
  } catch (err) {
    toast(err.message);
  }
}

async function openAttempts(id) {
  attemptsFor = id;
  const e = endpoints.find((x) => x.id === id);
  $("#attempts-url").textContent = e ? `${e.url} · ${e.id}` : id;
  $("#attempts").hidden = false;
  drawn.attempts = null;
  await refreshAttempts();
  $("#attempts-title").setAttribute("tabindex", "-1");
  $("#attempts-title").focus();
}

async function refreshAttempts() {
  let data;
  try {
    data = await api("GET", `/endpoints/${encodeURIComponent(attemptsFor)}/attempts?limit=50`);
  } catch (err) {
    if (err.status === 404) { closeAttempts(); return; }
    throw err;
  }
  if (!changed("attempts", data)) return;
  const rows = data.attempts.map((a) => el("tr", { "data-event": a.event_id, "data-status": a.status },
    el("td", {}, when(a.at_ms)),
    el("td", {}, pill(a.status, tone(a.status)), a.final || a.status === "delivered" ? null : el("span", { class: "muted", text: " retrying" })),
    el("td", { class: "num", text: a.status_code ?? "—" }),
    el("td", { class: "num", text: a.duration_ms === null ? "—" : `${Math.round(a.duration_ms)} ms` }),
    el("td", { class: "num", text: a.attempt }),
    el("td", { class: "mono", text: a.event_id }),
    el("td", { text: a.error || "" }),
  ));
  fill($("#attempts-table tbody"), rows, $("#attempts-empty"));
}

function closeAttempts() {
  attemptsFor = null;
  $("#attempts").hidden = true;
}

async function recover(event) {
  event.preventDefault();
  const value = $("#recover-since").value;
  if (!value) return toast("Choose the time to recover from.");
  try {
    const result = await api("POST", `/endpoints/${encodeURIComponent(attemptsFor)}/recover`, { since: new Date(value).toISOString() });
    toast(`Redelivering ${result.redriven} dead letters${result.poison_skipped ? `, ${result.poison_skipped} poison skipped` : ""}`);
  } catch (err) {
    toast(err.message);
  }
}

// -- dead letters ---------------------------------------------------------------------------

async function refreshDeadLetters() {
  const channel = $("#dlq-channel").value;
  const data = await api("GET", `/dead-letters/${encodeURIComponent(channel)}?limit=200`);
  const stable = { ...data, dead_letters: data.dead_letters.map(({ age_s, ...rest }) => rest) };
  if (!changed("dead-letters", stable)) return;
  const open = new Set($$("#dlq-table details[open]").map((d) => d.dataset.id));
  $("#dlq-total").textContent = data.total > data.dead_letters.length
    ? `${data.dead_letters.length} newest of ${data.total}` : `${data.total} in all`;
  const rows = data.dead_letters.map((d) => {
    const payload = typeof d.event === "string" ? d.event : JSON.stringify(d.event, null, 2);
    return el("tr", { "data-dlq-id": d.dlq_id, "data-event": d.event_id },
      el("td", {}, when(d.at_ms)),
      el("td", { class: "url mono", text: d.recipient || "—" }),
      el("td", {}, el("details", { "data-id": d.dlq_id, open: open.has(d.dlq_id) },
        el("summary", { text: d.reason || "(no reason)" }),
        el("div", { class: "muted mono", text: `event ${d.event_id || "—"} · entry ${d.entry_id}` }),
        el("pre", { class: "payload", text: payload || "(no payload)" }))),
      el("td", { class: "num", text: d.attempts }),
      el("td", {}, el("div", { class: "row-actions" },
        d.poison ? pill("poison", "bad") : el("button", { type: "button", class: "small", "data-action": "redrive", "aria-label": `Redrive ${d.event_id}`, onclick: () => redrive([d.dlq_id]), text: "Redrive" }),
        el("button", { type: "button", class: "small danger", "data-action": "purge", "aria-label": `Purge ${d.event_id}`, onclick: () => purge([d.dlq_id]), text: "Purge…" }))),
    );
  });
  fill($("#dlq-table tbody"), rows, $("#dlq-empty"));
  $("#dlq-redrive-all").disabled = $("#dlq-purge-all").disabled = data.total === 0;
}

async function redrive(ids) {
  const channel = $("#dlq-channel").value;
  try {
    const result = await api("POST", `/dead-letters/${encodeURIComponent(channel)}/redrive`, ids ? { ids } : {});
    const poison = result.poison_skipped.length ? `; ${result.poison_skipped.length} poison entries left` : "";
    toast(`Redriven ${result.redriven} to ${channel}${poison}`);
    await poll();
  } catch (err) {
    toast(err.message);
  }
}

async function purge(ids) {
  const channel = $("#dlq-channel").value;
  const what = ids ? "this dead letter" : `every dead letter of ${channel}`;
  const ok = await confirmAction("Delete for good?", `Purge ${what}? It cannot be redriven afterwards.`, "Purge");
  if (!ok) return;
  try {
    const result = await api("POST", `/dead-letters/${encodeURIComponent(channel)}/purge`, ids ? { ids } : { all: true });
    toast(`Purged ${result.purged} dead letters`);
    await poll();
  } catch (err) {
    toast(err.message);
  }
}

// -- replay ---------------------------------------------------------------------------------

async function replay(dryRun) {
  const error = $("#replay-error");
  const body = { channel: $("#rp-channel").value, from: $("#rp-from").value.trim(), dry_run: dryRun };
  for (const [field, sel] of [["to", "#rp-to"], ["job_id", "#rp-job"], ["type", "#rp-type"], ["endpoint", "#rp-endpoint"]]) {
    const value = $(sel).value.trim();
    if (value) body[field] = value;
  }
  if (!body.from) return show(error, "from: give a stream id or an ISO time.");
  if (!dryRun) {
    const ok = await confirmAction("Replay this range?", `Redeliver the matching events to ${body.channel}. Receivers see the same event ids again.`, "Replay");
    if (!ok) return;
  }
  try {
    const r = await api("POST", "/replay", body);
    show(error, "");
    const notes = [r.no_recipient ? `${r.no_recipient} without a recipient` : "", r.skipped_poison ? `${r.skipped_poison} undecodable` : ""].filter(Boolean);
    show($("#replay-result"), `${r.matched} of ${r.scanned} events ${r.dry_run ? "would be redelivered" : "scheduled for redelivery"} to ${r.channel} (range ${r.start} … ${r.end})${notes.length ? `; ${notes.join(", ")} skipped` : ""}.`);
  } catch (err) {
    show(error, err.message);
  }
}

// -- the log --------------------------------------------------------------------------------

let logCursors = [null]; // the cursor of each page seen; the last is the current page's
let logNext = null;

function logFilters() {
  return {
    job_id: $("#log-job").value.trim(), user_id: $("#log-user").value.trim(),
    status: $("#log-status").value, channel: $("#log-channel").value,
  };
}

async function refreshLog() {
  const cursor = logCursors[logCursors.length - 1];
  let data;
  try {
    data = await api("GET", `/notifications${query({ ...logFilters(), limit: 25, cursor })}`);
  } catch (err) {
    show($("#log-error"), err.message);
    return;
  }
  show($("#log-error"), "");
  logNext = data.next_cursor;
  $("#log-prev").disabled = logCursors.length === 1;
  $("#log-next").disabled = !logNext;
  $("#log-page").textContent = `Page ${logCursors.length}`;
  if (!changed("log", data)) return;
  const rows = data.notifications.map((n) => el("tr", { "data-id": n.id, "data-status": n.status },
    el("td", {}, n.created_at ? when(Date.parse(n.created_at)) : "—"),
    el("td", {}, pill(n.status || "?", tone(n.status))),
    el("td", { text: n.delivery_method || "" }),
    el("td", { text: n.notification_type || "" }),
    el("td", { class: "url mono", text: n.recipient || "" }),
    el("td", { class: "mono", text: (n.notification_metadata && n.notification_metadata.job_id) || "" }),
    el("td", { class: "num", text: n.delivery_attempts ?? "" }),
    el("td", { text: n.error_message || "" }),
  ));
  fill($("#log-table tbody"), rows, $("#log-empty"));
}

// -- wiring ---------------------------------------------------------------------------------

refreshers.endpoints = refreshEndpoints;
refreshers["dead-letters"] = refreshDeadLetters;
refreshers.replay = async () => { if (!endpoints.length) await refreshEndpoints(); };
refreshers.log = refreshLog;

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#refresh").addEventListener("click", poll);
  $("#endpoint-form").addEventListener("submit", addEndpoint);
  $("#ep-filter").addEventListener("input", drawEndpoints);
  $("#ep-state").addEventListener("change", drawEndpoints);
  $("#attempts-close").addEventListener("click", closeAttempts);
  $("#recover-form").addEventListener("submit", recover);
  $("#dlq-channel").addEventListener("change", () => { drawn["dead-letters"] = null; poll(); });
  $("#dlq-redrive-all").addEventListener("click", () => redrive(null));
  $("#dlq-purge-all").addEventListener("click", () => purge(null));
  $("#replay-form").addEventListener("submit", (e) => { e.preventDefault(); replay(false); });
  $("#replay-dry").addEventListener("click", () => replay(true));
  $("#log-form").addEventListener("submit", (e) => { e.preventDefault(); logCursors = [null]; drawn.log = null; poll(); });
  $("#log-next").addEventListener("click", () => { if (logNext) { logCursors.push(logNext); poll(); } });
  $("#log-prev").addEventListener("click", () => { if (logCursors.length > 1) { logCursors.pop(); poll(); } });
  $("#secret-copy").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("#secret-value").textContent); toast("Copied"); } catch { toast("Select the secret and copy it"); }
  });
  $("#secret-dialog").addEventListener("close", () => { $("#secret-value").textContent = ""; });
  window.addEventListener("hashchange", route);
  if (sessionStorage.getItem(KEY)) start();
  else $("#admin-key").focus();
});

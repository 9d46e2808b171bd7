// Live job page: one WebSocket for the watched job, its progress bar, its state and its
// notifications. The first visit asks for the job's history (last_event_id=0-0); after a
// drop or a reload it resumes from the last stream id it saw, kept per job in
// sessionStorage, so nothing is missed and nothing is shown twice. Plain JS, no build step.
// Messages are untrusted: their text goes in with textContent, never as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const STREAM_ID = /^\d+-\d+$/;
  const MAX_SHOWN = 500; // list items kept in the page
  const MAX_SAVED = 200; // messages kept in sessionStorage to redraw the list after a reload
  const LABELS = {
    progress_update: "Progress",
    completion: "Completed",
    error_alert: "Error",
    status_change: "Status changed",
    admin_alert: "Admin alert",
  };
  const DONE = new Set(["completed", "complete", "done", "finished", "succeeded", "success"]);
  const FAILED = new Set(["failed", "failure", "error", "errored"]);
  const CANCELLED = new Set(["cancelled", "canceled", "aborted"]);
  const STATE_TEXT = {
    waiting: "Waiting", running: "Running", finished: "Finished", failed: "Failed", cancelled: "Cancelled",
  };

  const conn = { ws: null, token: "", retry: 500, timer: null, liveTimer: null };
  let job = null; // {id, lastId, state, pct, phase, outcome, lastError, historyGone, count, items}

  // ---- small helpers ------------------------------------------------------------------
  const text = (v) => (v === null || v === undefined ? "" : String(v).trim());
  const lower = (v) => text(v).toLowerCase();
  function el(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }
  function pctOf(v) {
    const n = Number(v);
    return Number.isFinite(n) ? Math.round(Math.max(0, Math.min(100, n)) * 10) / 10 : 0;
  }
  function isAfter(a, b) { // stream ids "ms-seq", compared as numbers
    const [am, as] = a.split("-").map(Number);
    const [bm, bs] = b.split("-").map(Number);
    return am !== bm ? am > bm : as > bs;
  }

  const clock = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
  const day = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
  function stamp(ts) {
    const node = el("time");
    // Microseconds are more than Date parses everywhere: keep milliseconds.
    const when = new Date(text(ts).replace(/(\.\d{3})\d+/, "$1"));
    if (Number.isNaN(when.getTime())) return node;
    node.dateTime = when.toISOString();
    const today = when.toDateString() === new Date().toDateString();
    node.textContent = (today ? "" : day.format(when) + ", ") + clock.format(when);
    node.title = full.format(when);
    return node;
  }

  // ---- per-job memory (sessionStorage: this tab only) ---------------------------------
  const jobKey = (id) => `bookgen-events:job:${id}`;
  const tokenKey = (id) => `bookgen-events:token:${id}`;
  function store(key, value) {
    try {
      if (value === null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, value);
    } catch { /* storage full or disabled: the page still works, a reload starts over */ }
  }
  function read(key) {
    try { return sessionStorage.getItem(key); } catch { return null; }
  }
  function restore(id) {
    try {
      const saved = JSON.parse(read(jobKey(id)));
      if (saved && saved.id === id && Array.isArray(saved.items)
          && (saved.lastId === null || STREAM_ID.test(saved.lastId))) return saved;
    } catch { /* unreadable: start over */ }
    return null;
  }
  let saveTimer = null;
  function save() { if (!saveTimer) saveTimer = setTimeout(saveNow, 300); }
  function saveNow() {
    clearTimeout(saveTimer);
    saveTimer = null;
    if (job) store(jobKey(job.id), JSON.stringify(job));
  }
  addEventListener("pagehide", saveNow);

  // ---- the job's state, derived from its events ---------------------------------------
  function settle(state, title, detail) {
    job.state = state;
    job.outcome = { title, detail: text(detail) };
    if (state === "finished") job.pct = 100;
  }
  function apply(msg) {
    const terminal = ["finished", "failed", "cancelled"].includes(job.state);
    switch (msg.type) {
      case "progress_update":
        job.pct = pctOf(msg.progress);
        job.phase = text(msg.phase) || text(msg.message);
        if (job.state === "waiting") job.state = "running";
        break;
      case "completion": {
        const status = lower(msg.status) || "completed";
        const who = [text(msg.character_name), msg.biography_id != null ? `biography #${msg.biography_id}` : ""]
          .filter(Boolean).join(" · ");
        if (FAILED.has(status)) settle("failed", "Failed", job.lastError || who);
        else if (CANCELLED.has(status)) settle("cancelled", "Cancelled", who);
        else settle("finished", "Finished", DONE.has(status) ? who : [who, status].filter(Boolean).join(" · "));
        break;
      }
      case "error_alert":
        job.lastError = text(msg.error);
        if (lower(msg.severity) === "critical") settle("failed", "Failed", msg.error);
        break;
      case "status_change": {
        const status = lower(msg.new_status);
        if (DONE.has(status)) {
          if (job.state !== "finished") settle("finished", "Finished", "");
        } else if (FAILED.has(status)) {
          if (job.state !== "failed") settle("failed", "Failed", job.lastError);
        } else if (CANCELLED.has(status)) {
          settle("cancelled", "Cancelled", job.lastError);
        } else if (status) { // back to a working status: e.g. a retried job
          job.state = "running";
          job.outcome = null;
        }
        break;
      }
      default:
        if (!terminal && job.state === "waiting" && msg.type !== "admin_alert") job.state = "running";
    }
  }

  // ---- drawing ------------------------------------------------------------------------
  function drawJob() {
    const box = $("job");
    box.hidden = false;
    box.dataset.state = job.state;
    $("job-name").textContent = job.id;
    $("job-state").dataset.state = job.state;
    $("job-state").textContent = STATE_TEXT[job.state] || job.state;
    const shown = String(job.pct);
    $("bar").style.width = shown + "%";
    $("percent").textContent = shown;
    $("phase").textContent = job.phase || "";
    const bar = $("progress");
    bar.setAttribute("aria-valuenow", shown);
    bar.setAttribute("aria-valuetext", `${shown}%${job.phase ? ", " + job.phase : ""}`);
    const outcome = $("outcome");
    outcome.hidden = !job.outcome;
    outcome.textContent = "";
    if (job.outcome) {
      outcome.append(el("span", "", job.outcome.title));
      if (job.outcome.detail) outcome.append(document.createTextNode(` — ${job.outcome.detail}`));
    }
    const note = $("history-note");
    note.hidden = !job.historyGone;
    note.textContent = job.historyGone === "gap"
      ? "Some events from while the page was disconnected are no longer available; showing events from here on."
      : "Earlier history is no longer available; showing events from here on.";
    // A background tab still tells how the job is doing.
    const headline = job.state === "running" ? `${shown}%` : STATE_TEXT[job.state] || job.state;
    document.title = `${headline} · job ${job.id} · BookGen`;
    drawCount();
  }
  function drawCount() {
    const n = job ? job.count : 0;
    $("count").textContent = n ? `${n} notification${n === 1 ? "" : "s"}` : "";
    $("empty").hidden = n > 0;
    $("empty").textContent = job
      ? `No notifications for job ${job.id} yet. They will appear here as they arrive.`
      : "Enter a job id above to watch its progress and notifications.";
  }

  function describe(msg) {
    const what = el("span", "what");
    const detail = (value) => { if (text(value)) what.append(el("span", "detail", text(value))); };
    switch (msg.type) {
      case "progress_update": {
        const phase = text(msg.phase);
        what.append(phase ? `${phase} · ${pctOf(msg.progress)}%` : `${pctOf(msg.progress)}%`);
        if (text(msg.message) !== phase) detail(msg.message);
        break;
      }
      case "completion": {
        const status = lower(msg.status) || "completed";
        what.append(text(msg.character_name) || "Biography ready");
        detail([msg.biography_id != null ? `Biography #${msg.biography_id}` : "",
          DONE.has(status) ? "" : `status: ${text(msg.status)}`].filter(Boolean).join(" · "));
        break;
      }
      case "error_alert": {
        const severity = lower(msg.severity) || "error";
        const badge = el("span", "sev", severity);
        badge.dataset.severity = severity;
        what.append(badge, text(msg.error));
        break;
      }
      case "status_change":
        what.append(text(msg.old_status)
          ? `${text(msg.old_status)} → ${text(msg.new_status)}`
          : `now ${text(msg.new_status)}`);
        break;
      case "admin_alert":
        what.append(text(msg.message));
        detail(msg.alert_type);
        break;
      default:
        what.append(text(msg.message) || text(msg.error) || text(msg.status));
    }
    return what;
  }
  function drawItem(msg) {
    const li = el("li");
    li.dataset.id = text(msg.id);
    li.dataset.type = text(msg.type);
    li.append(el("span", "kind", LABELS[msg.type] || text(msg.type) || "Event"), describe(msg), stamp(msg.timestamp));
    const feed = $("feed");
    feed.prepend(li);
    while (feed.childElementCount > MAX_SHOWN) feed.lastElementChild.remove();
  }

  // ---- connection ---------------------------------------------------------------------
  function setConn(state, words) {
    $("conn").dataset.state = state;
    $("status").textContent = words;
  }
  function problem(reason, hintParts) {
    $("problem").hidden = !reason;
    $("problem-reason").textContent = reason || "";
    const hint = $("problem-hint");
    hint.textContent = "";
    hint.hidden = !hintParts;
    for (const part of hintParts || []) hint.append(part);
  }

  function url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    // 0-0 on a first visit: the server sends the job's history first, then live events.
    const q = new URLSearchParams({ job_id: job.id, last_event_id: job.lastId || "0-0" });
    if (conn.token) q.set("token", conn.token);
    return `${proto}//${location.host}/ws/notifications?${q}`;
  }

  function connect() {
    clearTimeout(conn.timer);
    conn.timer = null;
    const ws = new WebSocket(url());
    conn.ws = ws;
    // A retry keeps saying "reconnecting" rather than flickering between the two.
    if ($("conn").dataset.state !== "reconnecting") {
      setConn("connecting", job.lastId ? "Resuming…" : "Connecting…");
    }
    const live = () => {
      clearTimeout(conn.liveTimer);
      conn.liveTimer = null;
      if (conn.ws !== ws || $("conn").dataset.state === "live") return;
      setConn("live", "Live");
      problem(null);
      conn.retry = 500;
    };
    // A refused connection is accepted and then closed at once: wait a moment before
    // calling it live, so the pill does not flash "Live" before "Refused".
    ws.onopen = () => { conn.liveTimer = setTimeout(live, 300); };
    ws.onmessage = (e) => {
      if (conn.ws !== ws) return;
      live();
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      if (!msg || typeof msg !== "object") return;
      if (msg.type === "resync_required") {
        job.historyGone = job.lastId ? "gap" : "start";
      } else {
        if (typeof msg.id === "string" && STREAM_ID.test(msg.id)) {
          if (job.lastId && !isAfter(msg.id, job.lastId)) return; // already shown
          job.lastId = msg.id;
        }
        apply(msg);
        job.count += 1;
        job.items.push(msg);
        if (job.items.length > MAX_SAVED) job.items.splice(0, job.items.length - MAX_SAVED);
        drawItem(msg);
      }
      drawJob();
      save();
    };
    ws.onclose = (e) => {
      if (conn.ws !== ws) return; // replaced by a newer connection
      clearTimeout(conn.liveTimer);
      conn.ws = null;
      if (e.code === 1008) return refused(e.reason || "no reason given");
      const why = { 1013: "the page fell behind", 1001: "the server is restarting" }[e.code] || "connection lost";
      const wait = conn.retry * (0.8 + Math.random() * 0.4);
      conn.retry = Math.min(conn.retry * 2, 8000);
      setConn("reconnecting", `Reconnecting (${why})…`);
      conn.timer = setTimeout(connect, wait);
    };
  }

  function refused(reason) {
    if (/^last_event_id/.test(reason) && job.lastId) { // a bad saved id: start over once
      job.lastId = null;
      return connect();
    }
    setConn("refused", "Refused");
    reason = reason.replace(/[.\s]+$/, "");
    if (/token/i.test(reason)) {
      store(tokenKey(job.id), null);
      $("token-field").hidden = false;
      // The hint below names this job; drop the server's generic one ("…: mint one with …").
      if (reason.includes("bookgen-events token")) reason = reason.split(":")[0];
      const cmd = el("code", "", `bookgen-events token --job-id ${job.id}`);
      problem(`Cannot watch job ${job.id}: ${reason}.`, [
        "Get a token with ", cmd, ", paste it into the Token field and press Watch.",
      ]);
      $("token").focus();
    } else {
      problem(`The server refused to stream job ${job.id}: ${reason}.`, null);
    }
  }

  function stop() {
    clearTimeout(conn.timer);
    clearTimeout(conn.liveTimer);
    conn.timer = null;
    if (conn.ws) {
      const old = conn.ws;
      conn.ws = null;
      old.close(1000);
    }
  }

  function watch(jobId, token) {
    stop();
    saveNow();
    conn.token = token;
    conn.retry = 500;
    store(tokenKey(jobId), token || null);
    job = restore(jobId) || {
      id: jobId, lastId: null, state: "waiting", pct: 0, phase: "", outcome: null,
      lastError: "", historyGone: null, count: 0, items: [],
    };
    $("feed").textContent = "";
    for (const msg of job.items) drawItem(msg);
    drawJob();
    problem(null);
    // The address names the job (so a reload or a bookmark finds it) but not the token.
    history.replaceState(null, "", `${location.pathname}?${new URLSearchParams({ job_id: jobId })}`);
    connect();
  }

  // ---- wiring -------------------------------------------------------------------------
  $("watch").addEventListener("submit", (e) => {
    e.preventDefault();
    const jobId = $("job-id").value.trim();
    if (jobId) watch(jobId, $("token").value.trim());
  });
  addEventListener("online", () => { if (conn.timer) connect(); });

  fetch("/health").then((r) => r.json()).then((health) => {
    if (health.websocket_auth === "none" && $("conn").dataset.state !== "refused") {
      $("token-field").hidden = true;
    }
  }).catch(() => {});

  const params = new URLSearchParams(location.search);
  const first = text(params.get("job_id"));
  if (first) {
    const token = text(params.get("token")) || read(tokenKey(first)) || "";
    $("job-id").value = first;
    $("token").value = token;
    watch(first, token);
  } else {
    drawCount();
  }
})();

// Live job page: one WebSocket, progress bar, notification list; reconnects with
// last_event_id so nothing is missed across a drop. Plain JS, no build step.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { ws: null, jobId: null, token: "", lastId: null, retry: 250, timer: null };

  fetch("/health").then((r) => r.json()).then((h) => {
    $("token-field").hidden = h.websocket_auth === "none";
  }).catch(() => {});

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ job_id: state.jobId });
    if (state.token) q.set("token", state.token);
    if (state.lastId) q.set("last_event_id", state.lastId);
    return `${proto}//${location.host}/ws/notifications?${q}`;
  }

  function show(msg) {
    if (msg.type === "progress_update") {
      const pct = Math.max(0, Math.min(100, Number(msg.progress) || 0));
      $("bar").style.width = pct + "%";
      $("percent").textContent = String(pct);
      $("phase").textContent = msg.phase || "";
    } else if (msg.type === "completion") {
      $("bar").style.width = "100%";
      $("percent").textContent = "100";
    }
    const li = document.createElement("li");
    const b = document.createElement("b");
    b.textContent = msg.type;
    li.appendChild(b);
    const detail = msg.phase || msg.message || msg.error || msg.new_status || msg.status || "";
    li.appendChild(document.createTextNode(`${detail} ${msg.timestamp || ""}`));
    li.dataset.id = msg.id || "";
    $("feed").prepend(li);
  }

  function connect() {
    clearTimeout(state.timer);
    const ws = new WebSocket(url());
    state.ws = ws;
    setStatus("connecting…");
    ws.onopen = () => { setStatus("live"); state.retry = 250; };
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === "resync_required") {
        setStatus("some history was trimmed away; showing live events");
        return;
      }
      if (msg.id) state.lastId = msg.id;
      show(msg);
    };
    ws.onclose = (e) => {
      if (state.ws !== ws) return; // replaced by a newer connection
      if (e.code === 1008) { setStatus(`refused: ${e.reason}`, true); return; }
      setStatus(`disconnected (${e.code}); reconnecting…`);
      state.timer = setTimeout(connect, state.retry);
      state.retry = Math.min(state.retry * 2, 5000);
    };
  }

  $("watch").addEventListener("submit", (e) => {
    e.preventDefault();
    state.jobId = $("job-id").value.trim();
    state.token = $("token").value.trim();
    state.lastId = null;
    $("feed").textContent = "";
    $("bar").style.width = "0";
    if (state.ws) { const old = state.ws; state.ws = null; old.close(1000); }
    if (state.jobId) connect();
  });
})();

"use strict";
// The dashboard page: polls /api/dashboard and redraws each panel. A panel is one function
// (document, failures) -> HTML; adding one (priorities, queues...) is one more entry in PANELS.

const POLL_MS = 1000;
const openDetails = new Set();  // tracebacks the reader expanded, kept open across redraws

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function num(value, digits = 0) { return Number(value ?? 0).toFixed(digits); }
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

function workersPanel(doc) {
  const rows = doc.workers.map((w) => `<tr data-worker="${esc(w.name)}">
    <td>${esc(w.name)}</td><td>${esc(w.address)}</td>
    <td class="state-${esc(w.state)}">${esc(w.state)}</td>
    <td class="num">${w.busy}/${w.slots}</td><td class="num">${w.done}</td><td class="num">${w.failed}</td>
    <td class="num">${num(w.mean_ms, 1)}</td><td class="num">${num(w.cpu_percent)}</td>
    <td class="num">${num(w.rss_mb)} MB</td><td class="num">${duration(w.uptime_s)}</td>
    <td>${esc(w.services.join(","))}</td><td>${esc(w.tags.join(",") || "-")}</td>
    <td class="tasks" title="${esc((w.tasks || []).join(", "))}">${(w.tasks || []).length} tasks</td></tr>`);
  return `<section id="workers"><h2>Workers (${doc.workers.length})</h2>
    <table><thead><tr><th>name</th><th>address</th><th>state</th><th class="num">slots</th>
    <th class="num">done</th><th class="num">failed</th><th class="num">mean ms</th><th class="num">CPU %</th>
    <th class="num">memory</th><th class="num">uptime</th><th>services</th><th>tags</th><th>offers</th></tr></thead>
    <tbody>${rows.join("") || '<tr><td colspan="13" class="muted">no workers registered</td></tr>'}</tbody></table></section>`;
}

function failureList(job, failures) {
  const list = failures[job.id] || [];
  if (!list.length) return "";
  const items = list.slice().reverse().map((f) => {
    const key = `${job.id}/${f.id}`;
    return `<details data-key="${esc(key)}"${openDetails.has(key) ? " open" : ""}>
      <summary><span class="err">${esc(f.type)}</span>: ${esc(f.message)} <span class="muted">— ${esc(f.id)}
      (${esc(f.call)}) on ${esc(f.worker || "?")}, ${f.attempts} attempt(s)</span></summary>
      <pre class="traceback">${esc(f.traceback || "(no traceback)")}</pre></details>`;
  });
  const more = job.failed > list.length ? `<div class="muted">showing the last ${list.length} of ${job.failed} failures</div>` : "";
  return `<div class="failures">${items.join("")}${more}</div>`;
}

function jobsPanel(doc, failures) {
  const jobs = doc.jobs.map((j) => {
    const total = Math.max(1, j.total || 0), pct = (n) => (100 * (n || 0)) / total;
    const ok = j.ok ?? (j.done - j.failed);
    const eta = j.state === "running" ? ` · ETA ${duration(j.eta_s)}` : "";
    return `<div class="job" data-job="${esc(j.id || j.name)}">
      <div class="job-head"><span class="job-name">${esc(j.name)}</span>
      <span class="state-${esc(j.state)}">${esc(j.state)}</span>
      <span class="progress-text">${j.done}/${j.total} done</span>
      <span>ok ${ok} · failed ${j.failed} · skipped ${j.skipped ?? 0} · cancelled ${j.cancelled ?? 0} · retried ${j.retried ?? 0}</span>
      <span class="muted">${num(j.rate, 1)} tasks/s${eta}</span></div>
      <div class="bar" title="${num(pct(j.done), 1)}%"><span class="ok" style="width:${pct(ok)}%"></span>
      <span class="failed" style="width:${pct(j.failed)}%"></span><span class="skipped" style="width:${pct(j.skipped)}%"></span></div>
      ${failureList(j, failures)}</div>`;
  });
  return `<section id="jobs"><h2>Jobs (${doc.jobs.length})</h2>${jobs.join("") || '<div class="muted">no running or recent jobs</div>'}</section>`;
}

function schedulesPanel(doc) {
  const schedules = doc.schedules || [];
  // A cron read in another zone than UTC shows its next tick on its own wall clock too.
  const inZone = (s) => (s.next_fire_local && s.timezone ? ` (${s.next_fire_local.slice(11, 16)} ${s.timezone})` : "");
  const rows = schedules.map((s) => `<tr><td>${esc(s.name)}</td><td>${esc((s.next_fire || "-") + inZone(s))}</td>
    <td>${esc(s.last_fire || "-")}</td><td>${esc(s.last_status || "-")}</td><td>${esc(s.leader || "-")}</td></tr>`);
  return `<section id="schedules"><h2>Schedules (${schedules.length})</h2><table><thead><tr><th>name</th>
    <th>next tick</th><th>last tick</th><th>last status</th><th>scheduler</th></tr></thead>
    <tbody>${rows.join("") || '<tr><td colspan="5" class="muted">no scheduler running</td></tr>'}</tbody></table></section>`;
}

const PANELS = [workersPanel, jobsPanel, schedulesPanel];

function draw(data) {
  const doc = data.status;
  const ns = document.getElementById("nameserver");
  ns.textContent = `name server ${doc.nameserver.address} ${doc.nameserver.reachable ? "reachable" : "unreachable"}`;
  ns.className = `pill ${doc.nameserver.reachable ? "ok" : "bad"}`;
  document.getElementById("freshness").textContent =
    data.age_s === null ? "waiting for the first round…" : `data ${num(data.age_s, 1)} s old`;
  document.getElementById("panels").innerHTML = PANELS.map((panel) => panel(doc, data.failures || {})).join("");
}

document.addEventListener("toggle", (event) => {
  const key = event.target.dataset && event.target.dataset.key;
  if (key) (event.target.open ? openDetails.add(key) : openDetails.delete(key));
}, true);

async function poll() {
  try {
    const response = await fetch("/api/dashboard", {credentials: "same-origin", cache: "no-store"});
    if (response.ok) draw(await response.json());
    else document.getElementById("freshness").textContent = `dashboard answered ${response.status}`;
  } catch (err) {
    document.getElementById("freshness").textContent = "dashboard unreachable";
  }
  setTimeout(poll, POLL_MS);
}
poll();

"use strict";
// The dashboard page: polls /api/dashboard and redraws each panel. A panel is one function
// (document, failures) -> HTML; adding one (priorities, queues...) is one more entry in PANELS.

const POLL_MS = 1000;
const openDetails = new Set();  // tracebacks the reader expanded, kept open across redraws
const TOKEN_KEY = "pyrocluster_token";
let role = "viewer";  // what /api/dashboard says the visitor may do

// /?token=<role token> comes back as /#token=<token>: the fragment never reaches a server. The page
// keeps it for this tab and sends it in the header of its actions (the cookie alone may not act).
if (location.hash.startsWith("#token=")) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice(7)));
  history.replaceState(null, "", location.pathname);
}
function canOperate() { return role === "operator" || role === "secret"; }
function button(kind, name, action) {
  return canOperate() ? `<button type="button" data-kind="${kind}" data-name="${esc(name)}" data-action="${action}">${action}</button>` : "";
}

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function num(value, digits = 0) { return Number(value ?? 0).toFixed(digits); }
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

function resourcesText(resources) {
  const entries = Object.entries(resources || {});
  if (!entries.length) return "-";
  return entries.map(([name, held]) => name === "memory"
    ? `${name} ${num(held.used / 2 ** 30, 1)}/${num(held.total / 2 ** 30, 1)} GiB`
    : `${name} ${held.used}/${held.total}`).join(", ");
}

function workersPanel(doc) {
  const rows = doc.workers.map((w) => `<tr data-worker="${esc(w.name)}">
    <td>${esc(w.name)}</td><td>${esc(w.address)}</td>
    <td class="state-${esc(w.state)}">${esc(w.state)}</td>
    <td class="num">${w.busy}/${w.slots}</td><td class="num">${w.done}</td><td class="num">${w.failed}</td>
    <td class="num">${num(w.mean_ms, 1)}</td><td class="num">${num(w.cpu_percent)}</td>
    <td class="num">${num(w.rss_mb)} MB</td><td class="num">${duration(w.uptime_s)}</td>
    <td>${esc(w.services.join(","))}</td><td>${esc(w.tags.join(",") || "-")}</td>
    <td class="tasks" title="${esc((w.tasks || []).join(", "))}">${(w.tasks || []).length} tasks</td>
    <td class="resources">${esc(resourcesText(w.resources))}</td>
    <td>${button("workers", w.name, w.state === "draining" ? "undrain" : "drain")}</td></tr>`);
  return `<section id="workers"><h2>Workers (${doc.workers.length})</h2>
    <table><thead><tr><th>name</th><th>address</th><th>state</th><th class="num">slots</th>
    <th class="num">done</th><th class="num">failed</th><th class="num">mean ms</th><th class="num">CPU %</th>
    <th class="num">memory</th><th class="num">uptime</th><th>services</th><th>tags</th><th>offers</th>
    <th>resources (used/total)</th><th></th></tr></thead>
    <tbody>${rows.join("") || '<tr><td colspan="15" class="muted">no workers registered</td></tr>'}</tbody></table></section>`;
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

function runsText(j) {
  const runs = Object.entries(j.runs || {}), total = runs.reduce((n, [, k]) => n + k, 0);
  return total > 1 ? ` · ${total} runs (${runs.map(([state, k]) => `${k} ${state}`).join(", ")})` : "";
}

// The server lists the jobs as `status` does (listed_jobs.py): running and lost ones, then the
// latest finished run of each job name with its runs by state, and a last {more: N} row.
function jobsPanel(doc, failures, data) {
  const listed = data.jobs || [];
  const more = listed.filter((j) => j.more).map((j) => `<div class="muted more">${j.more} more finished job(s)</div>`);
  const jobs = listed.filter((j) => !j.more).map((j) => {
    const total = Math.max(1, j.total || 0), pct = (n) => (100 * (n || 0)) / total;
    const ok = j.ok ?? (j.done - j.failed);
    const eta = j.state === "running" ? ` · ETA ${duration(j.eta_s)}` : "";
    return `<div class="job" data-job="${esc(j.id || j.name)}">
      <div class="job-head"><span class="job-name">${esc(j.name)}</span>
      <span class="state-${esc(j.state)}">${esc(j.state)}</span>
      <span class="progress-text">${j.done}/${j.total} done</span>
      <span>ok ${ok} · failed ${j.failed} · skipped ${j.skipped ?? 0} · cancelled ${j.cancelled ?? 0} · retried ${j.retried ?? 0}</span>
      <span class="muted">${num(j.rate, 1)} tasks/s${eta}${esc(runsText(j))}</span>
      ${j.state === "running" ? button("jobs", j.id || j.name, "cancel") : ""}</div>
      <div class="bar" title="${num(pct(j.done), 1)}%"><span class="ok" style="width:${pct(ok)}%"></span>
      <span class="failed" style="width:${pct(j.failed)}%"></span><span class="skipped" style="width:${pct(j.skipped)}%"></span></div>
      ${j.graph ? graphSvg(j.graph) : ""}${failureList(j, failures)}</div>`;
  });
  return `<section id="jobs"><h2>Jobs (${jobs.length})</h2>${jobs.join("") || '<div class="muted">no running or recent jobs</div>'}${more.join("")}</section>`;
}

function schedulesPanel(doc) {
  const schedules = doc.schedules || [];
  // A cron read in another zone than UTC shows its next tick on its own wall clock too.
  const inZone = (s) => (s.next_fire_local && s.timezone ? ` (${s.next_fire_local.slice(11, 16)} ${s.timezone})` : "");
  const rows = schedules.map((s) => `<tr data-schedule="${esc(s.name)}"><td>${esc(s.name)}</td>
    <td class="state-${s.paused ? "paused" : "ready"}">${s.paused ? "paused" : "active"}</td><td>${esc((s.next_fire || "-") + inZone(s))}</td>
    <td>${esc(s.last_fire || "-")}</td><td>${esc(s.last_status || "-")}</td><td>${esc(s.leader || "-")}</td>
    <td>${button("schedules", s.name, s.paused ? "resume" : "pause")}</td></tr>`);
  return `<section id="schedules"><h2>Schedules (${schedules.length})</h2><table><thead><tr><th>name</th><th>state</th>
    <th>next tick</th><th>last tick</th><th>last status</th><th>scheduler</th><th></th></tr></thead>
    <tbody>${rows.join("") || '<tr><td colspan="7" class="muted">no scheduler running</td></tr>'}</tbody></table></section>`;
}

// --- charts and the workflow graph: SVG drawn here, no library --------------------------------

function polyline(values, width, height, top) {
  const step = width / Math.max(1, values.length - 1);
  return values.map((v, i) => `${(i * step).toFixed(1)},${(height - (height * v) / top).toFixed(1)}`).join(" ");
}

function throughputChart(series) {
  if (!series || !series.rate) return "";
  const w = 600, h = 120, top = Math.max(1, ...series.rate, ...series.failures);
  const now = series.rate.length ? series.rate[series.rate.length - 1] : 0;
  return `<figure class="chart" id="throughput-chart"><figcaption>tasks/s, last 15 minutes (now ${num(now, 1)}/s;
    peak ${num(top, 1)}/s)</figcaption><svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img"
    aria-label="throughput and failures"><line x1="0" y1="${h}" x2="${w}" y2="${h}" class="axis"/>
    <polyline class="rate" fill="none" points="${polyline(series.rate, w, h, top)}"/>
    <polyline class="failures" fill="none" points="${polyline(series.failures, w, h, top)}"/>
    <text x="2" y="12" class="label">${num(top, 1)}/s</text><text x="2" y="${h - 3}" class="label">-15 min</text>
    <text x="${w - 30}" y="${h - 3}" class="label">now</text></svg>
    <span class="legend rate">■ finished</span> <span class="legend failures">■ failed</span></figure>`;
}

function durationChart(rows) {
  if (!rows || !rows.length) return "";
  const w = 600, barH = 14, top = Math.max(1, ...rows.map((r) => r.p95_ms));
  const bars = rows.map((r, i) => {
    const y = i * (barH + 6);
    return `<g class="task" data-task="${esc(r.task)}"><text x="0" y="${y + 11}" class="label">${esc(r.task)}</text>
      <rect x="160" y="${y}" width="${(380 * r.p95_ms) / top}" height="${barH}" class="p95"/>
      <rect x="160" y="${y + 3}" width="${(380 * r.p50_ms) / top}" height="${barH - 6}" class="p50"/>
      <text x="${w - 55}" y="${y + 11}" class="label">${num(r.p95_ms, 1)} ms</text></g>`;
  });
  const h = rows.length * (barH + 6);
  return `<figure class="chart" id="durations-chart"><figcaption>task duration: p50 (dark) and p95, ms</figcaption>
    <svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="task durations">${bars.join("")}</svg></figure>`;
}

function chartsPanel(doc, failures, data) {
  return `<section id="charts"><h2>Throughput and durations</h2>${throughputChart(data.throughput)}${durationChart(data.durations)}</section>`;
}

function graphSvg(graph) {
  // columns by layer, rows by order within the layer; a map is one node with its counts
  const colW = 190, rowH = 54, boxW = 160, boxH = 40, byLayer = {}, at = {};
  graph.nodes.forEach((n) => { (byLayer[n.layer] = byLayer[n.layer] || []).push(n); });
  Object.values(byLayer).forEach((column) => column.forEach((n, i) => { at[n.id] = [n.layer * colW + 10, i * rowH + 10]; }));
  const width = (Math.max(0, ...graph.nodes.map((n) => n.layer)) + 1) * colW + 10;
  const height = Math.max(...Object.values(byLayer).map((c) => c.length)) * rowH + 10;
  const edges = graph.edges.map(([a, b]) => {
    const [x1, y1] = at[a], [x2, y2] = at[b];
    return `<line x1="${x1 + boxW}" y1="${y1 + boxH / 2}" x2="${x2}" y2="${y2 + boxH / 2}" class="edge"/>`;
  });
  const nodes = graph.nodes.map((n) => {
    const [x, y] = at[n.id], finished = n.ok + n.failed + n.skipped + n.cancelled;
    const counts = n.map ? `${finished}/${n.total ?? "?"} · ok ${n.ok} · failed ${n.failed}` : n.state;
    return `<g class="node state-${esc(n.state)}" data-node="${esc(n.id)}"><rect x="${x}" y="${y}" width="${boxW}" height="${boxH}" rx="6"/>
      <text x="${x + 8}" y="${y + 16}" class="node-id">${esc(n.id)}${n.map ? " (map)" : ""}</text>
      <text x="${x + 8}" y="${y + 32}" class="node-counts">${esc(counts)}</text></g>`;
  });
  return `<svg class="workflow" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img"
    aria-label="workflow graph">${edges.join("")}${nodes.join("")}</svg>`;
}

const PANELS = [chartsPanel, workersPanel, jobsPanel, schedulesPanel];

function draw(data) {
  const doc = data.status;
  const ns = document.getElementById("nameserver");
  ns.textContent = `name server ${doc.nameserver.address} ${doc.nameserver.reachable ? "reachable" : "unreachable"}`;
  ns.className = `pill ${doc.nameserver.reachable ? "ok" : "bad"}`;
  document.getElementById("freshness").textContent =
    data.age_s === null ? "waiting for the first round…" : `data ${num(data.age_s, 1)} s old`;
  role = data.role || "viewer";
  document.getElementById("you").textContent = data.you ? `${data.you} (${role})` : "";
  document.getElementById("panels").innerHTML = PANELS.map((panel) => panel(doc, data.failures || {}, data)).join("");
}

// Why the dashboard refused: the "error" of a JSON body, else the text (the token gate's refusals
// are plain text), prefixed with the status unless the text starts with it.
async function refusal(response) {
  const text = (await response.text().catch(() => "")).trim();
  let reason = text;
  try { reason = JSON.parse(text).error ?? text; } catch (err) { /* plain text */ }
  return reason.startsWith(String(response.status)) ? reason : `${response.status} ${reason}`.trim();
}

async function act(kind, name, action) {
  const headers = {"X-Requested-By": "pyrocluster"};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const notice = document.getElementById("notice");
  try {
    const response = await fetch(`/api/${kind}/${encodeURIComponent(name)}/${action}`,
      {method: "POST", headers, credentials: "same-origin", cache: "no-store"});
    notice.textContent = `${action} ${name}: ${response.ok ? "done" : await refusal(response)}`;
    notice.className = response.ok ? "ok" : "bad";
  } catch (err) {
    notice.textContent = `${action} ${name}: dashboard unreachable`;
    notice.className = "bad";
  }
}

document.addEventListener("click", (event) => {
  const target = event.target.closest && event.target.closest("button[data-action]");
  if (target) act(target.dataset.kind, target.dataset.name, target.dataset.action);
});

document.addEventListener("toggle", (event) => {
  const key = event.target.dataset && event.target.dataset.key;
  if (key) (event.target.open ? openDetails.add(key) : openDetails.delete(key));
}, true);

async function poll() {
  try {
    const response = await fetch("/api/dashboard", {credentials: "same-origin", cache: "no-store"});
    if (response.ok) draw(await response.json());
    else document.getElementById("freshness").textContent = `dashboard answered ${await refusal(response)}`;
  } catch (err) {
    document.getElementById("freshness").textContent = "dashboard unreachable";
  }
  setTimeout(poll, POLL_MS);
}
poll();

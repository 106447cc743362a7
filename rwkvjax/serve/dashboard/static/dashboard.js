// The dashboard page: polls api/metrics (new rows of metrics.jsonl) every POLL_MS and api/run (checkpoint
// summary, named states) every RUN_MS, and redraws what changed. Text from the run goes in as textContent.
(() => {
"use strict";

const POLL_MS = 500;
const RUN_MS = 3000;
const {StepChart, HistogramChart, rate, countOr, fmt} = window.Charts;
const KEY = new URLSearchParams(location.search).get("key");

const SPECS = {
  loss: {series: [{key: "loss", label: "loss"}]},
  bpb: {series: [
    {key: "live_bits_per_byte", label: "live windows, before the update"},
    {key: "bits_per_byte", label: "batch (live + replay)"},
    {key: "frozen_live_bpb", label: "live windows, frozen model"},
    {key: "memory_live_bpb", label: "live windows, model + session memory"},
    {key: "memory_global_live_bpb", label: "live windows, model + the run's global memory"},
    {key: "heldout_slice_bpb", label: "held-out slice"}]},
  roles: {prefix: "role_bpb/", empty: "no per-role figures in these records"},
  canary: {series: [
    {key: "canary_bpb", label: "canaries (gate: last accepted state)"},
    {key: "canary_start_bpb", label: "canaries at the start"},
    {key: "canary_mix_bpb", label: "canaries, model + a copy of the session memory"},
    {key: "canary_mix_start_bpb", label: "the same at the start"}],
    prefix: "eval/", empty: "no canary figures: the gate is off and --eval-every is 0"},
  gate: {series: [
    {key: "gate_counts/accepted", needs: "gate", label: "accepted",
     derive: countOr("gate_counts/accepted", "gate", "accepted")},
    {key: "gate_counts/rolled_back", needs: "gate", label: "rolled back",
     derive: countOr("gate_counts/rolled_back", "gate", "rolled_back")},
    {key: "gate_counts/quarantined", needs: "gate", label: "quarantined (incl. screened windows)",
     derive: countOr("gate_counts/quarantined", "gate", "quarantined")},
    {key: "gate_counts/memory_rolled_back", label: "session memory's learning undone (update kept)"}],
    empty: "the update gate is off in this run (--no-gate)"},
  speed: {series: [{key: "tokens_per_s", label: "tokens/s (training step)"}]},
  replay: {series: [{key: "replay_size", label: "windows in the buffer"}]},
  memory: {series: [
    {key: "memory/history_symbols", label: "history held (symbols)"},
    {key: "memory/buckets_used", label: "context buckets in use"},
    {key: "memory/mb", label: "size (MB)", scale: "r"}],
    empty: "the session memory is off in this run (train --no-memory)"},
  merges: {series: [
    {key: "promotion_rate", needs: "promotions", label: "new merges per step", derive: rate("promotions")},
    {key: "merge_rate", needs: "merges", label: "merged pairs per step", derive: rate("merges")},
    {key: "steps_per_base_token", label: "recurrent steps per base token", scale: "r"}],
    empty: "merges are off in this run (train --merges)"},
};

const charts = {};
for (const section of document.querySelectorAll("[data-chart]")) {
  const name = section.dataset.chart;
  charts[name] = name === "surprise" ? new HistogramChart(section) : new StepChart(section, SPECS[name]);
}

const view = {version: null, next: 0, rows: 0, lastRow: null, lastSeen: null, error: null};
window.dashboard = {charts, view};

function url(path, params = {}) {
  const q = new URLSearchParams(params);
  if (KEY) q.set("key", KEY);
  return `${path}?${q}`;
}

async function getJSON(path, params) {
  const r = await fetch(url(path, params), {cache: "no-store"});
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${(await r.text()).slice(0, 200)}`);
  return r.json();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fillTable(id, rows) {
  document.querySelector(`#${id} tbody`).replaceChildren(...rows.map(cells => {
    const tr = document.createElement("tr");
    tr.append(...cells.map(c => cell(c)));
    return tr;
  }));
}

function applyMetrics(m) {
  document.getElementById("run-name").textContent = m.ckpt_dir;
  if (m.version !== view.version) {
    Object.values(charts).forEach(c => c.reset?.());
    view.version = m.version;
    view.rows = 0;
  }
  view.next = m.next;
  view.rows += m.rows.length;
  if (m.rows.length) {
    view.lastRow = m.rows[m.rows.length - 1];
    view.lastSeen = Date.now();
    for (const c of Object.values(charts)) if (c instanceof StepChart) c.add(m.rows);
  }
  const hist = m.latest.replay_hist?.value;
  charts.surprise.show(hist || null);
  document.getElementById("surprise-note").textContent = hist ?
    `${hist.unit}, step ${m.latest.replay_hist.step}` : "";
  fillTable("events", m.events.slice().reverse().map(e => [e.step, e.decision.replace("_", " "), e.reason || "",
    e.session || ""]));
  document.getElementById("events-note").textContent =
    m.events_total > m.events.length ? `newest ${m.events.length} of ${m.events_total}` : `${m.events_total}`;
  const top = m.latest.top_merges;
  fillTable("top-merges", (top?.value || []).map(t => [JSON.stringify(t.text ?? t.pair), t.uses, t.age_base_tokens]));
  document.getElementById("merges-note").textContent = top ? `at step ${top.step}` : "none in the records";
  status(m);
}

function status(m) {
  const el = document.getElementById("status");
  const r = view.lastRow;
  const parts = [];
  if (!m.exists) parts.push("waiting for metrics.jsonl (has the run started?)");
  else if (!r) parts.push("no records yet");
  else {
    const age = m.now - r.time;
    parts.push(`step ${r.step}`, age < 120 ? `last record ${age.toFixed(0)} s ago (live)` :
      `last record ${new Date(r.time * 1000).toLocaleString()} (finished or paused)`);
  }
  parts.push(`${view.rows} records shown` + (m.stride > 1 ? ` (every ${m.stride}th of the older ones)` : ""));
  if (m.unreadable) parts.push(`${m.unreadable} unreadable lines skipped`);
  if (m.pending_bytes) parts.push("a line is being written");
  // a run whose updates are all refused learns nothing: said first, in words, and marked as an error
  if (m.stalled) parts.unshift(m.stalled);
  el.textContent = parts.join(" · ");
  el.classList.toggle("error", Boolean(m.stalled));
  document.body.dataset.version = String(view.version);
  document.body.dataset.lastStep = r ? String(r.step) : "";
}

function applyRun(info) {
  const ck = info.checkpoint;
  const box = document.getElementById("checkpoint");
  const note = document.getElementById("ckpt-note");
  if (!ck.summary) {
    box.replaceChildren();
    note.textContent = ck.error || "";
    fillTable("projects", []);
  } else {
    const s = ck.summary;
    note.textContent = `step ${s.step}; kept ${s.checkpoints.join(", ")}`;
    const g = s.gate;
    const pairs = [
      ["base model", s.base_model], ["tokens seen", fmt(s.tokens_seen)], ["bytes seen", fmt(s.bytes_seen)],
      ["S0 norm", fmt(s.state_norms.total)],
      ["replay", `${s.replay.size} of ${s.replay.capacity} (${s.replay.priority_rule})`],
    ];
    if (g) {
      pairs.push(["gate", `accepted ${g.counts.accepted}, rolled back ${g.counts.rolled_back}, quarantined ` +
        `${g.counts.quarantined} (${g.screened_windows} screened)`],
        ["canaries", `${fmt(g.canary_start_bpb)} → ${fmt(g.canary_last_bpb)} bpb`]);
    }
    pairs.push(...memoryPairs(s.memory));
    box.replaceChildren(...pairs.flatMap(([k, v]) => {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = v;
      return [dt, dd];
    }));
    fillTable("projects", Object.entries(s.projects || {}).map(([p, v]) => [p, v.updates, v.replay]));
  }
  const st = info.states;
  document.getElementById("states-note").textContent = st.folder ? `${st.folder}${st.note ? ": " + st.note : ""}` :
    st.note;
  document.getElementById("states").replaceChildren(...st.tree.map(stateNode));
}

// the checkpoint's session memories (size, what they hold) and the live bits/byte of the mixture beside the
// tuned and frozen model's, over the last steps
const MEMORY_FIGURES = [["mixture", "model + memory"], ["tuned", "tuned model"], ["frozen", "frozen model"],
  ["global_mixture", "model + global memory"]];

function memoryPairs(m) {
  if (!m) return [["session memory", "off (train --no-memory)"]];
  const out = Object.entries(m.memories).map(([name, st]) => [
    name === "_run" ? "session memory" : `memory of ${name}`,
    st ? `${fmt(st.mb)} MB of ${fmt(st.memory_mb)}, ${fmt(st.symbols_seen)} symbols seen, history ` +
      `${fmt(st.history_symbols)} of ${fmt(st.history_capacity)}` : "no statistics in this checkpoint"]);
  const figs = MEMORY_FIGURES.filter(([k]) => m.bits_per_byte[k])
    .map(([k, label]) => `${label} ${fmt(m.bits_per_byte[k].last)}`);
  if (figs.length) out.push(["live bits/byte (last steps)", figs.join(" · ")]);
  return out;
}

function stateNode(n) {
  const li = document.createElement("li");
  li.dataset.name = n.name;
  const name = document.createElement("span");
  name.className = "state-name" + (n.this_run ? " this-run" : "");
  name.textContent = n.name;
  const meta = document.createElement("span");
  meta.className = "meta";
  const bits = [n.kind, n.id, new Date(n.created * 1000).toLocaleString()];
  if (n.step !== null && n.step !== undefined) bits.push(`step ${n.step}`);
  if (n.orphan) bits.push("parent removed");
  if (n.reason) bits.push(n.reason);
  meta.textContent = ` ${bits.join(" · ")}`;
  li.append(name, meta);
  if (n.children.length) {
    const ul = document.createElement("ul");
    ul.append(...n.children.map(stateNode));
    li.append(ul);
  }
  return li;
}

function showError(e) {
  const el = document.getElementById("status");
  el.textContent = `cannot reach the dashboard server: ${e.message} (retrying)`;
  el.classList.add("error");
}

async function pollMetrics() {
  try {
    applyMetrics(await getJSON("api/metrics", {version: view.version ?? -1, next: view.next}));
  } catch (e) {
    showError(e);
  }
  setTimeout(pollMetrics, POLL_MS);
}

async function pollRun() {
  try {
    applyRun(await getJSON("api/run"));
  } catch (e) {
    showError(e);
  }
  setTimeout(pollRun, RUN_MS);
}

window.addEventListener("resize", () => Object.values(charts).forEach(c => c.resize()));
pollMetrics();
pollRun();
})();

// Line charts over training steps (uPlot) that grow as metrics rows arrive, each with a table of its series'
// last values. A series is a metrics field (`key`), a value derived from the rows in order (`derive`), or
// one per field under a prefix (eval/<text>, role_bpb/<role>), added when a row first carries it.
(() => {
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#7f7f7f", "#bcbd22"];

// whole steps only on the x axis: 1, 2, 5, 10, 20, 50, ...
const STEP_INCRS = [...Array(10).keys()].flatMap(e => [1, 2, 5].map(m => m * 10 ** e));

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (Number.isInteger(v)) return v.toLocaleString("en");
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 1 ? v.toFixed(4) : v.toPrecision(4);
}

// d(count_key)/d(step) between consecutive rows that carry count_key
function rate(countKey) {
  return (row, memo) => {
    const c = row[countKey];
    if (c === undefined || c === null) return null;
    const out = memo.step === undefined ? null : (c - memo.count) / (row.step - memo.step);
    memo.step = row.step;
    memo.count = c;
    return out;
  };
}

// the field when the record has it, else a running count of rows whose `field` equals `value`
function countOr(key, field, value) {
  return (row, memo) => {
    if (row[key] !== undefined) return row[key];
    if (row[field] === undefined) return null;
    memo.n = (memo.n || 0) + (row[field] === value ? 1 : 0);
    return memo.n;
  };
}

class StepChart {
  constructor(section, spec) {
    this.section = section;
    this.spec = spec;
    this.rows = [];
    this.holder = document.createElement("div");
    this.holder.className = "plot";
    this.note = document.createElement("p");
    this.note.className = "note";
    this.table = document.createElement("table");
    this.table.className = "last";
    section.append(this.holder, this.note, this.table);
    this.reset();
  }

  reset() {
    this.rows = [];
    this.seen = new Set();  // fields some row carries (not null)
    this.series = [];
    this.memo = {};
    this.plot?.destroy();
    this.plot = null;
    this.data = [[]];
  }

  // the series the rows so far call for: fixed ones that occur, then one per prefixed field, sorted
  wanted() {
    const seen = this.seen;
    const fixed = (this.spec.series || []).filter(s => seen.has(s.needs || s.key));
    const pre = this.spec.prefix;
    const dyn = pre ? [...seen].filter(k => k.startsWith(pre)).sort()
      .map(k => ({key: k, label: k.slice(pre.length)})) : [];
    return fixed.concat(dyn);
  }

  value(s, row) {
    if (!s.derive) return row[s.key] === undefined ? null : row[s.key];
    return s.derive(row, this.memo[s.key] ||= {});
  }

  add(rows) {
    if (!rows.length) return;
    for (const r of rows) {
      this.rows.push(r);
      for (const k in r) if (r[k] !== null) this.seen.add(k);
    }
    const want = this.wanted();
    if (want.map(s => s.key).join("|") !== this.series.map(s => s.key).join("|")) {
      this.series = want;
      this.rebuild();
      return;
    }
    for (const r of rows) {
      this.data[0].push(r.step);
      this.series.forEach((s, i) => this.data[i + 1].push(this.value(s, r)));
    }
    this.draw();
  }

  rebuild() {
    this.memo = {};
    this.data = [this.rows.map(r => r.step)];
    for (const s of this.series) this.data.push(this.rows.map(r => this.value(s, r)));
    this.plot?.destroy();
    this.plot = null;
    this.draw();
  }

  draw() {
    this.note.textContent = this.series.length ? "" : (this.spec.empty || "no records with these fields yet");
    this.holder.hidden = !this.series.length;
    if (!this.series.length) { this.table.replaceChildren(); return; }
    if (!this.plot) {
      const right = this.series.some(s => s.scale === "r");
      this.plot = new uPlot({
        width: this.holder.clientWidth || 480, height: 210,
        scales: {x: {time: false}},
        legend: {show: false},
        series: [{label: "step"}].concat(this.series.map((s, i) => ({
          label: s.label, scale: s.scale || "y", stroke: PALETTE[i % PALETTE.length], width: 1.5,
          spanGaps: true}))),  // points drawn by uPlot only while they are few (a lone point shows)
        axes: [{label: "step", incrs: STEP_INCRS}, {scale: "y", size: 60}]
          .concat(right ? [{scale: "r", side: 1, size: 60, grid: {show: false}}] : []),
      }, this.data, this.holder);
    } else {
      this.plot.setData(this.data);
    }
    this.lastValues();
  }

  // the table under the chart: each series' last value (data-value holds it unrounded, for tests)
  lastValues() {
    const rows = this.series.map((s, i) => {
      const col = this.data[i + 1];
      let j = col.length - 1;
      while (j >= 0 && (col[j] === null || col[j] === undefined)) j--;
      const tr = document.createElement("tr");
      tr.dataset.key = s.key;
      const sw = document.createElement("td");
      sw.className = "swatch";
      sw.style.background = PALETTE[i % PALETTE.length];
      const label = document.createElement("td");
      label.textContent = s.label;
      const val = document.createElement("td");
      val.className = "value";
      if (j >= 0) {
        val.dataset.value = String(col[j]);
        val.dataset.step = String(this.data[0][j]);
        val.textContent = `${fmt(col[j])} at step ${this.data[0][j]}`;
      } else {
        val.textContent = "–";
      }
      tr.append(sw, label, val);
      return tr;
    });
    this.table.replaceChildren(...rows);
  }

  resize() {
    this.plot?.setSize({width: this.holder.clientWidth || 480, height: 210});
  }
}

// bars of the newest replay-priority histogram ({edges, counts})
class HistogramChart {
  constructor(section) {
    this.holder = document.createElement("div");
    this.holder.className = "plot";
    this.note = document.createElement("p");
    this.note.className = "note";
    section.append(this.holder, this.note);
    this.plot = null;
    this.key = null;
  }

  show(hist) {
    const key = hist ? JSON.stringify(hist) : "";
    if (key === this.key) return;
    this.key = key;
    this.holder.hidden = !hist;
    this.note.textContent = hist ? "" : "no replay histogram in the records yet";
    if (!hist) return;
    const centers = hist.counts.map((_, i) => (hist.edges[i] + hist.edges[i + 1]) / 2);
    const data = [centers, hist.counts];
    this.holder.dataset.counts = JSON.stringify(hist.counts);
    if (this.plot) { this.plot.setData(data); return; }
    this.plot = new uPlot({
      width: this.holder.clientWidth || 480, height: 210,
      scales: {x: {time: false}}, legend: {show: false},
      series: [{label: hist.unit || "priority"}, {label: "windows", stroke: PALETTE[0], fill: PALETTE[0] + "88",
               paths: uPlot.paths.bars({size: [0.9, 80]}), points: {show: false}}],
      axes: [{label: hist.unit || "priority"}, {size: 50}],
    }, data, this.holder);
  }

  resize() {
    this.plot?.setSize({width: this.holder.clientWidth || 480, height: 210});
  }
}

window.Charts = {StepChart, HistogramChart, rate, countOr, fmt};
})();

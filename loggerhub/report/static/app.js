/* loggerhub's one renderer: the report (view model embedded in the page) and the live UI (view
 * model fetched from `loggerhub ui`). Every string from a run reaches the page as text: through
 * el(), which only ever creates text nodes, never through innerHTML. */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("loggerhub-config").textContent);
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1", "#636363"];
  const X_MODES = { step: "step", epoch: "epoch", time: "wall time", relative: "relative time (s)" };
  const SVG = "http://www.w3.org/2000/svg";

  // Exposed for people poking at the page and for the browser tests.
  const state = window.loggerhub = {
    mode: config.mode, model: null, runs: [], hidden: new Set(), selected: new Set(),
    xmode: "step", smoothing: 0, allParams: false, colors: new Map(), charts: {},
    sort: { column: "started", descending: config.mode === "ui" }, filter: "", group: "", renders: 0,
  };

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function colorOf(key) {
    if (!state.colors.has(key)) state.colors.set(key, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(key);
  }

  function fmtTime(ts) {
    if (ts === null || ts === undefined) return "";
    const d = new Date(ts * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDuration(run) {
    const end = run.ended !== null && run.ended !== undefined ? run.ended : (run.status === "RUNNING" ? Date.now() / 1000 : null);
    if (end === null) return "";
    let s = Math.max(0, end - run.started);
    if (s < 60) return s.toFixed(1) + " s";
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s = Math.round(s - m * 60);
    return (h ? h + " h " : "") + m + " min " + s + " s";
  }

  function fmtSize(bytes) {
    if (bytes === null || bytes === undefined) return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0; let n = bytes;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function show(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  // ------------------------------------------------------------------ the page

  const root = document.getElementById("app");
  const header = el("header", {});
  const main = el("main", {});
  const sections = {};
  for (const name of ["runs", "params", "charts", "images", "texts", "tables", "files"]) {
    sections[name] = el("section", { id: name });
    main.append(sections[name]);
  }
  root.append(header, main);

  function renderHeader() {
    const title = state.model ? state.model.title : "loggerhub";
    const xSelect = el("select", { id: "xmode", onchange: (e) => { state.xmode = e.target.value; renderCharts(); } },
      Object.entries(X_MODES).map(([value, label]) => el("option", { value, selected: value === state.xmode }, label)));
    const smooth = el("input", { id: "smoothing", type: "range", min: 0, max: 0.99, step: 0.01, value: state.smoothing,
      oninput: (e) => { state.smoothing = Number(e.target.value); smoothLabel.textContent = state.smoothing.toFixed(2); updateCharts(); } });
    const smoothLabel = el("span", {}, state.smoothing.toFixed(2));
    header.replaceChildren(
      el("h1", {}, config.mode === "ui" ? "loggerhub ui" : title),
      el("label", {}, "x axis ", xSelect),
      el("label", {}, "smoothing ", smooth, smoothLabel),
      el("span", { class: "note" }, config.mode === "ui"
        ? "live from the run store; read-only"
        : `generated ${fmtTime(config.generated)}; series downsampled to at most ${state.model ? state.model.buckets : "?"} min/max buckets`),
    );
  }

  // ------------------------------------------------------------------ the run table

  const COLUMNS = [
    { key: "name", label: "name", value: (r) => r.name },
    { key: "id", label: "id", value: (r) => r.id },
    { key: "project", label: "project", value: (r) => r.project },
    { key: "status", label: "status", value: (r) => r.status },
    { key: "started", label: "started", value: (r) => r.started },
    { key: "duration", label: "duration", value: (r) => (r.ended || Date.now() / 1000) - r.started },
    { key: "tags", label: "tags", value: (r) => JSON.stringify(r.tags) },
    { key: "points", label: "points", value: (r) => r.points },
    { key: "records", label: "records", value: (r) => Object.values(r.counts).reduce((a, b) => a + b, 0) },
    { key: "rejected", label: "rejected", value: (r) => r.rejected_count },
  ];

  function matchesFilter(run) {
    if (!state.filter) return true;
    const text = [run.name, run.id, run.project, run.status, run.reason, JSON.stringify(run.tags), JSON.stringify(run.params)]
      .join(" ").toLowerCase();
    return state.filter.toLowerCase().split(/\s+/).every((word) => text.includes(word));
  }

  let runTable = null; // the controls are built once, so a refresh never takes the focus away

  function groupOptions() {
    const paramKeys = [...new Set(state.runs.flatMap((r) => Object.keys(r.params || {})))].sort();
    return [el("option", { value: "" }, "(none)"),
      ...paramKeys.map((k) => el("option", { value: k, selected: k === state.group }, k))];
  }

  function renderRunTable() {
    if (runTable) {
      const options = groupOptions();
      if (options.map((o) => o.value).join("\n") !== [...runTable.groupSelect.options].map((o) => o.value).join("\n")) {
        runTable.groupSelect.replaceChildren(...options);
      }
      runTable.renderRows();
      return;
    }
    const groupSelect = el("select", { id: "group", onchange: (e) => { state.group = e.target.value; renderRunRows(); } },
      groupOptions());
    const filter = el("input", { id: "filter", type: "search", placeholder: "filter: name, id, status, tag, param...",
      value: state.filter, oninput: (e) => { state.filter = e.target.value; renderRunRows(); } });
    const pickLabel = config.mode === "ui" ? "compare" : "show";
    const head = el("tr", {}, el("th", {}, pickLabel), el("th", {}, ""),
      COLUMNS.map((c) => el("th", {
        class: "sortable", "data-column": c.key,
        onclick: () => {
          state.sort = { column: c.key, descending: state.sort.column === c.key ? !state.sort.descending : false };
          renderRunRows();
        },
      }, c.label + (state.sort.column === c.key ? (state.sort.descending ? " \u25BE" : " \u25B4") : ""))));
    const body = el("tbody", {});
    const table = el("table", { class: "grid", id: "run-table" }, el("thead", {}, head), body);

    function renderRunRows() {
      const shown = state.runs.filter(matchesFilter);
      const col = COLUMNS.find((c) => c.key === state.sort.column) || COLUMNS[4];
      shown.sort((a, b) => {
        const x = col.value(a); const y = col.value(b);
        const order = x < y ? -1 : x > y ? 1 : 0;
        return state.sort.descending ? -order : order;
      });
      for (const th of head.querySelectorAll("th.sortable")) {
        const c = COLUMNS.find((k) => k.key === th.dataset.column);
        th.textContent = c.label + (state.sort.column === c.key ? (state.sort.descending ? " \u25BE" : " \u25B4") : "");
      }
      const groups = new Map();
      for (const run of shown) {
        const value = state.group ? (state.group in (run.params || {}) ? show(run.params[state.group]) : "(unset)") : "";
        if (!groups.has(value)) groups.set(value, []);
        groups.get(value).push(run);
      }
      const rows = [];
      for (const [value, members] of groups) {
        if (state.group) rows.push(el("tr", { class: "group" }, el("td", { colspan: COLUMNS.length + 2 },
          `${state.group} = ${value} (${members.length} run${members.length === 1 ? "" : "s"})`)));
        for (const run of members) rows.push(runRow(run));
      }
      body.replaceChildren(...rows);
      count.textContent = `${shown.length} of ${state.runs.length} runs`;
    }

    const count = el("span", { class: "note" });
    sections.runs.replaceChildren(
      el("h2", {}, "Runs"),
      el("p", {}, filter, " group by param ", groupSelect, " ", count,
        config.mode === "ui" ? el("span", { class: "note" }, "  tick runs to compare them below") : null),
      el("div", { class: "scroll" }, table));
    runTable = { groupSelect, renderRows: renderRunRows };
    renderRunRows();
  }

  function runRow(run) {
    const picked = config.mode === "ui" ? state.selected.has(run.key) : !state.hidden.has(run.key);
    const box = el("input", { type: "checkbox", class: "pick", "data-run": run.key, checked: picked,
      onchange: (e) => pick(run.key, e.target.checked) });
    const counts = Object.entries(run.counts).filter(([k]) => !["run_start", "run_end", "run_resume", "rejected"].includes(k))
      .map(([k, v]) => `${v} ${k}`).join(", ");
    const rejected = run.rejected_count
      ? el("details", {}, el("summary", {}, String(run.rejected_count)),
        run.rejected.map(([api, key, reason]) => el("div", { class: "note" }, `${api} ${key}: ${reason}`)))
      : "0";
    return el("tr", { "data-run": run.key },
      el("td", {}, box),
      el("td", {}, el("span", { class: "swatch", style: `background:${colorOf(run.key)}` })),
      el("td", { class: "run-name" }, run.name),
      el("td", {}, run.id),
      el("td", {}, run.project),
      el("td", {}, el("span", { class: `status status-${run.status}` }, run.status,
        run.reason ? el("span", { class: "reason" }, run.reason) : null)),
      el("td", {}, fmtTime(run.started)),
      el("td", { class: "num" }, fmtDuration(run)),
      el("td", {}, Object.entries(run.tags || {}).map(([k, v]) => el("span", { class: "tag" }, `${k}=${v}`))),
      el("td", { class: "num" }, run.points),
      el("td", {}, counts),
      el("td", {}, rejected));
  }

  function pick(key, on) {
    if (config.mode === "ui") {
      if (on) state.selected.add(key); else state.selected.delete(key);
      loadModel();
      return;
    }
    if (on) state.hidden.delete(key); else state.hidden.add(key);
    for (const chart of Object.values(state.charts)) {
      chart._runKeys.forEach((runKey, i) => chart.setSeries(i + 1, { show: !state.hidden.has(runKey) }));
    }
    renderImages(); renderTexts(); renderTables(); renderFiles(); renderParams();
  }

  function visibleRuns() {
    return state.model ? state.model.runs.filter((r) => !state.hidden.has(r.key)) : [];
  }

  // ------------------------------------------------------------------ params

  function renderParams() {
    const runs = visibleRuns();
    const model = state.model;
    if (!model || !runs.length) { sections.params.replaceChildren(); return; }
    const differ = new Set(model.params_differ);
    const all = [...new Set(runs.flatMap((r) => Object.keys(r.params)))].sort();
    const onlyDiffer = !state.allParams && model.runs.length > 1;
    const keys = onlyDiffer ? all.filter((k) => differ.has(k)) : all;
    const toggle = el("input", { type: "checkbox", id: "all-params", checked: !onlyDiffer, disabled: model.runs.length < 2,
      onchange: (e) => { state.allParams = e.target.checked; renderParams(); } });
    const table = el("table", { class: "grid", id: "params-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "param"), runs.map((r) => el("th", {},
        el("span", { class: "swatch", style: `background:${colorOf(r.key)}` }), " ", r.name)))),
      el("tbody", {}, keys.map((k) => el("tr", { "data-param": k, class: differ.has(k) ? "differs" : "" },
        el("th", {}, k), runs.map((r) => el("td", {}, k in r.params ? show(r.params[k]) : "\u2014"))))));
    sections.params.replaceChildren(el("h2", {}, "Params"),
      el("p", { class: "note" }, el("label", {}, toggle, " show all params"), " \u00B7 ",
        onlyDiffer ? `${keys.length} of ${all.length} params differ between the runs` : `${all.length} params`),
      keys.length ? el("div", { class: "scroll" }, table) : el("p", { class: "empty" }, "no param differs"));
  }

  // ------------------------------------------------------------------ metric charts

  function xValues(series, run) {
    if (state.xmode === "step") return series.step;
    if (state.xmode === "epoch") return series.epoch || series.step.map(() => null);
    if (state.xmode === "time") return series.time;
    return series.time.map((t) => t - run.started);
  }

  function smooth(values) {
    const weight = state.smoothing;
    if (!weight) return values;
    // TensorBoard's debiased exponential moving average; gaps stay gaps.
    let last = 0; let n = 0;
    return values.map((v) => {
      if (v === null) return null;
      last = last * weight + (1 - weight) * v; n++;
      return last / (1 - Math.pow(weight, n));
    });
  }

  function chartSeries(key) {
    const per = state.model.metrics[key];
    const runs = state.model.runs.filter((r) => per[r.key]);
    const data = [null]; const marks = [];
    for (const run of runs) {
      const s = per[run.key];
      const xs = xValues(s, run); const ys = smooth(s.value);
      // A point without an x (no epoch logged) is left out rather than drawn at 0.
      const keepX = []; const keepY = []; const where = new Map();
      xs.forEach((x, i) => { if (x !== null && x !== undefined) { where.set(i, keepX.length); keepX.push(x); keepY.push(ys[i]); } });
      data.push([keepX, keepY]);
      marks.push(s.nonfinite.filter(([i]) => where.has(i)).map(([i, kind]) => [keepX[where.get(i)], kind]));
    }
    return { runs, data, marks };
  }

  function drawMarks(u) {
    const ctx = u.ctx; const { left, top, width, height } = u.bbox;
    ctx.save();
    u._marks.forEach((marks, i) => {
      if (!u.series[i + 1].show) return;
      ctx.fillStyle = ctx.strokeStyle = u.series[i + 1]._stroke || "#cf222e";
      for (const [x, kind] of marks) {
        const px = u.valToPos(x, "x", true);
        if (px < left || px > left + width) continue;
        const s = 5 * devicePixelRatio;
        ctx.beginPath();
        if (kind === "inf") { ctx.moveTo(px, top); ctx.lineTo(px - s, top + s * 1.6); ctx.lineTo(px + s, top + s * 1.6); ctx.fill(); }
        else if (kind === "-inf") { ctx.moveTo(px, top + height); ctx.lineTo(px - s, top + height - s * 1.6); ctx.lineTo(px + s, top + height - s * 1.6); ctx.fill(); }
        else { ctx.setLineDash([3, 3]); ctx.moveTo(px, top); ctx.lineTo(px, top + height); ctx.stroke(); ctx.setLineDash([]); }
      }
    });
    ctx.restore();
  }

  function markText(marks, runs) {
    const parts = [];
    marks.forEach((list, i) => {
      if (!list.length || state.hidden.has(runs[i].key)) return;
      const counts = {};
      for (const [, kind] of list) counts[kind] = (counts[kind] || 0) + 1;
      parts.push(`${runs[i].name}: ` + Object.entries(counts).map(([k, v]) => `${v}\u00D7 ${k === "nan" ? "NaN" : k}`).join(", "));
    });
    return parts.length ? "non-finite values (gaps; \u25B2 inf, \u25BC -inf, dashed NaN): " + parts.join("; ") : "";
  }

  function nearest(xs, x) {
    // xs ascend (steps, times) in all but odd runs; a binary search, then the neighbour closer.
    let lo = 0; let hi = xs.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] < x) lo = mid + 1; else hi = mid; }
    return lo > 0 && Math.abs(xs[lo - 1] - x) < Math.abs(xs[lo] - x) ? lo - 1 : lo;
  }

  function readout(u) {
    // The value of each shown run at the cursor's x, under the chart.
    if (!u._readout) return;
    if (u.cursor.left === undefined || u.cursor.left < 0) { u._readout.textContent = ""; return; }
    const x = u.posToVal(u.cursor.left, "x");
    const parts = [];
    u.series.forEach((series, i) => {
      if (i === 0 || !series.show) return;
      const [xs, ys] = u.data[i];
      const at = nearest(xs, x);
      if (at < 0) return;
      const y = ys[at];
      parts.push(`${series.label}: ${y === null ? "gap" : Number(y.toPrecision(6))} @ ${Number(Number(xs[at]).toPrecision(8))}`);
    });
    u._readout.textContent = parts.join("   ");
  }

  function makeChart(key, holder, caption) {
    const { runs, data, marks } = chartSeries(key);
    const width = Math.max(300, Math.min(holder.clientWidth || 500, 900));
    const xTime = state.xmode === "time";
    const opts = {
      mode: 2, width, height: 240, legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { show: false } },
      scales: { x: { time: false }, y: { auto: true } },
      axes: [
        { label: X_MODES[state.xmode], values: xTime ? (u, splits) => splits.map((v) => fmtTime(v).slice(11)) : undefined },
        { size: 60 },
      ],
      series: [{}].concat(runs.map((run) => ({
        label: run.name, stroke: colorOf(run.key), width: 1.5, show: !state.hidden.has(run.key),
        facets: [{ scale: "x", auto: true }, { scale: "y", auto: true }],
        paths: uPlot.paths.linear(), points: { show: false }, spanGaps: false,
      }))),
      hooks: { draw: [drawMarks], setCursor: [readout] },
    };
    const readoutLine = el("div", { class: "note readout" });
    holder.after(readoutLine);
    const chart = new uPlot(opts, data, holder);
    chart._readout = readoutLine;
    chart._runKeys = runs.map((r) => r.key);
    chart._marks = marks;
    chart._key = key;
    chart._caption = caption;
    caption.textContent = data.slice(1).some((d) => d[0].length) ? markText(marks, runs)
      : `no point of this key has ${state.xmode === "epoch" ? "an epoch" : "an x value"}`;
    return chart;
  }

  function renderCharts() {
    for (const chart of Object.values(state.charts)) chart.destroy();
    state.charts = {};
    const keys = state.model ? Object.keys(state.model.metrics) : [];
    if (!keys.length) { sections.charts.replaceChildren(); return; }
    const cards = keys.map((key) => {
      const holder = el("div", { class: "chart" });
      const caption = el("div", { class: "marks" });
      const counts = state.model.runs.filter((r) => state.model.metrics[key][r.key])
        .map((r) => state.model.metrics[key][r.key].count);
      return { key, holder, caption, card: el("div", { class: "card", "data-key": key },
        el("h3", {}, key), holder, caption,
        el("div", { class: "note" }, `${counts.reduce((a, b) => a + b, 0).toLocaleString()} points logged`)) };
    });
    // The sampler's system/... series (docs/telemetry.md) get their own group after the loop's.
    const own = cards.filter((c) => !c.key.startsWith("system/"));
    const system = cards.filter((c) => c.key.startsWith("system/"));
    sections.charts.replaceChildren(
      ...(own.length ? [el("h2", {}, "Metrics"), el("div", { class: "cards" }, own.map((c) => c.card))] : []),
      ...(system.length ? [el("h2", {}, "System"), el("div", { class: "cards" }, system.map((c) => c.card))] : []));
    for (const c of cards) {
      state.charts[c.key] = makeChart(c.key, c.holder, c.caption);
      // Milliseconds from navigation to the first chart and to all of them (benchmarks/report.py).
      if (state.firstChartMs === undefined) state.firstChartMs = performance.now();
    }
    if (state.allChartsMs === undefined && cards.length) state.allChartsMs = performance.now();
    state.renders++;
  }

  function updateCharts() {
    // New data for the charts that exist; a new key or run rebuilds them all.
    const keys = state.model ? Object.keys(state.model.metrics) : [];
    const same = keys.length === Object.keys(state.charts).length && keys.every((k) => {
      const chart = state.charts[k];
      const runs = state.model.runs.filter((r) => state.model.metrics[k][r.key]).map((r) => r.key);
      return chart && runs.join("\n") === chart._runKeys.join("\n");
    });
    if (!same) { renderCharts(); return; }
    for (const key of keys) {
      const chart = state.charts[key];
      const { runs, data, marks } = chartSeries(key);
      chart._marks = marks;
      chart.setData(data);
      chart._caption.textContent = markText(marks, runs);
    }
    state.renders++;
  }

  // ------------------------------------------------------------------ images and figures

  function renderImages() {
    const images = state.model ? state.model.images : {};
    const keys = Object.keys(images);
    if (!keys.length) { sections.images.replaceChildren(); return; }
    const cards = keys.map((key) => {
      const per = images[key];
      const runs = visibleRuns().filter((r) => per[r.key]);
      const steps = [...new Set(runs.flatMap((r) => per[r.key].items.map((i) => i.step)))].sort((a, b) => a - b);
      const row = el("div", { class: "media-row" });
      const stepLabel = el("span", {});
      const overlay = el("input", { type: "checkbox", class: "boxes-toggle", checked: true,
        onchange: (e) => card.classList.toggle("hidden-overlay", !e.target.checked) });
      const slider = el("input", { type: "range", class: "step-slider", min: 0, max: Math.max(0, steps.length - 1),
        value: Math.max(0, steps.length - 1), oninput: () => draw() });
      function draw() {
        const step = steps[Number(slider.value)];
        stepLabel.textContent = `step ${step}`;
        row.replaceChildren(...runs.map((run) => {
          const items = per[run.key].items;
          let item = items[0];
          for (const candidate of items) if (candidate.step <= step) item = candidate;
          return figure(run, item, per[run.key].count);
        }));
      }
      const card = el("div", { class: "card", "data-key": key }, el("h3", {}, key),
        el("p", { class: "note" }, el("label", {}, "step ", slider, " ", stepLabel), "   ",
          runs.some((r) => per[r.key].items.some((i) => i.boxes && i.boxes.length)) ? el("label", {}, overlay, " boxes") : null),
        row);
      draw();
      return card;
    });
    sections.images.replaceChildren(el("h2", {}, "Images and figures"), el("div", { class: "cards" }, cards));
  }

  function figure(run, item, count) {
    const frame = el("div", { class: "frame" });
    // Small images are shown larger (pixels kept sharp); the overlay scales with the image.
    const shown = Math.min(320, Math.max(200, item.width));
    if (item.src) frame.append(el("img", { src: item.src, alt: item.caption || "", width: shown,
      height: Math.round(item.height * shown / item.width), class: item.width < shown ? "pixelated" : null }));
    if (item.boxes && item.boxes.length) {
      const overlay = svg("svg", { viewBox: `0 0 ${item.width} ${item.height}`, preserveAspectRatio: "none", class: "boxes" });
      for (const [x0, y0, x1, y1, label, score] of item.boxes) {
        const color = colorOf(run.key);
        overlay.append(svg("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0, stroke: color }));
        const text = [label, score === null || score === undefined ? null : Number(score).toFixed(2)].filter((p) => p !== null && p !== undefined && p !== "").join(" ");
        // In the image's pixels, which the overlay scales to the shown size: 11 px on screen.
        const size = 11 * item.width / shown;
        if (text) overlay.append(svg("text", { x: x0 + 2, y: Math.max(size, y0 - 2), fill: color, "font-size": size }, text));
      }
      frame.append(overlay);
    }
    return el("figure", { "data-run": run.key }, frame,
      el("figcaption", {}, el("span", { class: "swatch", style: `background:${colorOf(run.key)}` }), " ", run.name,
        ` \u00B7 step ${item.step}`, item.caption ? ` \u00B7 ${item.caption}` : "",
        count > 1 ? ` \u00B7 ${count} logged` : ""));
  }

  // ------------------------------------------------------------------ text, tables, files

  function renderTexts() {
    const texts = state.model ? state.model.texts : {};
    const keys = Object.keys(texts);
    if (!keys.length) { sections.texts.replaceChildren(); return; }
    const card = (key) => el("div", { class: "card", "data-key": key }, el("h3", {}, key),
      visibleRuns().filter((r) => texts[key][r.key]).map((run) => el("div", { "data-run": run.key },
        el("div", { class: "note" }, el("span", { class: "swatch", style: `background:${colorOf(run.key)}` }), " ", run.name),
        texts[key][run.key].slice().reverse().map((t) => el("div", {},
          el("div", { class: "note" }, `step ${t.step}`),
          el("pre", { class: "text" }, t.text + (t.cut ? "\n[...cut]" : "")))))));
    sections.texts.replaceChildren(el("h2", {}, "Text"), el("div", { class: "cards" }, keys.map(card)));
  }

  function renderTables() {
    const tables = state.model ? state.model.tables : {};
    const keys = Object.keys(tables);
    if (!keys.length) { sections.tables.replaceChildren(); return; }
    sections.tables.replaceChildren(el("h2", {}, "Tables"), el("div", { class: "cards" }, keys.map((key) =>
      el("div", { class: "card", "data-key": key }, el("h3", {}, key),
        visibleRuns().filter((r) => tables[key][r.key]).map((run) => {
          const t = tables[key][run.key][tables[key][run.key].length - 1];
          return el("div", { "data-run": run.key },
            el("div", { class: "note" }, el("span", { class: "swatch", style: `background:${colorOf(run.key)}` }),
              ` ${run.name} \u00B7 step ${t.step}` + (t.total_rows > t.rows.length ? ` \u00B7 first ${t.rows.length} of ${t.total_rows} rows` : "")),
            t.role === "confusion_matrix" ? matrix(t) : plainTable(t));
        })))));
  }

  function plainTable(t) {
    return el("div", { class: "scroll" }, el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, t.columns.map((c) => el("th", {}, c)))),
      el("tbody", {}, t.rows.map((row) => el("tr", {}, row.map((v) => el("td", { class: typeof v === "number" ? "num" : "" }, v === null ? "" : show(v))))))));
  }

  function matrix(t) {
    const numbers = t.rows.flat().filter((v) => typeof v === "number");
    const top = Math.max(1e-12, ...numbers);
    return el("table", { class: "grid matrix" },
      el("thead", {}, el("tr", {}, el("th", {}, "true \u2193 / predicted \u2192"), t.columns.map((c) => el("th", {}, c)))),
      el("tbody", {}, t.rows.map((row, i) => el("tr", {}, el("th", {}, t.columns[i]), row.map((v) => {
        const cell = el("td", { class: "num" }, v === null ? "" : show(v));
        if (typeof v === "number") cell.style.background = `rgba(9, 105, 218, ${(0.08 + 0.8 * v / top).toFixed(3)})`;
        return cell;
      })))));
  }

  function renderFiles() {
    const runs = new Map(visibleRuns().map((r) => [r.key, r]));
    const files = state.model ? state.model.files.filter((f) => runs.has(f.run)) : [];
    if (!files.length) { sections.files.replaceChildren(); return; }
    sections.files.replaceChildren(el("h2", {}, "Artifacts and checkpoints"), el("table", { class: "grid", id: "files-table" },
      el("thead", {}, el("tr", {}, ["run", "record", "name", "kind", "step", "size"].map((h) => el("th", {}, h)))),
      el("tbody", {}, files.map((f) => el("tr", {},
        el("td", {}, el("span", { class: "swatch", style: `background:${colorOf(f.run)}` }), " ", runs.get(f.run).name),
        el("td", {}, f.record), el("td", {}, f.name + (f.is_dir ? "/" : "")), el("td", {}, f.kind || ""),
        el("td", { class: "num" }, f.step === null || f.step === undefined ? "" : f.step),
        el("td", { class: "num", title: `${f.size} bytes` }, fmtSize(f.size)))))));
  }

  function renderViews() {
    renderHeader(); renderParams(); renderCharts(); renderImages(); renderTexts(); renderTables(); renderFiles();
  }

  // ------------------------------------------------------------------ modes

  if (config.mode === "report") {
    state.model = config.model;
    state.runs = state.model.runs;
    state.model.runs.forEach((r) => colorOf(r.key));
    renderHeader(); renderRunTable(); renderViews();
    return;
  }

  // The live UI: the run table comes from /api/runs; ticked runs are fetched from /api/model and
  // fetched again while one of them is still running.
  let loading = null;
  async function loadRuns() {
    const response = await fetch("api/runs", { cache: "no-store" });
    const data = await response.json();
    const before = JSON.stringify(state.runs);
    state.runs = data.runs;
    if (JSON.stringify(state.runs) !== before) renderRunTable();
  }

  async function loadModel(refresh) {
    const picked = [...state.selected];
    if (!picked.length) {
      state.model = null; renderViews();
      sections.charts.replaceChildren(el("p", { class: "empty" }, "Tick runs in the table to compare them."));
      return;
    }
    const query = picked.map((k) => "run=" + encodeURIComponent(k)).join("&");
    const request = loading = fetch("api/model?" + query, { cache: "no-store" }).then((r) => r.json());
    const model = await request;
    if (request !== loading) return; // a newer selection is on its way
    const sameRuns = state.model && state.model.runs.map((r) => r.key).join("\n") === model.runs.map((r) => r.key).join("\n");
    state.model = model;
    if (refresh && sameRuns) {
      updateCharts(); renderParams(); renderFiles();
    } else {
      renderViews();
    }
  }

  async function tick() {
    try {
      const live = state.model && state.model.runs.some((r) => r.status === "RUNNING");
      await loadRuns();
      if (live) await loadModel(true);
    } finally {
      setTimeout(tick, config.refresh || 2000);
    }
  }

  for (const part of location.hash.replace(/^#/, "").split("&")) {
    const [name, value] = part.split("=");
    if (name === "run" && value) state.selected.add(decodeURIComponent(value));
  }
  renderHeader();
  loadRuns().then(() => loadModel(false)).finally(() => setTimeout(tick, config.refresh || 2000));
})();

// Draws report blocks (the JSON of interplab.core.blocks) with Plotly: headings, text, tables,
// heatmaps (hover: mean, CI, p, q; significant cells marked), lines with CI bands, bars with
// intervals and nulls, scatter, and circuit graphs with a threshold slider.
"use strict";

const PLOT_CONFIG = {displaylogo: false, responsive: true, showLink: false, showSendToCloud: false,
                     modeBarButtonsToRemove: ["sendDataToCloud"]};
const LAYOUT = {margin: {l: 70, r: 20, t: 40, b: 60}, font: {size: 12}, paper_bgcolor: "#fff", plot_bgcolor: "#fff"};

function figureBox(block, extra) {
  const box = el("div", {class: "figure", dataset: {block: block.type, name: block.name || ""}});
  const plot = el("div", {class: "plot"});
  box.appendChild(plot);
  if (extra) box.appendChild(extra);
  if (block.caption) box.appendChild(el("div", {class: "caption"}, block.caption));
  return [box, plot];
}

function range(n) { return Array.from({length: n}, (_, i) => i); }

function heatmapCells(b) {
  const rows = b.values.length, cols = rows ? b.values[0].length : 0;
  const get = (grid, i, j) => (grid ? grid[i][j] : null);
  const custom = [];
  let hasCI = false;
  for (let i = 0; i < rows; i++) {
    const line = [];
    for (let j = 0; j < cols; j++) {
      let low = get(b.low, i, j), high = get(b.high, i, j);
      const mean = b.values[i][j];
      if (low === null && b.halfwidth && mean !== null && b.halfwidth[i][j] !== null) {
        low = mean - b.halfwidth[i][j]; high = mean + b.halfwidth[i][j];
      }
      if (low !== null) hasCI = true;
      line.push([b.rows[i], b.cols[j], low, high, get(b.p, i, j), get(b.q, i, j),
                 b.significant ? (b.significant[i][j] ? "yes" : "no") : ""]);
    }
    custom.push(line);
  }
  return {rows, cols, custom, hasCI};
}

function hoverText(b, hasCI) {
  let t = `${b.ylabel || "row"} %{customdata[0]}<br>${b.xlabel || "column"} %{customdata[1]}<br>mean %{z:.4f}`;
  if (hasCI) t += "<br>95% CI [%{customdata[2]:.4f}, %{customdata[3]:.4f}]";
  if (b.p) t += "<br>p %{customdata[4]:.3g}";
  if (b.q) t += "<br>q %{customdata[5]:.3g}";
  if (b.significant) t += "<br>significant %{customdata[6]}";
  return t + "<extra></extra>";
}

function drawHeatmap(container, b) {
  const [box, plot] = figureBox(b);
  container.appendChild(box);
  const {rows, cols, custom, hasCI} = heatmapCells(b);
  box.dataset.rows = rows; box.dataset.cols = cols; box.dataset.cells = rows * cols;
  const zmax = Math.max(1e-12, ...b.values.flat().filter((v) => v !== null).map(Math.abs));
  const traces = [{type: "heatmap", z: b.values, x: range(cols), y: range(rows), customdata: custom,
                   colorscale: "RdBu", reversescale: true, zmid: 0, zmin: -zmax, zmax: zmax,
                   hovertemplate: hoverText(b, hasCI), colorbar: {title: {text: b.value_label || ""}}, xgap: 1, ygap: 1}];
  if (b.significant) {
    const xs = [], ys = [];
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) if (b.significant[i][j]) { xs.push(j); ys.push(i); }
    traces.push({type: "scatter", mode: "markers", x: xs, y: ys, hoverinfo: "skip", name: "significant",
                 marker: {symbol: "circle", size: 5, color: "#111"}, showlegend: false});
    box.dataset.significant = xs.length;
  }
  const height = Math.min(900, Math.max(260, 24 * rows + 140));
  const tick = (labels) => ({tickmode: "array", tickvals: range(labels.length), ticktext: labels, automargin: true});
  Plotly.newPlot(plot, traces, {...LAYOUT, title: {text: b.title}, height,
    xaxis: {...tick(b.cols), title: {text: b.xlabel || ""}, tickangle: cols > 12 ? -60 : 0},
    yaxis: {...tick(b.rows), title: {text: b.ylabel || ""}, autorange: "reversed"}}, PLOT_CONFIG);
}

function drawLines(container, b) {
  const [box, plot] = figureBox(b);
  container.appendChild(box);
  const traces = [];
  const palette = ["#2458b3", "#d9822b", "#1b7f3b", "#8e44ad", "#b3261e", "#16a085", "#7f8c8d"];
  Object.entries(b.series).forEach(([name, ys], k) => {
    const color = palette[k % palette.length];
    const low = b.low && b.low[name], high = b.high && b.high[name];
    if (low && high) {
      traces.push({type: "scatter", x: [...b.x, ...[...b.x].reverse()], y: [...high, ...[...low].reverse()],
                   fill: "toself", fillcolor: color + "33", line: {width: 0}, hoverinfo: "skip", showlegend: false});
    }
    const custom = b.x.map((_, i) => [low ? low[i] : null, high ? high[i] : null]);
    traces.push({type: "scatter", mode: "lines+markers", name, x: b.x, y: ys, line: {color}, customdata: custom,
                 hovertemplate: `${name}<br>${b.xlabel} %{x}<br>${b.ylabel} %{y:.4g}` +
                   (low ? "<br>95% CI [%{customdata[0]:.4g}, %{customdata[1]:.4g}]" : "") + "<extra></extra>"});
  });
  const shapes = b.hline === null || b.hline === undefined ? [] :
    [{type: "line", xref: "paper", x0: 0, x1: 1, y0: b.hline, y1: b.hline, line: {dash: "dot", color: "#888"}}];
  Plotly.newPlot(plot, traces, {...LAYOUT, title: {text: b.title}, height: 380, shapes,
    xaxis: {title: {text: b.xlabel}}, yaxis: {title: {text: b.ylabel}, type: b.logy ? "log" : "linear",
    range: b.ylim || undefined}}, PLOT_CONFIG);
}

function drawBars(container, b) {
  const [box, plot] = figureBox(b);
  container.appendChild(box);
  const n = b.labels.length;
  const hasCI = b.low && b.high;
  const custom = b.labels.map((_, i) => [hasCI ? b.low[i] : null, hasCI ? b.high[i] : null, b.null ? b.null[i] : null]);
  const traces = [{type: "bar", orientation: "h", y: range(n), x: b.values, marker: {color: "#2458b3"}, customdata: custom,
    error_x: hasCI ? {type: "data", symmetric: false, array: b.values.map((v, i) => b.high[i] - v),
                      arrayminus: b.values.map((v, i) => v - b.low[i]), color: "#333"} : undefined,
    hovertemplate: "%{y}<br>%{x:.4g}" + (hasCI ? "<br>95% CI [%{customdata[0]:.4g}, %{customdata[1]:.4g}]" : "") +
      (b.null ? "<br>null %{customdata[2]:.4g}" : "") + "<extra></extra>", name: b.xlabel}];
  if (b.null) {
    const idx = range(n).filter((i) => b.null[i] !== null);
    traces.push({type: "scatter", mode: "markers", y: idx, x: idx.map((i) => b.null[i]), name: "null",
                 marker: {symbol: "x", size: 9, color: "#b3261e"}});
  }
  Plotly.newPlot(plot, traces, {...LAYOUT, title: {text: b.title}, height: Math.max(220, 28 * n + 120),
    xaxis: {title: {text: b.xlabel}}, margin: {...LAYOUT.margin, l: 180},
    yaxis: {tickmode: "array", tickvals: range(n), ticktext: b.labels, autorange: "reversed", automargin: true}}, PLOT_CONFIG);
}

function drawScatter(container, b) {
  const [box, plot] = figureBox(b);
  container.appendChild(box);
  const traces = [{type: "scatter", mode: "markers", x: b.x, y: b.y, marker: {size: 6, color: "#2458b3"}, name: b.ylabel}];
  const shapes = [];
  if (b.diagonal) {
    const all = [...b.x, ...b.y].filter((v) => v !== null);
    const lo = Math.min(...all), hi = Math.max(...all);
    shapes.push({type: "line", x0: lo, y0: lo, x1: hi, y1: hi, line: {dash: "dot", color: "#888"}});
  }
  Plotly.newPlot(plot, traces, {...LAYOUT, title: {text: b.title}, height: 420, shapes,
    xaxis: {title: {text: b.xlabel}}, yaxis: {title: {text: b.ylabel}}}, PLOT_CONFIG);
}

function graphTraces(b, threshold) {
  // nodes by layer (y), spread along x within a layer
  const byLayer = {};
  b.nodes.forEach((_, i) => { (byLayer[b.layers[i]] = byLayer[b.layers[i]] || []).push(i); });
  const pos = {};
  for (const members of Object.values(byLayer)) members.forEach((i, k) => { pos[i] = [k - (members.length - 1) / 2, b.layers[i]]; });
  const maxAbs = Math.max(1e-12, ...b.scores.map((s) => Math.abs(s === null ? 0 : s)));
  const traces = [];
  const mids = {x: [], y: [], custom: []};
  let shown = 0;
  b.scores.forEach((s, e) => {
    if (s === null || Math.abs(s) < threshold) return;
    shown++;
    const [x0, y0] = pos[b.sources[e]], [x1, y1] = pos[b.targets[e]];
    const truth = b.truth ? b.truth[e] : null;
    traces.push({type: "scatter", mode: "lines", x: [x0, x1], y: [y0, y1], hoverinfo: "skip", showlegend: false,
                 line: {width: 1 + 5 * Math.abs(s) / maxAbs, color: s >= 0 ? "#2458b3" : "#b3261e", dash: truth === false ? "dot" : "solid"}});
    mids.x.push((x0 + x1) / 2); mids.y.push((y0 + y1) / 2);
    const name = b.edge_labels ? b.edge_labels[e] : `${b.nodes[b.sources[e]]} → ${b.nodes[b.targets[e]]}`;
    mids.custom.push([name, null, s, b.low ? b.low[e] : null, b.high ? b.high[e] : null,
                      truth === null ? "" : (truth ? "yes" : "no")]);
  });
  traces.push({type: "scatter", mode: "markers", x: mids.x, y: mids.y, customdata: mids.custom, showlegend: false,
               marker: {size: 6, color: "rgba(0,0,0,0.25)"}, name: "edges",
               hovertemplate: "%{customdata[0]}<br>" + b.score_label + " %{customdata[2]:.4g}" +
                 (b.low ? "<br>95% CI [%{customdata[3]:.4g}, %{customdata[4]:.4g}]" : "") +
                 (b.truth ? "<br>in the true circuit: %{customdata[5]}" : "") + "<extra></extra>"});
  traces.push({type: "scatter", mode: "markers+text", x: b.nodes.map((_, i) => pos[i][0]), y: b.nodes.map((_, i) => pos[i][1]),
               text: b.nodes, textposition: "top center", showlegend: false, marker: {size: 12, color: "#f4d35e", line: {color: "#333", width: 1}},
               customdata: b.nodes.map((n, i) => [n, b.node_scores ? b.node_scores[i] : null]),
               hovertemplate: "%{customdata[0]}" + (b.node_scores ? "<br>score %{customdata[1]:.4g}" : "") + "<extra></extra>"});
  return {traces, shown};
}

function drawGraph(container, b) {
  const maxAbs = Math.max(0, ...b.scores.map((s) => Math.abs(s === null ? 0 : s)));
  const label = el("span", {class: "threshold-label"});
  const slider = el("input", {type: "range", min: 0, max: maxAbs, step: maxAbs / 200 || 1, value: b.threshold, class: "threshold"});
  const count = el("span", {class: "edge-count muted"});
  const [box, plot] = figureBox(b, el("div", {class: "controls"}, "threshold |score| ≥ ", slider, label, count));
  container.appendChild(box);
  const layers = [...new Set(b.layers)].sort((x, y) => x - y);
  const draw = () => {
    const threshold = Number(slider.value);
    const {traces, shown} = graphTraces(b, threshold);
    label.textContent = fmt(threshold, 3);
    count.textContent = `${shown} of ${b.scores.length} edges shown`;
    box.dataset.edges = shown;
    Plotly.react(plot, traces, {...LAYOUT, title: {text: b.title}, height: Math.max(360, 70 * layers.length + 120),
      xaxis: {visible: false}, yaxis: {title: {text: "layer"}, tickmode: "array", tickvals: layers}}, PLOT_CONFIG);
  };
  slider.addEventListener("input", draw);
  draw();
}

function drawBlocks(container, blocks) {
  for (const b of blocks) {
    if (b.type === "heading") container.appendChild(el("h2", {}, b.text));
    else if (b.type === "text") container.appendChild(el("p", {class: b.note ? "note" : null}, b.text));
    else if (b.type === "table") {
      if (b.title) container.appendChild(el("h3", {}, b.title));
      container.appendChild(table(b.header, b.rows, {class: "block-table"}));
    } else if (b.type === "heatmap") drawHeatmap(container, b);
    else if (b.type === "lines") drawLines(container, b);
    else if (b.type === "bars") drawBars(container, b);
    else if (b.type === "scatter") drawScatter(container, b);
    else if (b.type === "graph") drawGraph(container, b);
  }
}

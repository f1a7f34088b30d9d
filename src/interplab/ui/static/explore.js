// The prompt explorer (live model): type a prompt, see its tokens, the next-token predictions,
// the logit lens (layers x positions), the attention pattern of any layer and head, and the top
// dictionary latents per token. One POST /api/explore per prompt (and per attention layer).
"use strict";

function drawLens(box, data) {
  const lens = data.lens, n = data.tokens.length;
  const xlabels = data.tokens.map((t, i) => `${i} ${showToken(t)}`);
  const ylabels = lens.layers.map((l) => `L${l}`);
  const custom = lens.layers.map((l, r) => data.tokens.map((t, c) => [`L${l}`, xlabels[c], showToken(lens.tokens[r][c])]));
  const trace = {type: "heatmap", z: lens.probs, x: range(n), y: range(lens.layers.length), customdata: custom,
    text: lens.tokens.map((row) => row.map(showToken)), colorscale: "Blues", reversescale: true, xgap: 1, ygap: 1,
    zmin: 0, zmax: Math.max(1e-9, ...lens.probs.flat().filter((v) => v !== null)),
    colorbar: {title: {text: "p(top token)"}},
    hovertemplate: "layer %{customdata[0]} · position %{customdata[1]}<br>top token %{customdata[2]}: p = %{z:.4f}<extra></extra>"};
  if (n <= 48) { trace.texttemplate = "%{text}"; trace.textfont = {size: 11}; }
  const tick = (labels) => ({tickmode: "array", tickvals: range(labels.length), ticktext: labels, automargin: true});
  Plotly.newPlot(box.querySelector(".plot"), [trace], {...LAYOUT, title: {text: "Logit lens: each layer's top next token"},
    height: Math.min(900, Math.max(260, 26 * lens.layers.length + 160)),
    xaxis: {...tick(xlabels), title: {text: "position (token)"}, tickangle: n > 16 ? -60 : 0},
    yaxis: {...tick(ylabels), title: {text: "layer (resid_post)"}}}, PLOT_CONFIG);
  box.dataset.rows = lens.layers.length; box.dataset.cols = n;
}

function drawAttention(box, data, head) {
  const a = data.attention, n = data.tokens.length;
  const labels = data.tokens.map((t, i) => `${i} ${showToken(t)}`);
  const z = a.patterns[head];
  const custom = labels.map((q) => labels.map((k) => [q, k]));
  const tick = {tickmode: "array", tickvals: range(n), ticktext: labels, automargin: true};
  Plotly.newPlot(box.querySelector(".plot"), [{type: "heatmap", z, x: range(n), y: range(n), customdata: custom,
    colorscale: "Viridis", zmin: 0, colorbar: {title: {text: "attention"}},
    hovertemplate: "query %{customdata[0]} → key %{customdata[1]}<br>p = %{z:.4f}<extra></extra>"}],
  {...LAYOUT, title: {text: `Attention pattern, layer ${a.layer} head ${head}`}, height: Math.min(900, Math.max(360, 22 * n + 160)),
    width: Math.min(1100, Math.max(460, 22 * n + 260)),
    xaxis: {...tick, title: {text: "key (attended to)"}, tickangle: n > 12 ? -60 : 0},
    yaxis: {...tick, title: {text: "query"}, autorange: "reversed"}}, PLOT_CONFIG);
  box.dataset.layer = a.layer; box.dataset.head = head; box.dataset.drawn = "1";
}

function featureTables(holder, data) {
  holder.replaceChildren();
  if (!data.features.length) {
    holder.appendChild(el("p", {class: "note"}, "No dictionaries are registered: start `interplab ui` with --dictionaries DIR to see the top latents per token."));
    return;
  }
  for (const f of data.features) {
    holder.appendChild(el("h3", {}, `${f.dictionary} `, el("span", {class: "muted"}, `(${f.site}, d_sae ${f.d_sae}; top ${f.k} per token)`)));
    const rows = data.tokens.map((t, pos) => {
      const cells = el("span", {class: "latents"});
      f.indices[pos].forEach((latent, j) => {
        const v = f.values[pos][j];
        if (v === null || v <= 0) return;
        const title = `latent ${latent}: activation ${fmt(v, 4)}` + (f.feature_id ? "" : " (this dictionary has no feature dashboard here)");
        cells.appendChild(el(f.feature_id ? "a" : "span", {class: "latent", title, dataset: {latent: String(latent)},
          href: f.feature_id ? `/feature?d=${encodeURIComponent(f.feature_id)}&i=${latent}` : null}, `#${latent}`));
        cells.appendChild(document.createTextNode(` ${fmt(v, 3)}   `));
      });
      if (!cells.childNodes.length) cells.appendChild(el("span", {class: "muted"}, "none active"));
      return [pos, el("span", {class: "tokens"}, showToken(t)), cells];
    });
    holder.appendChild(table(["position", "token", "top latents (activation)"], rows, {class: "features"}));
  }
}

page("prompt explorer", async (main) => {
  main.appendChild(el("h1", {}, "Prompt explorer"));
  const status = el("p", {class: "muted", id: "live-status"}, "Checking the live model…");
  main.appendChild(status);
  const info = await waitForLive(status);
  const d = info.dims;
  status.textContent = `${info.model} · ${d.n_layers} layers · ${d.n_heads} heads · vocabulary ${d.d_vocab} · ` +
    `prompts up to ${info.limits.max_prompt_tokens} tokens`;

  const prompt = el("textarea", {id: "prompt", rows: 3, style: "width: 100%; max-width: 900px", placeholder: "Type a prompt…",
                                 "aria-label": "prompt"}, param("prompt") || "");
  const topK = el("input", {type: "number", id: "top-k", min: 1, max: Math.min(100, d.d_vocab), value: Math.min(10, d.d_vocab), style: "width: 5em"});
  const run = el("button", {id: "explore-run", type: "submit"}, "explore");
  const form = el("form", {id: "explore-form"}, el("div", {}, prompt),
                  el("div", {class: "controls"}, el("label", {}, "top k ", topK), run));
  const result = el("section", {id: "result", hidden: true});
  main.append(form, result);

  const tokens = el("div", {class: "tokens", id: "tokens"});
  const predictions = el("div", {id: "predictions"});
  const lensBox = el("div", {class: "figure", id: "lens"}, el("div", {class: "plot"}),
    el("div", {class: "caption"}, "Each layer's residual stream (resid_post) read through the final norm and unembedding: the top token and its probability at every position."));
  const layerSel = el("select", {id: "attn-layer", "aria-label": "attention layer"},
    range(d.n_layers).map((l) => el("option", {value: l}, `layer ${l}`)));
  const headSel = el("select", {id: "attn-head", "aria-label": "attention head"},
    range(d.n_heads).map((h) => el("option", {value: h}, `head ${h}`)));
  const attnBox = el("div", {class: "figure", id: "attention"}, el("div", {class: "plot"}));
  const attnNote = el("p", {class: "note", id: "attention-note"});
  const features = el("div", {id: "features"});
  const problem = el("div", {id: "explore-error"});
  result.append(problem, el("h2", {}, "Tokens"), tokens, el("h2", {}, "Next-token predictions"), predictions,
                el("h2", {}, "Logit lens"), lensBox, el("h2", {}, "Attention"),
                el("div", {class: "controls"}, layerSel, headSel), attnNote, attnBox,
                el("h2", {}, "Dictionary features"), features);

  let last = null;  // the last answer: heads are redrawn from it, layers ask the server again

  function showAttention(data) {
    const a = data.attention;
    if (!a.available) {
      attnNote.textContent = a.reason;
      attnBox.hidden = true;
      return;
    }
    attnNote.textContent = "Pick a layer and a head: rows are queries, columns the keys they attend to (each row sums to 1).";
    attnBox.hidden = false;
    drawAttention(attnBox, data, Number(headSel.value));
  }

  function render(data) {
    last = data;
    result.hidden = false;
    problem.replaceChildren();
    tokens.replaceChildren(...data.tokens.map((t, i) => el("span", {class: "tok", title: `position ${i} · id ${data.ids[i]}`,
      style: "border: 1px solid #d9dde6; margin: 0 2px; padding: 1px 3px"}, showToken(t))));
    const p = data.predictions;
    const rows = p.ids.map((id, r) => [r + 1, el("span", {class: "tokens token", dataset: {id: String(id)}}, showToken(p.tokens[r])), id, p.probs[r],
      el("span", {class: "bar", style: `width: ${Math.round(200 * (p.probs[r] || 0))}px`})]);
    const t = table(["rank", "token", "id", "probability", ""], rows, {class: "predictions"});
    t.querySelectorAll("tbody tr").forEach((tr, r) => { tr.dataset.id = String(p.ids[r]); });
    predictions.replaceChildren(el("p", {class: "note"}, `After “${data.tokens.map(showToken).join("")}” the model predicts:`), t);
    drawLens(lensBox, data);
    showAttention(data);
    featureTables(features, data);
  }

  async function ask(text, layer) {
    const data = await postJSON("/api/explore", {prompt: text, top_k: Number(topK.value), layer});
    data.prompt = text;
    return data;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    run.disabled = true;
    try {
      render(await ask(prompt.value, Number(layerSel.value)));
    } catch (err) {
      result.hidden = false;
      problem.replaceChildren();
      showError(problem, err);
    } finally {
      run.disabled = false;
    }
  });
  headSel.addEventListener("change", () => { if (last) showAttention(last); });
  layerSel.addEventListener("change", async () => {
    if (!last) return;
    attnBox.dataset.drawn = "0";
    try {
      const data = await ask(last.prompt, Number(layerSel.value));
      last.attention = data.attention;
      showAttention(last);
    } catch (err) { showError(problem, err); }
  });
  if (prompt.value) form.requestSubmit();
});

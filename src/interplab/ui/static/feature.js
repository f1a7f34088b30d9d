// One latent's dashboard: density, the activation histogram, top and quantile-sampled contexts
// with every token shaded by its activation (the firing ones outlined, the maximum in red), its
// logit effects and its nearest latents by decoder cosine.
"use strict";

function contextLine(c, peak) {
  const line = el("div", {class: "tokens context", dataset: {context: c.context, max: c.max}});
  line.appendChild(el("span", {class: "muted"}, fmt(c.max, 3) + "  "));
  c.tokens.forEach((t, k) => {
    const a = c.acts[k] || 0;
    const alpha = peak > 0 ? Math.min(1, Math.max(0, a / peak)) : 0;
    const cls = ["tok", a > 0 ? "firing" : null, k === c.max_index ? "max" : null].filter(Boolean).join(" ");
    line.appendChild(el("span", {class: cls, title: `activation ${fmt(a, 4)}`, style: `background: rgba(255, 140, 0, ${alpha.toFixed(3)})`,
                                 dataset: {act: a}}, t));
  });
  return line;
}

function histogram(h) {
  const box = el("div", {class: "histogram"});
  const peak = Math.max(1, ...h.counts);
  h.counts.forEach((n, k) => {
    if (!n) return;
    const lo = h.edges[k], hi = h.edges[k + 1];
    box.appendChild(el("div", {class: "note"}, el("span", {class: "bar", style: `width: ${(300 * n / peak).toFixed(1)}px`}),
      ` ${fmt(10 ** lo, 3)}–${fmt(10 ** hi, 3)}: ${n}`));
  });
  return box;
}

page("features", async (main) => {
  const d = param("d"), i = param("i");
  if (!d || i === null) throw new Error("Open a latent from a dictionary's feature list.");
  const f = await api(`/api/feature?d=${encodeURIComponent(d)}&i=${encodeURIComponent(i)}`);
  document.title = `latent ${f.index} · ${f.label} · interplab`;
  main.appendChild(el("h1", {}, `Latent ${f.index} of `, el("a", {href: "/features?d=" + encodeURIComponent(d)}, f.label)));
  const nav2 = el("p", {},
    f.index > 0 ? el("a", {href: `/feature?d=${encodeURIComponent(d)}&i=${f.index - 1}`}, "← previous") : null, " ",
    f.index + 1 < f.d_sae ? el("a", {href: `/feature?d=${encodeURIComponent(d)}&i=${f.index + 1}`}, "next →") : null);
  main.appendChild(nav2);
  if (f.label) {
    const parts = Object.entries(f.label.scores || {}).map(([name, s]) =>
      `${name} ${fmt(s.balanced_accuracy, 3)} [${fmt(s.low, 3)}, ${fmt(s.high, 3)}] (shuffled label ${fmt(s.shuffled, 3)})`);
    main.appendChild(el("p", {class: "label", id: "latent-label"}, el("b", {}, "Label: "), f.label.label,
                        parts.length ? el("span", {class: "note"}, " — balanced accuracy: " + parts.join("; ")) : null));
  }
  main.appendChild(kv({"density (fraction of tokens it fires on)": f.density, "mean activation when firing": f.mean_activation,
                       "tokens in the statistics": f.n_tokens, "site": f.input_site}));
  const peak = f.top_contexts.length ? f.top_contexts[0].max : 0;
  const cols = el("div", {class: "grid2"});
  const left = el("div", {}), right = el("div", {});
  cols.append(left, right);
  main.appendChild(cols);
  left.appendChild(el("h2", {}, "Top activations"));
  const top = el("div", {id: "top-contexts"}, f.top_contexts.map((c) => contextLine(c, peak)));
  if (!f.top_contexts.length) top.appendChild(el("p", {class: "muted"}, "This latent never fired on the statistics' text."));
  left.appendChild(top);
  if (f.quantiles.length) {
    left.appendChild(el("h2", {}, "Quantile-sampled activations"));
    const q = el("div", {id: "quantiles"});
    for (const band of [...f.quantiles].reverse()) {
      const of = band.count === null || band.count === undefined ? "" : ` of ${band.count} contexts`;
      q.appendChild(el("h3", {class: "note"}, `interval (${fmt(band.low, 3)}, ${fmt(band.high, 3)}]: ${band.contexts.length} sampled${of}`));
      band.contexts.forEach((c) => q.appendChild(contextLine(c, peak)));
    }
    left.appendChild(q);
  }
  right.appendChild(el("h2", {}, "Activation histogram"));
  right.appendChild(el("p", {class: "note"}, "Firing tokens per activation bin (log-spaced)."));
  right.appendChild(histogram(f.histogram));
  if (f.top_logits.length) {
    right.appendChild(el("h2", {}, "Logit effects"));
    right.appendChild(el("div", {class: "grid2"},
      table(["promotes", ""], f.top_logits.map((x) => [x.token, x.value]), {class: "top-logits"}),
      table(["suppresses", ""], f.bottom_logits.map((x) => [x.token, x.value]), {class: "bottom-logits"})));
  }
  if (f.neighbours.length) {
    right.appendChild(el("h2", {}, "Nearest latents (decoder cosine)"));
    right.appendChild(table(["latent", "cosine", "density"], f.neighbours.map((x) => [
      el("a", {href: `/feature?d=${encodeURIComponent(d)}&i=${x.index}`}, String(x.index)), x.cosine, x.density]), {class: "neighbours"}));
  }
});

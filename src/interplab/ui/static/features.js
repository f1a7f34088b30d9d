// Feature dashboards: the dictionaries, then one dictionary's latents, paged, sorted and searched
// (by latent index, or by the text of a latent's top tokens and logit effects).
"use strict";

page("features", async (main) => {
  const d = param("d");
  if (!d) {
    const data = await api("/api/features");
    main.appendChild(el("h1", {}, "Dictionaries"));
    if (!data.dictionaries.length) {
      main.appendChild(el("p", {class: "muted"}, "No feature statistics here. Start the UI with --dictionaries DIR " +
        "(a trained dictionary whose feature statistics eval-sae computed), or keep eval-sae runs in the runs directory."));
      return;
    }
    main.appendChild(table(["dictionary", "site", "tokens", "path"], data.dictionaries.map((x) => [
      el("a", {href: "/features?d=" + encodeURIComponent(x.id)}, x.label), x.input_site || "", x.n_tokens, x.path])));
    return;
  }
  const state = {q: param("q") || "", sort: "density", order: "desc", offset: 0, limit: 50};
  const title = el("h1", {}, d);
  const info = el("p", {class: "muted"});
  const search = el("input", {type: "search", id: "latent-search", placeholder: "latent index or token text", value: state.q});
  const sort = el("select", {id: "latent-sort"}, ["density", "max", "index"].map((s) => el("option", {value: s}, "by " + s)));
  const pager = el("div", {class: "pager"});
  const holder = el("div", {id: "latents"});
  const exportLink = el("a", {href: "/api/export?d=" + encodeURIComponent(d), id: "export", download: ""},
                        "export for Neuronpedia (zip of batch-*.json)");
  main.append(title, info, el("div", {class: "controls"}, search, sort, exportLink), pager, holder);

  async function load() {
    const qs = new URLSearchParams({d, q: state.q, sort: state.sort, order: state.order, offset: state.offset, limit: state.limit});
    const data = await api("/api/latents?" + qs);
    title.textContent = data.label;
    info.textContent = `${data.d_sae} latents at ${data.input_site}; statistics over ${fmt(data.n_tokens)} tokens. ${data.total} shown by this filter.`;
    const rows = data.latents.map((x) => [
      el("a", {href: `/feature?d=${encodeURIComponent(d)}&i=${x.index}`}, String(x.index)), x.density, x.mean_activation,
      x.max_activation, x.label || "", x.top_logits.join(" · ")]);
    holder.replaceChildren(table(["latent", "density", "mean act.", "max act.", "label", "promotes"], rows, {class: "latent-table"}));
    pager.replaceChildren(
      el("button", {class: "plain", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - state.limit); load(); }}, "previous"),
      el("span", {}, data.total ? `${state.offset + 1}–${Math.min(data.total, state.offset + state.limit)} of ${data.total}` : "none"),
      el("button", {class: "plain", disabled: state.offset + state.limit >= data.total, onclick: () => { state.offset += state.limit; load(); }}, "next"));
  }
  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.q = search.value; state.offset = 0; load(); }, 250); });
  sort.addEventListener("change", () => { state.sort = sort.value; state.order = sort.value === "index" ? "asc" : "desc"; state.offset = 0; load(); });
  await load();
});

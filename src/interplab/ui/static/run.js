// One run: title, status, headline numbers, the report's blocks drawn interactively, the config
// and the provenance.
"use strict";

page("runs", async (main) => {
  const id = param("id");
  if (!id) throw new Error("No run given: open a run from the index.");
  const view = await api("/api/run?id=" + encodeURIComponent(id));
  document.title = `${view.title || id} · interplab`;
  main.appendChild(el("h1", {}, view.title || id));
  main.appendChild(el("p", {class: "muted"}, `${id} · ${view.entry.analysis} · ${view.entry.model} · started ${view.entry.started}`));
  if (view.status !== "ok") {
    main.appendChild(el("p", {class: "error", role: "alert", id: "run-problem"}, `This run record is ${view.status}: ${view.problem}`));
    return;
  }
  if (view.headline && Object.keys(view.headline).length) {
    main.appendChild(el("h2", {}, "Headline"));
    main.appendChild(table(["headline", "value"], Object.entries(view.headline), {class: "headline"}));
  }
  const report = el("section", {id: "report"});
  main.appendChild(report);
  drawBlocks(report, view.blocks);
  const cfg = el("details", {}, el("summary", {}, "Config"), kv(view.config));
  const prov = el("details", {}, el("summary", {}, "Provenance"), kv(view.provenance));
  const files = el("details", {}, el("summary", {}, `Files (${view.files.length})`),
                   el("ul", {}, view.files.map((f) => el("li", {}, f))));
  main.append(cfg, prov, files);
});

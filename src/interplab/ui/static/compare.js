// Two runs side by side: every config key and headline number of either, the differing ones marked.
"use strict";

page("runs", async (main) => {
  const a = param("a"), b = param("b");
  if (!a || !b) throw new Error("Pick two runs on the index to compare them.");
  const data = await api(`/api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  main.appendChild(el("h1", {}, "Compare runs"));
  const rows = (list) => {
    const t = table(["", "A", "B"], list.map((r) => [r.key, r.a, r.b]), {class: "compare"});
    t.querySelectorAll("tbody tr").forEach((tr, i) => { if (list[i].differs) tr.classList.add("differs"); });
    return t;
  };
  main.appendChild(el("p", {}, "A: ", runLink(data.a), " · B: ", runLink(data.b)));
  main.appendChild(el("h2", {}, "Headline numbers"));
  main.appendChild(rows(data.headline));
  main.appendChild(el("h2", {}, "Config"));
  main.appendChild(rows(data.config));
});

// The runs index: every run record under the runs directory, filtered, sorted and paged by the
// server; pick two to compare.
"use strict";

page("runs", async (main) => {
  const state = {q: param("q") || "", analysis: param("analysis") || "", sort: "started", order: "desc", offset: 0, limit: 100};
  const picked = new Set();
  main.appendChild(el("h1", {}, "Runs"));
  const rootLine = el("p", {class: "muted"});
  const search = el("input", {type: "search", placeholder: "filter (id, analysis, model, date)", value: state.q, id: "filter"});
  const analysis = el("select", {id: "analysis"}, el("option", {value: ""}, "every analysis"));
  const compareBtn = el("button", {id: "compare", disabled: true}, "compare the two picked");
  const pager = el("div", {class: "pager"});
  const holder = el("div", {id: "runs"});
  main.append(rootLine, el("div", {class: "controls"}, search, analysis, compareBtn), pager, holder);

  compareBtn.addEventListener("click", () => {
    const [a, b] = [...picked];
    window.location.href = `/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`;
  });

  function headline(h) {
    return Object.entries(h || {}).slice(0, 6).map(([k, v]) => `${k} ${fmt(v, 3)}`).join(" · ");
  }

  async function load() {
    const qs = new URLSearchParams({q: state.q, analysis: state.analysis, sort: state.sort, order: state.order,
                                   offset: state.offset, limit: state.limit});
    const data = await api("/api/runs?" + qs);
    rootLine.textContent = `${data.total} run${data.total === 1 ? "" : "s"} in ${data.root}`;
    if (analysis.options.length === 1) {
      for (const name of data.analyses) analysis.appendChild(el("option", {value: name, selected: name === state.analysis}, name));
    }
    const cols = [["", null], ["run", "id"], ["analysis", "analysis"], ["model", "model"], ["started", "started"],
                  ["status", "status"], ["headline", null]];
    const t = el("table", {id: "runs-table"});
    t.appendChild(el("thead", {}, el("tr", {}, cols.map(([label, key]) => el("th", {
      class: key ? "sortable" : null, dataset: key ? {sort: key} : {},
      onclick: key ? () => { state.order = state.sort === key && state.order === "desc" ? "asc" : "desc"; state.sort = key; state.offset = 0; load(); } : null,
    }, label + (state.sort === key ? (state.order === "desc" ? " ▼" : " ▲") : ""))))));
    const body = el("tbody");
    for (const r of data.runs) {
      const box = el("input", {type: "checkbox", checked: picked.has(r.id), "aria-label": "pick " + r.id});
      box.addEventListener("change", () => {
        if (box.checked) picked.add(r.id); else picked.delete(r.id);
        compareBtn.disabled = picked.size !== 2;
      });
      body.appendChild(el("tr", {dataset: {id: r.id, status: r.status}},
        el("td", {}, box), el("td", {}, runLink(r.id)), el("td", {}, r.analysis), el("td", {}, r.model),
        el("td", {}, r.started), el("td", {class: "status-" + r.status, title: r.problem}, r.status + (r.problem ? ": " + r.problem : "")),
        el("td", {class: "note"}, headline(r.headline))));
    }
    t.appendChild(body);
    holder.replaceChildren(t);
    pager.replaceChildren();
    if (data.total > data.limit) {
      const last = Math.max(0, Math.floor((data.total - 1) / data.limit) * data.limit);
      pager.append(el("button", {class: "plain", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - state.limit); load(); }}, "previous"),
        el("span", {}, `${state.offset + 1}–${Math.min(data.total, state.offset + data.limit)} of ${data.total}`),
        el("button", {class: "plain", disabled: state.offset >= last, onclick: () => { state.offset += state.limit; load(); }}, "next"));
    }
  }

  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.q = search.value; state.offset = 0; load(); }, 200); });
  analysis.addEventListener("change", () => { state.analysis = analysis.value; state.offset = 0; load(); });
  await load();
});

// The steering playground (live model): pick a registered vector or a dictionary latent, a scale
// and (optionally) a site; see the unsteered and steered greedy generations side by side, the
// KL between their next-token distributions at every step, and each probe's score of both texts.
// One POST /api/steer per generation; it runs on the same engine as `interplab serve`.
"use strict";

function generation(box, title, prompt, side, kl) {
  const tokens = el("div", {class: "tokens kl-tokens"});
  side.tokens.forEach((t, i) => {
    const k = kl ? kl[i] : null;
    const shade = k === null || k === undefined ? 0 : Math.min(1, k / Math.max(1e-9, Math.max(...kl.filter((v) => v !== null))));
    tokens.appendChild(el("span", {class: "tok", title: k === null || k === undefined ? `step ${i}` : `step ${i}: KL ${fmt(k, 3)} nats`,
      style: `margin: 0 1px; padding: 1px 2px; background: rgba(217, 130, 43, ${(0.6 * shade).toFixed(3)})`}, showToken(t)));
  });
  box.replaceChildren(el("h2", {}, title),
    el("div", {class: "tokens", style: "background: #fff; border: 1px solid #d9dde6; padding: 8px; min-height: 3em"},
       el("span", {class: "muted", title: "the prompt"}, prompt), el("b", {class: "gen-text"}, side.text),
       side.text ? null : el("i", {class: "muted"}, " (no text: the model ended it at once)")),
    el("p", {class: "note"}, `${side.ids.length} new tokens · stopped by ${side.finish_reason === "stop" ? "end of text" : "the token cap"}`),
    tokens);
}

page("steering", async (main) => {
  main.appendChild(el("h1", {}, "Steering playground"));
  const status = el("p", {class: "muted", id: "live-status"}, "Checking the live model…");
  main.appendChild(status);
  const info = await waitForLive(status);
  status.textContent = `${info.model} · ${info.vectors.length} vector(s) · ${info.dictionaries.length} dictionary(ies) · ` +
    `${info.probes.length} probe(s) · up to ${info.limits.max_new_tokens} new tokens (greedy)`;
  if (!info.vectors.length && !info.dictionaries.length) {
    main.appendChild(el("p", {class: "note", id: "nothing"}, "Nothing to steer with: start `interplab ui` with --vectors DIR " +
      "(a saved steering vector) or --dictionaries DIR (steer along a latent's decoder row)."));
    return;
  }

  const prompt = el("textarea", {id: "prompt", rows: 3, style: "width: 100%; max-width: 900px", "aria-label": "prompt",
                                 placeholder: "Type a prompt…"}, param("prompt") || "");
  const what = el("select", {id: "what", "aria-label": "steer with"},
    info.vectors.map((v) => el("option", {value: "v:" + v.name}, `vector ${v.name} (${v.sites.join(", ")})`)),
    info.dictionaries.map((x) => el("option", {value: "d:" + x.name}, `feature of ${x.name} (${x.target_site}, d_sae ${x.d_sae})`)));
  const latent = el("input", {type: "number", id: "latent", min: 0, value: param("i") || 0, style: "width: 7em", "aria-label": "latent"});
  const latentBox = el("label", {}, "latent ", latent);
  const scale = el("input", {type: "number", id: "scale", step: "any", value: param("scale") || 4, style: "width: 7em", "aria-label": "scale"});
  const slider = el("input", {type: "range", id: "scale-range", min: -20, max: 20, step: 0.5, value: Number(scale.value), "aria-label": "scale slider"});
  const site = el("select", {id: "site", "aria-label": "site"}, el("option", {value: ""}, "its own site"),
    info.sites.map((s) => el("option", {value: s}, s)));
  const maxTokens = el("input", {type: "number", id: "max-tokens", min: 1, max: info.limits.max_new_tokens,
                                 value: info.limits.max_new_tokens, style: "width: 5em", "aria-label": "max new tokens"});
  const run = el("button", {id: "steer-run", type: "submit"}, "generate");
  const form = el("form", {id: "steer-form"}, el("div", {}, prompt),
    el("div", {class: "controls"}, what, latentBox, el("label", {}, "scale ", scale), slider,
       el("label", {}, "at ", site), el("label", {}, "new tokens ", maxTokens), run));
  const result = el("section", {id: "steer-result", hidden: true});
  main.append(form, result);
  if (param("d")) what.value = "d:" + param("d");
  else if (param("vector")) what.value = "v:" + param("vector");

  const syncKind = () => { latentBox.hidden = !what.value.startsWith("d:"); };
  what.addEventListener("change", syncKind);
  syncKind();
  slider.addEventListener("input", () => { scale.value = slider.value; });
  scale.addEventListener("input", () => { slider.value = scale.value; });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {prompt: prompt.value, scale: Number(scale.value), max_tokens: Number(maxTokens.value)};
    if (scale.value.trim() === "") body.scale = null;
    const [kind, name] = [what.value.slice(0, 1), what.value.slice(2)];
    if (kind === "v") body.vector = name; else { body.dictionary = name; body.latent = Number(latent.value); }
    if (site.value) body.site = site.value;
    run.disabled = true;
    try {
      const data = await postJSON("/api/steer", body);
      const iv = data.intervention;
      const label = iv.kind === "vector" ? `vector ${iv.vector}` : `latent ${iv.latent} of ${iv.dictionary}`;
      const left = el("div", {id: "unsteered"}), right = el("div", {id: "steered"});
      generation(left, "Unsteered", body.prompt, data.unsteered, null);
      generation(right, `Steered: ${label} × ${fmt(iv.scale)} at ${iv.sites.join(", ")}`, body.prompt, data.steered, data.kl.per_step);
      const kl = el("p", {id: "kl"}, el("b", {}, "KL(steered ‖ unsteered): "),
        `mean ${fmt(data.kl.mean, 4)} nats over ${data.kl.per_step.length} steps`,
        el("br"), el("span", {class: "note"}, `${data.kl.what}. The steered tokens are shaded by it (hover a token for its value).`));
      result.replaceChildren(el("p", {class: "note"}, `Prompt: ${data.prompt_tokens} tokens; greedy decoding.`),
        el("div", {class: "grid2"}, left, right), kl);
      const probes = Object.entries(data.probes);
      if (probes.length) {
        result.appendChild(el("h2", {}, "Probe scores of both texts"));
        result.appendChild(table(["probe", "site", "reduction", "unsteered", "steered", "positive means"],
          probes.map(([name, p]) => [name, p.site, p.reduction, p.unsteered, p.steered, p.labels[1]]), {class: "probes"}));
        result.appendChild(el("p", {class: "note"}, "Each probe reads prompt + generated text through the unsteered model (x·w + b)."));
      }
      result.dataset.scale = String(iv.scale);
    } catch (err) {
      result.replaceChildren();
      showError(result, err);
    } finally {
      result.hidden = false;
      run.disabled = false;
    }
  });
  if (prompt.value && param("run")) form.requestSubmit();
});

// Shared by the live pages (explore, steer): token display and waiting for the live model.
"use strict";

// A token's text made visible: spaces, newlines and tabs as symbols.
function showToken(t) {
  return String(t).replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅";
}

// Wait for the live model (polling /api/health while it loads), then GET /api/live.
async function waitForLive(line) {
  for (;;) {
    const health = await api("/api/health");
    const live = health.live;
    if (!live) throw new Error("This interplab ui has no live model: start `interplab ui` with a model to use this page.");
    if (live.state === "ready") return api("/api/live");
    if (live.state === "error") throw new Error(`The model ${live.model} failed to load: ${live.error}`);
    line.textContent = `Loading the model ${live.model}… (this page continues when it is ready)`;
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
}

// Shared helpers of every page: DOM building (text only, never HTML from data), the JSON API,
// number formatting and the top navigation.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function postJSON(path, data) {
  return api(path, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(data)});
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const d = digits || 4;
    const a = Math.abs(value);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? value.toExponential(d - 1) : value.toPrecision(d).replace(/\.?0+$/, "");
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function param(name) { return new URLSearchParams(window.location.search).get(name); }

function runLink(id, text) { return el("a", {href: "/run?id=" + encodeURIComponent(id)}, text || id); }

function nav(here) {
  const links = [["/", "runs"], ["/features", "features"], ["/explore", "prompt explorer"], ["/steer", "steering"]];
  return el("header", {class: "top"}, el("b", {}, "interplab"),
    links.map(([href, label]) => el("a", {href, class: label === here ? "here" : null}, label)));
}

function showError(container, err) {
  container.appendChild(el("p", {class: "error", role: "alert"}, String(err && err.message ? err.message : err)));
}

function table(header, rows, opts) {
  const t = el("table", {class: opts && opts.class});
  t.appendChild(el("thead", {}, el("tr", {}, header.map((h) => el("th", {}, String(h))))));
  const body = el("tbody");
  for (const row of rows) {
    body.appendChild(el("tr", {}, row.map((c) => el("td", {class: typeof c === "number" ? "num" : null}, c instanceof Node ? c : fmt(c)))));
  }
  t.appendChild(body);
  return t;
}

function kv(obj) {
  const box = el("div", {class: "kv"});
  for (const [k, v] of Object.entries(obj || {})) { box.appendChild(el("div", {}, k)); box.appendChild(el("div", {}, fmt(v))); }
  return box;
}

function page(here, build) {
  document.addEventListener("DOMContentLoaded", async () => {
    document.body.prepend(nav(here));
    const main = document.querySelector("main");
    try { await build(main); } catch (err) { showError(main, err); }
    document.body.dataset.ready = "1";
  });
}

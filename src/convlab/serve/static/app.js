"use strict";
// Shared by the three pages: requests whose errors become text, elements built with textContent only,
// the list of served models, and the switch between pages (#predict, #runs, #learn).
const convlab = (() => {
  // A server started with --token wants it on every API request: asked for once, kept for this tab.
  const TOKEN_KEY = "convlab-token";

  async function request(url, options = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = new Headers(options.headers || {});
    if (token) headers.set("Authorization", `Bearer ${token}`);
    let response;
    try {
      response = await fetch(url, {...options, headers});
    } catch (err) {
      throw new Error(`the server did not answer ${url} (${err.message})`);
    }
    if (response.status === 401) document.getElementById("token-form").hidden = false;
    if (!response.ok) {
      let message = `${response.status} ${response.statusText} from ${url}`;
      try {
        const body = await response.json();
        if (body && typeof body.error === "string") message = body.error;
      } catch (_) { /* not JSON: keep the status line */ }
      if (response.status === 401) message += "; enter the server's token at the top of the page";
      throw new Error(message);
    }
    return response;
  }

  async function json(url, options) {
    return (await request(url, options)).json();
  }

  function showError(id, err) {
    document.getElementById(id).textContent = err ? String(err.message || err) : "";
  }

  // el("td", {className: "num"}, ["0.93"]): strings become text nodes, never HTML.
  function el(tag, props = {}, children = []) {
    const node = Object.assign(document.createElement(tag), props);
    for (const child of children) node.append(typeof child === "string" ? document.createTextNode(child) : child);
    return node;
  }

  let modelsRequest = null;
  function models() {
    if (!modelsRequest) modelsRequest = json("api/models");
    return modelsRequest;
  }

  // The attribution methods of the registry, for the method menus: {default, methods: [{name, summary, signed, warning}]}.
  let methodsRequest = null;
  async function attributionMethods(select) {
    if (!methodsRequest) methodsRequest = json("api/attribute-methods");
    const doc = await methodsRequest;
    select.replaceChildren(...doc.methods.map(m => el("option", {value: m.name, textContent: m.name, title: m.summary})));
    select.value = doc.default;
    return doc.methods;
  }

  // "3 images", "1 image"
  function count(n, noun) {
    return `${n} ${noun}${n === 1 ? "" : "s"}`;
  }

  function fillModelSelect(select, list) {
    select.replaceChildren(...list.map(m => el("option", {value: m.name, textContent: m.name})));
  }

  // As convlab explain prints numbers: 4, -0.5, 0.6225.
  function fmt(value) {
    return Number.isInteger(value) ? String(value) : String(parseFloat(value.toPrecision(4)));
  }

  function percent(value) {
    return `${(100 * value).toFixed(1)}%`;
  }

  const PAGES = ["predict", "runs", "learn"];
  function showPage() {
    const wanted = location.hash.slice(1);
    const page = PAGES.includes(wanted) ? wanted : "predict";
    for (const name of PAGES) document.getElementById(name).hidden = name !== page;
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("current", link.dataset.page === page);
    }
    document.dispatchEvent(new CustomEvent("convlab:page", {detail: page}));
  }
  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("token-form").addEventListener("submit", event => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
      location.reload();
    });
  });
  window.addEventListener("hashchange", showPage);
  document.addEventListener("DOMContentLoaded", showPage);

  return {request, json, showError, el, models, attributionMethods, count, fillModelSelect, fmt, percent};
})();

"use strict";
// The Learn page: POST api/explain/conv (the trace `convlab explain conv` prints, as numbers) and step
// through its windows: the window highlighted on the input, its products, their sum, the output cell.
(() => {
  const $ = id => document.getElementById(id);
  const el = convlab.el;
  const fmt = convlab.fmt;
  let trace = null;
  let step = 0;
  let started = false;

  const asText = matrix => matrix.map(row => row.map(fmt).join(" ")).join("\n");
  // Rows may be written one per line or separated by ';' (what explain's parser reads).
  const asRows = text => text.split(/[;\n]/).map(row => row.trim()).filter(Boolean).join("; ");

  // A table of numbers; cellClass(i, j) names the class of each cell.
  function grid(table, matrix, cellClass) {
    table.replaceChildren(...matrix.map((row, i) =>
      el("tr", {}, row.map((v, j) => el("td", {className: cellClass(i, j), textContent: fmt(v)})))));
  }

  function render() {
    const w = trace.windows[step];
    const kh = trace.slid.length, kw = trace.slid[0].length, p = trace.padding;
    const h = trace.input.length, wd = trace.input[0].length;
    $("learn-position").textContent =
      `window ${step + 1} of ${trace.windows.length}: output row ${w.row}, column ${w.col}`;
    $("learn-input-caption").textContent = p ? `input with ${p} ring(s) of zero padding` : "input";
    grid($("learn-grid-input"), trace.padded, (i, j) => {
      const inside = i >= w.top && i < w.top + kh && j >= w.left && j < w.left + kw;
      const padding = i < p || j < p || i >= h + p || j >= wd + p;
      return [inside ? "on" : "", padding ? "pad" : ""].join(" ").trim();
    });
    grid($("learn-grid-kernel"), trace.slid, () => "");
    grid($("learn-grid-products"), w.products, () => "on");
    const index = (i, j) => i * trace.output[0].length + j;
    grid($("learn-grid-output"), trace.output, (i, j) =>
      index(i, j) === step ? "on" : index(i, j) < step ? "done" : "");
    $("learn-sum").textContent = `sum = ${w.products.flat().map(fmt).join(" + ")} = ${fmt(w.sum)}`;
    $("learn-prev").disabled = step === 0;
    $("learn-next").disabled = step === trace.windows.length - 1;
  }

  async function compute(body) {
    convlab.showError("learn-error", null);
    try {
      trace = await convlab.json("api/explain/conv", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    } catch (err) {
      convlab.showError("learn-error", err);
      return;
    }
    step = 0;
    $("learn-input").value = asText(trace.input);
    $("learn-kernel").value = asText(trace.kernel);
    $("learn-stride").value = trace.stride;
    $("learn-padding").value = trace.padding;
    $("learn-mode").value = trace.mode;
    $("learn-mode-line").textContent = trace.mode_line;
    render();
  }

  function fromForm() {
    return {input: asRows($("learn-input").value), kernel: asRows($("learn-kernel").value),
            stride: Number($("learn-stride").value), padding: Number($("learn-padding").value),
            mode: $("learn-mode").value};
  }

  document.addEventListener("convlab:page", event => {
    if (event.detail !== "learn" || started) return;
    started = true;
    $("learn-run").addEventListener("click", () => compute(fromForm()));
    $("learn-example").addEventListener("click", () => compute({}));
    $("learn-prev").addEventListener("click", () => { if (trace && step > 0) { step -= 1; render(); } });
    $("learn-next").addEventListener("click", () => {
      if (trace && step < trace.windows.length - 1) { step += 1; render(); }
    });
    compute({});
  });
})();

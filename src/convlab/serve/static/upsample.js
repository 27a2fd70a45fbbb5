"use strict";
// The Learn page's upsampling stepper: POST api/explain/upsample (the stamps `convlab explain upsample` prints,
// as numbers) and step through them: step 0 is an empty output, step k adds input cell k's stamp (its value
// times the kernel) and shows the running output and how many stamps cover each cell so far.
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
  const ones = size => Array.from({length: size}, () => Array(size).fill(1));

  // A table of numbers; cellClass(i, j) names the class of each cell.
  function grid(table, matrix, cellClass) {
    table.replaceChildren(...matrix.map((row, i) =>
      el("tr", {}, row.map((v, j) => el("td", {className: cellClass(i, j), textContent: fmt(v)})))));
  }

  function render() {
    const stamps = trace.stamps, last = stamps[stamps.length - 1];
    const rows = last.after.length, cols = last.after[0].length, p = trace.padding;
    const kh = trace.kernel.length, kw = trace.kernel[0].length;
    const stamp = step > 0 ? stamps[step - 1] : null;
    const zeros = last.after.map(row => row.map(() => 0));
    const under = (i, j) => stamp && i >= stamp.top && i < stamp.top + kh && j >= stamp.left && j < stamp.left + kw;
    const cut = (i, j) => i < p || j < p || i >= rows - p || j >= cols - p;  // cut away by the padding
    const outputClass = (i, j) => [under(i, j) ? "on" : "", cut(i, j) ? "pad" : ""].join(" ").trim();

    $("upsample-position").textContent = stamp
      ? `stamp ${step} of ${stamps.length}: input (${stamp.row},${stamp.col}) = ${fmt(stamp.value)} times the ` +
        `kernel, added at rows ${stamp.top}-${stamp.top + kh - 1}, columns ${stamp.left}-${stamp.left + kw - 1}`
      : `the output starts empty: ${rows}x${cols} cells, (n - 1) x stride + kernel size`;
    const index = (i, j) => i * trace.input[0].length + j;
    grid($("upsample-grid-input"), trace.input, (i, j) =>
      index(i, j) === step - 1 ? "on" : index(i, j) < step - 1 ? "done" : "");
    grid($("upsample-grid-stamp"), stamp ? stamp.stamp : trace.kernel.map(row => row.map(() => 0)), () => "on");
    $("upsample-stamp-caption").textContent = stamp ? `${fmt(stamp.value)} x kernel` : "stamp";
    grid($("upsample-grid-output"), stamp ? stamp.after : zeros, outputClass);
    grid($("upsample-grid-counts"), stamp ? stamp.covered : zeros, outputClass);
    $("upsample-padding-note").textContent = p
      ? `padding ${p}: the grey border is cut away, leaving the ${rows - 2 * p}x${cols - 2 * p} output` : "";
    const done = step === stamps.length;
    $("upsample-result").textContent = done
      ? `output: ${trace.output.map(row => row.map(fmt).join(" ")).join("; ")}; ` +
        `torch.nn.functional.conv_transpose2d: ${trace.same ? "the same" : "different"}`
      : "";
    $("upsample-evenness").textContent = done ? `kernel ${kh}x${kw}, stride ${trace.stride}: ${trace.evenness}` : "";
    $("upsample-prev").disabled = step === 0;
    $("upsample-next").disabled = done;
  }

  async function compute(body) {
    convlab.showError("upsample-error", null);
    try {
      trace = await convlab.json("api/explain/upsample", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    } catch (err) {
      convlab.showError("upsample-error", err);
      return;
    }
    step = 0;
    $("upsample-input").value = asText(trace.input);
    $("upsample-kernel").value = asText(trace.kernel);
    $("upsample-stride").value = trace.stride;
    $("upsample-padding").value = trace.padding;
    // the switch shows which kernel of ones this is, if it is one
    const onesKernel = trace.stride === 2 && trace.padding === 0 && trace.kernel.length === trace.kernel[0].length &&
      trace.kernel.every(row => row.every(v => v === 1));
    for (const radio of document.querySelectorAll("input[name=upsample-size]")) {
      radio.checked = onesKernel && radio.value === String(trace.kernel.length);
    }
    render();
  }

  function fromForm() {
    return {input: asRows($("upsample-input").value), kernel: asRows($("upsample-kernel").value),
            stride: Number($("upsample-stride").value), padding: Number($("upsample-padding").value)};
  }

  document.addEventListener("convlab:page", event => {
    if (event.detail !== "learn" || started) return;
    started = true;
    $("upsample-run").addEventListener("click", () => compute(fromForm()));
    $("upsample-example").addEventListener("click", () => compute({}));
    // The switch: a kernel of ones, 3x3 or 4x4, at stride 2 on the same input; the counts show the checkerboard.
    for (const radio of document.querySelectorAll("input[name=upsample-size]")) {
      radio.addEventListener("change", () => {
        const size = Number(radio.value);
        compute({...fromForm(), kernel: ones(size), stride: 2, padding: 0});
      });
    }
    $("upsample-prev").addEventListener("click", () => { if (trace && step > 0) { step -= 1; render(); } });
    $("upsample-next").addEventListener("click", () => {
      if (trace && step < trace.stamps.length) { step += 1; render(); }
    });
    compute({});
  });
})();

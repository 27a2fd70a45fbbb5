"use strict";
// The Learn page's NMS stepper: POST api/explain/nms (the rounds `convlab explain nms` prints, as numbers) and
// step through them: step 0 is the boxes sorted by score, step k is round k (its best box kept, the boxes it
// suppresses greyed with their IoU).
(() => {
  const $ = id => document.getElementById(id);
  const fmt = convlab.fmt;
  const MARGIN = 8;
  const WIDTH = 400;  // pixels on the page; the boxes' own coordinates set the view box
  let trace = null;
  let step = 0;
  let started = false;
  // Boxes with classes are compared only with boxes of their own class.
  const ofClass = i => trace.classes ? `, class ${trace.classes[i]}` : "";

  // An SVG element, in the namespace of the page's own <svg> (the HTML parser put it there).
  function svg(tag, attributes = {}, text = "") {
    const node = document.createElementNS($("nms-picture").namespaceURI, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    node.textContent = text;
    return node;
  }

  // What each box is at this step: waiting, best (kept this round), kept, suppressed (this round) or gone
  // (suppressed earlier); and its IoU with this round's best box, where it was compared.
  function states() {
    const state = trace.boxes.map(() => "waiting");
    const iou = new Map();
    trace.rounds.slice(0, step).forEach((round, r) => {
      const current = r === step - 1;
      state[round.best] = current ? "kept best" : "kept";
      for (const c of round.compared) {
        if (current) iou.set(c.index, c);
        if (c.suppressed) state[c.index] = current ? "suppressed" : "gone";
      }
    });
    return {state, iou};
  }

  function draw(state, iou) {
    const xs = trace.boxes.flatMap(b => [b[0], b[2]]), ys = trace.boxes.flatMap(b => [b[1], b[3]]);
    const left = Math.min(...xs) - MARGIN, top = Math.min(...ys) - MARGIN;
    const width = Math.max(...xs) - left + MARGIN, height = Math.max(...ys) - top + MARGIN;
    const picture = $("nms-picture");
    picture.setAttribute("viewBox", `${left} ${top} ${width} ${height}`);
    picture.setAttribute("width", WIDTH);
    picture.setAttribute("height", Math.round(WIDTH * height / width));
    // the lowest scores first, so the best boxes are drawn on top
    const order = [...trace.order].reverse();
    picture.replaceChildren(...order.map(i => {
      const [x1, y1, x2, y2] = trace.boxes[i];
      const group = svg("g", {"class": state[i], "data-index": i});
      group.append(svg("rect", {x: x1, y: y1, width: x2 - x1, height: y2 - y1}),
                   svg("text", {x: x1 + 1.5, y: y1 + 6}, `${i}: ${fmt(trace.scores[i])}${ofClass(i)}`));
      if (iou.has(i)) group.append(svg("text", {x: x1 + 1.5, y: y2 - 2}, `IoU ${fmt(iou.get(i).iou)}`));
      return group;
    }));
  }

  function describe() {
    const t = fmt(trace.iou);
    const kept = trace.kept.slice(0, step);
    const list = $("nms-compared");
    if (step === 0) {
      $("nms-position").textContent = "sorted by score: " +
        trace.order.map(i => `${i} (${fmt(trace.scores[i])})`).join(", ");
      list.replaceChildren();
    } else {
      const round = trace.rounds[step - 1];
      const others = round.compared.length;
      $("nms-position").textContent = `round ${step} of ${trace.rounds.length}: keep box ${round.best} ` +
        `(score ${fmt(trace.scores[round.best])}), the best left; ` +
        (others ? `${others} other box${others === 1 ? "" : "es"}` : "no other box") +
        `${trace.classes ? " of class " + trace.classes[round.best] : ""} in play`;
      list.replaceChildren(...round.compared.map(c => convlab.el("li", {
        className: c.suppressed ? "suppressed" : "",
        textContent: `box ${c.index}: IoU with box ${round.best} = ${fmt(c.iou)} ` +
                     (c.suppressed ? `> ${t}, suppressed` : `<= ${t}, stays`)})));
    }
    const done = step === trace.rounds.length;
    const same = trace.kept.join() === trace.reference.join() ? "the same" : "different";
    const library = trace.classes ? "torchvision.ops.batched_nms" : "torchvision.ops.nms";
    $("nms-kept").textContent = done
      ? `kept: ${kept.join(", ")}; ${library} keeps ${trace.reference.join(", ")}: ${same}`
      : `kept so far: ${kept.length ? kept.join(", ") : "none"}`;
  }

  function render() {
    const {state, iou} = states();
    draw(state, iou);
    describe();
    $("nms-prev").disabled = step === 0;
    $("nms-next").disabled = step === trace.rounds.length;
  }

  async function compute(body) {
    convlab.showError("nms-error", null);
    try {
      trace = await convlab.json("api/explain/nms", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    } catch (err) {
      convlab.showError("nms-error", err);
      return;
    }
    step = 0;
    $("nms-boxes").value = trace.boxes.map((b, i) =>
      [...b, trace.scores[i], ...(trace.classes ? [trace.classes[i]] : [])].map(String).join(" ")).join("\n");
    $("nms-iou").value = trace.iou;
    render();
  }

  function fromForm() {
    // one box per line or per ';' (what explain's parser reads); the threshold as typed, checked by the server
    const boxes = $("nms-boxes").value.split(/[;\n]/).map(row => row.trim()).filter(Boolean).join("; ");
    const iou = $("nms-iou").value.trim();
    return {boxes, iou: iou === "" || isNaN(Number(iou)) ? iou : Number(iou)};
  }

  document.addEventListener("convlab:page", event => {
    if (event.detail !== "learn" || started) return;
    started = true;
    $("nms-run").addEventListener("click", () => compute(fromForm()));
    $("nms-iou").addEventListener("change", () => compute(fromForm()));
    $("nms-example").addEventListener("click", () => compute({}));
    $("nms-prev").addEventListener("click", () => { if (trace && step > 0) { step -= 1; render(); } });
    $("nms-next").addEventListener("click", () => {
      if (trace && step < trace.rounds.length) { step += 1; render(); }
    });
    compute({});
  });
})();

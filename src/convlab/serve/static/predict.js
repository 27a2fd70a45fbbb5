"use strict";
// The Predict page: images -> POST predict/{model}?top_k=K (the server's predict API) -> top-k bars per
// image; with the toggle on, POST api/attribute/{model}?method=M per image -> the overlay beside it (the
// methods of the menu come from GET api/attribute-methods, Grad-CAM first). A detector's images ->
// POST predict/{model}?conf=C&iou=I -> its boxes drawn over each image, with their labels and scores;
// a detector has no top-k or attribution, so those controls are hidden for it. A segmenter's images ->
// POST predict/{model}?mask=png -> each image on a canvas with its class map laid over it in the PASCAL VOC
// colours (the palette PNG's own), a legend of the classes present and an opacity slider. A multi-label
// model's images -> POST predict/{model}?top_k=K -> every label at or above its threshold (its probability
// against its threshold, or "no label above its threshold"), then the top-k whatever their thresholds.
(() => {
  const $ = id => document.getElementById(id);
  let modelList = [];
  let methodList = [];  // [{name, summary, signed, warning}] from the server
  let files = [];     // the images last chosen
  let cards = [];     // one per image: {file, overlay (img), camFor (model name of the overlay shown)}
  let urls = [];      // object URLs to release when the images change

  const currentModel = () => modelList.find(m => m.name === $("predict-model").value);

  const taskOf = () => (currentModel() && currentModel().task) || "classify";

  const fixed = v => (typeof v === "number" ? v.toFixed(3) : "n/a");
  // each task's headline test metrics, or null when the metrics lack them (a variant's may)
  const ACCURACY = {
    classify: m => (typeof m.accuracy !== "number" ? null : `test accuracy ${convlab.percent(m.accuracy)}` +
      (typeof m.macro_f1 === "number" ? `, macro F1 ${m.macro_f1.toFixed(3)}` : "")),
    multilabel: m => (!("mean_ap" in m) ? null : `test mean AP ${fixed(m.mean_ap)}, micro F1 ${fixed(m.micro_f1)}`),
    detect: m => (typeof m.map !== "number" ? null : `test mAP ${m.map.toFixed(3)}, AP50 ${m.map50.toFixed(3)}`),
    segment: m => (typeof m.miou !== "number" ? null : `test mIoU ${m.miou.toFixed(3)}, Dice ${m.dice.toFixed(3)}, ` +
      `pixel accuracy ${convlab.percent(m.pixel_accuracy)}`),
  };

  function showAccuracy() {
    const metrics = currentModel() && currentModel().metrics;
    const task = taskOf();
    $("predict-accuracy").textContent = (metrics && ACCURACY[task](metrics)) || "no test metrics for this model";
    // each control shows for its tasks: top-k for a classifier and a multi-label model, the maps for a
    // classifier, the thresholds for a detector, the opacity for a segmenter
    for (const node of document.querySelectorAll("#predict [data-task]")) {
      node.hidden = !node.dataset.task.split(" ").includes(task);
    }
  }

  function objectURL(blob) {
    const url = URL.createObjectURL(blob);
    urls.push(url);
    return url;
  }

  function bars(top) {
    return convlab.el("div", {className: "bars"}, top.map(entry => {
      const fill = convlab.el("span");
      fill.style.width = `${(100 * entry.prob).toFixed(1)}%`;
      return convlab.el("div", {className: "bar-row"}, [
        convlab.el("span", {className: "label", textContent: entry.label, title: entry.label}),
        convlab.el("div", {className: "bar"}, [fill]),
        convlab.el("span", {className: "prob", textContent: entry.prob.toFixed(3)}),
      ]);
    }));
  }

  // The boxes over the image: one absolutely placed element per box, its corners in percent of the image's
  // own width and height, so the boxes follow the picture at any displayed size.
  function boxesOver(file, result) {
    const labels = currentModel().labels;
    const percent = (value, total) => `${(100 * value / total).toFixed(3)}%`;
    const layer = convlab.el("div", {className: "boxes"}, result.boxes.map(found => {
      const [x1, y1, x2, y2] = found.box;
      const hue = Math.max(0, labels.indexOf(found.label)) % 6;  // one colour per class
      const box = convlab.el("div", {className: `box hue${hue}`, title: `${found.label} ${found.score}`}, [
        convlab.el("span", {className: "tag", textContent: `${found.label} ${found.score.toFixed(2)}`})]);
      box.dataset.label = found.label;
      Object.assign(box.style, {left: percent(x1, result.width), top: percent(y1, result.height),
                                width: percent(x2 - x1, result.width), height: percent(y2 - y1, result.height)});
      return box;
    }));
    const picture = convlab.el("img", {src: objectURL(file), alt: `uploaded ${file.name}`});
    return convlab.el("div", {className: "frame"}, [picture, layer]);
  }

  function boxList(boxes) {
    if (!boxes.length) return convlab.el("p", {className: "note", textContent: "no box above the score threshold"});
    return convlab.el("ol", {className: "box-list"}, boxes.map(found =>
      convlab.el("li", {textContent: `${found.label} ${found.score.toFixed(3)} at ` +
                                     `[${found.box.map(v => v.toFixed(0)).join(", ")}]`})));
  }

  function renderBoxes(results) {
    cards = [];  // no attribution overlays for a detector
    $("predict-results").replaceChildren(...results.map((result, i) =>
      convlab.el("div", {className: "card detection"}, [
        convlab.el("p", {className: "name", textContent: files[i].name}),
        boxesOver(files[i], result),
        boxList(result.boxes),
      ])));
  }

  // PASCAL VOC's colour map, as segmentation/figures.py makes it: index i's bits spread over R, G and B.
  function vocColour(index) {
    const rgb = [0, 0, 0];
    for (let bit = 7, value = index; bit >= 0; bit--, value >>= 3) {
      for (let channel = 0; channel < 3; channel++) rgb[channel] |= ((value >> channel) & 1) << bit;
    }
    return rgb;
  }

  const loaded = src => { const image = new Image(); image.src = src; return image.decode().then(() => image); };

  let masks = [];  // one per segmented image: {canvas, picture, layer (the mask, background transparent)}

  // The mask PNG (its palette's colours) on a canvas of the image's size, class 0 (black) made transparent.
  function maskLayer(maskImage, width, height) {
    const layer = convlab.el("canvas", {width, height});
    const context = layer.getContext("2d");
    context.drawImage(maskImage, 0, 0);
    const pixels = context.getImageData(0, 0, width, height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 0) data[i + 3] = 0;
    }
    context.putImageData(pixels, 0, 0);
    return layer;
  }

  function drawMasks() {
    const opacity = parseFloat($("predict-opacity").value);
    $("predict-opacity-value").textContent = opacity.toFixed(2);
    for (const shown of masks) {
      const context = shown.canvas.getContext("2d");
      context.globalAlpha = 1;
      context.drawImage(shown.picture, 0, 0, shown.canvas.width, shown.canvas.height);
      context.globalAlpha = opacity;
      context.drawImage(shown.layer, 0, 0);
    }
  }

  function legend(pixels) {
    const labels = currentModel().labels;
    const total = Object.values(pixels).reduce((a, b) => a + b, 0);
    return convlab.el("ul", {className: "legend"}, Object.entries(pixels).map(([name, count]) => {
      const swatch = convlab.el("span", {className: "swatch"});
      swatch.style.background = `rgb(${vocColour(labels.indexOf(name)).join(",")})`;
      const item = convlab.el("li", {}, [swatch, `${name} ${convlab.percent(count / total)}`]);
      item.dataset.label = name;
      return item;
    }));
  }

  async function renderMasks(results) {
    cards = [];  // no attribution overlays for a segmenter
    const drawn = await Promise.all(results.map(async (result, i) => {
      const [picture, maskImage] = await Promise.all([
        loaded(objectURL(files[i])), loaded(`data:image/png;base64,${result.mask}`)]);
      const canvas = convlab.el("canvas", {width: result.width, height: result.height, className: "overlay"});
      canvas.setAttribute("aria-label", `${files[i].name} with its mask`);
      return {canvas, picture, layer: maskLayer(maskImage, result.width, result.height),
              card: convlab.el("div", {className: "card segmentation"}, [
                convlab.el("p", {className: "name", textContent: files[i].name}), canvas, legend(result.pixels)])};
    }));
    masks = drawn;
    drawMasks();
    $("predict-results").replaceChildren(...drawn.map(shown => shown.card));
  }

  function render(results) {
    const list = $("predict-results");
    cards = results.map((result, i) => {
      const picture = convlab.el("img", {src: objectURL(files[i]), alt: `uploaded ${files[i].name}`});
      const overlay = convlab.el("img", {alt: `attribution of ${files[i].name}`, hidden: true, className: "gradcam"});
      const card = convlab.el("div", {className: "card prediction"}, [
        convlab.el("p", {className: "name", textContent: files[i].name}),
        convlab.el("div", {className: "pictures"}, [picture, overlay]),
        bars(result.top),
      ]);
      return {file: files[i], card, overlay, camFor: null};
    });
    list.replaceChildren(...cards.map(c => c.card));
  }

  // A multi-label model's labels: each bar has a tick at the label's threshold.
  function labelBars(labels) {
    return convlab.el("div", {className: "bars labels"}, labels.map(entry => {
      const fill = convlab.el("span");
      fill.style.width = `${(100 * entry.prob).toFixed(1)}%`;
      const tick = convlab.el("span", {className: "tick"});
      tick.style.left = `${(100 * entry.threshold).toFixed(1)}%`;
      const row = convlab.el("div", {className: "bar-row", title: `${entry.label}: ${entry.prob.toFixed(3)}, ` +
                                                                  `threshold ${entry.threshold.toFixed(3)}`}, [
        convlab.el("span", {className: "label", textContent: entry.label}),
        convlab.el("div", {className: "bar"}, [fill, tick]),
        convlab.el("span", {className: "prob",
                            textContent: `${entry.prob.toFixed(3)} ≥ ${entry.threshold.toFixed(3)}`}),
      ]);
      row.dataset.label = entry.label;
      return row;
    }));
  }

  function renderLabels(results) {
    cards = [];  // no attribution overlays: they explain one class, and an image has several labels
    $("predict-results").replaceChildren(...results.map((result, i) =>
      convlab.el("div", {className: "card multilabel"}, [
        convlab.el("p", {className: "name", textContent: files[i].name}),
        convlab.el("img", {src: objectURL(files[i]), alt: `uploaded ${files[i].name}`}),
        convlab.el("p", {className: "note", textContent: "labels: probability ≥ threshold"}),
        result.labels.length ? labelBars(result.labels)
          : convlab.el("p", {className: "none", textContent: "no label above its threshold"}),
        convlab.el("p", {className: "note", textContent: `top ${result.top.length}, thresholds aside`}),
        bars(result.top),
      ])));
  }

  function showMethodNote() {
    const method = methodList.find(m => m.name === $("predict-method").value);
    $("predict-method-note").textContent = method ? (method.warning ? `warning: ${method.warning}` : method.summary) : "";
  }

  let overlayRound = 0;  // each menu/toggle/model change starts a round; an older round's answers are dropped

  async function showGradcams() {
    const round = ++overlayRound;
    const on = $("predict-gradcam").checked;
    const model = currentModel();
    const method = $("predict-method").value || "gradcam";
    const status = $("predict-method-status");
    const todo = cards.filter(entry => on && model && entry.camFor !== `${model.name}/${method}`);
    for (const entry of cards) entry.overlay.hidden = !on;
    status.textContent = todo.length ? `computing ${method} for ${convlab.count(todo.length, "image")}…` : "";
    let ms;
    try {
      ms = await fetchOverlays(todo, model, method, round);
    } catch (err) {
      if (round === overlayRound) status.textContent = "";
      throw err;
    }
    if (ms !== null && todo.length) {
      status.textContent = `${method}: ${ms.toFixed(0)} ms for ${convlab.count(todo.length, "image")}`;
    }
  }

  // The overlays of `todo`, one request each -> the milliseconds the server spent, or null when superseded.
  async function fetchOverlays(todo, model, method, round) {
    let ms = 0;
    for (const entry of todo) {
      const body = new FormData();
      body.append("file", entry.file, entry.file.name);
      const response = await convlab.request(
        `api/attribute/${encodeURIComponent(model.name)}?method=${encodeURIComponent(method)}`, {method: "POST", body});
      const blob = await response.blob();
      if (round !== overlayRound) return null;  // a newer choice owns the overlays now
      entry.overlay.src = objectURL(blob);
      const index = parseInt(response.headers.get("X-Attribution-Class-Index"), 10);
      const label = (model.labels && model.labels[index]) || `class ${index}`;
      entry.overlay.title = `${method} for '${label}', ${response.headers.get("X-Attribution-Ms")} ms`;
      entry.camFor = `${model.name}/${method}`;
      ms += parseFloat(response.headers.get("X-Attribution-Ms")) || 0;
    }
    return ms;
  }

  async function predict() {
    convlab.showError("predict-error", null);
    const model = currentModel();
    if (!model || !files.length) return;
    const k = Math.max(1, parseInt($("predict-topk").value, 10) || 3);
    const query = {
      classify: `top_k=${k}`,
      multilabel: `top_k=${k}`,
      detect: `conf=${encodeURIComponent($("predict-conf").value)}&iou=${encodeURIComponent($("predict-iou").value)}`,
      segment: "mask=png",
    }[taskOf()];
    const body = new FormData();
    for (const file of files) body.append("file", file, file.name);
    try {
      const results = await convlab.json(`predict/${encodeURIComponent(model.name)}?${query}`, {method: "POST", body});
      await RENDERERS[taskOf()](results);
    } catch (err) {
      convlab.showError("predict-error", err);
    }
  }

  // each task's answer drawn: a classifier's bars (and its overlays when the toggle is on), a multi-label
  // model's labels, a detector's boxes, a segmenter's masks
  const RENDERERS = {
    classify: async results => { render(results); await showGradcams(); },
    multilabel: renderLabels,
    detect: renderBoxes,
    segment: renderMasks,
  };

  function choose(chosen) {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    files = Array.from(chosen);
    predict();
  }

  async function start() {
    try {
      modelList = await convlab.models();
    } catch (err) {
      convlab.showError("predict-error", err);
      return;
    }
    if (!modelList.length) {
      convlab.showError("predict-error", "the server serves no model: start it with convlab serve RUN_DIR");
      return;
    }
    convlab.fillModelSelect($("predict-model"), modelList);
    try {
      methodList = await convlab.attributionMethods($("predict-method"));
      showMethodNote();
    } catch (err) {
      convlab.showError("predict-error", err);
    }
    showAccuracy();
    $("predict-model").addEventListener("change", () => { showAccuracy(); predict(); });
    for (const id of ["predict-topk", "predict-conf", "predict-iou"]) $(id).addEventListener("change", predict);
    $("predict-opacity").addEventListener("input", drawMasks);
    $("predict-gradcam").addEventListener("change", () =>
      showGradcams().catch(err => convlab.showError("predict-error", err)));
    $("predict-method").addEventListener("change", () => {
      showMethodNote();
      showGradcams().catch(err => convlab.showError("predict-error", err));
    });
    $("predict-files").addEventListener("change", event => choose(event.target.files));
    const drop = $("predict-drop");
    drop.addEventListener("dragover", event => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", event => {
      event.preventDefault();
      drop.classList.remove("over");
      choose(event.dataTransfer.files);
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();

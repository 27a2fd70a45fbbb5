"use strict";
// The Runs page: GET api/runs/{model} -> results first (accuracy, macro F1, per-class table), then the
// training curves, the calibration (ECE, NLL, the reliability diagram), the confusion matrix and the most
// confident mistakes, explained by Grad-CAM or by the method of the menu (GET api/mistakes/{model}?method=M).
// A multi-label run shows its mean AP, micro and macro F1, subset accuracy, Hamming loss and a per-label table
// with each label's threshold, then its training curves and calibration (no confusion matrix or mistakes: an
// image has several labels). A detection run shows its COCO mAP, AP50, AP75 and per-class AP, then its training
// and precision-recall curves and its confusion matrix at IoU 0.5. A segmentation run shows its mIoU, Dice,
// pixel accuracy and per-class IoU and Dice, then its training curves, its IoU per class and its worst test
// images with their masks.
(() => {
  const $ = id => document.getElementById(id);
  const el = convlab.el;
  let started = false;

  const num = v => (typeof v === "number" ? v.toFixed(4) : "n/a");  // COCO leaves undefined values null

  function detectionSummary(doc) {
    const m = doc.metrics;
    if (!m) return `${doc.name}: no test metrics (no metrics.json in the run folder)`;
    return `${doc.name} (${doc.model} on ${doc.data}): test mAP ${num(m.map)}, AP50 ${num(m.map50)}, ` +
           `AP75 ${num(m.map75)}, AR@100 ${num(m.mar100)} on ${m.num_images} images (${doc.metrics_source})`;
  }

  function detectionRows(metrics) {
    if (!metrics || !metrics.per_class_ap) return [];
    return Object.entries(metrics.per_class_ap).map(([name, ap]) =>
      el("tr", {}, [el("td", {textContent: name}), el("td", {className: "num", textContent: num(ap)})]));
  }

  function segmentationSummary(doc) {
    const m = doc.metrics;
    if (!m) return `${doc.name}: no test metrics (no metrics.json in the run folder)`;
    return `${doc.name} (${doc.model} on ${doc.data}): test mIoU ${num(m.miou)}, Dice ${num(m.dice)}, ` +
           `pixel accuracy ${num(m.pixel_accuracy)} on ${m.num_images} images (${doc.metrics_source})`;
  }

  function segmentationRows(metrics) {  // a class in neither truth nor prediction has no IoU: n/a
    if (!metrics || !metrics.per_class_iou) return [];
    return Object.entries(metrics.per_class_iou).map(([name, iou]) =>
      el("tr", {}, [el("td", {textContent: name}), el("td", {className: "num", textContent: num(iou)}),
                    el("td", {className: "num", textContent: num((metrics.per_class_dice || {})[name])})]));
  }

  function multilabelSummary(doc) {
    const m = doc.metrics;
    if (!m) return `${doc.name}: no test metrics (no metrics.json, and the test data could not be loaded)`;
    return `${doc.name} (${doc.model} on ${doc.data}): test mean AP ${num(m.mean_ap)}, micro F1 ` +
           `${num(m.micro_f1)}, macro F1 ${num(m.macro_f1)}, subset accuracy ${num(m.subset_accuracy)}, ` +
           `Hamming loss ${num(m.hamming_loss)} on ${m.num_samples} images (${doc.metrics_source})`;
  }

  // the label with the lowest F1 among those with test images is shaded, as in the classifier's table
  function lowestF1(rows) {
    const supported = rows.filter(r => r.support > 0).map(r => r.f1);
    return supported.length ? Math.min(...supported) : null;
  }

  function labelRows(metrics) {  // a label with no positive test image has no AP: n/a
    if (!metrics || !metrics.per_label) return [];
    const rows = Object.entries(metrics.per_label);
    const worst = lowestF1(rows.map(([, r]) => r));
    const cell = text => el("td", {className: "num", textContent: text});
    return rows.map(([name, r]) => el("tr", {className: r.support > 0 && r.f1 === worst ? "low" : ""}, [
      el("td", {textContent: name}),
      ...[r.precision, r.recall, r.f1].map(v => cell(v.toFixed(3))),
      cell(typeof r.ap === "number" ? r.ap.toFixed(3) : "n/a"),
      cell(String(r.support)),
      cell(r.threshold.toFixed(3)),
    ]));
  }

  const HEADS = {classify: ["class", "precision", "recall", "F1", "support"],
                 multilabel: ["label", "precision", "recall", "F1", "AP", "support", "threshold"],
                 detect: ["class", "AP@[.5:.95]"], segment: ["class", "IoU", "Dice"]};

  function classifierSummary(doc) {
    const m = doc.metrics;
    if (!m) return `${doc.name}: no test metrics (no metrics.json, and the test data could not be loaded)`;
    const parts = [`test accuracy ${m.accuracy.toFixed(4)}`];
    if (typeof m.top5_accuracy === "number") parts.push(`top-5 ${m.top5_accuracy.toFixed(4)}`);
    parts.push(`macro F1 ${m.macro_f1.toFixed(4)}`);
    return `${doc.name} (${doc.model} on ${doc.data}): ${parts.join(", ")} on ${m.num_samples} images ` +
           `(${doc.metrics_source})`;
  }

  function classRows(metrics) {
    if (!metrics) return [];
    const rows = Object.entries(metrics.per_class);
    const worst = lowestF1(rows.map(([, r]) => r));
    return rows.map(([name, r]) => el("tr", {className: r.support > 0 && r.f1 === worst ? "low" : ""}, [
      el("td", {textContent: name}),
      ...[r.precision, r.recall, r.f1].map(v => el("td", {className: "num", textContent: v.toFixed(3)})),
      el("td", {className: "num", textContent: String(r.support)}),
    ]));
  }

  // each task's summary line and table rows
  const SUMMARIES = {classify: classifierSummary, multilabel: multilabelSummary, detect: detectionSummary,
                     segment: segmentationSummary};
  const ROWS = {classify: classRows, multilabel: labelRows, detect: detectionRows, segment: segmentationRows};
  // what one forecast of the reliability diagram is
  const FORECASTS = {classify: "one forecast per test image: its top class's probability",
                     multilabel: "every (test image, label) pair a yes/no forecast"};

  // "ECE 0.1359 -> 0.0395, NLL 0.2631 -> 0.1494 nats (before -> after temperature scaling)", or without arrows
  function calibrationLine(doc) {
    const c = doc.calibration;
    if (!c) return "no calibration: the metrics have no ECE (a run written before it was measured)";
    const before = c.before_temperature;
    const pair = key => (before ? `${num(before[key])} -> ${num(c[key])}` : num(c[key]));
    return `test ECE ${pair("ece")}, NLL ${pair("nll")} nats` +
           (before ? " (before -> after the temperature fitted on validation)" : "") + `; ${FORECASTS[doc.task]}`;
  }

  function picture(img, uri) {
    img.hidden = !uri;
    if (uri) img.src = uri;
  }

  let current = null;  // the results shown: {name, doc}
  let methodList = [];  // the method menu's entries, for their warnings
  let overlayRound = 0;  // as on the Predict page: a newer method choice drops an older one's answer

  function mistake(m) {
    const pictures = [el("img", {src: m.image, alt: `test image ${m.index}`})];
    if (m.gradcam) pictures.push(el("img", {src: m.gradcam, alt: `gradcam of test image ${m.index}`, className: "explain"}));
    return el("figure", {className: "mistake"}, [
      ...pictures,
      el("figcaption", {textContent: `#${m.index}: true ${m.true}, predicted ${m.predicted} (${m.prob.toFixed(2)})`}),
    ]);
  }

  // The mistakes' second pictures, drawn with the chosen method (gradcam: the ones the results came with);
  // a model without a float torch graph (int8, .onnx) has none, and the status line says why.
  async function explainMistakes() {
    const round = ++overlayRound;
    const status = $("runs-method-status");
    const method = $("runs-method").value || "gradcam";
    status.textContent = current && current.doc.no_maps ? current.doc.no_maps : "";
    if (!current || !current.doc.mistakes.some(m => m.gradcam)) return;
    const pictures = Array.from(document.querySelectorAll("#runs-mistakes img.explain"));
    let overlays = current.doc.mistakes.map(m => m.gradcam);
    if (method !== "gradcam") {
      status.textContent = `computing ${method} for ${convlab.count(pictures.length, "image")}…`;
      try {
        const answer = await convlab.json(`api/mistakes/${encodeURIComponent(current.name)}?method=${encodeURIComponent(method)}`);
        if (round !== overlayRound) return;
        overlays = answer.mistakes.map(m => m.overlay);
        status.textContent = `${method}: ${answer.ms.toFixed(0)} ms for ${convlab.count(pictures.length, "image")}`;
      } catch (err) {
        if (round === overlayRound) status.textContent = "";
        throw err;
      }
    }
    pictures.forEach((img, i) => {
      img.src = overlays[i];
      img.alt = `${method} of test image ${current.doc.mistakes[i].index}`;
    });
  }

  async function show() {
    convlab.showError("runs-error", null);
    const name = $("runs-model").value;
    ++overlayRound;  // an answer still on its way belongs to the model shown before
    $("runs-method-status").textContent = "";
    $("runs-summary").textContent = `loading the results of ${name} ...`;
    try {
      const doc = await convlab.json(`api/runs/${encodeURIComponent(name)}`);
      current = {name, doc};
      const task = doc.task in HEADS ? doc.task : "classify";
      for (const node of document.querySelectorAll("#runs [data-task]")) {
        node.hidden = !node.dataset.task.split(" ").includes(task);
      }
      $("runs-summary").textContent = SUMMARIES[task](doc);
      $("runs-classes").tHead.rows[0].replaceChildren(...HEADS[task].map(text => el("th", {textContent: text})));
      $("runs-classes").tBodies[0].replaceChildren(...ROWS[task](doc.metrics));
      $("runs-notes").textContent = doc.notes.join("; ");
      picture($("runs-curves"), doc.curves);
      $("runs-calibration").textContent = calibrationLine(doc);
      picture($("runs-reliability"), doc.calibration && doc.calibration.reliability);
      picture($("runs-pr"), doc.pr_curves);
      picture($("runs-confusion"), doc.confusion);
      picture($("runs-class-iou"), doc.class_iou);
      picture($("runs-worst"), doc.worst_images);
      const found = doc.mistakes.map(mistake);
      $("runs-mistakes").replaceChildren(...(found.length ? found
        : [el("p", {textContent: doc.metrics_source ? "none to show" : ""})]));
    } catch (err) {
      $("runs-summary").textContent = "";
      convlab.showError("runs-error", err);
      return;
    }
    await explainMistakes().catch(err => convlab.showError("runs-error", err));
  }

  document.addEventListener("convlab:page", async event => {
    if (event.detail !== "runs" || started) return;
    started = true;
    try {
      convlab.fillModelSelect($("runs-model"), await convlab.models());
    } catch (err) {
      convlab.showError("runs-error", err);
      return;
    }
    try {
      methodList = await convlab.attributionMethods($("runs-method"));
    } catch (err) {
      convlab.showError("runs-error", err);
    }
    $("runs-model").addEventListener("change", show);
    $("runs-method").addEventListener("change", () => {
      const chosen = methodList.find(m => m.name === $("runs-method").value);
      $("runs-method-note").textContent = chosen && chosen.warning ? `warning: ${chosen.warning}` : "";
      explainMistakes().catch(err => convlab.showError("runs-error", err));
    });
    show();
  });
})();

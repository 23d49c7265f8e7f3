// The playground: calls the service's public API (/v1/models, /v1/classify, /v1/explain) and draws what it
// answers. Every number shown comes from the API; this module computes only layout and colour.
//
// Heatmaps are canvases with one pixel per cell, scaled up by CSS. An attention map's cell has its head's
// colour with alpha Math.round(sqrt(weight) * 255) (the square root, so that the small weights of a long
// text still show); a test reads the weights back from the pixels. The head view's lines have opacity =
// weight, as in BertViz.

const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";
// One colour per head (category10), as in BertViz.
const HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const POSITIVE = [214, 39, 40];
const NEGATIVE = [31, 119, 180];

const state = {
  model: null,      // the /v1/models card
  request: null,    // {inputs, truncate} of the text explained
  explained: null,  // the /v1/explain answer
  queryKey: null,   // its query_key part, for (layer, head)
  layer: 0,
  head: 0,
  run: 0,           // bumped by every run, so a late answer to an older one is dropped
  qkRun: 0,
};

class ApiError extends Error {
  constructor(status, type, message, details = [], retryAfter = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

// ---- the API -----------------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = $("#api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, "network", `The service did not answer (${error.message}).`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.type || "error", error.message || response.statusText,
      error.details || [], response.headers.get("Retry-After"));
  }
  return data;
}

// What a person should read for an error: a title, the API's own message, and the fields it names.
function describe(error) {
  const status = error.status;
  if (status === 401) {
    const given = $("#api-key").value.trim() !== "";
    return {
      title: given ? "API key not accepted (401)" : "API key needed (401)",
      text: given ? "The service refused the key in the API key field: check it and try again."
        : "This service has API_KEY set: enter the key in the API key field above and try again.",
    };
  }
  if (status === 501 && error.type === "not_available") {
    return { title: "This model package has no attention graph", text: error.message };
  }
  if (status === 422) return { title: "The service refused the text (422)", text: error.message, details: error.details };
  if (status === 429) {
    const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    return { title: "The service is busy (429)", text: error.message + retry };
  }
  if (status === 0) return { title: "No answer", text: error.message };
  return { title: `Error ${status}`, text: error.message, details: error.details };
}

function show(box, error) {
  const { title, text, details } = describe(error);
  box.replaceChildren();
  box.dataset.status = String(error.status);
  box.dataset.type = error.type;
  const strong = document.createElement("strong");
  strong.textContent = title;
  box.append(strong);
  // A validation error's message is its details joined: then the list alone says it.
  const joined = (details || []).map((d) => `${d.field}: ${d.message}`).join("; ");
  if (!details || !details.length || text !== joined) {
    const p = document.createElement("p");
    p.textContent = text;
    box.append(p);
  }
  if (details && details.length) {
    const list = document.createElement("ul");
    for (const detail of details) {
      const item = document.createElement("li");
      const field = document.createElement("code");
      field.textContent = detail.field;
      item.append(field, `: ${detail.message}`);
      list.append(item);
    }
    box.append(list);
  }
  box.hidden = false;
}

function clear(box) {
  box.hidden = true;
  box.replaceChildren();
  delete box.dataset.status;
  delete box.dataset.type;
}

// ---- the model ---------------------------------------------------------------------------------------

async function loadModel() {
  try {
    const { models } = await api("GET", "/v1/models");
    state.model = models[0];
    const m = state.model;
    $("#model").textContent = `${m.ref} · ${m.labels.length} labels · up to ${m.max_length} tokens · ${m.precision}`;
    $("#max-length").textContent = String(m.max_length);
    if ($("#message").dataset.status === "401") clear($("#message"));
  } catch (error) {
    $("#model").textContent = "Model unknown";
    show($("#message"), error);
  }
}

// ---- running a text ----------------------------------------------------------------------------------

async function run(event) {
  event?.preventDefault();
  const inputs = $("#text").value;
  const truncate = $("#truncate").checked;
  const runId = ++state.run;
  const button = $("#run");
  button.disabled = true;
  document.body.setAttribute("aria-busy", "true");
  clear($("#message"));
  clear($("#explain-message"));
  if (!state.model) await loadModel();
  const body = { inputs, truncate, query_key: true, layer: state.layer, head: state.head };
  const [classified, explained] = await Promise.allSettled([
    api("POST", "/v1/classify", { inputs, truncate }),
    api("POST", "/v1/explain", body),
  ]);
  if (runId !== state.run) return;
  button.disabled = false;
  document.body.removeAttribute("aria-busy");
  if (classified.status === "rejected") {
    show($("#message"), classified.reason);
    drawPredictions(null);
    forgetExplanation();
    return;
  }
  drawPredictions(classified.value.predictions[0]);
  if (explained.status === "rejected") {
    show($("#explain-message"), explained.reason);
    forgetExplanation();
    return;
  }
  state.request = { inputs, truncate };
  state.explained = explained.value;
  state.queryKey = explained.value.query_key;
  const { tokens, truncated } = explained.value;
  const note = truncated ? " (the text was cut to the model's maximum)" : "";
  $("#status").textContent = `${tokens.length} tokens${note}`;
  drawExplanation();
}

function forgetExplanation() {
  state.explained = null;
  state.queryKey = null;
  state.request = null;
  $("#status").textContent = "";
  drawExplanation();
}

// ---- predictions -------------------------------------------------------------------------------------

function drawPredictions(predictions) {
  const list = $("#predictions");
  list.replaceChildren();
  $("#predictions-hint").hidden = predictions !== null;
  if (!predictions) return;
  for (const { label, score } of predictions) {
    const item = document.createElement("li");
    item.dataset.label = label;
    item.dataset.score = String(score);
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", label);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "1");
    bar.setAttribute("aria-valuenow", String(score));
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(100 * score).toFixed(2)}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * score).toFixed(1)}%`;
    item.append(name, bar, value);
    list.append(item);
  }
}

// ---- colour ------------------------------------------------------------------------------------------

function rgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function headColour(head) {
  return HEAD_COLOURS[head % HEAD_COLOURS.length];
}

// A rows x columns canvas, one pixel per cell: colour(value) -> [r, g, b, a] (a in 0..255).
function heatmap(matrix, colour, className) {
  const rows = matrix.length;
  const columns = rows ? matrix[0].length : 0;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(columns, 1);
  canvas.height = Math.max(rows, 1);
  canvas.className = className;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const image = context.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < columns; j++) {
      const [r, g, b, a] = colour(matrix[i][j]);
      const k = 4 * (i * columns + j);
      image.data[k] = r;
      image.data[k + 1] = g;
      image.data[k + 2] = b;
      image.data[k + 3] = a;
    }
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

// Weights in 0..1: the head's colour, alpha = sqrt(weight).
function weightColour(head) {
  const [r, g, b] = rgb(headColour(head));
  return (w) => [r, g, b, Math.round(Math.sqrt(Math.min(Math.max(w, 0), 1)) * 255)];
}

// The key to the attention maps' colour: a strip from 0 to 1 with ticks where the square-root scale puts them.
function weightLegend() {
  const legend = document.createElement("div");
  legend.className = "legend";
  const name = document.createElement("span");
  name.textContent = "weight";
  const strip = document.createElement("span");
  strip.className = "legend-strip";
  for (const tick of [0, 0.05, 0.25, 0.5, 1]) {
    const mark = document.createElement("span");
    mark.className = "tick";
    mark.style.left = `${(100 * Math.sqrt(tick)).toFixed(1)}%`;
    mark.textContent = String(tick);
    strip.append(mark);
  }
  legend.append(name, strip);
  return legend;
}

// Any sign: red above 0, blue below, alpha = |v| / limit.
function divergingColour(limit) {
  return (v) => {
    const [r, g, b] = v >= 0 ? POSITIVE : NEGATIVE;
    return [r, g, b, limit > 0 ? Math.round(Math.min(Math.abs(v) / limit, 1) * 255) : 0];
  };
}

function largestMagnitude(...matrices) {
  let largest = 0;
  for (const matrix of matrices) for (const row of matrix) for (const v of row) largest = Math.max(largest, Math.abs(v));
  return largest;
}

function shortToken(token, most = 14) {
  return token.length > most ? `${token.slice(0, most - 1)}…` : token;
}

// ---- the views ---------------------------------------------------------------------------------------

function nothingYet() {
  return $("#explain-message").hidden && $("#message").hidden ? "Nothing explained yet."
    : "Nothing to show: see the message under the text.";
}

/** The placeholder a view shows before anything is explained. */
function showNothingYet(box) {
  const p = document.createElement("p");
  p.className = "hint placeholder";
  p.textContent = nothingYet();
  box.append(p);
}

function drawExplanation() {
  drawPickers();
  drawModelView();
  drawHeadView();
  drawQueryKey();
}

function drawPickers() {
  const layerSelect = $("#layer");
  const heads = $("#heads");
  const explained = state.explained;
  layerSelect.replaceChildren();
  heads.querySelectorAll("label").forEach((label) => label.remove());
  layerSelect.disabled = heads.disabled = !explained;
  $("#pickers").hidden = !explained;
  if (!explained) return;
  for (let layer = 0; layer < explained.attention.layers; layer++) {
    layerSelect.append(new Option(String(layer + 1), String(layer), false, layer === state.layer));
  }
  for (let head = 0; head < explained.attention.heads; head++) {
    const label = document.createElement("label");
    label.className = "head-choice";
    label.style.setProperty("--head", headColour(head));
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "head";
    radio.value = String(head);
    radio.checked = head === state.head;
    label.append(radio, ` ${head + 1}`);
    heads.append(label);
  }
}

function drawModelView() {
  const grid = $("#model-grid");
  grid.replaceChildren();
  const explained = state.explained;
  if (!explained) {
    grid.removeAttribute("style");
    $("#model-legend").replaceChildren();
    return;
  }
  const { layers, heads, weights } = explained.attention;
  grid.style.setProperty("--heads", String(heads));
  grid.append(document.createElement("span"));
  for (let head = 0; head < heads; head++) {
    const title = document.createElement("span");
    title.className = "column-title";
    title.style.setProperty("--head", headColour(head));
    title.textContent = `Head ${head + 1}`;
    grid.append(title);
  }
  for (let layer = 0; layer < layers; layer++) {
    const title = document.createElement("span");
    title.className = "row-title";
    title.textContent = `Layer ${layer + 1}`;
    grid.append(title);
    for (let head = 0; head < heads; head++) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thumbnail";
      button.dataset.layer = String(layer);
      button.dataset.head = String(head);
      button.setAttribute("aria-label", `Layer ${layer + 1}, head ${head + 1}`);
      button.setAttribute("aria-pressed", String(layer === state.layer && head === state.head));
      button.title = `Layer ${layer + 1}, head ${head + 1}`;
      button.append(heatmap(weights[layer][head], weightColour(head), "map"));
      grid.append(button);
    }
  }
  $("#model-legend").replaceChildren(weightLegend());
}

const HEAD_VIEW = { width: 480, row: 20, top: 28, leftText: 176, rightText: 304, leftLine: 182, rightLine: 298 };

function svg(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

function drawHeadView() {
  const box = $("#head-view");
  box.replaceChildren();
  const explained = state.explained;
  if (!explained) {
    showNothingYet(box);
    return;
  }
  const { tokens } = explained;
  const weights = explained.attention.weights[state.layer][state.head];
  const colour = headColour(state.head);
  const L = HEAD_VIEW;
  const height = L.top + tokens.length * L.row + 6;
  const y = (i) => L.top + i * L.row + L.row / 2;
  const root = svg("svg", {
    viewBox: `0 0 ${L.width} ${height}`, width: L.width, height, class: "head-svg", role: "group",
    "aria-label": `Attention of layer ${state.layer + 1}, head ${state.head + 1}`,
  });
  root.dataset.layer = String(state.layer);
  root.dataset.head = String(state.head);
  root.style.setProperty("--head", colour);
  root.append(svg("text", { x: L.leftText, y: 16, class: "column-head", "text-anchor": "end" }, "token"),
    svg("text", { x: L.rightText, y: 16, class: "column-head" }, "attends to"));
  const lines = svg("g", { class: "lines", stroke: colour });
  for (let i = 0; i < tokens.length; i++) {
    for (let j = 0; j < tokens.length; j++) {
      const line = svg("line", {
        x1: L.leftLine, y1: y(i), x2: L.rightLine, y2: y(j), "stroke-opacity": weights[i][j],
      });
      line.dataset.i = String(i);
      line.dataset.j = String(j);
      lines.append(line);
    }
  }
  const focus = svg("g", { class: "focus-lines", stroke: colour });
  const values = svg("g", { class: "values" });
  root.append(lines, focus);
  const columns = [["left", L.leftText, "end"], ["right", L.rightText, "start"]];
  for (const [side, x, anchor] of columns) {
    const group = svg("g", { class: `tokens ${side}` });
    tokens.forEach((token, index) => {
      const item = svg("g", { class: "token", tabindex: 0, "data-side": side, "data-index": index });
      const what = side === "left" ? "what it attends to" : "what attends to it";
      item.setAttribute("aria-label", `${token}, token ${index + 1}: show ${what}`);
      const width = 118;
      item.append(
        svg("rect", { x: side === "left" ? x - width + 2 : x - 2, y: y(index) - L.row / 2 + 1, width, height: L.row - 2, rx: 3 }),
        svg("text", { x, y: y(index) + 4, "text-anchor": anchor }, shortToken(token)),
        svg("title", {}, token),
      );
      group.append(item);
    });
    root.append(group);
  }
  root.append(values);

  const focusOn = (side, index) => {
    focus.replaceChildren();
    values.replaceChildren();
    root.classList.add("focused");
    root.querySelectorAll(".token.active").forEach((t) => t.classList.remove("active"));
    root.querySelector(`.tokens.${side} .token[data-index="${index}"]`).classList.add("active");
    for (let k = 0; k < tokens.length; k++) {
      const [i, j] = side === "left" ? [index, k] : [k, index];
      focus.append(svg("line", { x1: L.leftLine, y1: y(i), x2: L.rightLine, y2: y(j), "stroke-opacity": weights[i][j] }));
      const valueX = side === "left" ? L.width - 4 : 4;
      const anchor = side === "left" ? "end" : "start";
      values.append(svg("text", { x: valueX, y: y(k) + 4, "text-anchor": anchor }, weights[i][j].toFixed(3)));
    }
  };
  const unfocus = () => {
    focus.replaceChildren();
    values.replaceChildren();
    root.classList.remove("focused");
    root.querySelectorAll(".token.active").forEach((t) => t.classList.remove("active"));
  };
  for (const item of root.querySelectorAll(".token")) {
    const side = item.dataset.side;
    const index = Number(item.dataset.index);
    item.addEventListener("mouseenter", () => focusOn(side, index));
    item.addEventListener("focus", () => focusOn(side, index));
    item.addEventListener("mouseleave", unfocus);
    item.addEventListener("blur", unfocus);
  }
  box.append(root);
}

function drawQueryKey() {
  const box = $("#qk");
  box.replaceChildren();
  $("#qk-readout").textContent = "";
  const explained = state.explained;
  $("#qk-title").textContent = explained
    ? `Query-key view: layer ${state.layer + 1}, head ${state.head + 1}` : "Query-key view";
  if (!explained) {
    showNothingYet(box);
    return;
  }
  const view = state.queryKey;
  if (!view || view.layer !== state.layer || view.head !== state.head) {
    const p = document.createElement("p");
    p.className = "hint placeholder";
    p.textContent = `Asking the service for layer ${state.layer + 1}, head ${state.head + 1}…`;
    box.append(p);
    return;
  }
  const { tokens } = explained;
  const weights = explained.attention.weights[view.layer][view.head];
  const n = tokens.length;
  const size = view.queries[0].length;
  // Cell size: both n x n matrices beside the labels and the query strip, in the panel's width if they fit
  // at 4 px a cell or more (the panel scrolls sideways if not), at most 18 px.
  const strip = 128;
  const room = Math.min(320, (box.clientWidth - strip - 120) / 2);
  const cell = Math.max(4, Math.min(18, Math.floor(room / n)));
  const vectorLimit = largestMagnitude(view.queries, view.keys);
  const scoreLimit = largestMagnitude(view.scores);
  const keysByDimension = Array.from({ length: size }, (_, d) => view.keys.map((key) => key[d]));

  box.dataset.layer = String(view.layer);
  box.dataset.head = String(view.head);
  box.style.setProperty("--cell", `${cell}px`);
  box.style.setProperty("--n", String(n));
  box.style.setProperty("--strip", `${strip}px`);
  box.style.setProperty("--head", headColour(view.head));

  const queries = heatmap(view.queries, divergingColour(vectorLimit), "queries");
  const keys = heatmap(keysByDimension, divergingColour(vectorLimit), "keys");
  const scores = heatmap(view.scores, divergingColour(scoreLimit), "scores");
  const attention = heatmap(weights, weightColour(view.head), "weights");
  queries.setAttribute("aria-label", `queries: ${n} tokens by ${size} dimensions`);
  keys.setAttribute("aria-label", `keys: ${size} dimensions by ${n} tokens`);
  scores.setAttribute("aria-label", `scaled dot products, ${n} by ${n}`);
  attention.setAttribute("aria-label", `attention weights, ${n} by ${n}`);
  for (const canvas of [queries, keys, scores, attention]) canvas.setAttribute("role", "img");

  const labels = document.createElement("ol");
  labels.className = "qk-tokens";
  if (cell < 10) labels.classList.add("hidden-labels");
  for (const token of tokens) {
    const item = document.createElement("li");
    item.textContent = shortToken(token, 12);
    item.title = token;
    labels.append(item);
  }
  const caption = (text, className = "") => {
    const p = document.createElement("p");
    p.className = `caption ${className}`;
    p.textContent = text;
    return p;
  };
  const spacer = () => document.createElement("span");
  const columnLabels = () => {
    const list = labels.cloneNode(true);
    list.className = "qk-columns";
    if (cell < 10) list.classList.add("hidden-labels");
    list.setAttribute("aria-hidden", "true");
    return list;
  };
  const keyBlock = document.createElement("div");
  keyBlock.className = "key-block";
  keyBlock.append(caption(`keys (${size} dimensions), one column per token`), keys);
  box.append(
    spacer(), spacer(), keyBlock, spacer(),
    labels, queries, scores, attention,
    spacer(), spacer(), columnLabels(), columnLabels(),
    spacer(), caption(`queries (${size} dimensions), ±${vectorLimit.toFixed(2)}`),
    caption(`q·k/√${size}, ±${scoreLimit.toFixed(2)}`), caption("weights: the softmax of each row (√ scale)"),
  );

  const readout = $("#qk-readout");
  const cellAt = (canvas, event, rows, columns) => {
    const box = canvas.getBoundingClientRect();
    const i = Math.floor(((event.clientY - box.top) / box.height) * rows);
    const j = Math.floor(((event.clientX - box.left) / box.width) * columns);
    return [Math.min(Math.max(i, 0), rows - 1), Math.min(Math.max(j, 0), columns - 1)];
  };
  const quote = (i) => `“${tokens[i]}”`;
  for (const canvas of [scores, attention]) {
    canvas.addEventListener("mousemove", (event) => {
      const [i, j] = cellAt(canvas, event, n, n);
      readout.textContent = `${quote(i)} → ${quote(j)}: q·k/√${size} = ${view.scores[i][j].toFixed(3)}, `
        + `weight ${weights[i][j].toFixed(3)}`;
    });
  }
  queries.addEventListener("mousemove", (event) => {
    const [i, d] = cellAt(queries, event, n, size);
    readout.textContent = `query of ${quote(i)}, dimension ${d + 1}: ${view.queries[i][d].toFixed(3)}`;
  });
  keys.addEventListener("mousemove", (event) => {
    const [d, j] = cellAt(keys, event, size, n);
    readout.textContent = `key of ${quote(j)}, dimension ${d + 1}: ${view.keys[j][d].toFixed(3)}`;
  });
}

// ---- picking a layer and head ------------------------------------------------------------------------

async function pick(layer, head) {
  if (!state.explained) return;
  state.layer = layer;
  state.head = head;
  $("#layer").value = String(layer);
  for (const radio of document.querySelectorAll('#heads input[name="head"]')) radio.checked = Number(radio.value) === head;
  for (const button of document.querySelectorAll("#model-grid .thumbnail")) {
    const chosen = Number(button.dataset.layer) === layer && Number(button.dataset.head) === head;
    button.setAttribute("aria-pressed", String(chosen));
  }
  drawHeadView();
  drawQueryKey();
  if (state.queryKey && state.queryKey.layer === layer && state.queryKey.head === head) return;
  const qkRun = ++state.qkRun;
  const run = state.run;
  try {
    const answer = await api("POST", "/v1/explain", { ...state.request, query_key: true, layer, head });
    if (qkRun !== state.qkRun || run !== state.run) return;
    state.queryKey = answer.query_key;
    clear($("#explain-message"));
    drawQueryKey();
  } catch (error) {
    if (qkRun !== state.qkRun || run !== state.run) return;
    show($("#explain-message"), error);
  }
}

// ---- wiring ------------------------------------------------------------------------------------------

function start() {
  $("#form").addEventListener("submit", run);
  $("#text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) run(event);
  });
  $("#api-key").addEventListener("change", () => {
    if (!state.model) loadModel();
  });
  $("#layer").addEventListener("change", (event) => pick(Number(event.target.value), state.head));
  $("#heads").addEventListener("change", (event) => pick(state.layer, Number(event.target.value)));
  $("#model-grid").addEventListener("click", (event) => {
    const button = event.target.closest(".thumbnail");
    if (button) pick(Number(button.dataset.layer), Number(button.dataset.head));
  });
  drawExplanation();
  loadModel();
}

start();

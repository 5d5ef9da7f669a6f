// The gallery page: filters, grid, threshold preview, metadata panel, per-domain stats.
// Everything from the harvested web pages (URLs, alt text) is untrusted: it only ever reaches the
// page through textContent or checked http(s) links, never as HTML.
"use strict";

const BASE = location.origin + location.pathname.replace(/\/?$/, "/");
const STATUSES = ["kept", "rejected", "duplicate", "skipped", "failed", "unclassified", "pending"];
// one page of the grid: each card asks the server for a thumbnail
const PAGE = 48;
const $ = (id) => document.getElementById(id);

const state = { items: [], total: 0, scores: [], runs: [], selected: null, offset: 0, collapsed: {} };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function safeLink(url) {
  if (!/^https?:\/\//i.test(url || "")) return document.createTextNode(url || "");
  return el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: url });
}

async function getJSON(path, params = {}) {
  const url = new URL(path, BASE);
  for (const [key, value] of Object.entries(params)) if (value) url.searchParams.set(key, value);
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

function filters() {
  const statuses = [...document.querySelectorAll("#statuses input:checked")].map((i) => i.value);
  return { run: $("run").value, label: $("label").value, domain: $("domain").value, status: statuses.join(",") };
}

function fillSelect(select, values, allText) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "", text: allText }));
  for (const value of values) select.append(el("option", { value, text: value }));
  if (values.includes(keep)) select.value = keep;
}

function buildStatusFilters() {
  const box = $("statuses");
  for (const status of STATUSES) {
    const input = el("input", { type: "checkbox", value: status, name: "status" });
    box.append(el("label", { "data-status": status }, input, ` ${status} `, el("span", { class: "count", text: "" })));
  }
}

async function loadRuns() {
  const data = await getJSON("api/runs");
  state.runs = data.runs;
  const select = $("run");
  const keep = select.value;
  select.replaceChildren(el("option", { value: "", text: "All runs" }));
  for (const run of data.runs) select.append(el("option", { value: run.run_id, text: run.name || run.run_id }));
  select.value = keep;
  $("rethreshold").title = `Triggers the Airflow DAG ${data.rethreshold_dag}`;
  $("rethreshold").dataset.dag = data.rethreshold_dag;
}

async function refresh() {
  const f = filters();
  state.offset = 0;
  const [data, scores, stats] = await Promise.all([
    getJSON("api/items", { ...f, limit: PAGE, offset: 0 }),
    getJSON("api/scores", { run: f.run, label: f.label, domain: f.domain }),
    getJSON("api/stats", { run: f.run, label: f.label }),
  ]);
  fillSelect($("label"), data.labels, "All labels");
  fillSelect($("domain"), data.domains, "All domains");
  for (const status of STATUSES) {
    document.querySelector(`#statuses label[data-status="${status}"] .count`).textContent = `(${data.counts[status]})`;
  }
  state.items = data.items;
  state.total = data.total;
  state.collapsed = data.collapsed || {};
  state.scores = scores.scores;
  if (scores.thresholds.length === 1 && !$("threshold").dataset.touched) setThreshold(scores.thresholds[0]);
  renderGrid();
  renderStats(stats.domains);
  updateThreshold();
}

// Another page of the grid in place of this one: the page never holds more than PAGE thumbnails.
async function showPage(offset) {
  const data = await getJSON("api/items", { ...filters(), limit: PAGE, offset: Math.max(0, offset) });
  state.offset = data.offset;
  state.items = data.items;
  state.total = data.total;
  renderGrid();
  updateThreshold();
  $("grid").scrollIntoView({ block: "start" });
}

// A thumbnail, or a placeholder when the server has none (no bytes, or too costly to decode).
function thumb(item, attrs = {}) {
  const image = el("img", { src: new URL(`thumbnails/${item.sha256}.jpg`, BASE).href, alt: item.alt || "", ...attrs });
  image.addEventListener("error", () => image.replaceWith(el("div", { class: "nothumb", text: "no preview" })), { once: true });
  return image;
}

// The target label; for an image no target matched, the model's best guess, set apart in italics.
function labelOf(item) {
  if (item.label) return el("span", { class: "label", text: item.label });
  if (item.top.length) return el("span", { class: "label guess", text: item.top[0].name, title: "best class, not a target" });
  return el("span", { class: "label", text: "—" });
}

function card(item) {
  const image = item.sha256 && item.status !== "failed"
    ? thumb(item, { class: "thumb", loading: "lazy" })
    : el("div", { class: "nothumb", text: item.status });
  const score = item.score === null ? "" : item.score.toFixed(3);
  const node = el("div", { class: `card ${item.status}`, tabindex: "0", "data-id": item.id, "data-status": item.status,
    "data-score": item.score === null ? "" : item.score, title: item.url },
    image,
    el("div", { class: "meta" }, labelOf(item), el("span", { text: score }),
      el("span", { class: `badge ${item.status}`, text: item.status })),
    el("div", { class: "runs", text: (item.runs || []).join(", "), title: "runs that found this image" }));
  node.addEventListener("click", () => openPanel(item.id));
  node.addEventListener("keydown", (event) => { if (event.key === "Enter") openPanel(item.id); });
  return node;
}

function renderGrid() {
  $("grid").replaceChildren(...state.items.map(card));
  const first = state.offset + 1;
  const last = state.offset + state.items.length;
  $("summary").textContent = `${state.total} image${state.total === 1 ? "" : "s"}` + (state.items.length < state.total ? ` (showing ${first}–${last})` : "");
  renderCollapsed();
  const pages = Math.max(1, Math.ceil(state.total / PAGE));
  $("pager").hidden = pages === 1;
  $("page-info").textContent = `page ${Math.floor(state.offset / PAGE) + 1} of ${pages}`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= state.total;
}

// Skipped and failed candidates are counts until asked for: one button per status ticks its filter.
function renderCollapsed() {
  const box = $("collapsed");
  const parts = Object.entries(state.collapsed).map(([status, count]) => {
    const show = el("button", { type: "button", "data-status": status, text: `${count} ${status}` });
    show.addEventListener("click", () => {
      const others = document.querySelectorAll("#statuses input:checked").length === 0
        ? STATUSES.filter((s) => !(s in state.collapsed)) : [];
      for (const s of [...others, status]) document.querySelector(`#statuses input[value="${s}"]`).checked = true;
      refresh().catch(showError);
    });
    return show;
  });
  box.hidden = parts.length === 0;
  box.replaceChildren(...(parts.length ? ["Not shown: ", ...parts] : []));
}

function setThreshold(value) {
  $("threshold").value = value;
  $("threshold-value").textContent = Number(value).toFixed(2);
}

// What the slider's threshold would keep, counted over every decided image of the selection.
function updateThreshold() {
  const t = Number($("threshold").value);
  $("threshold-value").textContent = t.toFixed(2);
  const keeps = (s) => s.score !== null && s.score >= t;
  const wouldKeep = state.scores.filter(keeps).length;
  const keptNow = state.scores.filter((s) => s.status === "kept").length;
  const gained = state.scores.filter((s) => keeps(s) && s.status !== "kept").length;
  const lost = state.scores.filter((s) => !keeps(s) && s.status === "kept").length;
  $("threshold-summary").textContent =
    `at ${t.toFixed(2)}: ${wouldKeep} of ${state.scores.length} would be kept (now ${keptNow}; +${gained} −${lost})`;
  $("threshold-summary").dataset.wouldKeep = wouldKeep;
  for (const node of document.querySelectorAll("#grid .card")) {
    const status = node.dataset.status;
    if (status !== "kept" && status !== "rejected") continue;
    const would = node.dataset.score !== "" && Number(node.dataset.score) >= t;
    node.classList.toggle("would-drop", status === "kept" && !would);
    node.classList.toggle("would-keep", status === "rejected" && would);
  }
}

async function openPanel(id) {
  const item = await getJSON(`api/items/${id}`);
  for (const node of document.querySelectorAll("#grid .card.selected")) node.classList.remove("selected");
  const selected = document.querySelector(`#grid .card[data-id="${id}"]`);
  if (selected) selected.classList.add("selected");
  const rows = [
    ["Status", item.status], ["Reason", item.reason || ""], ["Label", item.label || "—"],
    ["Score", item.score === null ? "—" : item.score.toFixed(4)], ["Run threshold", item.threshold ?? "—"],
    ["URL", safeLink(item.url)], ["Page", safeLink(item.page_url)], ["Domain", item.domain],
    ["Alt", item.alt || ""], ["Title", item.title || ""], ["Found in", item.source], ["Runs", (item.runs && item.runs.length ? item.runs : [item.run_name]).join(", ")],
    ["Attempts", item.attempts], ["Size", item.width ? `${item.width}×${item.height} ${item.format}` : "—"],
    ["Bytes", item.size_bytes ?? "—"], ["sha256", item.sha256 || "—"],
    ["Duplicate of", item.duplicate_of ? safeLink(item.duplicate_of) : "—"],
    ["Published", item.published.length ? item.published.join("\n") : "—"],
  ];
  const dl = el("dl");
  for (const [name, value] of rows.filter(([, value]) => value !== "")) dl.append(el("dt", { text: name }), el("dd", {}, value instanceof Node ? value : String(value)));
  const top = el("table", { class: "top" }, el("tr", {}, el("th", { text: "Top predictions" }), el("th", { text: "Score" })));
  for (const p of item.top) top.append(el("tr", {}, el("td", { text: `${p.name} (${p.wnid})` }), el("td", { class: "num", text: p.score.toFixed(4) })));
  const body = [el("h2", { text: item.label || item.status }), dl];
  if (item.sha256 && item.status !== "failed") body.unshift(thumb(item));
  if (item.top.length) body.push(top);
  $("panel-body").replaceChildren(...body);
  $("panel").hidden = false;
  $("panel").dataset.id = id;
}

function renderStats(domains) {
  const tbody = document.querySelector("#stats tbody");
  tbody.replaceChildren(...domains.map((d) => {
    const reasons = Object.entries(d.reasons).map(([reason, n]) => `${reason}: ${n}`).join("; ");
    const rate = d.success_rate === null ? "—" : `${(100 * d.success_rate).toFixed(1)} %`;
    return el("tr", {}, el("td", { text: d.domain }), el("td", { class: "num", text: d.candidates }),
      el("td", { class: "num", text: d.downloaded }), el("td", { class: "num", text: d.kept }),
      el("td", { class: "num", text: d.failed }), el("td", { class: "num", text: d.skipped }),
      el("td", { class: "num", text: rate }), el("td", { text: reasons }));
  }));
}

// Asked inline, not with confirm(): Airflow shows the gallery in a sandboxed iframe without modals.
function askRethreshold() {
  const f = filters();
  const threshold = Number($("threshold").value);
  const target = f.run ? `run ${f.run}` : "all runs";
  const labels = f.label ? `, label ${f.label}` : "";
  $("rethreshold-question").textContent =
    `Start ${$("rethreshold").dataset.dag} at threshold ${threshold.toFixed(2)} for ${target}${labels}?`;
  $("rethreshold-confirm").hidden = false;
  $("rethreshold-result").textContent = "";
}

async function rethreshold() {
  $("rethreshold-confirm").hidden = true;
  const out = $("rethreshold-result");
  const f = filters();
  const threshold = Number($("threshold").value);
  out.className = "";
  out.textContent = "starting…";
  const response = await fetch(new URL("api/rethreshold", BASE), {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ threshold, run_id: f.run || null, labels: f.label ? [f.label] : [] }),
  });
  const data = await response.json().catch(() => ({}));
  if (response.ok) {
    out.textContent = `started ${data.dag_id} run ${data.dag_run_id}`;
  } else {
    out.className = "error";
    out.textContent = data.detail ? String(data.detail) : `HTTP ${response.status}`;
  }
}

function showError(error) {
  $("summary").textContent = String(error);
}

function main() {
  buildStatusFilters();
  const params = new URLSearchParams(location.search);
  $("size").addEventListener("input", () => document.documentElement.style.setProperty("--size", `${$("size").value}px`));
  $("threshold").addEventListener("input", () => { $("threshold").dataset.touched = "1"; updateThreshold(); });
  $("filters").addEventListener("change", (event) => { if (event.target.id !== "size") refresh().catch(showError); });
  $("prev").addEventListener("click", () => showPage(state.offset - PAGE).catch(showError));
  $("next").addEventListener("click", () => showPage(state.offset + PAGE).catch(showError));
  $("panel-close").addEventListener("click", () => { $("panel").hidden = true; });
  $("rethreshold").addEventListener("click", askRethreshold);
  $("rethreshold-cancel").addEventListener("click", () => { $("rethreshold-confirm").hidden = true; });
  $("rethreshold-go").addEventListener("click", () => rethreshold().catch((e) => { $("rethreshold-result").textContent = String(e); }));
  loadRuns().then(() => {
    // ?run= takes the run's name as Airflow shows it (backfill__..., scheduled__...) or its state scope
    const wanted = state.runs.find((r) => r.run_id === params.get("run") || r.name === params.get("run"));
    if (wanted) $("run").value = wanted.run_id;
    return refresh();
  }).catch(showError);
}

main();

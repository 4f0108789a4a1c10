/* dsetlog review page: plain JavaScript over the public REST API (/api/v1), no build step.
 *
 * Everything shown comes from the API; everything done goes through it (PUT entry, POST feedback,
 * POST regenerate, POST jobs/{id}/cancel, GET download). The bearer token, when the server has one,
 * is kept in localStorage and sent as `Authorization: Bearer ...`; a 401 asks for it.
 * Text from the server is always set with textContent, never parsed as HTML.
 */
"use strict";

(() => {
  const API = "/api/v1";
  const TOKEN_KEY = "dset.token";
  const POLL_MS = 500; // status of watched jobs
  const JOBS_MS = 4000; // the job list (jobs started elsewhere)
  const DEFAULT_QUERY = {
    page: 1, per_page: 50, sort_by: "quality", order: "", min: "", max: "", category: "", difficulty: "",
    flagged: "", split: "", q: "",
  };

  const $ = (id) => document.getElementById(id);

  const state = {
    token: localStorage.getItem(TOKEN_KEY) || "",
    datasets: [],
    formats: [], // the export formats offered (GET /export-formats), in order
    dataset: null, // GET /datasets/{id} without its inline entries
    query: { ...DEFAULT_QUERY },
    page: null, // the last EntriesPage
    entries: [],
    current: -1, // index of the current row in entries
    entry: null, // the entry shown in the detail panel
    editing: false,
    selected: new Set(),
    watched: new Map(), // job_id -> {onDone: [fn], last: JobStatus}
    jobs: [],
    chunks: new Map(),
    loadSeq: 0,
    historySeq: 0,
  };

  // --- small helpers ---------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmtScore = (s) => (s === null || s === undefined ? "–" : Number(s).toFixed(2));
  const band = (s) => (s === null || s === undefined ? "none" : s >= 0.8 ? "high" : s >= 0.5 ? "medium" : "low");
  const shortId = (id) => (id || "").replace(/^(dataset|entry|regenerate)_/, "").slice(0, 8);

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit",
      minute: "2-digit", second: "2-digit" });
  }

  function truncate(text, n) {
    text = (text || "").replace(/\s+/g, " ").trim();
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  let toastTimer = 0;
  function toast(message, kind) {
    const t = $("toast");
    t.textContent = message;
    t.className = "toast show" + (kind ? " " + kind : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.className = "toast"; }, kind === "error" ? 8000 : 3500);
  }

  function showError(err) {
    if (err instanceof ApiError && err.status === 401) return; // the auth banner says it
    const msg = err instanceof ApiError ? `${err.title}: ${err.description}` : String(err && err.message || err);
    const banner = $("error-banner");
    banner.replaceChildren(el("span", { text: msg }), " ",
      el("button", { type: "button", class: "quiet small", "aria-label": "Dismiss error",
        onclick: () => { banner.hidden = true; } }, "✕"));
    banner.hidden = false;
  }

  // --- the API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, title, description) {
      super(`${title}: ${description}`);
      this.status = status;
      this.title = title;
      this.description = description;
    }
  }

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json", ...authHeaders() };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, "Network error", "the server did not answer (is `dset serve` running?)");
    }
    const isJson = (resp.headers.get("Content-Type") || "").startsWith("application/json");
    const data = isJson ? await resp.json() : null;
    if (resp.status === 401) {
      needToken(data);
      throw new ApiError(401, "Unauthorized", data && data.description || "the API token is missing or wrong");
    }
    if (!resp.ok) {
      throw new ApiError(resp.status, data && data.title || String(resp.status),
        data && data.description || resp.statusText);
    }
    tokenAccepted();
    return data;
  }

  function qs(params) {
    const out = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) out.set(k, v);
    const s = out.toString();
    return s ? "?" + s : "";
  }

  // --- token -----------------------------------------------------------------------------------

  let authFailed = false;

  function needToken(data) {
    authFailed = true;
    $("auth-banner").hidden = false;
    $("token-state").textContent = state.token ? "token refused" : "token needed";
    const input = $("token-input");
    input.setAttribute("aria-invalid", "true");
    if (document.activeElement !== input) input.focus();
  }

  function tokenAccepted() {
    if (!authFailed) return;
    authFailed = false;
    $("auth-banner").hidden = true;
    $("token-input").removeAttribute("aria-invalid");
    $("token-state").textContent = state.token ? "token saved" : "";
  }

  function initToken() {
    const input = $("token-input");
    input.value = state.token;
    $("token-state").textContent = state.token ? "token saved" : "";
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.token = input.value.trim();
      if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
      else localStorage.removeItem(TOKEN_KEY);
      $("token-state").textContent = state.token ? "token saved" : "no token";
      input.blur();
      reloadAll();
    });
    $("token-clear").addEventListener("click", () => {
      state.token = "";
      input.value = "";
      localStorage.removeItem(TOKEN_KEY);
      $("token-state").textContent = "no token";
    });
  }

  // --- URL hash (dataset, filters and open entry survive a reload) ----------------------------

  function writeHash() {
    if (!state.dataset) return;
    const p = { dataset: state.dataset.id };
    for (const [k, v] of Object.entries(state.query)) if (String(v) !== String(DEFAULT_QUERY[k])) p[k] = v;
    if (state.entry && !$("detail").hidden) p.entry = state.entry.id;
    history.replaceState(null, "", "#" + new URLSearchParams(p).toString());
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const query = { ...DEFAULT_QUERY };
    for (const k of Object.keys(DEFAULT_QUERY)) if (p.has(k)) query[k] = p.get(k);
    query.page = Math.max(1, parseInt(query.page, 10) || 1);
    query.per_page = parseInt(query.per_page, 10) || DEFAULT_QUERY.per_page;
    return { dataset: p.get("dataset"), entry: p.get("entry"), query };
  }

  // --- server, datasets -------------------------------------------------------------------------

  async function loadHealth() {
    try {
      const h = await api("GET", "/health");
      const badge = $("server-badge");
      badge.textContent = h.simulated ? "simulated models" : `log seq ${h.seq}`;
      badge.title = h.simulated ? "every model call is answered by the built-in simulator (--simulate)" : "";
      badge.className = "badge" + (h.simulated ? " sim" : "");
      badge.hidden = false;
    } catch (e) { /* the other calls report it */ }
  }

  async function loadFormats() {
    try {
      const data = await api("GET", "/export-formats");
      state.formats = data.formats.map((f) => f.name);
    } catch (e) { showError(e); }
  }

  async function loadDatasets() {
    try {
      const data = await api("GET", "/datasets");
      state.datasets = data.datasets;
      renderDatasets();
    } catch (e) { showError(e); }
  }

  function renderDatasets() {
    const list = $("datasets-list");
    if (!state.datasets.length) {
      list.replaceChildren(el("li", { class: "muted" }, "No datasets yet."));
      return;
    }
    list.replaceChildren(...state.datasets.map((d) => {
      const active = state.dataset && state.dataset.id === d.id;
      return el("li", {},
        el("button", { type: "button", class: "dataset" + (active ? " active" : ""), "data-id": d.id,
          "aria-current": active ? "true" : null, onclick: () => selectDataset(d.id) },
          el("span", { class: "name", text: d.name || d.id }),
          el("span", { class: "muted small-text" },
            `${d.total_entries} entries · ${d.kind}${d.pending ? ` · ${d.pending} pending` : ""}`)));
    }));
  }

  async function selectDataset(id, opts) {
    opts = opts || {};
    if (!state.dataset || state.dataset.id !== id) {
      state.selected.clear();
      state.query = opts.query ? { ...opts.query } : { ...DEFAULT_QUERY };
      state.current = opts.entry ? -1 : 0;
      closeDetail(false);
    }
    try {
      const doc = await api("GET", `/datasets/${encodeURIComponent(id)}`);
      delete doc.entries;
      state.dataset = doc;
    } catch (e) {
      showError(e);
      return;
    }
    $("empty-state").hidden = true;
    $("dataset-view").hidden = false;
    renderDatasets();
    renderDatasetHead();
    syncFilterInputs();
    await loadEntries({ focusEntry: opts.entry });
    if (opts.entry) {
      const idx = state.entries.findIndex((e) => e.id === opts.entry);
      if (idx >= 0) { state.current = idx; renderCurrent(); }
      await openEntryById(opts.entry);
    }
  }

  function renderDatasetHead() {
    const d = state.dataset;
    $("dataset-title").textContent = d.name || d.id;
    const splits = Object.entries(d.splits || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    $("dataset-meta").textContent = [
      d.id, `${d.total_entries} entries`, d.kind, d.source && `from ${d.source}`, `format ${d.format_type}`,
      d.flagged ? `${d.flagged} flagged` : "", splits && `splits: ${splits}`,
      d.pending ? `${d.pending} pending` : "", d.failed ? `${d.failed} failed` : "",
      `created ${fmtTime(d.created_at)}`,
    ].filter(Boolean).join(" · ");

    const qsum = d.quality_summary || { average_score: 0, distribution: { high: 0, medium: 0, low: 0 } };
    const dist = qsum.distribution;
    const total = Math.max(1, dist.high + dist.medium + dist.low);
    $("quality-summary").replaceChildren(
      el("div", { class: "avg" }, el("span", { class: "big", text: fmtScore(qsum.average_score) }),
        el("span", { class: "muted small-text" }, "average quality")),
      el("div", { class: "distbar", role: "img",
        "aria-label": `high ${dist.high}, medium ${dist.medium}, low ${dist.low}` },
        ...["high", "medium", "low"].map((k) => el("span", { class: "seg " + k,
          style: { width: `${(100 * dist[k]) / total}%` }, title: `${k}: ${dist[k]}` }))),
      el("div", { class: "legend small-text" },
        el("span", { class: "dot high" }), ` high ${dist.high} `,
        el("span", { class: "dot medium" }), ` medium ${dist.medium} `,
        el("span", { class: "dot low" }), ` low ${dist.low}`));

    const cat = $("f-category");
    const cats = Object.keys(qsum.categories || {}).sort((a, b) => a.localeCompare(b));
    cat.replaceChildren(el("option", { value: "" }, "any"),
      ...cats.map((c) => el("option", { value: c }, `${c} (${qsum.categories[c]})`)));
    if (state.query.category && !cats.includes(state.query.category)) {
      cat.append(el("option", { value: state.query.category }, state.query.category));
    }
    cat.value = state.query.category;

    renderBenchmarks(d);

    $("download-buttons").replaceChildren(...state.formats.map((f) =>
      el("button", { type: "button", class: "small", "data-format": f, "aria-label": `Download as ${f}`,
        onclick: () => download(f) }, f)));
  }

  const METRICS = { exact_match: "exact", token_f1: "F1", rouge_l: "ROUGE-L", rejection_accuracy: "rejection" };

  // The latest run of each suite and model, its figures, and what the model answered (loaded when opened).
  function renderBenchmarks(d) {
    const latest = new Map();
    for (const b of d.benchmarks || []) latest.set(`${b.suite}\u0000${b.model}`, b);
    $("benchmarks").replaceChildren(...[...latest.values()].map((b) => {
      const figures = Object.entries(METRICS).filter(([k]) => k in b.results)
        .map(([k, label]) => `${label} ${fmtScore(b.results[k])}`).join(" · ");
      const list = el("ol", { class: "bench-answers" });
      const box = el("details", { class: "benchmark", "data-suite": b.suite, "data-model": b.model,
        ontoggle: (ev) => { if (ev.target.open && !list.childElementCount) loadBenchmarkAnswers(d.id, b, list).catch(showError); } },
        el("summary", {}, `Benchmark ${b.suite} · ${b.model}: ${figures} (${b.results.questions} questions)`),
        list);
      return box;
    }));
  }

  async function loadBenchmarkAnswers(datasetId, b, list) {
    const q = new URLSearchParams({ suite: b.suite, model: b.model, per_page: "500" });
    const doc = await api("GET", `/datasets/${encodeURIComponent(datasetId)}/benchmark-answers?${q}`);
    list.replaceChildren(...doc.answers.map((a) => el("li", { "data-entry": a.entry_id },
      el("div", { class: "q" }, a.question),
      el("div", {}, el("span", { class: "muted" }, "model: "), a.answer),
      el("div", {}, el("span", { class: "muted" }, a.current ? "reference: " : "reference (edited since): "),
        a.reference),
      el("div", { class: "muted" }, Object.entries(a.scores)
        .map(([k, v]) => `${METRICS[k] || k} ${fmtScore(v)}`).join(" · ")))));
  }

  async function download(format) {
    const d = state.dataset;
    const url = `${API}/datasets/${encodeURIComponent(d.id)}/download?format_type=${encodeURIComponent(format)}`;
    if (!state.token) { // the browser streams it to disk
      const a = el("a", { href: url, download: "" });
      document.body.append(a);
      a.click();
      a.remove();
      return;
    }
    try { // a link cannot carry the token: fetch it and hand the browser the bytes
      const resp = await fetch(url, { headers: authHeaders() });
      if (resp.status === 401) { needToken(); return; }
      if (!resp.ok) {
        const data = await resp.json().catch(() => null);
        throw new ApiError(resp.status, data && data.title || String(resp.status), data && data.description || "");
      }
      const disp = resp.headers.get("Content-Disposition") || "";
      const m = /filename="?([^";]+)"?/.exec(disp);
      const blob = await resp.blob();
      const href = URL.createObjectURL(blob);
      const a = el("a", { href, download: m ? m[1] : `${d.id}.${format}` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60000);
    } catch (e) { showError(e); }
  }

  // --- filters and the entries table ---------------------------------------------------------

  const FILTER_INPUTS = {
    q: "f-q", min: "f-min", max: "f-max", category: "f-category", difficulty: "f-difficulty",
    flagged: "f-flagged", split: "f-split", per_page: "f-per-page",
  };

  function syncFilterInputs() {
    for (const [k, id] of Object.entries(FILTER_INPUTS)) $(id).value = String(state.query[k]);
    const sort = $("f-sort");
    sort.value = `${state.query.sort_by}:${state.query.order}`;
    if (sort.selectedIndex < 0) { // an order the menu does not list (from the URL): add it
      sort.append(el("option", { value: `${state.query.sort_by}:${state.query.order}` },
        `${state.query.sort_by} ${state.query.order}`));
      sort.value = `${state.query.sort_by}:${state.query.order}`;
    }
  }

  function readFilterInputs() {
    for (const [k, id] of Object.entries(FILTER_INPUTS)) state.query[k] = $(id).value.trim();
    const [sortBy, order] = $("f-sort").value.split(":");
    state.query.sort_by = sortBy || "quality";
    state.query.order = order || "";
    state.query.per_page = parseInt(state.query.per_page, 10) || 50;
  }

  function initFilters() {
    let timer = 0;
    const apply = () => {
      readFilterInputs();
      state.query.page = 1;
      state.current = 0;
      loadEntries();
    };
    for (const id of [...Object.values(FILTER_INPUTS), "f-sort"]) {
      const input = $(id);
      input.addEventListener("change", () => { clearTimeout(timer); apply(); });
      if (input.tagName === "INPUT") {
        input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 300); });
      }
    }
    $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); clearTimeout(timer); apply(); });
    $("f-reset").addEventListener("click", () => {
      state.query = { ...DEFAULT_QUERY, per_page: state.query.per_page };
      syncFilterInputs();
      state.current = 0;
      loadEntries();
    });
    $("page-prev").addEventListener("click", () => gotoPage(state.query.page - 1));
    $("page-next").addEventListener("click", () => gotoPage(state.query.page + 1));
  }

  function validQuality(v) {
    if (v === "") return "";
    const n = Number(v);
    return Number.isFinite(n) && n >= 0 && n <= 1 ? String(n) : null;
  }

  async function loadEntries(opts) {
    opts = opts || {};
    const d = state.dataset;
    if (!d) return;
    const q = state.query;
    const min = validQuality(q.min), max = validQuality(q.max);
    $("f-min").setAttribute("aria-invalid", min === null ? "true" : "false");
    $("f-max").setAttribute("aria-invalid", max === null ? "true" : "false");
    if (min === null || max === null) {
      $("entries-status").textContent = "Quality bounds are numbers from 0 to 1.";
      return;
    }
    const params = {
      page: q.page, per_page: q.per_page, sort_by: q.sort_by, order: q.order, min_quality: min,
      max_quality: max, category: q.category, difficulty: q.difficulty, flagged: q.flagged, split: q.split, q: q.q,
    };
    const seq = ++state.loadSeq;
    const keepId = opts.keepId || (state.entries[state.current] || {}).id;
    let page;
    try {
      page = await api("GET", `/datasets/${encodeURIComponent(d.id)}/entries${qs(params)}`);
    } catch (e) {
      if (seq === state.loadSeq) showError(e);
      return;
    }
    if (seq !== state.loadSeq) return; // a newer request went out meanwhile
    if (page.entries.length === 0 && page.total > 0 && q.page > 1) { // the page emptied (e.g. filters)
      state.query.page = Math.max(1, page.pages);
      return loadEntries(opts);
    }
    state.page = page;
    state.entries = page.entries;
    if (opts.keepPosition === "last") state.current = page.entries.length - 1;
    else if (opts.keepPosition === "first") state.current = 0;
    else {
      const idx = keepId ? page.entries.findIndex((e) => e.id === keepId) : -1;
      state.current = idx >= 0 ? idx : Math.min(Math.max(0, state.current), page.entries.length - 1);
    }
    if (page.entries.length === 0) state.current = -1;
    renderEntries();
    writeHash();
  }

  function gotoPage(n, position) {
    const pages = state.page ? Math.max(1, state.page.pages) : 1;
    if (n < 1 || n > pages || n === state.query.page) return false;
    state.query.page = n;
    loadEntries({ keepPosition: position || "first" }).then(() => {
      if (!$("detail").hidden && state.entries[state.current]) openEntry(state.current, false);
      else focusCurrentRow();
    });
    return true;
  }

  function renderEntries() {
    const body = $("entries-body");
    const page = state.page;
    const highlight = state.fresh || new Set();
    body.replaceChildren(...state.entries.map((e, i) => {
      const checked = state.selected.has(e.id);
      const fb = e.feedback;
      const rating = fb && fb.average_rating !== null && fb.average_rating !== undefined
        ? `★ ${fb.average_rating.toFixed(1)} (${fb.count})` : fb && fb.count ? `${fb.count} note${fb.count > 1 ? "s" : ""}` : "";
      const row = el("tr", {
        "data-id": e.id, "data-index": String(i), tabindex: "-1",
        class: [checked ? "selected" : "", e.flagged ? "flagged" : "", highlight.has(e.id) ? "fresh" : ""]
          .filter(Boolean).join(" "),
        onclick: (ev) => {
          if (ev.target.closest("input,button,a,label")) return;
          setCurrent(i);
          openEntry(i, true);
        },
      },
      el("td", { class: "c-sel" },
        el("input", { type: "checkbox", checked, "aria-label": `Select entry ${(page.page - 1) * page.per_page + i + 1}`,
          onchange: (ev) => { toggleSelect(e.id, ev.target.checked); setCurrent(i, false); } })),
      el("td", { class: "c-q" }, el("div", { class: "clamp", text: e.question }),
        e.flagged ? el("span", { class: "flag", title: "flagged by feedback" }, "⚑ flagged") : null,
        e.below_threshold ? el("span", { class: "tag" }, "below threshold") : null,
        e.duplicate_of ? el("span", { class: "tag" }, "duplicate") : null),
      el("td", { class: "c-a" }, el("div", { class: "clamp", text: e.answer })),
      el("td", { class: "c-cat", text: e.category || "–", title: e.category || null }),
      el("td", { class: "c-diff", text: e.difficulty || "–", title: e.difficulty || null }),
      el("td", { class: "c-qual" }, el("span", { class: "score " + band(e.quality_score), text: fmtScore(e.quality_score) }),
        el("span", { class: "bar", "aria-hidden": "true" }, el("span", { class: band(e.quality_score),
          style: { width: `${Math.round(100 * (e.quality_score || 0))}%` } }))),
      el("td", { class: "c-rate", text: rating }),
      el("td", { class: "c-rev", text: String(e.revision) }));
      return row;
    }));
    if (!state.entries.length) {
      body.append(el("tr", {}, el("td", { colspan: "8", class: "muted empty-row" },
        page && page.total === 0 && hasFilters() ? "No entry matches these filters." : "No entries.")));
    }
    const pages = Math.max(1, page.pages);
    const first = page.total ? (page.page - 1) * page.per_page + 1 : 0;
    const last = (page.page - 1) * page.per_page + state.entries.length;
    $("entries-status").textContent =
      `Page ${page.page} of ${pages} · ${first}–${last} of ${page.total} entries` +
      ` · sorted by ${page.sort_by} ${page.order === "asc" ? "↑" : "↓"}`;
    $("page-prev").disabled = page.page <= 1;
    $("page-next").disabled = page.page >= pages;
    renderCurrent();
    renderSelection();
  }

  function hasFilters() {
    const q = state.query;
    return Boolean(q.q || q.min || q.max || q.category || q.difficulty || q.flagged || q.split);
  }

  function rows() { return Array.from($("entries-body").querySelectorAll("tr[data-id]")); }

  function renderCurrent() {
    rows().forEach((r, i) => {
      const cur = i === state.current;
      r.classList.toggle("current", cur);
      r.tabIndex = cur ? 0 : -1;
      if (cur) r.setAttribute("aria-current", "true");
      else r.removeAttribute("aria-current");
    });
  }

  function setCurrent(i, focus) {
    if (i < 0 || i >= state.entries.length) return;
    state.current = i;
    renderCurrent();
    if (focus !== false) focusCurrentRow();
  }

  function focusCurrentRow() {
    const row = rows()[state.current];
    if (row) {
      row.focus({ preventScroll: true });
      row.scrollIntoView({ block: "nearest" });
    }
  }

  function move(delta) {
    if (!state.entries.length) return;
    const next = state.current + delta;
    if (next >= state.entries.length) { gotoPage(state.query.page + 1, "first"); return; }
    if (next < 0) { gotoPage(state.query.page - 1, "last"); return; }
    setCurrent(next, $("detail").hidden || !state.editing);
    if (!$("detail").hidden) openEntry(next, false);
  }

  // --- selection and regeneration -----------------------------------------------------------

  function toggleSelect(id, on) {
    if (on === undefined) on = !state.selected.has(id);
    if (on) state.selected.add(id); else state.selected.delete(id);
    renderSelection();
  }

  function renderSelection() {
    const n = state.selected.size;
    $("selection-count").textContent = `${n} selected`;
    $("regen-open").disabled = n === 0;
    $("regen-open").textContent = n ? `Regenerate ${n} selected…` : "Regenerate selected…";
    for (const row of rows()) {
      const on = state.selected.has(row.dataset.id);
      row.classList.toggle("selected", on);
      const box = row.querySelector("input[type=checkbox]");
      if (box) box.checked = on;
    }
  }

  let regenIds = [];

  function openRegenerate(ids) {
    if (!ids.length) return;
    regenIds = ids;
    $("regen-count").textContent = ids.length === 1 ? "1 entry" : `${ids.length} entries`;
    const dlg = $("regen-dialog");
    dlg.showModal();
    $("g-improve").focus();
  }

  function initRegenerate() {
    $("regen-open").addEventListener("click", () => openRegenerate(Array.from(state.selected)));
    $("regen-one").addEventListener("click", () => { if (state.entry) openRegenerate([state.entry.id]); });
    $("regen-cancel").addEventListener("click", () => $("regen-dialog").close());
    $("regen-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const config = { improve_quality: $("g-improve").checked };
      if ($("g-lower").checked) config.accept_lower = true;
      const model = $("g-model").value.trim();
      const temp = $("g-temp").value.trim();
      const max = $("g-max").value.trim();
      if (model) config.model = model;
      if (temp !== "") config.temperature = Number(temp);
      if (max !== "") config.max_tokens = parseInt(max, 10);
      const conc = parseInt($("g-conc").value, 10);
      if (conc >= 1 && conc <= 64) config.concurrency = conc;
      const ids = regenIds.slice();
      const d = state.dataset;
      try {
        const acc = await api("POST", `/datasets/${encodeURIComponent(d.id)}/regenerate`,
          { entry_ids: ids, regeneration_config: config });
        $("regen-dialog").close();
        for (const id of ids) state.selected.delete(id);
        renderSelection();
        toast(acc.message);
        showRegenProgress(acc.job_id, ids, { job_id: acc.job_id, status: "pending", progress: 0,
          current_step: "Waiting to start" });
        watchJob(acc.job_id, (job) => regenerationDone(job, ids, d.id));
        loadJobs();
      } catch (e) {
        $("regen-dialog").close();
        showError(e);
      }
      focusCurrentRow();
    });
  }

  function showRegenProgress(jobId, ids, job) {
    const box = $("regen-progress");
    box.hidden = false;
    box.dataset.job = jobId;
    renderJobInline(box, job, ids.length);
  }

  // The API reports a cancelled job as failed (the guide's four states) with cancelled: true; the page says cancelled.
  function jobState(job) {
    return job.cancelled ? "cancelled" : job.status;
  }

  function jobDone(job) {
    return job.status === "completed" || job.status === "failed";
  }

  function renderJobInline(box, job, count) {
    const n = count || Number(box.dataset.count || 0);
    box.dataset.count = String(n);
    box.dataset.status = jobState(job);
    const label = `Regenerating ${n} ${n === 1 ? "entry" : "entries"}`;
    const done = jobDone(job);
    box.replaceChildren(
      el("span", { class: "label" }, done ? `Regeneration ${jobState(job)}` : label),
      el("progress", { max: "100", value: String(job.progress), "aria-label": `${label}: progress` }),
      el("span", { class: "pct", text: `${job.progress}%` }),
      el("span", { class: "step muted", text: job.error ? job.error : job.current_step }),
      done ? el("button", { type: "button", class: "quiet small", "aria-label": "Hide regeneration status",
        onclick: () => { box.hidden = true; } }, "✕")
        : el("button", { type: "button", class: "small danger", onclick: () => cancelJob(job.job_id) }, "Cancel"));
  }

  async function regenerationDone(job, ids, datasetId) {
    if (job.status === "completed") {
      const r = job.result || {};
      toast(`Regenerated ${r.regenerated ?? ids.length} of ${r.requested ?? ids.length} entries`);
    } else if (job.cancelled) {
      toast("Regeneration cancelled");
    } else {
      toast(`Regeneration failed: ${job.error || "see the job"}`, "error");
    }
    if (!state.dataset || state.dataset.id !== datasetId) return;
    state.fresh = new Set(ids);
    await loadEntries();
    if (state.entry && ids.includes(state.entry.id) && !$("detail").hidden && !state.editing) {
      await refreshEntry(state.entry.id);
    }
    setTimeout(() => { state.fresh = null; for (const r of rows()) r.classList.remove("fresh"); }, 4000);
  }

  // --- the entry view ------------------------------------------------------------------------

  async function openEntry(i, focus) {
    const e = state.entries[i];
    if (!e) return;
    state.current = i;
    renderCurrent();
    await openEntryById(e.id, focus, e);
  }

  async function openEntryById(id, focus, known) {
    if (state.editing) stopEdit();
    const detail = $("detail");
    const wasHidden = detail.hidden;
    detail.hidden = false;
    document.body.classList.add("has-detail");
    if (known) renderEntry(known);
    resetRateForm();
    await refreshEntry(id);
    if (wasHidden) focusCurrentRow();
    if (focus) $("detail-title").focus();
    writeHash();
  }

  async function refreshEntry(id) {
    const d = state.dataset;
    try {
      const e = await api("GET", `/datasets/${encodeURIComponent(d.id)}/entries/${encodeURIComponent(id)}`);
      if (state.entry && state.entry.id !== id && (state.entries[state.current] || {}).id !== id) return;
      renderEntry(e);
      updateRow(e);
      loadHistory(e);
      loadChunk(e);
    } catch (err) { showError(err); }
  }

  function closeDetail(focus) {
    if (state.editing) stopEdit();
    $("detail").hidden = true;
    document.body.classList.remove("has-detail");
    state.entry = null;
    writeHash();
    if (focus !== false) focusCurrentRow();
  }

  function renderEntry(e) {
    state.entry = e;
    const n = state.page ? (state.page.page - 1) * state.page.per_page + state.current + 1 : "";
    $("detail-title").textContent = `Entry ${n ? n + " " : ""}· revision ${e.revision}`;
    $("detail-title").tabIndex = -1;
    $("detail-meta").textContent = [
      e.id, e.model && `model ${e.model}`, e.simulated ? "simulated" : e.provider,
      e.split && `split ${e.split}`, e.difficulty, e.flagged ? "⚑ flagged" : "",
      e.below_threshold ? "below threshold" : "", e.duplicate_of ? `duplicate of ${e.duplicate_of}` : "",
      `updated ${fmtTime(e.updated_at)}`,
    ].filter(Boolean).join(" · ");
    $("d-question").textContent = e.question;
    $("d-answer").textContent = e.answer || "(empty)";
    $("d-category").textContent = e.category || "–";
    $("d-reasoning").textContent = e.reasoning || "(none)";

    const comps = Object.entries(e.quality || {});
    $("d-quality").replaceChildren(
      el("div", { class: "component total" }, el("span", { class: "name" }, "quality score"),
        el("meter", { min: "0", max: "1", low: "0.5", high: "0.8", optimum: "1", value: String(e.quality_score ?? 0),
          "aria-label": "quality score" }),
        el("span", { class: "val score " + band(e.quality_score), text: fmtScore(e.quality_score) })),
      ...comps.map(([k, v]) => el("div", { class: "component" }, el("span", { class: "name", text: k.replace(/_/g, " ") }),
        el("meter", { min: "0", max: "1", low: "0.5", high: "0.8", optimum: "1", value: String(v), "aria-label": k }),
        el("span", { class: "val", text: fmtScore(v) }))));
    if (!comps.length) $("d-quality").append(el("p", { class: "muted" }, "No quality components recorded."));

    const fb = e.feedback;
    if (!fb || !fb.count) {
      $("d-feedback").replaceChildren(el("p", { class: "muted" }, "No feedback yet."));
    } else {
      const ratings = fb.ratings.length ? fb.ratings.join(", ") : "none";
      $("d-feedback").replaceChildren(
        el("p", { class: "fb-summary" },
          fb.average_rating !== null && fb.average_rating !== undefined
            ? el("strong", { text: `★ ${fb.average_rating.toFixed(1)}` }) : "",
          ` ${fb.count} feedback${fb.count > 1 ? "s" : ""} · ratings: ${ratings}`,
          fb.types.length ? ` · ${[...new Set(fb.types)].join(", ")}` : ""),
        fb.comments.length ? el("ul", { class: "comments" }, ...fb.comments.map((c) => el("li", { text: c }))) : "");
    }
  }

  function updateRow(e) {
    const i = state.entries.findIndex((x) => x.id === e.id);
    if (i < 0) return;
    state.entries[i] = e;
    const row = rows()[i];
    if (!row) return;
    const focused = document.activeElement === row;
    renderEntries();
    if (focused) focusCurrentRow();
  }

  async function loadChunk(e) {
    const box = $("d-chunk");
    if (!e.source_chunk) { box.textContent = "(no source chunk: a question-list entry)"; return; }
    if (state.chunks.has(e.source_chunk)) { renderChunk(state.chunks.get(e.source_chunk)); return; }
    box.textContent = "loading…";
    try {
      const c = await api("GET", `/chunks/${encodeURIComponent(e.source_chunk)}`);
      state.chunks.set(e.source_chunk, c);
      if (state.entry && state.entry.source_chunk === e.source_chunk) renderChunk(c);
    } catch (err) {
      box.textContent = err instanceof ApiError && err.status === 404 ? `chunk ${e.source_chunk} not found` : String(err.message);
    }
  }

  function renderChunk(c) {
    $("d-chunk").replaceChildren(
      el("div", { class: "muted small-text" }, [c.title || c.heading, `chunk ${c.index + 1}`, c.id,
        `characters ${c.start}–${c.end}`].filter(Boolean).join(" · ")),
      el("div", { class: "chunk-text", text: c.text }));
  }

  function historySummary(ev) {
    const f = ev.fields || {};
    const parts = [];
    switch (ev.type) {
      case "EntryGenerated":
        parts.push(`by ${f.model || "?"}${f.simulated ? " (simulated)" : ""}`);
        if (f.prompt_name) parts.push(`prompt ${f.prompt_name}`);
        parts.push(`answer: “${truncate(f.answer, 140)}”`);
        break;
      case "EntryScored":
        parts.push(`quality ${fmtScore(f.quality_score)}${f.difficulty ? ", " + f.difficulty : ""}` +
          `${f.below_threshold ? ", below threshold" : ""}`);
        break;
      case "EntryEdited":
        for (const k of ["question", "answer", "category"]) if (f[k] !== undefined && f[k] !== null) parts.push(`${k} → “${truncate(f[k], 120)}”`);
        if (f.feedback) parts.push(`note: ${truncate(f.feedback, 120)}`);
        break;
      case "FeedbackGiven":
        if (f.rating) parts.push(`rating ${f.rating}`);
        parts.push(f.feedback_type || "feedback");
        if (f.comments) parts.push(`“${truncate(f.comments, 140)}”`);
        break;
      case "RegenerationRequested": {
        const c = f.config || {};
        parts.push(`job ${shortId(f.job_id)}`);
        if (c.improve_quality) parts.push("improve quality");
        if (c.model) parts.push(`model ${c.model}`);
        break;
      }
      case "EntryRegenerated":
        parts.push(`by ${f.model || "?"}${f.simulated ? " (simulated)" : ""}`);
        if (f.current === false) {
          parts.push(`set aside: scored ${fmtScore(f.quality_score)} < ${fmtScore(f.replaced_score)}`);
        }
        parts.push(`answer: “${truncate(f.answer, 140)}”`);
        break;
      case "RevisionRestored":
        parts.push(`revision of seq ${f.seq} made current`);
        break;
      default:
        break;
    }
    return parts.join(" · ");
  }

  async function loadHistory(e) {
    const d = state.dataset;
    const seq = ++state.historySeq;
    const list = $("d-history");
    try {
      const h = await api("GET", `/entries/${encodeURIComponent(d.id)}/${encodeURIComponent(e.id)}/history`);
      if (seq !== state.historySeq) return;
      list.replaceChildren(...h.events.map((ev) => el("li", { class: "ev ev-" + ev.type },
        el("div", { class: "ev-head" }, el("span", { class: "ev-type", text: ev.type }),
          el("span", { class: "muted small-text", text: `seq ${ev.seq} · ${fmtTime(ev.ts)}` })),
        el("div", { class: "ev-sum small-text", text: historySummary(ev) }),
        el("details", {}, el("summary", { class: "small-text" }, "all fields"),
          el("pre", { text: JSON.stringify(ev.fields, null, 2) })))));
      if (!h.events.length) list.replaceChildren(el("li", { class: "muted" }, "No events."));
    } catch (err) {
      if (seq === state.historySeq) list.replaceChildren(el("li", { class: "muted", text: String(err.message) }));
    }
  }

  // --- edit ----------------------------------------------------------------------------------

  function startEdit() {
    const e = state.entry;
    if (!e) return;
    state.editing = true;
    $("detail-show").hidden = true;
    const form = $("edit-form");
    form.hidden = false;
    $("e-question").value = e.question;
    $("e-answer").value = e.answer;
    $("e-category").value = e.category;
    $("e-note").value = "";
    $("edit-button").disabled = true;
    const answer = $("e-answer");
    answer.focus();
    answer.setSelectionRange(answer.value.length, answer.value.length);
  }

  function stopEdit() {
    state.editing = false;
    $("edit-form").hidden = true;
    $("detail-show").hidden = false;
    $("edit-button").disabled = false;
  }

  async function saveEdit() {
    const e = state.entry;
    if (!e) return;
    const body = {};
    const question = $("e-question").value;
    const answer = $("e-answer").value;
    const category = $("e-category").value.trim();
    const note = $("e-note").value.trim();
    if (!question.trim()) { toast("The question cannot be empty.", "error"); $("e-question").focus(); return; }
    if (question !== e.question) body.question = question;
    if (answer !== e.answer) body.answer = answer;
    if (category !== e.category) body.category = category;
    if (note) body.feedback = note;
    if (!Object.keys(body).length) { toast("Nothing changed."); stopEdit(); focusCurrentRow(); return; }
    try {
      const res = await api("PUT", `/datasets/${encodeURIComponent(state.dataset.id)}/entries/${encodeURIComponent(e.id)}`, body);
      stopEdit();
      renderEntry(res.entry);
      updateRow(res.entry);
      loadHistory(res.entry);
      toast(`Saved: revision ${res.entry.revision}`);
      focusCurrentRow();
    } catch (err) { showError(err); }
  }

  function initEdit() {
    $("edit-button").addEventListener("click", startEdit);
    $("edit-cancel").addEventListener("click", () => { stopEdit(); focusCurrentRow(); });
    $("edit-form").addEventListener("submit", (ev) => { ev.preventDefault(); saveEdit(); });
    $("detail-close").addEventListener("click", () => closeDetail());
    $("detail-prev").addEventListener("click", () => move(-1));
    $("detail-next").addEventListener("click", () => move(1));
  }

  // --- rating --------------------------------------------------------------------------------

  function resetRateForm() {
    for (const r of document.querySelectorAll("input[name=rating]")) r.checked = false;
    $("r-comment").value = "";
    $("r-type").value = "bulk_edit";
    $("rate-state").textContent = "";
  }

  async function rateKey(n) {
    if (!state.entry || $("detail").hidden) {
      if (state.current < 0) return;
      await openEntry(state.current, false);
    }
    const radio = document.querySelector(`input[name=rating][value="${n}"]`);
    radio.checked = true;
    $("rate-state").textContent = `rating ${n}: add a comment or press Enter to send`;
    const comment = $("r-comment");
    comment.focus();
    comment.scrollIntoView({ block: "nearest" });
  }

  async function sendRating() {
    const e = state.entry;
    if (!e) return;
    const picked = document.querySelector("input[name=rating]:checked");
    const comment = $("r-comment").value.trim();
    if (!picked && !comment) { $("rate-state").textContent = "pick a rating (1–5) or write a comment"; return; }
    const body = { entry_ids: [e.id], feedback_type: $("r-type").value };
    if (picked) body.rating = parseInt(picked.value, 10);
    if (comment) body.comments = comment;
    try {
      await api("POST", `/datasets/${encodeURIComponent(state.dataset.id)}/feedback`, body);
      resetRateForm();
      toast(picked ? `Rated ${body.rating}${comment ? " with a comment" : ""}` : "Comment sent");
      await refreshEntry(e.id);
      focusCurrentRow();
    } catch (err) { showError(err); }
  }

  function initRating() {
    $("rate-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendRating(); });
  }

  // --- jobs ----------------------------------------------------------------------------------

  async function loadJobs() {
    try {
      const data = await api("GET", "/jobs?limit=15");
      state.jobs = data.jobs;
      renderJobs();
      for (const j of data.jobs) if (j.status === "pending" || j.status === "running") watchJob(j.job_id);
    } catch (e) { if (!(e instanceof ApiError && e.status === 401)) showError(e); }
  }

  function datasetName(id) {
    const d = state.datasets.find((x) => x.id === id);
    return d ? d.name : id ? shortId(id) : "";
  }

  function renderJobs() {
    const list = $("jobs-list");
    if (!state.jobs.length) { list.replaceChildren(el("li", { class: "muted" }, "No jobs yet.")); return; }
    list.replaceChildren(...state.jobs.map((j) => jobItem(j)));
  }

  function jobItem(j) {
    const running = j.status === "pending" || j.status === "running";
    const eta = j.estimated_completion ? ` · done ~${new Date(j.estimated_completion).toLocaleTimeString()}` : "";
    const result = j.result || {};
    const outcome = j.status === "completed"
      ? (j.kind === "regenerate" ? `${result.regenerated ?? "?"} regenerated` : `${result.entries_count ?? "?"} entries`)
      : "";
    return el("li", { class: "job " + jobState(j), "data-job": j.job_id },
      el("div", { class: "job-head" },
        el("span", { class: "kind", text: j.kind || "job" }),
        el("span", { class: "status " + jobState(j), text: jobState(j) })),
      el("div", { class: "small-text muted", title: j.job_id },
        `${datasetName(j.dataset_id)} · ${shortId(j.job_id)}${outcome ? " · " + outcome : ""}`),
      el("div", { class: "job-progress" },
        el("progress", { max: "100", value: String(j.progress), "aria-label": `${j.kind} job ${shortId(j.job_id)} progress` }),
        el("span", { class: "pct", text: `${j.progress}%` })),
      el("div", { class: "small-text step", text: (j.error || j.current_step) + (running ? eta : "") }),
      running ? el("button", { type: "button", class: "small danger", "aria-label": `Cancel job ${shortId(j.job_id)}`,
        onclick: () => cancelJob(j.job_id) }, "Cancel") : null);
  }

  function updateJob(j) {
    const i = state.jobs.findIndex((x) => x.job_id === j.job_id);
    if (i >= 0) state.jobs[i] = j; else state.jobs.unshift(j);
    const old = $("jobs-list").querySelector(`li[data-job="${CSS.escape(j.job_id)}"]`);
    if (old) old.replaceWith(jobItem(j)); else renderJobs();
    const box = $("regen-progress");
    if (!box.hidden && box.dataset.job === j.job_id) renderJobInline(box, j);
  }

  function watchJob(jobId, onDone) {
    let w = state.watched.get(jobId);
    if (!w) { w = { onDone: [] }; state.watched.set(jobId, w); }
    if (onDone) w.onDone.push(onDone);
    schedulePoll();
  }

  let pollTimer = 0;
  function schedulePoll() {
    if (pollTimer || !state.watched.size) return;
    pollTimer = setTimeout(pollWatched, POLL_MS);
  }

  async function pollWatched() {
    pollTimer = 0;
    await Promise.all(Array.from(state.watched.keys()).map(async (id) => {
      let j;
      try {
        j = await api("GET", `/datasets/generate/${encodeURIComponent(id)}/status`);
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) state.watched.delete(id);
        return;
      }
      updateJob(j);
      if (jobDone(j)) {
        const w = state.watched.get(id);
        state.watched.delete(id);
        for (const fn of (w ? w.onDone : [])) fn(j);
        jobFinished(j);
      }
    }));
    schedulePoll();
  }

  async function jobFinished(j) {
    await loadDatasets();
    if (j.kind !== "regenerate" && state.dataset && j.dataset_id === state.dataset.id) {
      await selectDataset(state.dataset.id);
    }
  }

  async function cancelJob(jobId) {
    try {
      toast("Cancelling…");
      const j = await api("POST", `/jobs/${encodeURIComponent(jobId)}/cancel`, { reason: "cancelled from the review page" });
      updateJob(j);
      toast(`Job ${shortId(jobId)}: ${jobState(j)}`);
    } catch (e) { showError(e); }
  }

  // --- keyboard ------------------------------------------------------------------------------

  function isTyping(t) {
    return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName)) &&
      !(t.tagName === "INPUT" && ["checkbox", "radio", "button", "submit"].includes(t.type));
  }

  function onKey(ev) {
    if (document.querySelector("dialog[open]")) return; // the dialog handles its own keys (Esc closes it)
    const t = ev.target;
    if (isTyping(t)) {
      if (ev.key === "Escape") {
        ev.preventDefault();
        if (t.closest("#edit-form")) { stopEdit(); focusCurrentRow(); } else { t.blur(); focusCurrentRow(); }
      } else if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && t.closest("#edit-form")) {
        ev.preventDefault();
        saveEdit();
      } else if (ev.key === "Enter" && !ev.shiftKey && t.id === "r-comment") {
        ev.preventDefault();
        sendRating();
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const hasData = !$("dataset-view").hidden;
    switch (ev.key) {
      case "?": ev.preventDefault(); $("help-dialog").showModal(); return;
      case "Escape":
        if (!$("detail").hidden) { ev.preventDefault(); closeDetail(); }
        return;
      default: break;
    }
    if (!hasData) return;
    switch (ev.key) {
      case "j": ev.preventDefault(); move(1); break;
      case "k": ev.preventDefault(); move(-1); break;
      case "n": ev.preventDefault(); gotoPage(state.query.page + 1); break;
      case "p": ev.preventDefault(); gotoPage(state.query.page - 1); break;
      case "/": ev.preventDefault(); $("f-q").focus(); $("f-q").select(); break;
      case "x": {
        const e = state.entries[state.current];
        if (e) { ev.preventDefault(); toggleSelect(e.id); }
        break;
      }
      case "r": {
        ev.preventDefault();
        const ids = state.selected.size ? Array.from(state.selected)
          : state.entries[state.current] ? [state.entries[state.current].id] : [];
        openRegenerate(ids);
        break;
      }
      case "e":
        ev.preventDefault();
        if (state.current < 0) break;
        if ($("detail").hidden || !state.entry || state.entry.id !== state.entries[state.current].id) {
          openEntry(state.current, false).then(startEdit);
        } else startEdit();
        break;
      case "Enter":
        if (t && t.closest && t.closest("button,a,summary,input,select")) return; // let them act
        if (state.current >= 0) { ev.preventDefault(); openEntry(state.current, true); }
        break;
      case "1": case "2": case "3": case "4": case "5":
        ev.preventDefault();
        rateKey(Number(ev.key));
        break;
      default: break;
    }
  }

  // --- start ---------------------------------------------------------------------------------

  async function reloadAll() {
    const h = state.dataset ? null : readHash();
    await Promise.all([loadHealth(), loadDatasets(), state.formats.length ? null : loadFormats()]);
    loadJobs();
    if (state.dataset) await selectDataset(state.dataset.id);
    else if (h && h.dataset) await selectDataset(h.dataset, { query: h.query, entry: h.entry });
  }

  function init() {
    initToken();
    initFilters();
    initEdit();
    initRating();
    initRegenerate();
    $("datasets-refresh").addEventListener("click", loadDatasets);
    $("jobs-refresh").addEventListener("click", loadJobs);
    $("select-page").addEventListener("click", () => { for (const e of state.entries) state.selected.add(e.id); renderSelection(); });
    $("select-none").addEventListener("click", () => { state.selected.clear(); renderSelection(); });
    $("help-button").addEventListener("click", () => $("help-dialog").showModal());
    $("help-close").addEventListener("click", () => $("help-dialog").close());
    $("help-dialog").addEventListener("close", () => focusCurrentRow());
    document.addEventListener("keydown", onKey);
    setInterval(() => { if (!document.hidden && !authFailed) loadJobs(); }, JOBS_MS);
    reloadAll();
  }

  // for the tests and the curious: the state, read-only by convention
  window.dsetReview = { state };

  init();
})();

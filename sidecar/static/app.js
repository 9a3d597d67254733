// algomesh dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
// It asks this origin's JSON API (with the token `algomesh up` printed) every 2 seconds and
// redraws a panel only when its data changed. Data is put into the page as text nodes,
// never as HTML.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const state = {
    token: "",
    window: 900,
    filters: { algorithm: "", caller: "", errors: false, slower: "" },
    selected: null,        // {kind: "node"|"edge", id}
    trace: null,           // the open trace id
    span: null,            // the selected span id
    last: {},              // panel -> the JSON text it was last drawn from
    timer: null,
    refreshes: 0,
    busy: false,
  };

  // --- the token -----------------------------------------------------------------------
  // Like Jupyter: the URL carries it once; the page keeps it for this tab and takes it
  // out of the address bar (and so out of the history and of screenshots).
  function takeToken() {
    const url = new URL(window.location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl) {
      sessionStorage.setItem("algomesh-token", fromUrl);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    state.token = fromUrl || sessionStorage.getItem("algomesh-token") || "";
  }

  class Unauthorized extends Error {}

  async function api(path, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== "" && v !== false && v !== null && v !== undefined) query.set(k, v === true ? "1" : String(v));
    }
    const res = await fetch(path + (query.toString() ? "?" + query : ""), {
      headers: { Authorization: "Bearer " + state.token }, cache: "no-store",
    });
    if (res.status === 401) throw new Unauthorized("token refused");
    const text = await res.text();
    if (!res.ok) {
      let message = res.status + " " + res.statusText;
      try { message = JSON.parse(text).error || message; } catch (_) { /* not JSON */ }
      const err = new Error(message);
      err.status = res.status;
      throw err;
    }
    return text;
  }

  // --- small DOM helpers (text only, never innerHTML) ----------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.setAttribute("class", v);
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

  const fmtMs = (ms) => ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms >= 10 ? ms.toFixed(0) + " ms" : ms.toFixed(1) + " ms";
  const fmtNum = (n) => (n === undefined || n === null) ? "" : n >= 100 ? Math.round(n).toString() : (Math.round(n * 10) / 10).toString();
  const pct = (rate) => (rate * 100 >= 10 || rate === 0 ? (rate * 100).toFixed(0) : (rate * 100).toFixed(1)) + "%";
  function fmtTime(ms) {
    const d = new Date(ms);
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }
  function windowText() {
    const w = state.window;
    return w >= 3600 ? (w / 3600) + " h" : (w / 60) + " min";
  }

  // Draw a panel only when its data changed: returns the parsed data or null.
  function changed(panel, text) {
    if (state.last[panel] === text) return null;
    state.last[panel] = text;
    return JSON.parse(text);
  }

  // --- the header ------------------------------------------------------------------------
  function drawOverview(o) {
    const status = $("mesh-status");
    if (!o.registry.ok) {
      status.className = "status stale";
      status.textContent = "registry stale";
      status.title = o.registry.stale || "";
    } else {
      status.className = "status ok";
      status.textContent = "mesh up";
      status.title = "";
    }
    const inst = o.instances || {};
    const parts = [o.address, `${o.algorithms} algorithm${o.algorithms === 1 ? "" : "s"}`,
      `${inst.warm || 0} warm`];
    for (const k of ["starting", "failing", "stopping"]) if (inst[k]) parts.push(`${inst[k]} ${k}`);
    parts.push(`${o.spans.toLocaleString("en")} spans`, `up ${fmtAge(o.uptime_s)}`, `security: ${o.security}`);
    $("mesh-summary").textContent = parts.filter(Boolean).join(" · ");
  }

  function markDown(message) {
    const status = $("mesh-status");
    status.className = "status down";
    status.textContent = "unreachable";
    status.title = message || "";
  }

  // --- algorithms --------------------------------------------------------------------------
  function drawAlgorithms(data) {
    const body = $("algorithms").tBodies[0];
    clear(body);
    if (!data.algorithms.length) {
      body.appendChild(h("tr", {}, h("td", { colspan: 3, class: "empty", text: "nothing published yet: algomesh publish FOLDER" })));
    }
    for (const algo of data.algorithms) {
      algo.versions.forEach((v, i) => {
        const badges = v.instances.length
          ? v.instances.map((inst) => h("span", {
            class: "badge " + inst.state, "data-test": "instance", "data-state": inst.state, "data-instance": inst.id,
            title: [inst.id, inst.address, inst.health && "health: " + inst.health, inst.age_s !== null && "up " + fmtAge(inst.age_s)]
              .filter(Boolean).join(" · "),
          }, inst.state))
          : [h("span", { class: "badge cold", "data-test": "instance", "data-state": "cold", title: "no instance: the next call starts one" }, "cold")];
        const row = h("tr", {
          class: "clickable", "data-test": "algorithm-version", "data-algorithm": algo.name,
          "data-version": v.version, "data-state": v.state, title: "list the calls to " + algo.name + "@" + v.version,
          onclick: () => filterBy({ algorithm: algo.name + "@" + v.version, caller: "" }, { kind: "node", id: algo.name + "@" + v.version }),
        },
        i === 0 ? h("td", { rowspan: algo.versions.length, class: "algo-name", "data-test": "algorithm-name" },
          h("strong", {}, algo.name), v.description ? h("div", { class: "hint", text: v.description }) : null) : null,
        h("td", { class: "mono" }, v.version, v.latest ? h("span", { class: "tag", text: "latest" }) : null,
          v.private ? h("span", { class: "tag", text: "private" }) : null),
        h("td", {}, badges));
        body.appendChild(row);
      });
    }
    updateAlgorithmOptions(data.algorithms);
  }

  function setOptions(select, options, current) {
    const want = JSON.stringify(options);
    if (select.dataset.options !== want) {
      select.dataset.options = want;
      clear(select);
      for (const [value, label] of options) select.appendChild(h("option", { value, text: label }));
    }
    if (current && !options.some(([v]) => v === current)) select.appendChild(h("option", { value: current, text: current }));
    select.value = current;
  }

  function updateAlgorithmOptions(algorithms) {
    const options = [["", "all"]];
    for (const a of algorithms) {
      options.push([a.name, a.name]);
      for (const v of a.versions) options.push([a.name + "@" + v.version, "  " + a.name + "@" + v.version]);
    }
    setOptions($("filter-algorithm"), options, state.filters.algorithm);
  }

  // --- the call graph ------------------------------------------------------------------
  const NODE_W = 184, NODE_H = 46, ROW_GAP = 40, PAD = 16, CHAR_W = 6.6, LABEL_H = 34;

  // An edge's label, two lines: "N calls · E% errors" and "p50/p95 A/B ms".
  function edgeLabel(e) {
    return { calls: `${e.calls} call${e.calls === 1 ? "" : "s"} · `, errors: `${pct(e.error_rate)} errors`,
      latency: `p50/p95 ${fmtNum(e.p50_ms)}/${fmtNum(e.p95_ms)} ms` };
  }
  function labelWidth(l) {
    return Math.max((l.calls + l.errors).length, l.latency.length) * CHAR_W + 14;
  }

  function layout(nodes, edges) {
    // Columns by longest path from the callers (client first); a cycle cannot loop us.
    const layer = new Map(nodes.map((n) => [n.id, 0]));
    for (let round = 0; round < nodes.length; round++) {
      let moved = false;
      for (const e of edges) {
        if (e.caller === e.callee) continue;
        const want = layer.get(e.caller) + 1;
        if (want > layer.get(e.callee) && want < nodes.length) { layer.set(e.callee, want); moved = true; }
      }
      if (!moved) break;
    }
    const columns = [];
    for (const n of nodes) (columns[layer.get(n.id)] = columns[layer.get(n.id)] || []).push(n);
    const row = new Map();
    columns.forEach((col, c) => {
      // order by the mean row of their callers (fewer crossings), then by name
      const parentRow = (n) => {
        const rows = edges.filter((e) => e.callee === n.id && row.has(e.caller)).map((e) => row.get(e.caller));
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
      };
      if (c > 0) col.sort((a, b) => parentRow(a) - parentRow(b) || (a.id < b.id ? -1 : 1));
      col.forEach((n, i) => row.set(n.id, i));
    });
    const longest = Math.max(60, ...edges.map((e) => labelWidth(edgeLabel(e))));
    const colGap = longest + 44;
    const tallest = Math.max(...columns.map((col) => (col ? col.length : 0)));
    const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP;
    const pos = new Map();
    columns.forEach((col, c) => {
      if (!col) return;
      const colHeight = col.length * NODE_H + (col.length - 1) * ROW_GAP;
      const top = (height - colHeight) / 2;
      col.forEach((n, i) => pos.set(n.id, { x: PAD + c * (NODE_W + colGap), y: top + i * (NODE_H + ROW_GAP) }));
    });
    const width = PAD * 2 + (columns.length) * NODE_W + (columns.length - 1) * colGap;
    return { pos, width, height };
  }

  function drawGraph(data, states) {
    const box = $("graph");
    clear(box);
    $("graph-caption").textContent = `calls in the last ${windowText()}` + (data.truncated ? " (newest only)" : "") +
      (data.edges.some((e) => e.prestart) ? " · thick: the scheduler pre-starts the callee" : "") +
      (data.edges.some((e) => e.learned_only) ? " · dashed: learned before this window" : "");
    if (!data.edges.length) {
      box.appendChild(h("p", { class: "empty", "data-test": "graph-empty", text: `No calls in the last ${windowText()}.` }));
      return;
    }
    const { pos, width, height } = layout(data.nodes, data.edges);
    const svg = s("svg", { id: "graph-svg", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": "call graph" });
    const defs = s("defs", {},
      s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z" })),
      s("marker", { id: "arrow-red", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z" })));
    svg.appendChild(defs);
    const labels = [];
    for (const e of data.edges) {
      const a = pos.get(e.caller), b = pos.get(e.callee);
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2;
      let d;
      if (e.caller === e.callee || x2 <= x1) {   // a loop or a back edge: round over the top
        const top = Math.min(a.y, b.y) - 14;
        d = `M${a.x + NODE_W / 2},${a.y} C${a.x + NODE_W / 2},${top - 20} ${b.x + NODE_W / 2},${top - 20} ${b.x + NODE_W / 2},${b.y}`;
      } else {
        const mx = (x1 + x2) / 2;
        d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
      }
      const id = e.caller + " → " + e.callee;
      const selected = state.selected && state.selected.kind === "edge" && state.selected.id === id;
      const text = edgeLabel(e);
      const g = s("g", {
        class: "edge" + (e.errors ? " has-errors" : "") + (selected ? " selected" : "") +
          (e.prestart ? " prestart" : "") + (e.learned_only ? " learned-only" : ""), "data-test": "graph-edge",
        "data-caller": e.caller, "data-callee": e.callee, "data-calls": e.calls, "data-errors": e.errors,
        "data-share": e.share === null || e.share === undefined ? "" : e.share, "data-prestart": e.prestart ? "true" : "false",
        onclick: () => filterBy({ caller: e.caller, algorithm: e.callee }, { kind: "edge", id }),
      },
      s("title", { text: `${id}\n${e.calls} calls, ${e.errors} errors (${pct(e.error_rate)})\n` +
        `p50 ${e.p50_ms} ms · p95 ${e.p95_ms} ms · p99 ${e.p99_ms} ms · max ${e.max_ms} ms` +
        (e.share === null || e.share === undefined ? "" : `\nlearned: ${pct(e.share)} of the caller's calls` +
          (e.prestart ? " — the scheduler pre-starts the callee" : "")) }),
      s("path", { class: "hit", d }),
      s("path", { class: "line", d, "marker-end": e.errors ? "url(#arrow-red)" : "url(#arrow)" }));
      const w = labelWidth(text);
      labels.push({ g, x: (x1 + x2) / 2 - w / 2, y: (y1 + y2) / 2 - LABEL_H / 2, w, text });
      svg.appendChild(g);
    }
    // labels: nudge apart the ones that would overlap
    labels.sort((p, q) => p.y - q.y);
    for (let i = 0; i < labels.length; i++) {
      for (let j = 0; j < i; j++) {
        const p = labels[j], q = labels[i];
        if (q.x < p.x + p.w && p.x < q.x + q.w && q.y < p.y + LABEL_H + 2) q.y = p.y + LABEL_H + 2;
      }
    }
    for (const l of labels) {
      const { calls, errors, latency } = l.text;
      l.g.appendChild(s("g", { class: "edge-label", "data-test": "edge-label" },
        s("rect", { class: "label-bg", x: l.x, y: l.y, width: l.w, height: LABEL_H, rx: 3 }),
        s("text", { class: "label", "data-test": "edge-calls", x: l.x + 7, y: l.y + 14 },
          s("tspan", { text: calls }), s("tspan", { class: "errors", text: errors })),
        s("text", { class: "label", "data-test": "edge-latency", x: l.x + 7, y: l.y + 28, text: latency })));
    }
    for (const n of data.nodes) {
      const p = pos.get(n.id);
      const client = n.kind === "client";
      const st = client ? "client" : (states.get(n.id) || "cold");
      const selected = state.selected && state.selected.kind === "node" && state.selected.id === n.id;
      const title = client ? "client" : n.algorithm;
      const sub = client ? "calls through the ingress" : `@${n.version} · ${n.calls} in · ${st}`;
      const g = s("g", {
        class: "node" + (client ? " client" : "") + (n.errors ? " has-errors" : "") + (selected ? " selected" : ""),
        "data-test": "graph-node", "data-node": n.id, "data-state": st, transform: `translate(${p.x},${p.y})`,
        onclick: () => filterBy(client ? { caller: "client", algorithm: "" } : { algorithm: n.id, caller: "" }, { kind: "node", id: n.id }),
      },
      s("title", { text: client ? "client calls (through the ingress)" : `${n.id}: ${n.calls} calls in, ${n.errors} errors, ${st}` }),
      s("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
      s("circle", { class: "dot " + st, cx: 14, cy: 16, r: 5 }),
      s("text", { class: "title", x: 26, y: 20, text: title.length > 24 ? title.slice(0, 23) + "…" : title }),
      s("text", { class: "sub", x: 14, y: 37, text: sub.length > 32 ? sub.slice(0, 31) + "…" : sub }));
      svg.appendChild(g);
    }
    box.appendChild(svg);
    // fit the panel, but never below 80% of its size: a wider graph scrolls sideways
    svg.style.width = Math.max(width * 0.8, Math.min(width, box.clientWidth)) + "px";
  }

  function versionStates(algorithms) {
    const out = new Map();
    for (const a of algorithms) for (const v of a.versions) out.set(a.name + "@" + v.version, v.state);
    return out;
  }

  // --- recent calls ----------------------------------------------------------------------
  function callParams() {
    const f = state.filters;
    return { window: state.window, algorithm: f.algorithm, caller: f.caller, errors: f.errors,
      slower_ms: f.slower, limit: 100 };
  }

  function drawCalls(data) {
    const body = $("calls").tBodies[0];
    clear(body);
    const f = state.filters;
    const what = [];
    if (f.caller) what.push("from " + f.caller);
    if (f.algorithm) what.push("to " + f.algorithm);
    if (f.errors) what.push("failed");
    if (f.slower) what.push("slower than " + f.slower + " ms");
    $("calls-caption").textContent = `${data.calls.length}${data.calls.length >= data.limit ? "+" : ""} call` +
      `${data.calls.length === 1 ? "" : "s"} in the last ${windowText()}${what.length ? " · " + what.join(" · ") : ""}, newest first`;
    if (!data.calls.length) {
      body.appendChild(h("tr", {}, h("td", { colspan: 5, class: "empty", "data-test": "calls-empty", text: "No calls match." })));
    }
    for (const c of data.calls) {
      const target = c.algorithm + (c.version ? "@" + c.version : "");
      body.appendChild(h("tr", {
        class: "clickable" + (c.ok ? "" : " error") + (state.trace === c.trace_id ? " selected" : ""),
        "data-test": "call", "data-trace": c.trace_id, "data-algorithm": c.algorithm, "data-version": c.version,
        "data-caller": c.caller, "data-ok": c.ok ? "true" : "false", "data-duration": c.duration_ms,
        onclick: () => openTrace(c.trace_id),
      },
      h("td", { class: "mono", text: fmtTime(c.time_ms) }),
      h("td", {}, h("span", { class: "hint", text: c.caller + " → " }), h("span", { class: "mono", "data-test": "call-target", text: target }),
        c.cold_start ? h("span", { class: "tag", text: "cold start" }) : null),
      h("td", { class: "num mono", "data-test": "call-duration", text: fmtMs(c.duration_ms) }),
      h("td", {}, c.ok ? h("span", { class: "badge ok", "data-test": "call-status", text: "ok" })
        : h("span", { class: "badge error", "data-test": "call-status", text: c.reason || "error" })),
      h("td", {}, h("a", { class: "trace mono", "data-test": "trace-link", href: "#trace=" + c.trace_id,
        text: c.trace_id.slice(0, 12) + "…",
        onclick: (ev) => { ev.preventDefault(); ev.stopPropagation(); openTrace(c.trace_id); } }))));
    }
  }

  function filterBy(filters, selected) {
    Object.assign(state.filters, filters);
    state.selected = selected;
    const select = $("filter-algorithm");
    if (![...select.options].some((o) => o.value === state.filters.algorithm)) {
      select.appendChild(h("option", { value: state.filters.algorithm, text: state.filters.algorithm }));
    }
    select.value = state.filters.algorithm;
    setOptions($("filter-caller"), callerOptions(), state.filters.caller);
    state.last.graph = null;           // redraw the selection
    refresh();
  }

  let graphNodes = [];
  function callerOptions() {
    const opts = [["", "anyone"], ["client", "client"]];
    for (const n of graphNodes) if (n.kind !== "client") opts.push([n.id, n.id]);
    return opts;
  }

  // --- the waterfall -------------------------------------------------------------------
  async function openTrace(traceId) {
    if (state.trace !== traceId) state.span = null;
    state.trace = traceId;
    state.last.trace = null;
    if (window.location.hash !== "#trace=" + traceId) history.replaceState(null, "", "#trace=" + traceId);
    $("waterfall-panel").hidden = false;
    $("waterfall-trace").textContent = traceId;
    for (const tr of $("calls").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.trace === traceId);
    await loadTrace(true);
  }

  function closeTrace() {
    state.trace = null;
    state.span = null;
    $("waterfall-panel").hidden = true;
    history.replaceState(null, "", window.location.pathname);
    for (const tr of $("calls").tBodies[0].rows) tr.classList.remove("selected");
  }

  async function loadTrace(scroll) {
    const traceId = state.trace;
    if (!traceId) return;
    let text;
    try {
      text = await api("/api/trace", { id: traceId });
    } catch (err) {
      if (err instanceof Unauthorized) throw err;
      $("waterfall-caption").textContent = err.message;
      clear($("waterfall"));
      return;
    }
    if (traceId !== state.trace) return;
    const data = changed("trace", text);
    if (data) drawWaterfall(data);
    if (scroll) $("waterfall-panel").scrollIntoView({ block: "start" });
  }

  function drawWaterfall(t) {
    $("waterfall-caption").textContent = `${t.spans.length} spans · ${fmtMs(t.duration_ms)}` +
      (t.errors ? ` · ${t.errors} failed` : "") + ` · started ${fmtTime(t.start_ms)}`;
    const box = $("waterfall");
    clear(box);
    const total = Math.max(t.duration_ms, 0.001);
    const ticks = h("div", { class: "wf-ticks" });
    for (let i = 0; i <= 4; i++) {
      const tick = h("span", { text: fmtMs(total * i / 4) });
      tick.style.left = (i * 25) + "%";
      ticks.appendChild(tick);
    }
    box.appendChild(h("div", { class: "wf-axis" }, h("div", { text: "span (kind, service)" }), ticks, h("div", { text: "duration" })));
    const rows = h("div", { class: "wf-rows", "data-test": "waterfall-rows" });
    for (const sp of t.spans) {
      const left = (sp.offset_ms / total) * 100;
      const width = Math.max((sp.duration_ms / total) * 100, 0);
      const label = h("div", { class: "wf-label", title: `${sp.name} (${sp.service})` },
        h("span", { class: "name", "data-test": "span-name", text: sp.name }),
        h("span", { class: "kind", text: sp.kind }),
        h("span", { class: "svc", text: sp.service }));
      label.style.paddingLeft = (sp.depth * 18) + "px";
      const bar = h("div", { class: "wf-bar kind-" + sp.kind });
      bar.style.left = left + "%";
      bar.style.width = width + "%";
      const dur = h("div", { class: "wf-dur", "data-test": "span-duration" }, fmtMs(sp.duration_ms),
        sp.ok ? null : h("span", { class: "reason", text: "✕ " + (sp.attributes["algomesh.error_reason"] || sp.status_message || "error") }));
      const row = h("div", {
        class: "wf-row" + (sp.ok ? "" : " error") + (state.span === sp.span_id ? " selected" : ""),
        "data-test": "span", "data-span": sp.span_id, "data-parent": sp.parent_id, "data-name": sp.name,
        "data-depth": sp.depth, "data-ok": sp.ok ? "true" : "false", role: "button", tabindex: 0,
        onclick: () => selectSpan(t, sp.span_id),
        onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); selectSpan(t, sp.span_id); } },
      }, label, h("div", { class: "wf-track" }, bar), dur);
      rows.appendChild(row);
    }
    box.appendChild(rows);
    drawSpanDetails(t);
  }

  function selectSpan(t, spanId) {
    state.span = spanId;
    for (const row of $("waterfall").querySelectorAll(".wf-row")) row.classList.toggle("selected", row.dataset.span === spanId);
    drawSpanDetails(t);
  }

  function drawSpanDetails(t) {
    const box = $("span-details");
    clear(box);
    const sp = t.spans.find((x) => x.span_id === state.span);
    if (!sp) {
      box.appendChild(h("p", { class: "empty", text: "Click a span to see its attributes." }));
      return;
    }
    box.dataset.span = sp.span_id;
    box.appendChild(h("h3", { "data-test": "span-details-name", text: sp.name }));
    const row = (k, v, cls, test) => h("tr", test ? { "data-test": test, "data-key": k } : {}, h("th", { text: k }), h("td", { class: cls || "", text: String(v) }));
    const parent = t.spans.find((x) => x.span_id === sp.parent_id);
    box.appendChild(h("table", { "data-test": "span-fields" }, h("tbody", {},
      row("status", sp.ok ? "ok" : "error" + (sp.status_message ? ": " + sp.status_message : ""), sp.ok ? "" : "error-text", "span-status"),
      row("service", sp.service), row("kind", sp.kind),
      row("start", "+" + fmtMs(sp.offset_ms)), row("duration", fmtMs(sp.duration_ms)),
      row("span id", sp.span_id, "mono"), row("parent", parent ? parent.name : (sp.parent_id || "(root)"), "mono"))));
    box.appendChild(h("h3", { class: "sub", text: "attributes" }));
    const keys = Object.keys(sp.attributes).sort();
    if (!keys.length) box.appendChild(h("p", { class: "empty", text: "none" }));
    else {
      box.appendChild(h("table", { "data-test": "span-attributes" }, h("tbody", {}, keys.map((k) => {
        const v = sp.attributes[k];
        return row(k, typeof v === "string" ? v : JSON.stringify(v), k === "algomesh.error_reason" ? "error-text mono" : "mono", "attribute");
      }))));
    }
  }

  // --- the refresh loop ------------------------------------------------------------------
  async function refresh() {
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    try {
      const [overview, algorithms, graph, calls] = await Promise.all([
        api("/api/overview"), api("/api/algorithms"), api("/api/graph", { window: state.window }),
        api("/api/calls", callParams()),
      ]);
      $("token-needed").hidden = true;
      $("main").hidden = false;
      const o = changed("overview", overview);
      if (o) drawOverview(o);
      const a = changed("algorithms", algorithms);
      if (a) { drawAlgorithms(a); state.last.graph = null; state.states = versionStates(a.algorithms); }
      const g = changed("graph", graph);
      if (g) {
        graphNodes = g.nodes;
        setOptions($("filter-caller"), callerOptions(), state.filters.caller);
        drawGraph(g, state.states || new Map());
      }
      const c = changed("calls", calls);
      if (c) drawCalls(c);
      if (state.trace) await loadTrace(false);
      state.refreshes += 1;
      const updated = $("updated");
      updated.dataset.count = String(state.refreshes);
      updated.textContent = "updated " + fmtTime(Date.now()).slice(0, 8);
      if (!$("live").checked) { $("mesh-status").className = "status paused"; $("mesh-status").textContent = "paused"; }
    } catch (err) {
      if (err instanceof Unauthorized) {
        $("token-needed").hidden = false;
        $("main").hidden = true;
        const status = $("mesh-status");
        status.className = "status stale";
        status.textContent = "token needed";
        status.title = "the API refused this page's token";
      } else {
        markDown(err.message);
      }
    } finally {
      state.busy = false;
      if (state.again) { state.again = false; refresh(); }
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(async () => {
      if ($("live").checked && !document.hidden && $("token-needed").hidden) await refresh();
      schedule();
    }, REFRESH_MS);
  }

  function readFilters() {
    state.filters.algorithm = $("filter-algorithm").value;
    state.filters.caller = $("filter-caller").value;
    state.filters.errors = $("filter-errors").checked;
    const slower = $("filter-slower").value.trim();
    state.filters.slower = slower && Number(slower) > 0 ? slower : "";
    state.selected = state.filters.caller && state.filters.algorithm
      ? { kind: "edge", id: state.filters.caller + " → " + state.filters.algorithm }
      : state.filters.algorithm ? { kind: "node", id: state.filters.algorithm }
        : state.filters.caller ? { kind: "node", id: state.filters.caller } : null;
    state.last.graph = null;
    refresh();
  }

  function start() {
    takeToken();
    for (const id of ["filter-algorithm", "filter-caller", "filter-errors"]) $(id).addEventListener("change", readFilters);
    $("filter-slower").addEventListener("input", readFilters);
    $("call-filters").addEventListener("submit", (ev) => { ev.preventDefault(); readFilters(); });
    $("filter-clear").addEventListener("click", () => {
      $("filter-errors").checked = false;
      $("filter-slower").value = "";
      filterBy({ algorithm: "", caller: "", errors: false, slower: "" }, null);
    });
    $("window").addEventListener("change", () => { state.window = Number($("window").value); state.last = {}; refresh(); });
    $("live").addEventListener("change", () => { if ($("live").checked) refresh(); else { $("mesh-status").className = "status paused"; $("mesh-status").textContent = "paused"; } });
    $("waterfall-close").addEventListener("click", closeTrace);
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.token = $("token-input").value.trim();
      sessionStorage.setItem("algomesh-token", state.token);
      state.last = {};
      refresh();
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden && $("live").checked) refresh(); });
    const m = /^#trace=([0-9a-f]{32})$/.exec(window.location.hash);
    refresh().then(() => { if (m) openTrace(m[1]); });
    schedule();
  }

  document.addEventListener("DOMContentLoaded", start);
})();

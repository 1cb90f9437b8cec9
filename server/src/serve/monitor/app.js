// The sync monitor's script: plain DOM, no framework, everything served by the daemon.
// Every value from the store is put in the page as text (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
// The staleness history is read from the journal: less often than the rest.
const STALENESS_EVERY_MS = 30000;
const STALENESS_DAYS = 7;
const SVG_NS = "http://www.w3.org/2000/svg";
const view = {
  filter: {},        // site, kind, state, from, to
  cursor: null,      // null: the newest page
  history: [],       // cursors of the pages before, for "Newest"
  next: null,
  follow: null,      // a SynID shown alone (after following a link)
  rq: "",
  rcursor: null,
  staleness: null,   // the last /v1/monitor/staleness answer
  stalenessAt: 0,
};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "title") e.title = v;
    else if (k === "href") e.href = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

// A site's staleness over the last days as a small line, on its own vertical scale and the
// time axis all sites share: it rises with time and drops when the site applies a return (the
// same points as the simulator's picture).
function sparkline(points, from, to) {
  if (!points || points.length < 2) return null;
  const w = 120, h = 24;
  const max = points.reduce((m, p) => Math.max(m, p[1]), 1);
  const x = (t) => (Math.min(Math.max(t - from, 0), to - from) / Math.max(to - from, 1)) * w;
  const y = (s) => h - 1 - (s / max) * (h - 2);
  const svg = svgEl("svg", { class: "sparkline", width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
  const title = svgEl("title");
  title.textContent = `staleness over the last ${human(to - from)}: up to ${human(max)}`;
  svg.setAttribute("aria-label", title.textContent);
  svg.append(title,
    svgEl("line", { class: "base", x1: 0, x2: w, y1: h - 1, y2: h - 1 }),
    svgEl("polyline", { points: points.map(([t, s]) => `${x(t).toFixed(1)},${y(s).toFixed(1)}`).join(" ") }));
  return svg;
}

async function loadStaleness() {
  if (view.staleness && Date.now() - view.stalenessAt < STALENESS_EVERY_MS) return view.staleness;
  view.staleness = await getJson(`/v1/monitor/staleness?days=${STALENESS_DAYS}`);
  view.stalenessAt = Date.now();
  return view.staleness;
}

// An answer central gave (a refused filter…), unlike a network failure.
class Refused extends Error {}

async function getJson(url) {
  let r;
  try {
    r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    throw new Error(`cannot reach central: ${e.message}`);
  }
  if (r.status === 401 || r.status === 403) {
    location.reload(); // the session ended: the sign-in form
    throw new Error("signed out");
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Refused(body.error || r.statusText);
  return body;
}

function problem(text) {
  const p = document.getElementById("problem");
  p.hidden = !text;
  p.textContent = text || "";
}

function human(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round(Math.abs(ms) / 1000);
  const sign = ms < 0 && s > 0 ? "−" : "";
  if (s < 120) return `${sign}${s} s`;
  if (s < 7200) return `${sign}${Math.round(s / 60)} min`;
  if (s < 172800) return `${sign}${(s / 3600).toFixed(1)} h`;
  return `${sign}${(s / 86400).toFixed(1)} d`;
}

function times(t) {
  if (!t) return el("td", {}, "—");
  return el("td", { class: "mono" }, t.central, el("small", { title: "in the site's time zone" }, t.site));
}

function num(v) {
  return el("td", { class: "num" }, v);
}

function flowLink(id) {
  return el("a", { href: `#flow=${id}`, class: "flow-link", "data-flow": id }, id);
}

function journalRow(r) {
  const link = r.link
    ? el("td", { class: "link" }, flowLink(r.link))
    : el("td", { class: "link", title: r.link_note }, "0", r.link_note ? el("small", {}, r.link_note) : null);
  const state = el("td", { class: "state" }, r.state.replace("_", " "),
    r.error ? el("small", {}, r.error) : null);
  const classes = [`state-${r.state}`];
  if (view.follow === r.id) classes.push("followed");
  return el("tr", { class: classes.join(" "), "data-id": r.id, "data-kind": r.kind, "data-site": r.site },
    el("td", { class: "synid mono" }, r.id),
    el("td", { class: "site" }, r.site),
    el("td", { class: "kind" }, r.kind),
    el("td", {}, r.mode),
    link,
    times(r.file_ready),
    times(r.exec_start),
    times(r.exec_end),
    el("td", { class: r.executions > 1 ? "num hot" : "num", title: r.executions > 1 ? "executed more than once: a processing was cut off and redone" : null }, r.executions),
    el("td", {}, r.refused_by_remote ? "yes" : "no"),
    num(r.changes),
    num(r.rejections),
    num(r.bytes),
    state);
}

function journalQuery() {
  const q = new URLSearchParams();
  if (view.follow) {
    q.set("flow", view.follow);
    return q;
  }
  for (const [k, v] of Object.entries(view.filter)) if (v) q.set(k, v);
  if (view.cursor) q.set("before", view.cursor);
  q.set("limit", "50");
  return q;
}

async function loadJournal() {
  const page = await getJson(`/v1/monitor/journal?${journalQuery()}`);
  const body = document.querySelector("#journal tbody");
  body.replaceChildren(...page.items.map(journalRow));
  if (page.items.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: 14, class: "muted" }, "no flow matches")));
  }
  view.next = page.next;
  document.getElementById("older").disabled = !page.next || !!view.follow;
  document.getElementById("newest").disabled = !view.cursor || !!view.follow;
  document.getElementById("journal-note").textContent =
    page.next && page.items.length < 50 ? `looked at ${page.scanned} flows; older ones may match too` : "";
  const f = document.getElementById("following");
  f.hidden = !view.follow;
  document.getElementById("following-id").textContent = view.follow || "";
}

async function loadSites() {
  const [sites, history] = await Promise.all([getJson("/v1/monitor/sites"), loadStaleness()]);
  const lines = new Map(history.sites.map((h) => [h.code, h.points]));
  // The time axis: the last days, or since the oldest point when the history is younger.
  const first = history.sites.reduce((m, h) => (h.points.length ? Math.min(m, h.points[0][0]) : m), history.to_ms);
  const from = first < history.to_ms ? Math.max(history.from_ms, first) : history.from_ms;
  const body = document.querySelector("#sites tbody");
  body.replaceChildren(...sites.map((s) => el("tr", { "data-site": s.code },
    el("td", {}, el("strong", {}, s.code), el("small", {}, s.time_zone)),
    el("td", {}, s.sync),
    el("td", { class: "mono" }, s.last_emission ? flowLink(s.last_emission) : "none",
      s.last_emission_at ? el("small", {}, s.last_emission_at.central) : null),
    el("td", { class: "mono" }, s.last_applied_return ? flowLink(s.last_applied_return) : "none",
      s.last_applied_return_at ? el("small", {}, `applied ${s.last_applied_return_at.site} (site)`) : null),
    el("td", { class: "staleness" }, human(s.staleness_ms),
      s.staleness_since ? el("small", {}, `since ${s.staleness_since.central}`) : null,
      sparkline(lines.get(s.code), from, history.to_ms)),
    el("td", { class: s.clock_offset_ms !== null && Math.abs(s.clock_offset_ms) > 300000 ? "hot" : "" },
      s.clock_offset_ms === null ? "—" : (s.clock_offset_ms >= 1000 ? "+" : "") + human(s.clock_offset_ms)),
    el("td", {}, s.pending.length ? s.pending.join(", ") : "—"),
    el("td", { class: s.quarantined.length ? "hot" : "" }, s.quarantined.length ? s.quarantined.join(", ") : "—"),
    el("td", { class: "num reserved" }, s.reserved === null ? "—" : s.reserved),
    el("td", { class: s.open_alerts ? "hot" : "" }, s.open_alerts))));
  const select = document.getElementById("f-site");
  const have = new Set([...select.options].map((o) => o.value));
  for (const s of sites) {
    if (!have.has(s.code)) select.append(el("option", { value: s.code }, s.code));
  }
}

async function loadStatus() {
  const s = await getJson("/v1/status");
  document.getElementById("activity").textContent = s.activity;
  document.getElementById("pending-count").textContent =
    s.pending_emissions.length ? `${s.pending_emissions.length} emission(s) waiting` : "";
  const r = s.restore;
  document.getElementById("restore").textContent = !r ? ""
    : `restore under way: ${r.waiting_for.length} remote(s) still to sync once, `
      + `${r.not_sent_back.length} still to sync after a return (see the alerts)`;
  return s.last_error ? `the automaton's last error: ${s.last_error}` : null;
}

async function loadAlerts() {
  const a = await getJson("/v1/alerts");
  const list = document.getElementById("alerts");
  list.replaceChildren(...a.alerts.map((x) => el("li", { class: x.open ? "open" : "", "data-key": x.id },
    el("span", { class: "when" }, x.raised), x.open ? el("strong", {}, "open · ") : null, x.text,
    x.mailed ? el("small", { class: "muted" }, ` · e-mailed ${x.mailed}`) : null)));
  if (a.alerts.length === 0) list.append(el("li", { class: "muted" }, "no alert"));
  const m = a.mail || {};
  document.getElementById("mail").textContent = !m.configured ? "e-mail: not configured"
    : m.last_error ? `e-mail failing: ${m.last_error}` : `e-mail: ${m.sent} digest(s) sent`;
}

function rejectionRow(r) {
  return el("tr", {},
    times(r.at),
    el("td", {}, r.source),
    el("td", { class: "mono" }, flowLink(r.flow)),
    el("td", {}, r.rule),
    el("td", { class: "mono" }, `${r.table}/${r.key}`),
    el("td", { class: "mono" }, r.field),
    el("td", { class: "mono" }, JSON.stringify(r.value)),
    el("td", {}, r.reason));
}

async function loadRejections() {
  const q = new URLSearchParams({ limit: "50" });
  if (view.rq) q.set("q", view.rq);
  if (view.rcursor) q.set("before", view.rcursor);
  const page = await getJson(`/v1/monitor/rejections?${q}`);
  const body = document.querySelector("#rejections tbody");
  body.replaceChildren(...page.items.map(rejectionRow));
  if (page.items.length === 0) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no refused change")));
  const older = document.getElementById("r-older");
  older.disabled = !page.next;
  older.dataset.next = page.next || "";
  document.getElementById("r-newest").disabled = !view.rcursor;
}

async function refresh() {
  try {
    const work = [loadStatus(), loadAlerts(), loadSites()];
    if (!view.cursor && !view.follow) work.push(loadJournal());
    if (!view.rcursor && !view.rq) work.push(loadRejections());
    const [automatonError] = await Promise.all(work);
    problem(automatonError);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()} (this computer's clock)`;
  } catch (e) {
    if (e.message !== "signed out") problem(e instanceof Refused ? `central refused: ${e.message}` : e.message);
  }
}

// A filter central refuses (a malformed date…) is said as such, and the list is emptied rather
// than left showing rows the filter did not choose.
function showJournalError(e) {
  if (e instanceof Refused) {
    document.querySelector("#journal tbody").replaceChildren(
      el("tr", {}, el("td", { colspan: 14, class: "error" }, `filter refused: ${e.message}`)));
  }
  problem(e instanceof Refused ? null : e.message);
}

function follow(id) {
  view.follow = id;
  loadJournal().catch((e) => problem(e.message));
  document.getElementById("journal").scrollIntoView();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a.flow-link");
  if (!a) return;
  ev.preventDefault();
  follow(a.dataset.flow);
});

document.getElementById("back").addEventListener("click", () => {
  view.follow = null;
  history.replaceState(null, "", "/monitor");
  loadJournal().catch((e) => problem(e.message));
});

document.getElementById("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  view.filter = {
    site: document.getElementById("f-site").value,
    kind: document.getElementById("f-kind").value,
    state: document.getElementById("f-state").value,
    from: document.getElementById("f-from").value.trim(),
    to: document.getElementById("f-to").value.trim(),
  };
  view.cursor = null;
  view.history = [];
  view.follow = null;
  loadJournal().catch(showJournalError);
});

document.getElementById("f-reset").addEventListener("click", () => {
  document.getElementById("filters").reset();
  view.filter = {};
  view.cursor = null;
  view.follow = null;
  loadJournal().catch((e) => problem(e.message));
});

document.getElementById("older").addEventListener("click", () => {
  if (!view.next) return;
  view.history.push(view.cursor);
  view.cursor = view.next;
  loadJournal().catch((e) => problem(e.message));
});

document.getElementById("newest").addEventListener("click", () => {
  view.cursor = null;
  view.history = [];
  loadJournal().catch((e) => problem(e.message));
});

document.getElementById("r-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  view.rq = document.getElementById("r-q").value.trim();
  view.rcursor = null;
  loadRejections().catch((e) => problem(e.message));
});

document.getElementById("r-older").addEventListener("click", (ev) => {
  view.rcursor = ev.target.dataset.next || null;
  loadRejections().catch((e) => problem(e.message));
});

document.getElementById("r-newest").addEventListener("click", () => {
  view.rcursor = null;
  loadRejections().catch((e) => problem(e.message));
});

const start = location.hash.match(/^#flow=([0-9]+-[0-9]+)$/);
if (start) view.follow = start[1];
refresh();
setInterval(refresh, POLL_MS);

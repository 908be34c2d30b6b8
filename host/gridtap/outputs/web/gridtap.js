"use strict";
// gridtap's local page. Every number comes from this gridtap's REST API on the same port:
// /sensors (what to show), /sensor/<id> (Flukso's series), /reactive (var per CT) and /status
// (health). Each task sends one request at a time (a router serves a few clients at once): live
// power every second, reactive power and health every 5 s, today's energy and the graphs every minute.
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
// Flukso's intervals, each as start + interval so that all series of a graph end at the same row
const GRAPHS = [["hour", "last hour", 3600], ["day", "last day", 86400], ["month", "last 28 days", 2419200]];
const REFUSED = ["rejected_future", "rejected_backwards", "rejected_step", "gauges_future"];
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
const $ = (id) => document.getElementById(id);
let sensors = [];
let now = Date.now() / 1000;  // the daemon's time: the newest second of its live window (a demo's is simulated)

async function get(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status + " " + (await r.text()));
  return r.json();
}
const series = (s, q) => get("/sensor/" + s.id + "?version=1.0&unit=" + s.unit + "&" + q);
const unitOf = (s) => (s.type === "water" ? "L/min" : "W");
const pad = (n) => String(n).padStart(2, "0");
function when(t, withDate) {
  if (t === null || t === undefined) return "never";
  const d = new Date(t * 1000);
  const hm = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  return withDate === false ? hm : d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hm;
}
function set(el, text, v) {
  el.textContent = text;
  if (v !== undefined) el.dataset.v = String(v);
}

function build() {
  const body = $("sensors").tBodies[0];
  sensors.forEach((s, i) => {
    s.color = COLORS[i % COLORS.length];
    const tr = body.insertRow();
    tr.dataset.id = s.id;
    tr.insertCell().innerHTML = '<span class="sw"></span>';
    tr.cells[0].firstChild.style.background = s.color;
    tr.cells[0].append(s.name + (s.role === "export" ? " (export)" : ""));
    for (const k of ["live", "today", "q"]) {
      const td = tr.insertCell();
      td.className = "n " + k;
      td.textContent = k === "q" ? "" : "-";  // only CTs have a reactive power; /reactive fills theirs
    }
  });
  $("legend").innerHTML = "";
  for (const s of sensors.filter((x) => x.type !== "water")) {
    const sw = document.createElement("span");
    sw.className = "sw";
    sw.style.background = s.color;
    $("legend").append(sw, s.name + (s.role === "export" ? " export" : ""));
  }
}
const cell = (s, k) => document.querySelector('tr[data-id="' + s.id + '"] .' + k);

async function live() {
  let newest = 0;
  for (const s of sensors) {
    const pts = await series(s, "interval=minute");
    if (pts.length) newest = Math.max(newest, pts[pts.length - 1][0]);
    const last = pts.filter((p) => p[1] !== "nan").pop();
    const td = cell(s, "live");
    if (last) {
      set(td, last[1] + " " + unitOf(s), last[1]);
      td.dataset.ts = last[0];
    } else set(td, "-", "");
  }
  if (newest) now = newest;
  $("clock").textContent = when(now);
}

async function reactive() {
  for (const r of await get("/reactive")) {
    const td = cell(r, "q");
    if (!td) continue;
    if (r.var === null) set(td, "-", "");
    else set(td, r.var + " var", r.var);
    td.dataset.ts = r.t === null ? "" : r.t;
  }
}

async function today() {
  const d = new Date(now * 1000);
  d.setHours(0, 0, 0, 0);
  // minute rows since local midnight: W x 1 min = Wh/60, L/min x 1 min = L
  const q = "start=" + Math.floor(d.getTime() / 1000) + "&end=" + Math.floor(now) + "&resolution=minute";
  for (const s of sensors) {
    const pts = await series(s, q);
    let sum = 0;
    for (const p of pts) if (p[1] !== "nan") sum += p[1];
    const td = cell(s, "today");
    td.dataset.q = q;
    if (s.type === "water") set(td, sum.toFixed(1) + " L", sum);
    else set(td, (sum / 60 / 1000).toFixed(3) + " kWh", sum / 60);
  }
  $("today-note").textContent = "today: since 00:00 " + TZ + ", whole minutes (the REST API's minute rows)";
}

function draw(name, caption, data) {
  const W = 600, H = 160, L = 46, B = 16, T = 8;
  let t0 = Infinity, t1 = -Infinity, top = 0;
  for (const d of data) for (const [t, v] of d.pts) {
    t0 = Math.min(t0, t); t1 = Math.max(t1, t);
    if (v !== "nan") top = Math.max(top, v);
  }
  const svg = $("g-" + name);
  if (!(t1 > t0)) { svg.innerHTML = '<text x="10" y="20">no data yet</text>'; return; }
  top = top > 0 ? top * 1.05 : 1;
  const x = (t) => (L + (W - L - 4) * (t - t0) / (t1 - t0)).toFixed(1);
  const y = (v) => (T + (H - T - B) * (1 - v / top)).toFixed(1);
  let out = '<line x1="' + L + '" y1="' + y(0) + '" x2="' + W + '" y2="' + y(0) + '" stroke="#ccc"/>' +
    '<text x="2" y="' + (T + 4) + '">' + Math.round(top) + ' W</text><text x="2" y="' + y(0) + '">0 W</text>' +
    '<text x="' + L + '" y="' + H + '">' + when(t0, name === "hour" ? false : true) + "</text>" +
    '<text x="' + W + '" y="' + H + '" text-anchor="end">' + when(t1, name === "hour" ? false : true) + "</text>";
  for (const d of data) {
    let path = "", pen = "M", n = 0;
    for (const [t, v] of d.pts) {
      if (v === "nan") { pen = "M"; continue; }
      path += pen + x(t) + " " + y(v) + (pen === "M" ? " l0 0 " : " ");  // a lone point shows as a dot
      pen = "L";
      n++;
    }
    out += '<path d="' + path + '" fill="none" stroke="' + d.s.color + '" stroke-width="1.5" stroke-linecap="round" data-id="' +
      d.s.id + '" data-points="' + n + '" data-q="' + d.q + '"/>';
  }
  svg.innerHTML = out;
  $("cap-" + name).textContent = caption + ", " + when(t0) + " to " + when(t1, false) + " " + TZ + " (W)";
}

async function graphs() {
  for (const [name, caption, span] of GRAPHS) {
    const data = [], q = "start=" + Math.floor(now - span) + "&interval=" + name;
    for (const s of sensors.filter((x) => x.type !== "water")) data.push({s, q, pts: await series(s, q)});
    draw(name, caption, data);
  }
}

async function health() {
  const st = await get("/status");
  $("link").textContent = "board: " + (st.connected ? "connected" : "not connected");
  $("link").className = st.connected ? "ok" : "bad";
  const dec = st.decoder || {}, ses = st.session || {}, b = st.board;
  const errs = Object.keys(dec).filter((k) => k !== "frames_ok" && dec[k] > 0);
  const nerr = errs.reduce((a, k) => a + dec[k], 0);
  set($("link-errors"), nerr + (errs.length ? " (" + errs.map((k) => k + " " + dec[k]).join(", ") + ")" : "") +
    "; " + (dec.frames_ok || 0) + " frames ok; " + st.reconnects + " reconnects", nerr);
  const nref = REFUSED.reduce((a, k) => a + (ses[k] || 0), 0);
  set($("refused"), String(nref), nref);
  if (b) {
    set($("last-hello"), when(b.last_hello) + ", board " + b.board_id + ", firmware " + b.firmware +
      ", boot " + b.boot_count, b.last_hello);
    set($("reset-cause"), b.reset_cause, b.reset_cause);
    set($("eeprom"), b.brownout_count + " brownout saves in the board's life, " + (ses.brownout_saves || 0) +
      " since the daemon started; " + (ses.commits || 0) + " config commits; " + (ses.eeprom_faults || 0) +
      " EEPROM faults", b.brownout_count);
  }
  const sto = st.storage || {};
  set($("storage"), sto.degraded ? "degraded: " + Object.keys(sto.failing).join(", ") : "ok" +
    (sto.faults ? " (" + sto.faults + " faults, all recovered)" : ""), sto.degraded ? 1 : 0);
  set($("rrd"), st.rrd_updates + " (" + st.rrd_mode + "), " + st.rrd_errors + " errors", st.rrd_updates);
  const body = $("outputs").tBodies[0];
  body.innerHTML = "";
  for (const [name, o] of Object.entries(st.outputs || {})) {
    const tr = body.insertRow();
    tr.dataset.output = name;
    const c = [name, "backlog" in o ? o.backlog : "-", "last_upload" in o ? when(o.last_upload) : "live only",
      o.error || ("connected" in o ? (o.connected ? "connected" : "not connected") +
        ", " + o.dropped + " dropped" : "ok")];
    for (const v of c) tr.insertCell().textContent = String(v);
    tr.cells[1].className = "n backlog";
    if ("backlog" in o) tr.cells[1].dataset.v = o.backlog;
    tr.cells[2].dataset.v = o.last_upload === undefined || o.last_upload === null ? "" : o.last_upload;
  }
}

function every(fn, ms) {
  let busy = false;
  const run = async () => {
    if (busy) return;
    busy = true;
    try { await fn(); } catch (e) { console.error(e); } finally { busy = false; }
  };
  run();
  return setInterval(run, ms);
}

async function main() {
  sensors = await get("/sensors");
  build();
  await live();
  every(live, 1000);
  // reactive power after health, in the same task: a browser holds at most three of the API's
  // four connections per address (restapi.MAX_PER_CLIENT), one per task
  every(async () => { await health(); await reactive(); }, 5000);
  every(async () => { await today(); await graphs(); document.body.dataset.loaded = "1"; }, 60000);
}
main().catch((e) => { $("link").textContent = String(e); });

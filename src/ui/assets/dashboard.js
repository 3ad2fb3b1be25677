// brook's dashboard: keeps the page live from /events (server-sent events)
// and draws each query's charts as SVG. No libraries, nothing fetched from
// elsewhere.
"use strict";

// Points kept per query: ten minutes at one a second, as the server keeps.
const MAX_POINTS = 600;
// Each point: [unix_ms, rows_in_per_s, rows_out_per_s, batch_s, lag_s].
const histories = new Map();

function esc(value) {
  return String(value === null || value === undefined ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function fixed(value, digits) {
  return Number(value || 0).toFixed(digits);
}

function millis(seconds) {
  return fixed(seconds * 1000, 1) + " ms";
}

// Seconds in the unit that reads best, as the server renders them.
function duration(seconds) {
  const s = Number(seconds || 0), a = Math.abs(s);
  if (a < 90) return fixed(s, 1) + " s";
  if (a < 90 * 60) return fixed(s / 60, 1) + " min";
  if (a < 36 * 3600) return fixed(s / 3600, 1) + " h";
  return fixed(s / 86400, 1) + " d";
}

// What a query has got to (event time, checkpoint, sink), where it has any,
// as [label, value] pairs: the same as the server's first rendering.
function progress(q) {
  const pairs = [];
  const e = q.event_time;
  if (e) {
    pairs.push(["watermark", e.ended ? "end of input" : e.watermark]);
    pairs.push(["watermark behind", typeof e.behind_seconds === "number" ? duration(e.behind_seconds) : "—"]);
    pairs.push(["late rows", e.late_rows]);
    pairs.push(["far-future rows", e.far_future_rows]);
  }
  const c = q.checkpoint;
  if (c) {
    pairs.push(["checkpoint", `batch ${c.batch}`]);
    pairs.push(["checkpoint written", c.written || "restored at start"]);
    pairs.push(["checkpoint bytes", c.bytes]);
  }
  const k = q.sink;
  if (k) {
    pairs.push(["sink batches written", k.batches_written]);
    pairs.push(["sink rows written", k.rows_written]);
    pairs.push(["sink last written", typeof k.last_batch === "number" ? `batch ${k.last_batch} at ${k.last_written}` : "none yet"]);
    pairs.push(["sink batches skipped", k.batches_skipped]);
    pairs.push(["sink batches failed", k.batches_failed]);
  }
  return pairs;
}

function statsList(className, pairs) {
  return `<dl class="${className}">` + pairs.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join("") + `</dl>`;
}

function merge(history) {
  for (const [id, points] of Object.entries(history || {})) {
    const kept = histories.get(id) || [];
    for (const point of points) {
      if (kept.length === 0 || point[0] > kept[kept.length - 1][0]) kept.push(point);
    }
    while (kept.length > MAX_POINTS) kept.shift();
    histories.set(id, kept);
  }
}

// One line chart: series = [{name, color, index, scale}] over the points.
function chart(title, points, series, unit) {
  const width = 300, height = 120, left = 44, right = 8, top = 18, bottom = 16;
  const plotW = width - left - right, plotH = height - top - bottom;
  let svg = `<svg class="chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}">`;
  svg += `<text class="title" x="${left}" y="12">${esc(title)}</text>`;
  if (points.length < 2) {
    svg += `<text x="${left}" y="${top + plotH / 2}">collecting…</text></svg>`;
    return svg;
  }
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  let max = 0;
  for (const s of series) for (const p of points) max = Math.max(max, p[s.index] * s.scale);
  max = max > 0 ? max * 1.1 : 1;
  const x = (t) => left + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * plotW;
  const y = (v) => top + plotH - (v / max) * plotH;
  svg += `<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#c9d0dc"/>`;
  svg += `<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#c9d0dc"/>`;
  svg += `<text x="${left - 4}" y="${top + 8}" text-anchor="end">${esc(fixed(max, max < 10 ? 1 : 0))}</text>`;
  svg += `<text x="${left - 4}" y="${top + plotH}" text-anchor="end">0</text>`;
  svg += `<text x="${left}" y="${height - 3}">−${esc(fixed((t1 - t0) / 1000, 0))} s</text>`;
  svg += `<text x="${left + plotW}" y="${height - 3}" text-anchor="end">${esc(unit)}</text>`;
  let legend = left + 110;
  for (const s of series) {
    const path = points.map((p) => `${x(p[0]).toFixed(1)},${y(p[s.index] * s.scale).toFixed(1)}`).join(" ");
    svg += `<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${path}"/>`;
    if (series.length > 1) {
      svg += `<text x="${legend}" y="12" fill="${s.color}" style="fill:${s.color}">${esc(s.name)}</text>`;
      legend += 50;
    }
  }
  return svg + "</svg>";
}

function renderQuery(q) {
  let html = `<section class="query" id="query-${esc(q.id)}">`;
  html += `<h3>Query ${esc(q.id)} <span class="state state-${esc(q.state)}">${esc(q.state)}</span> <span class="output">→ ${esc(q.output)}</span></h3>`;
  html += `<pre class="sql">${esc(q.sql)}</pre>`;
  if (q.error) html += `<p class="error">${esc(q.error)}</p>`;
  const stats = [
    ["batches", q.batches],
    ["rows in", q.rows_in],
    ["rows out", q.rows_out],
    ["rows in/s", fixed(q.rows_in_per_second, 1)],
    ["rows out/s", fixed(q.rows_out_per_second, 1)],
    ["last batch", millis(q.last_batch_seconds)],
    ["lag", millis(q.lag_seconds)],
    ["retained rows", q.retained_rows],
    ["retained bytes", q.retained_bytes],
  ];
  if (q.retained_by_stream) stats.push(["held per stream", q.retained_by_stream]);
  html += statsList("stats", stats);
  const more = progress(q);
  if (more.length > 0) html += statsList("stats progress", more);
  const points = histories.get(String(q.id)) || [];
  html += `<div class="charts">`;
  html += chart("rows/s", points, [
    { name: "in", color: "#2f6fdf", index: 1, scale: 1 },
    { name: "out", color: "#d9731a", index: 2, scale: 1 },
  ], "rows/s");
  html += chart("batch duration", points, [{ name: "batch", color: "#1f9d55", index: 3, scale: 1000 }], "ms");
  html += chart("lag", points, [{ name: "lag", color: "#b03a9a", index: 4, scale: 1000 }], "ms");
  html += `</div>`;
  const r = q.latest_result;
  if (r) {
    html += `<p class="caption">Latest result (batch ${esc(r.batch)}, ${esc(r.total_rows)} rows)</p><table class="result"><tr>`;
    html += r.columns.map((c) => `<th>${esc(c)}</th>`).join("") + `</tr>`;
    for (const row of r.rows) html += `<tr>` + row.map((c) => `<td>${esc(c)}</td>`).join("") + `</tr>`;
    html += `</table>`;
  }
  return html + `</section>`;
}

function renderStreams(streams) {
  if (streams.length === 0) return `<p class="empty">No streams.</p>`;
  let html = `<table class="streams"><tr><th>stream</th><th>connector</th><th>state</th><th>received</th><th>dropped</th><th>pending</th><th>bounds</th><th>options</th></tr>`;
  for (const s of streams) {
    const failure = s.failure ? `<div class="error">${esc(s.failure)}</div>` : "";
    html += `<tr><td>${esc(s.name)}</td><td>${esc(s.connector)}</td><td><span class="state state-${esc(s.state)}">${esc(s.state)}</span>${failure}</td>` +
      `<td>${esc(s.rows_received)}</td><td>${esc(s.rows_dropped)}</td><td>${esc(s.rows_pending)}</td>` +
      `<td>${esc(s.max_pending_rows)} rows, ${esc(s.max_pending_bytes)} bytes</td><td>${esc(s.options)}</td></tr>`;
  }
  return html + `</table>`;
}

function renderWarnings(warnings) {
  if (warnings.recent.length === 0) return `<p class="empty">No warnings.</p>`;
  return `<ul class="warnings">` + warnings.recent.map((w) =>
    `<li><time>${esc(w.time)}</time> <span class="kind">${esc(w.kind)}</span> ${esc(w.message)}</li>`).join("") + `</ul>`;
}

function render(update) {
  merge(update.history);
  const queries = update.queries;
  document.getElementById("queries").innerHTML =
    queries.length === 0 ? `<p class="empty">No queries running.</p>` : queries.map(renderQuery).join("");
  document.getElementById("streams").innerHTML = renderStreams(update.streams);
  document.getElementById("warnings").innerHTML = renderWarnings(update.warnings);
  const status = document.getElementById("status");
  status.textContent = `live · updated ${update.time}`;
  status.className = "status";
}

const events = new EventSource("/events");
events.onmessage = (event) => {
  try {
    render(JSON.parse(event.data));
  } catch (err) {
    document.getElementById("status").textContent = `cannot show an update: ${err}`;
  }
};
events.onerror = () => {
  const status = document.getElementById("status");
  status.textContent = "disconnected from brook; retrying…";
  status.className = "status down";
};

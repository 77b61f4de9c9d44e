// The ops page: polls /api/v1/ops/summary every 2 s and draws up to the last five minutes as plain SVG.
"use strict";

(() => {
  const SUMMARY_URL = "/api/v1/ops/summary";
  const POLL_MS = 2000;
  const WINDOW_SECONDS = 300;
  const LAG_WARN_SECONDS = 5;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 360, H = 190, PAD_LEFT = 40, PAD_RIGHT = 8, PAD_TOP = 10, PAD_BOTTOM = 22;
  const MIN_WINDOW_SECONDS = 60;

  const history = []; // {t, connections, rateIn, rateOut, lag}
  let previous = null;
  let lagThreshold = 30;

  const $ = (id) => document.getElementById(id);
  const number = (n, digits = 0) =>
    n === null || n === undefined || Number.isNaN(n)
      ? "–"
      : Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const sum = (values) => Object.values(values || {}).reduce((a, b) => a + b, 0);

  function rate(now, before, pick) {
    if (!before) return null;
    const elapsed = now.time - before.time;
    const delta = pick(now) - pick(before);
    if (elapsed <= 0) return null;
    return delta < 0 ? 0 : delta / elapsed; // a counter that went down: the process restarted
  }

  function svgElement(name, attributes) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, String(value));
    return element;
  }

  // One chart: an <svg role="img"> with a title and a description that says the latest value,
  // plus a collapsed table of the recent points for screen readers and keyboard users.
  function buildChart(figure, seriesNames) {
    const id = figure.id;
    const svg = svgElement("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-labelledby": `${id}-title ${id}-desc`,
    });
    const desc = svgElement("desc", { id: `${id}-desc` });
    svg.appendChild(desc);
    svg.appendChild(svgElement("line", { class: "axis", x1: PAD_LEFT, y1: H - PAD_BOTTOM, x2: W - PAD_RIGHT, y2: H - PAD_BOTTOM }));
    svg.appendChild(svgElement("line", { class: "axis", x1: PAD_LEFT, y1: PAD_TOP, x2: PAD_LEFT, y2: H - PAD_BOTTOM }));
    const top = svgElement("text", { class: "label", x: PAD_LEFT - 6, y: PAD_TOP + 8, "text-anchor": "end" });
    const bottom = svgElement("text", { class: "label", x: PAD_LEFT - 6, y: H - PAD_BOTTOM, "text-anchor": "end" });
    bottom.textContent = "0";
    const left = svgElement("text", { class: "label", x: PAD_LEFT, y: H - 6 });
    const right = svgElement("text", { class: "label", x: W - PAD_RIGHT, y: H - 6, "text-anchor": "end" });
    right.textContent = "now";
    svg.append(top, bottom, left, right);
    const lines = seriesNames.map((_, index) => {
      const line = svgElement("polyline", { class: `series-${index}`, points: "" });
      svg.appendChild(line);
      return line;
    });
    figure.appendChild(svg);
    if (seriesNames.length > 1) {
      const legend = document.createElement("ul");
      legend.className = "legend";
      seriesNames.forEach((name, index) => {
        const item = document.createElement("li");
        const swatch = document.createElement("span");
        swatch.className = `swatch series-${index}`;
        swatch.setAttribute("aria-hidden", "true");
        item.append(swatch, name);
        legend.appendChild(item);
      });
      figure.appendChild(legend);
    }
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Recent values as a table";
    const table = document.createElement("table");
    const caption = document.createElement("caption");
    caption.textContent = `${figure.querySelector("figcaption").textContent}, last 10 samples`;
    const head = document.createElement("tr");
    for (const name of ["Time", ...seriesNames]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = name;
      head.appendChild(th);
    }
    const thead = document.createElement("thead");
    thead.appendChild(head);
    const tbody = document.createElement("tbody");
    table.append(caption, thead, tbody);
    details.append(summary, table);
    figure.appendChild(details);
    return { figure, svg, desc, top, left, lines, tbody, seriesNames, unit: figure.dataset.unit || "" };
  }

  function drawChart(chart, points, pickers, digits) {
    const now = points.length ? points[points.length - 1].t : Date.now() / 1000;
    const values = points.flatMap((p) => pickers.map((pick) => pick(p)).filter((v) => v !== null));
    const max = niceCeiling(Math.max(...values, 0) * 1.1);
    chart.top.textContent = number(max, max < 10 ? 1 : 0);
    // the x axis spans what has been seen so far (at least a minute), up to five minutes
    const span = points.length ? now - points[0].t : 0;
    const shown = Math.min(WINDOW_SECONDS, Math.max(MIN_WINDOW_SECONDS, span));
    chart.left.textContent = shown >= 120 ? `−${Math.round(shown / 60)} min` : `−${Math.round(shown)} s`;
    const x = (t) => PAD_LEFT + ((t - (now - shown)) / shown) * (W - PAD_LEFT - PAD_RIGHT);
    const y = (v) => H - PAD_BOTTOM - (v / max) * (H - PAD_TOP - PAD_BOTTOM);
    pickers.forEach((pick, index) => {
      const coordinates = points
        .filter((p) => pick(p) !== null)
        .map((p) => `${x(p.t).toFixed(1)},${y(pick(p)).toFixed(1)}`);
      chart.lines[index].setAttribute("points", coordinates.join(" "));
    });
    const last = points[points.length - 1];
    if (last) {
      const latest = chart.seriesNames
        .map((name, index) => `${name} ${number(pickers[index](last), digits)}${chart.unit}`)
        .join(", ");
      const peak = number(Math.max(0, ...values), digits);
      chart.desc.textContent = `Latest: ${latest}. Highest in the chart: ${peak}${chart.unit}.`;
      chart.figure.dataset.points = String(points.length);
    }
    chart.tbody.replaceChildren(
      ...points.slice(-10).reverse().map((p) => {
        const row = document.createElement("tr");
        const when = document.createElement("th");
        when.scope = "row";
        when.textContent = new Date(p.t * 1000).toLocaleTimeString();
        row.appendChild(when);
        for (const pick of pickers) {
          const cell = document.createElement("td");
          cell.textContent = number(pick(p), digits);
          row.appendChild(cell);
        }
        return row;
      }),
    );
  }

  function niceCeiling(value) {
    if (value <= 1) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    const step = [1, 2, 2.5, 5, 10].find((s) => s * magnitude >= value);
    return step * magnitude;
  }

  function badge(element, state, text) {
    element.className = `badge ${state}`;
    element.textContent = text;
  }

  function updateTables(summary) {
    const presences = ["online", "offline", "lost", "unknown"];
    $("devices").tBodies[0].replaceChildren(
      ...Object.entries(summary.devices).map(([kind, counts]) => {
        const row = document.createElement("tr");
        const name = document.createElement("th");
        name.scope = "row";
        name.textContent = kind;
        row.appendChild(name);
        for (const presence of presences) {
          const cell = document.createElement("td");
          const count = counts[presence] || 0;
          cell.textContent = number(count);
          if (presence === "lost" && count > 0) cell.className = "bad";
          row.appendChild(cell);
        }
        return row;
      }),
    );
    const rows = [];
    const add = (what, values) => {
      for (const [reason, count] of Object.entries(values || {})) if (count) rows.push([what, reason, count]);
    };
    add("Authentication failure", summary.auth_failures);
    add("ACL denial", summary.acl_denials);
    add("Dropped message", summary.dropped);
    add("Ingest rejection", summary.ingest.rejected);
    if (!rows.length) rows.push(["Nothing refused or dropped", "", 0]);
    $("refusals").tBodies[0].replaceChildren(
      ...rows.map(([what, reason, count]) => {
        const row = document.createElement("tr");
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = what;
        const reasonCell = document.createElement("td");
        reasonCell.textContent = reason;
        const countCell = document.createElement("td");
        countCell.textContent = number(count);
        row.append(th, reasonCell, countCell);
        return row;
      }),
    );
  }

  function update(summary) {
    lagThreshold = summary.ready_max_outbox_lag_seconds || lagThreshold;
    const point = {
      t: summary.time,
      connections: summary.connections.total,
      rateIn: rate(summary, previous, (s) => s.messages.received),
      rateOut: rate(summary, previous, (s) => s.messages.sent),
      lag: summary.outbox.oldest_age_seconds,
    };
    previous = summary;
    history.push(point);
    while (history.length && history[0].t < point.t - WINDOW_SECONDS) history.shift();

    const devices = Object.values(summary.devices);
    const devicesOnline = devices.reduce((total, counts) => total + (counts.online || 0), 0);
    const devicesLost = devices.reduce((total, counts) => total + (counts.lost || 0), 0);
    $("tile-connections").textContent = number(point.connections);
    $("tile-rate-in").textContent = number(point.rateIn, 1);
    $("tile-rate-out").textContent = number(point.rateOut, 1);
    $("tile-pending").textContent = number(summary.outbox.pending);
    $("tile-lag").textContent = number(point.lag, 1);
    $("tile-lag").parentElement.classList.toggle("bad", point.lag > lagThreshold);
    $("tile-retained").textContent = number(summary.retained);
    $("tile-queue").textContent = number(summary.deepest_queue);
    $("tile-auth").textContent = number(sum(summary.auth_failures));
    $("tile-acl").textContent = number(sum(summary.acl_denials));
    $("tile-dropped").textContent = number(sum(summary.dropped));
    $("tile-online").textContent = number(devicesOnline);
    $("tile-lost").textContent = number(devicesLost);
    $("tile-lost").classList.toggle("bad", devicesLost > 0);

    if (summary.broker_up === null) badge($("broker-up"), "", "not in this process");
    else badge($("broker-up"), summary.broker_up ? "ok" : "bad", summary.broker_up ? "up" : "down");
    badge($("database-up"), summary.database_up ? "ok" : "bad", summary.database_up ? "up" : "down");
    const lagState = point.lag > lagThreshold ? "bad" : point.lag > LAG_WARN_SECONDS ? "warn" : "ok";
    badge($("lag-state"), lagState, `${number(point.lag, 1)} s`);

    drawChart(charts.connections, history, [(p) => p.connections], 0);
    drawChart(charts.rates, history, [(p) => p.rateIn, (p) => p.rateOut], 1);
    drawChart(charts.lag, history, [(p) => p.lag], 1);
    updateTables(summary);
  }

  function setStatus(text, isError) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  async function poll() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), POLL_MS * 2);
    try {
      const response = await fetch(SUMMARY_URL, { signal: controller.signal, cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      update(await response.json());
      setStatus(`Updated ${new Date().toLocaleTimeString()}; refreshes every ${POLL_MS / 1000} s.`, false);
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    } catch (error) {
      setStatus(`Cannot read the figures (${error.name === "AbortError" ? "no answer" : error.message}); retrying.`, true);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, POLL_MS);
    }
  }

  // --- connected clients: needs the dashboard's sign-in (sessionStorage of this tab) -------------
  const CLIENTS_URL = "/api/v1/ops/clients";

  function sessionToken() {
    try {
      const session = JSON.parse(sessionStorage.getItem("orderbus.session") ?? "null");
      return session && typeof session.token === "string" ? session.token : null;
    } catch {
      return null;
    }
  }

  function clientRow(client, token) {
    const row = document.createElement("tr");
    const cells = [
      client.client_id,
      client.role,
      client.restaurant_id ?? "–",
      client.address ?? "–",
      client.connected_since ? new Date(client.connected_since).toLocaleString() : "–",
      number(client.queue_depth),
    ];
    cells.forEach((value, index) => {
      const cell = document.createElement(index === 0 ? "th" : "td");
      if (index === 0) cell.scope = "row";
      cell.textContent = String(value);
      row.appendChild(cell);
    });
    const action = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Disconnect";
    button.setAttribute("aria-label", `Disconnect ${client.client_id}`);
    button.addEventListener("click", () => disconnect(client.client_id, token, button));
    action.appendChild(button);
    row.appendChild(action);
    return row;
  }

  async function disconnect(clientId, token, button) {
    if (!window.confirm(`Disconnect ${clientId}? Its Last Will is published; the device may reconnect.`)) return;
    button.disabled = true;
    const response = await fetch(`${CLIENTS_URL}/${encodeURIComponent(clientId)}/disconnect`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
    });
    const body = await response.json().catch(() => ({}));
    $("clients-status").textContent = response.ok
      ? `Disconnected ${clientId}.`
      : `Could not disconnect ${clientId}: ${body.detail || `HTTP ${response.status}`}`;
    pollClients();
  }

  async function pollClients() {
    const token = sessionToken();
    if (!token) return;
    try {
      const response = await fetch(`${CLIENTS_URL}?limit=500`, { headers: { authorization: `Bearer ${token}` }, cache: "no-store" });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        $("clients-status").textContent = `Cannot list the clients: ${body.detail || `HTTP ${response.status}`}`;
        return;
      }
      $("clients").tBodies[0].replaceChildren(...body.data.map((client) => clientRow(client, token)));
      if (!$("clients-status").textContent.startsWith("Disconnected") && !$("clients-status").textContent.startsWith("Could not")) {
        $("clients-status").textContent = `${body.count} connected.`;
      }
    } catch (error) {
      $("clients-status").textContent = `Cannot list the clients (${error.message}); retrying.`;
    }
  }

  const charts = {
    connections: buildChart($("chart-connections"), ["Connections"]),
    rates: buildChart($("chart-rates"), ["In", "Out"]),
    lag: buildChart($("chart-lag"), ["Oldest unpublished"]),
  };
  poll();
  pollClients();
  setInterval(pollClients, POLL_MS * 2);
})();

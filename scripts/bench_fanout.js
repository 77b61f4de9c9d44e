// Fan-out benchmark (issue 4), the Node half: N MQTT-over-WebSocket subscribers with the same `mqtt`
// package the dashboard vendors, then orders POSTed one at a time; for each order, the time until
// every subscriber has its new_order event.
//
// Run through scripts/bench_fanout.py, which starts `orderbus up`, mints one token per client,
// installs mqtt@<pinned> into a temporary directory and passes this script a JSON config:
//   node scripts/bench_fanout.js config.json
// config: ws_url, api_url, api_token, rid, item_id, sub, tokens[], clients, orders, warmup,
//         connect_concurrency, order_timeout_ms, gap_ms, qos, mqtt_module (path of the installed package),
//         mqtt_version, result_path, server_pid, clock_ticks
//   optional (issue 13): ws_urls[] (client i connects to ws_urls[i % n]: a cluster's nodes), server_pids[]
//         (CPU summed over them), publish {ws_url, client_id, username, password, qos}: instead of POSTing,
//         a service-role MQTT client publishes each order's new_order event itself (no API, no relay)
// Prints progress on stderr and writes every sample as JSON to config.result_path.

"use strict";

const fs = require("node:fs");
const { performance } = require("node:perf_hooks");

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const mqtt = require(cfg.mqtt_module || "mqtt");
const log = (...args) => console.error(`[${(performance.now() / 1000).toFixed(1)}s]`, ...args);

const topic = `restaurant/${cfg.rid}/orders`;
const clients = [];
const arrivals = new Map(); // marker -> {t0, seen: Uint8Array, count, first, last, latencies: []}
let unexpectedCloses = 0;
let duplicates = 0;
let foreign = 0;

function onMessage(index, payload) {
  const now = performance.now();
  let marker;
  try {
    const event = JSON.parse(payload.toString());
    if (event.type !== "new_order") return;
    marker = event.data.order.table_name;
  } catch {
    foreign += 1;
    return;
  }
  const entry = arrivals.get(marker);
  if (!entry) return; // an order of another run, or warm-up already closed
  if (entry.seen[index]) {
    duplicates += 1;
    return;
  }
  entry.seen[index] = 1;
  entry.count += 1;
  entry.latencies.push(now - entry.t0);
  if (entry.first === null) entry.first = now;
  entry.last = now;
  if (entry.count === cfg.clients && entry.done) entry.done();
}

function connectOne(index) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const urls = cfg.ws_urls || [cfg.ws_url];
    const client = mqtt.connect(urls[index % urls.length], {
      clientId: `${cfg.sub}:${index}`,
      username: cfg.sub,
      password: cfg.tokens[index],
      clean: true,
      keepalive: 60,
      reconnectPeriod: 0,
      connectTimeout: 60_000,
      protocolVersion: 4,
    });
    let ready = false;
    client.on("message", (_topic, payload) => onMessage(index, payload));
    client.on("error", (error) => {
      if (!ready) reject(new Error(`client ${index}: ${error.message}`));
    });
    client.on("close", () => {
      if (ready) unexpectedCloses += 1;
      else reject(new Error(`client ${index}: closed before SUBACK`));
    });
    client.on("connect", () => {
      client.subscribe(topic, { qos: cfg.qos }, (error) => {
        if (error) {
          reject(new Error(`client ${index}: subscribe failed: ${error.message}`));
          return;
        }
        ready = true;
        resolve({ client, ms: performance.now() - started });
      });
    });
    clients[index] = client;
  });
}

async function connectAll() {
  const times = [];
  let next = 0;
  const started = performance.now();
  async function worker() {
    while (next < cfg.clients) {
      const index = next++;
      const { ms } = await connectOne(index);
      times.push(ms);
      if (times.length % 200 === 0) log(`${times.length}/${cfg.clients} subscribed`);
    }
  }
  await Promise.all(Array.from({ length: Math.min(cfg.connect_concurrency, cfg.clients) }, worker));
  return { seconds: (performance.now() - started) / 1000, times };
}

async function placeOrder(marker) {
  const entry = { t0: 0, seen: new Uint8Array(cfg.clients), count: 0, first: null, last: null, latencies: [], done: null };
  const all = new Promise((resolve) => {
    entry.done = resolve;
  });
  arrivals.set(marker, entry);
  entry.t0 = performance.now();
  if (publisher) {
    await publishOrder(marker);
  } else {
    await postOrder(marker);
  }
  const tResponse = performance.now();
  if (entry.count < cfg.clients) {
    await Promise.race([all, new Promise((resolve) => setTimeout(resolve, cfg.order_timeout_ms))]);
  }
  entry.done = null;
  return {
    marker,
    response_ms: tResponse - entry.t0,
    received: entry.count,
    first_ms: entry.first === null ? null : entry.first - entry.t0,
    all_ms: entry.count === cfg.clients ? entry.last - entry.t0 : null,
    spread_ms: entry.first === null ? null : entry.last - entry.first,
    latencies: entry.latencies,
  };
}

let publisher = null;

/** The service-role publisher (cfg.publish), connected before the orders start. */
function connectPublisher() {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(cfg.publish.ws_url, {
      clientId: cfg.publish.client_id,
      username: cfg.publish.username,
      password: cfg.publish.password,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 60_000,
      protocolVersion: 4,
    });
    client.on("connect", () => resolve(client));
    client.on("error", (error) => reject(new Error(`publisher: ${error.message}`)));
  });
}

/** An order's new_order event as the relay would publish it (about the size of a real one); resolves at PUBACK. */
function publishOrder(marker) {
  const event = {
    type: "new_order",
    data: { order: { id: 1, table_name: marker, status: "new", items: [{ menu_item_id: cfg.item_id, quantity: 1, name: "x".repeat(400) }] } },
  };
  return new Promise((resolve, reject) => {
    publisher.publish(topic, JSON.stringify(event), { qos: cfg.publish.qos ?? 1 }, (error) => (error ? reject(error) : resolve()));
  });
}

async function postOrder(marker) {
  const response = await fetch(`${cfg.api_url}/restaurants/${cfg.rid}/orders`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${cfg.api_token}` },
    body: JSON.stringify({ items: [{ menu_item_id: cfg.item_id, quantity: 1 }], table_name: marker }),
  });
  if (response.status !== 201) throw new Error(`POST /orders answered ${response.status}: ${await response.text()}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** CPU seconds (user + system) of the orderbus process, from /proc (Linux). */
function serverCpuSeconds() {
  let total = 0;
  for (const pid of cfg.server_pids || [cfg.server_pid]) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      total += (Number(fields[11]) + Number(fields[12])) / (cfg.clock_ticks || 100);
    } catch {
      return NaN;
    }
  }
  return total;
}

async function main() {
  log(`connecting ${cfg.clients} clients to ${cfg.ws_url} (${cfg.connect_concurrency} at a time), mqtt@${cfg.mqtt_version}`);
  const connected = await connectAll();
  log(`all subscribed in ${connected.seconds.toFixed(1)} s`);
  if (cfg.publish) publisher = await connectPublisher();
  await sleep(1000);
  const rounds = [];
  let measured = null;
  for (let k = 0; k < cfg.warmup + cfg.orders; k += 1) {
    const warm = k < cfg.warmup;
    if (k === cfg.warmup) {
      measured = { server: serverCpuSeconds(), node: process.cpuUsage(), wall: performance.now() };
    }
    const result = await placeOrder(`${warm ? "warm" : "fan"}-${k}-${process.pid}`);
    if (!warm) {
      rounds.push(result);
      log(
        `order ${rounds.length}/${cfg.orders}: all ${result.received}/${cfg.clients} in ` +
          `${result.all_ms === null ? "—" : result.all_ms.toFixed(1)} ms (first ${result.first_ms?.toFixed(1)} ms, ` +
          `HTTP ${result.response_ms.toFixed(1)} ms)`,
      );
    }
    await sleep(cfg.gap_ms);
  }
  const nodeCpu = process.cpuUsage(measured.node);
  const cpu = {
    wall_s: (performance.now() - measured.wall) / 1000,
    server_s: serverCpuSeconds() - measured.server,
    node_s: (nodeCpu.user + nodeCpu.system) / 1e6,
  };
  log(`measured orders: ${cpu.wall_s.toFixed(1)} s wall, CPU orderbus ${cpu.server_s.toFixed(2)} s, node ${cpu.node_s.toFixed(2)} s`);
  const closes = unexpectedCloses;
  for (const client of clients) client.end(true);
  // a file, not stdout: process.exit() would cut a large write to a pipe short
  fs.writeFileSync(
    cfg.result_path,
    JSON.stringify({
      connect: { seconds: connected.seconds, times: connected.times },
      rounds,
      cpu,
      unexpected_closes: closes,
      duplicates,
      foreign,
    }),
  );
}

main().then(
  () => process.exit(0),
  (error) => {
    log(`failed: ${error.stack ?? error}`);
    process.exit(1);
  },
);

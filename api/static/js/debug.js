// The MQTT debugging page: connect with a pasted token, subscribe, watch raw messages.
// Like the old design's WebSocket test page, but over the same MQTT.js the dashboard uses.

import mqtt from "../vendor/mqtt.esm.js";
import { Api } from "./api.js";
import { grantedCodes, randomTabId, websocketUrl } from "./connection.js";
import { h } from "./ui.js";

const MAX_ROWS = 500;
const $ = (id) => document.getElementById(id);
let client = null;
let paused = false;
let count = 0;

function status(text, state) {
  $("debug-status").textContent = text;
  if (state) {
    $("connection").dataset.state = state;
    $("connection-label").textContent = { live: "Connected", reconnecting: "Connecting…", refused: "Refused", offline: "Disconnected", "signed-out": "Disconnected" }[state] ?? state;
  }
}

function decode(payload) {
  const text = new TextDecoder("utf-8").decode(payload);
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function show(topic, payload, packet) {
  count += 1;
  $("message-count").textContent = String(count);
  if (paused) return;
  const body = payload.length === 0 ? "(empty: a cleared retained message)" : decode(payload);
  const row = h(
    "tr",
    { dataset: { topic, retained: String(packet.retain === true) } },
    h("td", {}, new Date().toLocaleTimeString()),
    h("td", {}, topic),
    h("td", {}, packet.retain ? "yes" : "no"),
    h("td", {}, String(packet.qos)),
    h("td", {}, h("pre", {}, body)),
  );
  $("messages").prepend(row);
  while ($("messages").children.length > MAX_ROWS) $("messages").lastElementChild.remove();
}

function disconnect() {
  if (client) client.end(true);
  client = null;
  $("connect").disabled = false;
  $("disconnect").disabled = true;
}

function connect(event) {
  event.preventDefault();
  disconnect();
  const clientId = $("client-id").value.trim();
  const username = $("username").value.trim() || clientId.split(":")[0];
  const filters = $("filter").value.split(/\s+/).filter(Boolean);
  const qos = Number($("qos").value);
  status(`Connecting to ${$("url").value} as ${clientId}…`, "reconnecting");
  $("connect").disabled = true;
  $("disconnect").disabled = false;
  const current = mqtt.connect($("url").value.trim(), {
    clientId,
    username,
    password: $("token").value.trim(),
    clean: $("clean").checked,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    protocolVersion: 4,
  });
  client = current;
  current.on("connect", () => {
    status(`Connected as ${clientId}; subscribing…`, "live");
    current.subscribe(filters, { qos }, (error) => {
      const codes = grantedCodes(filters, error);
      if (codes === null) {
        status(`Subscribe failed: ${error.message}`, "live");
        return;
      }
      const report = filters.map((f, i) => `${f} → ${codes[i] & 0x80 ? "refused (0x80)" : `granted QoS ${codes[i]}`}`);
      status(`Connected as ${clientId}. ${report.join("; ")}`, "live");
    });
  });
  current.on("message", (topic, payload, packet) => show(topic, payload, packet));
  current.on("error", (error) => {
    if (current !== client) return;
    const refused = [2, 4, 5].includes(error.code);
    status(refused ? `Refused by the broker: ${error.message} (CONNACK ${error.code})` : `Error: ${error.message}`, refused ? "refused" : undefined);
  });
  current.on("close", () => {
    if (current !== client) return;
    if ($("connection").dataset.state !== "refused") status(`${$("debug-status").textContent} Connection closed.`, "offline");
    $("connect").disabled = false;
    $("disconnect").disabled = true;
  });
}

async function useSession() {
  let session = null;
  try {
    session = JSON.parse(sessionStorage.getItem("orderbus.session") ?? "null");
  } catch {
    session = null;
  }
  if (!session?.token) {
    status("Not signed in in this tab: sign in on the dashboard first, or paste a token.");
    return;
  }
  const api = new Api({ token: () => session.token });
  try {
    const answer = await api.mqttToken();
    $("token").value = answer.token;
    $("client-id").value = `${answer.client_id_prefix}:debug-${randomTabId()}`;
    $("username").value = "";
    if (!$("filter").value) $("filter").value = `restaurant/${session.restaurantId}/#`;
    status(`Got an MQTT token for ${answer.client_id_prefix}, valid ${answer.expires_in} s.`);
  } catch (error) {
    status(`Could not get an MQTT token: ${error.message}`);
  }
}

async function init() {
  $("connect-form").addEventListener("submit", connect);
  $("disconnect").addEventListener("click", () => {
    disconnect();
    status("Disconnected.", "offline");
  });
  $("use-session").addEventListener("click", useSession);
  $("clear").addEventListener("click", () => {
    $("messages").replaceChildren();
    count = 0;
    $("message-count").textContent = "0";
  });
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").setAttribute("aria-pressed", String(paused));
    $("pause").textContent = paused ? "Resume" : "Pause";
  });
  $("client-id").value = `debug-${randomTabId()}`;
  try {
    const config = await new Api().config();
    if (!$("url").value) $("url").value = websocketUrl(config);
  } catch (error) {
    status(`Cannot read the broker's address (${error.message}); enter it.`);
  }
}

init();

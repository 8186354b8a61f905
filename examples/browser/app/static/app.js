// The example page: fetch a token from the app's own server (/token),
// connect to Starling over WebSocket with it as the MQTT password, show the
// latest value of every topic under sensors/ (sampled by the broker every
// 250 ms: latest-value delivery), send a command, and reconnect with a
// fresh token when the connection ends (at the token's exp, for one).
// window.exampleState is what the page shows, for tests.
"use strict";

const state = { status: "starting", user: "", subscribed: false, values: {}, sent: 0, refusals: [], log: [] };
window.exampleState = state;
const ttl = new URLSearchParams(location.search).get("ttl");
let client = null;

function log(msg) {
  state.log.push(msg);
  const el = document.getElementById("log");
  el.textContent = state.log.slice(-50).join("\n");
}

function setStatus(s) {
  state.status = s;
  document.getElementById("status").textContent = s;
  document.getElementById("send").disabled = s !== "connected";
  log(s);
}

function render() {
  const rows = Object.keys(state.values).sort().map((topic) => {
    const tr = document.createElement("tr");
    const a = document.createElement("td");
    const b = document.createElement("td");
    a.textContent = topic;
    b.textContent = state.values[topic];
    tr.append(a, b);
    return tr;
  });
  document.getElementById("values").replaceChildren(...rows);
}

async function fetchToken() {
  const r = await fetch("/token" + (ttl ? "?ttl=" + encodeURIComponent(ttl) : ""), { cache: "no-store" });
  if (!r.ok) throw new Error("token endpoint: " + r.status);
  return r.json();
}

async function start() {
  setStatus("fetching a token");
  const t = await fetchToken();
  state.user = t.user;
  document.getElementById("user").textContent = "as " + t.user;
  // The token is the password; the user name is ignored by the broker
  // (the token's sub is the user).
  client = mqtt.connect(t.broker, {
    protocolVersion: 5, clientId: t.user, clean: true,
    username: "jwt", password: t.token,
    reconnectPeriod: 3000, connectTimeout: 10000,
  });
  // Whether the current attempt reached MQTT (a CONNACK, good or bad):
  // a socket closed before that was refused by the WebSocket upgrade,
  // which a browser does not let the page see (no status, no reason).
  let reached = false;
  client.on("reconnect", () => { reached = false; });
  client.on("connect", async () => {
    reached = true;
    setStatus("connected");
    try {
      await client.subscribeAsync("sensors/#", { qos: 0, properties: { userProperties: { "latest-value": "250ms" } } });
      state.subscribed = true;
    } catch (e) {
      log("subscribe failed: " + e.message);
    }
  });
  client.on("message", (topic, payload) => {
    state.values[topic] = new TextDecoder().decode(payload);
    render();
  });
  client.on("disconnect", (packet) => {
    // 0xA0: the token expired (maximum connect time).
    setStatus(packet.reasonCode === 0xa0 ? "token expired: reconnecting with a fresh one" : "disconnected by the broker: 0x" + packet.reasonCode.toString(16));
  });
  client.on("close", () => {
    state.subscribed = false;
    if (!reached) {
      setStatus("refused: the broker closed the WebSocket before MQTT started " +
        "(is this page's origin in websocket.allowed_origins, and the URL's path in websocket.paths? the broker's log says which)");
    }
    if (state.status === "connected") setStatus("reconnecting");
    // The next attempt uses a fresh token.
    fetchToken().then((t) => { client.options.password = t.token; }, (e) => log(e.message));
  });
  client.on("error", (e) => {
    // A refused CONNECT carries its reason code: 0x86 for a bad or
    // expired token. A refused WebSocket (another origin not allowed by
    // websocket.allowed_origins) is only a failed socket: the broker's
    // log says why.
    if (e.code) {
      state.refusals.push(e.code);
      reached = true; // MQTT answered: the CONNACK's code says why
    }
    setStatus("refused: " + e.message + (e.code ? " (0x" + e.code.toString(16) + ")" : ""));
  });
  client.on("offline", () => { if (!state.status.startsWith("refused")) setStatus("offline, reconnecting"); });
}

document.getElementById("send").addEventListener("click", async () => {
  try {
    await client.publishAsync(`commands/${state.user}/led`, JSON.stringify({ on: state.sent % 2 === 0 }), { qos: 1 });
    state.sent++;
    document.getElementById("sent").textContent = `${state.sent} sent`;
  } catch (e) {
    log("command failed: " + e.message);
  }
});

start().catch((e) => setStatus("failed: " + e.message));

// pubsub.mjs drives Starling with MQTT.js (the npm "mqtt" package) over
// WebSocket: for MQTT 5 and then 3.1.1 it connects a subscriber and a
// publisher to ws://127.0.0.1:PORT/mqtt, publishes QoS 0, 1 and 2 messages
// and a 128 KiB one, and checks that each arrives intact with the QoS
// expected. It exits 0 when all arrived, 1 otherwise, printing why. Given a
// CA file, it uses wss://127.0.0.1:PORT/mqtt and trusts that CA.
//
//   node test/node/pubsub.mjs PORT [CA_FILE]
//
// With STARLING_DEFLATE=on (or off) in the environment it also checks that
// every WebSocket negotiated permessage-deflate (or none did): the Node
// client (npm "ws", which MQTT.js uses) offers it by default.
//
// test/integration/ws_mqttjs_test.go runs it against an in-process broker.
import { readFileSync } from "node:fs";
import mqtt from "mqtt";
import WebSocket from "ws"; // MQTT.js's own WebSocket package

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node pubsub.mjs PORT [CA_FILE]");
  process.exit(2);
}
const caFile = process.argv[3];
const url = `${caFile ? "wss" : "ws"}://127.0.0.1:${port}/mqtt`;
const ca = caFile ? readFileSync(caFile) : undefined;
const waitMs = 10000; // for each message, and for each connect

function fail(msg) {
  console.error(`pubsub.mjs: FAIL: ${msg}`);
  process.exit(1);
}

function pattern(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

const deflate = process.env.STARLING_DEFLATE; // "on", "off" or unset
const sockets = [];

function checkDeflate() {
  if (!deflate) return;
  for (const s of sockets) {
    const got = "permessage-deflate" in (s.extensions ? parseExtensions(s.extensions) : {});
    if (got !== (deflate === "on")) {
      fail(`permessage-deflate negotiated: ${got}, want ${deflate} (Sec-WebSocket-Extensions: ${JSON.stringify(s.extensions)})`);
    }
  }
  console.log(`pubsub.mjs: permessage-deflate ${deflate} on ${sockets.length} WebSockets`);
}

function parseExtensions(header) {
  const out = {};
  for (const ext of header.split(",")) out[ext.split(";")[0].trim()] = true;
  return out;
}

function connect(version, id) {
  return mqtt.connectAsync(url, {
    // The same WebSocket MQTT.js would open, kept to look at what the
    // handshake negotiated.
    createWebsocket: (u, protocols, opts) => {
      const s = new WebSocket(u, protocols, opts.wsOptions);
      sockets.push(s);
      return s;
    },
    protocolVersion: version,
    clientId: id,
    clean: true,
    reconnectPeriod: 0, // a lost connection is a failure, not a retry
    connectTimeout: waitMs,
    keepalive: 30,
    ...(ca ? { ca, rejectUnauthorized: true } : {}),
  });
}

async function run(version) {
  const tag = `v${version}`;
  const sub = await connect(version, `mqttjs-sub-${tag}`);
  const pub = await connect(version, `mqttjs-pub-${tag}`);
  const received = [];
  let wake = null;
  sub.on("message", (topic, payload, packet) => {
    received.push({ topic, payload, qos: packet.qos });
    if (wake) wake();
  });
  const granted = await sub.subscribeAsync(`mqttjs/${tag}/#`, { qos: 2 });
  if (granted.length !== 1 || granted[0].qos !== 2) {
    fail(`${tag}: subscribe granted ${JSON.stringify(granted)}, want QoS 2`);
  }

  const sent = [
    { topic: `mqttjs/${tag}/q0`, payload: Buffer.from(`qos 0 over ${tag}`), qos: 0 },
    { topic: `mqttjs/${tag}/q1`, payload: Buffer.from(`qos 1 over ${tag}`), qos: 1 },
    { topic: `mqttjs/${tag}/q2`, payload: Buffer.from(`qos 2 over ${tag}`), qos: 2 },
    { topic: `mqttjs/${tag}/big`, payload: pattern(128 * 1024), qos: 1 },
  ];
  for (const m of sent) {
    await pub.publishAsync(m.topic, m.payload, { qos: m.qos });
  }

  const deadline = Date.now() + waitMs;
  while (received.length < sent.length && Date.now() < deadline) {
    await new Promise((resolve) => {
      wake = resolve;
      setTimeout(resolve, 100);
    });
  }
  wake = null;
  if (received.length !== sent.length) {
    fail(`${tag}: received ${received.length} of ${sent.length} messages within ${waitMs} ms: ${received.map((r) => r.topic).join(", ")}`);
  }
  for (const m of sent) {
    const r = received.find((x) => x.topic === m.topic);
    if (!r) fail(`${tag}: ${m.topic} not received`);
    if (r.qos !== m.qos) fail(`${tag}: ${m.topic} arrived with QoS ${r.qos}, want ${m.qos}`);
    if (!r.payload.equals(m.payload)) {
      fail(`${tag}: ${m.topic} payload differs: ${r.payload.length} bytes, want ${m.payload.length}`);
    }
  }
  await sub.endAsync();
  await pub.endAsync();
  console.log(`pubsub.mjs: ${url} ${tag}: ${sent.length} messages (QoS 0, 1, 2 and 128 KiB) received intact`);
}

const timer = setTimeout(() => fail("still running after 60 s"), 60000);
try {
  await run(5);
  await run(4);
  checkDeflate();
} catch (err) {
  fail(err && err.stack ? err.stack : String(err));
}
clearTimeout(timer);
console.log("pubsub.mjs: ok");
process.exit(0);

// features.mjs drives Starling with MQTT.js (the npm "mqtt" package) over
// WebSocket, beyond the plain publish/subscribe of pubsub.mjs:
//
//   - wildcards: "+" and "#" filters get exactly the topics they match;
//   - retained: a new subscriber gets the retained message, with the retain
//     flag, and no longer after it is cleared;
//   - last will: a client whose socket is destroyed (no DISCONNECT) has its
//     will published; a client that disconnects cleanly does not;
//   - large payloads: 1 MiB and 16 MiB arrive byte for byte (the broker's
//     limits.max_packet_size must allow them);
//   - order: 10,000 QoS 1 messages arrive complete and in order (the
//     broker's limits.max_queued_messages must hold a burst).
//
// MQTT 5 runs every check, 3.1.1 all but the 16 MiB payload and the 10,000
// messages. It exits 0 when all pass, 1 otherwise, printing why. Given a CA
// file it uses wss://127.0.0.1:PORT/mqtt and trusts that CA.
//
//   node test/node/features.mjs PORT [CA_FILE]
//
// test/integration/ws_mqttjs_test.go runs it against an in-process broker.
import { readFileSync } from "node:fs";
import mqtt from "mqtt";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node features.mjs PORT [CA_FILE]");
  process.exit(2);
}
const caFile = process.argv[3];
const url = `${caFile ? "wss" : "ws"}://127.0.0.1:${port}/mqtt`;
const ca = caFile ? readFileSync(caFile) : undefined;
const waitMs = 20000; // for each wait on messages, and for each connect

function fail(msg) {
  console.error(`features.mjs: FAIL: ${msg}`);
  process.exit(1);
}

function log(msg) {
  console.log(`features.mjs: ${url} ${msg}`);
}

function pattern(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

function connect(version, id, extra = {}) {
  return mqtt.connectAsync(url, {
    protocolVersion: version,
    clientId: id,
    clean: true,
    reconnectPeriod: 0, // a lost connection is a failure, not a retry
    connectTimeout: waitMs,
    keepalive: 30,
    ...(ca ? { ca, rejectUnauthorized: true } : {}),
    ...extra,
  });
}

// collector records the messages a client receives; until(n) waits for at
// least n of them, bounded by waitMs.
function collector(client) {
  const got = [];
  let wake = null;
  client.on("message", (topic, payload, packet) => {
    got.push({ topic, payload, qos: packet.qos, retain: packet.retain });
    if (wake) wake();
  });
  got.until = async (n, what) => {
    const deadline = Date.now() + waitMs;
    while (got.length < n && Date.now() < deadline) {
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
    wake = null;
    if (got.length < n) fail(`${what}: received ${got.length} of ${n} messages within ${waitMs} ms`);
  };
  return got;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function wildcards(version, tag) {
  const sub = await connect(version, `feat-wild-sub-${tag}`);
  const pub = await connect(version, `feat-wild-pub-${tag}`);
  const got = collector(sub);
  await sub.subscribeAsync(`wild/${tag}/+/temp`, { qos: 1 });
  await sub.subscribeAsync(`wild/${tag}/a/#`, { qos: 1 });
  const match = [`wild/${tag}/x/temp`, `wild/${tag}/y/temp`, `wild/${tag}/a`, `wild/${tag}/a/b`, `wild/${tag}/a/b/c`];
  const miss = [`wild/${tag}/x/y/temp`, `wild/${tag}/temp`, `wild/${tag}/b/c`, `wild/${tag}/x/hum`, `wild/${tag}/ab`];
  for (const t of [...miss, ...match]) await pub.publishAsync(t, Buffer.from(t), { qos: 1 });
  await got.until(match.length, `${tag} wildcards`);
  await sleep(300); // time for a wrong match to arrive too
  const topics = got.map((m) => m.topic).sort();
  if (JSON.stringify(topics) !== JSON.stringify([...match].sort())) {
    fail(`${tag} wildcards: got ${JSON.stringify(topics)}, want ${JSON.stringify([...match].sort())}`);
  }
  for (const m of got) if (m.payload.toString() !== m.topic) fail(`${tag} wildcards: ${m.topic} payload ${m.payload}`);
  await sub.endAsync();
  await pub.endAsync();
  log(`${tag}: wildcards + and # match exactly`);
}

async function retained(version, tag) {
  const topic = `ret/${tag}/state`;
  const pub = await connect(version, `feat-ret-pub-${tag}`);
  await pub.publishAsync(topic, Buffer.from("on"), { qos: 1, retain: true });
  const sub = await connect(version, `feat-ret-sub-${tag}`);
  const got = collector(sub);
  await sub.subscribeAsync(`ret/${tag}/#`, { qos: 1 });
  await got.until(1, `${tag} retained`);
  const m = got[0];
  if (m.topic !== topic || m.payload.toString() !== "on" || !m.retain || m.qos !== 1) {
    fail(`${tag} retained: got ${m.topic} "${m.payload}" retain=${m.retain} qos=${m.qos}, want ${topic} "on" retain=true qos=1`);
  }
  // Cleared by an empty retained message: a later subscriber gets nothing.
  await pub.publishAsync(topic, Buffer.alloc(0), { qos: 1, retain: true });
  const late = await connect(version, `feat-ret-late-${tag}`);
  const lateGot = collector(late);
  await late.subscribeAsync(`ret/${tag}/#`, { qos: 1 });
  await sleep(300);
  if (lateGot.length !== 0) fail(`${tag} retained: cleared message still delivered: ${lateGot.map((x) => x.topic)}`);
  await Promise.all([pub.endAsync(), sub.endAsync(), late.endAsync()]);
  log(`${tag}: retained message delivered on subscribe, with the retain flag, and cleared`);
}

async function lastWill(version, tag) {
  const watch = await connect(version, `feat-will-watch-${tag}`);
  const got = collector(watch);
  await watch.subscribeAsync(`will/${tag}/#`, { qos: 1 });
  const will = (name) => ({ will: { topic: `will/${tag}/${name}`, payload: Buffer.from(`${name} gone`), qos: 1, retain: false } });
  // A clean disconnect discards the will...
  const polite = await connect(version, `feat-will-polite-${tag}`, will("polite"));
  await polite.endAsync();
  // ...a socket that just goes away does not.
  const rude = await connect(version, `feat-will-rude-${tag}`, will("rude"));
  rude.on("error", () => {});
  rude.stream.destroy();
  await got.until(1, `${tag} last will`);
  await sleep(300);
  if (got.length !== 1 || got[0].topic !== `will/${tag}/rude` || got[0].payload.toString() !== "rude gone" || got[0].qos !== 1) {
    fail(`${tag} last will: got ${JSON.stringify(got.map((m) => [m.topic, m.payload.toString(), m.qos]))}, want only will/${tag}/rude "rude gone" at QoS 1`);
  }
  rude.end(true);
  await watch.endAsync();
  log(`${tag}: last will published when the socket is destroyed, not after a clean disconnect`);
}

async function large(version, tag, sizes) {
  const sub = await connect(version, `feat-big-sub-${tag}`);
  const pub = await connect(version, `feat-big-pub-${tag}`);
  const got = collector(sub);
  await sub.subscribeAsync(`big/${tag}/#`, { qos: 1 });
  for (const n of sizes) {
    const payload = pattern(n);
    const start = Date.now();
    // Counted before publishing: the delivery may reach the subscriber
    // before the PUBACK reaches the publisher.
    const before = got.length;
    await pub.publishAsync(`big/${tag}/${n}`, payload, { qos: 1 });
    await got.until(before + 1, `${tag} ${n}-byte payload`);
    if (got.length !== before + 1) fail(`${tag}: ${n}-byte payload: ${got.length - before} deliveries, want 1`);
    const m = got[before];
    if (m.topic !== `big/${tag}/${n}` || !m.payload.equals(payload)) {
      fail(`${tag}: ${n}-byte payload: got ${m.topic} with ${m.payload.length} bytes that ${m.payload.length === n ? "differ" : "differ in length"}`);
    }
    log(`${tag}: ${n}-byte payload intact in ${Date.now() - start} ms`);
  }
  await sub.endAsync();
  await pub.endAsync();
}

async function ordered(version, tag, count) {
  const sub = await connect(version, `feat-seq-sub-${tag}`);
  const pub = await connect(version, `feat-seq-pub-${tag}`);
  const got = collector(sub);
  await sub.subscribeAsync(`seq/${tag}`, { qos: 1 });
  const start = Date.now();
  const window = 50; // publishes in flight at once, under the broker's receive maximum
  for (let i = 0; i < count; i += window) {
    const batch = [];
    for (let j = i; j < Math.min(i + window, count); j++) {
      batch.push(pub.publishAsync(`seq/${tag}`, Buffer.from(String(j)), { qos: 1 }));
    }
    await Promise.all(batch);
  }
  await got.until(count, `${tag} ${count} QoS 1 messages`);
  await sleep(200);
  if (got.length !== count) fail(`${tag}: ${got.length} messages received, want ${count}`);
  for (let i = 0; i < count; i++) {
    const v = got[i].payload.toString();
    if (v !== String(i) || got[i].qos !== 1) fail(`${tag}: message ${i} is "${v}" at QoS ${got[i].qos}, want "${i}" at QoS 1 (out of order or lost)`);
  }
  await sub.endAsync();
  await pub.endAsync();
  log(`${tag}: ${count} QoS 1 messages complete and in order in ${Date.now() - start} ms`);
}

// Sampled latest-value delivery, as the dashboard asks for it: the
// SUBSCRIBE user property latest-value=<interval> gets the first message at
// once, then at most one per topic per interval, the newest; the last value
// always arrives.
async function sampled(tag) {
  const sub = await connect(5, `feat-lv-sub-${tag}`);
  const pub = await connect(5, `feat-lv-pub-${tag}`);
  const got = collector(sub);
  await sub.subscribeAsync(`lv/${tag}/#`, { qos: 0, properties: { userProperties: { "latest-value": "300ms" } } });
  const n = 200;
  for (let i = 0; i < n; i++) await pub.publishAsync(`lv/${tag}/a`, String(i), { qos: 1 });
  const deadline = Date.now() + waitMs;
  while (!(got.length && got[got.length - 1].payload.toString() === String(n - 1)) && Date.now() < deadline) await sleep(50);
  const values = got.map((m) => m.payload.toString());
  if (values[values.length - 1] !== String(n - 1)) fail(`${tag}: sampled subscriber's last value ${values[values.length - 1]}, want ${n - 1}`);
  if (values[0] !== "0" || values.length >= n) fail(`${tag}: sampled subscriber got ${values.length} of ${n} messages: ${values.join(",")}`);
  for (let i = 1; i < values.length; i++) {
    if (Number(values[i]) <= Number(values[i - 1])) fail(`${tag}: sampled values out of order: ${values.join(",")}`);
  }
  await sub.endAsync();
  await pub.endAsync();
  log(`${tag}: sampled latest-value delivery: ${values.length} of ${n} messages, the last one included`);
}

const timer = setTimeout(() => fail("still running after 110 s"), 110000);
try {
  for (const [version, tag] of [[5, "v5"], [4, "v4"]]) {
    await wildcards(version, tag);
    await retained(version, tag);
    await lastWill(version, tag);
  }
  await sampled("v5");
  await large(4, "v4", [1 << 20]);
  await large(5, "v5", [1 << 20, 16 << 20]);
  await ordered(5, "v5", 10000);
} catch (err) {
  fail(err && err.stack ? err.stack : String(err));
}
clearTimeout(timer);
console.log("features.mjs: ok");
process.exit(0);

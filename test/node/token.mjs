// token.mjs connects MQTT.js to Starling over WebSocket the way a browser
// page does with a token: MQTT 5, no user name or password, the token in the
// URL's access_token query parameter (auth.jwt.query_param). It checks that
//
//   - a good token connects, and may publish and receive on its own topic;
//   - a token signed with another secret is refused with CONNACK 0x86;
//   - a short-lived token's connection is ended at exp with DISCONNECT 0xA0
//     (maximum connect time).
//
// The tokens come in the environment (GOOD_TOKEN, BAD_TOKEN, SHORT_TOKEN),
// signed by test/integration/jwt_mqttjs_test.go. Exits 0 when all pass.
//
//   node test/node/token.mjs PORT
import mqtt from "mqtt";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node token.mjs PORT");
  process.exit(2);
}
const { GOOD_TOKEN, BAD_TOKEN, SHORT_TOKEN } = process.env;
const waitMs = Number(process.env.WAIT_MS || 60000);

function fail(msg) {
  console.error(`token.mjs: FAIL: ${msg}`);
  process.exit(1);
}

function url(token) {
  return `ws://127.0.0.1:${port}/mqtt?access_token=${encodeURIComponent(token)}`;
}

function opts(id) {
  return { protocolVersion: 5, clientId: id, reconnectPeriod: 0, connectTimeout: waitMs };
}

function within(p, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${waitMs} ms`)), waitMs);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

// A short-lived token connects first (it must be used before its exp); its
// DISCONNECT is awaited last.
const short = await within(mqtt.connectAsync(url(SHORT_TOKEN), opts("page-short")), "connect with a short token");
const shortEnded = new Promise((resolve) => short.on("disconnect", resolve));

// A good token: in, and a message to its own topic comes back.
{
  const c = await within(mqtt.connectAsync(url(GOOD_TOKEN), opts("page-good")), "connect with a good token");
  await c.subscribeAsync("pages/page-user/#", { qos: 1 });
  const got = new Promise((resolve) => c.on("message", (topic, payload) => resolve([topic, payload.toString()])));
  await c.publishAsync("pages/page-user/hello", "hi", { qos: 1 });
  const [topic, payload] = await within(got, "own message");
  if (topic !== "pages/page-user/hello" || payload !== "hi") fail(`got ${topic} ${payload}`);
  await c.endAsync();
  console.log("token.mjs: good token connected and exchanged a message");
}

// A forged token: CONNACK 0x86.
{
  try {
    const c = await within(mqtt.connectAsync(url(BAD_TOKEN), opts("page-bad")), "connect with a bad token");
    await c.endAsync(true);
    fail("a forged token connected");
  } catch (err) {
    if (err.code !== 0x86) fail(`forged token: ${err.message} (code ${err.code}), want 0x86`);
  }
  console.log("token.mjs: forged token refused with 0x86");
}

// The short-lived token's DISCONNECT, awaited after the other checks.
{
  const packet = await within(shortEnded, "DISCONNECT at exp");
  if (packet.reasonCode !== 0xa0) fail(`DISCONNECT reason ${packet.reasonCode}, want 0xA0`);
  short.end(true);
  console.log("token.mjs: short token ended with DISCONNECT 0xA0");
}
process.exit(0);

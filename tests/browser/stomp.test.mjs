// The STOMP adapter in headless Chromium against a real broker: RabbitMQ's rabbitmq_web_stomp
// (Debian's rabbitmq-server, started here on loopback ports) behind `ticketgate run`. The
// page is the application: @stomp/stompjs with ticketgate-client/stomp, the ticket carried
// in Sec-WebSocket-Protocol. With session refresh the STOMP session outlives three login
// expiries on one socket, losing no message; without it a login that expires while the
// socket is open is closed with 4401, stompjs reconnects, and the adapter refreshes the login
// and fetches a fresh ticket.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { freePort } from "./ports.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const binary = process.env.TICKETGATE_BIN || path.join(targetDir, "debug", "ticketgate");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const rabbitmqServer = "/usr/lib/rabbitmq/bin/rabbitmq-server";
// The UMD bundle, beside the package's entry point (its `exports` do not list the file).
const stompBundle = path.join(
  path.dirname(createRequire(import.meta.url).resolve("@stomp/stompjs")), "../bundles/stomp.umd.min.js");
const DEADLINE_MS = 30_000;
const ISSUER = "https://idp.test/";
const AUDIENCE = "chat";

const work = mkdtempSync(path.join(os.tmpdir(), "ticketgate-stomp-"));
const secret = randomBytes(32).toString("hex");
const credentials = new Set();
let rabbit;
let rabbitEnv;
let epmdPort;
let gate;
let output = "";
let gateBase;
let browser;

function listening(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => { socket.destroy(); resolve(true); });
    socket.once("error", () => resolve(false));
  });
}

async function until(what, check, log = () => "") {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > DEADLINE_MS) throw new Error(`timed out waiting for ${what}\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
function login(seconds) {
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ iss: ISSUER, aud: AUDIENCE, sub: "alice", iat: now - 1, exp: now + seconds })}`;
  const token = `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
  credentials.add(token);
  return token;
}

/** A RabbitMQ node of its own: every listener on a free loopback port, its files in `work`. */
async function startRabbit() {
  const [amqp, stomp, webStomp, dist] = [await freePort(), await freePort(), await freePort(), await freePort()];
  epmdPort = await freePort();
  writeFileSync(path.join(work, "rabbitmq.conf"), [
    `listeners.tcp.default = 127.0.0.1:${amqp}`,
    `stomp.listeners.tcp.1 = 127.0.0.1:${stomp}`,
    "web_stomp.tcp.ip = 127.0.0.1",
    `web_stomp.tcp.port = ${webStomp}`,
    "",
  ].join("\n"));
  writeFileSync(path.join(work, "enabled_plugins"), "[rabbitmq_web_stomp].\n");
  let log = "";
  rabbitEnv = {
    ...process.env,
    HOME: work,
    RABBITMQ_NODENAME: `tg${webStomp}@localhost`,
    RABBITMQ_CONFIG_FILE: path.join(work, "rabbitmq.conf"),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(work, "enabled_plugins"),
    RABBITMQ_MNESIA_BASE: path.join(work, "mnesia"),
    RABBITMQ_LOG_BASE: path.join(work, "log"),
    RABBITMQ_DIST_PORT: String(dist),
    ERL_EPMD_ADDRESS: "127.0.0.1",
    ERL_EPMD_PORT: String(epmdPort),
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-kernel inet_dist_use_interface {127,0,0,1}",
  };
  rabbit = spawn(rabbitmqServer, [], { detached: true, env: rabbitEnv });
  rabbit.stdout.on("data", (d) => (log += d));
  rabbit.stderr.on("data", (d) => (log += d));
  await until("rabbitmq_web_stomp to listen", () => listening(webStomp), () => log);
  return webStomp;
}

before(async () => {
  const webStomp = await startRabbit();
  writeFileSync(path.join(work, "idp.secret"), secret);
  writeFileSync(path.join(work, "ticket.secret"), randomBytes(32).toString("hex"));
  const [port, admin] = [await freePort(), await freePort()];
  gateBase = `127.0.0.1:${port}`;
  writeFileSync(path.join(work, "ticketgate.yaml"), `listen: "${gateBase}"
upstream: "127.0.0.1:${webStomp}"
admin:
  listen: "127.0.0.1:${admin}"
shutdown_grace_seconds: 1
jwt:
  leeway_seconds: 0
  issuers:
    - issuer: "${ISSUER}"
      audiences: ["${AUDIENCE}"]
      algorithms: [HS256]
      secret_file: idp.secret
routes:
  - prefix: /ws
    auth: ticket
    stomp:
      subscribe: ["/topic/room", "/topic/private.{sub}"]
      send: ["/topic/room", "/topic/private.{sub}"]
tickets:
  secret_file: ticket.secret
websocket:
  refresh_path: /ws-refresh
`);
  gate = spawn(binary, ["run", "--config", path.join(work, "ticketgate.yaml")]);
  gate.stdout.on("data", (d) => (output += d));
  gate.stderr.on("data", (d) => (output += d));
  await until("ticketgate", () => listening(port), () => output);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    // The page is served by Playwright, so Chromium cannot tell it is on loopback and its
    // Local Network Access checks would block its sockets to ticketgate.
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
      "--disable-features=LocalNetworkAccessChecks"],
  });
});

after(async () => {
  await browser?.close();
  gate?.kill("SIGINT");
  if (rabbit) process.kill(-rabbit.pid, "SIGKILL");
  if (epmdPort) spawnSync("epmd", ["-kill"], { env: { ...process.env, ERL_EPMD_PORT: String(epmdPort) } });
  for (const credential of credentials) {
    assert.ok(!output.includes(credential), "a credential reached ticketgate's output");
  }
});

/** A page on the gate's origin (served by Playwright) with stompjs and the client modules. */
async function appPage() {
  const page = await browser.newPage();
  const files = {
    "/app.html": ["text/html", "<!doctype html><title>app</title>"],
    "/client/ticketgate.js": ["text/javascript", readFileSync(path.join(root, "clients/js/ticketgate.js"))],
    "/client/stomp.js": ["text/javascript", readFileSync(path.join(root, "clients/js/stomp.js"))],
  };
  await page.route(`http://${gateBase}/{app.html,client/*}`, (route) => {
    const [contentType, body] = files[new URL(route.request().url()).pathname];
    return route.fulfill({ status: 200, contentType, body });
  });
  await page.exposeFunction("freshLogin", (seconds) => login(seconds));
  await page.goto(`http://${gateBase}/app.html`);
  await page.addScriptTag({ path: stompBundle });
  return page;
}

test("STOMP over ticketgate to RabbitMQ: a fresh ticket for every connection, a 4401 survived", async () => {
  const page = await appPage();
  const protocols = [];
  page.on("websocket", (ws) => protocols.push(ws.url()));
  await page.evaluate(async () => {
    const { withTicketgate } = await import("/client/stomp.js");
    const app = (window.app = { token: await window.freshLogin(3), refreshes: 0, connects: 0, received: [], closes: [] });
    const client = withTicketgate(new StompJs.Client({ reconnectDelay: 200, heartbeatIncoming: 0, heartbeatOutgoing: 0 }), {
      url: `ws://${location.host}/ws`,
      getAccessToken: () => app.token,
      refresh: async () => { app.refreshes += 1; app.token = await window.freshLogin(600); },
      ticketIn: "protocol",
      keepSessions: false,
    });
    client.onWebSocketClose = (e) => app.closes.push(e.code);
    client.onConnect = () => {
      app.connects += 1;
      client.subscribe("/topic/room", (message) => app.received.push(message.body));
      client.publish({ destination: "/topic/room", body: `hello ${app.connects}` });
    };
    client.activate();
  });
  await page.waitForFunction(() => window.app.received.includes("hello 1"), null, { timeout: DEADLINE_MS });
  await page.waitForFunction(() => window.app.received.includes("hello 2"), null, { timeout: DEADLINE_MS });
  const app = await page.evaluate(() => window.app);
  assert.equal(app.connects, 2);
  assert.equal(app.refreshes, 1);
  assert.equal(app.closes[0], 4401, `closes: ${app.closes}`);
  // Neither socket URL carried a ticket: it went in the protocol header.
  assert.equal(protocols.length, 2);
  for (const url of protocols) assert.ok(!url.includes("ticket"), url);
  await page.close();
});

test("STOMP over ticketgate to RabbitMQ: one session through three login expiries, no message lost", async () => {
  const page = await appPage();
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  await page.evaluate(async () => {
    const { withTicketgate } = await import("/client/stomp.js");
    const app = (window.app = { token: await window.freshLogin(3), connects: 0, extended: 0, sent: 0, received: [], closes: [] });
    const client = withTicketgate(new StompJs.Client({ reconnectDelay: 200, heartbeatIncoming: 0, heartbeatOutgoing: 0 }), {
      url: `ws://${location.host}/ws`,
      getAccessToken: () => app.token,
      refresh: async () => { app.token = await window.freshLogin(3); },
      ticketIn: "protocol",
      onStep: (step) => { if (step === "session:extended") app.extended += 1; },
    });
    client.onWebSocketClose = (e) => app.closes.push(e.code);
    client.onConnect = () => {
      app.connects += 1;
      client.subscribe("/topic/room", (message) => app.received.push(message.body));
    };
    client.activate();
    window.publishing = setInterval(() => {
      if (client.connected) client.publish({ destination: "/topic/room", body: `message ${app.sent++}` });
    }, 100);
  });
  await page.waitForFunction(() => window.app.extended >= 3, null, { timeout: DEADLINE_MS });
  await page.evaluate(() => clearInterval(window.publishing));
  await page.waitForFunction(() => window.app.received.length === window.app.sent, null, { timeout: DEADLINE_MS });
  const app = await page.evaluate(() => window.app);
  assert.equal(app.connects, 1, "one CONNECT through three login expiries");
  assert.deepEqual(app.closes, []);
  assert.ok(app.sent > 20, `${app.sent} messages`);
  assert.deepEqual(app.received, Array.from({ length: app.sent }, (_, i) => `message ${i}`));
  assert.equal(sockets.length, 1);
  await page.close();
});

/** The routing keys RabbitMQ has bindings for (each STOMP subscription to a topic is one). */
function rabbitBindings() {
  const listed = spawnSync("/usr/lib/rabbitmq/bin/rabbitmqctl", ["list_bindings", "routing_key", "--quiet"],
    { env: rabbitEnv, encoding: "utf8" });
  assert.equal(listed.status, 0, listed.stderr);
  return listed.stdout.split("\n").map((l) => l.trim()).filter(Boolean);
}

test("STOMP destinations by claim at RabbitMQ: the caller's own topic delivers, another's never reaches the broker", async () => {
  const page = await appPage();
  await page.evaluate(async () => {
    const { withTicketgate } = await import("/client/stomp.js");
    const app = (window.app = { token: await window.freshLogin(600), own: [], errors: [], closes: [] });
    const client = (name) => withTicketgate(
      new StompJs.Client({ reconnectDelay: 0, heartbeatIncoming: 0, heartbeatOutgoing: 0 }),
      { url: `ws://${location.host}/ws`, getAccessToken: () => app.token, ticketIn: "protocol" });
    const own = client("own");
    own.onConnect = () => {
      own.subscribe("/topic/private.alice", (message) => app.own.push(message.body), { receipt: "own-sub" });
      own.publish({ destination: "/topic/private.alice", body: "to myself" });
    };
    own.activate();
    const other = client("other");
    other.onStompError = (frame) => app.errors.push(frame.headers.message);
    other.onWebSocketClose = (e) => app.closes.push(e.code);
    other.onConnect = () => other.subscribe("/topic/private.bob", () => app.own.push("leaked"));
    other.activate();
  });
  await page.waitForFunction(() => window.app.own.includes("to myself"), null, { timeout: DEADLINE_MS });
  await page.waitForFunction(() => window.app.closes.includes(1008), null, { timeout: DEADLINE_MS });
  const app = await page.evaluate(() => window.app);
  assert.deepEqual(app.errors, ["forbidden destination"]);
  assert.deepEqual(app.own, ["to myself"]);
  const keys = rabbitBindings();
  assert.ok(keys.includes("private.alice"), `bindings: ${keys}`);
  assert.ok(!keys.includes("private.bob"), `a forbidden subscription reached RabbitMQ: ${keys}`);
  await page.close();
});

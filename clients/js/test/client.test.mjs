// The helper and the STOMP adapter against a real ticketgate (the built binary) in front of a
// real WebSocket upstream (the `ws` package; STOMP frames on /ws/stomp), in Node with `ws` as
// the WebSocket implementation browsers would provide.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket, WebSocketServer } from "ws";
import { Client } from "@stomp/stompjs";

import { connect } from "../ticketgate.js";
import { withTicketgate } from "../stomp.js";

globalThis.WebSocket = WebSocket;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const binary = process.env.TICKETGATE_BIN
  || path.join(process.env.CARGO_TARGET_DIR || path.join(root, "target"), "debug", "ticketgate");
const DEADLINE_MS = 10_000;
const ISSUER = "https://idp.test/";
const AUDIENCE = "chat";

let gate;
let output = "";
let upstream;
let base;
let adminUrl;
const seenByUpstream = [];
const secret = randomBytes(32).toString("hex");
const adminToken = randomBytes(32).toString("hex");
const credentials = new Set([adminToken]);

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
/** An HS256 login for `sub`, valid for `seconds`. */
function login(sub, seconds) {
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ iss: ISSUER, aud: AUDIENCE, sub, iat: now - 1, exp: now + seconds })}`;
  const token = `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
  credentials.add(token);
  return token;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function until(what, check) {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > DEADLINE_MS) throw new Error(`timed out waiting for ${what}\n${output}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** STOMP as a broker speaks it, enough for CONNECT, SUBSCRIBE, SEND and DISCONNECT. */
function stomp(socket) {
  let subscription = null;
  socket.on("message", (data) => {
    const [head, ...rest] = String(data).split("\n\n");
    const [command, ...headers] = head.split("\n");
    const header = (name) => headers.find((h) => h.startsWith(`${name}:`))?.slice(name.length + 1);
    const body = rest.join("\n\n").replace(/\0$/, "");
    if (command === "CONNECT") socket.send("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0");
    if (command === "SUBSCRIBE") subscription = header("id");
    if (command === "DISCONNECT") {
      socket.send(`RECEIPT\nreceipt-id:${header("receipt")}\n\n\0`);
      socket.close();
    }
    if (command === "SEND" && subscription) {
      socket.send(`MESSAGE\nsubscription:${subscription}\nmessage-id:1\ndestination:${header("destination")}\n\n${body}\0`);
    }
  });
}

/** Sends "0", "1", ... every 5 ms until the connection ends. */
function numbers(socket) {
  let next = 0;
  const timer = setInterval(() => socket.send(String(next++)), 5);
  socket.on("close", () => clearInterval(timer));
}

/**
 * A stand-in for the network between the client and ticketgate: a TCP forwarder whose
 * `cut()` resets every connection through it (no close frame either way), and which can
 * drop the next connection at once (`dropNext`).
 */
async function network(gatePort) {
  const pairs = new Set();
  const net_ = { dropNext: false, port: 0 };
  const server = net.createServer((client) => {
    if (net_.dropNext) {
      net_.dropNext = false;
      return client.resetAndDestroy();
    }
    const gateSide = net.connect(gatePort, "127.0.0.1");
    const pair = [client, gateSide];
    pairs.add(pair);
    client.pipe(gateSide);
    gateSide.pipe(client);
    const end = () => { pairs.delete(pair); client.destroy(); gateSide.destroy(); };
    client.on("error", end).on("close", end);
    gateSide.on("error", end).on("close", end);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  net_.port = server.address().port;
  net_.cut = () => {
    for (const [client, gateSide] of pairs) {
      client.resetAndDestroy();
      gateSide.resetAndDestroy();
    }
  };
  net_.close = () => server.close();
  return net_;
}

before(async () => {
  upstream = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (offered) => [...offered][0] ?? false });
  upstream.on("connection", (socket, request) => {
    const saw = { url: request.url, protocol: request.headers["sec-websocket-protocol"] ?? null,
      subject: request.headers["x-auth-subject"] };
    seenByUpstream.push(saw);
    if (request.url.startsWith("/ws/stomp") || request.url.startsWith("/ws/guarded")) return stomp(socket);
    if (request.url.startsWith("/ws/numbers")) return numbers(socket);
    socket.send(JSON.stringify(saw));
    socket.on("message", (data, binary) => socket.send(data, { binary }));
  });
  await new Promise((r) => upstream.once("listening", r));
  const dir = mkdtempSync(path.join(os.tmpdir(), "ticketgate-js-"));
  writeFileSync(path.join(dir, "idp.secret"), secret);
  writeFileSync(path.join(dir, "ticket.secret"), randomBytes(32).toString("hex"));
  writeFileSync(path.join(dir, "admin.token"), adminToken);
  const [port, admin] = [await freePort(), await freePort()];
  base = `127.0.0.1:${port}`;
  adminUrl = `http://127.0.0.1:${admin}`;
  writeFileSync(path.join(dir, "ticketgate.yaml"), `listen: "${base}"
upstream: "127.0.0.1:${upstream.address().port}"
admin:
  listen: "127.0.0.1:${admin}"
  token_file: admin.token
shutdown_grace_seconds: 1
jwt:
  leeway_seconds: 0
  issuers:
    - issuer: "${ISSUER}"
      audiences: ["${AUDIENCE}"]
      algorithms: [HS256]
      secret_file: idp.secret
routes:
  - prefix: /ws/guarded
    auth: ticket
    stomp:
      subscribe: ["/topic/room"]
      send: ["/topic/room"]
  - prefix: /ws
    auth: ticket
tickets:
  secret_file: ticket.secret
forward:
  subject_header: X-Auth-Subject
websocket:
  refresh_path: /ws-refresh
  resume_window_seconds: 10
`);
  gate = spawn(binary, ["run", "--config", path.join(dir, "ticketgate.yaml")]);
  gate.stdout.on("data", (d) => (output += d));
  gate.stderr.on("data", (d) => (output += d));
  await until("ticketgate to serve", async () => (await fetch(`${adminUrl}/readyz`).catch(() => null))?.ok);
});

after(() => {
  gate?.kill("SIGINT");
  upstream?.close();
  for (const credential of credentials) {
    assert.ok(!output.includes(credential), "a credential reached ticketgate's output");
  }
});

/** A stompjs client through the adapter that subscribes to /topic/room at every CONNECT. */
function roomClient(options) {
  const state = { received: [], connects: 0 };
  const client = withTicketgate(new Client({ reconnectDelay: 50, heartbeatIncoming: 0, heartbeatOutgoing: 0 }), options);
  client.onConnect = () => {
    state.connects += 1;
    client.subscribe("/topic/room", (message) => state.received.push(message.body));
  };
  return { client, state };
}

/** Opens `path` through the helper and resolves with the socket and its first message. */
function open(pathAndQuery, options, host = base) {
  const events = { open: 0, close: [], reconnect: 0, revoked: 0, messages: [] };
  const socket = connect(`ws://${host}${pathAndQuery}`, options);
  for (const type of ["open", "reconnect", "revoked"]) socket.addEventListener(type, () => (events[type] += 1));
  socket.addEventListener("close", (e) => events.close.push(e.code));
  socket.addEventListener("message", (e) => events.messages.push(String(e.data)));
  return { socket, events };
}

test("the ticket travels in Sec-WebSocket-Protocol, never to the upstream", async () => {
  const token = login("alice", 600);
  const { socket, events } = open("/ws/echo?room=1", { getAccessToken: () => token, ticketIn: "protocol" });
  await until("the report", () => events.messages.length === 1);
  assert.deepEqual(JSON.parse(events.messages[0]), { url: "/ws/echo?room=1", protocol: null, subject: "alice" });
  assert.equal(socket.protocol, "");
  socket.send("hello");
  await until("the echo", () => events.messages.includes("hello"));
  socket.close();

  const withApp = open("/ws/echo", { getAccessToken: () => token, ticketIn: "protocol", protocols: ["chat.v2", "chat.v1"] });
  await until("the report", () => withApp.events.messages.length === 1);
  assert.equal(JSON.parse(withApp.events.messages[0]).protocol, "chat.v2, chat.v1");
  assert.equal(withApp.socket.protocol, "chat.v2");
  withApp.socket.close();
});

test("a socket whose login keeps being refreshed outlives every expiry: no close, no reconnect", async () => {
  let token = login("alice", 2);
  const steps = [];
  const { socket, events } = open("/ws/echo", {
    getAccessToken: () => token,
    refresh: async () => { token = login("alice", 2); },
    onStep: (step) => steps.push(step),
  });
  await until("the socket", () => events.open === 1);
  // Three logins of 2 s each: the socket's first expiry and two more pass.
  await until("three extensions", () => steps.filter((s) => s === "session:extended").length === 3);
  socket.send("still the first socket");
  await until("the echo", () => events.messages.includes("still the first socket"));
  assert.equal(events.open, 1);
  assert.equal(events.reconnect, 0);
  assert.deepEqual(events.close, []);
  assert.ok(!steps.includes("session:refused"));
  socket.close();
});

test("a login that expires under an open socket is refreshed: one reconnect event, no close", async () => {
  let token = login("alice", 2);
  let refreshes = 0;
  const { socket, events } = open("/ws/echo", {
    getAccessToken: () => token,
    refresh: async () => { refreshes += 1; token = login("alice", 600); },
    ticketIn: "protocol",
    keepSessions: false,
  });
  await until("the first socket", () => events.open === 1);
  await until("the reconnection after 4401", () => events.open === 2);
  assert.equal(events.reconnect, 1);
  assert.deepEqual(events.close, []);
  assert.equal(refreshes, 1);
  socket.send("after the refresh");
  await until("the echo", () => events.messages.includes("after the refresh"));
  socket.close();
});

test("a revoked login closes with 4403 and the helper stops", async () => {
  const token = login("mallory", 600);
  let ticketRequests = 0;
  const { events } = open("/ws/echo", {
    getAccessToken: () => token,
    onStep: (step) => { if (step === "ticket:request") ticketRequests += 1; },
  });
  await until("the socket", () => events.open === 1);
  const answer = await fetch(`${adminUrl}/revoke`, {
    method: "POST",
    headers: { Authorization: `Bearer ${adminToken}` },
    body: JSON.stringify({ subject: "mallory" }),
  });
  assert.equal(answer.status, 200);
  await until("the revocation", () => events.revoked === 1);
  assert.deepEqual(events.close, [4403]);
  // A reconnection would start within its first backoff (at most 500 ms).
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(ticketRequests, 1);
});

for (const ticketIn of ["url", "protocol"]) {
  test(`the STOMP adapter gets a fresh ticket for every connection (ticket in the ${ticketIn})`, async () => {
    const token = login("alice", 600);
    let tickets = 0;
    const before = seenByUpstream.length;
    const client = withTicketgate(new Client({ reconnectDelay: 50, heartbeatIncoming: 0, heartbeatOutgoing: 0 }), {
      url: `ws://${base}/ws/stomp`,
      getAccessToken: () => token,
      ticketIn,
      onStep: (step) => { if (step === "ticket:received") tickets += 1; },
    });
    const received = [];
    let connects = 0;
    client.onConnect = () => {
      connects += 1;
      client.subscribe("/topic/room", (message) => received.push(message.body));
      client.publish({ destination: "/topic/room", body: `hello ${connects}` });
    };
    client.activate();
    await until("the first message", () => received.includes("hello 1"));
    client.forceDisconnect();
    await until("the message after reconnecting", () => received.includes("hello 2"));
    await client.deactivate();
    assert.equal(tickets, 2);
    const seen = seenByUpstream.slice(before);
    assert.equal(seen.length, 2);
    for (const saw of seen) {
      assert.equal(saw.url, "/ws/stomp");
      assert.deepEqual(saw.protocol.split(",").map((p) => p.trim()), ["v12.stomp", "v11.stomp", "v10.stomp"]);
      assert.equal(saw.subject, "alice");
    }
  });
}

test("the STOMP adapter keeps its session through login expiries: one CONNECT, nothing lost", async () => {
  let token = login("alice", 2);
  let extended = 0;
  const { client, state } = roomClient({
    url: `ws://${base}/ws/stomp`,
    getAccessToken: () => token,
    refresh: async () => { token = login("alice", 2); },
    onStep: (step) => { if (step === "session:extended") extended += 1; },
  });
  const { received } = state;
  client.activate();
  await until("the connection", () => state.connects === 1);
  let sent = 0;
  while (extended < 3) {
    client.publish({ destination: "/topic/room", body: `message ${sent}` });
    sent += 1;
    await new Promise((r) => setTimeout(r, 100));
  }
  await until("every message", () => received.length === sent);
  assert.deepEqual(received, Array.from({ length: sent }, (_, i) => `message ${i}`));
  assert.equal(state.connects, 1, "no reconnect across three login expiries");
  await client.deactivate();
});

/** Opens `/ws/numbers` through `through` (the network stand-in) with the helper; its ticket
 * and refresh requests go to ticketgate directly. */
function openNumbers(through, query, steps) {
  const token = login("alice", 600);
  return open(`/ws/numbers?${query}`, {
    getAccessToken: () => token,
    onStep: (step) => steps.push(step),
    ticketUrl: `http://${base}/ws-ticket`,
    refreshUrl: `http://${base}/ws-refresh`,
  }, `127.0.0.1:${through.port}`);
}

function assertNumbered(messages) {
  messages.forEach((message, i) => assert.equal(message, String(i), `message ${i}`));
}

test("a connection cut under the helper resumes: every message once, in order, one upstream connection", async () => {
  const through = await network(Number(base.split(":")[1]));
  const steps = [];
  const { socket, events } = openNumbers(through, "cut=1", steps);
  let resumes = 0;
  socket.addEventListener("resume", () => (resumes += 1));
  await until("the first messages", () => events.messages.length >= 20);
  through.cut();
  await until("the resume", () => resumes === 1);
  await until("the next token", () => steps.includes("resume:token"));
  await until("more messages", () => events.messages.length >= 60);
  through.cut();
  await until("the second resume", () => resumes === 2);
  await until("more messages", () => events.messages.length >= 100);
  assert.equal(events.open, 1);
  assert.equal(events.reconnect, 0);
  assert.deepEqual(events.close, []);
  assertNumbered(events.messages);
  assert.equal(seenByUpstream.filter((saw) => saw.url === "/ws/numbers?cut=1").length, 1);
  socket.close();
  through.close();
});

test("a refused resume reconnects afresh: one reconnect event, no close", async () => {
  const through = await network(Number(base.split(":")[1]));
  const steps = [];
  const { socket, events } = openNumbers(through, "refused=1", steps);
  await until("the first messages", () => events.messages.length >= 10);
  through.dropNext = true;
  through.cut();
  await until("the fresh socket", () => events.open === 2);
  assert.equal(events.reconnect, 1);
  assert.deepEqual(events.close, []);
  assert.ok(steps.includes("resume:refused"));
  assert.equal(seenByUpstream.filter((saw) => saw.url === "/ws/numbers?refused=1").length, 2);
  socket.close();
  through.close();
});

test("the STOMP adapter keeps its subscription across cut connections: one CONNECT, nothing missed", async () => {
  const through = await network(Number(base.split(":")[1]));
  const token = login("alice", 600);
  const before = seenByUpstream.length;
  const steps = [];
  const { client, state } = roomClient({
    url: `ws://127.0.0.1:${through.port}/ws/stomp`,
    ticketUrl: `http://${base}/ws-ticket`,
    refreshUrl: `http://${base}/ws-refresh`,
    getAccessToken: () => token,
    onStep: (step) => steps.push(step),
  });
  const { received } = state;
  client.activate();
  await until("the connection", () => state.connects === 1);
  for (let i = 0; i < 30; i++) {
    if (i % 10 === 0 && i > 0) {
      through.cut();
      await until("the resume and its next token", () => steps.filter((s) => s === "resume:token").length === i / 10);
    }
    client.publish({ destination: "/topic/room", body: `message ${i}` });
    await until(`message ${i}`, () => received.length === i + 1);
  }
  assert.deepEqual(received, Array.from({ length: 30 }, (_, i) => `message ${i}`));
  assert.equal(state.connects, 1, "no CONNECT again: stompjs never saw the cuts");
  assert.equal(seenByUpstream.length - before, 1, "one upstream connection");
  await client.deactivate();
  through.close();
});

test("the STOMP adapter stops at a refused destination: onRefused, no reconnect", async () => {
  const token = login("alice", 600);
  let tickets = 0;
  const refused = [];
  const errors = [];
  const { client, state } = roomClient({
    url: `ws://${base}/ws/guarded`,
    getAccessToken: () => token,
    onRefused: (reason) => refused.push(reason),
    onStep: (step) => { if (step === "ticket:received") tickets += 1; },
  });
  client.onStompError = (frame) => errors.push(frame.headers.message);
  client.onConnect = () => {
    state.connects += 1;
    client.subscribe("/topic/room", (message) => state.received.push(message.body));
    client.publish({ destination: "/topic/room", body: "allowed" });
  };
  client.activate();
  await until("the allowed message", () => state.received.includes("allowed"));
  client.subscribe("/topic/secret", () => state.received.push("leaked"));
  await until("the refusal", () => refused.length === 1);
  assert.deepEqual(refused, ["forbidden destination"]);
  assert.deepEqual(errors, ["forbidden destination"]);
  // A reconnection would start within its 50 ms delay.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(tickets, 1);
  assert.equal(client.active, false);
});

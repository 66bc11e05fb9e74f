// The helper's pacing under a fake clock (node:test's mock timers) and a stub ticket
// endpoint: it never asks again before ticketgate's Retry-After, and otherwise backs off with
// full jitter under a cap.

import { test, mock } from "node:test";
import assert from "node:assert/strict";

import { backoffMs, connect } from "../ticketgate.js";

test("full jitter: anywhere from 0 to the capped exponential", () => {
  assert.equal(backoffMs(1, 10000, () => 0), 0);
  assert.equal(backoffMs(1, 10000, () => 0.999999) < 500, true);
  assert.equal(Math.round(backoffMs(3, 10000, () => 0.5)), 1000);
  assert.equal(Math.round(backoffMs(30, 10000, () => 1)), 10000, "capped");
});

test("a refused ticket request is asked again no sooner than its Retry-After", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  const asked = [];
  let now = 0;
  globalThis.fetch = async () => {
    asked.push(now);
    return new Response(JSON.stringify({ error: "busy", error_description: "busy, retry later", retry_after: 7 }), {
      status: 429,
      headers: { "retry-after": "7", "content-type": "application/json" },
    });
  };
  globalThis.WebSocket = class { constructor() { throw new Error("no socket without a ticket"); } };
  const socket = connect("ws://gate.test/ws", { getAccessToken: () => "token", maxBackoffMs: 1000 });
  const errors = [];
  socket.addEventListener("error", (e) => errors.push(e.error));
  const advance = async (ms) => {
    for (let i = 0; i < ms / 100; i++) {
      now += 100;
      mock.timers.tick(100);
      await new Promise((r) => setImmediate(r));
    }
  };
  await advance(100);
  assert.equal(asked.length, 1);
  assert.equal(errors[0].status, 429);
  assert.equal(errors[0].retryAfter, 7);
  await advance(6800);
  assert.equal(asked.length, 1, "not before the Retry-After, whatever the backoff says");
  await advance(400);
  assert.equal(asked.length, 2);
  assert.ok(asked[1] - asked[0] >= 7000, `${asked}`);
  socket.close();
  mock.timers.reset();
});

test("a ticket paced by the upgrade budget is used no sooner than connect_after_ms", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  let now = 0;
  const opened = [];
  globalThis.fetch = async () => new Response(
    JSON.stringify({ ticket: "tg2.x", expires_in: 31, connect_after_ms: 1500 }),
    { status: 200, headers: { "content-type": "application/json" } },
  );
  globalThis.WebSocket = class extends EventTarget {
    constructor(url) { super(); opened.push({ url, at: now }); }
    close() {}
  };
  const socket = connect("ws://gate.test/ws", { getAccessToken: () => "token" });
  for (let i = 0; i < 20; i++) {
    now += 100;
    mock.timers.tick(100);
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(opened.length, 1);
  assert.ok(opened[0].at >= 1500, `opened at ${opened[0].at} ms`);
  socket.close();
  mock.timers.reset();
});

for (const code of [1001, 1012, 1013]) {
  test(`after a ${code} close the helper reconnects with a fresh ticket after a full-jitter delay`, async () => {
    mock.timers.enable({ apis: ["setTimeout"] });
    let now = 0;
    const opened = [];
    let tickets = 0;
    globalThis.fetch = async () => {
      tickets += 1;
      return new Response(JSON.stringify({ ticket: `tg2.t${tickets}`, expires_in: 30 }), {
        status: 200, headers: { "content-type": "application/json" },
      });
    };
    globalThis.WebSocket = class extends EventTarget {
      constructor(url) {
        super();
        this.readyState = 0;
        opened.push({ url, at: now, socket: this });
        setTimeout(() => { this.readyState = 1; this.dispatchEvent(new Event("open")); }, 0);
      }
      close() {}
    };
    // The jitter drawn is 0.6 of the first backoff's 500 ms.
    const random = mock.method(Math, "random", () => 0.6);
    const socket = connect("ws://gate.test/ws", { getAccessToken: () => "token", keepSessions: false });
    const advance = async (ms) => {
      for (let i = 0; i < ms / 10; i++) {
        now += 10;
        mock.timers.tick(10);
        await new Promise((r) => setImmediate(r));
      }
    };
    await advance(50);
    assert.equal(opened.length, 1);
    const closedAt = now;
    const first = opened[0].socket;
    first.readyState = 3;
    first.dispatchEvent(Object.assign(new Event("close"), { code, reason: "going away" }));
    await advance(250);
    assert.equal(opened.length, 1, "not at once: the jitter spreads the reconnects");
    await advance(200);
    assert.equal(opened.length, 2, "reconnected within the first backoff");
    assert.ok(opened[1].at - closedAt >= 300 && opened[1].at - closedAt < 500, `${opened[1].at - closedAt} ms`);
    assert.match(opened[1].url, /ticket=tg2\.t2/, "with a fresh ticket");
    socket.close();
    random.mock.restore();
    mock.timers.reset();
  });
}

test("the STOMP adapter waits Retry-After before its next attempt, and connect_after_ms before its socket", async () => {
  const { withTicketgate } = await import("../stomp.js");
  mock.timers.enable({ apis: ["setTimeout"] });
  let now = 0;
  const answers = [
    [429, { error: "busy", error_description: "busy, retry later", retry_after: 6 }, { "retry-after": "6" }],
    [200, { ticket: "tg2.x", expires_in: 31, connect_after_ms: 800 }, {}],
  ];
  const asked = [];
  globalThis.fetch = async () => {
    asked.push(now);
    const [status, body, headers] = answers[Math.min(asked.length - 1, 1)];
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
  };
  const client = { stompVersions: { protocolVersions: () => ["v12.stomp"] }, deactivate: async () => {} };
  withTicketgate(client, { url: "ws://gate.test/ws", getAccessToken: () => "token" });
  const tick = async (ms) => {
    for (let i = 0; i < ms / 100; i++) {
      now += 100;
      mock.timers.tick(100);
      await new Promise((r) => setImmediate(r));
    }
  };
  let first = client.beforeConnect().then(() => "connected", (e) => e.status);
  await tick(5900);
  let settled = await Promise.race([first, Promise.resolve("pending")]);
  assert.equal(settled, "pending", "the refused attempt holds its Retry-After");
  await tick(200);
  assert.equal(await first, 429);
  const second = client.beforeConnect().then(() => now);
  await tick(700);
  assert.equal(await Promise.race([second, Promise.resolve("pending")]), "pending", "before connect_after_ms");
  await tick(200);
  assert.ok((await second) - asked[1] >= 800);
  mock.timers.reset();
});

// End-to-end: `ticketgate demo` in Debian's headless Chromium, driven by playwright-core.
// A person's flow: log in, get a ticket, open the socket, see the echo; a socket without a
// ticket is refused; an expired login is refreshed before the next ticket. Every assertion is
// made twice: on what the page shows, and on what really went over the wire.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { freePort } from "./ports.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const binary = process.env.TICKETGATE_BIN || path.join(targetDir, "debug", "ticketgate");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const DEADLINE_MS = 15_000;

let demo;
let output = "";
let browser;
let base;
const secretsSeen = new Set();

async function waitUntilServing(url) {
  const start = Date.now();
  for (;;) {
    try {
      if ((await fetch(url)).ok) return;
    } catch (_) { /* not listening yet */ }
    if (Date.now() - start > DEADLINE_MS) throw new Error(`timed out waiting for ${url}\n${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  const port = await freePort();
  const admin = await freePort();
  base = `http://127.0.0.1:${port}`;
  demo = spawn(binary, ["demo", "--listen", `127.0.0.1:${port}`, "--admin-listen", `127.0.0.1:${admin}`]);
  demo.stdout.on("data", (d) => (output += d));
  demo.stderr.on("data", (d) => (output += d));
  await waitUntilServing(`${base}/`);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--no-first-run", "--disable-sync", "--disable-quic"],
  });
});

after(async () => {
  await browser?.close();
  demo?.kill("SIGINT");
  // Nothing the page handled — login tokens, tickets — may appear in anything ticketgate wrote.
  const files = /files\s+(\S+)/.exec(output)?.[1];
  const accessLog = files ? readFileSync(path.join(files, "access.log"), "utf8") : "";
  assert.ok(accessLog.includes("ticket=REDACTED"), "the access log shows redacted tickets");
  for (const secret of secretsSeen) {
    assert.ok(!output.includes(secret), "a credential reached ticketgate's output");
    assert.ok(!accessLog.includes(secret), "a credential reached the access log");
  }
});

/** The status line of a bare WebSocket handshake sent over a raw socket. */
function upgradeStatus(target) {
  const { port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), "127.0.0.1", () => {
      socket.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    });
    socket.once("data", (data) => {
      socket.destroy();
      resolve(Number(String(data).split(" ")[1]));
    });
    socket.once("error", reject);
    socket.setTimeout(DEADLINE_MS, () => reject(new Error("no answer to the handshake")));
  });
}

/** A page on the demo that records every WebSocket URL and ticket it used. */
async function openDemo() {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const sockets = [];
  page.on("websocket", (ws) => {
    sockets.push(ws.url());
    const ticket = new URL(ws.url()).searchParams.get("ticket");
    if (ticket) secretsSeen.add(ticket);
  });
  await page.goto(`${base}/`);
  return { page, sockets };
}

async function logInAndConnect(page) {
  await page.click("#login");
  await page.waitForFunction(() => window.demo.login?.access_token);
  secretsSeen.add(await page.evaluate(() => window.demo.login.access_token));
  await page.click("#connect");
  await page.waitForFunction(() => window.demo.upstreamSaw, null, { timeout: DEADLINE_MS });
}

async function echo(page, text) {
  await page.fill("#message", text);
  await page.click("#send");
  await page.waitForFunction((t) => window.demo.echoes.includes(t), text, { timeout: DEADLINE_MS });
}

test("logs in, gets a ticket, opens the WebSocket through ticketgate and receives the echo", async () => {
  const { page, sockets } = await openDemo();
  await logInAndConnect(page);
  await echo(page, "ping from chromium");

  // In the page.
  assert.match(await page.textContent("#status"), /Connected/);
  assert.match(await page.textContent("#echoes"), /echo: ping from chromium/);
  assert.match(await page.textContent("#steps"), /Got a ticket/);
  // On the wire and at the upstream.
  assert.equal(sockets.length, 1);
  assert.match(sockets[0], /\/ws\/chat\?room=demo&ticket=tg2\./);
  const saw = await page.evaluate(() => window.demo.upstreamSaw);
  assert.deepEqual(saw, { uri: "/ws/chat?room=demo", subject: "alice", email: "alice@demo.test" });
  // Once the socket closes, the live access log shows its line with the ticket redacted.
  await page.click("#disconnect");
  await page.waitForFunction(() => document.querySelector("#log").textContent.includes("ticket=REDACTED"), null,
    { timeout: DEADLINE_MS });

  const shot = await page.screenshot({ fullPage: true });
  mkdirSync(targetDir, { recursive: true });
  writeFileSync(path.join(targetDir, "demo-screenshot.png"), shot);
  const blankPage = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const blank = await blankPage.screenshot({ fullPage: true });
  assert.ok(shot.length > 4 * blank.length, `screenshot looks blank (${shot.length} vs ${blank.length} bytes)`);
  await blankPage.close();
  await page.close();
});

test("cutting the connection resumes the socket: the upstream never sees a disconnect", async () => {
  const { page, sockets } = await openDemo();
  await logInAndConnect(page);
  await echo(page, "before the cut");
  await page.waitForFunction(() => window.demo.upstreamSockets, null, { timeout: DEADLINE_MS });
  const before = await page.evaluate(() => window.demo.upstreamSockets);
  for (let cut = 1; cut <= 2; cut++) {
    await page.click("#cut");
    await page.waitForFunction((n) => window.demo.resumes === n, cut, { timeout: DEADLINE_MS });
    await echo(page, `after cut ${cut}`);
  }
  // In the page: no close, no reconnect, the resume shown.
  const steps = await page.textContent("#steps");
  assert.match(steps, /resuming with ticketgate\.resume/);
  assert.doesNotMatch(steps, /Socket closed/);
  // At the upstream: the same one connection, never ended.
  const after = await page.evaluate(async () => (await fetch("/demo/network")).json());
  assert.equal(after.upstream_sockets_accepted, before.upstream_sockets_accepted);
  assert.equal(after.upstream_sockets_ended, before.upstream_sockets_ended);
  // On the wire: the ticket once, then two resumes without one.
  assert.equal(sockets.length, 3);
  assert.match(sockets[0], /ticket=tg2\./);
  assert.ok(sockets.slice(1).every((url) => !url.includes("ticket=")));
  await page.close();
});

test("a socket opened without a ticket is refused", async () => {
  const { page, sockets } = await openDemo();
  await page.click("#no-ticket");
  await page.waitForFunction(() => window.demo.noTicket, null, { timeout: DEADLINE_MS });
  assert.match(await page.evaluate(() => window.demo.noTicket), /^refused/);
  assert.match(await page.textContent("#steps"), /without a ticket was refused/);
  assert.equal(sockets.length, 1);
  assert.ok(!sockets[0].includes("ticket="));
  // The refusal is ticketgate's 401, seen from outside the browser too.
  assert.equal(await upgradeStatus("/ws/chat?room=demo"), 401);
  await page.close();
});

test("after the login expires the helper refreshes it and reconnects with a fresh ticket", async () => {
  const { page, sockets } = await openDemo();
  await logInAndConnect(page);
  await echo(page, "before expiry");

  await page.click("#expire");
  await page.waitForFunction(() => window.demo.steps.some((s) => s.includes("expired one")));
  await page.evaluate(() => { window.demo.upstreamSaw = null; });
  await page.click("#reconnect");
  await page.waitForFunction(() => window.demo.upstreamSaw && window.demo.refreshes === 1, null, { timeout: DEADLINE_MS });
  secretsSeen.add(await page.evaluate(() => window.demo.login.access_token));
  await echo(page, "after refresh");

  assert.match(await page.textContent("#steps"), /401 token expired → refreshing the login/);
  assert.match(await page.textContent("#status"), /Connected/);
  assert.equal(sockets.length, 2);
  const tickets = sockets.map((url) => new URL(url).searchParams.get("ticket"));
  assert.notEqual(tickets[0], tickets[1], "every connection uses a fresh ticket");
  await page.close();
});

test("the helper can carry the ticket in Sec-WebSocket-Protocol, and Chromium accepts the answer", async () => {
  const { page, sockets } = await openDemo();
  await page.click("#login");
  await page.waitForFunction(() => window.demo.login?.access_token);
  secretsSeen.add(await page.evaluate(() => window.demo.login.access_token));
  const first = await page.evaluate(async () => {
    const { connect } = await import("/ticketgate.js");
    return new Promise((resolve, reject) => {
      const socket = connect(`ws://${location.host}/ws/chat?room=protocol`, {
        getAccessToken: () => window.demo.login.access_token,
        ticketIn: "protocol",
        reconnect: false,
      });
      socket.addEventListener("message", (e) => {
        resolve({ greeting: JSON.parse(e.data), protocol: socket.protocol });
        socket.close();
      });
      socket.addEventListener("error", (e) => reject(new Error(String(e.error))));
      socket.addEventListener("close", (e) => reject(new Error(`closed ${e.code}`)));
    });
  });
  // The browser opened it (a handshake answer naming no offered protocol would have failed),
  // with no ticket in the URL, and the upstream saw neither ticket nor token.
  assert.equal(first.protocol, "");
  assert.deepEqual(first.greeting.hello, { uri: "/ws/chat?room=protocol", subject: "alice", email: "alice@demo.test" });
  assert.equal(sockets.length, 1);
  assert.ok(!sockets[0].includes("ticket="), sockets[0]);

  // The same with the browser's own WebSocket: the answer names the marker.
  const raw = await page.evaluate(async () => {
    const answer = await fetch("/ws-ticket", {
      method: "POST",
      headers: { Authorization: `Bearer ${window.demo.login.access_token}` },
    }).then((r) => r.json());
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${location.host}/ws/chat?room=raw`, ["ticketgate", `ticketgate.ticket.${answer.ticket}`]);
      ws.onmessage = (e) => { resolve({ protocol: ws.protocol, greeting: JSON.parse(e.data), ticket: answer.ticket }); ws.close(); };
      ws.onclose = (e) => reject(new Error(`closed ${e.code}`));
    });
  });
  secretsSeen.add(raw.ticket);
  assert.equal(raw.protocol, "ticketgate");
  assert.equal(raw.greeting.hello.uri, "/ws/chat?room=raw");
  await page.close();
});

test("with session refresh a short login's socket is extended, never closed", async () => {
  const { page, sockets } = await openDemo();
  await page.check("#short");
  await logInAndConnect(page);
  // Two 6 s logins pass under the one socket.
  await page.waitForFunction(() => window.demo.extensions >= 2, null, { timeout: 3 * DEADLINE_MS });
  assert.equal(await page.evaluate(() => window.demo.renewals || 0), 0);
  assert.equal(await page.evaluate(() => window.demo.steps.filter((s) => s.startsWith("Socket open")).length), 1);
  assert.match(await page.textContent("#steps"), /extended without reconnecting/);
  secretsSeen.add(await page.evaluate(() => window.demo.login.access_token));
  assert.equal(sockets.length, 1);
  await page.close();
});

test("a reconnect storm is paced by admission: refused helpers wait their Retry-After, all 30 open", async () => {
  const { page, sockets } = await openDemo();
  const answers = [];
  page.on("response", (r) => {
    if (r.url().endsWith("/ws-ticket")) answers.push({ status: r.status(), retryAfter: r.headers()["retry-after"] });
  });
  await page.click("#login");
  await page.waitForFunction(() => window.demo.login?.access_token);
  secretsSeen.add(await page.evaluate(() => window.demo.login.access_token));
  await page.click("#storm");
  // 30 tickets at 10 a second (one second's burst), upgrades paced at 10 a second: a few seconds.
  await page.waitForFunction(() => window.demo.storm.admitted === 30, null, { timeout: 3 * DEADLINE_MS });
  const storm = await page.evaluate(() => ({ deferred: window.demo.storm.deferred, early: window.demo.storm.early }));
  assert.ok(storm.deferred > 0, "some helpers were deferred");
  assert.equal(storm.early, 0, "no helper asked again before its Retry-After");
  // Over the wire: 429 busy with a Retry-After in [1, 2] (the demo's retry_after_seconds: 1).
  const refused = answers.filter((a) => a.status === 429);
  assert.ok(refused.length > 0, `refusals seen: ${JSON.stringify(answers)}`);
  for (const a of refused) assert.ok(["1", "2"].includes(a.retryAfter), JSON.stringify(a));
  // Chromium opens one socket to a host at a time, so an upgrade may come late for its slot
  // and be refused (503) and the helper buys another ticket: each ticket is still tried once.
  const issued = answers.filter((a) => a.status === 200).length;
  assert.ok(issued >= 30, `${issued} tickets`);
  assert.equal(sockets.length, issued, "every ticket issued was tried by exactly one socket");
  assert.equal(new Set(sockets).size, sockets.length);
  await page.waitForFunction(() => window.demo.figures?.deferred > 0, null, { timeout: DEADLINE_MS });
  assert.match(await page.textContent("#storm-figures"), /30 of 30 sockets admitted/);
  await page.close();
});

test("the page shows a login closing its socket, a revocation, the protocol header and live figures", async () => {
  const { page, sockets } = await openDemo();
  await page.check("#short");
  await page.uncheck("#keep");
  await page.check("#in-protocol");
  await logInAndConnect(page);
  secretsSeen.add(await page.evaluate(() => window.demo.login.access_token));
  await page.waitForFunction(() => /Login valid for \d+ s more/.test(document.querySelector("#countdown").textContent),
    null, { timeout: DEADLINE_MS });
  // The 6 s login ends: ticketgate closes the socket with 4401, the helper renews it.
  await page.waitForFunction(() => window.demo.renewals === 1 && window.demo.refreshes === 1, null,
    { timeout: DEADLINE_MS });
  await page.waitForFunction(() => window.demo.steps.filter((s) => s.startsWith("Socket open")).length === 2, null,
    { timeout: DEADLINE_MS });
  assert.match(await page.textContent("#steps"), /login expired \(4401\)/);
  secretsSeen.add(await page.evaluate(() => window.demo.login.access_token));
  await page.click("#revoke");
  await page.waitForFunction(() => window.demo.revoked, null, { timeout: DEADLINE_MS });
  assert.match(await page.textContent("#steps"), /revoked \(4403\)/);
  await page.waitForFunction(() => window.demo.figures?.expired >= 1 && window.demo.figures?.revoked >= 1, null,
    { timeout: DEADLINE_MS });
  assert.match(await page.textContent("#figures"), /closed by revocation/);
  assert.equal(sockets.length, 2);
  for (const url of sockets) assert.ok(!url.includes("ticket="), url);
  await page.close();
});

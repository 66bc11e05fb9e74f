// `ticketgate demo --tls` in Debian's headless Chromium: the page and its requests arrive over
// h2 (ALPN), the WebSocket over a separate HTTP/1.1 connection (ticketgate does not offer
// RFC 8441), and the whole ticket flow works over https:// and wss://. Chromium trusts the
// demo's self-signed certificate by its key only (--ignore-certificate-errors-spki-list), so
// a different certificate would still fail the handshake.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
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
let files;
const secretsSeen = new Set();

async function until(what, check) {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - start > DEADLINE_MS) throw new Error(`timed out waiting for ${what}\n${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's flag wants it. */
function spkiHash(pem) {
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

function accessLog() {
  return readFileSync(path.join(files, "access.log"), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

before(async () => {
  const port = await freePort();
  const admin = await freePort();
  base = `https://127.0.0.1:${port}`;
  demo = spawn(binary, ["demo", "--tls", "--listen", `127.0.0.1:${port}`, "--admin-listen", `127.0.0.1:${admin}`]);
  demo.stdout.on("data", (d) => (output += d));
  demo.stderr.on("data", (d) => (output += d));
  files = await until("the demo's files", () => /files\s+(\S+)/.exec(output)?.[1]);
  await until("the admin listener", async () => {
    try { return (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok; } catch (_) { return false; }
  });
  const certificate = readFileSync(path.join(files, "tls.crt"), "utf8");
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--no-first-run", "--disable-sync", "--disable-quic", `--ignore-certificate-errors-spki-list=${spkiHash(certificate)}`],
  });
});

after(async () => {
  await browser?.close();
  demo?.kill("SIGINT");
  const log = readFileSync(path.join(files, "access.log"), "utf8");
  for (const secret of secretsSeen) {
    assert.ok(!output.includes(secret), "a credential reached ticketgate's output");
    assert.ok(!log.includes(secret), "a credential reached the access log");
  }
});

test("the page comes over h2 while its WebSocket opens over HTTP/1.1 with a ticket", async () => {
  const page = await browser.newPage();
  const sockets = [];
  page.on("websocket", (ws) => {
    sockets.push(ws.url());
    const ticket = new URL(ws.url()).searchParams.get("ticket");
    if (ticket) secretsSeen.add(ticket);
  });
  await page.goto(`${base}/`);
  assert.equal(await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol), "h2");

  await page.click("#login");
  await page.waitForFunction(() => window.demo.login?.access_token);
  secretsSeen.add(await page.evaluate(() => window.demo.login.access_token));
  await page.click("#connect");
  await page.waitForFunction(() => window.demo.upstreamSaw, null, { timeout: DEADLINE_MS });
  await page.fill("#message", "over wss");
  await page.click("#send");
  await page.waitForFunction(() => window.demo.echoes.includes("over wss"), null, { timeout: DEADLINE_MS });

  assert.equal(sockets.length, 1);
  assert.match(sockets[0], /^wss:\/\/127\.0\.0\.1:\d+\/ws\/chat\?room=demo&ticket=tg2\./);
  assert.deepEqual(await page.evaluate(() => window.demo.upstreamSaw),
    { uri: "/ws/chat?room=demo", subject: "alice", email: "alice@demo.test" });
  await page.click("#disconnect");

  // What ticketgate saw: the page and the ticket request as h2, the upgrade as HTTP/1.1.
  const lines = await until("the socket's access-log line", () => {
    const all = accessLog();
    return all.some((l) => l.route === "/ws" && l.status === 101) && all;
  });
  assert.ok(lines.some((l) => l.path === "/" && l.protocol === "HTTP/2"), JSON.stringify(lines));
  assert.ok(lines.some((l) => l.route === "/ws-ticket" && l.status === 200 && l.protocol === "HTTP/2"));
  assert.ok(lines.some((l) => l.route === "/ws" && l.status === 101 && l.protocol === "HTTP/1.1"));
  await page.close();
});

test("a certificate Chromium was not told to trust fails the handshake", async () => {
  // The same flag with another key's hash: Chromium must refuse the demo's certificate.
  const other = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
      `--ignore-certificate-errors-spki-list=${createHash("sha256").update("not this key").digest("base64")}`],
  });
  const page = await other.newPage();
  await assert.rejects(page.goto(`${base}/`), /ERR_CERT_AUTHORITY_INVALID|ERR_CERT/);
  await other.close();
});

// ticketgate.js — open WebSockets through ticketgate from a browser. Dependency-free ES module.
//
//   import { connect } from "ticketgate-client";
//   const socket = connect("wss://chat.example.com/ws/room?id=7", {
//     getAccessToken: () => auth.accessToken,        // your login JWT (sync or async)
//     refresh: () => auth.refresh(),                 // refresh the login; resolves when done
//     ticketIn: "protocol",                          // or "url" (the default)
//   });
//   socket.addEventListener("message", (e) => console.log(e.data));
//   socket.send("hello");
//
// Browsers cannot put an Authorization header on a WebSocket, so every (re)connection first
// POSTs the access token to the ticket endpoint and carries the single-use ticket it gets back
// in the socket URL or, with `ticketIn: "protocol"`, in `Sec-WebSocket-Protocol` (kept out of
// URLs that proxies and browsers log). A 401 whose description is "token expired" means the
// login is stale: the helper calls `refresh` once and asks again. A ticket works once, so
// every reconnection fetches a new one.
//
// With `websocket.refresh_path` on at ticketgate, the ticket's answer names the socket's
// session: shortly before the socket's login ends the helper refreshes the login (through
// `refresh`) and extends the socket with it (POST /ws-refresh), so the socket never closes
// for an expired login while the user stays logged in. Should a refresh be refused, the socket
// closes with code 4401 at its old expiry: the helper then refreshes the login and reconnects
// with a fresh ticket, and the application sees one "reconnect" event (no "close"). A revoked
// login closes with 4403: the helper stops and dispatches "revoked" after "close".
//
// With `websocket.resume_window_seconds` on as well, the ticket's answer carries a resume
// token. The helper counts the messages it delivers; when the connection breaks without a
// close frame (code 1006: a network change, a sleeping laptop) it reopens the socket with
// `ticketgate.resume.<token>.<count>` instead of a ticket, ticketgate joins it to the
// upstream connection it held, and the messages the client missed arrive, once and in order.
// The application sees one "resume" event, no "close". The helper then asks the refresh
// endpoint for the next token (a token works once). Only a refused resume reconnects afresh
// (one "reconnect" event).

/** Close codes ticketgate uses. */
export const LOGIN_EXPIRED = 4401;
export const REVOKED = 4403;

/** The protocol entries that carry `ticket` (before the application's own protocols). */
export function ticketProtocols(ticket, appProtocols = []) {
  const own = typeof appProtocols === "string" ? [appProtocols] : [...appProtocols];
  // `ticketgate` is what the handshake's answer names when the application offers nothing.
  return [...(own.length ? [] : ["ticketgate"]), `ticketgate.ticket.${ticket}`, ...own];
}

/** Thrown (and dispatched as an "error" event) when no ticket could be had. */
export class TicketError extends Error {
  constructor(status, error, description, retryAfter) {
    super(`ticket request failed: ${status} ${error || ""} ${description || ""}`.trim());
    this.status = status;
    this.error = error;
    this.description = description;
    /** Seconds before asking again, when ticketgate said (429 busy, 503 upstream_unavailable). */
    this.retryAfter = retryAfter;
  }
}

/** The wait before reconnection attempt `attempt` (1, 2, ...): full jitter over a capped
 * exponential backoff, so clients refused together do not come back together. */
export function backoffMs(attempt, maxBackoffMs = 10000, random = Math.random) {
  return random() * Math.min(maxBackoffMs, 250 * 2 ** Math.min(attempt, 16));
}

/** The ticket endpoint URL for a socket URL: same host, http(s) scheme, `ticketPath`. */
export function ticketUrlFor(socketUrl, ticketPath = "/ws-ticket") {
  const url = new URL(socketUrl, globalThis.location?.href);
  url.protocol = url.protocol === "wss:" ? "https:" : url.protocol === "ws:" ? "http:" : url.protocol;
  url.pathname = ticketPath;
  url.search = "";
  url.hash = "";
  return url.toString();
}

/**
 * Fetches one ticket. On a "token expired" 401 it calls `refresh()` once and retries.
 * Resolves to the ticket string; rejects with a TicketError.
 */
export async function fetchTicket(options) {
  return (await fetchTicketDetails(options)).ticket;
}

/**
 * As `fetchTicket`, resolving to `{ ticket, session, resume, token, connectAfterMs }`: the
 * socket's session handle when ticketgate has refresh on (else undefined), its first resume
 * token when resume is on (else undefined), the login the ticket was bought with, and how
 * long to wait before using it (admission's pacing; 0 otherwise).
 */
export async function fetchTicketDetails({ ticketUrl, getAccessToken, refresh, onStep = () => {} }) {
  for (let attempt = 0; ; attempt++) {
    const token = await getAccessToken();
    onStep("ticket:request", { attempt });
    const response = await fetch(ticketUrl, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
      credentials: "omit",
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok && typeof body.ticket === "string") {
      onStep("ticket:received", { expiresIn: body.expires_in, connectAfterMs: body.connect_after_ms ?? 0 });
      return {
        ticket: body.ticket, session: body.session, resume: body.resume, token, connectAfterMs: body.connect_after_ms ?? 0,
      };
    }
    const expired = response.status === 401 && body.error_description === "token expired";
    if (expired && attempt === 0 && refresh) {
      onStep("login:refresh", {});
      await refresh();
      continue;
    }
    const retryAfter = Number(response.headers.get("retry-after")) || body.retry_after;
    throw new TicketError(response.status, body.error, body.error_description, retryAfter);
  }
}

/** When a login JWT expires (its `exp`, Unix seconds), read without verifying; null if none. */
export function loginExpiry(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof payload.exp === "number" ? payload.exp : null;
  } catch {
    return null;
  }
}

/** `POST refreshUrl` for `session` with the current login: the response and its JSON body. */
export async function postRefresh({ session, refreshUrl, getAccessToken }) {
  const token = await getAccessToken();
  const response = await fetch(refreshUrl, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ session }),
    credentials: "omit",
  });
  return { response, body: await response.json().catch(() => ({})) };
}

/**
 * Keeps an open socket's login alive at ticketgate: shortly before `expiresAt` (Unix seconds)
 * it calls `refresh()` for a new login, then extends the socket's `session` with it
 * (`POST refreshUrl`), and again before each new expiry. A refusal stops it (the socket then
 * closes with 4401 at its old expiry); a 429 waits its Retry-After. Each 200 goes to
 * `onRefreshed(body)` (its `resume` is the socket's next resume token). Returns `stop()`.
 */
export function keepSession({
  session, expiresAt, refreshUrl, getAccessToken, refresh, onStep = () => {}, onRefreshed = () => {}, marginMs = 30000,
}) {
  let timer = null;
  let stopped = false;
  const schedule = (closesAtMs) => {
    const remaining = closesAtMs - Date.now();
    const margin = Math.max(500, Math.min(marginMs, remaining / 4));
    timer = setTimeout(extend, Math.max(0, remaining - margin));
  };
  async function extend() {
    if (stopped) return;
    try {
      if (refresh) {
        onStep("login:refresh", {});
        await refresh();
      }
      onStep("session:refresh", {});
      const { response, body } = await postRefresh({ session, refreshUrl, getAccessToken });
      if (stopped) return;
      if (response.ok) {
        onRefreshed(body);
        onStep("session:extended", { expiresAt: body.expires_at });
        return schedule(body.expires_at * 1000);
      }
      if (response.status === 429) {
        const seconds = Number(response.headers.get("retry-after")) || 5;
        timer = setTimeout(extend, seconds * 1000);
        return;
      }
      onStep("session:refused", { status: response.status, error: body.error });
    } catch (error) {
      onStep("session:refused", { error: String(error) });
    }
  }
  if (typeof expiresAt === "number") schedule(expiresAt * 1000);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** `url` with the ticket added as the `param` query parameter. */
export function withTicket(url, ticket, param = "ticket") {
  const full = new URL(url, globalThis.location?.href);
  full.searchParams.set(param, ticket);
  return full.toString();
}

/**
 * A WebSocket that survives a broken connection: wraps `first` (a WebSocket just opened with
 * a ticket) and, when its connection ends with 1006 (no close frame) while a resume token is
 * held, reopens it with `ticketgate.resume.<token>.<messages delivered>`, without a "close".
 * It counts the messages it delivers, queues what is sent while it resumes, dispatches
 * "resume" when resumed and asks the refresh endpoint for the next token. A refused resume
 * ends it with a "close" (code 1006) whose `resumeRefused` is true.
 *
 * It has the WebSocket interface (`readyState`, `protocol`, `binaryType`, `url`, `send`,
 * `close`, `on*` handlers and listeners), so stompjs can take it from a `webSocketFactory`.
 * Options: url (the socket's URL without a ticket), session, resume (the first token),
 * refreshUrl, getAccessToken, onStep.
 */
export class ResumingSocket extends EventTarget {
  constructor(first, options) {
    super();
    this.url = options.url;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._options = options;
    this._token = options.resume;
    this._received = 0;
    this._binaryType = first.binaryType;
    this._queue = [];
    this._resuming = false;
    this._closedByUser = false;
    this._protocol = "";
    this._attach(first, false);
  }

  get readyState() {
    return this._resuming ? WebSocket.OPEN : this._socket.readyState;
  }

  /** The protocol the first handshake chose (a resume's 101 names only ticketgate's). */
  get protocol() {
    return this._protocol;
  }

  get binaryType() {
    return this._binaryType;
  }

  set binaryType(type) {
    this._binaryType = type;
    this._socket.binaryType = type;
  }

  send(data) {
    if (this._resuming) this._queue.push(data);
    else this._socket.send(data);
  }

  close(code, reason) {
    this._closedByUser = true;
    this._socket.close(code, reason);
  }

  /** A refresh's answer names the socket's next resume token. */
  takeToken(body) {
    if (typeof body?.resume === "string") this._token = body.resume;
  }

  _fire(type, init) {
    const event = Object.assign(new Event(type), init);
    this[`on${type}`]?.(event);
    this.dispatchEvent(event);
  }

  _attach(socket, resumed) {
    this._socket = socket;
    socket.binaryType = this._binaryType;
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      if (resumed) return this._resumed();
      this._protocol = socket.protocol;
      this._fire("open");
    });
    socket.addEventListener("message", (e) => {
      this._received += 1;
      this._fire("message", { data: e.data });
    });
    // A refused resume errors before it would open: its "close" says so instead.
    socket.addEventListener("error", () => {
      if (socket === this._socket && (opened || !resumed)) this._fire("error");
    });
    socket.addEventListener("close", (e) => {
      if (socket !== this._socket) return;
      if (e.code === 1006 && opened && this._token && !this._closedByUser) return this._resume();
      this._resuming = false;
      const resumeRefused = resumed && !opened;
      if (resumeRefused) this._options.onStep?.("resume:refused", {});
      this._fire("close", { code: e.code, reason: e.reason, wasClean: e.wasClean, resumeRefused });
    });
  }

  _resume() {
    const offer = ["ticketgate", `ticketgate.resume.${this._token}.${this._received}`];
    this._token = undefined;
    this._resuming = true;
    this._options.onStep?.("socket:resuming", { received: this._received });
    this._attach(new WebSocket(this.url, offer), true);
  }

  async _resumed() {
    this._resuming = false;
    this._options.onStep?.("socket:resumed", {});
    for (const data of this._queue.splice(0)) this._socket.send(data);
    this._fire("resume");
    try {
      const { response, body } = await postRefresh(this._options);
      if (response.ok) {
        this.takeToken(body);
        this._options.onStep?.("resume:token", {});
      }
    } catch {
      // No next token: a later drop ends the socket as one without resume.
    }
  }
}

/**
 * A WebSocket that authenticates through ticketgate and reconnects with a fresh ticket.
 *
 * Options: getAccessToken (required), refresh, ticketUrl (default: /ws-ticket on the socket's
 * host), refreshUrl (default: /ws-refresh there), keepSessions (true: extend the socket's login
 * before it ends when ticketgate offers it), ticketIn ("url" or "protocol"), ticketParam
 * ("ticket"), protocols (the application's), reconnect (true), maxBackoffMs (10000),
 * onStep(step, detail) to watch the flow ("ticket:request", "ticket:received",
 * "login:refresh", "session:refresh", "session:extended", "session:refused",
 * "socket:connecting", "socket:open", "socket:closed", "socket:resuming", "socket:resumed",
 * "resume:token", "resume:refused").
 *
 * The returned object is an EventTarget with "open", "message", "close", "reconnect",
 * "resume", "revoked" and "error" events, `send(data)`, `close()`, `reconnect()`, `readyState` and
 * `protocol` (the application protocol the server chose, "" for none).
 */
export function connect(url, options) {
  if (typeof options?.getAccessToken !== "function") {
    throw new TypeError("connect(url, { getAccessToken }) needs a getAccessToken function");
  }
  const settings = {
    ticketUrl: ticketUrlFor(url),
    refreshUrl: ticketUrlFor(url, "/ws-refresh"),
    keepSessions: true,
    ticketParam: "ticket",
    ticketIn: "url",
    reconnect: true,
    maxBackoffMs: 10000,
    onStep: () => {},
    ...options,
  };
  const events = new EventTarget();
  let socket = null;
  let closedByUser = false;
  let revoked = false;
  let failures = 0;
  let timer = null;

  const emit = (type, init) => events.dispatchEvent(Object.assign(new Event(type), init));

  async function open() {
    clearTimeout(timer);
    let details;
    try {
      details = await fetchTicketDetails(settings);
    } catch (error) {
      emit("error", { error });
      return scheduleReconnect(error);
    }
    const { ticket, session, token, connectAfterMs } = details;
    // ticketgate paces upgrades to its budget: the ticket says when this one fits.
    if (connectAfterMs > 0) await new Promise((resolve) => { timer = setTimeout(resolve, connectAfterMs); });
    if (closedByUser) return;
    const inProtocol = settings.ticketIn === "protocol";
    const socketUrl = inProtocol ? url : withTicket(url, ticket, settings.ticketParam);
    settings.onStep("socket:connecting", { url: socketUrl, ticketIn: settings.ticketIn });
    const first = inProtocol
      ? new WebSocket(socketUrl, ticketProtocols(ticket, settings.protocols ?? []))
      : new WebSocket(socketUrl, settings.protocols);
    const current = new ResumingSocket(first, { ...settings, url, session, resume: details.resume });
    socket = current;
    let stopKeeping = () => {};
    current.addEventListener("open", () => {
      failures = 0;
      settings.onStep("socket:open", {});
      if (session && settings.keepSessions) {
        stopKeeping = keepSession({
          ...settings, session, expiresAt: loginExpiry(token), onRefreshed: (body) => current.takeToken(body),
        });
      }
      emit("open");
    });
    current.addEventListener("message", (e) => emit("message", { data: e.data }));
    current.addEventListener("resume", () => emit("resume"));
    current.addEventListener("close", (e) => {
      stopKeeping();
      if (socket !== current) return;
      settings.onStep("socket:closed", { code: e.code });
      if (e.resumeRefused && !closedByUser) {
        emit("reconnect", { reason: "resume refused" });
        return open();
      }
      if (e.code === LOGIN_EXPIRED && settings.refresh && !closedByUser) return renew();
      emit("close", { code: e.code, reason: e.reason });
      if (e.code === REVOKED) {
        revoked = true;
        return emit("revoked", { reason: e.reason });
      }
      scheduleReconnect();
    });
  }

  /** The login behind the socket expired: a fresh login, a fresh ticket, one "reconnect". */
  async function renew() {
    emit("reconnect", { reason: "login expired" });
    try {
      settings.onStep("login:refresh", {});
      await settings.refresh();
    } catch (error) {
      emit("error", { error });
      return;
    }
    open();
  }

  function scheduleReconnect(error) {
    if (closedByUser || revoked || !settings.reconnect) return;
    // A refused login will not get better by retrying: stop until reconnect() is called.
    if (error instanceof TicketError && error.status === 401) return;
    failures += 1;
    // Never before ticketgate's Retry-After; otherwise a full-jitter backoff.
    const told = error instanceof TicketError && error.retryAfter ? error.retryAfter * 1000 : 0;
    timer = setTimeout(open, Math.max(told, backoffMs(failures, settings.maxBackoffMs)));
  }

  open();
  // Getters are defined, not assigned: Object.assign would copy their values once.
  return Object.defineProperties(events, {
    send: {
      value(data) {
        if (socket?.readyState !== WebSocket.OPEN) throw new Error("socket is not open");
        socket.send(data);
      },
    },
    close: {
      value(code, reason) {
        closedByUser = true;
        clearTimeout(timer);
        socket?.close(code, reason);
      },
    },
    /** Drops the current socket (if any) and connects again with a fresh ticket. */
    reconnect: {
      value() {
        closedByUser = false;
        revoked = false;
        const old = socket;
        socket = null;
        old?.close();
        return open();
      },
    },
    readyState: { get: () => (socket ? socket.readyState : WebSocket.CONNECTING) },
    /** The application protocol the server chose ("" for none, or only ticketgate's marker). */
    protocol: {
      get: () => {
        const chosen = socket?.protocol ?? "";
        return chosen === "ticketgate" ? "" : chosen;
      },
    },
  });
}

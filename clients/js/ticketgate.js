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
// ticketgate closes a socket whose login expired with code 4401: the helper refreshes the
// login and reconnects with a fresh ticket, and the application sees one "reconnect" event
// (no "close"). A revoked login closes with 4403: the helper stops and dispatches "revoked"
// after "close".

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
  constructor(status, error, description) {
    super(`ticket request failed: ${status} ${error || ""} ${description || ""}`.trim());
    this.status = status;
    this.error = error;
    this.description = description;
  }
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
export async function fetchTicket({ ticketUrl, getAccessToken, refresh, onStep = () => {} }) {
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
      onStep("ticket:received", { expiresIn: body.expires_in });
      return body.ticket;
    }
    const expired = response.status === 401 && body.error_description === "token expired";
    if (expired && attempt === 0 && refresh) {
      onStep("login:refresh", {});
      await refresh();
      continue;
    }
    throw new TicketError(response.status, body.error, body.error_description);
  }
}

/** `url` with the ticket added as the `param` query parameter. */
export function withTicket(url, ticket, param = "ticket") {
  const full = new URL(url, globalThis.location?.href);
  full.searchParams.set(param, ticket);
  return full.toString();
}

/**
 * A WebSocket that authenticates through ticketgate and reconnects with a fresh ticket.
 *
 * Options: getAccessToken (required), refresh, ticketUrl (default: /ws-ticket on the socket's
 * host), ticketIn ("url" or "protocol"), ticketParam ("ticket"), protocols (the application's),
 * reconnect (true), maxBackoffMs (10000), onStep(step, detail) to watch the flow
 * ("ticket:request", "ticket:received", "login:refresh", "socket:connecting", "socket:open",
 * "socket:closed").
 *
 * The returned object is an EventTarget with "open", "message", "close", "reconnect",
 * "revoked" and "error" events, `send(data)`, `close()`, `reconnect()`, `readyState` and
 * `protocol` (the application protocol the server chose, "" for none).
 */
export function connect(url, options) {
  if (typeof options?.getAccessToken !== "function") {
    throw new TypeError("connect(url, { getAccessToken }) needs a getAccessToken function");
  }
  const settings = {
    ticketUrl: ticketUrlFor(url),
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
    let ticket;
    try {
      ticket = await fetchTicket(settings);
    } catch (error) {
      emit("error", { error });
      return scheduleReconnect(error);
    }
    if (closedByUser) return;
    const inProtocol = settings.ticketIn === "protocol";
    const socketUrl = inProtocol ? url : withTicket(url, ticket, settings.ticketParam);
    settings.onStep("socket:connecting", { url: socketUrl, ticketIn: settings.ticketIn });
    const current = inProtocol
      ? new WebSocket(socketUrl, ticketProtocols(ticket, settings.protocols ?? []))
      : new WebSocket(socketUrl, settings.protocols);
    socket = current;
    current.addEventListener("open", () => {
      failures = 0;
      settings.onStep("socket:open", {});
      emit("open");
    });
    current.addEventListener("message", (e) => emit("message", { data: e.data }));
    current.addEventListener("close", (e) => {
      if (socket !== current) return;
      settings.onStep("socket:closed", { code: e.code });
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
    const delay = Math.min(settings.maxBackoffMs, 250 * 2 ** Math.min(failures, 6));
    timer = setTimeout(open, delay * (0.5 + Math.random() / 2));
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
